//! The leak measure: a call spread over several conversations, played
//! through a blocking gateway. After the call's first verdict, what share
//! of the media it still sent arrived, over all its legs (hops, relays, the
//! fallback to TCP); and for every leg that began after that verdict, how
//! long its media got through before it was blocked too.

use std::{
    path::Path,
    sync::atomic::AtomicBool,
    time::{Duration, SystemTime},
};

use anyhow::Context as _;
use voipdetect_traffic::{Call, addrs};

use crate::{
    lab::GatewayLab,
    live::{self, FlowResult},
};

/// One call's leak.
#[derive(Clone, Debug)]
pub struct Leak {
    pub call: String,
    pub legs: usize,
    /// The call's first verdict, from the start of its media.
    pub verdict: Option<Duration>,
    /// Payload bytes sent, and delivered, at or after the verdict.
    pub sent_after: u64,
    pub delivered_after: u64,
    /// Legs that began after the verdict...
    pub later_legs: usize,
    /// ...and the longest any of them delivered media.
    pub slowest_reblock: Option<Duration>,
}

impl Leak {
    /// Share of the media sent after the first verdict that still arrived.
    pub fn share(&self) -> f64 {
        if self.sent_after == 0 { 0.0 } else { self.delivered_after as f64 / self.sent_after as f64 }
    }
}

/// Whether a controller event names the conversation of `leg`.
fn names(e: &serde_json::Value, leg: &voipdetect_traffic::Flow) -> bool {
    let (c, s) = addrs::of(leg);
    let (c, s) = (c.to_string(), s.to_string());
    let ends = [e["src"].as_str().unwrap_or_default(), e["dst"].as_str().unwrap_or_default()];
    ends.contains(&c.as_str()) && ends.contains(&s.as_str()) && e["proto"] == leg.transport.as_str()
}

/// When an event happened, from `start`.
fn event_time(e: &serde_json::Value, start: SystemTime) -> Option<Duration> {
    let t = humantime::parse_rfc3339(e["time"].as_str()?).ok()?;
    Some(t.duration_since(start).unwrap_or_default())
}

/// The leak of `call`, from what its legs' endpoints saw and the
/// controller's events.
pub fn measure(call: &Call, results: &[FlowResult], events: &[serde_json::Value]) -> Leak {
    let legs: Vec<(&voipdetect_traffic::Flow, &FlowResult)> =
        call.legs.iter().filter_map(|l| Some((l, results.iter().find(|r| r.name == l.name)?))).collect();
    let start = legs.first().map_or(SystemTime::UNIX_EPOCH, |(_, r)| r.started);
    let verdict = events
        .iter()
        .filter(|e| e["event"] == "verdict" && e["one_way"] == false && legs.iter().any(|(l, _)| names(e, l)))
        .filter_map(|e| event_time(e, start))
        .min();
    let mut leak = Leak {
        call: call.name.clone(),
        legs: legs.len(),
        verdict,
        sent_after: 0,
        delivered_after: 0,
        later_legs: 0,
        slowest_reblock: None,
    };
    let Some(v) = verdict else { return leak };
    for (_, r) in &legs {
        let (sent, delivered) = r.bytes_after(v);
        leak.sent_after += sent;
        leak.delivered_after += delivered;
        if let Some(first) = r.first_sent().filter(|f| *f > v) {
            leak.later_legs += 1;
            let last = r.received.iter().flatten().map(|(at, _)| *at).max().unwrap_or(first);
            let through = last.saturating_sub(first);
            leak.slowest_reblock = Some(leak.slowest_reblock.map_or(through, |s| s.max(through)));
        }
    }
    leak
}

/// Plays `call` through a gateway whose controller blocks (a lab of its
/// own, so no other call's suspicion helps) and measures its leak.
pub fn run(binary: &Path, call: &Call) -> anyhow::Result<(Leak, Vec<serde_json::Value>)> {
    let lab = GatewayLab::new()?;
    let mut ctl = lab.start_controller(binary, &["--mode", "block"])?;
    ctl.wait_attached(Duration::from_secs(20))?;
    let results = live::run(&lab, &call.legs, &AtomicBool::new(false)).with_context(|| format!("playing {}", call.name))?;
    let status = ctl.stop()?;
    anyhow::ensure!(status.success(), "controller exited with {status}: {}", ctl.stderr_text());
    let events = ctl.drain();
    Ok((measure(call, &results, &events), events))
}

/// The table BENCHMARKS.md records.
pub fn table(leaks: &[Leak]) -> String {
    let mut out = format!(
        "  {:<30} {:>5} {:>10} {:>14} {:>16} {:>22}\n",
        "call", "legs", "verdict", "sent after (B)", "delivered after", "later legs: slowest"
    );
    for l in leaks {
        out.push_str(&format!(
            "  {:<30} {:>5} {:>10} {:>14} {:>16} {:>22}\n",
            l.call,
            l.legs,
            l.verdict.map_or("none".into(), |v| format!("{:.2} s", v.as_secs_f64())),
            l.sent_after,
            format!("{} ({:.1} %)", l.delivered_after, 100.0 * l.share()),
            match l.slowest_reblock {
                Some(d) => format!("{}: {:.2} s", l.later_legs, d.as_secs_f64()),
                None => format!("{}: -", l.later_legs),
            },
        ));
    }
    out
}
