//! Ethdev ports and their rx/tx queues.

use std::cell::Cell;
use std::ffi::{c_char, CStr};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::burst::Burst;
use crate::eal::Eal;
use crate::error::{check_port, Error};
use crate::live;
use crate::mempool::Mempool;
use crate::sys;

const MAX_PORTS: usize = sys::RTE_MAX_ETHPORTS as usize;
const NAME_LEN: usize = sys::RTE_ETH_NAME_MAX_LEN as usize;

/// Ports a [`Port`] handle exists for; one handle per port.
static CLAIMED: [AtomicBool; MAX_PORTS] = [const { AtomicBool::new(false) }; MAX_PORTS];

/// RSS hash types requested when a port has several rx queues (IPv4/IPv6, TCP/UDP),
/// masked with what the device supports. Values are `RTE_ETH_RSS_*` from rte_ethdev.h.
const RSS_IP_TCP_UDP: u64 = (1 << 2) // IPV4
    | (1 << 3) // FRAG_IPV4
    | (1 << 4) // NONFRAG_IPV4_TCP
    | (1 << 5) // NONFRAG_IPV4_UDP
    | (1 << 7) // NONFRAG_IPV4_OTHER
    | (1 << 8) // IPV6
    | (1 << 9) // FRAG_IPV6
    | (1 << 10) // NONFRAG_IPV6_TCP
    | (1 << 11) // NONFRAG_IPV6_UDP
    | (1 << 13) // NONFRAG_IPV6_OTHER
    | (1 << 15) // IPV6_EX
    | (1 << 16) // IPV6_TCP_EX
    | (1 << 17); // IPV6_UDP_EX

/// What DPDK knows about a port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortInfo {
    /// The ethdev port id.
    pub id: u16,
    /// DPDK's device name, e.g. `net_tap0` or a PCI address.
    pub name: String,
    /// The driver, e.g. `net_tap`.
    pub driver: String,
    /// The port's MAC address.
    pub mac: [u8; 6],
    /// Kernel interface index, when the driver has a kernel netdev (net_tap does).
    pub if_index: Option<u32>,
    /// Kernel interface name for `if_index` (e.g. `dtap0`).
    pub if_name: Option<String>,
    /// Most rx queues the device supports.
    pub max_rx_queues: u16,
    /// Most tx queues the device supports.
    pub max_tx_queues: u16,
    /// NUMA socket of the device, when known.
    pub socket: Option<u32>,
}

/// Queue layout of a port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortConfig {
    /// Number of rx queues (RSS spreads flows over them when more than one).
    pub rx_queues: u16,
    /// Number of tx queues.
    pub tx_queues: u16,
    /// Descriptors per rx queue (adjusted to the device's limits).
    pub rx_descriptors: u16,
    /// Descriptors per tx queue (adjusted to the device's limits).
    pub tx_descriptors: u16,
}

impl Default for PortConfig {
    fn default() -> Self {
        PortConfig { rx_queues: 1, tx_queues: 1, rx_descriptors: 1024, tx_descriptors: 1024 }
    }
}

/// Basic counters of a port (`rte_eth_stats`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortStats {
    /// Packets received.
    pub ipackets: u64,
    /// Packets sent.
    pub opackets: u64,
    /// Bytes received.
    pub ibytes: u64,
    /// Bytes sent.
    pub obytes: u64,
    /// Receive errors.
    pub ierrors: u64,
    /// Transmit errors.
    pub oerrors: u64,
    /// Packets dropped by the device because no rx descriptor was free.
    pub imissed: u64,
    /// Receive failures because the mempool was empty.
    pub rx_nombuf: u64,
}

/// A configured ethdev port, owned by the control thread.
///
/// Created by [`Port::configure`], which sets up all queues; [`Port::start`] then makes
/// it pass packets. Workers poll it through [`RxQueue`] / [`TxQueue`] handles taken with
/// [`Port::rx_queue`] / [`Port::tx_queue`]. The port is stopped and closed when the
/// `Port` and all its queue handles are gone (or by [`Port::close`]).
#[derive(Debug)]
pub struct Port {
    shared: Arc<Shared>,
}

/// State shared by a port and its queue handles; the last one to go closes the port.
#[derive(Debug)]
struct Shared {
    id: u16,
    rx_taken: Box<[AtomicBool]>,
    tx_taken: Box<[AtomicBool]>,
    closed: AtomicBool,
    // Dropped after the port is closed: the rx queues allocate from the pool until then.
    _pool: Mempool,
    _claim: Claim,
    _live: live::Token,
}

/// Exclusive right to configure one port id.
#[derive(Debug)]
struct Claim(u16);

