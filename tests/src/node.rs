//! Running the real `dpfleet-node` binary inside a test's namespace.
//!
//! The node is started exactly as dpservice's own test suite starts `dpservice-bin`:
//! EAL arguments with one `net_tap` virtual device per port, `--`, then the application
//! options. Every node gets its own namespace (so every node can use gRPC port 1337 and
//! the same TAP names) and its own EAL `--file-prefix`. Its output goes to a log file
//! that is printed when a test fails. Dropping a [`Node`] stops the process.

use std::fs::File;
use std::io::Write;
use std::net::{Ipv6Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::netns::Netns;
use crate::topo;
use crate::Error;

/// How long a node may take from start to an answering gRPC port.
pub const START_TIMEOUT: Duration = Duration::from_secs(15);

/// How long a node may take to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Nodes busy-poll their ports; on the small machines tests run on, two polling nodes
/// would starve each other. Tests of one binary therefore run their nodes one at a time.
static ONE_NODE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Fails the test with a clear message unless it runs as root: namespaces, TAP devices
/// and packet sockets need it, and a test that skipped silently would prove nothing.
///
/// # Panics
/// When not running as root.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "dpfleet end-to-end tests need root (network namespaces, TAP devices, packet \
         sockets); run them as root, e.g. `sudo -E cargo test -p dpfleet-e2e`"
    );
}

/// Finds the `dpfleet-node` binary (see [`find_program`]).
pub fn find_binary() -> Result<PathBuf, Error> {
    find_program("dpfleet-node", "DPFLEET_NODE_BIN", "dpfleet-node")
}

/// The target directory the running test (or bench) executable was built in: the
/// parent of the nearest `debug`/`release` ancestor of the executable.
fn own_target_dir() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    exe.ancestors()
        .find(|d| d.file_name().and_then(|n| n.to_str()).is_some_and(|n| n == "debug" || n == "release"))
        .and_then(Path::parent)
        .map(Path::to_path_buf)
}

/// Opens `path` for appending a process's output (twice: standard output and error),
/// after a line naming the binary `bin` that runs, for whoever reads the log of a
/// failure. `what` names the log in errors.
pub fn open_log(path: &Path, bin: &Path, what: &str) -> Result<(File, File), Error> {
    let log = File::options().create(true).append(true).open(path).map_err(|e| Error::Io(what.into(), e))?;
    let log2 = log.try_clone().map_err(|e| Error::Io(what.into(), e))?;
    let _ = writeln!(&log, "---- {} ----", bin.display());
    Ok((log, log2))
}

/// Finds the binary `name` of package `package`: `$env_var` if set; else the newest
/// `{release,debug}/name` in the target directory this test was built in (so a test runs
/// the binaries of its own checkout), else in `$CARGO_TARGET_DIR`; only if neither has
/// one, the newest under `/var/cache/dpfleet/target*` and `<workspace>/target`.
pub fn find_program(name: &str, env_var: &str, package: &str) -> Result<PathBuf, Error> {
    if let Some(p) = std::env::var_os(env_var) {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(Error::Setup(format!("{env_var}={} is not a file", p.display())))
        };
    }
    let newest = |dirs: &[PathBuf]| -> Option<PathBuf> {
        dirs.iter()
            .flat_map(|d| ["release", "debug"].map(|p| d.join(p).join(name)))
            .filter_map(|p| {
                let modified = p.metadata().ok()?.modified().ok()?;
                Some((modified, p))
            })
            .max_by_key(|(m, _)| *m)
            .map(|(_, p)| p)
    };
    let own: Vec<PathBuf> =
        own_target_dir().into_iter().chain(std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from)).collect();
    if let Some(p) = newest(&own) {
        return Ok(p);
    }
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/var/cache/dpfleet") {
        let mut more: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("target")))
            .collect();
        more.sort();
        dirs.extend(more);
    }
    dirs.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    newest(&dirs).ok_or_else(|| {
        Error::Setup(format!("{name} binary not found: build it (cargo build -p {package}) or set {env_var}"))
    })
}

/// One port of the node: a `net_tap` device and the TAP interface it creates.
#[derive(Clone, Debug)]
pub struct PortSpec {
    /// The DPDK device name (`net_tapN`), which is also the `device_name` for
    /// CreateInterface.
    pub device: String,
    /// The kernel interface name.
    pub iface: String,
    /// The MAC address of the node's side of the port.
    pub mac: [u8; 6],
}

