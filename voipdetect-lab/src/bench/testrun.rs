//! Per-packet cost through BPF_PROG_TEST_RUN: the kernel times the program
//! alone (the syscall is outside the clock), so the cost each feature adds
//! shows as the difference to an empty program measured the same way.

use anyhow::Context as _;
use voipdetect_common::{BlockEntry, parse::parse_ethernet};

use voipdetect::{
    clock::monotonic_ns,
    datapath::{Datapath, LoadOptions},
};
use voipdetect_traffic::{frames::FrameSpec, pattern::rtp_header};

use super::{BenchProgs, Scale, Table, median};

fn udp_frame() -> Vec<u8> {
    let mut p = rtp_header(0, 1, 160, 0x1234_5678).to_vec();
    p.resize(172, 0xd5);
    FrameSpec::udp("192.0.2.2:40000".parse().expect("addr"), "198.51.100.2:5004".parse().expect("addr")).build(&p)
}

fn tcp_frame() -> Vec<u8> {
    FrameSpec::tcp("192.0.2.2:40935".parse().expect("addr"), "198.51.100.2:1935".parse().expect("addr")).build(&[7; 110])
}

/// `n` UDP frames of distinct flows (source address and port vary).
pub fn distinct_frames(n: usize) -> Vec<Vec<u8>> {
    let base = udp_frame();
    (0..n)
        .map(|i| {
            let mut f = base.clone();
            let i = i as u32;
            f[26..30].copy_from_slice(&(0x0a00_0000 | (i >> 8)).to_be_bytes());
            f[34..36].copy_from_slice(&(1024 + (i & 0xff) as u16).to_be_bytes());
            f
        })
        .collect()
}

/// Mean ns per run over frames run once each.
fn once_each(mut run: impl FnMut(&[u8]) -> anyhow::Result<f64>, frames: &[Vec<u8>]) -> anyhow::Result<f64> {
    let mut total = 0.0;
    for f in frames {
        total += run(f)?;
    }
    Ok(total / frames.len() as f64)
}

pub fn run(scale: Scale) -> anyhow::Result<Table> {
    let repeat = scale.pick(2_000_000, 100_000);
    let rounds = scale.pick(5, 3);
    let mut refs = BenchProgs::load(1)?;
    let cycle_sizes: Vec<usize> = scale.pick(vec![1_000, 100_000, 1_000_000], vec![1_000]);
    let entries = (2 * cycle_sizes.iter().max().copied().unwrap_or(1024)).max(1 << 16) as u32;
    let mut dp = Datapath::load(&LoadOptions { flow_entries: entries, ..Default::default() })?;

    let udp = udp_frame();
    let tcp = tcp_frame();
    let mut malformed = udp.clone();
    malformed[14] = 0x43;
    let measure = |f: &mut dyn FnMut() -> anyhow::Result<f64>| -> anyhow::Result<f64> {
        let mut v = Vec::new();
        for _ in 0..rounds {
            v.push(f()?);
        }
        Ok(median(v))
    };
    let empty = measure(&mut || refs.ns_per_run("bench_pass", &udp, repeat))?;
    let parse = measure(&mut || refs.ns_per_run("bench_parse", &udp, repeat))?;
    let ours = |dp: &mut Datapath, frame: &[u8]| -> anyhow::Result<f64> { Ok(dp.test_run_repeat(frame, repeat)?.1.as_nanos() as f64) };
    dp.test_run(&udp)?;
    dp.test_run(&tcp)?;
    let tracked_udp = measure(&mut || ours(&mut dp, &udp))?;
    let tracked_tcp = measure(&mut || ours(&mut dp, &tcp))?;
    let bad = measure(&mut || ours(&mut dp, &malformed))?;
    let key = parse_ethernet(udp.as_slice()).map_err(|s| anyhow::anyhow!("{s:?}"))?.key;
    let now = monotonic_ns();
    dp.block(&[key], BlockEntry { expires_ns: now + 3_600_000_000_000, since_ns: now })?;
    dp.test_run(&udp)?;
    let blocked = measure(&mut || ours(&mut dp, &udp))?;
    dp.unblock(&[key])?;

    let mut t = Table::new("Per-packet cost (BPF_PROG_TEST_RUN)", &["case", "ns/packet", "added over empty program", "Mpps on one core"]);
    let mut add = |name: &str, ns: f64, base: f64| {
        t.row(vec![name.into(), format!("{ns:.1}"), format!("{:+.1} ns", ns - base), format!("{:.1}", 1000.0 / ns)]);
    };
    add("empty XDP program (floor)", empty, empty);
    add("parse only", parse, empty);
    add("tracked flow, UDP", tracked_udp, empty);
    add("tracked flow, TCP with payload", tracked_tcp, empty);
    add("blocklisted flow (XDP_DROP)", blocked, empty);
    add("malformed packet (IHL 3)", bad, empty);

    // Frames run once each: the kernel still times only the program, but
    // every run pays the timer's overhead, so the floor is measured the
    // same way and subtracted.
    let fresh = distinct_frames(scale.pick(100_000, 2_000));
    let fresh_keys: Vec<_> = fresh.iter().filter_map(|f| parse_ethernet(f.as_slice()).ok()).map(|p| p.key).collect();
    for k in &fresh_keys {
        dp.remove_flow(k);
    }
    let floor_once = once_each(|f| refs.ns_per_run("bench_pass", f, 1), &fresh)?;
    let new_flow = once_each(|f| Ok(dp.test_run_repeat(f, 1)?.1.as_nanos() as f64), &fresh)?;
    add(&format!("new flow ({} distinct, once each)", fresh.len()), new_flow, floor_once);
    for k in &fresh_keys {
        dp.remove_flow(k);
    }
    for n in cycle_sizes {
        let frames = distinct_frames(n);
        for f in &frames {
            dp.test_run(f).context("prefilling flows")?;
        }
        let floor = once_each(|f| refs.ns_per_run("bench_pass", f, 1), &frames)?;
        let cycled = once_each(|f| Ok(dp.test_run_repeat(f, 1)?.1.as_nanos() as f64), &frames)?;
        add(&format!("tracked UDP, {n} flows cycling"), cycled, floor);
    }
    Ok(t)
}
