//! Where the live controller's events and call records go, and how
//! addresses appear in them. Metadata only: endpoints, times, counts,
//! verdicts; never payload.

use std::{
    fs::{File, OpenOptions},
    io::{BufWriter, Write},
    path::Path,
};

use anyhow::Context as _;
use serde::Serialize;
use voipdetect_common::FlowKey;

use crate::{
    clock::rfc3339,
    event::{Action, Basis, Event, EventKind, Label},
    key::{addr, community_id, endpoint, port, proto_name},
    report::{EveBody, EveLine, EventRecord, Format, eve_timestamp},
};

/// Replaces addresses by a keyed hash: the same address always gives the
/// same pseudonym under one key, so records still correlate, but who
/// called whom cannot be read back without the key.
#[derive(Clone)]
pub struct Pseudonymizer {
    key: [u8; 32],
}

impl Pseudonymizer {
    pub fn new(secret: &str) -> Self {
        Self { key: blake3::derive_key("voipdetect 2026-11 address pseudonyms", secret.as_bytes()) }
    }

    /// "ip-<16 hex digits>:port".
    pub fn endpoint(&self, key: &FlowKey, src: bool) -> String {
        format!("{}:{}", self.ip(key, src), port(key, src))
    }

    /// "ip-<16 hex digits>".
    pub fn ip(&self, key: &FlowKey, src: bool) -> String {
        let ip = addr(key, src);
        let bytes: Vec<u8> = match ip {
            std::net::IpAddr::V4(a) => a.octets().to_vec(),
            std::net::IpAddr::V6(a) => a.octets().to_vec(),
        };
        let h = blake3::keyed_hash(&self.key, &bytes);
        let hex: String = h.as_bytes()[..8].iter().map(|b| format!("{b:02x}")).collect();
        format!("ip-{hex}")
    }
}

/// One call, written when its verdict ends (released or the controller stops).
#[derive(Serialize, Debug)]
pub struct CallRecord {
    pub record: &'static str,
    pub proto: &'static str,
    /// The initiating side (or, for one-way media, the sender).
    pub a: String,
    pub b: String,
    pub start: String,
    pub end: String,
    pub duration: f64,
    pub packets_ab: u64,
    pub packets_ba: u64,
    pub bytes_ab: u64,
    pub bytes_ba: u64,
    pub verdict: &'static str,
    pub one_way: bool,
    pub reason: String,
    pub action: Action,
    pub basis: Basis,
    /// The policy rule that decided the action.
    pub rule: String,
    /// The call's session, and every conversation it spans.
    pub session: String,
    pub conversations: Vec<String>,
    /// The conversation's Community ID (not when pseudonymised).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub community_id: Option<String>,
}

/// The controller's writers.
pub struct Outputs {
    events: Box<dyn Write + Send>,
    format: Format,
    records: Option<BufWriter<File>>,
    pseudo: Option<Pseudonymizer>,
}

fn append(path: &Path) -> anyhow::Result<File> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    OpenOptions::new().create(true).append(true).open(path).with_context(|| format!("opening {}", path.display()))
}

impl Outputs {
    pub fn new(events: Option<&Path>, format: Format, records: Option<&Path>, pseudo: Option<Pseudonymizer>) -> anyhow::Result<Self> {
        let events: Box<dyn Write + Send> = match events {
            Some(p) => Box::new(BufWriter::new(append(p)?)),
            None => Box::new(std::io::stdout()),
        };
        let records = records.map(append).transpose()?.map(BufWriter::new);
        Ok(Self { events, format, records, pseudo })
    }

    fn endpoints(&self, key: &FlowKey) -> (String, String) {
        match &self.pseudo {
            Some(p) => (p.endpoint(key, true), p.endpoint(key, false)),
            None => (endpoint(key, true), endpoint(key, false)),
        }
    }

    /// The common EVE fields of a conversation: addresses (pseudonyms when
    /// asked, and then no Community ID, which would give them away).
    fn eve<'a, T: Serialize>(&self, key: &FlowKey, unix_ns: u64, iface: Option<&'a str>, body: EveBody<'a, T>) -> EveLine<'a, T> {
        let ip = |src| match &self.pseudo {
            Some(p) => p.ip(key, src),
            None => addr(key, src).to_string(),
        };
        EveLine {
            timestamp: eve_timestamp(unix_ns),
            event_type: match body {
                EveBody::Voip { .. } => "voip",
                EveBody::Call { .. } => "voip_call",
            },
            in_iface: iface,
            src_ip: ip(true),
            src_port: port(key, true),
            dest_ip: ip(false),
            dest_port: port(key, false),
            proto: proto_name(key.proto).to_ascii_uppercase(),
            community_id: self.pseudo.is_none().then(|| community_id(key)),
            body,
        }
    }

    /// "udp a:1 <-> b:2", addresses pseudonymised when asked.
    fn conversation(&self, k: &FlowKey) -> String {
        let (a, b) = self.endpoints(k);
        format!("{} {a} <-> {b}", proto_name(k.proto))
    }

