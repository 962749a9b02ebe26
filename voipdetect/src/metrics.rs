//! The Prometheus text endpoint (`--metrics ADDR`): counters from the
//! kernel, the controller's view, and its own cost. Encoded with the
//! prometheus-client crate; served by a minimal HTTP/1.1 responder.

use std::sync::{Arc, Mutex, atomic::AtomicU64};

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use voipdetect_common::Stat;

use crate::{
    datapath::Stats,
    event::{Event, EventKind, Label},
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerdictLabels {
    kind: &'static str,
    basis: &'static str,
    action: &'static str,
}

/// Counts of what the controller tracks.
#[derive(Clone, Copy, Debug, Default)]
pub struct Tracked {
    pub conversations: usize,
    pub sessions: usize,
    pub blocked: usize,
}

/// Every metric, cheap to clone into the poll loop.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
    packets: Family<ReasonLabel, Counter>,
    verdicts: Family<VerdictLabels, Counter>,
    flows: Gauge,
    conversations: Gauge,
    sessions: Gauge,
    blocked: Gauge,
    poll_seconds: Gauge<f64, AtomicU64>,
    map_fill: Gauge<f64, AtomicU64>,
    last: Arc<Mutex<Stats>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut r = Registry::with_prefix("voipdetect");
        let m = Self {
            registry: Arc::new(Mutex::new(Registry::default())),
            packets: Family::default(),
            verdicts: Family::default(),
            flows: Gauge::default(),
            conversations: Gauge::default(),
            sessions: Gauge::default(),
            blocked: Gauge::default(),
            poll_seconds: Gauge::default(),
            map_fill: Gauge::default(),
            last: Arc::new(Mutex::new(Stats::default())),
        };
        r.register("packets", "Packets the XDP program saw, by outcome or event", m.packets.clone());
        r.register("verdicts", "Verdicts made, by kind, basis and action", m.verdicts.clone());
        r.register("flows_tracked", "Direction-flows in the kernel flow table", m.flows.clone());
        r.register("conversations", "Conversations the controller keeps state for", m.conversations.clone());
        r.register("sessions", "Call sessions the controller keeps: calls, and hosts still held after one", m.sessions.clone());
        r.register("blocked_conversations", "Conversations blocked now", m.blocked.clone());
        r.register("poll_duration_seconds", "Duration of the latest poll", m.poll_seconds.clone());
        r.register("flow_table_fill_ratio", "Tracked direction-flows over the flow table's capacity", m.map_fill.clone());
        *m.registry.lock().expect("fresh mutex") = r;
        m
    }

    /// Updates after a poll.
    /// What the controller tracks after a poll.
    pub fn poll(&self, stats: &Stats, flows: usize, capacity: u32, tracked: Tracked, seconds: f64) {
        if let Ok(mut last) = self.last.lock() {
            let d = stats.since(&last);
            for s in Stat::ALL {
                self.packets.get_or_create(&ReasonLabel { reason: s.name() }).inc_by(d.get(s));
            }
            *last = stats.clone();
        }
        self.flows.set(flows as i64);
        self.conversations.set(tracked.conversations as i64);
        self.sessions.set(tracked.sessions as i64);
        self.blocked.set(tracked.blocked as i64);
        self.poll_seconds.set(seconds);
        self.map_fill.set(flows as f64 / f64::from(capacity.max(1)));
    }

    pub fn event(&self, e: &Event) {
        if e.kind != EventKind::Verdict {
            return;
        }
        let kind = if e.label == Label::Media { "one_way" } else { "voip" };
        let action = e.action.name();
        self.verdicts.get_or_create(&VerdictLabels { kind, basis: e.basis.name(), action }).inc();
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Ok(r) = self.registry.lock() {
            let _ = encode(&mut out, &r);
        }
        out
    }

    /// Serves `GET /metrics` on `listener` until the task is dropped.
    pub async fn serve(self, listener: tokio::net::TcpListener) {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else { continue };
            let body = self.render();
            let mut req = [0u8; 1024];
            let n =
                tokio::time::timeout(std::time::Duration::from_secs(2), sock.read(&mut req)).await.ok().and_then(Result::ok).unwrap_or(0);
            let line = String::from_utf8_lossy(&req[..n]);
            let ok = line.starts_with("GET /metrics") || line.starts_with("GET / ");
            let resp = if ok {
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/openmetrics-text; version=1.0.0; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
            } else {
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_owned()
            };
            let _ = sock.write_all(resp.as_bytes()).await;
        }
    }
}
