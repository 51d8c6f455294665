//! Per-interface firewall rule sets and the verdict they give a flow.
//!
//! The control plane compiles an interface's rules into an immutable [`RuleSet`]
//! (rules split by direction and put in evaluation order); the dataplane asks it for
//! the [`Action`] of a flow. Looking a flow up neither allocates nor fails.
//!
//! Semantics follow dpservice (revision 1a8d901):
//! - The first matching rule of the asked direction decides.
//! - Ingress (traffic towards the VM): no matching rule means drop.
//! - Egress (traffic from the VM): with no egress rule at all everything is accepted;
//!   once the interface has one, an unmatched flow is dropped.
//! - Rules only ever match TCP, UDP and ICMP/ICMPv6 flows; an ICMP filter matches
//!   ICMPv6 flows too (the API has no ICMPv6 filter).
//! - A rule applies to a flow of an address family if at least one of its two prefixes
//!   is of that family. A prefix of length 0 matches every address (of either family,
//!   so that `0.0.0.0/0` as the unset side of an IPv6 rule means "any"); a longer prefix
//!   matches addresses of its own family within it.
//!
//! Two choices where dpservice has none or its behaviour is accidental:
//! - Rules are evaluated by ascending priority value, ties in creation order
//!   (dpservice evaluates in creation order and ignores the priority; as it accepts
//!   only ACCEPT rules, the order cannot change a verdict there).
//! - An ICMP flow must match the rule's prefixes as any other flow (dpservice skips
//!   the address check when the ICMP type and code match).

use std::net::IpAddr;

/// Which way a flow crosses the interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Towards the VM.
    Ingress,
    /// From the VM.
    Egress,
}

/// What a rule (or the default) decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Let the flow pass.
    Accept,
    /// Drop the flow.
    Drop,
}

/// An address prefix of a rule. The address is kept as given; only the first `len`
/// bits are compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr {
    addr: IpAddr,
    len: u8,
}

impl Cidr {
    /// `addr/len`, with `len` clamped to the family's width.
    pub fn new(addr: IpAddr, len: u8) -> Self {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        Cidr { addr, len: len.min(max) }
    }

    /// Matches every address of either family.
    pub const ANY: Cidr = Cidr { addr: IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), len: 0 };

    /// The address as given.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    pub fn len(&self) -> u8 {
        self.len
    }

    /// Whether this prefix has length 0 (matches everything).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether `a` lies in this prefix (see the module docs for length 0).
    pub fn contains(&self, a: IpAddr) -> bool {
        if self.len == 0 {
            return true;
        }
        match (self.addr, a) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX << (32 - u32::from(self.len));
                (u32::from(n) ^ u32::from(a)) & mask == 0
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX << (128 - u32::from(self.len));
                (u128::from(n) ^ u128::from(a)) & mask == 0
            }
            _ => false,
        }
    }

    fn same_family(&self, a: IpAddr) -> bool {
        self.addr.is_ipv4() == a.is_ipv4()
    }
}

/// An inclusive port range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PortRange {
    /// Lowest port matched.
    pub lo: u16,
    /// Highest port matched.
    pub hi: u16,
}

impl PortRange {
    /// Matches every port.
    pub const ANY: PortRange = PortRange { lo: 0, hi: u16::MAX };

    fn contains(&self, p: u16) -> bool {
        self.lo <= p && p <= self.hi
    }
}

/// The protocol part of a rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Filter {
    /// TCP, UDP or ICMP, any ports, types and codes.
    Any,
    /// TCP with these port ranges.
    Tcp {
        /// Source ports.
        src: PortRange,
        /// Destination ports.
        dst: PortRange,
    },
    /// UDP with these port ranges.
    Udp {
        /// Source ports.
        src: PortRange,
        /// Destination ports.
        dst: PortRange,
    },
    /// ICMP or ICMPv6 with this type and code (`None`: any).
    Icmp {
        /// Message type.
        icmp_type: Option<u8>,
        /// Message code.
        icmp_code: Option<u8>,
    },
}

/// One compiled rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Rule {
    /// Evaluation order: lower values first.
    pub priority: u16,
    /// The direction the rule is for.
    pub direction: Direction,
    /// What a match decides.
    pub action: Action,
    /// Source prefix.
    pub src: Cidr,
    /// Destination prefix.
    pub dst: Cidr,
    /// Protocol filter.
    pub filter: Filter,
}

