//! What commands print: plain view structs, shown as an aligned table or as JSON.
//!
//! JSON field names are part of dpfleetctl's interface for scripts: snake_case, stable.
//! A list prints as a JSON array (also when empty); everything else as one object.
//! Commands that change state print the object they changed with a leading `result`
//! (`created`, `deleted`, `reset`).

use serde::Serialize;

use crate::cli::OutputFormat;

/// A view that can be a table row.
pub trait Record: Serialize {
    /// Column headers, in order.
    fn headers() -> Vec<&'static str>;
    /// The cells of this record, one per header.
    fn cells(&self) -> Vec<String>;
}

/// A command's result, ready to print in either format.
#[derive(Debug, PartialEq)]
pub struct Output {
    /// Tables printed one after the other, separated by an empty line.
    sections: Vec<(Vec<&'static str>, Vec<Vec<String>>)>,
    /// Rendered at once, so that fields keep their declared order.
    json: String,
}

impl Output {
    /// One record.
    pub fn one<T: Record>(r: &T) -> Output {
        Output { sections: vec![(T::headers(), vec![r.cells()])], json: to_json(r) }
    }

    /// A list of records.
    pub fn many<T: Record>(rs: &[T]) -> Output {
        Output { sections: vec![(T::headers(), rs.iter().map(Record::cells).collect())], json: to_json(&rs) }
    }

    /// One record shown as `FIELD  VALUE` lines (for records with many fields); JSON as
    /// for [`Output::one`].
    pub fn fields<T: Record>(r: &T) -> Output {
        let rows = T::headers().into_iter().zip(r.cells()).map(|(h, c)| vec![h.to_string(), c]).collect();
        Output { sections: vec![(vec!["field", "value"], rows)], json: to_json(r) }
    }

    /// This output with the tables of `more` after its own (the JSON stays this one's).
    pub fn and_table(mut self, more: Output) -> Output {
        self.sections.extend(more.sections);
        self
    }

    /// This output's tables with `json` as its JSON form.
    pub fn with_json<J: Serialize + ?Sized>(mut self, json: &J) -> Output {
        self.json = to_json(json);
        self
    }

    /// The text to print, ending in a newline.
    pub fn render(&self, format: OutputFormat) -> String {
        match format {
            OutputFormat::Table => {
                let tables: Vec<String> = self.sections.iter().map(|(h, rows)| table(h, rows)).collect();
                tables.join("\n")
            }
            OutputFormat::Json => format!("{}\n", self.json),
        }
    }
}

fn to_json<T: Serialize + ?Sized>(v: &T) -> String {
    // Views are plain structs of strings, numbers and options: serialization cannot fail.
    serde_json::to_string_pretty(v).unwrap_or_default()
}

/// Left-aligned columns separated by two spaces; headers in upper case; no trailing
/// blanks; an empty cell shows as `-` so that columns stay countable.
fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let header: Vec<String> = headers.iter().map(|h| h.to_uppercase()).collect();
    let cell = |c: &String| if c.is_empty() { "-".to_string() } else { c.clone() };
    let lines: Vec<Vec<String>> =
        std::iter::once(header).chain(rows.iter().map(|r| r.iter().map(cell).collect())).collect();
    let mut widths = vec![0; headers.len()];
    for line in &lines {
        for (w, c) in widths.iter_mut().zip(line) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for line in &lines {
        let mut l = String::new();
        for (i, (c, w)) in line.iter().zip(&widths).enumerate() {
            if i > 0 {
                l.push_str("  ");
            }
            l.push_str(c);
            l.extend(std::iter::repeat_n(' ', w - c.chars().count()));
        }
        out.push_str(l.trim_end());
        out.push('\n');
    }
    out
}

/// A change the node made: the object with what happened to it.
#[derive(Debug, Serialize)]
pub struct Change<T> {
    /// `created`, `deleted` or `reset`.
    pub result: &'static str,
    /// The object.
    #[serde(flatten)]
    pub object: T,
}

impl<T: Record> Record for Change<T> {
    fn headers() -> Vec<&'static str> {
        let mut h = vec!["result"];
        h.extend(T::headers());
        h
    }
    fn cells(&self) -> Vec<String> {
        let mut c = vec![self.result.to_string()];
        c.extend(self.object.cells());
        c
    }
}

