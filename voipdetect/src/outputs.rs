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
    key::{addr, endpoint, port, proto_name},
    report::EventRecord,
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
        let ip = addr(key, src);
        let bytes: Vec<u8> = match ip {
            std::net::IpAddr::V4(a) => a.octets().to_vec(),
            std::net::IpAddr::V6(a) => a.octets().to_vec(),
        };
        let h = blake3::keyed_hash(&self.key, &bytes);
        let hex: String = h.as_bytes()[..8].iter().map(|b| format!("{b:02x}")).collect();
        format!("ip-{hex}:{}", port(key, src))
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
    /// The call's session, and every conversation it spans.
    pub session: String,
    pub conversations: Vec<String>,
}

/// The controller's writers.
pub struct Outputs {
    events: Box<dyn Write + Send>,
    json: bool,
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
    pub fn new(events: Option<&Path>, json: bool, records: Option<&Path>, pseudo: Option<Pseudonymizer>) -> anyhow::Result<Self> {
        let events: Box<dyn Write + Send> = match events {
            Some(p) => Box::new(BufWriter::new(append(p)?)),
            None => Box::new(std::io::stdout()),
        };
        let records = records.map(append).transpose()?.map(BufWriter::new);
        Ok(Self { events, json, records, pseudo })
    }

    fn endpoints(&self, key: &FlowKey) -> (String, String) {
        match &self.pseudo {
            Some(p) => (p.endpoint(key, true), p.endpoint(key, false)),
            None => (endpoint(key, true), endpoint(key, false)),
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
        if self.json {
            serde_json::to_writer(&mut self.events, &rec)?;
            self.events.write_all(b"\n")?;
        } else {
            writeln!(self.events, "{}", rec.text())?;
        }
        self.events.flush()?;
        if e.kind == EventKind::Release
            && let Some(w) = &mut self.records
        {
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
                session: rec.session,
                conversations: rec.conversations,
            };
            serde_json::to_writer(&mut *w, &r)?;
            w.write_all(b"\n")?;
            w.flush()?;
        }
        Ok(())
    }
}
