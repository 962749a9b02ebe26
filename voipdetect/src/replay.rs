//! `voipdetect replay`: captures through the same parser, feature update and
//! controller as live traffic, on the capture's clock, one JSON line per
//! conversation.

use std::{collections::HashMap, io::Write, path::Path};

use serde::Serialize;
use voipdetect_common::FlowKey;

use crate::{
    capture::{ReadError, for_each_record, load, parse_frame},
    controller::Config,
    engine::{ConvSummary, Engine},
    event::{Basis, Label},
    key::{conv_name, endpoint, proto_name},
    plot::Series,
};

/// One conversation, in the format `score.py` reads plus what an operator
/// wants to know. Times are capture times, seconds since the Unix epoch.
#[derive(Serialize, Debug)]
pub struct ConvRecord {
    pub capture: String,
    pub proto: &'static str,
    pub src: String,
    pub dst: String,
    /// "voip" for real-time media (two-way or one-way), else "other".
    pub verdict: &'static str,
    /// Media seen flowing one way only (`src` sends).
    pub one_way: bool,
    pub first_seen: f64,
    pub last_seen: f64,
    pub packets: u64,
    pub bytes: u64,
    pub detected_at: Option<f64>,
    /// What the verdict rests on (see `Basis`).
    pub basis: Option<Basis>,
    pub reason: Option<String>,
    /// The call's session: conversations of one call share it.
    pub session: Option<String>,
}

/// Seconds, to the microsecond: the precision captures carry, and no
/// float noise beyond it in the JSON.
fn secs(ns: u64) -> f64 {
    (ns / 1_000) as f64 / 1e6
}

impl ConvRecord {
    pub fn new(capture: &str, s: &ConvSummary) -> Self {
        Self {
            capture: capture.to_owned(),
            proto: proto_name(s.key.proto),
            src: endpoint(&s.key, true),
            dst: endpoint(&s.key, false),
            verdict: if s.label.is_some() { "voip" } else { "other" },
            one_way: s.label == Some(Label::Media),
            first_seen: secs(s.first_seen_ns),
            last_seen: secs(s.last_seen_ns),
            packets: s.packets,
            bytes: s.bytes,
            detected_at: s.detected_at_ns.map(secs),
            basis: s.basis,
            reason: s.reason.clone(),
            session: s.session.map(|id| id.to_string()),
        }
    }
}

/// The result of replaying one capture.
pub struct Replayed {
    pub engine: Engine,
    /// Set when the capture could not be read to its end; everything before
    /// the failing record was replayed.
    pub error: Option<ReadError>,
    pub frames: u64,
}

/// Replays the capture held in `bytes`; `progress` hears the byte offset
/// now and then, `each` every parsed packet.
pub fn replay_with(
    bytes: &[u8],
    cfg: Config,
    poll_ns: u64,
    mut progress: impl FnMut(usize),
    mut each: impl FnMut(u64, &FlowKey),
) -> Replayed {
    let mut engine = Engine::new(cfg, poll_ns);
    let mut frames = 0u64;
    let error = for_each_record(bytes, |r| {
        frames += 1;
        if frames.is_multiple_of(65_536) {
            progress(r.offset);
        }
        let parsed = parse_frame(r.link, r.data);
        if let Ok(p) = &parsed {
            each(r.ts_ns, &p.key);
        }
        engine.packet(r.ts_ns, r.data, parsed);
    })
    .err();
    engine.finish();
    Replayed { engine, error, frames }
}

/// Replays the capture held in `bytes`.
pub fn replay_bytes(bytes: &[u8], cfg: Config, poll_ns: u64) -> Replayed {
    replay_with(bytes, cfg, poll_ns, |_| {}, |_, _| {})
}

/// Replays `path` and writes its records to `out`; returns the read error,
/// if any, and (when `plot`) every conversation's packet times.
pub fn replay_file(
    path: &Path,
    cfg: &Config,
    poll_ns: u64,
    out: &mut impl Write,
    plot: bool,
) -> anyhow::Result<(Option<ReadError>, Vec<Series>)> {
    let bytes = load(path)?;
    let name = path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned());
    // A progress bar, shown only once a replay has taken a second.
    let bar = indicatif::ProgressBar::with_draw_target(Some(bytes.len() as u64), indicatif::ProgressDrawTarget::hidden());
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg} {wide_bar} {bytes}/{total_bytes} {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message(name.clone());
    let started = std::time::Instant::now();
    let mut times: HashMap<FlowKey, Vec<u64>> = HashMap::new();
    let r = replay_with(
        &bytes,
        cfg.clone(),
        poll_ns,
        |off| {
            if bar.is_hidden() && started.elapsed().as_secs() >= 1 {
                bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
            }
            bar.set_position(off as u64);
        },
        |ts, k| {
            if plot {
                times.entry(k.canonical()).or_default().push(ts);
            }
        },
    );
    bar.finish_and_clear();
    let summaries = r.engine.summaries();
    for s in &summaries {
        serde_json::to_writer(&mut *out, &ConvRecord::new(&name, s))?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    let series = summaries
        .iter()
        .filter_map(|s| {
            let t = times.remove(&s.key.canonical())?;
            Some(Series {
                label: format!("{name}: {}{}", conv_name(&s.key), s.reason.as_deref().map(|r| format!(" — {r}")).unwrap_or_default()),
                times: t,
                verdict_ns: s.detected_at_ns,
            })
        })
        .collect();
    Ok((r.error, series))
}
