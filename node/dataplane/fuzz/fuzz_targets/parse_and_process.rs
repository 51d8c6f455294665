//! Arbitrary bytes through `Pipeline::process_burst` on the reference lab, arriving on
//! a PF, a VF with an interface, a VF without one, or an unknown port (the first input
//! byte picks which). Finds panics and out-of-bounds accesses anywhere in the graph,
//! the wire parsers and the L2 responders.
//!
//! Run (nightly): `cd node/dataplane/fuzz && cargo +nightly fuzz run parse_and_process`.
#![no_main]

use std::sync::OnceLock;

use dpfleet_dataplane::buf::TestBuf;
use dpfleet_dataplane::config::Snapshot;
use dpfleet_dataplane::graph::testkit::{lab, ports};
use dpfleet_dataplane::graph::{DropReason, Pipeline, Verdict};
use libfuzzer_sys::fuzz_target;

fn snap() -> &'static Snapshot {
    static SNAP: OnceLock<Snapshot> = OnceLock::new();
    SNAP.get_or_init(lab)
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, frame)) = data.split_first() else { return };
    let port =
        [ports::PF0, ports::PF1, ports::VM1, ports::VM3, ports::BARE, 9][usize::from(sel) % 6];
    let mut p = Pipeline::default();
    // Two copies: one as is, one cut in half, in the same burst.
    let mut bufs = [TestBuf::new(frame), TestBuf::new(&frame[..frame.len() / 2])];
    let mut verdicts = [Verdict::Drop(DropReason::TxFull); 2];
    p.process_burst(snap(), port, 0, &mut bufs, &mut verdicts);
    assert!(verdicts.iter().all(|v| *v != Verdict::Drop(DropReason::TxFull)));
});
