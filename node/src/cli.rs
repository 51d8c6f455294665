//! Command line and configuration file, compatible with `dpservice-bin`.
//!
//! The command line is `EAL-ARGS -- APP-OPTIONS`. EAL arguments go to DPDK untouched;
//! application options are dpservice's (same names, ranges and defaults) plus a few of
//! dpfleet's own. Before the command line, a configuration file is read: the path in
//! `DP_CONF` (an empty value disables it) or `/tmp/dp_service.conf` if it exists. Its
//! format is dpservice's (`key value` per line, keys are long option names, plus
//! `a-pf0`/`a-pf1` for the PFs' EAL `-a` arguments), or TOML with the same keys when the
//! file name ends in `.toml`. Options on the command line come after the file's and win
//! for single-valued options; repeatable ones (`--dhcp-dns`) accumulate.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;

use clap::{Parser, ValueEnum};

/// The default configuration file, as dpservice.
pub const DEFAULT_CONF_FILE: &str = "/tmp/dp_service.conf";

/// NIC family the ports belong to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum NicType {
    /// Mellanox ConnectX with VF representors (the default, as dpservice).
    Mellanox,
    /// TAP (or other virtual) devices, for tests and labs.
    Tap,
    /// NVIDIA BlueField-2.
    Bluefield2,
}

/// When to colour log output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ColorMode {
    /// Never.
    Never,
    /// Always.
    Always,
    /// When standard output is a terminal.
    Auto,
}

/// Log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable text.
    Text,
    /// One JSON object per line.
    Json,
}

