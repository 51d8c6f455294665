//! Adjusting the EAL arguments before DPDK sees them.
//!
//! The node runs with hugepages when it can have them and falls back to `--no-huge`
//! otherwise (saying so): a lab or CI host without reserved hugepages still works,
//! about a third slower. Options that only make sense with hugepages are dropped then.

/// What [`prepare`] did to the arguments.
#[derive(Debug, PartialEq, Eq)]
pub enum HugeMode {
    /// The caller asked for `--no-huge` already.
    AskedNoHuge,
    /// Hugepages are available; arguments unchanged.
    Huge,
    /// No free hugepages or no hugetlbfs mount: switched to `--no-huge`.
    FellBack {
        /// Why.
        reason: String,
    },
}

fn has(args: &[String], name: &str) -> bool {
    args.iter().any(|a| a == name || a.starts_with(&format!("{name}=")))
}

/// Free hugepages of the default size and whether hugetlbfs is mounted, from
/// `/proc/meminfo` and `/proc/mounts` text.
pub fn hugepages_usable(meminfo: &str, mounts: &str) -> Result<(), String> {
    let free = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("HugePages_Free:"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    if free == 0 {
        return Err("no free hugepages (see /proc/sys/vm/nr_hugepages)".into());
    }
    if !mounts.lines().any(|l| l.split_whitespace().nth(2) == Some("hugetlbfs")) {
        return Err("no hugetlbfs mounted (e.g. at /dev/hugepages)".into());
    }
    Ok(())
}

/// Returns the EAL arguments to use: `args` plus the PFs' `-a` arguments from the
/// configuration file, switched to `--no-huge` when hugepages are not usable.
pub fn prepare(
    mut args: Vec<String>,
    a_pf: &[Option<String>],
    probe: impl FnOnce() -> Result<(), String>,
) -> (Vec<String>, HugeMode) {
    for a in a_pf.iter().flatten() {
        args.push("-a".into());
        args.push(a.clone());
    }
    if has(&args, "--no-huge") {
        return (args, HugeMode::AskedNoHuge);
    }
    match probe() {
        Ok(()) => (args, HugeMode::Huge),
        Err(reason) => {
            args.retain(|a| a != "--huge-unlink" && a != "--in-memory" && !a.starts_with("--huge-unlink="));
            args.push("--no-huge".into());
            if !has(&args, "-m") && !has(&args, "--socket-mem") {
                args.push("-m".into());
                args.push("512".into());
            }
            (args, HugeMode::FellBack { reason })
        }
    }
}

/// [`hugepages_usable`] on this machine.
pub fn probe_host() -> Result<(), String> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").map_err(|e| e.to_string())?;
    let mounts = std::fs::read_to_string("/proc/mounts").map_err(|e| e.to_string())?;
    hugepages_usable(&meminfo, &mounts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn falls_back_without_hugepages() {
        let (args, mode) = prepare(v("bin -l 0,1 --huge-unlink --no-pci"), &[], || Err("none".into()));
        assert_eq!(args, v("bin -l 0,1 --no-pci --no-huge -m 512"));
        assert!(matches!(mode, HugeMode::FellBack { .. }));
        let (args, mode) = prepare(v("bin --no-huge -m 128"), &[], || unreachable!());
        assert_eq!(args, v("bin --no-huge -m 128"));
        assert_eq!(mode, HugeMode::AskedNoHuge);
        let (args, mode) = prepare(v("bin --huge-unlink"), &[Some("0000:3b:00.0".into()), None], || Ok(()));
        assert_eq!(args, v("bin --huge-unlink -a 0000:3b:00.0"));
        assert_eq!(mode, HugeMode::Huge);
    }

    #[test]
    fn reads_meminfo_and_mounts() {
        let mounts_ok = "nodev /dev/hugepages hugetlbfs rw,relatime,pagesize=2M 0 0\n";
        assert!(hugepages_usable("HugePages_Total:    1024\nHugePages_Free:     1000\n", mounts_ok).is_ok());
        assert!(hugepages_usable("HugePages_Free:        0\n", mounts_ok).is_err());
        assert!(hugepages_usable("HugePages_Free:      10\n", "proc /proc proc rw 0 0\n").is_err());
        assert!(hugepages_usable("", mounts_ok).is_err());
    }
}
