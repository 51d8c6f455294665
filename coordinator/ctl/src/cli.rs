//! The command line: `dpfleetctl [GLOBAL OPTIONS] node <noun> <verb> [ARGS]` for one
//! node's API, `dpfleetctl [GLOBAL OPTIONS] cluster <noun> <verb> [ARGS]` for the
//! coordinator's (see [`crate::cluster_cli`]).
//!
//! Parsing only checks the form of each argument (an address is an address, a port
//! range is ordered); whether the node accepts the request is the node's business.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::cluster_cli::ClusterArgs;

/// The exit codes, shown at the end of `--help`.
pub const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  usage or client error; the node, or every coordinator member, cannot be reached or did
     not answer in time
  2  the node or the coordinator refused the request (nonzero status code in the answer, or
     a gRPC error)";

/// `dpfleetctl`: operate a dpfleet fleet.
#[derive(Debug, Parser)]
#[command(name = "dpfleetctl", version, about, after_help = EXIT_CODES)]
pub struct Cli {
    /// gRPC address of the node API (`http://HOST:PORT`; `HOST:PORT` means http).
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "DPFLEET_NODE",
        default_value = "http://[::1]:1337"
    )]
    pub node: String,
    /// Cluster API endpoints: coordinator members, comma-separated, tried in order
    /// (`http://HOST:PORT`; `HOST:PORT` means http).
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "DPFLEET_COORDINATOR",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:7001"
    )]
    pub coordinator: Vec<String>,
    /// Output format.
    #[arg(
        long,
        short = 'o',
        global = true,
        help_heading = "Global options",
        value_enum,
        default_value_t = OutputFormat::Table
    )]
    pub output: OutputFormat,
    /// Deadline for connecting and the call together (`5s`, `500ms`, `1m`; a bare
    /// number is seconds).
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        default_value = "5s",
        value_parser = parse_duration
    )]
    pub timeout: Duration,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// How results are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns with a header line.
    Table,
    /// JSON: one object, or an array of objects for lists.
    Json,
}

/// Top-level command groups: which API to talk to.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Talk to one node's API (`dpdkironcore.v1.DPDKironcore`, dpservice-compatible).
    #[command(subcommand, after_help = EXIT_CODES)]
    Node(NodeCmd),
    /// Talk to the coordinator's cluster API (`dpfleet.cluster.v1`): the whole fleet.
    #[command(after_help = EXIT_CODES)]
    Cluster(ClusterArgs),
}

/// Commands of the node API; each maps to one RPC.
#[derive(Debug, Subcommand)]
pub enum NodeCmd {
    /// Initialize the node (Initialize); prints its instance UUID.
    Init,
    /// Whether the node is initialized (CheckInitialized); prints its instance UUID.
    CheckInit,
    /// The node's API and service version (GetVersion).
    Version,
    /// Virtual machine interfaces.
    #[command(subcommand)]
    Iface(IfaceCmd),
    /// Routes of a VNI.
    #[command(subcommand)]
    Route(RouteCmd),
    /// Alias prefixes routed to an interface.
    #[command(subcommand)]
    Prefix(PrefixCmd),
    /// Load-balancer target prefixes of an interface.
    #[command(subcommand)]
    Lbprefix(PrefixCmd),
    /// Firewall rules of an interface.
    #[command(subcommand)]
    Fw(FwCmd),
    /// VNI state.
    #[command(subcommand)]
    Vni(VniCmd),
    /// Virtual IPs of interfaces (1:1 NAT).
    #[command(subcommand)]
    Vip(VipCmd),
    /// Network NAT of interfaces (a public address shared by port range).
    #[command(subcommand)]
    Nat(NatCmd),
    /// NAT port ranges that other nodes own (neighbor NATs).
    #[command(subcommand)]
    Neighnat(NeighNatCmd),
    /// Load balancers.
    #[command(subcommand)]
    Lb(LbCmd),
    /// Targets of a load balancer.
    #[command(subcommand)]
    Lbtarget(LbTargetCmd),
}