/// How to start a node.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// Physical ports (uplinks); the first two become `--pf0`, `--pf1`.
    pub pfs: Vec<PortSpec>,
    /// VM-facing ports, named after [`topo::VF_PATTERN`].
    pub vfs: Vec<PortSpec>,
    /// Application options after `--` (replacing the defaults when set).
    pub app_args: Vec<String>,
}

impl Default for NodeConfig {
    /// Two PFs and four VFs with dpservice's test addresses and options.
    fn default() -> Self {
        NodeConfig {
            pfs: (0..2).map(topo::pf).collect(),
            vfs: (0..4).map(topo::vf).collect(),
            app_args: topo::default_app_args(),
        }
    }
}

impl NodeConfig {
    /// The full command line (without the binary) for EAL file prefix `prefix`.
    pub fn args(&self, prefix: &str) -> Vec<String> {
        let mut args: Vec<String> = vec![
            "-l".into(),
            "0,1".into(),
            "--huge-unlink".into(),
            format!("--file-prefix={prefix}"),
            "--no-pci".into(),
        ];
        if !hugepages_available() {
            args.extend(["--no-huge".into(), "-m".into(), "512".into()]);
        }
        for p in self.pfs.iter().chain(&self.vfs) {
            args.push(format!("--vdev={},iface={},mac={}", p.device, p.iface, topo::mac_str(p.mac)));
        }
        args.push("--".into());
        args.extend(self.app_args.iter().cloned());
        args
    }
}

/// Whether at least 512 MB of free hugepages exist (else nodes run with `--no-huge`).
/// `DPFLEET_E2E_NO_HUGE=1` forces `--no-huge`.
pub fn hugepages_available() -> bool {
    if std::env::var_os("DPFLEET_E2E_NO_HUGE").is_some_and(|v| v != "0") {
        return false;
    }
    let Ok(info) = std::fs::read_to_string("/proc/meminfo") else {
        return false;
    };
    let field = |name: &str| -> u64 {
        info.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let free_kb = field("HugePages_Free:") * field("Hugepagesize:");
    free_kb >= 512 * 1024
}

/// A running `dpfleet-node` in its own namespace.
pub struct Node {
    ns: Netns,
    child: Option<Child>,
    log_path: PathBuf,
    config: NodeConfig,
    /// The one-node-at-a-time turn; `None` for fleet nodes, which run side by side.
    _turn: Option<MutexGuard<'static, ()>>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").field("ns", &self.ns.name()).field("log", &self.log_path).finish()
    }
}

impl Node {
    /// Starts a node with `config` in a new namespace tagged `tag` and waits until its
    /// gRPC port accepts connections and all its TAP interfaces exist.
    pub fn start(tag: &str, config: NodeConfig) -> Result<Node, Error> {
        require_root();
        let turn = ONE_NODE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let ns = Netns::new(tag)?;
        Node::spawn(ns, config, Some(turn))
    }

    /// Starts a node in `ns`, a namespace the caller prepared (e.g. with a management
    /// link the node's gossip binds to), and waits until it is ready. Unlike
    /// [`Node::start`] this does not wait for other nodes of the test binary to stop:
    /// fleet tests run several nodes side by side (nodes without `--busy-poll` sleep
    /// when idle).
    pub fn start_in(ns: Netns, config: NodeConfig) -> Result<Node, Error> {
        require_root();
        Node::spawn(ns, config, None)
    }

    fn spawn(ns: Netns, config: NodeConfig, turn: Option<MutexGuard<'static, ()>>) -> Result<Node, Error> {
        let log_dir = std::env::temp_dir().join("dpfleet-e2e");
        std::fs::create_dir_all(&log_dir).map_err(|e| Error::Io("log dir".into(), e))?;
        let log_path = log_dir.join(format!("{}.log", ns.name()));
        let mut node = Node { ns, child: None, log_path, config, _turn: turn };
        node.launch()?;
        Ok(node)
    }

