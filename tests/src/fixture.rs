//! The usual scene of a test, after dpservice's suite: one node with two PFs and four
//! VFs, initialized, VM1 and VM2 in VNI 100, VM3 in VNI 200, and the routes dpservice's
//! suite installs (VNI 100's prefixes on a neighbouring node, default routes of both
//! VNIs towards the underlay router).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::api::{self, Api};
use crate::frames::{self, dhcp_type, Dhcp};
use crate::node::Node;
use crate::tap::Tap;
use crate::topo::{self, Vm};

/// A started, initialized and provisioned node.
#[derive(Debug)]
pub struct Fixture {
    /// The API client (declared first: dropped before the node).
    pub api: Api,
    /// The running node.
    pub node: Node,
    /// VM1..VM3 with the underlay address CreateInterface returned for each.
    pub vms: Vec<(Vm, Ipv6Addr)>,
}

impl Fixture {
    /// Starts a node and prepares its TAP interfaces, without calling any API.
    ///
    /// # Panics
    /// When the node does not start (with its log in the message).
    pub fn bare(tag: &str) -> (Node, Api) {
        Fixture::bare_with(tag, &[])
    }

    /// Like [`Fixture::bare`], with `extra` application options after the defaults.
    ///
    /// # Panics
    /// When the node does not start (with its log in the message).
    pub fn bare_with(tag: &str, extra: &[&str]) -> (Node, Api) {
        let mut config = crate::node::NodeConfig::default();
        config.app_args.extend(extra.iter().map(|a| (*a).to_string()));
        let node = Node::start(tag, config).unwrap_or_else(|e| panic!("{e}"));
        let ns = node.netns();
        for (i, pf) in node.config().pfs.iter().enumerate() {
            let mac = topo::router_mac(u8::try_from(i).unwrap_or(0));
            set_mac(ns, &pf.iface, mac);
            ns.prepare_link(&pf.iface).unwrap_or_else(|e| panic!("{e}"));
        }
        for (i, vf) in node.config().vfs.iter().enumerate() {
            let vm = Vm::new(u8::try_from(i + 1).unwrap_or(1), topo::VNI1);
            set_mac(ns, &vf.iface, vm.mac);
            ns.prepare_link(&vf.iface).unwrap_or_else(|e| panic!("{e}"));
        }
        let api = Api::connect(&node).unwrap_or_else(|e| panic!("{e}"));
        (node, api)
    }

    /// Starts and provisions the usual scene.
    ///
    /// # Panics
    /// When any step fails.
    pub fn start(tag: &str) -> Fixture {
        Fixture::start_with(tag, &[])
    }

    /// Like [`Fixture::start`], with `extra` application options after the defaults.
    ///
    /// # Panics
    /// When any step fails.
    pub fn start_with(tag: &str, extra: &[&str]) -> Fixture {
        let (node, mut api) = Fixture::bare_with(tag, extra);
        api.init();
        let vms: Vec<Vm> = vec![Vm::new(1, topo::VNI1), Vm::new(2, topo::VNI1), Vm::new(3, topo::VNI2)];
        let vms: Vec<(Vm, Ipv6Addr)> = vms
            .into_iter()
            .map(|vm| {
                let ul = api.add_vm(&vm);
                (vm, ul)
            })
            .collect();
        let (v4, v4len) = topo::NEIGH_V4_PREFIX;
        let (v6, v6len) = topo::NEIGH_V6_PREFIX;
        api.add_route(topo::VNI1, IpAddr::V4(v4), u32::from(v4len), 0, topo::NEIGH_UL);
        api.add_route(topo::VNI1, IpAddr::V6(v6), u32::from(v6len), 0, topo::NEIGH_UL);
        for vni in [topo::VNI1, topo::VNI2] {
            api.add_route(vni, IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0, vni, topo::ROUTER_UL);
            api.add_route(vni, IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0, vni, topo::ROUTER_UL);
        }
        Fixture { api, node, vms }
    }

