//! Tier 2: a million random, truncated and malformed frames through the
//! loaded program with BPF_PROG_TEST_RUN. Every one passes (a parse failure
//! is never a drop), every one is counted under exactly one outcome, and the
//! kernel's per-reason totals equal the replay engine's for the same frames.

use rand::{Rng, RngCore, SeedableRng, rngs::SmallRng};
use voipdetect::{
    capture::{Link, parse_frame},
    datapath::{Datapath, LoadOptions},
    engine::Engine,
};
use voipdetect_common::Stat;
use voipdetect_traffic::frames::{FrameSpec, add_vlan_tag};

const PASS: u32 = 2;

/// One frame of the `i`-th kind of damage.
fn garbage(rng: &mut SmallRng, i: u64) -> Vec<u8> {
    let base = |rng: &mut SmallRng, tcp: bool| {
        let src = format!("10.{}.{}.{}:{}", rng.random::<u8>(), rng.random::<u8>(), rng.random::<u8>(), rng.random::<u16>());
        let dst = format!("10.9.9.9:{}", rng.random::<u16>());
        let n = rng.random_range(0..300);
        let mut payload = vec![0u8; n];
        rng.fill_bytes(&mut payload);
        let spec = if tcp {
            FrameSpec::tcp(src.parse().unwrap(), dst.parse().unwrap())
        } else {
            FrameSpec::udp(src.parse().unwrap(), dst.parse().unwrap())
        };
        spec.build(&payload)
    };
    let mut f = base(rng, i.is_multiple_of(2));
    match i % 12 {
        // Random bytes after an Ethernet header that claims IPv4 or IPv6.
        0 => {
            let n = rng.random_range(14..400);
            f = vec![0u8; n];
            rng.fill_bytes(&mut f);
            let et: [u8; 2] = if rng.random() { [0x08, 0x00] } else { [0x86, 0xdd] };
            f[12..14].copy_from_slice(&et);
        }
        // Cut anywhere.
        1 => {
            let n = rng.random_range(14..f.len().max(15));
            f.truncate(n);
        }
        // IHL below 5.
        2 => f[14] = 0x40 | rng.random_range(0..5),
        // IPv4 total length shorter than the header, or wildly longer.
        3 => {
            let v = if rng.random() { rng.random_range(0..20u16) } else { rng.random_range(2000..u16::MAX) };
            f[16..18].copy_from_slice(&v.to_be_bytes());
        }
        // Zero or oversized UDP length (the even/odd split above made it UDP or TCP).
        4 => {
            let f2 = base(rng, false);
            f = f2;
            let v = if rng.random() { 0 } else { rng.random_range(9000..u16::MAX) };
            f[38..40].copy_from_slice(&v.to_be_bytes());
        }
        // TCP data offset out of range.
        5 => {
            f = base(rng, true);
            f[46] = (if rng.random() { rng.random_range(0..5u8) } else { 15 }) << 4;
        }
        // VLAN stacks deeper than supported.
        6 => {
            for _ in 0..rng.random_range(3..8) {
                add_vlan_tag(&mut f, rng.random_range(1..4095));
            }
        }
        // IPv6 with a chain of extension headers, possibly looping
        // (each naming hop-by-hop as the next), possibly lying about lengths.
        7 => {
            let mut v6 = vec![2u8, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x86, 0xdd, 0x60, 0, 0, 0];
            let n = rng.random_range(1..10);
            let mut exts = Vec::new();
            for _ in 0..n {
                let len = rng.random_range(0..3u8);
                exts.push(if rng.random_bool(0.8) { 0 } else { rng.random() });
                exts.push(len);
                exts.extend(std::iter::repeat_n(0u8, 6 + 8 * usize::from(len)));
            }
            let plen: u16 = if rng.random() { exts.len() as u16 } else { rng.random() };
            v6.extend_from_slice(&plen.to_be_bytes());
            v6.push(0);
            v6.push(64);
            v6.extend(std::iter::repeat_n(0x20u8, 32));
            v6.extend_from_slice(&exts);
            f = v6;
        }
        // Fragments, first and later.
        8 => {
            let off: u16 = if rng.random() { 0x2000 } else { rng.random_range(1..0x1fff) };
            f[20..22].copy_from_slice(&off.to_be_bytes());
        }
        // Not IP at all.
        9 => {
            let et: u16 = rng.random();
            f[12..14].copy_from_slice(&et.to_be_bytes());
        }
        // A transport other than TCP/UDP, or a GTP-U port with a broken tunnel.
        10 => {
            if rng.random() {
                f[23] = rng.random();
            } else {
                f = base(rng, false);
                f[34..36].copy_from_slice(&2152u16.to_be_bytes());
                if f.len() > 50 {
                    f[42] = 0x34;
                    f[43] = 0xff;
                    let n = rng.random_range(42..f.len());
                    rng.fill_bytes(&mut f[46..n.max(46)]);
                }
            }
        }
        // Random bytes everywhere, any length from the minimum up.
        _ => {
            let n = rng.random_range(14..200);
            f = vec![0u8; n];
            rng.fill_bytes(&mut f);
        }
    }
    f
}

#[test]
fn a_million_broken_frames_all_pass_and_are_all_counted() {
    voipdetect_tests::require_root();
    let n: u64 = std::env::var("VOIPDETECT_GARBAGE_FRAMES").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let mut dp = Datapath::load(&LoadOptions { flow_entries: 1 << 16, ..Default::default() }).unwrap();
    let mut engine = Engine::counters_only();
    let mut rng = SmallRng::seed_from_u64(0x5eed);
    let before = dp.stats().unwrap();
    for i in 0..n {
        let f = garbage(&mut rng, i);
        let action = dp.test_run(&f).unwrap_or_else(|e| panic!("frame {i} ({} bytes): {e:#}", f.len()));
        assert_eq!(action, PASS, "frame {i} was not passed: {f:02x?}");
        engine.packet(i, f.as_slice(), parse_frame(Link::Ethernet, &f));
    }
    let d = dp.stats().unwrap().since(&before);
    assert_eq!(d.seen(), n, "outcome counters must add up to the frames sent: {d:?}");
    assert_eq!(d.get(Stat::Dropped), 0);
    // Every outcome and event but evictions, which depend on the kernel
    // table's size (the replay's grows as needed).
    for s in Stat::ALL.into_iter().filter(|s| *s != Stat::Evicted) {
        assert_eq!(d.get(s), engine.stats[s as usize], "kernel and replay disagree on {}", s.name());
    }
    let per_reason: Vec<String> = Stat::ALL.iter().filter(|s| s.is_outcome()).map(|s| format!("{}={}", s.name(), d.get(*s))).collect();
    eprintln!("figure: {n} broken frames through BPF_PROG_TEST_RUN, all passed: {}", per_reason.join(" "));
    // Every kind of damage was exercised.
    for s in [
        Stat::Truncated,
        Stat::Malformed,
        Stat::Fragment,
        Stat::NotIp,
        Stat::OtherL4,
        Stat::VlanTooDeep,
        Stat::Ipv6ExtTooDeep,
        Stat::Tracked,
    ] {
        assert!(d.get(s) > 0, "no frame ended as {}", s.name());
    }
}
