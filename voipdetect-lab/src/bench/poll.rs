//! The controller at scale: the flow tables filled with N live flows, one
//! full read of the mapped tables, one whole poll, polling once a second
//! with 1 % and with all of the flows changing (the controller thread's CPU
//! time), and memory per flow.

use std::time::{Duration, Instant};

use voipdetect_common::{
    FlowCounters, FlowKey,
    flow::{FAMILY_V4, PROTO_UDP},
    table::{Slot4, Slot6},
};

use voipdetect::{
    clock::monotonic_ns,
    controller::{Config, Controller},
    datapath::{ChangeTracker, Datapath, LoadOptions},
};

use super::{Scale, Table};

fn key(i: u32) -> FlowKey {
    let mut k = FlowKey { proto: PROTO_UDP, family: FAMILY_V4, sport: 1024 + (i % 50_000) as u16, dport: 5004, ..Default::default() };
    k.src[..4].copy_from_slice(&(0x0a00_0000 | i).to_be_bytes());
    k.dst[..4].copy_from_slice(&[198, 51, 100, 2]);
    k
}

/// Resident memory of this process, bytes.
pub fn rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// CPU time of the calling thread.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// One controller poll at `now` as `run` makes it: read the flows that
/// changed, then judge; its thread CPU time.
fn poll(dp: &Datapath, ctl: &mut Controller, changes: &mut ChangeTracker, now: u64) -> Duration {
    let t0 = thread_cpu();
    dp.poll(changes, ctl, now);
    thread_cpu() - t0
}

/// The controller's share of one core when polling once a second for
/// `secs` while `changing` of every 100 flows see 50 new packets a second.
/// The controller takes its time from its caller: here a second passes
/// between polls (`now` moves on), so windows end and are judged as they
/// would live, without the benchmark waiting for it.
fn sustained(
    dp: &mut Datapath,
    ctl: &mut Controller,
    changes: &mut ChangeTracker,
    now: &mut u64,
    n: u32,
    changing: u32,
    secs: u32,
) -> anyhow::Result<f64> {
    let mut busy = Duration::ZERO;
    for _ in 0..secs {
        *now += 1_000_000_000;
        let now = *now;
        for i in (0..n).filter(|i| i % 100 < changing) {
            dp.update_flow(&key(i), |c| {
                c.packets += 50;
                c.bytes += 50 * 172;
                c.last_seen_ns = now;
                c.iat_hist[3] = c.iat_hist[3].wrapping_add(50);
                c.size_hist[3] = c.size_hist[3].wrapping_add(50);
            });
        }
        busy += poll(dp, ctl, changes, now);
    }
    Ok(busy.as_secs_f64() / f64::from(secs))
}

pub fn run(scale: Scale) -> anyhow::Result<(Table, Table)> {
    let sizes: Vec<u32> = scale.pick(vec![10_000, 100_000, 1_000_000], vec![10_000]);
    let secs = scale.pick(5, 2);
    let mut t = Table::new(
        "Controller polling the flow tables",
        &[
            "flows",
            "full read (mapped table)",
            "one whole poll",
            "polling 1/s, 1 % changing: CPU of one core",
            "polling 1/s, all changing: CPU of one core",
            "controller RSS",
        ],
    );
    let mut mem = Table::new("Memory", &["what", "figure"]);
    for &n in &sizes {
        // Room for n flows at half full at most (the table's working range).
        let slots = 2 * n;
        let mut dp = Datapath::load(&LoadOptions { flow_entries: slots, ..Default::default() })?;
        let now = monotonic_ns();
        let mut filled = 0u32;
        for i in 0..n {
            let mut c = FlowCounters::new(now - 5_000_000_000, 1);
            c.media = 1;
            c.packets = 250;
            c.bytes = 250 * 172;
            c.last_seen_ns = now;
            c.iat_hist[3] = 249;
            c.size_hist[3] = 250;
            // The rare flow whose probes are all taken is left out (the
            // kernel would evict the oldest); the read below counts what is in.
            filled += u32::from(dp.insert_flow(&key(i), &c).is_ok());
        }
        anyhow::ensure!(filled > n - n / 100, "only {filled} of {n} flows found a slot");
        let t0 = Instant::now();
        let read = dp.for_each_flow(|_, _| {})?;
        let full_read = t0.elapsed();
        anyhow::ensure!(read == filled as usize, "read {read} of {filled} flows");

        let mut ctl = Controller::new(Config::default());
        let rss_before = rss();
        let mut changes = dp.change_tracker();
        let mut clock = now;
        let t0 = Instant::now();
        dp.poll(&mut changes, &mut ctl, clock);
        let one_poll = t0.elapsed();
        // Each measured after as many polls at the same rate, untimed: the
        // steady state, not the transition into it (the 99 % that stop
        // need a poll or two to close their windows and fall asleep).
        sustained(&mut dp, &mut ctl, &mut changes, &mut clock, n, 1, secs)?;
        let few = sustained(&mut dp, &mut ctl, &mut changes, &mut clock, n, 1, secs)?;
        sustained(&mut dp, &mut ctl, &mut changes, &mut clock, n, 100, secs)?;
        let all = sustained(&mut dp, &mut ctl, &mut changes, &mut clock, n, 100, secs)?;
        let rss_after = rss();
        t.row(vec![
            n.to_string(),
            ms(full_read),
            ms(one_poll),
            format!("{:.1} %", 100.0 * few),
            format!("{:.1} %", 100.0 * all),
            format!(
                "{:.0} MiB ({:.0} B per flow)",
                rss_after as f64 / 1048576.0,
                rss_after.saturating_sub(rss_before) as f64 / f64::from(n)
            ),
        ]);
        if n == *sizes.last().unwrap_or(&n) {
            let [(m4, s4), (m6, s6)] = dp.flow_table_memory()?;
            mem.row(vec![
                format!("IPv4 flow table ({s4} slots, mmap-able array)"),
                format!("{:.0} MiB, {:.0} B per direction-flow", m4 as f64 / 1048576.0, m4 as f64 / f64::from(s4)),
            ]);
            mem.row(vec![
                format!("IPv6 flow table ({s6} slots)"),
                format!("{:.0} MiB, {:.0} B per direction-flow", m6 as f64 / 1048576.0, m6 as f64 / f64::from(s6)),
            ]);
            mem.row(vec![
                "slot as laid out (key + tag + counters + controller words)".into(),
                format!("IPv4 {} B, IPv6 {} B", size_of::<Slot4>(), size_of::<Slot6>()),
            ]);
            mem.row(vec![format!("controller RSS with {n} flows tracked"), format!("{:.0} MiB", rss_after as f64 / 1048576.0)]);
        }
    }
    Ok((t, mem))
}