    /// Writes one event (and a call record for a release). `wall` converts
    /// the event's clock to ns since the Unix epoch.
    pub fn event(&mut self, e: &Event, iface: &str, wall: impl Fn(u64) -> u64) -> anyhow::Result<()> {
        let mut rec = EventRecord::new(e, wall(e.at_ns), iface);
        (rec.src, rec.dst) = self.endpoints(&e.key);
        rec.conversations = e.conversations.iter().map(|k| self.conversation(k)).collect();
        if self.pseudo.is_some() {
            rec.community_id = None;
        }
        match self.format {
            Format::Text => writeln!(self.events, "{}", rec.text())?,
            Format::Json => {
                serde_json::to_writer(&mut self.events, &rec)?;
                self.events.write_all(b"\n")?;
            }
            Format::Eve => {
                let line = self.eve(&e.key, wall(e.at_ns), Some(iface), EveBody::Voip { voip: &rec });
                serde_json::to_writer(&mut self.events, &line)?;
                self.events.write_all(b"\n")?;
            }
        }
        self.events.flush()?;
        if e.kind == EventKind::Release && self.records.is_some() {
            let r = CallRecord {
                record: "call",
                proto: proto_name(e.key.proto),
                a: rec.src,
                b: rec.dst,
                start: rfc3339(wall(e.first_seen_ns)),
                end: rfc3339(wall(e.last_seen_ns)),
                duration: (e.last_seen_ns.saturating_sub(e.first_seen_ns) as f64 / 1e6).round() / 1e3,
                packets_ab: e.packets[0],
                packets_ba: e.packets[1],
                bytes_ab: e.bytes[0],
                bytes_ba: e.bytes[1],
                verdict: "voip",
                one_way: e.label == Label::Media,
                reason: e.reason.clone(),
                action: e.action,
                basis: e.basis,
                rule: e.rule.clone(),
                session: rec.session,
                conversations: rec.conversations,
                community_id: rec.community_id,
            };
            let mut line = if self.format == Format::Eve {
                serde_json::to_vec(&self.eve(&e.key, wall(e.last_seen_ns), None, EveBody::Call { voip_call: &r }))?
            } else {
                serde_json::to_vec(&r)?
            };
            line.push(b'\n');
            if let Some(w) = &mut self.records {
                w.write_all(&line)?;
                w.flush()?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{event::SessionId, key::parse_flow};

    fn release() -> Event {
        let key = parse_flow("udp", "192.168.1.52:54585", "8.8.8.8:53").unwrap();
        Event {
            kind: EventKind::Release,
            at_ns: 2_000_000_000,
            key,
            ifindex: 3,
            label: Label::Voip,
            action: Action::Blocked,
            basis: Basis::Rtp,
            reason: "rtp".into(),
            rule: "guest".into(),
            session: SessionId(0xabc),
            conversations: vec![key],
            pps: 100.0,
            mean_size: 160.0,
            duration_s: 1.0,
            first_seen_ns: 1_000_000_000,
            last_seen_ns: 2_000_000_000,
            packets: [50, 50],
            bytes: [8000, 8000],
        }
    }

    /// Writes one release in `format`; returns the event line and the call record.
    fn write(format: Format, pseudo: Option<Pseudonymizer>) -> (serde_json::Value, serde_json::Value) {
        let dir = std::env::temp_dir().join(format!("vd-outputs-{}-{format:?}-{}", std::process::id(), pseudo.is_some()));
        let (events, records) = (dir.join("events"), dir.join("records"));
        let mut out = Outputs::new(Some(&events), format, Some(&records), pseudo).unwrap();
        out.event(&release(), "eth1", |ns| 1_700_000_000_000_000_000 + ns).unwrap();
        drop(out);
        let read = |p: &Path| serde_json::from_str(std::fs::read_to_string(p).unwrap().trim()).unwrap();
        let r = (read(&events), read(&records));
        let _ = std::fs::remove_dir_all(&dir);
        r
    }

    #[test]
    fn eve_lines_carry_suricatas_fields_and_the_community_id() {
        let (e, r) = write(Format::Eve, None);
        // The specification's vector for this 5-tuple.
        let id = "1:d/FP5EW3wiY1vCndhwleRRKHowQ=";
        for (line, kind) in [(&e, "voip"), (&r, "voip_call")] {
            assert_eq!(line["event_type"], kind);
            assert_eq!((line["src_ip"].as_str(), line["src_port"].as_u64()), (Some("192.168.1.52"), Some(54585)));
            assert_eq!((line["dest_ip"].as_str(), line["dest_port"].as_u64()), (Some("8.8.8.8"), Some(53)));
            assert_eq!(line["proto"], "UDP");
            assert_eq!(line["community_id"], id);
            assert!(line["timestamp"].as_str().unwrap().ends_with("+0000"), "{line}");
            assert_eq!(line[kind]["session"], "000000000abc");
        }
        assert_eq!(e["in_iface"], "eth1");
        assert_eq!(e["voip"]["event"], "release");
        assert_eq!(r["voip_call"]["packets_ab"], 50);
        assert_eq!((e["voip"]["rule"].as_str(), r["voip_call"]["rule"].as_str()), (Some("guest"), Some("guest")));
    }

    #[test]
    fn json_events_and_records_carry_the_community_id() {
        let (e, r) = write(Format::Json, None);
        assert_eq!(e["community_id"], "1:d/FP5EW3wiY1vCndhwleRRKHowQ=");
        assert_eq!(r["community_id"], "1:d/FP5EW3wiY1vCndhwleRRKHowQ=");
    }

    #[test]
    fn pseudonymised_output_gives_away_neither_addresses_nor_community_ids() {
        for format in [Format::Json, Format::Eve] {
            let (e, r) = write(format, Some(Pseudonymizer::new("k")));
            for line in [&e, &r] {
                let text = line.to_string();
                assert!(!text.contains("192.168.1.52") && !text.contains("8.8.8.8"), "{text}");
                assert!(!text.contains("community_id"), "{text}");
            }
            if format == Format::Eve {
                assert!(e["src_ip"].as_str().unwrap().starts_with("ip-"));
            }
        }
    }
}
