//! Any bytes as a capture file: the pcap/pcapng reader, the link layers,
//! the parser, the feature update and the controller must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use voipdetect::{controller::Config, replay::replay_bytes};

fuzz_target!(|data: &[u8]| {
    let r = replay_bytes(data, Config::default(), 250_000_000);
    let _ = r.engine.summaries();
});
