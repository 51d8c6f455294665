//! End-to-end test against the real DPDK: EAL, lcores, mempool, mbufs, `net_ring` and
//! `net_null` ports. EAL can be initialised once per process, hence one `main`.
//!
//! Needs root (DPDK wants /var/run/dpdk and the ability to lock memory); when not
//! root it prints a note and passes. Runs with `--no-huge`, so no hugepages are needed.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use dpfleet_dataplane::buf::PacketBuf;
use dpfleet_dpdk::{current_lcore, Burst, Eal, Error, Mbuf, Mempool, Port, PortConfig, DEFAULT_DATA_ROOM};

/// Env var that makes this binary act as the second process of the locked-prefix check.
const CHILD_PREFIX: &str = "DPFLEET_DPDK_TEST_CHILD_PREFIX";

fn eal_args(prefix: &str) -> Vec<String> {
    [
        "dpfleet-dpdk-test",
        "-l",
        "0,1",
        "--no-huge",
        "-m",
        "256",
        "--no-pci",
        "--log-level=*:warning",
        "--no-telemetry",
        &format!("--file-prefix={prefix}"),
        "--vdev=net_ring0",
        "--vdev=net_null0",
        &format!("--vdev=net_tap0,iface={},mac=22:22:22:22:22:0a", tap_name()),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Kernel name of the test's TAP interface (unique per process, at most 15 bytes).
fn tap_name() -> String {
    format!("dpft{}", std::process::id())
}

/// An Ethernet + IPv4 + UDP frame (64 bytes) whose last payload byte is `tag`.
fn frame(tag: u8) -> Vec<u8> {
    let mut f = vec![
        0x22, 0x22, 0x22, 0x22, 0x22, 0x01, // dst
        0x22, 0x22, 0x22, 0x22, 0x22, 0x00, // src
        0x08, 0x00, // IPv4
        0x45, 0x00, 0x00, 0x32, 0x00, 0x01, 0x00, 0x00, 0x40, 0x11, 0x00, 0x00, // ver..csum
        10, 0, 0, 1, 10, 0, 0, 2, // src, dst
        0x30, 0x39, 0x00, 0x35, 0x00, 0x1e, 0x00, 0x00, // UDP 12345 -> 53, len 30
    ];
    f.resize(64, 0xab);
    f[63] = tag;
    f
}

fn main() {
    if let Ok(prefix) = std::env::var(CHILD_PREFIX) {
        // Second process on a prefix the parent holds: init must fail, explained.
        match Eal::init(&eal_args(&prefix)) {
            Ok(_) => {
                println!("UNEXPECTED-SUCCESS");
                std::process::exit(3)
            }
            Err(e) => {
                println!("CHILD-ERROR: {e}");
                std::process::exit(0)
            }
        }
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("test eal ... skipped (needs root)");
        return;
    }
    run();
    println!("test eal ... ok");
}

fn run() {
    assert_eq!(current_lcore(), None, "not an EAL thread before init");
    assert!(matches!(Eal::init(&[]), Err(Error::NoProgramName)));

    let prefix = format!("dpfleet-dpdk-test-{}", std::process::id());
    let eal = Eal::init(&eal_args(&prefix)).expect("EAL init");
    assert!(matches!(Eal::init(&eal_args(&prefix)), Err(Error::AlreadyInitialized)));
    let runtime_dir = eal.runtime_dir();
    assert!(runtime_dir.ends_with(&prefix), "{runtime_dir:?}");
    assert!(runtime_dir.is_dir());

    check_locked_prefix(&prefix);
    check_lcores(&eal);

    let ports = eal.ports().expect("ports");
    let names: Vec<&str> = ports.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["net_ring0", "net_null0", "net_tap0"], "{ports:?}");
    assert_eq!(ports[2].driver, "net_tap");
    assert_eq!(ports[2].mac, [0x22, 0x22, 0x22, 0x22, 0x22, 0x0a]);
    assert_eq!(ports[2].if_name, Some(tap_name()), "kernel interface of net_tap0");
    assert!(ports[2].if_index.is_some());
    assert_eq!(ports[0].driver, "net_ring");
    assert_eq!(ports[1].driver, "net_null");
    assert_eq!(ports[0].if_index, None, "net_ring has no kernel interface");
    assert_eq!(ports[0].if_name, None);
    assert!(ports[0].max_rx_queues >= 1 && ports[0].max_tx_queues >= 1);
    let ring_id = eal.port_by_name("net_ring0").expect("net_ring0 by name");
    let null_id = eal.port_by_name("net_null0").expect("net_null0 by name");
    assert_eq!((ring_id, null_id), (ports[0].id, ports[1].id));
    assert_eq!(eal.port_by_name("net_tap9"), None);

    let pool = Mempool::new(&eal, "dpf_test_pool", 1023, 32, DEFAULT_DATA_ROOM, Some(eal.socket_id()))
        .expect("mempool");
    assert_eq!(pool.name(), "dpf_test_pool");
    assert_eq!(pool.capacity(), 1023);
    assert_eq!(pool.available(), 1023);
    let dup = Mempool::new(&eal, "dpf_test_pool", 63, 0, DEFAULT_DATA_ROOM, None);
    assert!(matches!(dup, Err(Error::Mempool { .. })), "{dup:?}");

    check_mbuf(&pool);
    check_ring_loopback(&eal, ring_id, &pool);
    check_null_port(&eal, null_id, &pool);
    check_tap_port(&eal, ports[2].id, &pool);

    // Everything was returned to the pool, so it is freed; then EAL cleans up.
    assert_eq!(pool.available(), pool.capacity());
    drop(pool);
    drop(eal);
    assert!(matches!(Eal::init(&eal_args(&prefix)), Err(Error::AlreadyInitialized)));
    std::fs::remove_dir_all(&runtime_dir).expect("remove the EAL runtime directory");
}

fn check_locked_prefix(prefix: &str) {
    let out = std::process::Command::new(std::env::current_exe().expect("current exe"))
        .env(CHILD_PREFIX, prefix)
        .output()
        .expect("spawn child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "child: {stdout} {}", String::from_utf8_lossy(&out.stderr));
    let line = stdout.lines().find(|l| l.starts_with("CHILD-ERROR: ")).expect("child error line");
    assert!(line.contains("DPDK EAL initialisation failed"), "{line}");
    assert!(line.contains("--file-prefix"), "{line}");
}

fn check_lcores(eal: &Eal) {
    assert_eq!(eal.main_lcore(), 0);
    assert_eq!(current_lcore(), Some(0));
    assert_eq!(eal.lcore_count(), 2);
    let workers: Vec<u32> = eal.worker_lcores().collect();
    assert_eq!(workers, [1]);
    assert!(eal.tsc_hz() > 0);

    let seen = Arc::new(AtomicU32::new(u32::MAX));
    let s = seen.clone();
    eal.launch(1, move || s.store(current_lcore().unwrap_or(u32::MAX - 1), Ordering::SeqCst))
        .expect("launch on lcore 1");
    eal.wait_all();
    assert_eq!(seen.load(Ordering::SeqCst), 1, "closure ran on lcore 1");
    assert!(matches!(eal.launch(0, || ()), Err(Error::Launch { lcore: 0, .. })));
    assert!(matches!(eal.launch(7, || ()), Err(Error::Launch { lcore: 7, .. })));
}

fn check_mbuf(pool: &Mempool) {
    let f = frame(7);
    let mut m = Mbuf::from_bytes(pool, &f).expect("mbuf");
    assert_eq!(m.data(), &f[..]);
    assert!(m.is_contiguous());
    assert_eq!(m.pkt_len(), 64);
    assert_eq!(m.headroom(), 128);
    assert_eq!(m.tailroom(), usize::from(DEFAULT_DATA_ROOM) - 128 - 64);
    // SAFETY: m owns a live mbuf; the shim only computes an address.
    let mtod = unsafe { dpfleet_dpdk::sys::dpfleet_pktmbuf_mtod(m.as_ptr()) };
    assert_eq!(
        mtod.cast::<u8>().cast_const(),
        m.data().as_ptr(),
        "data() starts where rte_pktmbuf_mtod says"
    );

    // Outer header in front (encapsulation), then removed again (decapsulation).
    assert!(m.prepend(40));
    assert_eq!(m.len(), 104);
    assert_eq!(m.pkt_len(), 104);
    assert_eq!(&m.data()[40..], &f[..]);
    m.data_mut()[..40].fill(0x66);
    assert_eq!(m.data()[0], 0x66);
    assert!(!m.prepend(89), "only 88 bytes of headroom left");
    assert!(m.adj(40));
    assert_eq!(m.data(), &f[..]);
    assert!(!m.adj(65), "cannot remove more than the packet");
    assert_eq!(m.data(), &f[..]);

    assert!(m.append(6));
    assert_eq!(m.len(), 70);
    assert_eq!(&m.data()[..64], &f[..]);
    assert!(!m.append(m.tailroom() + 1));
    assert!(!m.append(70_000), "larger than u16 is refused, not truncated");
    m.truncate(100);
    assert_eq!(m.len(), 70, "truncate never grows");
    m.truncate(60);
    assert_eq!(m.data(), &f[..60]);
    assert_eq!(m.pkt_len(), 60);
    assert!(m.set_len(64));
    assert_eq!(m.len(), 64);

    let empty = Mbuf::alloc(pool).expect("alloc");
    assert!(empty.is_empty());
    assert!(Mbuf::from_bytes(pool, &[0u8; 2049]).is_none(), "does not fit one segment");
    let used = pool.capacity() - pool.available();
    assert!(used >= 2, "mbufs in use are not available");
    drop((m, empty));
    assert_eq!(pool.available(), pool.capacity());

    // A chained (two-segment) mbuf: data() is the first segment, the tail is not edited.
    let mut head = Mbuf::from_bytes(pool, &f[..32]).expect("head");
    let tail = Mbuf::from_bytes(pool, &f[32..]).expect("tail");
    // SAFETY: both mbufs are live and owned; on success the head owns the tail.
    let rc = unsafe { dpfleet_dpdk::sys::rte_pktmbuf_chain(head.as_ptr(), tail.into_raw()) };
    assert_eq!(rc, 0);
    assert!(!head.is_contiguous());
    assert_eq!(head.pkt_len(), 64);
    assert_eq!(head.data(), &f[..32]);
    assert!(!head.append(1));
    head.truncate(10);
    assert_eq!(head.pkt_len(), 64);
    drop(head); // frees both segments
    assert_eq!(pool.available(), pool.capacity());

    // Burst bookkeeping without a port.
    let mut b: Burst<4> = Burst::new();
    for i in 0..4 {
        b.push(Mbuf::from_bytes(pool, &frame(i)).expect("mbuf")).expect("room");
    }
    assert!(b.is_full());
    let extra = Mbuf::from_bytes(pool, &frame(9)).expect("mbuf");
    let extra = b.push(extra).expect_err("burst is full");
    assert_eq!(extra.data(), &frame(9)[..]);
    assert_eq!(b.pop().expect("last").data(), &frame(3)[..]);
    let mut it = b.drain();
    assert_eq!(it.len(), 3);
    assert_eq!(it.next().expect("first").data(), &frame(0)[..]);
    drop(it); // frees the two not taken
    assert!(b.is_empty());
    drop(extra);
    assert_eq!(pool.available(), pool.capacity());
}

fn check_ring_loopback(eal: &Eal, id: u16, pool: &Mempool) {
    let config = PortConfig { rx_queues: 1, tx_queues: 1, rx_descriptors: 256, tx_descriptors: 256 };
    let mut port = Port::configure(eal, id, &config, pool).expect("configure net_ring0");
    assert!(matches!(Port::configure(eal, id, &config, pool), Err(Error::PortInUse(p)) if p == id));
    let too_many = PortConfig { rx_queues: 1024, ..config };
    assert!(matches!(Port::configure(eal, 99, &too_many, pool), Err(Error::NoSuchPort(99))));
    port.start().expect("start");
    port.set_promiscuous(true).expect("promiscuous");
    port.set_link_up().expect("net_ring supports link up");
    assert_eq!(port.info().expect("info").name, "net_ring0");

    let mut rx = port.rx_queue(0).expect("rx queue 0");
    let mut tx = port.tx_queue(0).expect("tx queue 0");
    assert!(port.rx_queue(0).is_none(), "each queue has one handle");
    assert!(port.rx_queue(1).is_none(), "out of range");

    let mut out: Burst<32> = Burst::new();
    for i in 0..8 {
        out.push(Mbuf::from_bytes(pool, &frame(i)).expect("mbuf")).expect("room");
    }
    assert_eq!(tx.tx_burst(&mut out), 8);
    assert!(out.is_empty());

    let mut inb: Burst<32> = Burst::new();
    assert_eq!(rx.rx_burst(&mut inb), 8, "net_ring loops tx back to rx");
    for (i, m) in inb.as_mut_slice().iter_mut().enumerate() {
        assert_eq!(m.data(), &frame(i as u8)[..]);
        m.data_mut()[0] = 0x02; // writable in place
    }
    assert_eq!(rx.rx_burst(&mut inb), 0);

    // Send them back out and receive again, edited bytes intact.
    assert_eq!(tx.tx_burst(&mut inb), 8);
    assert_eq!(rx.rx_burst(&mut inb), 8);
    assert!(inb.as_slice().iter().all(|m| m.data()[0] == 0x02));
    inb.clear();

    let s = port.stats().expect("stats");
    assert_eq!((s.opackets, s.ipackets), (16, 16), "{s:?}");
    // net_ring counts packets only (ibytes/obytes stay 0 in DPDK 22.11).
    assert_eq!((s.ierrors, s.oerrors, s.rx_nombuf), (0, 0, 0));

    assert!(matches!(port.stop(), Err(Error::QueuesInUse(p)) if p == id));
    // A queue handle can be used from another thread (it is Send).
    let rx = std::thread::spawn(move || {
        let mut b: Burst<8> = Burst::new();
        assert_eq!(rx.rx_burst(&mut b), 0);
        rx
    })
    .join()
    .expect("thread");
    drop((rx, tx));
    assert!(port.rx_queue(0).is_some(), "dropped handles can be taken again");
    port.stop().expect("stop");
    port.close().expect("close");
}

fn check_null_port(eal: &Eal, id: u16, pool: &Mempool) {
    let mut port = Port::configure(eal, id, &PortConfig::default(), pool).expect("configure net_null0");
    port.start().expect("start");
    let link = port.set_link_up();
    assert!(matches!(link, Err(Error::Port { code, .. }) if code == libc::ENOTSUP), "{link:?}");
    let mut tx = port.tx_queue(0).expect("tx");
    let mut rx = port.rx_queue(0).expect("rx");
    let mut out: Burst<32> = Burst::new();
    for i in 0..5 {
        out.push(Mbuf::from_bytes(pool, &frame(i)).expect("mbuf")).expect("room");
    }
    assert_eq!(tx.tx_burst(&mut out), 5, "net_null swallows everything");
    let mut inb: Burst<16> = Burst::new();
    assert_eq!(rx.rx_burst(&mut inb), 16, "net_null produces packets on demand");
    assert_eq!(rx.rx_burst(&mut inb), 0, "a full burst takes nothing");
    drop(inb);
    let s = port.stats().expect("stats");
    assert_eq!(s.opackets, 5, "{s:?}");
    assert_eq!(s.ipackets, 16, "{s:?}");
    drop((tx, rx));
    drop(port); // stopped and closed by drop
    assert_eq!(eal.port_by_name("net_null0"), None, "closing a vdev port removes it");
}

fn check_tap_port(eal: &Eal, id: u16, pool: &Mempool) {
    // Two queue pairs exercise the RSS configuration path.
    let config = PortConfig { rx_queues: 2, tx_queues: 2, rx_descriptors: 128, tx_descriptors: 128 };
    let mut port = Port::configure(eal, id, &config, pool).expect("configure net_tap0");
    port.start().expect("start");
    port.set_link_up().expect("link up");
    port.set_promiscuous(true).expect("promiscuous");
    let info = port.info().expect("info");
    assert_eq!(info.if_name, Some(tap_name()));
    let mut q1 = port.tx_queue(1).expect("tx queue 1");
    let mut out: Burst<4> = Burst::new();
    out.push(Mbuf::from_bytes(pool, &frame(1)).expect("mbuf")).expect("room");
    assert_eq!(q1.tx_burst(&mut out), 1, "the kernel takes the frame");
    assert_eq!(port.stats().expect("stats").opackets, 1);
    drop(q1);
    port.close().expect("close");
}
