//! `dpfleet-node`: the dpfleet dataplane daemon, a drop-in for `dpservice-bin`.
//!
//! Start-up order: read the options (and fail with exit code 1 before touching DPDK if
//! they are wrong), initialise EAL (falling back to `--no-huge`), find and start the
//! ports, build the control plane, launch one worker per EAL worker lcore, then serve
//! the node API and metrics on a small tokio runtime until SIGINT/SIGTERM. Shutdown
//! reverses it: stop the servers, stop and join the workers, release ports, pool, EAL.
//!
//! Threads: the main thread is DPDK's main lcore and owns the `Eal`; workers own their
//! queues; the tokio threads serve gRPC and metrics and only touch the control plane
//! (which publishes snapshots) and port statistics.

mod api;
mod cli;
mod control;
mod eal_args;
mod gossip;
mod logging;
mod metrics;
mod ports;
mod worker;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context};
use dpfleet_dataplane::config::{NodeConfig, PortRole};
use dpfleet_dataplane::graph::{NeighTable, Pipeline, PipelineConfig};
use dpfleet_dpdk::{Eal, Mempool, Port, PortConfig, DEFAULT_DATA_ROOM};
use tracing::{debug, error, info, warn};

use crate::cli::{Command, Options};

/// Huge pages for the flow table, the express lane and the NAT tables: each is one
/// large allocation read at random (see `dpfleet_mem::HugeAlloc`).
#[global_allocator]
static ALLOC: dpfleet_mem::HugeAlloc = dpfleet_mem::HugeAlloc;

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    let (eal_args, app_args) = cli::split_args(&argv);
    let dp_conf = std::env::var("DP_CONF").ok();
    let opts = match cli::parse(&app_args, dp_conf.as_deref()) {
        Ok(Command::Print(text)) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Ok(Command::Run(opts)) => opts,
        Err(e) => {
            eprintln!("dpfleet-node: {}", e.to_string().trim_end());
            return ExitCode::from(1);
        }
    };
    logging::init(opts.log_format, opts.color);
    match run(eal_args, *opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(eal_args: Vec<String>, opts: Options) -> anyhow::Result<()> {
    let (eal_args, huge) =
        eal_args::prepare(eal_args, &[opts.a_pf0.clone(), opts.a_pf1.clone()], eal_args::probe_host);
    if let eal_args::HugeMode::FellBack { reason } = &huge {
        warn!(%reason, "hugepages not usable; running with --no-huge (about a third slower)");
    }
    let eal = Eal::init(&eal_args).context("DPDK EAL initialisation failed")?;

    // Ports.
    let found: Vec<ports::FoundPort> = eal
        .ports()
        .context("listing DPDK ports")?
        .into_iter()
        .map(|p| ports::FoundPort { id: p.id, device_name: p.name, if_name: p.if_name, mac: p.mac })
        .collect();
    let pf0 = opts.pf0.as_deref().unwrap_or_default();
    let vf_pattern = opts.vf_pattern.as_deref().unwrap_or_default();
    let port_infos = ports::assign(&found, pf0, opts.pf1.as_deref(), vf_pattern)?;
    let max_queues = eal
        .ports()?
        .iter()
        .filter(|p| port_infos.iter().any(|i| i.id == p.id))
        .map(|p| p.max_rx_queues.min(p.max_tx_queues))
        .min()
        .unwrap_or(1)
        .max(1);
    let lcores: Vec<u32> = eal.worker_lcores().collect();
    let wanted = lcores.len().max(1);
    let workers = wanted.min(usize::from(max_queues));
    if workers < wanted {
        warn!(wanted, workers, "ports support fewer queues than there are worker lcores");
    }
    #[allow(clippy::cast_possible_truncation)] // bounded by max_queues (u16)
    let queues = workers as u16;

    let pool = Mempool::new(&eal, "dpfleet_pkts", opts.mbufs, 256, DEFAULT_DATA_ROOM, Some(eal.socket_id()))
        .context("creating the packet pool (try fewer --mbufs or more memory)")?;
    let mut dpdk_ports = Vec::new();
    for info in &port_infos {
        let config = PortConfig { rx_queues: queues, tx_queues: queues, ..PortConfig::default() };
        let mut port = Port::configure(&eal, info.id, &config, &pool)
            .with_context(|| format!("configuring port {} ({})", info.id, info.if_name))?;
        port.set_promiscuous(true).with_context(|| format!("promiscuous mode on {}", info.if_name))?;
        port.start().with_context(|| format!("starting port {} ({})", info.id, info.if_name))?;
        if let Err(e) = port.set_link_up() {
            info!(port = info.id, "link up not supported: {e}");
        }
        let role = match info.role {
            PortRole::Pf(i) => format!("pf{i}"),
            PortRole::Vf => "vf".into(),
        };
        info!(port = info.id, device = %info.device_name, name = %info.if_name, %role, "port started");
        dpdk_ports.push(port);
    }
    if opts.nic_type != cli::NicType::Tap && !opts.no_offload {
        info!("rte_flow offload is not implemented yet; all traffic takes the software path");
    }

    // Control plane.
    let node = NodeConfig {
        underlay_ipv6: opts.ipv6.context("--ipv6 is required")?,
        dhcp_mtu: opts.dhcp_mtu,
        dhcp_dns: opts.dhcp_dns.clone(),
        dhcpv6_dns: opts.dhcpv6_dns.clone(),
        ipv6_overlay: opts.enable_ipv6_overlay,
        pf_ports: port_infos.iter().filter(|p| matches!(p.role, PortRole::Pf(_))).map(|p| p.id).collect(),
        wcmp_percent: opts.wcmp,
    };
    let virtual_services = Arc::new(cli::virtual_services(&opts).context("virtual services")?);
    let control = Arc::new(control::Control::new(node, port_infos.clone()));
    control.set_lb_selection(opts.lb_selection);
    let snapshot = control.snapshot_handle();

    // Workers.
    let stop = Arc::new(AtomicBool::new(false));
    let neigh = Arc::new(NeighTable::default());
    let mut worker_counters = Vec::new();
    let mut threads = Vec::new();
    for w in 0..workers {
        #[allow(clippy::cast_possible_truncation)] // w < queues (u16)
        let q = w as u16;
        let max_id = port_infos.iter().map(|p| usize::from(p.id)).max().unwrap_or(0);
        let mut tx = (0..=max_id).map(|_| None).collect::<Vec<_>>();
        let mut rx = Vec::new();
        for port in &dpdk_ports {
            rx.push(port.rx_queue(q).context("rx queue handle")?);
            tx[usize::from(port.id())] = Some(port.tx_queue(q).context("tx queue handle")?);
        }
        let mut cfg = PipelineConfig::new(
            opts.flow_capacity as usize,
            opts.flow_timeout,
            w,
            workers,
            control::random_u64(),
        );
        cfg.enforce_firewall = opts.enforce_firewall;
        let mut pipeline = Pipeline::with_config(neigh.clone(), &cfg).context("allocating the flow table")?;
        for (addr, len) in pipeline.table_memory() {
            match dpfleet_dpdk::hugemem::advise_huge_pages(addr, len) {
                Ok(a) => debug!(worker = w, bytes = len, ?a, "flow table memory"),
                Err(e) => info!(worker = w, bytes = len, "no transparent huge pages for flow state: {e}"),
            }
        }
        if !virtual_services.is_empty() {
            pipeline.set_virtual_services(virtual_services.clone());
        }
        worker_counters.push(pipeline.counters.clone());
        let worker = worker::Worker {
            rx,
            tx,
            snapshot: snapshot.clone(),
            pipeline,
            stop: stop.clone(),
            busy_poll: opts.busy_poll,
            age_scan: worker::age_scan(opts.flow_capacity as usize, opts.flow_timeout),
            tsc_hz: eal.tsc_hz(),
        };
        match lcores.get(w) {
            Some(&lcore) => {
                eal.launch(lcore, move || worker.run())
                    .with_context(|| format!("launching worker on lcore {lcore}"))?;
                info!(worker = w, lcore, "worker started");
            }
            None => {
                threads.push(
                    std::thread::Builder::new().name("dpfleet-worker".into()).spawn(move || worker.run())?,
                );
                warn!("no EAL worker lcore (give -l with two or more cores); polling from a plain thread");
            }
        }
    }

    // Servers.
    let dpdk_ports = Arc::new(dpdk_ports);
    let devices =
        port_infos.iter().filter(|p| p.role == PortRole::Vf).map(|p| p.device_name.clone()).collect();
    let result = serve(&opts, control, snapshot, worker_counters, dpdk_ports.clone(), devices);

    // Shutdown.
    stop.store(true, Ordering::Relaxed);
    eal.wait_all();
    for t in threads {
        if t.join().is_err() {
            error!("a worker thread panicked");
        }
    }
    drop(dpdk_ports);
    drop(pool);
    drop(eal);
    info!("stopped");
    result
}

fn serve(
    opts: &Options,
    control: Arc<control::Control>,
    snapshot: Arc<arc_swap::ArcSwap<dpfleet_dataplane::config::Snapshot>>,
    worker_counters: Vec<Arc<dpfleet_dataplane::counters::Counters>>,
    ports: Arc<Vec<Port>>,
    devices: Vec<String>,
) -> anyhow::Result<()> {
    let gossip_settings = cli::gossip_settings(opts, cli::hostname)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("dpfleet-ctl")
        .enable_all()
        .build()
        .context("starting the control runtime")?;
    rt.block_on(async move {
        let (tx, rx) = tokio::sync::watch::channel(false);
        let shutdown = move || {
            let mut rx = rx.clone();
            async move {
                let _ = rx.wait_for(|stop| *stop).await;
            }
        };
        let grpc_addr = SocketAddr::new(opts.listen_addr, opts.grpc_port);
        let node_name = cli::fleet_node_name(opts, cli::hostname);
        let grpc = tokio::spawn(api::serve(grpc_addr, Arc::clone(&control), node_name.clone(), shutdown()));
        info!(%grpc_addr, "node API listening");
        let metrics = if opts.metrics_port != 0 {
            let hw: metrics::HwStatsFn = Box::new(move |id| {
                let port = ports.iter().find(|p| p.id() == id)?;
                let s = port.stats().ok()?;
                Some(metrics::PortHwStats {
                    rx_missed: s.imissed,
                    rx_errors: s.ierrors,
                    rx_nombuf: s.rx_nombuf,
                    tx_errors: s.oerrors,
                    rx_bytes: s.ibytes,
                    tx_bytes: s.obytes,
                })
            });
            let fleet_control = Arc::clone(&control);
            let fleet: metrics::FleetStatsFn = Box::new(move || metrics::FleetStats {
                applied_generation: fleet_control.applied_generation(),
                digest_mismatches: fleet_control.digest_mismatches(),
            });
            let registry =
                metrics::NodeCollector::new(worker_counters.clone(), snapshot, hw, fleet).into_registry();
            let addr = SocketAddr::new(opts.listen_addr, opts.metrics_port);
            info!(%addr, "metrics on /metrics");
            Some(tokio::spawn(metrics::serve(addr, registry, shutdown())))
        } else {
            None
        };
        let mut gossip = gossip_settings.map(|settings| {
            let facts = gossip::NodeFacts {
                underlay: control.underlay_ipv6(),
                api: settings.api.clone(),
                version: api::fleet::NODE_VERSION.into(),
                devices,
            };
            let gen_control = Arc::clone(&control);
            let counters = worker_counters.clone();
            tokio::spawn(gossip::run(
                settings,
                facts,
                move || gen_control.applied_generation(),
                move || metrics::load(&counters),
                shutdown(),
            ))
        });
        let signal = wait_for_signal();
        tokio::pin!(signal);
        // Gossip stopping before shutdown (it could not bind, say) stops the node: a
        // node the coordinator cannot see would be declared down and drained anyway.
        let mut gossip_done = false;
        let gossip_stopped = async {
            match gossip.as_mut() {
                Some(g) => {
                    let r = g.await;
                    gossip_done = true;
                    r
                }
                None => std::future::pending().await,
            }
        };
        let outcome = tokio::select! {
            sig = &mut signal => { info!(signal = sig, "shutting down"); Ok(()) }
            r = grpc => match r {
                Ok(Ok(())) => bail!("node API server stopped"),
                Ok(Err(e)) => Err(anyhow::Error::from(e).context(format!("node API on {grpc_addr}"))),
                Err(e) => Err(e.into()),
            },
            r = gossip_stopped => match r {
                Ok(Ok(())) => Err(anyhow::anyhow!("gossip stopped")),
                Ok(Err(e)) => Err(e.context("fleet gossip")),
                Err(e) => Err(e.into()),
            },
        };
        let _ = tx.send(true);
        if let (Some(g), false) = (gossip, gossip_done) {
            match g.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => warn!("gossip: {e:#}"),
                Err(e) => warn!("gossip: {e}"),
            }
        }
        if let Some(m) = metrics {
            match m.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => warn!("metrics server: {e}"),
                Err(e) => warn!("metrics server: {e}"),
            }
        }
        outcome
    })
}

async fn wait_for_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        std::future::pending::<()>().await;
        unreachable!()
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}