/// The transport part of a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum L4 {
    /// TCP with its ports.
    Tcp {
        /// Source port.
        src_port: u16,
        /// Destination port.
        dst_port: u16,
    },
    /// UDP with its ports.
    Udp {
        /// Source port.
        src_port: u16,
        /// Destination port.
        dst_port: u16,
    },
    /// ICMP (IPv4) or ICMPv6 (IPv6) with its type and code.
    Icmp {
        /// Message type.
        icmp_type: u8,
        /// Message code.
        icmp_code: u8,
    },
    /// Any other protocol, by number.
    Other(u8),
}

/// What the firewall looks at in a flow, in the flow's original direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// Source address.
    pub src: IpAddr,
    /// Destination address (of the same family as `src`).
    pub dst: IpAddr,
    /// Transport protocol and its fields.
    pub l4: L4,
}

impl Rule {
    /// Whether this rule matches `flow` (its direction aside).
    pub fn matches(&self, flow: &FlowKey) -> bool {
        if !self.src.same_family(flow.src) && !self.dst.same_family(flow.src) {
            return false;
        }
        if !self.src.contains(flow.src) || !self.dst.contains(flow.dst) {
            return false;
        }
        match (self.filter, flow.l4) {
            (_, L4::Other(_)) => false,
            (Filter::Any, _) => true,
            (Filter::Tcp { src, dst }, L4::Tcp { src_port, dst_port })
            | (Filter::Udp { src, dst }, L4::Udp { src_port, dst_port }) => {
                src.contains(src_port) && dst.contains(dst_port)
            }
            (Filter::Icmp { icmp_type: t, icmp_code: c }, L4::Icmp { icmp_type, icmp_code }) => {
                t.is_none_or(|t| t == icmp_type) && c.is_none_or(|c| c == icmp_code)
            }
            _ => false,
        }
    }
}

/// The rules of one interface, compiled for lookups.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuleSet {
    ingress: Vec<Rule>,
    egress: Vec<Rule>,
}

/// A rule set without rules: ingress drops everything, egress accepts everything.
pub static EMPTY: RuleSet = RuleSet { ingress: Vec::new(), egress: Vec::new() };

impl RuleSet {
    /// Compiles `rules`, given in creation order.
    pub fn new(rules: impl IntoIterator<Item = Rule>) -> Self {
        let (mut ingress, mut egress): (Vec<Rule>, Vec<Rule>) =
            rules.into_iter().partition(|r| r.direction == Direction::Ingress);
        // Stable: equal priorities keep creation order.
        ingress.sort_by_key(|r| r.priority);
        egress.sort_by_key(|r| r.priority);
        RuleSet { ingress, egress }
    }

    /// Whether there are no rules.
    pub fn is_empty(&self) -> bool {
        self.ingress.is_empty() && self.egress.is_empty()
    }