/// The node's instance (Initialize, CheckInitialized).
#[derive(Debug, Serialize)]
pub struct InitView {
    /// Changes with every restart of the node.
    pub uuid: String,
}

impl Record for InitView {
    fn headers() -> Vec<&'static str> {
        vec!["uuid"]
    }
    fn cells(&self) -> Vec<String> {
        vec![self.uuid.clone()]
    }
}

/// The node's versions (GetVersion).
#[derive(Debug, Serialize)]
pub struct VersionView {
    /// Version of the API the node serves.
    pub service_protocol: String,
    /// Version of the node software.
    pub service_version: String,
}

impl Record for VersionView {
    fn headers() -> Vec<&'static str> {
        vec!["service_protocol", "service_version"]
    }
    fn cells(&self) -> Vec<String> {
        vec![self.service_protocol.clone(), self.service_version.clone()]
    }
}

/// A VM interface.
#[derive(Debug, Serialize)]
pub struct InterfaceView {
    /// Interface id.
    pub id: String,
    /// Virtual network.
    pub vni: u32,
    /// The port (DPDK device name).
    pub device: String,
    /// The VM's IPv4 address (`0.0.0.0`: none).
    pub primary_ipv4: String,
    /// The VM's IPv6 address (`::`: none).
    pub primary_ipv6: String,
    /// Underlay address that attracts the interface's traffic.
    pub underlay_route: String,
}

impl Record for InterfaceView {
    fn headers() -> Vec<&'static str> {
        vec!["id", "vni", "device", "primary_ipv4", "primary_ipv6", "underlay_route"]
    }
    fn cells(&self) -> Vec<String> {
        vec![
            self.id.clone(),
            self.vni.to_string(),
            self.device.clone(),
            self.primary_ipv4.clone(),
            self.primary_ipv6.clone(),
            self.underlay_route.clone(),
        ]
    }
}

/// A new VM interface, with the port the VM got.
#[derive(Debug, Serialize)]
pub struct CreatedInterfaceView {
    /// The interface.
    #[serde(flatten)]
    pub interface: InterfaceView,
    /// Kernel name of the VM's port, as the node reports it.
    pub vf_name: String,
}

impl Record for CreatedInterfaceView {
    fn headers() -> Vec<&'static str> {
        let mut h = InterfaceView::headers();
        h.push("vf_name");
        h
    }
    fn cells(&self) -> Vec<String> {
        let mut c = self.interface.cells();
        c.push(self.vf_name.clone());
        c
    }
}

/// Names an interface.
#[derive(Debug, Serialize)]
pub struct InterfaceKey {
    /// Interface id.
    pub id: String,
}

impl Record for InterfaceKey {
    fn headers() -> Vec<&'static str> {
        vec!["id"]
    }
    fn cells(&self) -> Vec<String> {
        vec![self.id.clone()]
    }
}

/// A route of a VNI.
#[derive(Debug, Serialize)]
pub struct RouteView {
    /// The VNI whose table holds the route.
    pub vni: u32,
    /// Destination prefix.
    pub prefix: String,
    /// Underlay address of the next hop (empty when not known, e.g. after a delete).
    pub next_hop: String,
    /// VNI at the next hop.
    pub next_hop_vni: u32,
}

impl Record for RouteView {
    fn headers() -> Vec<&'static str> {
        vec!["vni", "prefix", "next_hop", "next_hop_vni"]
    }
    fn cells(&self) -> Vec<String> {
        vec![self.vni.to_string(), self.prefix.clone(), self.next_hop.clone(), self.next_hop_vni.to_string()]
    }
}

/// Names a route.
#[derive(Debug, Serialize)]
pub struct RouteKey {
    /// The VNI whose table held the route.
    pub vni: u32,
    /// Destination prefix.
    pub prefix: String,
}

impl Record for RouteKey {
    fn headers() -> Vec<&'static str> {
        vec!["vni", "prefix"]
    }
    fn cells(&self) -> Vec<String> {
        vec![self.vni.to_string(), self.prefix.clone()]
    }
}

