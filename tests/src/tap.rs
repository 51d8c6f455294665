//! Raw Ethernet frame I/O on the kernel side of a node's TAP port.
//!
//! What the test writes to a [`Tap`] enters the node on that port; what the node sends
//! out of the port is read back here. The packet socket also sees the frames it sent
//! itself (as outgoing packets); [`Tap`] remembers the frames it sent and skips exact
//! copies of them, so a predicate never matches the test's own request.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::ErrorKind;
use std::time::{Duration, Instant};

use pnet_datalink::{Channel, Config, DataLinkReceiver, DataLinkSender};

use crate::netns::Netns;
use crate::Error;

/// How long a receive waits by default before a test declares the frame missing.
pub const RECV_TIMEOUT: Duration = Duration::from_secs(3);

/// How many of our own sent frames are remembered to filter their echoes.
const SENT_MEMORY: usize = 64;

/// An AF_PACKET socket bound to one interface in a test's namespace.
pub struct Tap {
    name: String,
    tx: Box<dyn DataLinkSender>,
    rx: Box<dyn DataLinkReceiver>,
    sent: VecDeque<Vec<u8>>,
    /// Frames received but not matched yet, newest last (kept for failure messages and
    /// for later `recv` calls with another predicate).
    backlog: VecDeque<Vec<u8>>,
}

impl std::fmt::Debug for Tap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tap").field("name", &self.name).finish()
    }
}

impl Tap {
    /// Opens a packet socket on interface `ifname` inside `ns`.
    pub fn open(ns: &Netns, ifname: &str) -> Result<Tap, Error> {
        let name = ifname.to_string();
        let (tx, rx) = ns.run(move || -> Result<_, Error> {
            let iface = pnet_datalink::interfaces()
                .into_iter()
                .find(|i| i.name == name)
                .ok_or_else(|| Error::Setup(format!("no interface {name} in namespace")))?;
            let config = Config {
                read_timeout: Some(Duration::from_millis(50)),
                read_buffer_size: 65536,
                write_buffer_size: 65536,
                ..Config::default()
            };
            match pnet_datalink::channel(&iface, config) {
                Ok(Channel::Ethernet(tx, rx)) => Ok((tx, rx)),
                Ok(_) => Err(Error::Setup(format!("{name}: not an Ethernet channel"))),
                Err(e) => Err(Error::Io(format!("packet socket on {name}"), e)),
            }
        })??;
        Ok(Tap { name: ifname.to_string(), tx, rx, sent: VecDeque::new(), backlog: VecDeque::new() })
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sends one Ethernet frame into the node.
    ///
    /// # Panics
    /// When the kernel refuses the frame; a test cannot go on without it.
    pub fn send(&mut self, frame: &[u8]) {
        match self.tx.send_to(frame, None) {
            Some(Ok(())) => {}
            Some(Err(e)) => panic!("send on {}: {e}", self.name),
            None => panic!("send on {}: no buffer", self.name),
        }
        if self.sent.len() == SENT_MEMORY {
            self.sent.pop_front();
        }
        self.sent.push_back(frame.to_vec());
    }

    /// Forgets every frame received so far.
    pub fn drain(&mut self) {
        self.backlog.clear();
        while let Some(frame) = self.next_frame(Instant::now()) {
            drop(frame);
        }
    }

    /// Waits up to `timeout` for a frame from the node that satisfies `pred` and returns
    /// it; frames that do not match are kept for later calls.
    pub fn recv_timeout(
        &mut self,
        timeout: Duration,
        mut pred: impl FnMut(&[u8]) -> bool,
    ) -> Option<Vec<u8>> {
        if let Some(pos) = self.backlog.iter().position(|f| pred(f)) {
            return self.backlog.remove(pos);
        }
        let deadline = Instant::now() + timeout;
        while let Some(frame) = self.next_frame(deadline) {
            if pred(&frame) {
                return Some(frame);
            }
            self.backlog.push_back(frame);
        }
        None
    }

    /// Like [`Tap::recv_timeout`] with [`RECV_TIMEOUT`], panicking with `what` and a
    /// summary of the frames that did arrive when none matches.
    pub fn expect(&mut self, what: &str, pred: impl FnMut(&[u8]) -> bool) -> Vec<u8> {
        match self.recv_timeout(RECV_TIMEOUT, pred) {
            Some(frame) => frame,
            None => panic!(
                "{}: no {what} within {RECV_TIMEOUT:?}; frames seen instead:\n{}",
                self.name,
                self.describe_backlog()
            ),
        }
    }

    /// The frames received but not matched so far, oldest first.
    pub fn backlog(&self) -> impl Iterator<Item = &[u8]> {
        self.backlog.iter().map(Vec::as_slice)
    }

    /// A human-readable list of the unmatched frames, for failure messages.
    pub fn describe_backlog(&self) -> String {
        let mut out = String::new();
        if self.backlog.is_empty() {
            out.push_str("  (none)\n");
        }
        for f in &self.backlog {
            let _ = writeln!(out, "  {}", crate::frames::describe(f));
        }
        out
    }

    /// The next frame not sent by us, or `None` once `deadline` has passed.
    fn next_frame(&mut self, deadline: Instant) -> Option<Vec<u8>> {
        loop {
            match self.rx.next() {
                Ok(frame) => {
                    if self.sent.iter().any(|s| s.as_slice() == frame) {
                        continue;
                    }
                    return Some(frame.to_vec());
                }
                Err(e) if e.kind() == ErrorKind::TimedOut => {
                    if Instant::now() >= deadline {
                        return None;
                    }
                }
                Err(e) => panic!("receive on {}: {e}", self.name),
            }
        }
    }
}