    /// Starts the process (again) in the node's namespace and waits until it is ready;
    /// its output is appended to the log.
    fn launch(&mut self) -> Result<(), Error> {
        let bin = find_binary()?;
        let prefix = self.ns.name().to_string();
        let (log, log2) = open_log(&self.log_path, &bin, "log file")?;
        let child = self
            .ns
            .command(bin.to_str().unwrap_or_default())
            .args(self.config.args(&prefix))
            .env("DP_CONF", "")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| Error::Io(format!("spawn {}", bin.display()), e))?;
        self.child = Some(child);
        self.wait_ready()
    }

    /// Kills the process with SIGKILL (no chance to clean up, as a crash) and reaps it;
    /// the namespace stays, so [`Node::restart`] starts it again with the same
    /// configuration.
    pub fn kill(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let _ = child.kill();
        child.wait().ok()
    }

    /// Starts the node again in its namespace with its configuration (after
    /// [`Node::kill`] or [`Node::stop`]) and waits until it is ready.
    pub fn restart(&mut self) -> Result<(), Error> {
        if self.child.is_some() {
            return Err(Error::Setup("restart of a running node".into()));
        }
        self.launch()
    }

    /// Starts a node with dpservice's test topology (see [`NodeConfig::default`]).
    pub fn start_default(tag: &str) -> Result<Node, Error> {
        Node::start(tag, NodeConfig::default())
    }

    fn wait_ready(&mut self) -> Result<(), Error> {
        let deadline = Instant::now() + START_TIMEOUT;
        let ifaces: Vec<String> =
            self.config.pfs.iter().chain(&self.config.vfs).map(|p| p.iface.clone()).collect();
        loop {
            if let Some(status) = self.try_wait()? {
                return Err(Error::NodeDied { status: status.to_string(), log: self.log() });
            }
            let port_open = self.connect_tcp(topo::GRPC_PORT).is_ok();
            if port_open && ifaces.iter().all(|i| self.ns.has_link(i)) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::NodeNotReady { after: START_TIMEOUT, log: self.log() });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Opens a TCP connection to `port` on the node's loopback (IPv4, else IPv6).
    pub fn connect_tcp(&self, port: u16) -> Result<TcpStream, Error> {
        self.ns.run(move || {
            let v4 = SocketAddr::from(([127, 0, 0, 1], port));
            let v6 = SocketAddr::from((Ipv6Addr::LOCALHOST, port));
            TcpStream::connect_timeout(&v4, Duration::from_secs(1))
                .or_else(|_| TcpStream::connect_timeout(&v6, Duration::from_secs(1)))
                .map_err(|e| Error::Io(format!("connect to port {port}"), e))
        })?
    }

    /// The node's namespace.
    pub fn netns(&self) -> &Netns {
        &self.ns
    }

    /// The configuration the node was started with.
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// The `n`th VF port.
    ///
    /// # Panics
    /// When the node has fewer VFs.
    pub fn vf(&self, n: usize) -> &PortSpec {
        &self.config.vfs[n]
    }

    /// The `n`th PF port.
    ///
    /// # Panics
    /// When the node has fewer PFs.
    pub fn pf(&self, n: usize) -> &PortSpec {
        &self.config.pfs[n]
    }

    /// Whether the process has exited (and how), without waiting.
    pub fn try_wait(&mut self) -> Result<Option<std::process::ExitStatus>, Error> {
        match &mut self.child {
            Some(c) => c.try_wait().map_err(|e| Error::Io("wait for node".into(), e)),
            None => Ok(None),
        }
    }

    /// Whether the node process still runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.try_wait(), Ok(None))
    }

    /// Everything the node has written to stdout and stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Where the node's output goes.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Sends SIGTERM, waits up to 5 s, then SIGKILL; returns the exit status.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if let Ok(pid) = i32::try_from(child.id()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        child.wait().ok()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let status = self.stop();
        // The EAL leaves its runtime directory behind; every node has its own prefix.
        let _ = std::fs::remove_dir_all(Path::new("/var/run/dpdk").join(self.ns.name()));
        if std::thread::panicking() {
            eprintln!(
                "---- dpfleet-node log ({}, exit: {}) ----\n{}\n---- end of node log ----",
                self.log_path.display(),
                status.map_or("?".to_string(), |s| s.to_string()),
                self.log()
            );
        } else {
            let _ = std::fs::remove_file(&self.log_path);
        }
    }
}