/// Application options (after `--`).
#[derive(Debug, Clone, Parser)]
#[command(
    name = "dpfleet-node",
    about = "dpfleet node: DPDK overlay router, drop-in for dpservice-bin",
    override_usage = "dpfleet-node [EAL options] -- [options]",
    disable_version_flag = true,
    args_override_self = true
)]
pub struct Options {
    /// Display version and exit.
    #[arg(short = 'v', long = "version", action = clap::ArgAction::SetTrue)]
    pub version: bool,
    /// First physical interface (e.g. eth0).
    #[arg(long, value_name = "IFNAME")]
    pub pf0: Option<String>,
    /// Second physical interface (e.g. eth1).
    #[arg(long, value_name = "IFNAME")]
    pub pf1: Option<String>,
    /// IPv6 underlay address.
    #[arg(long, value_name = "ADDR6")]
    pub ipv6: Option<Ipv6Addr>,
    /// Virtual interface name pattern (e.g. 'eth1vf').
    #[arg(long, value_name = "PATTERN")]
    pub vf_pattern: Option<String>,
    /// Set the mtu field in DHCP responses (68 - 1500).
    #[arg(long, value_name = "SIZE", default_value_t = 1500,
          value_parser = clap::value_parser!(u16).range(68..=1500))]
    pub dhcp_mtu: u16,
    /// Set the domain name server field in DHCP responses (can be used multiple times).
    #[arg(long, value_name = "IPv4")]
    pub dhcp_dns: Vec<Ipv4Addr>,
    /// Set the domain name server field in DHCPv6 responses (can be used multiple times).
    #[arg(long, value_name = "ADDR6")]
    pub dhcpv6_dns: Vec<Ipv6Addr>,
    /// Weighted-cost-multipath percentage for pf0 (0 - 100).
    #[arg(long, value_name = "PERCENTAGE", default_value_t = 100,
          value_parser = clap::value_parser!(u8).range(0..=100))]
    pub wcmp: u8,
    /// NIC type to use.
    #[arg(long, value_name = "NICTYPE", value_enum, default_value_t = NicType::Mellanox)]
    pub nic_type: NicType,
    /// Do not print periodic statistics to stdout.
    #[arg(long)]
    pub no_stats: bool,
    /// Disable connection tracking.
    #[arg(long)]
    pub no_conntrack: bool,
    /// Enable IPv6 overlay addresses.
    #[arg(long)]
    pub enable_ipv6_overlay: bool,
    /// Disable traffic offloading (rte_flow); TAP ports never offload.
    #[arg(long)]
    pub no_offload: bool,
    /// Verbosity level of packet traversing the graph framework (0 - 2).
    #[arg(long, value_name = "LEVEL", default_value_t = 0,
          value_parser = clap::value_parser!(u8).range(0..=2))]
    pub graphtrace_loglevel: u8,
    /// Output colorization mode.
    #[arg(long, value_name = "MODE", value_enum, default_value_t = ColorMode::Never)]
    pub color: ColorMode,
    /// Format of individual log lines (on standard output).
    #[arg(long, value_name = "FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Listen for gRPC clients on this port.
    #[arg(long, value_name = "PORT", default_value_t = 1337,
          value_parser = clap::value_parser!(u16).range(1024..))]
    pub grpc_port: u16,
    /// Inactive flow timeout (except TCP established flows), seconds (1 - 300).
    #[arg(long, value_name = "SECONDS", default_value_t = 30,
          value_parser = clap::value_parser!(u32).range(1..=300))]
    pub flow_timeout: u32,
    /// dpfleet: most flows each worker tracks (new flows are dropped when full).
    #[arg(long, value_name = "N", default_value_t = 1 << 20,
          value_parser = clap::value_parser!(u32).range(1..=(1 << 30)))]
    pub flow_capacity: u32,
    /// dpfleet: drop flows the firewall denies (dpservice computes verdicts but forwards).
    #[arg(long)]
    pub enforce_firewall: bool,
    /// dpfleet: how load balancers pick a target for a new flow: dpservice's round robin
    /// (per worker) or the fleet's Maglev table over the flow hash.
    #[arg(long, value_name = "MODE", value_enum, default_value_t = crate::control::LbSelection::RoundRobin)]
    pub lb_selection: crate::control::LbSelection,
    /// dpfleet: serve Prometheus metrics on this TCP port (0 = off).
    #[arg(long, value_name = "PORT", default_value_t = 0)]
    pub metrics_port: u16,
    /// dpfleet: address the gRPC and metrics servers bind to.
    #[arg(long, value_name = "ADDR", default_value = "::")]
    pub listen_addr: std::net::IpAddr,
    /// Map a VM-accessible IPv4 endpoint to an outside IPv6 UDP service (IPv4,port,IPv6,port; can be used multiple times).
    #[arg(long, value_name = "IPv4,port,IPv6,port")]
    pub udp_virtsvc: Vec<String>,
    /// Map a VM-accessible IPv4 endpoint to an outside IPv6 TCP service (IPv4,port,IPv6,port; can be used multiple times).
    #[arg(long, value_name = "IPv4,port,IPv6,port")]
    pub tcp_virtsvc: Vec<String>,
    /// dpfleet: number of mbufs in the packet pool.
    #[arg(long, value_name = "N", default_value_t = 16383)]
    pub mbufs: u32,
    /// dpfleet: never sleep when idle (lowest latency, one busy core per worker).
    #[arg(long)]
    pub busy_poll: bool,
    /// dpfleet: this node's name in the fleet (default: the host name).
    #[arg(long, value_name = "NAME")]
    pub fleet_node_name: Option<String>,
    /// dpfleet: join the fleet's gossip, listening on this UDP address (off by default).
    #[arg(long, value_name = "IP:PORT")]
    pub gossip_listen: Option<std::net::SocketAddr>,
    /// dpfleet: a gossip peer to contact (coordinator or node; repeatable or comma-separated).
    #[arg(long, value_name = "IP:PORT", value_delimiter = ',')]
    pub gossip_seed: Vec<std::net::SocketAddr>,
    /// dpfleet: the gossip address peers reach this node at (default: --gossip-listen).
    #[arg(long, value_name = "IP:PORT")]
    pub gossip_advertise: Option<std::net::SocketAddr>,
    /// dpfleet: the node API endpoint the coordinator dials (default: the
    /// --gossip-advertise IP with --grpc-port).
    #[arg(long, value_name = "HOST:PORT")]
    pub api_advertise: Option<String>,
    /// EAL `-a` argument for pf0 (configuration file key `a-pf0`).
    #[arg(long = "a-pf0", value_name = "PCI", hide = true)]
    pub a_pf0: Option<String>,
    /// EAL `-a` argument for pf1 (configuration file key `a-pf1`).
    #[arg(long = "a-pf1", value_name = "PCI", hide = true)]
    pub a_pf1: Option<String>,
}