    /// The rules of one direction, in evaluation order.
    pub fn rules(&self, dir: Direction) -> &[Rule] {
        match dir {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }

    /// The action for `flow` crossing the interface in direction `dir`.
    pub fn verdict(&self, dir: Direction, flow: &FlowKey) -> Action {
        let rules = self.rules(dir);
        if let Some(r) = rules.iter().find(|r| r.matches(flow)) {
            return r.action;
        }
        match dir {
            Direction::Egress if rules.is_empty() => Action::Accept,
            _ => Action::Drop,
        }
    }
}

/// The action for a flow going from one port to another, as dpservice decides it:
/// the sending VM's egress rules, then the receiving VM's ingress rules. `None` stands
/// for a PF (the underlay), which has no rules: traffic to a PF is judged by the
/// sender's egress rules alone, traffic from a PF by the receiver's ingress rules.
pub fn forward_verdict(from: Option<&RuleSet>, to: Option<&RuleSet>, flow: &FlowKey) -> Action {
    if let Some(from) = from {
        if from.verdict(Direction::Egress, flow) == Action::Drop {
            return Action::Drop;
        }
    }
    match to {
        Some(to) => to.verdict(Direction::Ingress, flow),
        None => Action::Accept,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Cidr {
        let (a, l) = s.split_once('/').unwrap();
        Cidr::new(a.parse().unwrap(), l.parse().unwrap())
    }

    fn rule(dir: Direction, action: Action, prio: u16, src: &str, dst: &str, f: Filter) -> Rule {
        Rule { priority: prio, direction: dir, action, src: cidr(src), dst: cidr(dst), filter: f }
    }

    fn accept_in(src: &str, dst: &str, f: Filter) -> Rule {
        rule(Direction::Ingress, Action::Accept, 1000, src, dst, f)
    }

    fn accept_out(src: &str, dst: &str, f: Filter) -> Rule {
        rule(Direction::Egress, Action::Accept, 1000, src, dst, f)
    }

    fn tcp(src: &str, dst: &str, sp: u16, dp: u16) -> FlowKey {
        FlowKey {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            l4: L4::Tcp { src_port: sp, dst_port: dp },
        }
    }

    fn udp(src: &str, dst: &str, sp: u16, dp: u16) -> FlowKey {
        FlowKey {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            l4: L4::Udp { src_port: sp, dst_port: dp },
        }
    }

    fn icmp(src: &str, dst: &str, t: u8, c: u8) -> FlowKey {
        FlowKey {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            l4: L4::Icmp { icmp_type: t, icmp_code: c },
        }
    }

    fn ports(lo: u16, hi: u16) -> PortRange {
        PortRange { lo, hi }
    }

    const TCP_ANY: Filter = Filter::Tcp { src: PortRange::ANY, dst: PortRange::ANY };
    const UDP_ANY: Filter = Filter::Udp { src: PortRange::ANY, dst: PortRange::ANY };
    const ICMP_ANY: Filter = Filter::Icmp { icmp_type: None, icmp_code: None };
    const ECHO: Filter = Filter::Icmp { icmp_type: Some(8), icmp_code: None };

    #[test]
    fn cidr_contains() {
        assert!(cidr("1.2.3.4/16").contains("1.2.200.1".parse().unwrap()));
        assert!(!cidr("1.2.3.4/16").contains("1.3.0.1".parse().unwrap()));
        assert!(cidr("10.0.0.1/32").contains("10.0.0.1".parse().unwrap()));
        assert!(!cidr("10.0.0.1/32").contains("10.0.0.2".parse().unwrap()));
        assert!(cidr("0.0.0.0/0").contains("2001:db8::1".parse().unwrap()));
        assert!(cidr("2001:db8::/32").contains("2001:db8:ffff::1".parse().unwrap()));
        assert!(!cidr("2001:db8::/32").contains("2001:db9::1".parse().unwrap()));
        assert!(!cidr("2001:db8::/32").contains("10.0.0.1".parse().unwrap()));
        assert!(!cidr("10.0.0.0/8").contains("::a00:1".parse().unwrap()));
        assert_eq!(cidr("10.0.0.0/40").len(), 32);
        assert_eq!(cidr("1.2.3.4/16").addr(), "1.2.3.4".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn verdicts() {
        use Action::{Accept, Drop};
        use Direction::{Egress, Ingress};
        let web =
            accept_in("0.0.0.0/0", "0.0.0.0/0", Filter::Tcp { src: PortRange::ANY, dst: ports(80, 443) });
        let cases: Vec<(&str, Vec<Rule>, Direction, FlowKey, Action)> = vec![
            ("no rules: ingress drops", vec![], Ingress, tcp("1.1.1.1", "10.0.0.1", 999, 80), Drop),
            ("no rules: egress accepts", vec![], Egress, tcp("10.0.0.1", "1.1.1.1", 999, 80), Accept),
            (
                "ingress rules do not make egress drop",
                vec![web],
                Egress,
                udp("10.0.0.1", "1.1.1.1", 5, 53),
                Accept,
            ),
            (
                "an egress rule makes unmatched egress drop",
                vec![accept_out("0.0.0.0/0", "8.8.8.8/32", UDP_ANY)],
                Egress,
                udp("10.0.0.1", "1.1.1.1", 5, 53),
                Drop,
            ),
            (
                "matched egress accepts",
                vec![accept_out("0.0.0.0/0", "8.8.8.8/32", UDP_ANY)],
                Egress,
                udp("10.0.0.1", "8.8.8.8", 5, 53),
                Accept,
            ),
            ("port in range", vec![web], Ingress, tcp("1.1.1.1", "10.0.0.1", 999, 443), Accept),
            ("port below range", vec![web], Ingress, tcp("1.1.1.1", "10.0.0.1", 999, 79), Drop),
            ("port above range", vec![web], Ingress, tcp("1.1.1.1", "10.0.0.1", 999, 444), Drop),
            ("TCP rule, UDP flow", vec![web], Ingress, udp("1.1.1.1", "10.0.0.1", 999, 80), Drop),
            (
                "source port range",
                vec![accept_in(
                    "0.0.0.0/0",
                    "0.0.0.0/0",
                    Filter::Udp { src: ports(53, 53), dst: PortRange::ANY },
                )],
                Ingress,
                udp("8.8.8.8", "10.0.0.1", 53, 40000),
                Accept,
            ),
            (
                "source port outside range",
                vec![accept_in(
                    "0.0.0.0/0",
                    "0.0.0.0/0",
                    Filter::Udp { src: ports(53, 53), dst: PortRange::ANY },
                )],
                Ingress,
                udp("8.8.8.8", "10.0.0.1", 54, 40000),
                Drop,
            ),
            (
                "source prefix (host bits given) matches",
                vec![accept_in("1.2.3.4/16", "0.0.0.0/0", TCP_ANY)],
                Ingress,
                tcp("1.2.99.1", "10.0.0.1", 1, 2),
                Accept,
            ),
            (
                "source prefix does not match",
                vec![accept_in("1.2.3.4/16", "0.0.0.0/0", TCP_ANY)],
                Ingress,
                tcp("1.3.0.1", "10.0.0.1", 1, 2),
                Drop,
            ),
            (
                "destination prefix",
                vec![accept_in("0.0.0.0/0", "10.0.0.0/24", Filter::Any)],
                Ingress,
                tcp("1.1.1.1", "10.0.1.1", 1, 2),
                Drop,
            ),
            (
                "any-protocol rule takes TCP, UDP and ICMP",
                vec![accept_in("0.0.0.0/0", "0.0.0.0/0", Filter::Any)],
                Ingress,
                icmp("1.1.1.1", "10.0.0.1", 3, 1),
                Accept,
            ),
            (
                "other protocols match no rule",
                vec![accept_in("0.0.0.0/0", "0.0.0.0/0", Filter::Any)],
                Ingress,
                FlowKey {
                    src: "1.1.1.1".parse().unwrap(),
                    dst: "10.0.0.1".parse().unwrap(),
                    l4: L4::Other(132),
                },
                Drop,
            ),
            (
                "ICMP type",
                vec![accept_in("0.0.0.0/0", "0.0.0.0/0", ECHO)],
                Ingress,
                icmp("1.1.1.1", "10.0.0.1", 8, 0),
                Accept,
            ),
            (
                "ICMP other type",
                vec![accept_in("0.0.0.0/0", "0.0.0.0/0", ECHO)],
                Ingress,
                icmp("1.1.1.1", "10.0.0.1", 0, 0),
                Drop,
            ),
            (
                "ICMP code",
                vec![accept_in(
                    "0.0.0.0/0",
                    "0.0.0.0/0",
                    Filter::Icmp { icmp_type: None, icmp_code: Some(4) },
                )],
                Ingress,
                icmp("1.1.1.1", "10.0.0.1", 3, 3),
                Drop,
            ),
            (
                "ICMP rule checks addresses",
                vec![accept_in("2.0.0.0/8", "0.0.0.0/0", ICMP_ANY)],
                Ingress,
                icmp("1.1.1.1", "10.0.0.1", 8, 0),
                Drop,
            ),
            (
                "ICMP filter covers ICMPv6",
                vec![accept_in("::/0", "::/0", ECHO)],
                Ingress,
                icmp("2001:db8::1", "2001:db8::2", 8, 0),
                Accept,
            ),
            (
                "IPv4 rule, IPv6 flow",
                vec![accept_in("1.0.0.0/8", "0.0.0.0/0", TCP_ANY)],
                Ingress,
                tcp("2001:db8::1", "2001:db8::2", 1, 2),
                Drop,
            ),
            (
                "IPv4 /0 rule does not apply to IPv6",
                vec![accept_in("0.0.0.0/0", "0.0.0.0/0", TCP_ANY)],
                Ingress,
                tcp("2001:db8::1", "2001:db8::2", 1, 2),
                Drop,
            ),
            (
                "IPv6 source with the default IPv4 /0 destination",
                vec![accept_in("2001:db8::/32", "0.0.0.0/0", TCP_ANY)],
                Ingress,
                tcp("2001:db8::1", "2001:db9::2", 1, 2),
                Accept,
            ),
            (
                "IPv6 source prefix mismatch",
                vec![accept_in("2001:db8::/32", "0.0.0.0/0", TCP_ANY)],
                Ingress,
                tcp("2001:db9::1", "2001:db9::2", 1, 2),
                Drop,
            ),
            (
                "first match by priority: drop wins",
                vec![
                    rule(Ingress, Accept, 1000, "0.0.0.0/0", "0.0.0.0/0", TCP_ANY),
                    rule(Ingress, Drop, 10, "1.1.1.0/24", "0.0.0.0/0", TCP_ANY),
                ],
                Ingress,
                tcp("1.1.1.1", "10.0.0.1", 1, 2),
                Drop,
            ),
            (
                "first match by priority: the drop rule does not match",
                vec![
                    rule(Ingress, Accept, 1000, "0.0.0.0/0", "0.0.0.0/0", TCP_ANY),
                    rule(Ingress, Drop, 10, "1.1.1.0/24", "0.0.0.0/0", TCP_ANY),
                ],
                Ingress,
                tcp("1.1.2.1", "10.0.0.1", 1, 2),
                Accept,
            ),
            (
                "equal priority: creation order",
                vec![
                    rule(Egress, Accept, 5, "0.0.0.0/0", "0.0.0.0/0", Filter::Any),
                    rule(Egress, Drop, 5, "0.0.0.0/0", "0.0.0.0/0", Filter::Any),
                ],
                Egress,
                udp("10.0.0.1", "1.1.1.1", 1, 2),
                Accept,
            ),
            (
                "egress drop rule",
                vec![rule(Egress, Drop, 1, "0.0.0.0/0", "0.0.0.0/0", Filter::Any)],
                Egress,
                udp("10.0.0.1", "1.1.1.1", 1, 2),
                Drop,
            ),
        ];
        for (what, rules, dir, flow, want) in cases {
            let set = RuleSet::new(rules);
            assert_eq!(set.verdict(dir, &flow), want, "{what}");
        }
    }

    #[test]
    fn rule_sets_order_by_priority() {
        let a = rule(Direction::Ingress, Action::Accept, 9, "0.0.0.0/0", "0.0.0.0/0", Filter::Any);
        let b = rule(Direction::Ingress, Action::Accept, 3, "1.0.0.0/8", "0.0.0.0/0", Filter::Any);
        let c = rule(Direction::Egress, Action::Accept, 1, "0.0.0.0/0", "0.0.0.0/0", Filter::Any);
        let d = rule(Direction::Ingress, Action::Drop, 9, "2.0.0.0/8", "0.0.0.0/0", Filter::Any);
        let set = RuleSet::new([a, b, c, d]);
        assert_eq!(set.rules(Direction::Ingress), [b, a, d]);
        assert_eq!(set.rules(Direction::Egress), [c]);
        assert!(!set.is_empty());
        assert!(EMPTY.is_empty());
        assert_eq!(EMPTY, RuleSet::default());
    }

    #[test]
    fn forwarding_between_ports() {
        let flow = tcp("10.0.0.1", "10.0.0.2", 1000, 22);
        let ssh_in = RuleSet::new([accept_in(
            "0.0.0.0/0",
            "0.0.0.0/0",
            Filter::Tcp { src: PortRange::ANY, dst: ports(22, 22) },
        )]);
        let only_dns_out = RuleSet::new([accept_out(
            "0.0.0.0/0",
            "0.0.0.0/0",
            Filter::Udp { src: PortRange::ANY, dst: ports(53, 53) },
        )]);
        // VF to VF: sender's egress, then receiver's ingress.
        assert_eq!(forward_verdict(Some(&EMPTY), Some(&ssh_in), &flow), Action::Accept);
        assert_eq!(forward_verdict(Some(&EMPTY), Some(&EMPTY), &flow), Action::Drop);
        assert_eq!(forward_verdict(Some(&only_dns_out), Some(&ssh_in), &flow), Action::Drop);
        // VF to PF: egress only.
        assert_eq!(forward_verdict(Some(&EMPTY), None, &flow), Action::Accept);
        assert_eq!(forward_verdict(Some(&only_dns_out), None, &flow), Action::Drop);
        // PF to VF: ingress only.
        assert_eq!(forward_verdict(None, Some(&ssh_in), &flow), Action::Accept);
        assert_eq!(forward_verdict(None, Some(&only_dns_out), &flow), Action::Drop);
    }
}
