//! Any bytes as a frame of every link type: the parser and the payload
//! checks must never panic, and what they accept must be self-consistent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use voipdetect::capture::{Link, parse_frame};
use voipdetect_common::{FlowCounters, features::update, hints::inspect};

fuzz_target!(|data: &[u8]| {
    let mut c = FlowCounters::new(0, 0);
    for (i, link) in [Link::Ethernet, Link::LinuxSll, Link::LinuxSll2, Link::RawIp, Link::Null, Link::Loop].into_iter().enumerate() {
        if let Ok(p) = parse_frame(link, data) {
            assert!(p.payload_off <= 1 << 16, "payload offset {}", p.payload_off);
            update(&mut c, &p, inspect(data, &p), i as u64 * 1_000_000);
        }
    }
});
