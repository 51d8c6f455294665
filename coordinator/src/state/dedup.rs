//! Request-id deduplication: the responses of the last [`DEDUP_CAPACITY`] successful
//! commands that carried a request id.
//!
//! Eviction is first-in first-out in log order, so it is as deterministic as the rest of
//! the state and travels with it in snapshots. A request id is bound to a fingerprint of
//! its command (SipHash-1-3 of the command's JSON form under a fixed key), so a client
//! reusing an id for a different command gets an error instead of a stale response.

use std::collections::{BTreeMap, VecDeque};
use std::hash::Hasher;

use serde::{Deserialize, Serialize};
use siphasher::sip::SipHasher13;

use super::{ApplyError, Op, Response};

/// How many request ids are remembered. A client retries within seconds; at the
/// coordinator's target of 5,000 writes per second this keeps about 20 seconds of ids
/// (a few MiB).
pub const DEDUP_CAPACITY: usize = 100_000;

/// ASCII `"dpfleet1"` and `"reqdedup"`.
const FINGERPRINT_KEY: (u64, u64) = (0x6470_666c_6565_7431, 0x7265_7164_6564_7570);

/// A fingerprint of `op`, equal on every replica and every build.
pub(super) fn fingerprint(op: &Op) -> u64 {
    let mut h = SipHasher13::new_with_keys(FINGERPRINT_KEY.0, FINGERPRINT_KEY.1);
    // Serializing an `Op` cannot fail: it has no map with non-string keys and no
    // fallible `Serialize` impl. Were it to, every replica would hash the same empty input.
    h.write(&serde_json::to_vec(op).unwrap_or_default());
    h.finish()
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Seen {
    fingerprint: u64,
    response: Response,
}

/// The remembered request ids.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dedup {
    seen: BTreeMap<String, Seen>,
    order: VecDeque<String>,
}

impl Dedup {
    /// The earlier outcome for `request_id`, if it was seen: its response for the same
    /// command, an error for a different one.
    pub(super) fn lookup(&self, request_id: &str, fingerprint: u64) -> Option<Result<Response, ApplyError>> {
        let seen = self.seen.get(request_id)?;
        Some(if seen.fingerprint == fingerprint {
            Ok(seen.response.clone())
        } else {
            Err(ApplyError::RequestIdReused(request_id.to_owned()))
        })
    }

    /// Remembers a response, forgetting the oldest beyond [`DEDUP_CAPACITY`].
    pub(super) fn record(&mut self, request_id: String, fingerprint: u64, response: Response) {
        if self.order.len() == DEDUP_CAPACITY {
            if let Some(old) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
        self.order.push_back(request_id.clone());
        self.seen.insert(request_id, Seen { fingerprint, response });
    }

    /// How many ids are remembered.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether no id is remembered.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}
