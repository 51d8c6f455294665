//! Network namespaces owned by one test.
//!
//! A [`Netns`] is created with `ip netns add` and deleted with `ip netns del` when it is
//! dropped, also while a test unwinds from a failed assertion. Work that must happen
//! inside the namespace (opening a packet socket, connecting to the node's gRPC port)
//! runs on a short-lived thread that joins the namespace with `setns(2)`: a socket stays
//! in the namespace it was created in, so the caller can use it from any thread after.

use std::fs::File;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

use nix::sched::{setns, CloneFlags};

use crate::Error;

static NEXT_ID: AtomicU32 = AtomicU32::new(0);

/// A network namespace that lives as long as this value.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates a namespace named `dpfe-<pid>-<n>-<tag>`, unique among all test processes
    /// on the host, with its loopback interface up.
    pub fn new(tag: &str) -> Result<Netns, Error> {
        let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let name = format!("dpfe{}-{n}-{tag}", std::process::id());
        Netns::create(name)
    }

    /// Creates a namespace with exactly this name (fails if it exists).
    pub fn create(name: String) -> Result<Netns, Error> {
        run("ip", &["netns", "add", &name])?;
        let ns = Netns { name };
        ns.ip(&["link", "set", "dev", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace's name, as `ip netns` knows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip -n NAME ARGS...` and fails with its stderr if it fails.
    pub fn ip(&self, args: &[&str]) -> Result<Output, Error> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// Runs `PROGRAM ARGS...` inside the namespace (through `ip netns exec`).
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<Output, Error> {
        let mut all = vec!["netns", "exec", self.name.as_str(), program];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// A command that runs `program` inside the namespace, for the caller to spawn.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", self.name.as_str(), program]);
        cmd
    }

    /// Whether an interface of this name exists in the namespace.
    pub fn has_link(&self, ifname: &str) -> bool {
        Command::new("ip")
            .args(["-n", &self.name, "link", "show", "dev", ifname])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    }

    /// Brings an interface up, removes its addresses and turns its kernel IPv6 off, as a
    /// VM-facing TAP is prepared before tests talk through it: the kernel then sends
    /// nothing of its own (no router solicitations, no MLD reports) on it.
    pub fn prepare_link(&self, ifname: &str) -> Result<(), Error> {
        self.exec("sysctl", &["-qw", &format!("net.ipv6.conf.{ifname}.disable_ipv6=1")])?;
        self.ip(&["link", "set", "dev", ifname, "up"])?;
        self.ip(&["addr", "flush", "dev", ifname])?;
        Ok(())
    }

    /// Runs `f` on a new thread that has joined this namespace and returns its result.
    /// Sockets `f` creates belong to this namespace.
    pub fn run<R, F>(&self, f: F) -> Result<R, Error>
    where
        R: Send + 'static,
        F: FnOnce() -> R + Send + 'static,
    {
        run_in(&self.name, f)
    }
}

/// Runs `f` on a new thread that has joined the namespace called `name`.
pub fn run_in<R, F>(name: &str, f: F) -> Result<R, Error>
where
    R: Send + 'static,
    F: FnOnce() -> R + Send + 'static,
{
    let path = format!("/run/netns/{name}");
    let file = File::open(&path).map_err(|e| Error::Io(format!("open {path}"), e))?;
    std::thread::spawn(move || {
        setns(&file, CloneFlags::CLONE_NEWNET).map_err(|e| Error::Setup(format!("setns {path}: {e}")))?;
        Ok(f())
    })
    .join()
    .map_err(|_| Error::Setup("namespace thread panicked".into()))?
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Best effort: a namespace that cannot be deleted is reported, not fatal.
        if let Err(e) = run("ip", &["netns", "del", &self.name]) {
            eprintln!("warning: {e}");
        }
    }
}

/// Runs a program and turns a non-zero exit into an error carrying its stderr.
pub fn run(program: &str, args: &[&str]) -> Result<Output, Error> {
    let out =
        Command::new(program).args(args).output().map_err(|e| Error::Io(format!("spawn {program}"), e))?;
    if !out.status.success() {
        return Err(Error::Command {
            cmd: format!("{program} {}", args.join(" ")),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(out)
}
