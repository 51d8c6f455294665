//! Command-line handling: bad application options end the node with exit code 1 and a
//! message naming the problem, before the EAL or any port is set up.

use std::path::Path;
use std::process::Output;

use dpfleet_e2e::netns::Netns;
use dpfleet_e2e::node::{self, NodeConfig};
use dpfleet_e2e::topo;

/// Runs the node with the default EAL arguments and `app_args` after `--`, in a fresh
/// namespace, and returns its output and the EAL file prefix it was given.
fn run_with(tag: &str, app_args: Vec<String>) -> (Output, String) {
    node::require_root();
    let bin = node::find_binary().unwrap_or_else(|e| panic!("{e}"));
    let ns = Netns::new(tag).unwrap_or_else(|e| panic!("{e}"));
    let prefix = ns.name().to_string();
    let config = NodeConfig { app_args, ..NodeConfig::default() };
    let out = ns
        .command(bin.to_str().unwrap())
        .args(config.args(&prefix))
        .env("DP_CONF", "")
        .output()
        .expect("run dpfleet-node");
    (out, prefix)
}

fn with_replaced(option: &str, value: Option<&str>) -> Vec<String> {
    let mut args: Vec<String> =
        topo::default_app_args().into_iter().filter(|a| !a.starts_with(&format!("{option}="))).collect();
    if let Some(v) = value {
        args.push(format!("{option}={v}"));
    }
    args
}

fn assert_rejected(tag: &str, args: Vec<String>, mentions: &str) {
    let (out, prefix) = run_with(tag, args.clone());
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "exit status for {args:?}; output:\n{text}");
    assert!(text.contains(mentions), "message for {args:?} does not mention {mentions:?}:\n{text}");
    // The EAL keeps its runtime directory per file prefix; none means it never started.
    let runtime = Path::new("/var/run/dpdk").join(&prefix);
    assert!(
        !runtime.exists(),
        "EAL was initialized ({} exists) before the options were rejected",
        runtime.display()
    );
}

#[test]
fn unknown_option_is_rejected() {
    let mut args = topo::default_app_args();
    args.push("--no-such-option".into());
    assert_rejected("cli-unknown", args, "--no-such-option");
}

#[test]
fn malformed_values_are_rejected() {
    assert_rejected("cli-ipv6", with_replaced("--ipv6", Some("not-an-address")), "ipv6");
    assert_rejected("cli-mtu", with_replaced("--dhcp-mtu", Some("lots")), "dhcp-mtu");
    assert_rejected("cli-dns", with_replaced("--dhcp-dns", Some("8.8.8")), "dhcp-dns");
    assert_rejected("cli-port", with_replaced("--grpc-port", Some("70000")), "grpc-port");
}

#[test]
fn missing_underlay_address_is_rejected() {
    assert_rejected("cli-noipv6", with_replaced("--ipv6", None), "ipv6");
}
