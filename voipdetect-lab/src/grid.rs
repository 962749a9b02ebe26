//! The stress grid: every look-alike and every call variant of the
//! traffic generator through the replay engine (the controller's own
//! code, offline) over links that lose and jitter packets, loss first,
//! then jitter, each cell with a few seeds. It counts the look-alikes
//! called a call and the calls missed, per cell: the precision and recall
//! figures of BENCHMARKS.md "Accuracy" that the unit tests' fixed cells
//! only sample.

use std::{fmt::Write as _, time::Duration};

use voipdetect::{
    Config, Engine,
    controller::DEFAULT_POLL_NS,
    event::{EventKind, Label},
};
use voipdetect_common::parse::parse_ethernet;
use voipdetect_traffic::{Flow, pattern, synth};

/// The capture clock's start (as the engine's own tests have it).
const T0: u64 = 1_700_000_000_000_000_000;

/// What the grid plays.
#[derive(Clone, Debug)]
pub struct GridOptions {
    /// Shares of packets lost, each way.
    pub losses: Vec<f64>,
    /// Largest hold-up of a packet (ms; see `Flow::jittered`).
    pub jitters_ms: Vec<u64>,
    pub seeds: u64,
    /// Length of each look-alike and of each call.
    pub look_alike_secs: u64,
    pub call_secs: u64,
}

impl Default for GridOptions {
    fn default() -> Self {
        Self {
            losses: vec![0.0, 0.05, 0.1, 0.15, 0.2, 0.3],
            jitters_ms: vec![0, 2, 5, 10, 20, 30],
            seeds: 3,
            look_alike_secs: 60,
            call_secs: 10,
        }
    }
}

/// One flow over one cell's link.
struct Run {
    name: String,
    loss: f64,
    jitter_ms: u64,
    /// Seconds from the flow's start to its first call verdict.
    called: Option<f64>,
}

/// `f` as a link losing `loss` and holding packets up by up to
/// `jitter_ms` delivers it.
fn over_link(f: &Flow, loss: f64, jitter_ms: u64, seed: u64) -> Flow {
    let f = if loss > 0.0 { f.lossy(loss, seed) } else { f.clone() };
    if jitter_ms > 0 { f.jittered(Duration::from_millis(jitter_ms), seed) } else { f }
}

/// Seconds to `f`'s first call verdict in replay, if any.
fn first_call(f: &Flow) -> Option<f64> {
    let mut e = Engine::new(Config::default(), DEFAULT_POLL_NS);
    for t in synth::frames(std::slice::from_ref(f), T0) {
        e.packet(t.ts_ns, t.frame.as_slice(), parse_ethernet(t.frame.as_slice()));
    }
    e.finish();
    e.events.iter().find(|v| v.kind == EventKind::Verdict && v.label == Label::Voip).map(|v| (v.at_ns - T0) as f64 / 1e9)
}

/// Every flow of `flows` over every cell of `o`, on every core.
fn play(flows: &[Flow], o: &GridOptions, seed_base: u64) -> Vec<Run> {
    let mut cells = Vec::new();
    for f in flows {
        for &loss in &o.losses {
            for &jitter_ms in &o.jitters_ms {
                for seed in 0..o.seeds {
                    cells.push((f, loss, jitter_ms, seed_base + seed));
                }
            }
        }
    }
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut runs: Vec<(usize, Run)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                s.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(&(f, loss, jitter_ms, seed)) = cells.get(i) else { break done };
                        let called = first_call(&over_link(f, loss, jitter_ms, seed));
                        done.push((i, Run { name: f.name.clone(), loss, jitter_ms, called }));
                    }
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().expect("grid worker")).collect()
    });
    runs.sort_by_key(|(i, _)| *i);
    runs.into_iter().map(|(_, r)| r).collect()
}

/// Counts by cell: loss down, jitter across.
fn cell_table(out: &mut String, o: &GridOptions, runs: &[Run], count: impl Fn(&Run) -> bool) {
    let _ = write!(out, "| loss \\ jitter |");
    for j in &o.jitters_ms {
        let _ = write!(out, " {j} ms |");
    }
    let _ = write!(out, "\n|---|");
    for _ in &o.jitters_ms {
        let _ = write!(out, "---|");
    }
    out.push('\n');
    for &l in &o.losses {
        let _ = write!(out, "| {:.0} % |", l * 100.0);
        for &j in &o.jitters_ms {
            let cell: Vec<&Run> = runs.iter().filter(|r| r.loss == l && r.jitter_ms == j).collect();
            let _ = write!(out, " {}/{} |", cell.iter().filter(|r| count(r)).count(), cell.len());
        }
        out.push('\n');
    }
}

