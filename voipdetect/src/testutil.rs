//! Test helpers: generated flows through the shared parser, feature update
//! and controller on a virtual clock.
use voipdetect_common::parse::parse_ethernet;
use voipdetect_traffic::{Flow, synth};

use crate::{
    controller::{Config, DEFAULT_POLL_NS},
    engine::Engine,
    event::{Event, EventKind},
};

pub const T0: u64 = 1_700_000_000_000_000_000;
pub const POLL: u64 = DEFAULT_POLL_NS;

/// Every event the controller produces for `flows`.
pub fn events(flows: &[Flow], cfg: Config) -> Vec<Event> {
    let mut e = Engine::new(cfg, POLL);
    for t in synth::frames(flows, T0) {
        e.packet(t.ts_ns, t.frame.as_slice(), parse_ethernet(t.frame.as_slice()));
    }
    e.finish();
    e.events
}

/// Seconds from the start to each verdict.
pub fn verdict_times(flows: &[Flow]) -> Vec<f64> {
    events(flows, Config::default()).iter().filter(|e| e.kind == EventKind::Verdict).map(|e| (e.at_ns - T0) as f64 / 1e9).collect()
}
