//! The command line of the cluster API: `dpfleetctl [--coordinator URLS] cluster <noun>
//! <verb> [ARGS]`. Each command is one call of `dpfleet.cluster.v1.ClusterService`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use clap::{Args, Subcommand};

use crate::cli::{Action, Direction, FwProto, LbPortArg, PortRange, PrefixArg};

/// `dpfleetctl cluster ...`
#[derive(Debug, Args)]
pub struct ClusterArgs {
    /// Read from the member that answers, without asking the leader (may miss the latest
    /// writes).
    #[arg(long, global = true, help_heading = "Cluster options")]
    pub stale: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: ClusterCmd,
}

/// The request id of a write.
#[derive(Clone, Debug, Default, Args)]
pub struct WriteArgs {
    /// Idempotency key: a retried command with the same id is applied once and answered
    /// as the first time. Default: a fresh id per invocation (so that dpfleetctl may retry
    /// on another member safely).
    #[arg(long)]
    pub request_id: Option<String>,
}

/// Nouns of the cluster API.
#[derive(Debug, Subcommand)]
pub enum ClusterCmd {
    /// Leader, term, indexes, generation and object counts (GetStatus).
    Status,
    /// Coordinator members (the Raft cluster).
    #[command(subcommand)]
    Member(MemberCmd),
    /// Fleet nodes.
    #[command(subcommand)]
    Node(ClusterNodeCmd),
    /// Virtual networks.
    #[command(subcommand)]
    Vni(ClusterVniCmd),
    /// Interfaces, placed on nodes.
    #[command(subcommand)]
    Iface(ClusterIfaceCmd),
    /// Routes of virtual networks.
    #[command(subcommand)]
    Route(ClusterRouteCmd),
    /// Firewall rules of interfaces.
    #[command(subcommand)]
    Fw(ClusterFwCmd),
    /// Virtual IPs of interfaces.
    #[command(subcommand)]
    Vip(ClusterVipCmd),
    /// NAT gateways and their port blocks.
    #[command(subcommand)]
    Nat(ClusterNatCmd),
    /// Load balancers and their targets.
    #[command(subcommand)]
    Lb(ClusterLbCmd),
}

/// `cluster member ...`
#[derive(Debug, Subcommand)]
pub enum MemberCmd {
    /// The members with their roles and replication (ListMembers).
    List,
    /// Add a member: as a learner, then (unless --learner) as a voter (AddMember).
    Add {
        /// Its Raft id.
        #[arg(long)]
        id: u64,
        /// Its endpoint `HOST:PORT` (its `--listen`).
        #[arg(long)]
        addr: String,
        /// Keep it a learner.
        #[arg(long)]
        learner: bool,
    },
    /// Remove a member (RemoveMember).
    Remove {
        /// Its Raft id.
        id: u64,
    },
}