/// An alias or load-balancer prefix of an interface.
#[derive(Debug, Serialize)]
pub struct PrefixView {
    /// Interface id.
    pub interface_id: String,
    /// The prefix.
    pub prefix: String,
    /// Underlay address that attracts the prefix's traffic.
    pub underlay_route: String,
}

impl Record for PrefixView {
    fn headers() -> Vec<&'static str> {
        vec!["interface_id", "prefix", "underlay_route"]
    }
    fn cells(&self) -> Vec<String> {
        vec![self.interface_id.clone(), self.prefix.clone(), self.underlay_route.clone()]
    }
}

/// Names a prefix of an interface.
#[derive(Debug, Serialize)]
pub struct PrefixKey {
    /// Interface id.
    pub interface_id: String,
    /// The prefix.
    pub prefix: String,
}

impl Record for PrefixKey {
    fn headers() -> Vec<&'static str> {
        vec!["interface_id", "prefix"]
    }
    fn cells(&self) -> Vec<String> {
        vec![self.interface_id.clone(), self.prefix.clone()]
    }
}

/// An inclusive port range of a firewall rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct PortsView {
    /// First port.
    pub first: i32,
    /// Last port.
    pub last: i32,
}

/// A firewall rule. `null` (JSON) or `any` (table) in a filter field matches everything.
#[derive(Debug, Serialize)]
pub struct FirewallRuleView {
    /// Interface id.
    pub interface_id: String,
    /// Rule id.
    pub rule_id: String,
    /// `ingress` or `egress`.
    pub direction: String,
    /// `accept` or `drop`.
    pub action: String,
    /// Priority as given at creation.
    pub priority: u32,
    /// Source prefix.
    pub source: String,
    /// Destination prefix.
    pub destination: String,
    /// `tcp`, `udp`, `icmp` or `any`.
    pub protocol: String,
    /// Source ports (tcp, udp).
    pub src_ports: Option<PortsView>,
    /// Destination ports (tcp, udp).
    pub dst_ports: Option<PortsView>,
    /// ICMP type (icmp).
    pub icmp_type: Option<i32>,
    /// ICMP code (icmp).
    pub icmp_code: Option<i32>,
}

fn any_or<T>(v: Option<T>, f: impl Fn(T) -> String) -> String {
    v.map_or_else(|| "any".to_string(), f)
}

impl Record for FirewallRuleView {
    fn headers() -> Vec<&'static str> {
        vec![
            "interface_id",
            "rule_id",
            "direction",
            "action",
            "priority",
            "source",
            "destination",
            "protocol",
            "src_ports",
            "dst_ports",
            "icmp_type",
            "icmp_code",
        ]
    }
    fn cells(&self) -> Vec<String> {
        let ports = |p: PortsView| {
            if p.first == p.last {
                p.first.to_string()
            } else {
                format!("{}-{}", p.first, p.last)
            }
        };
        vec![
            self.interface_id.clone(),
            self.rule_id.clone(),
            self.direction.clone(),
            self.action.clone(),
            self.priority.to_string(),
            self.source.clone(),
            self.destination.clone(),
            self.protocol.clone(),
            any_or(self.src_ports, ports),
            any_or(self.dst_ports, ports),
            any_or(self.icmp_type, |t| t.to_string()),
            any_or(self.icmp_code, |c| c.to_string()),
        ]
    }
}

/// Names a firewall rule.
#[derive(Debug, Serialize)]
pub struct FirewallRuleKey {
    /// Interface id.
    pub interface_id: String,
    /// Rule id.
    pub rule_id: String,
}

impl Record for FirewallRuleKey {
    fn headers() -> Vec<&'static str> {
        vec!["interface_id", "rule_id"]
    }
    fn cells(&self) -> Vec<String> {
        vec![self.interface_id.clone(), self.rule_id.clone()]
    }
}

/// Whether a VNI is in use (CheckVniInUse).
#[derive(Debug, Serialize)]
pub struct VniView {
    /// The VNI.
    pub vni: u32,
    /// `ipv4` or `ipv6`: which table was asked about.
    #[serde(rename = "type")]
    pub vni_type: String,
    /// Whether the VNI has that table on the node.
    pub in_use: bool,
}

