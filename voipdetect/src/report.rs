//! Turning controller events into lines: human-readable, JSON, or
//! Suricata's EVE layout.

use serde::Serialize;

use crate::{
    clock::rfc3339,
    event::{Action, Basis, Event, EventKind, Label},
    key::{community_id, conv_name, endpoint, proto_name},
};

/// How events are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per event (the `--json` format).
    Json,
    /// Suricata's EVE JSON layout (`timestamp`, `event_type`, `src_ip`,
    /// ..., `community_id`), our fields under `voip`: for the same log
    /// pipeline and the same joins as Suricata's own events.
    Eve,
}

impl std::str::FromStr for Format {
    type Err = String;

    /// The spellings `--format` accepts.
    fn from_str(s: &str) -> Result<Self, String> {
        <Format as clap::ValueEnum>::from_str(s, false).map_err(|_| format!("{s:?} is not one of text, json, eve"))
    }
}

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
    /// The policy rule that decided the action ("default": none matched).
    pub rule: &'a str,
    pub pps: f64,
    pub mean_size: f64,
    pub duration: f64,
    /// The call's session: a stable id, and every conversation it spans.
    pub session: String,
    pub conversations: Vec<String>,
    /// The conversation's Community ID; left out when addresses are
    /// pseudonymised (it is an unkeyed hash of them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub community_id: Option<String>,
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
            rule: &e.rule,
            pps: round1(e.pps),
            mean_size: round1(e.mean_size),
            duration: (e.duration_s * 1000.0).round() / 1000.0,
            session: e.session.to_string(),
            conversations: e.conversations.iter().map(conv_name).collect(),
            community_id: Some(community_id(&e.key)),
        }
    }

    /// The human-readable form of the same event.
    pub fn text(&self) -> String {
        let what = match (self.event, self.action) {
            (EventKind::Verdict, Action::Blocked) => "BLOCK",
            (EventKind::Verdict, Action::Marked) => "MARK ",
            (EventKind::Verdict, Action::Reported) => "CALL ",
            (EventKind::Release, _) => "END  ",
        };
        let label = if self.one_way { "one-way media" } else { "voip" };
        let spans = match self.conversations.len() {
            0 | 1 => String::new(),
            n => format!(", {n} conversations"),
        };
        format!(
            "{} {what} {} {} -> {} on {}: {label}, {} ({:.1} s) [session {}{spans}, rule {}]",
            self.time, self.proto, self.src, self.dst, self.iface, self.reason, self.duration, self.session, self.rule
        )
    }
}

/// One line in Suricata's EVE layout: the common fields its consumers
/// index (`timestamp`, `event_type`, the 5-tuple, `community_id`), the
/// record itself under the name of the event type.
#[derive(Serialize)]
pub struct EveLine<'a, T: Serialize> {
    pub timestamp: String,
    pub event_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_iface: Option<&'a str>,
    pub src_ip: String,
    pub src_port: u16,
    pub dest_ip: String,
    pub dest_port: u16,
    /// "UDP" or "TCP", as Suricata writes it.
    pub proto: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub community_id: Option<String>,
    #[serde(flatten)]
    pub body: EveBody<'a, T>,
}

/// The record under its event type's name (`voip` for events,
/// `voip_call` for call records).
#[derive(Serialize)]
#[serde(untagged)]
pub enum EveBody<'a, T: Serialize> {
    Voip { voip: &'a T },
    Call { voip_call: &'a T },
}

/// Suricata's timestamp: microseconds and a numeric UTC offset
/// ("2023-11-14T22:13:20.123456+0000").
pub fn eve_timestamp(unix_ns: u64) -> String {
    let t = humantime::format_rfc3339_micros(std::time::UNIX_EPOCH + std::time::Duration::from_nanos(unix_ns)).to_string();
    format!("{}+0000", t.trim_end_matches('Z'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eve_timestamps_are_suricatas() {
        assert_eq!(eve_timestamp(1_700_000_000_123_456_789), "2023-11-14T22:13:20.123456+0000");
    }

    #[test]
    fn formats_parse_as_the_flag_spells_them() {
        assert_eq!("eve".parse::<Format>(), Ok(Format::Eve));
        assert_eq!("json".parse::<Format>(), Ok(Format::Json));
        assert!("xml".parse::<Format>().unwrap_err().contains("text, json, eve"));
    }
}
