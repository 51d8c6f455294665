//! EAL initialisation, lcores and worker launch.

use std::ffi::{c_char, c_int, c_void, CString};
use std::marker::PhantomData;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{rte_errno, strerror, Error};
use crate::port::{port_info, PortInfo};
use crate::sys;

/// Set by the first `Eal::init`; never cleared, because DPDK cannot initialise twice.
static INITIALIZED: AtomicBool = AtomicBool::new(false);

/// `LCORE_ID_ANY`: the lcore id of threads that are not EAL threads.
const LCORE_ID_ANY: u32 = u32::MAX;

/// The initialised DPDK Environment Abstraction Layer.
///
/// There is at most one per process. It stays on the thread that created it (it is
/// neither `Send` nor `Sync`), which DPDK calls the main lcore; [`Eal::launch`] and
/// [`Eal::wait_all`] must run there, and the type makes sure they do.
///
/// Dropping it waits for all workers and then calls `rte_eal_cleanup`, but only when
/// every [`crate::Mempool`] and [`crate::Port`] is gone and no pool memory was leaked;
/// otherwise cleanup is skipped (harmless at process exit; pass `--huge-unlink` so no
/// hugepage files stay behind), because DPDK calls after cleanup would be unsound.
#[derive(Debug)]
pub struct Eal {
    main_lcore: u32,
    /// Makes the type `!Send` and `!Sync`.
    _main_thread: PhantomData<*const ()>,
}

impl Eal {
    /// Initialises EAL with `args`: `args[0]` is the program name, the rest are EAL
    /// arguments exactly as on a DPDK command line (`-l 0,1 --no-huge -m 256
    /// --file-prefix=x --vdev=net_tap0,iface=dtap0 ...`).
    ///
    /// The argument strings are leaked on purpose: EAL keeps pointers into `argv` (the
    /// program name becomes the syslog ident). Fails with
    /// [`Error::AlreadyInitialized`] on a second call, even when the first one failed.
    pub fn init(args: &[String]) -> Result<Eal, Error> {
        if args.is_empty() {
            return Err(Error::NoProgramName);
        }
        let mut argv: Vec<*mut c_char> = Vec::with_capacity(args.len() + 1);
        for arg in args {
            let c = CString::new(arg.as_str()).map_err(|_| Error::NulInArgument(arg.clone()))?;
            argv.push(c.into_raw());
        }
        if INITIALIZED.swap(true, Ordering::AcqRel) {
            for p in argv {
                // SAFETY: p came from CString::into_raw above and was not handed to DPDK.
                drop(unsafe { CString::from_raw(p) });
            }
            return Err(Error::AlreadyInitialized);
        }
        let argc = c_int::try_from(argv.len()).map_err(|_| Error::EalInit("too many arguments".into()))?;
        argv.push(std::ptr::null_mut());
        let argv = argv.leak();
        // SAFETY: argv holds argc valid NUL-terminated strings followed by NULL, all
        // leaked so they outlive EAL; INITIALIZED guarantees this runs once per process.
        let ret = unsafe { sys::rte_eal_init(argc, argv.as_mut_ptr()) };
        if ret < 0 {
            let code = rte_errno();
            let reason = match code {
                0 => "rte_eal_init failed without setting rte_errno (\"Success\"): most often \
                      another DPDK process holds the lock of this --file-prefix (give every \
                      process its own --file-prefix), otherwise see the EAL log above"
                    .to_owned(),
                libc::EALREADY => "EAL is already initialised in this process".to_owned(),
                libc::EACCES => format!(
                    "{} (permission denied: run as root or grant access to hugepages/devices)",
                    strerror(code)
                ),
                libc::ENOMEM => {
                    format!("{} (not enough memory: add hugepages or use --no-huge -m <MB>)", strerror(code))
                }
                _ => format!("{} (rte_errno {code}; see the EAL log above)", strerror(code)),
            };
            return Err(Error::EalInit(reason));
        }
        // SAFETY: EAL is initialised; plain getter.
        let main_lcore = unsafe { sys::rte_get_main_lcore() };
        Ok(Eal { main_lcore, _main_thread: PhantomData })
    }

    /// The main lcore id (this thread).
    pub fn main_lcore(&self) -> u32 {
        self.main_lcore
    }

    /// Number of enabled lcores, main included.
    pub fn lcore_count(&self) -> u32 {
        // SAFETY: EAL is initialised; plain getter.
        unsafe { sys::rte_lcore_count() }
    }

