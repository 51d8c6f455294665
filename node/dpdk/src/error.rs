//! Errors of the DPDK wrappers.

use std::ffi::CStr;

/// What went wrong in a DPDK call, worded for an operator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `Eal::init` was called a second time; DPDK's EAL can be initialised once per
    /// process (even after a failed attempt or a cleanup).
    #[error("DPDK EAL was already initialised in this process (it can be initialised only once)")]
    AlreadyInitialized,
    /// An argument contains a NUL byte.
    #[error("EAL argument {0:?} contains a NUL byte")]
    NulInArgument(String),
    /// No program name was given (args must start with it).
    #[error("EAL arguments must start with the program name")]
    NoProgramName,
    /// `rte_eal_init` failed.
    #[error("DPDK EAL initialisation failed: {0}")]
    EalInit(String),
    /// `rte_eal_remote_launch` refused to start work on an lcore.
    #[error("cannot launch work on lcore {lcore}: {reason}")]
    Launch {
        /// The lcore.
        lcore: u32,
        /// Why.
        reason: String,
    },
    /// A mempool could not be created.
    #[error("cannot create mempool {name:?}: {reason}")]
    Mempool {
        /// The pool name.
        name: String,
        /// Why.
        reason: String,
    },
    /// The port id does not name an available ethdev port.
    #[error("DPDK port {0} does not exist")]
    NoSuchPort(u16),
    /// Another [`crate::Port`] handle already owns this port.
    #[error("DPDK port {0} is already configured by another handle")]
    PortInUse(u16),
    /// The requested configuration does not fit the device.
    #[error("invalid configuration for DPDK port {port}: {reason}")]
    InvalidConfig {
        /// The port.
        port: u16,
        /// Why.
        reason: String,
    },
    /// The port cannot be stopped or closed while queue handles exist.
    #[error("DPDK port {0} still has rx/tx queue handles in use")]
    QueuesInUse(u16),
    /// An ethdev call failed.
    #[error("{op} failed on DPDK port {port}: {reason} (error {code})")]
    Port {
        /// The port.
        port: u16,
        /// The DPDK function that failed.
        op: &'static str,
        /// The (positive) errno value.
        code: i32,
        /// `rte_strerror` of the code.
        reason: String,
    },
}

/// `rte_strerror` of a (positive) errno value, owned.
pub(crate) fn strerror(code: i32) -> String {
    // SAFETY: rte_strerror accepts any value and returns a NUL-terminated string, either
    // static or in a thread-local buffer that stays valid until the next call on this
    // thread; it is copied out at once.
    unsafe { CStr::from_ptr(crate::sys::rte_strerror(code)) }.to_string_lossy().into_owned()
}

/// The calling thread's `rte_errno`.
pub(crate) fn rte_errno() -> i32 {
    // SAFETY: the shim only reads the thread-local rte_errno.
    unsafe { crate::sys::dpfleet_rte_errno() }
}

/// Turns an ethdev return value (0 or a negative errno) into a `Result`.
pub(crate) fn check_port(port: u16, op: &'static str, ret: i32) -> Result<(), Error> {
    if ret >= 0 {
        return Ok(());
    }
    let code = -ret;
    Err(Error::Port { port, op, code, reason: strerror(code) })
}