/// `node iface ...`
#[derive(Debug, Subcommand)]
pub enum IfaceCmd {
    /// Create an interface (CreateInterface).
    Create(IfaceCreate),
    /// Show one interface (GetInterface).
    Get {
        /// Interface id.
        id: String,
    },
    /// List all interfaces (ListInterfaces).
    List,
    /// Delete an interface (DeleteInterface).
    Delete {
        /// Interface id.
        id: String,
    },
}

/// Arguments of `node iface create`.
#[derive(Debug, Args)]
pub struct IfaceCreate {
    /// Interface id (letters, digits, `-`, `_`).
    #[arg(long)]
    pub id: String,
    /// Virtual network identifier.
    #[arg(long)]
    pub vni: u32,
    /// The VM's IPv4 address (0.0.0.0: none).
    #[arg(long)]
    pub ipv4: Ipv4Addr,
    /// The VM's IPv6 address (default: none).
    #[arg(long)]
    pub ipv6: Option<Ipv6Addr>,
    /// The port to attach to, by its DPDK device name.
    #[arg(long)]
    pub device: String,
    /// PXE boot server announced by DHCP (IPv6 if the VM has IPv6, else IPv4).
    #[arg(long, requires = "boot_file")]
    pub pxe_server: Option<IpAddr>,
    /// PXE boot file name announced by DHCP.
    #[arg(long, requires = "pxe_server")]
    pub boot_file: Option<String>,
}

/// `node route ...`
#[derive(Debug, Subcommand)]
pub enum RouteCmd {
    /// Add a route (CreateRoute).
    Create {
        /// The VNI whose table gets the route.
        #[arg(long)]
        vni: u32,
        /// Destination prefix (`10.0.0.0/24`, `fd00::/64`).
        #[arg(long)]
        prefix: PrefixArg,
        /// Underlay (IPv6) address of the node that hosts the prefix.
        #[arg(long)]
        next_hop: Ipv6Addr,
        /// VNI at the next hop (default 0: the route's own VNI).
        #[arg(long, default_value_t = 0)]
        next_hop_vni: u32,
    },
    /// Remove a route (DeleteRoute; the node matches VNI and prefix only).
    Delete {
        /// The VNI whose table holds the route.
        #[arg(long)]
        vni: u32,
        /// Destination prefix.
        #[arg(long)]
        prefix: PrefixArg,
    },
    /// List the routes of a VNI (ListRoutes).
    List {
        /// The VNI.
        #[arg(long)]
        vni: u32,
    },
}

/// `node prefix ...` and `node lbprefix ...`
#[derive(Debug, Subcommand)]
pub enum PrefixCmd {
    /// Add a prefix to an interface.
    Create {
        /// Interface id.
        #[arg(long)]
        iface: String,
        /// The prefix.
        #[arg(long)]
        prefix: PrefixArg,
        /// The underlay address to use (`preferred_underlay_route`: in the node's /64,
        /// flag byte 0x80); the node picks one when absent.
        #[arg(long)]
        underlay: Option<std::net::Ipv6Addr>,
    },
    /// Remove a prefix from an interface.
    Delete {
        /// Interface id.
        #[arg(long)]
        iface: String,
        /// The prefix.
        #[arg(long)]
        prefix: PrefixArg,
    },
    /// List the prefixes of an interface.
    List {
        /// Interface id.
        #[arg(long)]
        iface: String,
    },
}

/// `node fw ...`
#[derive(Debug, Subcommand)]
pub enum FwCmd {
    /// Add a firewall rule (CreateFirewallRule).
    Create(FwCreate),
    /// Show one rule (GetFirewallRule).
    Get(FwKey),
    /// Remove a rule (DeleteFirewallRule).
    Delete(FwKey),
    /// List the rules of an interface (ListFirewallRules).
    List {
        /// Interface id.
        #[arg(long)]
        iface: String,
    },
}

/// Names one firewall rule.
#[derive(Debug, Args)]
pub struct FwKey {
    /// Interface id.
    #[arg(long)]
    pub iface: String,
    /// Rule id.
    #[arg(long)]
    pub rule_id: String,
}