/// Parses one `--udp-virtsvc` / `--tcp-virtsvc` value, `IPv4,port,IPv6,port`, for
/// protocol `proto` (6 or 17). Ports are 1..65535.
pub fn parse_virtsvc(
    proto: u8,
    value: &str,
) -> Result<dpfleet_dataplane::stages::virtsvc::VirtualService, CliError> {
    let bad =
        || CliError::Invalid(format!("invalid virtual service '{value}' (expected IPv4,port,IPv6,port)"));
    let parts: Vec<&str> = value.split(',').collect();
    let [v4, vport, v6, sport] = parts.as_slice() else { return Err(bad()) };
    let port = |p: &str| p.trim().parse::<u16>().ok().filter(|&p| p != 0);
    Ok(dpfleet_dataplane::stages::virtsvc::VirtualService {
        proto,
        virtual_ip: v4.trim().parse().map_err(|_| bad())?,
        virtual_port: port(vport).ok_or_else(bad)?,
        service_ip: v6.trim().parse().map_err(|_| bad())?,
        service_port: port(sport).ok_or_else(bad)?,
    })
}

/// The virtual services the options configure (UDP first, then TCP), validated
/// (at most 256, no duplicate endpoint within a protocol).
pub fn virtual_services(
    opts: &Options,
) -> Result<dpfleet_dataplane::stages::virtsvc::VirtualServices, CliError> {
    let mut list = Vec::new();
    for v in &opts.udp_virtsvc {
        list.push(parse_virtsvc(17, v)?);
    }
    for v in &opts.tcp_virtsvc {
        list.push(parse_virtsvc(6, v)?);
    }
    dpfleet_dataplane::stages::virtsvc::VirtualServices::new(list)
        .map_err(|e| CliError::Invalid(e.to_string()))
}

/// Why the options could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The configuration file could not be read.
    #[error("cannot read config file '{path}': {source}")]
    ConfigRead {
        /// The file.
        path: String,
        /// What went wrong.
        source: std::io::Error,
    },
    /// A line of the configuration file is wrong.
    #[error("config file '{path}' line {line}: {msg}")]
    ConfigLine {
        /// The file.
        path: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        msg: String,
    },
    /// The options are wrong (clap's message).
    #[error("{0}")]
    Args(String),
    /// A required option is missing or options contradict each other.
    #[error("{0}")]
    Invalid(String),
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Command {
    /// Run the node.
    Run(Box<Options>),
    /// Print this (help or version) and exit successfully.
    Print(String),
}

/// Splits `argv` into EAL arguments (with the program name first) and application
/// arguments, at the first `--`.
pub fn split_args(argv: &[String]) -> (Vec<String>, Vec<String>) {
    match argv.iter().position(|a| a == "--") {
        Some(i) => (argv[..i].to_vec(), argv[i + 1..].to_vec()),
        None => (argv.to_vec(), Vec::new()),
    }
}

/// Turns a dpservice-style configuration file into long options.
pub fn conf_file_args(path: &str, text: &str) -> Result<Vec<String>, CliError> {
    let mut args = Vec::new();
    if path.ends_with(".toml") {
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| CliError::ConfigLine {
            path: path.into(),
            line: e.span().map_or(0, |s| text[..s.start].lines().count()),
            msg: e.message().to_string(),
        })?;
        for (key, value) in table {
            let values = match value {
                toml::Value::Array(items) => items,
                v => vec![v],
            };
            for v in values {
                match v {
                    toml::Value::Boolean(true) => args.push(format!("--{key}")),
                    toml::Value::Boolean(false) => {}
                    toml::Value::String(s) => args.push(format!("--{key}={s}")),
                    toml::Value::Integer(i) => args.push(format!("--{key}={i}")),
                    other => {
                        return Err(CliError::ConfigLine {
                            path: path.into(),
                            line: 0,
                            msg: format!("key '{key}': unsupported value {other}"),
                        })
                    }
                }
            }
        }
        return Ok(args);
    }
    for (i, line) in text.lines().enumerate() {
        let mut words = line.split_whitespace();
        let Some(key) = words.next() else { continue };
        if key.starts_with('#') {
            continue;
        }
        match words.next() {
            Some(value) => args.push(format!("--{key}={value}")),
            None => args.push(format!("--{key}")),
        }
        if words.next().is_some() {
            return Err(CliError::ConfigLine {
                path: path.into(),
                line: i + 1,
                msg: format!("more than one value for key '{key}'"),
            });
        }
    }
    Ok(args)
}

