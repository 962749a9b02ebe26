//! The benchmarks behind `cargo xtask bench`: each prints figures measured
//! side by side in one run, as ratios to a reference taken in the same run.
//! `--quick` runs every section at a size that takes seconds, so CI keeps
//! them working.

pub mod poll;
pub mod replay;
pub mod testrun;
pub mod veth;

use anyhow::{Context as _, anyhow};
use aya::{
    Ebpf, EbpfLoader,
    programs::{TestRun as _, TestRunOptions, Xdp},
};

/// The reference programs of `voipdetect-bench-ebpf`, built by this crate's build.rs.
static BENCH_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/bench-progs"));

/// How big each benchmark runs.
#[derive(Clone, Copy, Debug)]
pub struct Scale {
    pub quick: bool,
}

impl Scale {
    /// `full` normally, `quick` in quick mode.
    pub fn pick<T>(self, full: T, quick: T) -> T {
        if self.quick { quick } else { full }
    }
}

/// The reference programs, loaded.
pub struct BenchProgs {
    pub ebpf: Ebpf,
}

impl BenchProgs {
    /// Loads the object; `redirect_ifindex` is where `bench_redirect` sends.
    pub fn load(redirect_ifindex: u32) -> anyhow::Result<Self> {
        Self::load_with_header(redirect_ifindex, [0; 34])
    }

    /// As `load`, with the header `bench_redirect_fresh` writes.
    pub fn load_with_header(redirect_ifindex: u32, header: [u8; 34]) -> anyhow::Result<Self> {
        voipdetect::datapath::check_privileges()?;
        let mut ebpf = EbpfLoader::new()
            .override_global("REDIRECT_IFINDEX", &redirect_ifindex, true)
            .override_global("REDIRECT_HEADER", &header, true)
            .load(BENCH_OBJECT)
            .context("loading the benchmark programs")?;
        for name in [
            "bench_pass",
            "bench_count_drop",
            "bench_parse",
            "bench_redirect",
            "bench_redirect_fresh",
            "bench_flood",
            "bench_call",
            "bench_clock",
            "bench_coarse_clock",
            "bench_jiffies",
            "bench_stage_parse",
            "bench_stage_slot",
            "bench_stage_clock",
        ] {
            let p: &mut Xdp = ebpf.program_mut(name).ok_or_else(|| anyhow!("{name} missing"))?.try_into()?;
            p.load().with_context(|| format!("verifying {name}"))?;
        }
        Ok(Self { ebpf })
    }

    pub fn prog(&mut self, name: &str) -> anyhow::Result<&mut Xdp> {
        Ok(self.ebpf.program_mut(name).ok_or_else(|| anyhow!("{name} missing"))?.try_into()?)
    }

    /// Mean ns per run of `name` over `repeat` runs on `frame`.
    pub fn ns_per_run(&mut self, name: &str, frame: &[u8], repeat: u32) -> anyhow::Result<f64> {
        let p = self.prog(name)?;
        let r = p.test_run(TestRunOptions { data_in: Some(frame), repeat, ..Default::default() })?;
        Ok(r.duration.as_nanos() as f64)
    }

    /// Packets `bench_count_drop` has dropped.
    pub fn dropped(&self) -> anyhow::Result<u64> {
        let m = self.ebpf.map("BENCH_COUNT").ok_or_else(|| anyhow!("BENCH_COUNT missing"))?;
        let a = aya::maps::PerCpuArray::<_, u64>::try_from(m)?;
        Ok(a.get(&0, 0)?.iter().sum())
    }
}

/// Transmits `count` copies of `frame` out of `iface` in network namespace
/// `ns` with BPF_PROG_TEST_RUN in live-frames mode; `program` is
/// `bench_redirect` (the same frame), `bench_redirect_fresh` (the same
/// frame, its headers restored each time: for paths that rewrite them) or `bench_flood` (random 5-tuples).
/// Returns the wall time it took.
pub fn live_frames(ns: &str, iface: &str, program: &str, frame: &[u8], count: u32) -> anyhow::Result<std::time::Duration> {
    use aya::programs::TestRunAttrs;
    crate::netns::in_ns(ns, || {
        let mut header = [0; 34];
        let n = frame.len().min(34);
        header[..n].copy_from_slice(&frame[..n]);
        let mut generator = BenchProgs::load_with_header(voipdetect::datapath::ifindex(iface)?, header)?;
        let prog = generator.prog(program)?;
        let t = std::time::Instant::now();
        // Chunks, so one call never runs for long.
        let mut left = count;
        while left > 0 {
            let n = left.min(1 << 20);
            let opts =
                TestRunOptions { data_in: Some(frame), repeat: n, attrs: TestRunAttrs::new().xdp_live_frames(64), ..Default::default() };
            prog.test_run(opts).context("live-frames test run")?;
            left -= n;
        }
        Ok(t.elapsed())
    })
}

/// Median of a few measurements (test runs are noisy on a shared machine).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// A table printed as aligned columns.
pub struct Table {
    pub title: String,
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(title: &str, header: &[&str]) -> Self {
        Self { title: title.into(), header: header.iter().map(|s| s.to_string()).collect(), rows: Vec::new() }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// As a Markdown table (also readable in a terminal).
    pub fn render(&self) -> String {
        let n = self.header.len();
        let mut w = vec![0; n];
        for r in std::iter::once(&self.header).chain(&self.rows) {
            for (i, c) in r.iter().enumerate().take(n) {
                w[i] = w[i].max(c.chars().count());
            }
        }
        let line = |r: &Vec<String>| {
            let cells: Vec<String> = (0..n)
                .map(|i| {
                    let c = r.get(i).map(String::as_str).unwrap_or("");
                    format!("{c:<width$}", width = w[i])
                })
                .collect();
            format!("| {} |", cells.join(" | "))
        };
        let mut out = format!("### {}\n\n{}\n", self.title, line(&self.header));
        out.push_str(&format!("|{}|\n", w.iter().map(|x| "-".repeat(x + 2)).collect::<Vec<_>>().join("|")));
        for r in &self.rows {
            out.push_str(&line(r));
            out.push('\n');
        }
        out
    }
}
