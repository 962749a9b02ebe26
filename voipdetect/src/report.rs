//! Turning controller events into lines: human-readable or JSON.

use serde::Serialize;

use crate::{
    clock::rfc3339,
    event::{Action, Basis, Event, EventKind, Label},
    key::{conv_name, endpoint, proto_name},
};

/// One event as a JSON line (the `--json` format).
#[derive(Serialize)]
pub struct EventRecord<'a> {
    pub event: EventKind,
    pub time: String,
    pub iface: &'a str,
    pub proto: &'static str,
    pub src: String,
    pub dst: String,
    /// Always "voip": real-time media; `one_way` tells a call from a stream.
    pub verdict: &'static str,
    /// Media seen flowing one way only (`src` sends).
    pub one_way: bool,
    pub action: Action,
    pub basis: Basis,
    pub reason: &'a str,
    pub pps: f64,
    pub mean_size: f64,
    pub duration: f64,
    /// The call's session: a stable id, and every conversation it spans.
    pub session: String,
    pub conversations: Vec<String>,
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

impl<'a> EventRecord<'a> {
    pub fn new(e: &'a Event, unix_ns: u64, iface: &'a str) -> Self {
        Self {
            event: e.kind,
            time: rfc3339(unix_ns),
            iface,
            proto: proto_name(e.key.proto),
            src: endpoint(&e.key, true),
            dst: endpoint(&e.key, false),
            verdict: "voip",
            one_way: e.label == Label::Media,
            action: e.action,
            basis: e.basis,
            reason: &e.reason,
            pps: round1(e.pps),
            mean_size: round1(e.mean_size),
            duration: (e.duration_s * 1000.0).round() / 1000.0,
            session: e.session.to_string(),
            conversations: e.conversations.iter().map(conv_name).collect(),
        }
    }

    /// The human-readable form of the same event.
    pub fn text(&self) -> String {
        let what = match (self.event, self.action) {
            (EventKind::Verdict, Action::Blocked) => "BLOCK",
            (EventKind::Verdict, Action::Reported) => "CALL ",
            (EventKind::Release, _) => "END  ",
        };
        let label = if self.one_way { "one-way media" } else { "voip" };
        let spans = match self.conversations.len() {
            0 | 1 => String::new(),
            n => format!(", {n} conversations"),
        };
        format!(
            "{} {what} {} {} -> {} on {}: {label}, {} ({:.1} s) [session {}{spans}]",
            self.time, self.proto, self.src, self.dst, self.iface, self.reason, self.duration, self.session
        )
    }
}