impl Record for VniView {
    fn headers() -> Vec<&'static str> {
        vec!["vni", "type", "in_use"]
    }
    fn cells(&self) -> Vec<String> {
        vec![self.vni.to_string(), self.vni_type.clone(), self.in_use.to_string()]
    }
}

/// Names a VNI's table(s).
#[derive(Debug, Serialize)]
pub struct VniKey {
    /// The VNI.
    pub vni: u32,
    /// `ipv4`, `ipv6` or `both`.
    #[serde(rename = "type")]
    pub vni_type: String,
}

impl Record for VniKey {
    fn headers() -> Vec<&'static str> {
        vec!["vni", "type"]
    }
    fn cells(&self) -> Vec<String> {
        vec![self.vni.to_string(), self.vni_type.clone()]
    }
}

/// Names the interface of a VIP or NAT.
#[derive(Debug, Serialize)]
pub struct InterfaceRef {
    /// Interface id.
    pub interface_id: String,
}

impl Record for InterfaceRef {
    fn headers() -> Vec<&'static str> {
        vec!["interface_id"]
    }
    fn cells(&self) -> Vec<String> {
        vec![self.interface_id.clone()]
    }
}

/// The virtual IP of an interface.
#[derive(Debug, Serialize)]
pub struct VipView {
    /// Interface id.
    pub interface_id: String,
    /// The virtual IP.
    pub vip: String,
    /// Underlay address that attracts the VIP's traffic.
    pub underlay_route: String,
}

impl Record for VipView {
    fn headers() -> Vec<&'static str> {
        vec!["interface_id", "vip", "underlay_route"]
    }
    fn cells(&self) -> Vec<String> {
        vec![self.interface_id.clone(), self.vip.clone(), self.underlay_route.clone()]
    }
}

/// The NAT of an interface: its address and port range `[min_port, max_port)`.
#[derive(Debug, Serialize)]
pub struct NatView {
    /// Interface id.
    pub interface_id: String,
    /// The NAT address.
    pub nat_ip: String,
    /// First port.
    pub min_port: u32,
    /// End of the range (exclusive).
    pub max_port: u32,
    /// Underlay address that attracts the range's traffic.
    pub underlay_route: String,
}

impl Record for NatView {
    fn headers() -> Vec<&'static str> {
        vec!["interface_id", "nat_ip", "min_port", "max_port", "underlay_route"]
    }
    fn cells(&self) -> Vec<String> {
        vec![
            self.interface_id.clone(),
            self.nat_ip.clone(),
            self.min_port.to_string(),
            self.max_port.to_string(),
            self.underlay_route.clone(),
        ]
    }
}

/// A local interface using a NAT address (ListLocalNats).
#[derive(Debug, Serialize)]
pub struct LocalNatView {
    /// The NAT address asked about.
    pub nat_ip: String,
    /// The interface's own address, as the node reports it.
    pub interface_ip: String,
    /// The interface's VNI.
    pub vni: u32,
    /// First port.
    pub min_port: u32,
    /// End of the range (exclusive).
    pub max_port: u32,
}

impl Record for LocalNatView {
    fn headers() -> Vec<&'static str> {
        vec!["nat_ip", "interface_ip", "vni", "min_port", "max_port"]
    }
    fn cells(&self) -> Vec<String> {
        vec![
            self.nat_ip.clone(),
            self.interface_ip.clone(),
            self.vni.to_string(),
            self.min_port.to_string(),
            self.max_port.to_string(),
        ]
    }
}

/// A NAT port range owned by another node.
#[derive(Debug, Serialize)]
pub struct NeighborNatView {
    /// The NAT address.
    pub nat_ip: String,
    /// The VNI.
    pub vni: u32,
    /// First port.
    pub min_port: u32,
    /// End of the range (exclusive).
    pub max_port: u32,
    /// Underlay address of the node that owns the range.
    pub underlay_route: String,
}