impl Claim {
    fn take(id: u16) -> Result<Claim, Error> {
        let slot = CLAIMED.get(usize::from(id)).ok_or(Error::NoSuchPort(id))?;
        if slot.swap(true, Ordering::AcqRel) {
            return Err(Error::PortInUse(id));
        }
        Ok(Claim(id))
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        CLAIMED[usize::from(self.0)].store(false, Ordering::Release);
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        if !self.closed.load(Ordering::Acquire) {
            // Errors cannot be reported from drop; Port::close reports them.
            // SAFETY: last reference to the port, so no queue is being polled.
            unsafe {
                sys::rte_eth_dev_stop(self.id);
                sys::rte_eth_dev_close(self.id);
            }
        }
    }
}

fn valid_port(id: u16) -> Result<(), Error> {
    // SAFETY: any id is accepted.
    if unsafe { sys::rte_eth_dev_is_valid_port(id) } == 0 {
        return Err(Error::NoSuchPort(id));
    }
    Ok(())
}

fn dev_info(id: u16) -> Result<sys::rte_eth_dev_info, Error> {
    let mut info = sys::rte_eth_dev_info::default();
    // SAFETY: valid out-pointer; the call fills it.
    check_port(id, "rte_eth_dev_info_get", unsafe { sys::rte_eth_dev_info_get(id, &mut info) })?;
    Ok(info)
}

