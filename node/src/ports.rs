//! Which DPDK port is which: PF uplinks and VF ports, found by name.
//!
//! `--pf0`/`--pf1` name the uplinks and `--vf-pattern` is the name prefix of VF ports,
//! as in dpservice. A port matches by its kernel interface name (TAP ports, netdevs) or
//! by its DPDK device name (`net_pcap0`, `0000:3b:00.0_representor_vf2`), so virtual
//! devices without a netdev can be used too (benchmarks). Ports that match nothing are
//! left alone.

use dpfleet_dataplane::config::{Mac, PortId, PortInfo, PortRole};

/// A port as DPDK reports it.
#[derive(Clone, Debug)]
pub struct FoundPort {
    /// DPDK port id.
    pub id: PortId,
    /// DPDK device name.
    pub device_name: String,
    /// Kernel interface name, if the driver has one.
    pub if_name: Option<String>,
    /// MAC address.
    pub mac: Mac,
}

/// Why the ports do not fit the options.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PortError {
    /// A PF named on the command line does not exist.
    #[error("--pf{index}={name}: no such port (ports found: {found})")]
    NoSuchPf {
        /// 0 or 1.
        index: u8,
        /// The name asked for.
        name: String,
        /// What there is.
        found: String,
    },
}

impl FoundPort {
    fn names(&self) -> impl Iterator<Item = &str> {
        self.if_name.as_deref().into_iter().chain(std::iter::once(self.device_name.as_str()))
    }
    fn display(&self) -> String {
        match &self.if_name {
            Some(n) => format!("{} ({})", self.device_name, n),
            None => self.device_name.clone(),
        }
    }
}

/// Assigns roles: PFs in order (pf0, pf1), then every other port whose name starts with
/// `vf_pattern`, in port-id order.
pub fn assign(
    found: &[FoundPort],
    pf0: &str,
    pf1: Option<&str>,
    vf_pattern: &str,
) -> Result<Vec<PortInfo>, PortError> {
    let list = || found.iter().map(FoundPort::display).collect::<Vec<_>>().join(", ");
    let mut out = Vec::new();
    for (index, name) in [(0u8, Some(pf0)), (1, pf1)] {
        let Some(name) = name else { continue };
        let port = found
            .iter()
            .find(|p| p.names().any(|n| n == name))
            .ok_or_else(|| PortError::NoSuchPf { index, name: name.into(), found: list() })?;
        out.push(info(port, PortRole::Pf(index)));
    }
    for port in found {
        if out.iter().any(|p| p.id == port.id) {
            continue;
        }
        if port.names().any(|n| n.starts_with(vf_pattern)) {
            out.push(info(port, PortRole::Vf));
        }
    }
    Ok(out)
}

fn info(p: &FoundPort, role: PortRole) -> PortInfo {
    PortInfo {
        id: p.id,
        mac: p.mac,
        role,
        device_name: p.device_name.clone(),
        if_name: p.if_name.clone().unwrap_or_else(|| p.device_name.clone()),
        neigh_mac: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tap(id: PortId, if_name: &str) -> FoundPort {
        FoundPort {
            id,
            device_name: format!("net_tap{id}"),
            if_name: Some(if_name.into()),
            mac: [0x66, 0, 0, 0, 0, u8::try_from(id).unwrap()],
        }
    }

    #[test]
    fn suite_layout() {
        let found =
            [tap(0, "dtap0"), tap(1, "dtap1"), tap(2, "dtapvf_0"), tap(3, "dtapvf_1"), tap(4, "other")];
        let ports = assign(&found, "dtap0", Some("dtap1"), "dtapvf_").unwrap();
        let roles: Vec<_> = ports.iter().map(|p| (p.id, p.role)).collect();
        assert_eq!(
            roles,
            vec![(0, PortRole::Pf(0)), (1, PortRole::Pf(1)), (2, PortRole::Vf), (3, PortRole::Vf)]
        );
        assert_eq!(ports[2].device_name, "net_tap2");
        assert_eq!(ports[2].if_name, "dtapvf_0");
    }

    #[test]
    fn device_names_and_missing_pf() {
        let found = [
            FoundPort { id: 0, device_name: "net_pcap0".into(), if_name: None, mac: [0; 6] },
            FoundPort { id: 1, device_name: "net_null0".into(), if_name: None, mac: [0; 6] },
            FoundPort { id: 2, device_name: "net_null1".into(), if_name: None, mac: [0; 6] },
        ];
        // The PF matches the VF pattern too; it stays a PF.
        let ports = assign(&found, "net_null1", None, "net_").unwrap();
        assert_eq!(ports.len(), 3);
        assert_eq!(ports[0].role, PortRole::Pf(0));
        assert_eq!(ports[0].id, 2);
        let err = assign(&found, "eth0", None, "net_").unwrap_err();
        assert!(err.to_string().contains("net_pcap0"), "{err}");
    }
}