/// Reads the configuration file (per `DP_CONF`) and the application arguments.
pub fn parse(app_args: &[String], dp_conf: Option<&str>) -> Result<Command, CliError> {
    let mut args = vec!["dpfleet-node".to_string()];
    let path = dp_conf.unwrap_or(DEFAULT_CONF_FILE);
    if !path.is_empty() && (dp_conf.is_some() || Path::new(path).exists()) {
        let text = std::fs::read_to_string(path)
            .map_err(|source| CliError::ConfigRead { path: path.into(), source })?;
        args.extend(conf_file_args(path, &text)?);
    }
    args.extend(app_args.iter().cloned());
    let opts = match Options::try_parse_from(&args) {
        Ok(o) => o,
        Err(e) => {
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp => Ok(Command::Print(e.render().to_string())),
                _ => Err(CliError::Args(e.render().to_string())),
            }
        }
    };
    if opts.version {
        return Ok(Command::Print(format!("dpfleet-node version {}\n", env!("CARGO_PKG_VERSION"))));
    }
    validate(&opts)?;
    Ok(Command::Run(Box::new(opts)))
}

fn validate(o: &Options) -> Result<(), CliError> {
    if o.pf0.is_none() {
        return Err(CliError::Invalid("missing --pf0 (first physical interface)".into()));
    }
    if o.ipv6.is_none() {
        return Err(CliError::Invalid("missing --ipv6 (underlay address)".into()));
    }
    if o.vf_pattern.as_deref().is_none_or(str::is_empty) {
        return Err(CliError::Invalid("missing --vf-pattern (virtual interface name pattern)".into()));
    }
    if o.pf0 == o.pf1 {
        return Err(CliError::Invalid("--pf0 and --pf1 name the same interface".into()));
    }
    if o.metrics_port != 0 && o.metrics_port == o.grpc_port {
        return Err(CliError::Invalid("--metrics-port and --grpc-port must differ".into()));
    }
    virtual_services(o)?;
    gossip_settings(o, || "node".into())?;
    Ok(())
}

/// The node's name in the fleet: `--fleet-node-name`, else the host name.
pub fn fleet_node_name(o: &Options, hostname: impl FnOnce() -> String) -> String {
    o.fleet_node_name.clone().unwrap_or_else(hostname)
}

/// The host name (from the kernel), or `localhost` if it cannot be read.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// How the node joins the fleet's gossip (`--gossip-*`, `--api-advertise`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GossipSettings {
    /// The node's fleet name (`node/<name>` is its gossip id).
    pub node_name: String,
    /// The UDP address gossip listens on.
    pub listen: std::net::SocketAddr,
    /// The address peers reach it at.
    pub advertise: std::net::SocketAddr,
    /// Peers to contact first.
    pub seeds: Vec<std::net::SocketAddr>,
    /// The node API endpoint, `host:port`.
    pub api: String,
}