impl Record for NeighborNatView {
    fn headers() -> Vec<&'static str> {
        vec!["nat_ip", "vni", "min_port", "max_port", "underlay_route"]
    }
    fn cells(&self) -> Vec<String> {
        vec![
            self.nat_ip.clone(),
            self.vni.to_string(),
            self.min_port.to_string(),
            self.max_port.to_string(),
            self.underlay_route.clone(),
        ]
    }
}

/// Names a neighbor NAT.
#[derive(Debug, Serialize)]
pub struct NeighborNatKey {
    /// The NAT address.
    pub nat_ip: String,
    /// The VNI.
    pub vni: u32,
    /// First port.
    pub min_port: u32,
    /// End of the range (exclusive).
    pub max_port: u32,
}

impl Record for NeighborNatKey {
    fn headers() -> Vec<&'static str> {
        vec!["nat_ip", "vni", "min_port", "max_port"]
    }
    fn cells(&self) -> Vec<String> {
        vec![self.nat_ip.clone(), self.vni.to_string(), self.min_port.to_string(), self.max_port.to_string()]
    }
}

/// A load-balanced port.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LbPortView {
    /// `tcp`, `udp`, or `unknown(N)`.
    pub protocol: String,
    /// The port.
    pub port: u32,
}

/// A load balancer.
#[derive(Debug, Serialize)]
pub struct LbView {
    /// Load balancer id.
    pub id: String,
    /// The VNI.
    pub vni: u32,
    /// The load-balanced address.
    pub ip: String,
    /// The load-balanced ports.
    pub ports: Vec<LbPortView>,
    /// Underlay address that attracts the load balancer's traffic.
    pub underlay_route: String,
}

impl Record for LbView {
    fn headers() -> Vec<&'static str> {
        vec!["id", "vni", "ip", "ports", "underlay_route"]
    }
    fn cells(&self) -> Vec<String> {
        let ports: Vec<String> = self.ports.iter().map(|p| format!("{}/{}", p.protocol, p.port)).collect();
        vec![
            self.id.clone(),
            self.vni.to_string(),
            self.ip.clone(),
            ports.join(","),
            self.underlay_route.clone(),
        ]
    }
}

/// Names a load balancer.
#[derive(Debug, Serialize)]
pub struct LbKey {
    /// Load balancer id.
    pub id: String,
}

impl Record for LbKey {
    fn headers() -> Vec<&'static str> {
        vec!["id"]
    }
    fn cells(&self) -> Vec<String> {
        vec![self.id.clone()]
    }
}

/// A target of a load balancer.
#[derive(Debug, Serialize)]
pub struct LbTargetView {
    /// Load balancer id.
    pub lb_id: String,
    /// Underlay address of the target.
    pub target_ip: String,
}