/// Arguments of `node fw create`.
#[derive(Debug, Args)]
pub struct FwCreate {
    /// Interface id.
    #[arg(long)]
    pub iface: String,
    /// Rule id.
    #[arg(long)]
    pub rule_id: String,
    /// Traffic direction the rule applies to.
    #[arg(long, value_enum, default_value_t = Direction::Ingress)]
    pub direction: Direction,
    /// What to do with matching traffic.
    #[arg(long, value_enum, default_value_t = Action::Accept)]
    pub action: Action,
    /// Priority, 0..=65535.
    #[arg(long, default_value_t = 1000)]
    pub priority: u16,
    /// Source prefix.
    #[arg(long, default_value = "0.0.0.0/0")]
    pub src: PrefixArg,
    /// Destination prefix.
    #[arg(long, default_value = "0.0.0.0/0")]
    pub dst: PrefixArg,
    /// IP protocol to match.
    #[arg(long, value_enum, default_value_t = FwProto::Any)]
    pub proto: FwProto,
    /// Source ports (`A-B`, `A` or `any`); tcp and udp only.
    #[arg(long)]
    pub src_ports: Option<PortRange>,
    /// Destination ports (`A-B`, `A` or `any`); tcp and udp only.
    #[arg(long)]
    pub dst_ports: Option<PortRange>,
    /// ICMP type (default: any); icmp only.
    #[arg(long)]
    pub icmp_type: Option<u8>,
    /// ICMP code (default: any); icmp only.
    #[arg(long)]
    pub icmp_code: Option<u8>,
}

/// Firewall traffic direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Direction {
    /// Traffic towards the VM.
    Ingress,
    /// Traffic from the VM.
    Egress,
}

/// Firewall verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Action {
    /// Let matching traffic pass.
    Accept,
    /// Drop matching traffic.
    Drop,
}

/// Protocol a firewall rule matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FwProto {
    /// Every protocol.
    Any,
    /// TCP (port ranges apply).
    Tcp,
    /// UDP (port ranges apply).
    Udp,
    /// ICMP (type and code apply).
    Icmp,
}

/// `node vni ...`
#[derive(Debug, Subcommand)]
pub enum VniCmd {
    /// Whether the VNI has a routing table on the node (CheckVniInUse).
    InUse(VniInUseArgs),
    /// Drop the VNI's routing tables (ResetVni).
    Reset(VniResetArgs),
}

/// Arguments of `node vni in-use`.
#[derive(Debug, Args)]
pub struct VniInUseArgs {
    /// The VNI.
    #[arg(long)]
    pub vni: u32,
    /// Which table (nodes answer ipv4 and ipv6 and refuse both, as dpservice does).
    #[arg(long = "type", value_enum, default_value_t = VniType::Ipv4)]
    pub vni_type: VniType,
}

/// Arguments of `node vni reset`.
#[derive(Debug, Args)]
pub struct VniResetArgs {
    /// The VNI.
    #[arg(long)]
    pub vni: u32,
    /// Which table(s) (nodes accept only both, as dpservice does).
    #[arg(long = "type", value_enum, default_value_t = VniType::Both)]
    pub vni_type: VniType,
}

/// The routing table(s) of a VNI.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum VniType {
    /// The IPv4 table.
    Ipv4,
    /// The IPv6 table.
    Ipv6,
    /// Both tables.
    Both,
}

/// `node vip ...`
#[derive(Debug, Subcommand)]
pub enum VipCmd {
    /// Give an interface a virtual IP (CreateVip); prints its underlay route.
    Create {
        /// Interface id.
        #[arg(long)]
        iface: String,
        /// The virtual IP.
        #[arg(long)]
        ip: IpAddr,
    },
    /// Show an interface's virtual IP (GetVip).
    Get {
        /// Interface id.
        #[arg(long)]
        iface: String,
    },
    /// Remove an interface's virtual IP (DeleteVip).
    Delete {
        /// Interface id.
        #[arg(long)]
        iface: String,
    },
}

/// `node nat ...`
#[derive(Debug, Subcommand)]
pub enum NatCmd {
    /// Give an interface a NAT address and port range (CreateNat); prints its underlay
    /// route.
    Create {
        /// Interface id.
        #[arg(long)]
        iface: String,
        /// The NAT (public) address.
        #[arg(long)]
        ip: IpAddr,
        /// First port of the range.
        #[arg(long)]
        min_port: u16,
        /// End of the range, exclusive (the range is `min-port..max-port`).
        #[arg(long)]
        max_port: u16,
    },
    /// Show an interface's NAT (GetNat).
    Get {
        /// Interface id.
        #[arg(long)]
        iface: String,
    },
    /// Remove an interface's NAT (DeleteNat).
    Delete {
        /// Interface id.
        #[arg(long)]
        iface: String,
    },
    /// The local interfaces that use a NAT address (ListLocalNats).
    ListLocal {
        /// The NAT address.
        #[arg(long)]
        ip: IpAddr,
    },
}

