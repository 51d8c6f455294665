//! Runs the built `dpfleetctl` binary against a real one-member coordinator cluster
//! (started in this process on a loopback port with a temporary data directory): table
//! and JSON output, request ids, errors and exit codes of the cluster commands.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use dpfleet_coordinator::{default_config, Member};
use openraft::BasicNode;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn ctl(endpoints: &str, args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_dpfleetctl"))
        .env_remove("DPFLEET_COORDINATOR")
        .env_remove("DPFLEET_NODE")
        .arg("--coordinator")
        .arg(endpoints)
        .args(args)
        .output()
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

fn ok(endpoints: &str, args: &[&str]) -> String {
    let r = ctl(endpoints, args);
    assert_eq!(r.code, 0, "{args:?}: {}{}", r.stdout, r.stderr);
    r.stdout
}

fn json(endpoints: &str, args: &[&str]) -> serde_json::Value {
    let all: Vec<&str> = ["-o", "json"].iter().chain(args).copied().collect();
    serde_json::from_str(&ok(endpoints, &all)).unwrap()
}

#[test]
fn cluster_commands_against_a_one_member_cluster() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (member, addr) = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let member = Member::start(1, listener, dir.path(), default_config()).await.unwrap();
        member.raft().initialize(BTreeMap::from([(1, BasicNode::new(addr.to_string()))])).await.unwrap();
        member
            .raft()
            .wait(Some(Duration::from_secs(20)))
            .metrics(|m| m.current_leader == Some(1), "leader")
            .await
            .unwrap();
        (member, addr)
    });
    let ep = format!("http://{addr}");
    let ep = ep.as_str();

    // Writes print the object, the result and the generation.
    let out = ok(ep, &["cluster", "vni", "create", "100"]);
    assert_eq!(out, "RESULT   VNI  GENERATION\ncreated  100  1\n");
    let v = json(
        ep,
        &[
            "cluster",
            "node",
            "register",
            "--id",
            "n1",
            "--underlay",
            "fd00:1::1",
            "--api-endpoint",
            "[fd00:1::1]:1337",
            "--devices",
            "tap0,tap1",
        ],
    );
    assert_eq!(v, serde_json::json!({"result": "registered", "id": "n1", "generation": 2}));

    // Placed by the coordinator: the only node, its first device.
    let v = json(ep, &["cluster", "iface", "create", "--id", "vm1", "--vni", "100", "--ipv4", "10.0.0.1"]);
    assert_eq!((v["node"].as_str(), v["device"].as_str()), (Some("n1"), Some("tap0")));
    assert!(v["underlay"].as_str().unwrap().starts_with("fd00:1::"), "{v}");
    let table = ok(ep, &["cluster", "iface", "list"]);
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("ID   VNI  NODE  DEVICE  IPV4      IPV6  UNDERLAY"), "{table}");
    assert!(lines[1].starts_with("vm1  100  n1    tap0    10.0.0.1  -     fd00:1::"), "{table}");
    assert_eq!(json(ep, &["cluster", "iface", "list", "--on-node", "n2"]), serde_json::json!([]));

    // A request id makes a retry harmless: same answer, applied once.
    let first = ok(ep, &["cluster", "vni", "create", "200", "--request-id", "vni-200"]);
    let again = ok(ep, &["cluster", "vni", "create", "200", "--request-id", "vni-200"]);
    assert_eq!(first, again);
    assert_eq!(json(ep, &["cluster", "vni", "list"]).as_array().unwrap().len(), 2);

    // NAT: a block, and the gateway with its allocations as two tables.
    ok(
        ep,
        &[
            "cluster",
            "nat",
            "create",
            "--id",
            "gw",
            "--vni",
            "100",
            "--ips",
            "203.0.113.1",
            "--min-port",
            "1024",
            "--max-port",
            "2048",
            "--block-size",
            "512",
        ],
    );
    let v = json(ep, &["cluster", "nat", "attach", "--gateway", "gw", "--iface", "vm1"]);
    assert_eq!(
        (v["ip"].as_str(), v["port_min"].as_u64(), v["port_max"].as_u64()),
        (Some("203.0.113.1"), Some(1024), Some(1536))
    );
    let table = ok(ep, &["cluster", "nat", "get", "gw"]);
    assert!(table.contains("BLOCKS_USED  BLOCKS_TOTAL"), "{table}");
    assert!(table.contains("\n\nINTERFACE_ID  IP"), "{table}");
    let v = json(ep, &["cluster", "nat", "get", "gw"]);
    assert_eq!(
        (v["blocks_used"].as_u64(), v["allocations"][0]["interface_id"].as_str()),
        (Some(1), Some("vm1"))
    );

    // Load balancer with the interface as a target.
    ok(
        ep,
        &[
            "cluster",
            "lb",
            "create",
            "--id",
            "web",
            "--vni",
            "100",
            "--ip",
            "10.0.0.100",
            "--ports",
            "tcp/80",
        ],
    );
    let v = json(ep, &["cluster", "lb", "add-target", "--lb", "web", "--iface", "vm1"]);
    assert_eq!(v["epoch"].as_u64(), Some(2));
    assert_eq!(v["digest"].as_str().unwrap().len(), 16);
    let v = json(ep, &["cluster", "lb", "get", "web"]);
    assert_eq!(v["target_list"][0]["interface_id"].as_str(), Some("vm1"));
    assert_eq!(v["node_underlays"][0]["node"].as_str(), Some("n1"));

    // Status and members.
    let status = ok(ep, &["cluster", "status"]);
    assert!(status.starts_with("FIELD           VALUE\nmember_id       1\nleader_id       1\n"), "{status}");
    let v = json(ep, &["cluster", "status"]);
    assert_eq!((v["interfaces"].as_u64(), v["nat_gateways"].as_u64()), (Some(1), Some(1)));
    let v = json(ep, &["cluster", "member", "list"]);
    assert_eq!(
        v,
        serde_json::json!([{"id": 1, "addr": addr.to_string(), "role": "voter", "leader": true, "matched_index": v[0]["matched_index"]}])
    );

    // The first endpoint that answers is used.
    let both = format!("http://127.0.0.1:1,{ep}");
    assert!(ok(&both, &["cluster", "node", "list"]).contains("n1"));

    // Refused by the coordinator: exit 2, the reason on stderr, nothing changed.
    let before = json(ep, &["cluster", "status"])["generation"].clone();
    let r = ctl(ep, &["cluster", "vni", "create", "100"]);
    assert_eq!(r.code, 2);
    assert_eq!(r.stderr, "error: VNI 100 already exists (gRPC AlreadyExists)\n");
    let r = ctl(ep, &["cluster", "nat", "attach", "--gateway", "gw", "--iface", "vm9"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("unknown interface vm9 (gRPC NotFound)"), "{}", r.stderr);
    let r = ctl(
        ep,
        &["cluster", "route", "add", "--vni", "100", "--prefix", "10.0.0.1/8", "--next-hop", "fd00::1"],
    );
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("InvalidArgument"), "{}", r.stderr);
    assert_eq!(json(ep, &["cluster", "--stale", "status"])["generation"], before);

    // Usage and connection errors: exit 1.
    let r = ctl(ep, &["cluster", "vni", "create"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let r = ctl("http://127.0.0.1:1", &["cluster", "status"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.starts_with("error: cannot connect to http://127.0.0.1:1"), "{}", r.stderr);
    assert_eq!(r.stdout, "");

    runtime.block_on(member.stop()).unwrap();
}