impl Record for LbTargetView {
    fn headers() -> Vec<&'static str> {
        vec!["lb_id", "target_ip"]
    }
    fn cells(&self) -> Vec<String> {
        vec![self.lb_id.clone(), self.target_ip.clone()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iface(id: &str, v6: &str) -> InterfaceView {
        InterfaceView {
            id: id.into(),
            vni: 100,
            device: "net_tap2".into(),
            primary_ipv4: "10.0.0.1".into(),
            primary_ipv6: v6.into(),
            underlay_route: "fc00:1::1".into(),
        }
    }

    #[test]
    fn table_aligns_columns() {
        let out = Output::many(&[iface("vm1", "::"), iface("vm-long-name", "2001:db8::1")]);
        assert_eq!(
            out.render(OutputFormat::Table),
            "\
ID            VNI  DEVICE    PRIMARY_IPV4  PRIMARY_IPV6  UNDERLAY_ROUTE
vm1           100  net_tap2  10.0.0.1      ::            fc00:1::1
vm-long-name  100  net_tap2  10.0.0.1      2001:db8::1   fc00:1::1
"
        );
    }

    #[test]
    fn empty_list_prints_headers_and_empty_array() {
        let out = Output::many::<RouteView>(&[]);
        assert_eq!(out.render(OutputFormat::Table), "VNI  PREFIX  NEXT_HOP  NEXT_HOP_VNI\n");
        assert_eq!(out.render(OutputFormat::Json), "[]\n");
    }

    #[test]
    fn json_is_snake_case_and_flat() {
        let out = Output::one(&Change {
            result: "created",
            object: CreatedInterfaceView { interface: iface("vm1", "::"), vf_name: "tap3".into() },
        });
        let v: serde_json::Value = serde_json::from_str(&out.render(OutputFormat::Json)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "result": "created",
                "id": "vm1",
                "vni": 100,
                "device": "net_tap2",
                "primary_ipv4": "10.0.0.1",
                "primary_ipv6": "::",
                "underlay_route": "fc00:1::1",
                "vf_name": "tap3",
            })
        );
        assert_eq!(
            out.render(OutputFormat::Table),
            "\
RESULT   ID   VNI  DEVICE    PRIMARY_IPV4  PRIMARY_IPV6  UNDERLAY_ROUTE  VF_NAME
created  vm1  100  net_tap2  10.0.0.1      ::            fc00:1::1       tap3
"
        );
    }

    #[test]
    fn empty_cells_show_a_dash() {
        let out = Output::one(&PrefixView {
            interface_id: "vm1".into(),
            prefix: "10.0.0.0/8".into(),
            underlay_route: String::new(),
        });
        assert_eq!(
            out.render(OutputFormat::Table),
            "INTERFACE_ID  PREFIX      UNDERLAY_ROUTE\nvm1           10.0.0.0/8  -\n"
        );
    }

    #[test]
    fn json_keeps_declared_field_order() {
        let out =
            Output::one(&Change { result: "reset", object: VniKey { vni: 7, vni_type: "both".into() } });
        assert_eq!(
            out.render(OutputFormat::Json),
            "{\n  \"result\": \"reset\",\n  \"vni\": 7,\n  \"type\": \"both\"\n}\n"
        );
        assert_eq!(out.render(OutputFormat::Table), "RESULT  VNI  TYPE\nreset   7    both\n");
    }

    #[test]
    fn load_balancer_ports() {
        let lb = LbView {
            id: "lb1".into(),
            vni: 100,
            ip: "10.20.30.40".into(),
            ports: vec![
                LbPortView { protocol: "tcp".into(), port: 80 },
                LbPortView { protocol: "udp".into(), port: 53 },
            ],
            underlay_route: "fc00:1::5".into(),
        };
        let out = Output::one(&Change { result: "created", object: lb });
        assert_eq!(
            out.render(OutputFormat::Table),
            "\
RESULT   ID   VNI  IP           PORTS          UNDERLAY_ROUTE
created  lb1  100  10.20.30.40  tcp/80,udp/53  fc00:1::5
"
        );
        let v: serde_json::Value = serde_json::from_str(&out.render(OutputFormat::Json)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "result": "created",
                "id": "lb1",
                "vni": 100,
                "ip": "10.20.30.40",
                "ports": [{"protocol": "tcp", "port": 80}, {"protocol": "udp", "port": 53}],
                "underlay_route": "fc00:1::5",
            })
        );
    }

    #[test]
    fn firewall_rule_filters() {
        let rule = FirewallRuleView {
            interface_id: "vm1".into(),
            rule_id: "r1".into(),
            direction: "ingress".into(),
            action: "accept".into(),
            priority: 1000,
            source: "0.0.0.0/0".into(),
            destination: "10.0.0.0/8".into(),
            protocol: "tcp".into(),
            src_ports: None,
            dst_ports: Some(PortsView { first: 80, last: 80 }),
            icmp_type: None,
            icmp_code: None,
        };
        let out = Output::one(&rule);
        let table = out.render(OutputFormat::Table);
        let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
        assert_eq!(
            row,
            [
                "vm1",
                "r1",
                "ingress",
                "accept",
                "1000",
                "0.0.0.0/0",
                "10.0.0.0/8",
                "tcp",
                "any",
                "80",
                "any",
                "any"
            ]
        );
        let v: serde_json::Value = serde_json::from_str(&out.render(OutputFormat::Json)).unwrap();
        assert_eq!(v["dst_ports"], serde_json::json!({"first": 80, "last": 80}));
        assert_eq!(v["src_ports"], serde_json::Value::Null);
        assert_eq!(v["icmp_type"], serde_json::Value::Null);
    }
}