/// A neighbor NAT: a port range of a NAT address in a VNI.
#[derive(Clone, Copy, Debug, Args)]
pub struct NeighNatKey {
    /// The NAT address.
    #[arg(long)]
    pub ip: IpAddr,
    /// Virtual network identifier.
    #[arg(long)]
    pub vni: u32,
    /// First port of the range.
    #[arg(long)]
    pub min_port: u16,
    /// End of the range, exclusive.
    #[arg(long)]
    pub max_port: u16,
}

/// `node neighnat ...`
#[derive(Debug, Subcommand)]
pub enum NeighNatCmd {
    /// Tell the node that another node owns a NAT port range (CreateNeighborNat).
    Create {
        /// The NAT port range.
        #[command(flatten)]
        key: NeighNatKey,
        /// Underlay (IPv6) address of the node that owns the range.
        #[arg(long)]
        underlay: Ipv6Addr,
    },
    /// Forget a neighbor NAT (DeleteNeighborNat).
    Delete(NeighNatKey),
    /// The neighbor NATs of a NAT address (ListNeighborNats).
    List {
        /// The NAT address.
        #[arg(long)]
        ip: IpAddr,
    },
}

/// `node lb ...`
#[derive(Debug, Subcommand)]
pub enum LbCmd {
    /// Create a load balancer (CreateLoadBalancer); prints its underlay route.
    Create {
        /// Load balancer id.
        #[arg(long)]
        id: String,
        /// Virtual network identifier.
        #[arg(long)]
        vni: u32,
        /// The load-balanced (virtual) address.
        #[arg(long)]
        ip: IpAddr,
        /// Load-balanced ports, `PROTO/PORT` with PROTO tcp or udp, comma-separated
        /// (`tcp/80,udp/53`).
        #[arg(long, value_delimiter = ',', required = true)]
        ports: Vec<LbPortArg>,
        /// The underlay address to use (`preferred_underlay_route`: in the node's /64,
        /// flag byte 0x80); the node picks one when absent.
        #[arg(long)]
        underlay: Option<std::net::Ipv6Addr>,
    },
    /// Show a load balancer (GetLoadBalancer).
    Get {
        /// Load balancer id.
        id: String,
    },
    /// Delete a load balancer (DeleteLoadBalancer).
    Delete {
        /// Load balancer id.
        id: String,
    },
}

/// `node lbtarget ...`
#[derive(Debug, Subcommand)]
pub enum LbTargetCmd {
    /// Add a target to a load balancer (CreateLoadBalancerTarget).
    Create {
        /// Load balancer id.
        #[arg(long)]
        lb: String,
        /// Underlay (IPv6) address of the target.
        #[arg(long)]
        ip: Ipv6Addr,
    },
    /// Remove a target from a load balancer (DeleteLoadBalancerTarget).
    Delete {
        /// Load balancer id.
        #[arg(long)]
        lb: String,
        /// Underlay (IPv6) address of the target.
        #[arg(long)]
        ip: Ipv6Addr,
    },
    /// The targets of a load balancer (ListLoadBalancerTargets).
    List {
        /// Load balancer id.
        #[arg(long)]
        lb: String,
    },
}

/// Transport protocol of a load-balanced port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LbProto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

/// A load-balanced port as written on the command line: `tcp/80`, `udp/53`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LbPortArg {
    /// The protocol.
    pub proto: LbProto,
    /// The port.
    pub port: u16,
}

impl FromStr for LbPortArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("invalid port {s:?} (expected tcp/PORT or udp/PORT, e.g. tcp/80)");
        let (proto, port) = s.split_once('/').ok_or_else(bad)?;
        let proto = match proto.to_ascii_lowercase().as_str() {
            "tcp" => LbProto::Tcp,
            "udp" => LbProto::Udp,
            _ => return Err(bad()),
        };
        if port.is_empty() || !port.bytes().all(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
        let port = port.parse().map_err(|_| bad())?;
        Ok(LbPortArg { proto, port })
    }
}