    /// The enabled worker lcores (all lcores but the main one), ascending.
    pub fn worker_lcores(&self) -> impl Iterator<Item = u32> + '_ {
        let mut cur = u32::MAX; // rte_get_next_lcore starts at cur + 1, wrapping to 0.
        std::iter::from_fn(move || {
            // SAFETY: EAL is initialised; rte_get_next_lcore accepts any index and
            // returns RTE_MAX_LCORE when there is no next one.
            let next = unsafe { sys::rte_get_next_lcore(cur, 1, 0) };
            if next >= sys::RTE_MAX_LCORE {
                return None;
            }
            cur = next;
            Some(next)
        })
    }

    /// NUMA socket of the calling thread (0 on a machine without NUMA).
    pub fn socket_id(&self) -> u32 {
        // SAFETY: EAL is initialised; reads a thread-local.
        unsafe { sys::rte_socket_id() }
    }

    /// NUMA socket of `lcore`.
    pub fn lcore_socket_id(&self, lcore: u32) -> u32 {
        // SAFETY: EAL is initialised; out-of-range ids return 0.
        unsafe { sys::rte_lcore_to_socket_id(lcore) }
    }

    /// TSC frequency in Hz (see [`tsc_cycles`]).
    pub fn tsc_hz(&self) -> u64 {
        // SAFETY: EAL is initialised (it measured the frequency).
        unsafe { sys::rte_get_tsc_hz() }
    }

    /// Runs `f` on worker lcore `lcore` (which must be idle). Returns at once; use
    /// [`Eal::wait_all`] to wait for it. A panic inside `f` is caught and ends the
    /// worker with return value -1 (with `panic = "abort"` it aborts the process).
    pub fn launch<F>(&self, lcore: u32, f: F) -> Result<(), Error>
    where
        F: FnOnce() + Send + 'static,
    {
        // SAFETY: EAL is initialised; plain getter with range check inside.
        let enabled = unsafe { sys::rte_lcore_is_enabled(lcore) } != 0;
        if !enabled || lcore == self.main_lcore {
            return Err(Error::Launch { lcore, reason: "not an enabled worker lcore".into() });
        }
        let job: Box<Box<dyn FnOnce() + Send>> = Box::new(Box::new(f));
        let arg = Box::into_raw(job).cast::<c_void>();
        // SAFETY: called on the main lcore (Eal is !Send). On success DPDK calls
        // `trampoline(arg)` exactly once on the worker, which takes ownership of arg.
        let ret = unsafe { sys::rte_eal_remote_launch(Some(trampoline), arg, lcore) };
        if ret < 0 {
            // SAFETY: the launch failed, so DPDK never saw arg; reclaim it.
            drop(unsafe { Box::from_raw(arg.cast::<Box<dyn FnOnce() + Send>>()) });
            return Err(Error::Launch { lcore, reason: strerror(-ret) });
        }
        Ok(())
    }

    /// EAL's runtime directory (`/var/run/dpdk/<file-prefix>` for root). EAL leaves
    /// it behind at exit; a supervisor may remove it once the process is gone.
    pub fn runtime_dir(&self) -> std::path::PathBuf {
        // SAFETY: EAL is initialised; the string is owned by EAL and copied at once.
        let dir = unsafe { std::ffi::CStr::from_ptr(sys::rte_eal_get_runtime_dir()) };
        std::path::PathBuf::from(dir.to_string_lossy().into_owned())
    }

    /// Waits until every worker lcore has finished its launched function.
    pub fn wait_all(&self) {
        // SAFETY: called on the main lcore (Eal is !Send).
        unsafe { sys::rte_eal_mp_wait_lcore() }
    }

    /// Every ethdev port that is available (not owned by another DPDK entity), in id order.
    pub fn ports(&self) -> Result<Vec<PortInfo>, Error> {
        let mut out = Vec::new();
        let mut id: u64 = 0;
        // RTE_ETH_FOREACH_DEV: owner 0 (RTE_ETH_DEV_NO_OWNER) means "unowned".
        while let Ok(start) = u16::try_from(id) {
            // SAFETY: EAL is initialised; any start id is accepted, and
            // RTE_MAX_ETHPORTS is returned when there are no more ports.
            let next = unsafe { sys::rte_eth_find_next_owned_by(start, 0) };
            if next >= u64::from(sys::RTE_MAX_ETHPORTS) {
                break;
            }
            let port = u16::try_from(next).map_err(|_| Error::NoSuchPort(u16::MAX))?;
            out.push(port_info(port)?);
            id = next + 1;
        }
        Ok(out)
    }

    /// The id of the port DPDK calls `name` (e.g. `net_tap0`), if it exists.
    pub fn port_by_name(&self, name: &str) -> Option<u16> {
        let name = CString::new(name).ok()?;
        let mut id = 0u16;
        // SAFETY: EAL is initialised; name is NUL-terminated and id is a valid out-pointer.
        let ret = unsafe { sys::rte_eth_dev_get_port_by_name(name.as_ptr(), &mut id) };
        (ret == 0).then_some(id)
    }
}

impl Drop for Eal {
    fn drop(&mut self) {
        self.wait_all();
        if crate::live::nothing_left() {
            // SAFETY: main lcore, workers finished, and no pool, port or pool memory is
            // left that a later DPDK call could touch.
            unsafe { sys::rte_eal_cleanup() };
        }
    }
}

/// Entry point DPDK calls on a worker lcore; `arg` is a leaked `Box<Box<dyn FnOnce>>`.
unsafe extern "C" fn trampoline(arg: *mut c_void) -> c_int {
    // SAFETY: arg comes from Box::into_raw in Eal::launch and DPDK passes it here once.
    let job = unsafe { Box::from_raw(arg.cast::<Box<dyn FnOnce() + Send>>()) };
    match catch_unwind(AssertUnwindSafe(job)) {
        Ok(()) => 0,
        Err(_) => -1,
    }
}

/// The lcore id of the calling thread, or `None` when it is not an EAL thread.
pub fn current_lcore() -> Option<u32> {
    // SAFETY: reads a thread-local that is LCORE_ID_ANY outside EAL threads; valid
    // with or without EAL.
    let id = unsafe { sys::rte_lcore_id() };
    (id != LCORE_ID_ANY).then_some(id)
}

/// The CPU's time-stamp counter (`rdtsc`); pair with [`Eal::tsc_hz`].
pub fn tsc_cycles() -> u64 {
    // SAFETY: reads the TSC; no memory access, valid with or without EAL.
    unsafe { sys::rte_get_tsc_cycles() }
}