/// A line per flow that `count` picks in any run: how many of its runs.
fn by_flow(out: &mut String, runs: &[Run], what: &str, count: impl Fn(&Run) -> bool) {
    out.push('\n');
    let mut names: Vec<&str> = runs.iter().filter(|x| count(x)).map(|x| x.name.as_str()).collect();
    names.dedup();
    for n in names {
        let of: Vec<&Run> = runs.iter().filter(|x| x.name == n).collect();
        let _ = writeln!(out, "- {n}: {what} {} of {} runs", of.iter().filter(|x| count(x)).count(), of.len());
    }
}

/// The results of a grid run.
pub struct Grid {
    pub look_alikes: Vec<(String, f64, u64, Option<f64>)>,
    pub calls: Vec<(String, f64, u64, Option<f64>)>,
    pub report: String,
}

/// Plays the grid; the report is Markdown.
pub fn run(o: &GridOptions) -> Grid {
    let decoys = play(&pattern::decoys(o.look_alike_secs), o, 100);
    let calls = play(&pattern::call_variants(o.call_secs), o, 200);
    let mut r = String::new();
    let called = decoys.iter().filter(|d| d.called.is_some()).count();
    let _ = writeln!(
        r,
        "### Look-alikes called a call ({called} of {} runs of {} s; {} look-alikes × {} seeds a cell)\n",
        decoys.len(),
        o.look_alike_secs,
        decoys.len() / (o.losses.len() * o.jitters_ms.len() * o.seeds as usize).max(1),
        o.seeds
    );
    cell_table(&mut r, o, &decoys, |d| d.called.is_some());
    by_flow(&mut r, &decoys, "called in", |d| d.called.is_some());
    let missed = calls.iter().filter(|c| c.called.is_none()).count();
    let _ = writeln!(r, "\n### Calls missed ({missed} of {} runs of {} s)\n", calls.len(), o.call_secs);
    cell_table(&mut r, o, &calls, |c| c.called.is_none());
    let mut times: Vec<f64> = calls.iter().filter_map(|c| c.called).collect();
    times.sort_by(f64::total_cmp);
    if !times.is_empty() {
        let at = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize];
        let _ = writeln!(
            r,
            "\nTime to the first verdict: median {:.2} s, p90 {:.2} s, p99 {:.2} s, max {:.2} s",
            at(0.5),
            at(0.9),
            at(0.99),
            at(1.0)
        );
    }
    by_flow(&mut r, &calls, "missed in", |c| c.called.is_none());
    let flat = |v: Vec<Run>| v.into_iter().map(|x| (x.name, x.loss, x.jitter_ms, x.called)).collect();
    Grid { look_alikes: flat(decoys), calls: flat(calls), report: r }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The intact and a mildly lossy, jittery cell: no look-alike called,
    /// every call caught (the engine's own tests hold these cells too; this
    /// keeps the grid's plumbing honest).
    #[test]
    fn mild_cells_call_every_call_and_no_look_alike() {
        let o = GridOptions { losses: vec![0.0, 0.05], jitters_ms: vec![0, 2], seeds: 1, look_alike_secs: 8, call_secs: 8 };
        let g = run(&o);
        let per_cell = o.losses.len() * o.jitters_ms.len();
        assert_eq!(g.look_alikes.len(), pattern::decoys(8).len() * per_cell);
        assert_eq!(g.calls.len(), pattern::call_variants(8).len() * per_cell);
        let called: Vec<_> = g.look_alikes.iter().filter(|d| d.3.is_some()).collect();
        assert!(called.is_empty(), "{called:?}");
        let missed: Vec<_> = g.calls.iter().filter(|c| c.3.is_none()).collect();
        assert!(missed.is_empty(), "{missed:?}\n{}", g.report);
        assert!(g.report.contains("Calls missed (0 of"), "{}", g.report);
    }
}