/// A prefix as written on the command line. Host bits are kept: the node decides
/// whether it accepts them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrefixArg {
    /// The address part.
    pub addr: IpAddr,
    /// The length, at most 32 for IPv4 and 128 for IPv6.
    pub len: u8,
}

impl FromStr for PrefixArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("invalid prefix {s:?} (expected ADDRESS/LENGTH, e.g. 10.0.0.0/24)");
        let (addr, len) = s.split_once('/').ok_or_else(bad)?;
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        if len.is_empty() || !len.bytes().all(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
        let len: u8 = len.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if len > max {
            return Err(format!("invalid prefix {s:?}: length {len} is longer than {max}"));
        }
        Ok(PrefixArg { addr, len })
    }
}

impl fmt::Display for PrefixArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// A port range `A-B` (inclusive), a single port `A`, or `any`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortRange {
    /// All ports.
    Any,
    /// Ports `first..=last`.
    Ports {
        /// First port of the range.
        first: u16,
        /// Last port of the range, not below `first`.
        last: u16,
    },
}

impl FromStr for PortRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s.eq_ignore_ascii_case("any") {
            return Ok(PortRange::Any);
        }
        let bad = || format!("invalid port range {s:?} (expected A-B, A or any)");
        let port = |p: &str| p.parse::<u16>().map_err(|_| bad());
        let (first, last) = match s.split_once('-') {
            Some((a, b)) => (port(a)?, port(b)?),
            None => (port(s)?, port(s)?),
        };
        if first > last {
            return Err(format!("invalid port range {s:?}: {first} is above {last}"));
        }
        Ok(PortRange::Ports { first, last })
    }
}

/// Parses `5s`, `500ms`, `2m` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {s:?} (expected e.g. 5s, 500ms, 1m)");
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| bad())?;
    let d = match unit {
        "" | "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "m" => Duration::from_secs(n.checked_mul(60).ok_or_else(bad)?),
        _ => return Err(bad()),
    };
    if d.is_zero() {
        return Err(format!("invalid duration {s:?}: must be above zero"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        let p: PrefixArg = "10.1.0.0/16".parse().unwrap();
        assert_eq!((p.addr, p.len), ("10.1.0.0".parse().unwrap(), 16));
        let p: PrefixArg = "fd00::1/128".parse().unwrap();
        assert_eq!(p.to_string(), "fd00::1/128");
        // Host bits stay; the node decides.
        assert_eq!("10.1.2.3/8".parse::<PrefixArg>().unwrap().to_string(), "10.1.2.3/8");
        for bad in ["10.0.0.0", "10.0.0.0/33", "fd00::/129", "10.0.0.0/", "10.0.0.0/+8", "x/8", "/8"] {
            assert!(bad.parse::<PrefixArg>().is_err(), "{bad}");
        }
    }

    #[test]
    fn port_ranges() {
        assert_eq!("any".parse(), Ok(PortRange::Any));
        assert_eq!("80".parse(), Ok(PortRange::Ports { first: 80, last: 80 }));
        assert_eq!("1000-2000".parse(), Ok(PortRange::Ports { first: 1000, last: 2000 }));
        for bad in ["", "80-", "-80", "2000-1000", "65536", "a-b", "1-2-3"] {
            assert!(bad.parse::<PortRange>().is_err(), "{bad}");
        }
    }

    #[test]
    fn lb_ports() {
        assert_eq!("tcp/80".parse(), Ok(LbPortArg { proto: LbProto::Tcp, port: 80 }));
        assert_eq!("UDP/53".parse(), Ok(LbPortArg { proto: LbProto::Udp, port: 53 }));
        assert_eq!("tcp/0".parse(), Ok(LbPortArg { proto: LbProto::Tcp, port: 0 }));
        for bad in ["80", "tcp/", "tcp/+80", "sctp/80", "tcp/65536", "tcp/80/1", "/80", "icmp/8"] {
            assert!(bad.parse::<LbPortArg>().is_err(), "{bad}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        for bad in ["", "0", "s", "5h", "-1", "1.5s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
