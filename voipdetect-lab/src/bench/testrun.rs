//! Per-packet cost through BPF_PROG_TEST_RUN: the kernel times the program
//! alone (the syscall is outside the clock), so the cost each case adds
//! shows as the difference to an empty program measured the same way, in
//! the same round.
//!
//! Two tables. One flow, warm: every case `repeat` times in a row, next to
//! reference programs that price the machine's own costs (a subprogram
//! call, each clock). Cycling: N flows' frames run once each in turn, so
//! every packet finds its slot cold as on a busy gateway; the empty
//! program is run once per frame too, which prices the test-run timer.

use anyhow::Context as _;
use voipdetect_common::{BlockEntry, FlowKey, parse::parse_ethernet};

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

/// `n` copies of `base` (IPv4 without options) with distinct flows: the
/// source address and port vary.
pub fn distinct_frames(base: &[u8], n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let mut f = base.to_vec();
            let i = i as u32;
            f[26..30].copy_from_slice(&(0x0a00_0000 | (i >> 8)).to_be_bytes());
            f[34..36].copy_from_slice(&(1024 + (i & 0xff) as u16).to_be_bytes());
            f
        })
        .collect()
}

fn keys(frames: &[Vec<u8>]) -> Vec<FlowKey> {
    frames.iter().filter_map(|f| parse_ethernet(f.as_slice()).ok()).map(|p| p.key).collect()
}

/// Mean ns per run over frames run once each.
fn once_each(mut run: impl FnMut(&[u8]) -> anyhow::Result<f64>, frames: &[Vec<u8>]) -> anyhow::Result<f64> {
    let mut total = 0.0;
    for f in frames {
        total += run(f)?;
    }
    Ok(total / frames.len() as f64)
}

/// A case and the empty program, measured in turn `rounds` times: the
/// medians of the case and of its excess over the empty program of the
/// same round (the VM's speed drifts between rounds, not within one).
struct Paired {
    ns: f64,
    added: f64,
}

fn paired<S>(
    rounds: u32,
    s: &mut S,
    mut floor: impl FnMut(&mut S) -> anyhow::Result<f64>,
    mut case: impl FnMut(&mut S) -> anyhow::Result<f64>,
) -> anyhow::Result<Paired> {
    let (mut ns, mut added) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let f = floor(s)?;
        let c = case(s)?;
        ns.push(c);
        added.push(c - f);
    }
    Ok(Paired { ns: median(ns), added: median(added) })
}