    /// VM number `n` (1-based).
    pub fn vm(&self, n: usize) -> &Vm {
        &self.vms[n - 1].0
    }

    /// The underlay address of VM number `n` (1-based).
    pub fn ul(&self, n: usize) -> Ipv6Addr {
        self.vms[n - 1].1
    }

    /// A packet socket on the TAP of VM number `n` (1-based).
    ///
    /// # Panics
    /// When the socket cannot be opened.
    pub fn vm_tap(&self, n: usize) -> Tap {
        open(&self.node, &self.vm(n).tap_name())
    }

    /// VM number `n` (1-based) after it leased its address over DHCP, as a VM does at
    /// boot (so that the node knows its MAC), with a packet socket on its TAP.
    ///
    /// # Panics
    /// When the socket cannot be opened or the lease is not the VM's address.
    pub fn boot(&self, n: usize) -> (Vm, Tap) {
        let vm = self.vm(n).clone();
        let mut tap = self.vm_tap(n);
        let ack = Fixture::dhcp(&mut tap, &vm);
        assert_eq!(ack.yiaddr, vm.ip, "VM {n}'s lease");
        (vm, tap)
    }

    /// A packet socket on the TAP of `vm` (which need not be one of the fixture's VMs).
    ///
    /// # Panics
    /// When the socket cannot be opened.
    pub fn tap_of(&self, vm: &Vm) -> Tap {
        open(&self.node, &vm.tap_name())
    }

    /// A packet socket on PF number `n` (0-based).
    ///
    /// # Panics
    /// When the socket cannot be opened.
    pub fn pf_tap(&self, n: usize) -> Tap {
        open(&self.node, &self.node.pf(n).iface)
    }

    /// Runs DISCOVER/OFFER and REQUEST/ACK for `vm` through `tap` and returns the ACK,
    /// so that the node has learned the VM's MAC as it does from a real DHCP client.
    ///
    /// # Panics
    /// When an answer is missing or is not an OFFER/ACK for the VM.
    pub fn dhcp(tap: &mut Tap, vm: &Vm) -> Dhcp {
        let xid = 0x5eed_0000 | u32::from(vm.vf);
        let discover = Dhcp::client(dhcp_type::DISCOVER, xid, vm.mac, vec![(55, vec![1, 3, 6, 26, 121])]);
        tap.send(&frames::dhcp_frame(vm.mac, &discover));
        let offer = tap.expect("DHCPOFFER", |f| {
            Dhcp::from_frame(f).is_some_and(|d| d.xid == xid && d.msg_type() == Some(dhcp_type::OFFER))
        });
        let offer = Dhcp::from_frame(&offer).unwrap_or_else(|| unreachable!());
        let server = offer.option(54).map(<[u8]>::to_vec).unwrap_or_default();
        let request = Dhcp::client(
            dhcp_type::REQUEST,
            xid,
            vm.mac,
            vec![(50, offer.yiaddr.octets().to_vec()), (54, server)],
        );
        tap.send(&frames::dhcp_frame(vm.mac, &request));
        let ack = tap.expect("DHCPACK", |f| {
            Dhcp::from_frame(f).is_some_and(|d| d.xid == xid && d.msg_type() == Some(dhcp_type::ACK))
        });
        Dhcp::from_frame(&ack).unwrap_or_else(|| unreachable!())
    }
}

impl Vm {
    /// The kernel name of this VM's TAP.
    pub fn tap_name(&self) -> String {
        topo::vf(self.vf).iface
    }
}

fn open(node: &Node, ifname: &str) -> Tap {
    Tap::open(node.netns(), ifname).unwrap_or_else(|e| panic!("{e}"))
}

fn set_mac(ns: &crate::netns::Netns, ifname: &str, mac: [u8; 6]) {
    ns.ip(&["link", "set", "dev", ifname, "address", &topo::mac_str(mac)]).unwrap_or_else(|e| panic!("{e}"));
}

/// Re-exported for tests that build requests by hand.
pub use api::interface_request;
