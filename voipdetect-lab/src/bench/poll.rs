//! The controller at scale: the flow map filled with N live flows, one
//! full read (batched and entry by entry), one whole poll, sustained
//! polling at one per second (CPU share), and memory per flow.

use std::time::{Duration, Instant};

use voipdetect_common::{
    FlowCounters, FlowKey,
    flow::{FAMILY_V4, PROTO_UDP},
};

use voipdetect::{
    clock::monotonic_ns,
    controller::{Config, Controller},
    datapath::{Datapath, LoadOptions},
};

use super::{Scale, Table};

fn key(i: u32) -> FlowKey {
    let mut k = FlowKey { proto: PROTO_UDP, family: FAMILY_V4, sport: 1024 + (i % 50_000) as u16, dport: 5004, ..Default::default() };
    k.src[..4].copy_from_slice(&(0x0a00_0000 | i).to_be_bytes());
    k.dst[..4].copy_from_slice(&[198, 51, 100, 2]);
    k
}

/// CPU time this process has used.
fn cpu_time() -> Duration {
    // SAFETY: getrusage fills the struct it is given.
    let ru = unsafe {
        let mut ru = std::mem::zeroed::<libc::rusage>();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64);
    tv(ru.ru_utime) + tv(ru.ru_stime)
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

pub fn run(scale: Scale) -> anyhow::Result<(Table, Table)> {
    let sizes: Vec<u32> = scale.pick(vec![10_000, 100_000, 1_000_000], vec![10_000]);
    let sustain = scale.pick(Duration::from_secs(10), Duration::from_secs(2));
    let capacity = 1u32 << 21;
    let mut t = Table::new(
        "Controller polling the flow map",
        &[
            "flows",
            "full read, batched",
            "full read, get_next_key",
            "batched speed-up",
            "one whole poll",
            "sustained 1/s: CPU of one core",
            "controller RSS",
        ],
    );
    let mut mem = Table::new("Memory", &["what", "figure"]);
    for &n in &sizes {
        let mut dp = Datapath::load(&LoadOptions { flow_entries: capacity, ..Default::default() })?;
        let now = monotonic_ns();
        for i in 0..n {
            let mut c = FlowCounters::new(now - 5_000_000_000, 1);
            c.packets = 250;
            c.bytes = 250 * 172;
            c.last_seen_ns = now;
            c.iat_hist[3] = 249;
            c.size_hist[3] = 250;
            dp.insert_flow(&key(i), &c)?;
        }
        let t0 = Instant::now();
        let a = dp.for_each_flow(|_, _| {})?;
        let batched = t0.elapsed();
        let t0 = Instant::now();
        let b = dp.for_each_flow_by_key(|_, _| {})?;
        let by_key = t0.elapsed();
        anyhow::ensure!(a == n as usize && b == n as usize, "read {a} and {b} of {n} flows");

        let mut ctl = Controller::new(Config::default());
        let rss_before = rss();
        let t0 = Instant::now();
        dp.for_each_flow(|k, c| ctl.observe(k, c))?;
        ctl.finish_poll(monotonic_ns());
        let one_poll = t0.elapsed();
        let (cpu0, wall0) = (cpu_time(), Instant::now());
        let mut next = Instant::now() + Duration::from_secs(1);
        while wall0.elapsed() < sustain {
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
            next += Duration::from_secs(1);
            dp.for_each_flow(|k, c| ctl.observe(k, c))?;
            ctl.finish_poll(monotonic_ns());
        }
        let share = (cpu_time() - cpu0).as_secs_f64() / wall0.elapsed().as_secs_f64();
        let rss_after = rss();
        t.row(vec![
            n.to_string(),
            ms(batched),
            ms(by_key),
            format!("{:.1}×", by_key.as_secs_f64() / batched.as_secs_f64()),
            ms(one_poll),
            format!("{:.1} %", 100.0 * share),
            format!(
                "{:.0} MiB ({:.0} B per flow)",
                rss_after as f64 / 1048576.0,
                rss_after.saturating_sub(rss_before) as f64 / f64::from(n)
            ),
        ]);
        if n == *sizes.last().unwrap_or(&n) {
            let (memlock, max) = dp.flow_map_memory()?;
            mem.row(vec![
                format!("kernel flow map ({max} direction-flows, preallocated LRU)"),
                format!("{:.0} MiB, {:.0} B per direction-flow", memlock as f64 / 1048576.0, memlock as f64 / f64::from(max)),
            ]);
            mem.row(vec!["map key + value as laid out".into(), format!("{} + {} B", size_of::<FlowKey>(), size_of::<FlowCounters>())]);
            mem.row(vec![format!("controller RSS with {n} flows tracked"), format!("{:.0} MiB", rss_after as f64 / 1048576.0)]);
        }
    }
    Ok((t, mem))
}