pub fn run(scale: Scale) -> anyhow::Result<(Table, Table)> {
    let repeat = scale.pick(1_000_000, 100_000);
    let rounds = scale.pick(9, 3);
    let mut refs = BenchProgs::load(1)?;
    let sizes: Vec<usize> = scale.pick(vec![1_000, 100_000, 1_000_000], vec![1_000]);
    let largest = sizes.iter().max().copied().unwrap_or(1_000);
    // Half full at most with the largest set, the table's working range.
    let entries = (2 * largest).max(1 << 16) as u32;
    let mut dp = Datapath::load(&LoadOptions { flow_entries: entries, block_entries: (largest + 1024) as u32, ..Default::default() })?;

    let udp = udp_frame();
    let tcp = tcp_frame();
    let mut malformed = udp.clone();
    malformed[14] = 0x43;
    let far = monotonic_ns() + 3_600_000_000_000;
    let listed = BlockEntry::drop(far, monotonic_ns());

    let mut warm = Table::new(
        "Per packet, one flow (BPF_PROG_TEST_RUN, warm)",
        &["case", "ns/packet", "added over the empty program", "Mpps on one core"],
    );
    let row = |t: &mut Table, name: &str, p: &Paired| {
        t.row(vec![name.into(), format!("{:.0}", p.ns), format!("{:+.0} ns", p.added), format!("{:.1}", 1000.0 / p.ns)]);
    };
    let empty = |refs: &mut BenchProgs| refs.ns_per_run("bench_pass", &udp, repeat);
    let empty2 = |(refs, _): &mut (&mut BenchProgs, &mut Datapath)| refs.ns_per_run("bench_pass", &udp, repeat);
    for (name, prog) in [
        ("empty XDP program (the floor)", "bench_pass"),
        ("reference: the parser alone", "bench_parse"),
        ("reference: one BPF subprogram call", "bench_call"),
        ("reference: one bpf_ktime_get_ns", "bench_clock"),
        ("reference: one bpf_ktime_get_coarse_ns", "bench_coarse_clock"),
        ("reference: one bpf_jiffies64 (inlined)", "bench_jiffies"),
        ("stage 1: the parse, through the scratch entry", "bench_stage_parse"),
        ("stage 2: + the flow's slot (control, hash, probe)", "bench_stage_slot"),
        ("stage 3: + the coarse clock into the slot", "bench_stage_clock"),
    ] {
        // TCP: the stages up to where the media and non-media paths part.
        let frame = if prog.starts_with("bench_stage") { &tcp } else { &udp };
        let p = paired(rounds, &mut refs, empty, |r| r.ns_per_run(prog, frame, repeat))?;
        row(&mut warm, name, &p);
    }
    let ours = |dp: &mut Datapath, frame: &[u8], repeat: u32| -> anyhow::Result<f64> {
        Ok(dp.test_run_repeat(frame, repeat)?.1.as_nanos() as f64)
    };
    dp.test_run(&udp)?;
    dp.test_run(&tcp)?;
    let udp_key = keys(std::slice::from_ref(&udp));
    {
        let mut both = (&mut refs, &mut dp);
        let media = paired(rounds, &mut both, empty2, |(_, dp)| ours(dp, &udp, repeat))?;
        row(&mut warm, "media flow passed (UDP RTP: precise clock, gaps, header checks)", &media);
        let plain = paired(rounds, &mut both, empty2, |(_, dp)| ours(dp, &tcp, repeat))?;
        row(&mut warm, "non-media flow passed (TCP: coarse clock, counts, sizes)", &plain);
        both.1.block(&udp_key, listed)?;
        both.1.test_run(&udp)?;
        let drop = paired(rounds, &mut both, empty2, |(_, dp)| ours(dp, &udp, repeat))?;
        row(&mut warm, "blocklisted flow dropped", &drop);
        both.1.unblock(&udp_key)?;
        let bad = paired(rounds, &mut both, empty2, |(_, dp)| ours(dp, &malformed, repeat))?;
        row(&mut warm, "malformed packet passed (IHL 3)", &bad);
    }

    let mut cycling = Table::new(
        "Per packet, cycling over N flows (BPF_PROG_TEST_RUN, each frame once in turn): added over the empty program",
        &std::iter::once("case".to_owned())
            .chain(sizes.iter().map(|n| format!("{n} flows")))
            .collect::<Vec<_>>()
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    let (mut new_row, mut media_row, mut plain_row, mut drop_row) = (
        vec!["new flow".to_owned()],
        vec!["media flow passed".to_owned()],
        vec!["non-media flow passed".to_owned()],
        vec!["blocklisted flow dropped".to_owned()],
    );
    let cell = |ns: f64| format!("{ns:+.0} ns");
    for &n in &sizes {
        let udps = distinct_frames(&udp, n);
        let tcps = distinct_frames(&tcp, n);
        let (ukeys, tkeys) = (keys(&udps), keys(&tcps));
        let floor = once_each(|f| refs.ns_per_run("bench_pass", f, 1), &udps)?;
        let created = once_each(|f| ours(&mut dp, f, 1), &udps)?;
        new_row.push(cell(created - floor));
        let floor = once_each(|f| refs.ns_per_run("bench_pass", f, 1), &udps)?;
        let passed = once_each(|f| ours(&mut dp, f, 1), &udps)?;
        media_row.push(cell(passed - floor));
        dp.block(&ukeys, listed)?;
        // One packet each to take the verdict in, then the measured round.
        for f in &udps {
            dp.test_run(f).context("taking the verdicts in")?;
        }
        let floor = once_each(|f| refs.ns_per_run("bench_pass", f, 1), &udps)?;
        let dropped = once_each(|f| ours(&mut dp, f, 1), &udps)?;
        drop_row.push(cell(dropped - floor));
        dp.unblock(&ukeys)?;
        for k in &ukeys {
            dp.remove_flow(k);
        }
        for f in &tcps {
            dp.test_run(f).context("prefilling flows")?;
        }
        let floor = once_each(|f| refs.ns_per_run("bench_pass", f, 1), &tcps)?;
        let passed = once_each(|f| ours(&mut dp, f, 1), &tcps)?;
        plain_row.push(cell(passed - floor));
        for k in &tkeys {
            dp.remove_flow(k);
        }
    }
    for r in [new_row, media_row, plain_row, drop_row] {
        cycling.row(r);
    }
    Ok((warm, cycling))
}
