//! `voipdetect replay`: captures through the same parser, feature update and
//! controller as live traffic, on the capture's clock, one JSON line per
//! conversation.

use std::{io::Write, path::Path};

use serde::Serialize;

use crate::{
    capture::{ReadError, for_each_record, load, parse_frame},
    controller::{Config, Label, NS_PER_SEC},
    engine::{ConvSummary, Engine},
    report::{endpoint, proto_name},
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
    pub reason: Option<String>,
}

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
            reason: s.reason.clone(),
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

/// Replays the capture held in `bytes`.
pub fn replay_bytes(bytes: &[u8], cfg: Config, poll_ns: u64) -> Replayed {
    let mut engine = Engine::new(cfg, poll_ns);
    let mut frames = 0u64;
    let error = for_each_record(bytes, |r| {
        frames += 1;
        engine.packet(r.ts_ns, r.data, parse_frame(r.link, r.data));
    })
    .err();
    engine.finish();
    Replayed { engine, error, frames }
}

/// Replays `path`, writes its records to `out`; returns the read error, if any.
pub fn replay_file(path: &Path, cfg: &Config, poll_ns: u64, out: &mut impl Write) -> anyhow::Result<Option<ReadError>> {
    let bytes = load(path)?;
    let name = path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned());
    let r = replay_bytes(&bytes, cfg.clone(), poll_ns);
    for s in r.engine.summaries() {
        serde_json::to_writer(&mut *out, &ConvRecord::new(&name, &s))?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(r.error)
}

/// Default replay cadence: the live controller's default poll interval.
pub const DEFAULT_POLL_NS: u64 = NS_PER_SEC / 4;
