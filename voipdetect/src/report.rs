//! Turning controller events into lines: human-readable or JSON.

use std::{
    io::Write,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::Serialize;
use voipdetect_common::{
    FlowKey,
    flow::{FAMILY_V4, PROTO_TCP, PROTO_UDP},
};

use crate::controller::{Action, Event, EventKind, Label};

/// The source or destination address of a key.
pub fn addr(key: &FlowKey, src: bool) -> IpAddr {
    let a = if src { key.src } else { key.dst };
    if key.family == FAMILY_V4 { IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3])) } else { IpAddr::V6(Ipv6Addr::from(a)) }
}

/// "ip:port", or "[v6]:port".
pub fn endpoint(key: &FlowKey, src: bool) -> String {
    let port = if src { key.sport } else { key.dport };
    match addr(key, src) {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

/// "udp a:1 <-> b:2", for logs.
pub fn conv_name(k: &FlowKey) -> String {
    format!("{} {} <-> {}", proto_name(k.proto), endpoint(k, true), endpoint(k, false))
}

pub fn proto_name(proto: u8) -> &'static str {
    match proto {
        PROTO_TCP => "tcp",
        PROTO_UDP => "udp",
        _ => "other",
    }
}

/// Wall-clock time of a nanosecond timestamp since the Unix epoch, RFC 3339.
pub fn rfc3339(unix_ns: u64) -> String {
    let t = UNIX_EPOCH + Duration::from_nanos(unix_ns);
    humantime::format_rfc3339_millis(t).to_string()
}

/// Nanoseconds since the Unix epoch now.
pub fn unix_now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
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
    pub reason: &'a str,
    pub pps: f64,
    pub mean_size: f64,
    pub duration: f64,
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
            reason: &e.reason,
            pps: round1(e.pps),
            mean_size: round1(e.mean_size),
            duration: (e.duration_s * 1000.0).round() / 1000.0,
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
        format!(
            "{} {what} {} {} -> {} on {}: {label}, {} ({:.1} s)",
            self.time, self.proto, self.src, self.dst, self.iface, self.reason, self.duration
        )
    }
}

/// Where events go.
pub struct Reporter<W: Write> {
    out: W,
    json: bool,
}

impl<W: Write> Reporter<W> {
    pub fn new(out: W, json: bool) -> Self {
        Self { out, json }
    }

    pub fn emit(&mut self, rec: &EventRecord<'_>) -> anyhow::Result<()> {
        if self.json {
            serde_json::to_writer(&mut self.out, rec)?;
            self.out.write_all(b"\n")?;
        } else {
            writeln!(self.out, "{}", rec.text())?;
        }
        self.out.flush()?;
        Ok(())
    }
}