fn c_buf_to_string(buf: &[c_char]) -> String {
    let bytes: Vec<u8> = buf.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Collects a [`PortInfo`] for port `id`.
pub(crate) fn port_info(id: u16) -> Result<PortInfo, Error> {
    valid_port(id)?;
    let mut name = [0 as c_char; NAME_LEN];
    // SAFETY: name has RTE_ETH_NAME_MAX_LEN bytes, as the function requires.
    let ret = unsafe { sys::rte_eth_dev_get_name_by_port(id, name.as_mut_ptr()) };
    check_port(id, "rte_eth_dev_get_name_by_port", ret)?;
    let info = dev_info(id)?;
    let driver = if info.driver_name.is_null() {
        String::new()
    } else {
        // SAFETY: non-null driver_name points to the driver's static NUL-terminated name.
        unsafe { CStr::from_ptr(info.driver_name) }.to_string_lossy().into_owned()
    };
    let mut mac = sys::rte_ether_addr::default();
    // SAFETY: valid out-pointer.
    check_port(id, "rte_eth_macaddr_get", unsafe { sys::rte_eth_macaddr_get(id, &mut mac) })?;
    let if_index = (info.if_index != 0).then_some(info.if_index);
    let if_name = if_index.and_then(|idx| {
        let mut buf = [0 as c_char; libc::IF_NAMESIZE];
        // SAFETY: buf has IF_NAMESIZE bytes, as if_indextoname requires.
        let p = unsafe { libc::if_indextoname(idx, buf.as_mut_ptr()) };
        (!p.is_null()).then(|| c_buf_to_string(&buf))
    });
    // SAFETY: id is valid.
    let socket = u32::try_from(unsafe { sys::rte_eth_dev_socket_id(id) }).ok();
    Ok(PortInfo {
        id,
        name: c_buf_to_string(&name),
        driver,
        mac: mac.addr_bytes,
        if_index,
        if_name,
        max_rx_queues: info.max_rx_queues,
        max_tx_queues: info.max_tx_queues,
        socket,
    })
}

impl Port {
    /// Configures port `id` with `config` and sets up every queue; rx queues take their
    /// buffers from `pool` (the port keeps a clone of it until it is closed). The port
    /// is left stopped. Fails with [`Error::PortInUse`] when another `Port` exists for
    /// the same id.
    pub fn configure(_eal: &Eal, id: u16, config: &PortConfig, pool: &Mempool) -> Result<Port, Error> {
        valid_port(id)?;
        let claim = Claim::take(id)?;
        let info = dev_info(id)?;
        let bad = |reason: String| Error::InvalidConfig { port: id, reason };
        if config.rx_queues == 0 || config.rx_queues > info.max_rx_queues {
            return Err(bad(format!(
                "{} rx queues requested, device supports 1..={}",
                config.rx_queues, info.max_rx_queues
            )));
        }
        if config.tx_queues == 0 || config.tx_queues > info.max_tx_queues {
            return Err(bad(format!(
                "{} tx queues requested, device supports 1..={}",
                config.tx_queues, info.max_tx_queues
            )));
        }
        let mut conf = sys::rte_eth_conf::default();
        let rss_hf = RSS_IP_TCP_UDP & info.flow_type_rss_offloads;
        if config.rx_queues > 1 && rss_hf != 0 {
            conf.rxmode.mq_mode = sys::rte_eth_rx_mq_mode_RTE_ETH_MQ_RX_RSS;
            conf.rx_adv_conf.rss_conf.rss_hf = rss_hf;
        }
        // SAFETY: conf is a valid, fully initialised configuration; the port is ours.
        let ret = unsafe { sys::rte_eth_dev_configure(id, config.rx_queues, config.tx_queues, &conf) };
        check_port(id, "rte_eth_dev_configure", ret)?;
        let (mut nb_rx, mut nb_tx) = (config.rx_descriptors, config.tx_descriptors);
        // SAFETY: valid in/out pointers.
        let ret = unsafe { sys::rte_eth_dev_adjust_nb_rx_tx_desc(id, &mut nb_rx, &mut nb_tx) };
        check_port(id, "rte_eth_dev_adjust_nb_rx_tx_desc", ret)?;
        // SAFETY: id is valid.
        let socket = u32::try_from(unsafe { sys::rte_eth_dev_socket_id(id) }).unwrap_or(u32::MAX);
        for q in 0..config.rx_queues {
            // SAFETY: configured port, queue in range, default rxconf (NULL), and a live
            // pool that the port keeps alive (Shared::_pool) until it is closed.
            let ret =
                unsafe { sys::rte_eth_rx_queue_setup(id, q, nb_rx, socket, std::ptr::null(), pool.as_ptr()) };
            check_port(id, "rte_eth_rx_queue_setup", ret)?;
        }
        for q in 0..config.tx_queues {
            // SAFETY: configured port, queue in range, default txconf (NULL).
            let ret = unsafe { sys::rte_eth_tx_queue_setup(id, q, nb_tx, socket, std::ptr::null()) };
            check_port(id, "rte_eth_tx_queue_setup", ret)?;
        }
        let flags = |n: u16| (0..n).map(|_| AtomicBool::new(false)).collect();
        Ok(Port {
            shared: Arc::new(Shared {
                id,
                rx_taken: flags(config.rx_queues),
                tx_taken: flags(config.tx_queues),
                closed: AtomicBool::new(false),
                _pool: pool.clone(),
                _claim: claim,
                _live: live::Token::new(),
            }),
        })
    }

    /// The ethdev port id.
    pub fn id(&self) -> u16 {
        self.shared.id
    }

    /// Name, driver, MAC address, kernel interface, limits.
    pub fn info(&self) -> Result<PortInfo, Error> {
        port_info(self.id())
    }

    /// Starts the port (`rte_eth_dev_start`).
    pub fn start(&mut self) -> Result<(), Error> {
        // SAFETY: configured port; &mut self serialises control operations.
        check_port(self.id(), "rte_eth_dev_start", unsafe { sys::rte_eth_dev_start(self.id()) })
    }

    /// Stops the port. Fails with [`Error::QueuesInUse`] while a queue handle exists,
    /// because DPDK must not stop a port that is being polled.
    pub fn stop(&mut self) -> Result<(), Error> {
        if Arc::strong_count(&self.shared) > 1 {
            return Err(Error::QueuesInUse(self.id()));
        }
        // SAFETY: no queue handle exists, so nobody polls the port.
        check_port(self.id(), "rte_eth_dev_stop", unsafe { sys::rte_eth_dev_stop(self.id()) })
    }

    /// Stops and closes the port, reporting errors. With queue handles still alive it
    /// returns [`Error::QueuesInUse`] and the port is closed when the last one drops.
    pub fn close(mut self) -> Result<(), Error> {
        self.stop()?;
        self.shared.closed.store(true, Ordering::Release);
        // SAFETY: stopped, and no queue handle exists.
        check_port(self.id(), "rte_eth_dev_close", unsafe { sys::rte_eth_dev_close(self.id()) })
    }

    /// Turns promiscuous mode on or off.
    pub fn set_promiscuous(&mut self, on: bool) -> Result<(), Error> {
        let id = self.id();
        if on {
            // SAFETY: configured port; &mut self serialises control operations.
            let ret = unsafe { sys::rte_eth_promiscuous_enable(id) };
            check_port(id, "rte_eth_promiscuous_enable", ret)
        } else {
            // SAFETY: as above.
            let ret = unsafe { sys::rte_eth_promiscuous_disable(id) };
            check_port(id, "rte_eth_promiscuous_disable", ret)
        }
    }

    /// Sets the link administratively up (not every driver supports it: `net_null`
    /// fails with `ENOTSUP`, which callers may ignore).
    pub fn set_link_up(&mut self) -> Result<(), Error> {
        // SAFETY: configured port.
        check_port(self.id(), "rte_eth_dev_set_link_up", unsafe { sys::rte_eth_dev_set_link_up(self.id()) })
    }

    /// The port's counters; callable from any thread.
    pub fn stats(&self) -> Result<PortStats, Error> {
        let mut s = sys::rte_eth_stats::default();
        // SAFETY: valid out-pointer; reading stats is safe while the port is polled.
        check_port(self.id(), "rte_eth_stats_get", unsafe { sys::rte_eth_stats_get(self.id(), &mut s) })?;
        Ok(PortStats {
            ipackets: s.ipackets,
            opackets: s.opackets,
            ibytes: s.ibytes,
            obytes: s.obytes,
            ierrors: s.ierrors,
            oerrors: s.oerrors,
            imissed: s.imissed,
            rx_nombuf: s.rx_nombuf,
        })
    }

    /// The handle for rx queue `queue`; `None` when out of range or already taken (a
    /// dropped handle can be taken again).
    pub fn rx_queue(&self, queue: u16) -> Option<RxQueue> {
        let flag = self.shared.rx_taken.get(usize::from(queue))?;
        if flag.swap(true, Ordering::AcqRel) {
            return None;
        }
        Some(RxQueue { shared: self.shared.clone(), port: self.id(), queue, _not_sync: PhantomData })
    }

    /// The handle for tx queue `queue`; `None` when out of range or already taken (a
    /// dropped handle can be taken again).
    pub fn tx_queue(&self, queue: u16) -> Option<TxQueue> {
        let flag = self.shared.tx_taken.get(usize::from(queue))?;
        if flag.swap(true, Ordering::AcqRel) {
            return None;
        }
        Some(TxQueue { shared: self.shared.clone(), port: self.id(), queue, _not_sync: PhantomData })
    }
}

/// The only handle that receives on one rx queue of a port. `Send`, not `Sync`: it
/// moves to the worker that polls the queue.
#[derive(Debug)]
pub struct RxQueue {
    shared: Arc<Shared>,
    port: u16,
    queue: u16,
    _not_sync: PhantomData<Cell<()>>,
}

impl RxQueue {
    /// The port id.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The queue id.
    pub fn queue(&self) -> u16 {
        self.queue
    }

    /// Receives up to the free capacity of `burst`, appending behind what it holds;
    /// returns how many mbufs arrived. Does not allocate. Returns 0 while the port is
    /// stopped.
    #[inline]
    pub fn rx_burst<const N: usize>(&mut self, burst: &mut Burst<N>) -> usize {
        let (slots, free) = burst.spare_raw();
        if free == 0 {
            return 0;
        }
        // SAFETY: this handle is the only user of the queue (taken once, !Sync); slots
        // points to `free` writable pointer slots inside the burst; the port outlives
        // the call (self.shared).
        let n = unsafe { sys::rte_eth_rx_burst(self.port, self.queue, slots, free) };
        let n = usize::from(n.min(free));
        // SAFETY: rte_eth_rx_burst wrote n owned mbufs into the free slots.
        unsafe { burst.commit(n) };
        n
    }
}

impl Drop for RxQueue {
    fn drop(&mut self) {
        self.shared.rx_taken[usize::from(self.queue)].store(false, Ordering::Release);
    }
}

/// The only handle that transmits on one tx queue of a port. `Send`, not `Sync`.
#[derive(Debug)]
pub struct TxQueue {
    shared: Arc<Shared>,
    port: u16,
    queue: u16,
    _not_sync: PhantomData<Cell<()>>,
}

impl TxQueue {
    /// The port id.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The queue id.
    pub fn queue(&self) -> u16 {
        self.queue
    }

    /// Transmits the mbufs of `burst` from the front; the device takes ownership of the
    /// ones it accepted, which leave the burst. The unsent ones stay in it (in order)
    /// for the caller to retry or free. Returns the number sent. Does not allocate.
    #[inline]
    pub fn tx_burst<const N: usize>(&mut self, burst: &mut Burst<N>) -> usize {
        let (slots, n) = burst.held_raw();
        if n == 0 {
            return 0;
        }
        // SAFETY: this handle is the only user of the queue; slots holds n owned mbufs.
        let sent = unsafe { sys::rte_eth_tx_burst(self.port, self.queue, slots, n) };
        let sent = usize::from(sent.min(n));
        // SAFETY: the device owns the first `sent` mbufs now.
        unsafe { burst.consume_front(sent) };
        sent
    }
}

impl Drop for TxQueue {
    fn drop(&mut self) {
        self.shared.tx_taken[usize::from(self.queue)].store(false, Ordering::Release);
    }
}