/// The gossip settings, `None` without `--gossip-listen`. Refuses gossip options
/// without `--gossip-listen`, an unspecified address to advertise, and an
/// `--api-advertise` that is not `host:port`.
pub fn gossip_settings(
    o: &Options,
    hostname: impl FnOnce() -> String,
) -> Result<Option<GossipSettings>, CliError> {
    let Some(listen) = o.gossip_listen else {
        if !o.gossip_seed.is_empty() || o.gossip_advertise.is_some() || o.api_advertise.is_some() {
            return Err(CliError::Invalid(
                "--gossip-seed, --gossip-advertise and --api-advertise need --gossip-listen".into(),
            ));
        }
        return Ok(None);
    };
    let advertise = o.gossip_advertise.unwrap_or(listen);
    if advertise.ip().is_unspecified() || advertise.port() == 0 {
        return Err(CliError::Invalid(format!(
            "cannot advertise gossip address {advertise}: \
             give --gossip-advertise with a reachable IP and port"
        )));
    }
    let api = match &o.api_advertise {
        Some(a) => {
            let ok = a
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0));
            if !ok {
                return Err(CliError::Invalid(format!("invalid --api-advertise '{a}' (expected HOST:PORT)")));
            }
            a.clone()
        }
        None => std::net::SocketAddr::new(advertise.ip(), o.grpc_port).to_string(),
    };
    let node_name = fleet_node_name(o, hostname);
    if node_name.is_empty() {
        return Err(CliError::Invalid("--fleet-node-name must not be empty".into()));
    }
    Ok(Some(GossipSettings { node_name, listen, advertise, seeds: o.gossip_seed.clone(), api }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtual_services_parse_and_validate() {
        let base = "--pf0 a --ipv6 ::1 --vf-pattern v";
        let run = |extra: &str| match parse(&strings(&format!("{base} {extra}")), Some("")) {
            Ok(Command::Run(o)) => Ok(virtual_services(&o).map(|v| v.list().to_vec())),
            Ok(Command::Print(_)) => panic!("unexpected print"),
            Err(e) => Err(e.to_string()),
        };
        let list = run(
            "--udp-virtsvc 1.2.3.4,5353,2a00:da8:fff6::1,53 --tcp-virtsvc 5.6.7.8,4443,2a00:da8:fff6::2,443",
        )
        .unwrap()
        .unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!((list[0].proto, list[0].virtual_port, list[0].service_port), (17, 5353, 53));
        assert_eq!(list[1].service_ip, "2a00:da8:fff6::2".parse::<Ipv6Addr>().unwrap());
        assert!(run("--udp-virtsvc 1.2.3.4,0,::1,53").is_err(), "port 0");
        assert!(run("--udp-virtsvc 1.2.3.4,70000,::1,53").is_err(), "port range");
        assert!(run("--udp-virtsvc 1.2.3.4,53,::1").is_err(), "three fields");
        assert!(
            run("--udp-virtsvc 1.2.3.4,53,::1,53 --udp-virtsvc 1.2.3.4,53,::2,53").is_err(),
            "dup virtual"
        );
        assert!(
            run("--udp-virtsvc 1.2.3.4,53,::1,53 --udp-virtsvc 1.2.3.5,53,::1,53").is_err(),
            "dup service"
        );
        assert!(
            run("--udp-virtsvc 1.2.3.4,53,::1,53 --tcp-virtsvc 1.2.3.4,53,::1,53").is_ok(),
            "per protocol"
        );
    }

    #[test]
    fn gossip_options() {
        let base = "--pf0 a --ipv6 fc00:1::1 --vf-pattern v --grpc-port 1400";
        let run = |extra: &str| match parse(&strings(&format!("{base} {extra}")), Some("")) {
            Ok(Command::Run(o)) => Ok(gossip_settings(&o, || "host-a".into()).unwrap()),
            Ok(Command::Print(_)) => panic!("unexpected print"),
            Err(e) => Err(e.to_string()),
        };
        assert_eq!(run(""), Ok(None));
        let seeds = "--gossip-seed 10.0.0.1:7946,10.0.0.2:7946 --gossip-seed [fc00::1]:7946";
        let s = run(&format!("--gossip-listen 10.0.0.5:7946 {seeds}")).unwrap().unwrap();
        assert_eq!(s.node_name, "host-a");
        assert_eq!(s.advertise, s.listen);
        assert_eq!(s.seeds.len(), 3);
        assert_eq!(s.api, "10.0.0.5:1400");
        let s = run("--gossip-listen [::]:7946 --gossip-advertise [fc00::5]:7000 --fleet-node-name n1")
            .unwrap()
            .unwrap();
        assert_eq!((s.node_name.as_str(), s.api.as_str()), ("n1", "[fc00::5]:1400"));
        assert_eq!(s.listen.to_string(), "[::]:7946");
        let s = run("--gossip-listen 10.0.0.5:7946 --api-advertise node1.example:1337").unwrap().unwrap();
        assert_eq!(s.api, "node1.example:1337");
        for bad in [
            "--gossip-seed 10.0.0.1:7946",
            "--api-advertise h:1",
            "--gossip-listen 0.0.0.0:7946",
            "--gossip-listen 10.0.0.5:7946 --api-advertise nohost",
            "--gossip-listen 10.0.0.5:7946 --api-advertise h:0",
            "--gossip-listen 10.0.0.5:7946 --gossip-seed bogus",
            "--gossip-listen 10.0.0.5:7946 --fleet-node-name=",
        ] {
            assert!(run(bad).is_err(), "accepted: {bad}");
        }
    }

    fn strings(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    const SUITE: &str = "--pf0=dtap0 --pf1=dtap1 --vf-pattern=dtapvf_ --nic-type=tap \
        --ipv6=fc00:1::1 --enable-ipv6-overlay --dhcp-mtu=1337 --dhcp-dns=8.8.4.4 \
        --dhcp-dns=8.8.8.8 --dhcpv6-dns=2001:4860:4860::6464 \
        --dhcpv6-dns=2002:4861:4861::6464 --grpc-port=1337 --no-stats --color=auto --no-offload";

    #[test]
    fn dpservice_suite_command_line_parses() {
        let Command::Run(o) = parse(&strings(SUITE), Some("")).unwrap() else { panic!() };
        assert_eq!(o.pf0.as_deref(), Some("dtap0"));
        assert_eq!(o.pf1.as_deref(), Some("dtap1"));
        assert_eq!(o.nic_type, NicType::Tap);
        assert_eq!(o.dhcp_mtu, 1337);
        assert_eq!(o.dhcp_dns, vec![Ipv4Addr::new(8, 8, 4, 4), Ipv4Addr::new(8, 8, 8, 8)]);
        assert_eq!(o.dhcpv6_dns.len(), 2);
        assert!(o.enable_ipv6_overlay && o.no_stats && o.no_offload);
        assert_eq!(o.color, ColorMode::Auto);
        assert_eq!(o.wcmp, 100);
    }

    #[test]
    fn split_at_double_dash() {
        let (eal, app) = split_args(&strings("bin -l 0,1 --no-pci -- --pf0=a"));
        assert_eq!(eal, strings("bin -l 0,1 --no-pci"));
        assert_eq!(app, strings("--pf0=a"));
    }

    #[test]
    fn bad_options_are_errors() {
        for bad in [
            "--pf0=a --ipv6=fc00::1 --vf-pattern=v --dhcp-mtu=67",
            "--pf0=a --ipv6=fc00::1 --vf-pattern=v --wcmp=101",
            "--pf0=a --ipv6=not-an-address --vf-pattern=v",
            "--pf0=a --ipv6=fc00::1 --vf-pattern=v --bogus",
            "--pf0=a --ipv6=fc00::1 --vf-pattern=v --nic-type=intel",
            "--pf0=a --ipv6=fc00::1 --vf-pattern=v --grpc-port=80",
            "--pf0=a --ipv6=fc00::1 --vf-pattern=v --flow-timeout=0",
            "--ipv6=fc00::1 --vf-pattern=v",
            "--pf0=a --vf-pattern=v",
            "--pf0=a --pf1=a --ipv6=fc00::1 --vf-pattern=v",
        ] {
            assert!(parse(&strings(bad), Some("")).is_err(), "accepted: {bad}");
        }
    }

    #[test]
    fn help_and_version_print() {
        let Command::Print(h) = parse(&strings("--help"), Some("")).unwrap() else { panic!() };
        assert!(h.contains("--flow-timeout") && h.contains("--pf0"));
        let Command::Print(v) = parse(&strings("-v"), Some("")).unwrap() else { panic!() };
        assert!(v.contains("version"));
    }

    #[test]
    fn config_file_then_command_line() {
        let dir = std::env::temp_dir().join(format!("dpfleet-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let conf = dir.join("dp_service.conf");
        std::fs::write(&conf, "pf0 eth0\nipv6 fc00::9\nvf-pattern eth0vf\ndhcp-dns 1.1.1.1\nno-stats\n")
            .unwrap();
        let Command::Run(o) =
            parse(&strings("--pf0=eth1 --dhcp-dns=9.9.9.9"), Some(conf.to_str().unwrap())).unwrap()
        else {
            panic!()
        };
        assert_eq!(o.pf0.as_deref(), Some("eth1"), "command line wins");
        assert_eq!(o.dhcp_dns.len(), 2, "repeatable options accumulate");
        assert!(o.no_stats);
        let toml = dir.join("node.toml");
        std::fs::write(&toml, "pf0 = \"eth0\"\nipv6 = \"fc00::9\"\nvf-pattern = \"vf\"\ndhcp-dns = [\"1.1.1.1\", \"2.2.2.2\"]\nenable-ipv6-overlay = true\ngrpc-port = 2000\n").unwrap();
        let Command::Run(o) = parse(&[], Some(toml.to_str().unwrap())).unwrap() else { panic!() };
        assert_eq!(o.dhcp_dns.len(), 2);
        assert!(o.enable_ipv6_overlay);
        assert_eq!(o.grpc_port, 2000);
        assert!(parse(&[], Some(dir.join("missing").to_str().unwrap())).is_err());
        std::fs::write(&conf, "pf0 eth0 eth1\n").unwrap();
        assert!(parse(&[], Some(conf.to_str().unwrap())).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