/// `cluster node ...`
#[derive(Debug, Subcommand)]
pub enum ClusterNodeCmd {
    /// Register a node by hand (nodes normally register through gossip) (RegisterNode).
    Register {
        /// Node name.
        #[arg(long)]
        id: String,
        /// Underlay (IPv6) address.
        #[arg(long)]
        underlay: Ipv6Addr,
        /// Node API endpoint `HOST:PORT`.
        #[arg(long)]
        api_endpoint: String,
        /// Ports it offers for interfaces (DPDK device names), comma-separated.
        #[arg(long, value_delimiter = ',')]
        devices: Vec<String>,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// List the nodes (ListNodes).
    List,
    /// Show a node (GetNode).
    Get {
        /// Node name.
        id: String,
    },
    /// Take no new interfaces on the node (DrainNode).
    Drain {
        /// Node name.
        id: String,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// Make a node active again (UndrainNode).
    Undrain {
        /// Node name.
        id: String,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// Forget a node that hosts no interface (RemoveNode).
    Remove {
        /// Node name.
        id: String,
        #[command(flatten)]
        write: WriteArgs,
    },
}

/// `cluster vni ...`
#[derive(Debug, Subcommand)]
pub enum ClusterVniCmd {
    /// Create a virtual network (CreateVni).
    Create {
        /// The VNI (24 bits).
        vni: u32,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// Delete a virtual network nothing uses (DeleteVni).
    Delete {
        /// The VNI.
        vni: u32,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// List the virtual networks (ListVnis).
    List,
}

/// `cluster iface ...`
#[derive(Debug, Subcommand)]
pub enum ClusterIfaceCmd {
    /// Create an interface; without --node the coordinator places it (CreateInterface).
    Create {
        /// Interface id.
        #[arg(long)]
        id: String,
        /// Virtual network.
        #[arg(long)]
        vni: u32,
        /// The node to put it on (default: placed by the coordinator). Not `--node`,
        /// which is the global node API address.
        #[arg(long)]
        on_node: Option<String>,
        /// The node's port (default: the node's first free one).
        #[arg(long)]
        device: Option<String>,
        /// Overlay IPv4 address.
        #[arg(long, required_unless_present = "ipv6")]
        ipv4: Option<Ipv4Addr>,
        /// Overlay IPv6 address.
        #[arg(long)]
        ipv6: Option<Ipv6Addr>,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// Show an interface (GetInterface).
    Get {
        /// Interface id.
        id: String,
    },
    /// List interfaces (ListInterfaces).
    List {
        /// Only those on this node.
        #[arg(long)]
        on_node: Option<String>,
        /// Only those in this VNI.
        #[arg(long)]
        vni: Option<u32>,
    },
    /// Delete an interface (DeleteInterface).
    Delete {
        /// Interface id.
        id: String,
        #[command(flatten)]
        write: WriteArgs,
    },
}

/// `cluster route ...`
#[derive(Debug, Subcommand)]
pub enum ClusterRouteCmd {
    /// Add a route (AddRoute).
    Add {
        /// The VNI.
        #[arg(long)]
        vni: u32,
        /// Destination prefix, without host bits.
        #[arg(long)]
        prefix: PrefixArg,
        /// Underlay address of the next hop.
        #[arg(long)]
        next_hop: Ipv6Addr,
        /// VNI at the next hop (default: the route's VNI).
        #[arg(long)]
        next_hop_vni: Option<u32>,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// Delete a route (DeleteRoute).
    Delete {
        /// The VNI.
        #[arg(long)]
        vni: u32,
        /// Destination prefix.
        #[arg(long)]
        prefix: PrefixArg,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// List routes (ListRoutes).
    List {
        /// Only this VNI's.
        #[arg(long)]
        vni: Option<u32>,
    },
}

/// `cluster fw ...`
#[derive(Debug, Subcommand)]
pub enum ClusterFwCmd {
    /// Add a firewall rule to an interface (AddFirewallRule).
    Add(ClusterFwAdd),
    /// Remove a rule (DeleteFirewallRule).
    Delete {
        /// Interface id.
        #[arg(long)]
        iface: String,
        /// Rule id.
        #[arg(long)]
        rule_id: String,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// List an interface's rules (ListFirewallRules).
    List {
        /// Interface id.
        #[arg(long)]
        iface: String,
    },
}

/// Arguments of `cluster fw add` (as `node fw create`).
#[derive(Debug, Args)]
pub struct ClusterFwAdd {
    /// Interface id.
    #[arg(long)]
    pub iface: String,
    /// Rule id.
    #[arg(long)]
    pub rule_id: String,
    /// Traffic direction the rule applies to.
    #[arg(long, value_enum, default_value_t = Direction::Ingress)]
    pub direction: Direction,
    /// What to do with matching traffic (the nodes support accept only).
    #[arg(long, value_enum, default_value_t = Action::Accept)]
    pub action: Action,
    /// Priority (lower first).
    #[arg(long, default_value_t = 1000)]
    pub priority: u32,
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
    #[command(flatten)]
    pub write: WriteArgs,
}

/// `cluster vip ...`
#[derive(Debug, Subcommand)]
pub enum ClusterVipCmd {
    /// Give an interface a VIP (SetVip).
    Set {
        /// Interface id.
        #[arg(long)]
        iface: String,
        /// The public IPv4 address.
        #[arg(long)]
        ip: Ipv4Addr,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// Remove an interface's VIP (DeleteVip).
    Delete {
        /// Interface id.
        #[arg(long)]
        iface: String,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// Show an interface's VIP (GetVip).
    Get {
        /// Interface id.
        #[arg(long)]
        iface: String,
    },
}

/// `cluster nat ...`
#[derive(Debug, Subcommand)]
pub enum ClusterNatCmd {
    /// Create a NAT gateway (CreateNatGateway).
    Create {
        /// Gateway id.
        #[arg(long)]
        id: String,
        /// The VNI whose interfaces may attach.
        #[arg(long)]
        vni: u32,
        /// Public IPv4 addresses, comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        ips: Vec<Ipv4Addr>,
        /// First port of the pool.
        #[arg(long)]
        min_port: u32,
        /// End of the pool, exclusive (at most 65536).
        #[arg(long)]
        max_port: u32,
        /// Ports per interface.
        #[arg(long)]
        block_size: u32,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// Delete a gateway no interface is attached to (DeleteNatGateway).
    Delete {
        /// Gateway id.
        id: String,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// List gateways with their usage (ListNatGateways).
    List,
    /// Show a gateway's allocations (GetNatGateway).
    Get {
        /// Gateway id.
        id: String,
    },
    /// Give an interface a port block (AttachNat).
    Attach {
        /// Gateway id.
        #[arg(long)]
        gateway: String,
        /// Interface id.
        #[arg(long)]
        iface: String,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// Release an interface's port block (DetachNat).
    Detach {
        /// Gateway id.
        #[arg(long)]
        gateway: String,
        /// Interface id.
        #[arg(long)]
        iface: String,
        #[command(flatten)]
        write: WriteArgs,
    },
}

/// A load balancer target: an interface or an underlay address.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct LbTargetArg {
    /// An interface in the load balancer's VNI.
    #[arg(long)]
    pub iface: Option<String>,
    /// A raw underlay address.
    #[arg(long)]
    pub underlay: Option<Ipv6Addr>,
}

/// `cluster lb ...`
#[derive(Debug, Subcommand)]
pub enum ClusterLbCmd {
    /// Create a load balancer (CreateLoadBalancer).
    Create {
        /// Load balancer id.
        #[arg(long)]
        id: String,
        /// Virtual network of the VIP.
        #[arg(long)]
        vni: u32,
        /// The virtual IP.
        #[arg(long)]
        ip: IpAddr,
        /// Ports, `tcp/PORT` or `udp/PORT`, comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        ports: Vec<LbPortArg>,
        /// A prime Maglev table size (default: chosen and grown by the coordinator).
        #[arg(long)]
        table_size: Option<u32>,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// Delete a load balancer (DeleteLoadBalancer).
    Delete {
        /// Load balancer id.
        id: String,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// List load balancers (ListLoadBalancers).
    List,
    /// Show a load balancer with its targets and per-node entry points (GetLoadBalancer).
    Get {
        /// Load balancer id.
        id: String,
    },
    /// Add a target (AddLbTarget).
    AddTarget {
        /// Load balancer id.
        #[arg(long)]
        lb: String,
        #[command(flatten)]
        target: LbTargetArg,
        /// Relative share of the flows.
        #[arg(long, default_value_t = 1)]
        weight: u32,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// Remove a target (RemoveLbTarget).
    RemoveTarget {
        /// Load balancer id.
        #[arg(long)]
        lb: String,
        #[command(flatten)]
        target: LbTargetArg,
        #[command(flatten)]
        write: WriteArgs,
    },
}
