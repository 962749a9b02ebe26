//! Tier 2: one feature path, two drivers. The frames of a capture go through
//! the loaded XDP program with BPF_PROG_TEST_RUN and through the replay
//! engine; both must leave the same counters in every flow entry, except
//! for what depends on the clock (times and inter-arrival gaps: the kernel
//! sees test-run time, the replay capture time).

use std::collections::HashMap;

use voipdetect::{
    capture::{Link, for_each_record, parse_frame},
    datapath::{Datapath, LoadOptions},
    engine::Engine,
};
use voipdetect_common::{FlowCounters, FlowKey};
use voipdetect_traffic::{pattern, synth};

/// The clock-independent part of a flow entry.
fn clockless(c: &FlowCounters) -> FlowCounters {
    FlowCounters {
        first_seen_ns: 0,
        last_seen_ns: 0,
        last_data_ticks: 0,
        iat_hist: Default::default(),
        verdict_gen: 0,
        blocked_until_ns: 0,
        ifindex: 0,
        ..*c
    }
}

/// An Ethernet frame carrying what a frame of `link` carries (test runs
/// take Ethernet only).
fn as_ethernet(link: Link, data: &[u8]) -> Option<Vec<u8>> {
    let (ethertype, ip) = match link {
        Link::Ethernet => return Some(data.to_vec()),
        Link::LinuxSll => ([data.get(14)?.to_owned(), *data.get(15)?], data.get(16..)?),
        Link::LinuxSll2 => ([data.first()?.to_owned(), *data.get(1)?], data.get(20..)?),
        Link::RawIp => (if data.first()? >> 4 == 6 { [0x86, 0xdd] } else { [0x08, 0x00] }, data),
        _ => return None,
    };
    let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, ethertype[0], ethertype[1]];
    f.extend_from_slice(ip);
    Some(f)
}

fn compare(name: &str, frames: &[(u64, Vec<u8>)]) {
    let mut dp = Datapath::load(&LoadOptions { flow_entries: 1 << 16, ..Default::default() }).unwrap();
    let mut engine = Engine::counters_only();
    for (ts, f) in frames {
        assert_eq!(dp.test_run(f).unwrap(), 2, "{name}: every frame passes");
        engine.packet(*ts, f.as_slice(), parse_frame(Link::Ethernet, f));
    }
    let mut kernel: HashMap<FlowKey, FlowCounters> = HashMap::new();
    dp.for_each_flow(|k, c| {
        kernel.insert(*k, clockless(c));
    })
    .unwrap();
    let replay: HashMap<FlowKey, FlowCounters> = engine.flows().map(|(k, c)| (*k, clockless(c))).collect();
    assert!(!replay.is_empty(), "{name}: no flows");
    assert_eq!(kernel.len(), replay.len(), "{name}: number of flow entries");
    for (k, r) in &replay {
        let kc = kernel.get(k).unwrap_or_else(|| panic!("{name}: {k:?} missing in the kernel map"));
        assert_eq!(kc, r, "{name}: counters of {k:?}");
    }
    let stats = dp.stats().unwrap();
    for s in voipdetect_common::Stat::ALL {
        assert_eq!(stats.get(s), engine.stats[s as usize], "{name}: counter {}", s.name());
    }
}

#[test]
fn shared_captures_count_the_same_in_kernel_and_replay() {
    voipdetect_tests::require_root();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/captures");
    let mut done = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e} (the shared captures are needed)", dir.display())) {
        let path = entry.unwrap().path();
        if !matches!(path.extension().and_then(|e| e.to_str()), Some("pcap" | "pcapng")) {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        let mut frames = Vec::new();
        for_each_record(&bytes, |r| {
            if let Some(f) = as_ethernet(r.link, r.data).filter(|f| f.len() >= 14) {
                frames.push((r.ts_ns, f));
            }
        })
        .unwrap();
        compare(&path.display().to_string(), &frames);
        done += 1;
    }
    assert!(done >= 20, "only {done} captures compared");
}

#[test]
fn generated_calls_count_the_same_in_kernel_and_replay() {
    voipdetect_tests::require_root();
    let mut flows = pattern::call_variants(3);
    flows.extend(pattern::decoys(3));
    let frames: Vec<_> = synth::frames(&flows, 1_700_000_000_000_000_000).into_iter().map(|t| (t.ts_ns, t.frame)).collect();
    compare("generated catalogue", &frames);
}
