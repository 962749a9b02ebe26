//! Settings of `voipdetect run` and `replay`, merged in one place: built-in
//! defaults, then a TOML file (`--config`), then the environment, then
//! command-line flags ([`RunFlags`], [`DetectFlags`]). Every value is
//! checked before anything is loaded or attached; a bad one is a one-line
//! error naming its key.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{anyhow, bail};
use ipnet::IpNet;
use serde::Deserialize;
use voipdetect_common::maps::{DEFAULT_BLOCK_ENTRIES, DEFAULT_FLOW_ENTRIES};

use crate::{
    classifier::Thresholds,
    clock::{NS_PER_SEC, ns},
    controller::{self, DEFAULT_POLL_NS},
    datapath::pins::DEFAULT_PIN_DIR,
    event::Mode,
    policy::{Allowlist, Policy, Rule, Schedule},
    report::Format,
};

/// The environment variable that holds the pseudonym key.
pub const PSEUDONYM_KEY_ENV: &str = "VOIPDETECT_PSEUDONYM_KEY";

/// Everything `run` needs, resolved.
#[derive(Clone, Debug)]
pub struct Settings {
    pub interfaces: Vec<String>,
    pub mode: Mode,
    pub poll_interval: Duration,
    pub window: Duration,
    pub ttl: Duration,
    pub idle_timeout: Duration,
    /// How long a call's host stays under suspicion after its last packet.
    pub hold: Duration,
    pub block_one_way: bool,
    pub flow_entries: u32,
    pub block_entries: u32,
    pub thresholds: Thresholds,
    pub allowlist: Allowlist,
    /// Ordered rules (`[[rules]]`); `mode` is the action when none matches.
    pub rules: Vec<Rule>,
    /// The DSCP that `mark` writes.
    pub mark_dscp: u8,
    /// How events are written: text, JSON lines, or EVE.
    pub format: Format,
    /// Events to this file instead of stdout.
    pub events: Option<PathBuf>,
    /// One record per call when it ends or is released.
    pub call_records: Option<PathBuf>,
    /// Prometheus text endpoint.
    pub metrics: Option<SocketAddr>,
    pub pseudonymize_ips: bool,
    pub pseudonym_key: Option<String>,
    /// Pin maps and links here (None: nothing pinned).
    pub pin_dir: Option<PathBuf>,
    /// Leave the program attached and pinned when the controller exits.
    pub keep_attached: bool,
    pub duration: Option<Duration>,
    /// The flags `run` was started with, when they name a configuration
    /// file: what SIGHUP reads again.
    pub reload_from: Option<Box<RunFlags>>,
}

impl Default for Settings {
    fn default() -> Self {
        let c = controller::Config::default();
        Self {
            interfaces: Vec::new(),
            mode: Mode::Monitor,
            poll_interval: Duration::from_nanos(DEFAULT_POLL_NS),
            window: Duration::from_nanos(c.window_ns),
            ttl: Duration::from_nanos(c.ttl_ns),
            idle_timeout: Duration::from_nanos(c.idle_ns),
            hold: Duration::from_nanos(c.hold_ns),
            block_one_way: false,
            flow_entries: DEFAULT_FLOW_ENTRIES,
            block_entries: DEFAULT_BLOCK_ENTRIES,
            thresholds: Thresholds::default(),
            allowlist: Allowlist::default(),
            rules: Vec::new(),
            mark_dscp: voipdetect_common::dscp::DSCP_EF,
            format: Format::Text,
            events: None,
            call_records: None,
            metrics: None,
            pseudonymize_ips: false,
            pseudonym_key: None,
            pin_dir: Some(PathBuf::from(DEFAULT_PIN_DIR)),
            keep_attached: false,
            duration: None,
            reload_from: None,
        }
    }
}

/// Detection settings the live and the offline driver share.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct DetectFlags {
    /// How often the flow map is read (replay: on the capture's clock) [default: 250ms].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub poll_interval: Option<Duration>,
    /// Classification window [default: 1s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub window: Option<Duration>,
    /// How long a verdict (and a block) lasts after the call's last packet [default: 60s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub ttl: Option<Duration>,
    /// Forget conversations idle this long [default: 30s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub idle_timeout: Option<Duration>,
    /// After a call's last packet, how long its host stays under suspicion (and, in block mode, its socket and relays held) [default: 2m].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub hold: Option<Duration>,
}

/// The flags of `voipdetect run`; each overrides the configuration file.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct RunFlags {
    /// TOML configuration; flags given here override it.
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Interface to attach to; repeat for each side of a gateway.
    #[arg(long = "iface", value_name = "IF")]
    pub ifaces: Vec<String>,
    /// monitor: report calls; block: also drop them; mark: rewrite their DSCP so the next hops prioritise them [default: monitor].
    #[arg(long, value_enum)]
    pub mode: Option<Mode>,
    /// The DSCP mark mode writes, 0-63 [default: 46, Expedited Forwarding].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(0..=63))]
    pub mark_dscp: Option<u8>,
    #[command(flatten)]
    pub detect: DetectFlags,
    /// Also block media flowing one way only (music on hold, broadcast legs).
    #[arg(long)]
    pub block_one_way: bool,
    /// Capacity of the kernel flow table (direction-flows).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub flow_entries: Option<u32>,
    /// Capacity of the kernel blocklist.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub block_entries: Option<u32>,
    /// One JSON object per event instead of text lines (short for --format json; --format wins).
    #[arg(long)]
    pub json: bool,
    /// Events as text, json, or eve (Suricata's EVE layout, with Community IDs) [default: text].
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub format: Option<Format>,
    /// Write events to this file (appended) instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub events: Option<PathBuf>,
    /// Write one record per call, when it ends or is released, to this file (appended).
    #[arg(long, value_name = "FILE")]
    pub call_records: Option<PathBuf>,
    /// Serve Prometheus metrics on this address (e.g. 127.0.0.1:9464).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,
    /// Replace addresses in events and records by a keyed hash (key: outputs.pseudonym_key or $VOIPDETECT_PSEUDONYM_KEY).
    #[arg(long)]
    pub pseudonymize_ips: bool,
    /// Pin maps and links here, and take over what an earlier run left there.
    #[arg(long, value_name = "DIR")]
    pub pin_dir: Option<PathBuf>,
    /// Pin nothing: the program lives and dies with this process.
    #[arg(long, conflicts_with = "pin_dir")]
    pub no_pin: bool,
    /// On exit leave the program attached with its pinned maps (for a restart); default: detach and unpin.
    #[arg(long)]
    pub keep_attached: bool,
    /// Stop after this long instead of waiting for a signal.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,
}

impl DetectFlags {
    fn apply(&self, s: &mut Settings) {
        if let Some(v) = self.poll_interval {
            s.poll_interval = v;
        }
        if let Some(v) = self.window {
            s.window = v;
        }
        if let Some(v) = self.ttl {
            s.ttl = v;
        }
        if let Some(v) = self.idle_timeout {
            s.idle_timeout = v;
        }
        if let Some(v) = self.hold {
            s.hold = v;
        }
    }
}

/// The TOML file, every key optional.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct File {
    interfaces: Option<Vec<String>>,
    mode: Option<String>,
    mark_dscp: Option<u8>,
    poll_interval: Option<String>,
    window: Option<String>,
    ttl: Option<String>,
    idle_timeout: Option<String>,
    hold: Option<String>,
    block_one_way: Option<bool>,
    pin_dir: Option<String>,
    keep_attached: Option<bool>,
    maps: Option<Maps>,
    allowlist: Option<AllowFile>,
    rules: Option<Vec<RuleFile>>,
    outputs: Option<Outputs>,
    thresholds: Option<ThresholdFile>,
}

/// One `[[rules]]` entry.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    name: Option<String>,
    action: String,
    clients: Option<Vec<String>>,
    servers: Option<Vec<String>>,
    networks: Option<Vec<String>>,
    ports: Option<Vec<u16>>,
    interfaces: Option<Vec<String>>,
    days: Option<Vec<String>>,
    hours: Option<String>,
    timezone: Option<String>,
}

/// A network ("10.0.0.0/8") or a single address; `key` names it in errors.
fn parse_net(key: &str, c: &str) -> anyhow::Result<IpNet> {
    c.parse::<IpNet>().or_else(|_| c.parse::<std::net::IpAddr>().map(IpNet::from)).map_err(|e| key_err(key, format!("{c:?}: {e}")))
}

impl RuleFile {
    fn rule(self, i: usize) -> anyhow::Result<Rule> {
        let at = |k: &str| format!("rules[{i}].{k}");
        let action = self.action.parse().map_err(|e| key_err(&at("action"), e))?;
        let mut r = Rule::new(self.name.unwrap_or_else(|| format!("rule {}", i + 1)), action);
        let nets = |name: &str, v: Option<Vec<String>>| -> anyhow::Result<Vec<IpNet>> {
            v.unwrap_or_default().iter().enumerate().map(|(j, c)| parse_net(&format!("{}[{j}]", at(name)), c)).collect()
        };
        r.clients = nets("clients", self.clients)?;
        r.servers = nets("servers", self.servers)?;
        r.networks = nets("networks", self.networks)?;
        r.ports = self.ports.unwrap_or_default();
        r.interfaces = self.interfaces.unwrap_or_default();
        if self.days.is_some() || self.hours.is_some() || self.timezone.is_some() {
            let days = self.days.unwrap_or_default();
            r.schedule =
                Some(Schedule::parse(&days, self.hours.as_deref(), self.timezone.as_deref()).map_err(|(part, e)| key_err(&at(part), e))?);
        }
        Ok(r)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Maps {
    flow_entries: Option<u32>,
    block_entries: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AllowFile {
    cidrs: Option<Vec<String>>,
    ports: Option<Vec<u16>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Outputs {
    json: Option<bool>,
    format: Option<String>,
    events: Option<String>,
    call_records: Option<String>,
    metrics: Option<String>,
    pseudonymize_ips: Option<bool>,
    pseudonym_key: Option<String>,
}

/// Overrides for [`Thresholds`], by the same names.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ThresholdFile {
    min_pps: Option<f64>,
    max_pps: Option<f64>,
    max_mean_size: Option<f64>,
    min_cadence_share: Option<f64>,
    jitter_min_share: Option<f64>,
    max_off_clock_gaps: Option<u32>,
    max_off_clock_share: Option<f64>,
    max_burst_share: Option<f64>,
    min_size_stability: Option<f64>,
    max_rate_ratio: Option<f64>,
    max_size_ratio: Option<f64>,
    quiet_min_pps: Option<f64>,
    quiet_max_size: Option<f64>,
    windows_needed: Option<u32>,
    rtp_min_in_seq: Option<u32>,
    rtp_min_pps: Option<f64>,
    held_rtp_in_seq: Option<u32>,
    held_min_packets: Option<u32>,
    held_min_cadence_share: Option<f64>,
    one_way_max_reverse: Option<u32>,
    one_way_settle_s: Option<f64>,
    one_way_ended_s: Option<f64>,
    hinted_within_s: Option<f64>,
    min_packets_tracked: Option<u32>,
}

/// A duration such as "250ms" or "60s", greater than zero.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 250ms, 60s, 5m)"))?;
    if d.is_zero() { Err("must be greater than zero".into()) } else { Ok(d) }
}

fn key_err(key: &str, msg: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("config key {key}: {msg}")
}

impl Settings {
    /// `run`'s settings: the defaults, the file `flags.config` names, the
    /// pseudonym key from the environment (`env_key`, the value of
    /// [`PSEUDONYM_KEY_ENV`]), then the flags, each over the one before.
    pub fn resolve(flags: RunFlags, env_key: Option<String>) -> anyhow::Result<Self> {
        let mut s = match &flags.config {
            Some(p) => Settings::from_file(p)?,
            None => Settings::default(),
        };
        if flags.config.is_some() {
            s.reload_from = Some(Box::new(flags.clone()));
        }
        if !flags.ifaces.is_empty() {
            s.interfaces = flags.ifaces;
        }
        if let Some(m) = flags.mode {
            s.mode = m;
        }
        if let Some(d) = flags.mark_dscp {
            s.mark_dscp = d;
        }
        flags.detect.apply(&mut s);
        s.block_one_way |= flags.block_one_way;
        if let Some(v) = flags.flow_entries {
            s.flow_entries = v;
        }
        if let Some(v) = flags.block_entries {
            s.block_entries = v;
        }
        if flags.json {
            s.format = Format::Json;
        }
        if let Some(f) = flags.format {
            s.format = f;
        }
        if flags.events.is_some() {
            s.events = flags.events;
        }
        if flags.call_records.is_some() {
            s.call_records = flags.call_records;
        }
        if flags.metrics.is_some() {
            s.metrics = flags.metrics;
        }
        s.pseudonymize_ips |= flags.pseudonymize_ips;
        if let Some(k) = env_key {
            s.pseudonym_key = Some(k);
        }
        if flags.no_pin {
            s.pin_dir = None;
        } else if flags.pin_dir.is_some() {
            s.pin_dir = flags.pin_dir;
        }
        s.keep_attached |= flags.keep_attached;
        if s.keep_attached && s.pin_dir.is_none() {
            bail!("--keep-attached needs pinning (drop --no-pin)");
        }
        if flags.duration.is_some() {
            s.duration = flags.duration;
        }
        Ok(s)
    }

    /// `replay`'s settings: the defaults and the detection flags.
    pub fn for_replay(detect: &DetectFlags) -> Self {
        let mut s = Settings::default();
        detect.apply(&mut s);
        s
    }

    /// Reads a TOML file over the defaults.
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| anyhow!("{}: cannot read: {e}", path.display()))?;
        let de = toml::Deserializer::parse(&text).map_err(|e| anyhow!("{}: {}", path.display(), one_line(&e.to_string())))?;
        let file: File = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            anyhow!("{}: config key {key}: {}", path.display(), one_line(&e.inner().to_string()))
        })?;
        let mut s = Settings::default();
        s.apply(file).map_err(|e| anyhow!("{}: {e}", path.display()))?;
        Ok(s)
    }

    fn apply(&mut self, f: File) -> anyhow::Result<()> {
        let dur = |key: &str, v: Option<String>, slot: &mut Duration| -> anyhow::Result<()> {
            if let Some(v) = v {
                *slot = parse_duration(&v).map_err(|e| key_err(key, format!("{v:?}: {e}")))?;
            }
            Ok(())
        };
        if let Some(v) = f.interfaces {
            self.interfaces = v;
        }
        if let Some(m) = f.mode {
            self.mode = m.parse().map_err(|e| key_err("mode", e))?;
        }
        if let Some(d) = f.mark_dscp {
            if d > voipdetect_common::dscp::DSCP_MAX {
                return Err(key_err("mark_dscp", format!("{d} is not a DSCP (0-63)")));
            }
            self.mark_dscp = d;
        }
        dur("poll_interval", f.poll_interval, &mut self.poll_interval)?;
        dur("window", f.window, &mut self.window)?;
        dur("ttl", f.ttl, &mut self.ttl)?;
        dur("idle_timeout", f.idle_timeout, &mut self.idle_timeout)?;
        dur("hold", f.hold, &mut self.hold)?;
        if let Some(v) = f.block_one_way {
            self.block_one_way = v;
        }
        if let Some(v) = f.pin_dir {
            self.pin_dir = if v.is_empty() { None } else { Some(v.into()) };
        }
        if let Some(v) = f.keep_attached {
            self.keep_attached = v;
        }
        if let Some(m) = f.maps {
            if let Some(v) = m.flow_entries {
                self.flow_entries = v;
            }
            if let Some(v) = m.block_entries {
                self.block_entries = v;
            }
        }
        if let Some(a) = f.allowlist {
            for (i, c) in a.cidrs.unwrap_or_default().iter().enumerate() {
                self.allowlist.cidrs.push(parse_net(&format!("allowlist.cidrs[{i}]"), c)?);
            }
            self.allowlist.ports = a.ports.unwrap_or_default();
        }
        if let Some(rules) = f.rules {
            self.rules = rules.into_iter().enumerate().map(|(i, r)| r.rule(i)).collect::<anyhow::Result<_>>()?;
        }
        if let Some(o) = f.outputs {
            if o.json.is_some() && o.format.is_some() {
                return Err(key_err("outputs.json", "give outputs.format or outputs.json, not both"));
            }
            if let Some(v) = o.json {
                self.format = if v { Format::Json } else { Format::Text };
            }
            if let Some(f) = o.format {
                self.format = f.parse().map_err(|e| key_err("outputs.format", e))?;
            }
            if let Some(v) = o.events {
                self.events = (v != "-").then(|| v.into());
            }
            self.call_records = o.call_records.map(Into::into).or(self.call_records.take());
            if let Some(m) = o.metrics {
                self.metrics = Some(m.parse().map_err(|e| key_err("outputs.metrics", format!("{m:?}: {e} (example: 127.0.0.1:9464)")))?);
            }
            if let Some(v) = o.pseudonymize_ips {
                self.pseudonymize_ips = v;
            }
            self.pseudonym_key = o.pseudonym_key.or(self.pseudonym_key.take());
        }
        if let Some(t) = f.thresholds {
            let th = &mut self.thresholds;
            macro_rules! set {
                ($($f:ident),*) => { $( if let Some(v) = t.$f { th.$f = v; } )* };
            }
            set!(
                min_pps,
                max_pps,
                max_mean_size,
                min_cadence_share,
                jitter_min_share,
                max_off_clock_gaps,
                max_off_clock_share,
                max_burst_share,
                min_size_stability,
                max_rate_ratio,
                max_size_ratio,
                quiet_min_pps,
                quiet_max_size,
                windows_needed,
                rtp_min_in_seq,
                rtp_min_pps,
                held_rtp_in_seq,
                held_min_packets,
                held_min_cadence_share,
                one_way_max_reverse,
                one_way_settle_s,
                one_way_ended_s,
                hinted_within_s,
                min_packets_tracked
            );
        }
        Ok(())
    }

    /// Checks what the types cannot. Call after flags are applied.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.interfaces.is_empty() {
            bail!("no interface given: use --iface IF or interfaces = [...] in the config");
        }
        if self.flow_entries == 0 {
            return Err(key_err("maps.flow_entries", "must be at least 1"));
        }
        if self.block_entries == 0 {
            return Err(key_err("maps.block_entries", "must be at least 1"));
        }
        if self.poll_interval > self.window {
            return Err(key_err("poll_interval", "must not be longer than window"));
        }
        if self.pseudonymize_ips && self.pseudonym_key.as_deref().is_none_or(str::is_empty) {
            return Err(key_err("outputs.pseudonym_key", "required (non-empty) when pseudonymize_ips is on"));
        }
        let t = &self.thresholds;
        for (k, v) in [
            ("min_cadence_share", t.min_cadence_share),
            ("jitter_min_share", t.jitter_min_share),
            ("max_off_clock_share", t.max_off_clock_share),
            ("max_burst_share", t.max_burst_share),
            ("min_size_stability", t.min_size_stability),
            ("held_min_cadence_share", t.held_min_cadence_share),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(key_err(&format!("thresholds.{k}"), format!("{v} is not a share between 0 and 1")));
            }
        }
        for (k, v) in [
            ("min_pps", t.min_pps),
            ("max_pps", t.max_pps),
            ("max_mean_size", t.max_mean_size),
            ("max_rate_ratio", t.max_rate_ratio),
            ("max_size_ratio", t.max_size_ratio),
            ("rtp_min_pps", t.rtp_min_pps),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(key_err(&format!("thresholds.{k}"), format!("{v} must be a positive number")));
            }
        }
        if t.min_pps >= t.max_pps {
            return Err(key_err("thresholds.min_pps", format!("{} must be below max_pps ({})", t.min_pps, t.max_pps)));
        }
        if t.windows_needed == 0 || t.rtp_min_in_seq == 0 || t.held_rtp_in_seq == 0 || t.held_min_packets < 3 {
            return Err(key_err(
                "thresholds",
                "windows_needed, rtp_min_in_seq and held_rtp_in_seq must be at least 1, held_min_packets at least 3",
            ));
        }
        // A run of windows is counted in a byte per conversation.
        if t.windows_needed > u32::from(u8::MAX) {
            return Err(key_err("thresholds.windows_needed", format!("{} must be at most 255", t.windows_needed)));
        }
        Ok(())
    }

    /// The rules in order, the allowlist's first, `mode` the default.
    /// Interface names are not resolved yet.
    pub fn policy(&self) -> Policy {
        let mut p = Policy { rules: self.rules.clone(), default: self.mode.into() };
        p.push_allowlist(&self.allowlist);
        p
    }

    pub fn controller(&self) -> controller::Config {
        controller::Config {
            policy: self.policy(),
            window_ns: ns(self.window),
            ttl_ns: ns(self.ttl),
            idle_ns: ns(self.idle_timeout).max(NS_PER_SEC),
            hold_ns: ns(self.hold),
            session_salt: 0,
            block_one_way: self.block_one_way,
            thresholds: self.thresholds.clone(),
            mark_dscp: self.mark_dscp,
        }
    }
}

fn one_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('|') && !l.chars().all(|c| c == '^' || c == ' '))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> anyhow::Result<Settings> {
        let dir = std::env::temp_dir().join(format!("vd-config-test-{}-{}", std::process::id(), text.len()));
        std::fs::write(&dir, text)?;
        let r = Settings::from_file(&dir).and_then(|s| s.validate().map(|()| s));
        let _ = std::fs::remove_file(&dir);
        r
    }

    #[test]
    fn a_full_file_is_read() {
        let s = parse(
            r#"
            interfaces = ["eth1", "eth2"]
            mode = "block"
            ttl = "2m"
            [maps]
            flow_entries = 1000
            [allowlist]
            cidrs = ["10.1.0.0/16", "2001:db8::1"]
            ports = [5060]
            [outputs]
            json = true
            metrics = "127.0.0.1:9464"
            pseudonymize_ips = true
            pseudonym_key = "k"
            [thresholds]
            min_pps = 8.0
            "#,
        )
        .unwrap();
        assert_eq!(s.interfaces, ["eth1", "eth2"]);
        assert_eq!((s.mode, s.ttl, s.flow_entries), (Mode::Block, Duration::from_secs(120), 1000));
        assert_eq!(s.allowlist.cidrs.len(), 2);
        assert_eq!(s.thresholds.min_pps, 8.0);
        assert!(s.format == Format::Json && s.pseudonymize_ips);
    }

    #[test]
    fn rules_are_read_in_order_after_the_allowlist() {
        let s = parse(
            r#"
            interfaces = ["eth1"]
            mode = "monitor"
            [allowlist]
            ports = [5060]
            [[rules]]
            name = "guest"
            action = "block"
            networks = ["10.20.0.0/16"]
            interfaces = ["eth1"]
            days = ["weekdays", "sat"]
            hours = "06:00-23:00"
            timezone = "Europe/Berlin"
            [[rules]]
            action = "allow"
            servers = ["2001:db8::1"]
            "#,
        )
        .unwrap();
        let p = s.policy();
        let names: Vec<&str> = p.rules.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["allowlist", "guest", "rule 2"]);
        assert_eq!(p.default, crate::policy::RuleAction::Monitor);
        let guest = &p.rules[1];
        let sched = guest.schedule.as_ref().unwrap();
        assert_eq!((sched.days, sched.from_min, sched.to_min), ([true, true, true, true, true, true, false], 360, 1380));
        assert_eq!(guest.interfaces, ["eth1"]);
        assert_eq!(p.rules[2].servers, ["2001:db8::1/128".parse::<IpNet>().unwrap()]);
    }

    /// The annotated example the README points to stays valid.
    #[test]
    fn the_example_configuration_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/voipdetect.toml");
        let s = Settings::from_file(&path).unwrap();
        s.validate().unwrap();
        assert_eq!(s.format, Format::Json);
        // Guest blocked, staff prioritised, the allowlist's two rules first.
        let p = s.policy();
        let rules: Vec<(&str, crate::policy::RuleAction)> = p.rules.iter().map(|r| (r.name.as_str(), r.action)).collect();
        use crate::policy::RuleAction::{Allow, Block, Mark};
        assert_eq!(rules, [("allowlist", Allow), ("allowlist", Allow), ("guest", Block), ("staff", Mark)]);
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            ("interfaces = [\"a\"]\nttl = \"soon\"", "ttl"),
            ("interfaces = [\"a\"]\nmode = \"drop\"", "mode"),
            ("interfaces = [\"a\"]\nbogus = 1", "bogus"),
            ("interfaces = [\"a\"]\n[maps]\nflow_entries = -1", "maps.flow_entries"),
            ("interfaces = [\"a\"]\n[maps]\nflow_entries = 0", "maps.flow_entries"),
            ("interfaces = [\"a\"]\n[allowlist]\ncidrs = [\"10.0.0.0/33\"]", "allowlist.cidrs[0]"),
            ("interfaces = [\"a\"]\n[outputs]\nmetrics = \"localhost\"", "outputs.metrics"),
            ("interfaces = [\"a\"]\n[thresholds]\nmin_size_stability = 2.0", "thresholds.min_size_stability"),
            ("interfaces = [\"a\"]\n[thresholds]\nmin_pps = 500.0", "thresholds.min_pps"),
            ("interfaces = [\"a\"]\n[thresholds]\nwindows_needed = 256", "thresholds.windows_needed"),
            ("interfaces = [\"a\"]\n[outputs]\npseudonymize_ips = true", "outputs.pseudonym_key"),
            ("interfaces = [\"a\"]\n[outputs]\nformat = \"xml\"", "outputs.format"),
            ("interfaces = [\"a\"]\nmark_dscp = 64", "mark_dscp"),
            ("interfaces = [\"a\"]\n[[rules]]\naction = \"drop\"", "rules[0].action"),
            ("interfaces = [\"a\"]\n[[rules]]\naction = \"block\"\nclients = [\"10.0.0.0/99\"]", "rules[0].clients[0]"),
            ("interfaces = [\"a\"]\n[[rules]]\naction = \"block\"\nhours = \"9-5\"", "rules[0].hours"),
            ("interfaces = [\"a\"]\n[[rules]]\naction = \"block\"\ndays = [\"someday\"]", "rules[0].days"),
            ("interfaces = [\"a\"]\n[[rules]]\naction = \"block\"\ntimezone = \"Mars/Base\"", "rules[0].timezone"),
            ("interfaces = [\"a\"]\n[[rules]]\naction = \"block\"\nsubnet = []", "subnet"),
            ("interfaces = [\"a\"]\n[outputs]\nformat = \"eve\"\njson = true", "outputs.json"),
        ];
        for (text, key) in cases {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(key), "{text:?}: {e}");
            assert_eq!(e.lines().count(), 1, "{e}");
        }
    }

    fn file(text: &str) -> PathBuf {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("vd-config-flags-{}-{n}.toml", std::process::id()));
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn flags_override_the_environment_which_overrides_the_file() {
        let path = file(
            r#"
            interfaces = ["eth1"]
            mode = "block"
            ttl = "2m"
            poll_interval = "100ms"
            [outputs]
            pseudonym_key = "from-file"
            "#,
        );
        // The file alone.
        let s = Settings::resolve(RunFlags { config: Some(path.clone()), ..Default::default() }, None).unwrap();
        assert_eq!((s.mode, s.ttl, s.poll_interval), (Mode::Block, Duration::from_secs(120), Duration::from_millis(100)));
        assert_eq!(s.pseudonym_key.as_deref(), Some("from-file"));
        assert_eq!(s.pin_dir.as_deref(), Some(Path::new(DEFAULT_PIN_DIR)));
        // The environment over the file, the flags over both.
        let flags = RunFlags {
            config: Some(path.clone()),
            ifaces: vec!["eth2".into(), "eth3".into()],
            mode: Some(Mode::Monitor),
            detect: DetectFlags { ttl: Some(Duration::from_secs(5)), ..Default::default() },
            no_pin: true,
            ..Default::default()
        };
        let s = Settings::resolve(flags, Some("from-env".into())).unwrap();
        assert_eq!(s.interfaces, ["eth2", "eth3"]);
        assert_eq!((s.mode, s.ttl, s.poll_interval), (Mode::Monitor, Duration::from_secs(5), Duration::from_millis(100)));
        assert_eq!(s.pseudonym_key.as_deref(), Some("from-env"));
        assert_eq!(s.pin_dir, None);
        // Keeping the program needs its pins.
        let flags = RunFlags { config: Some(path.clone()), no_pin: true, keep_attached: true, ..Default::default() };
        assert!(Settings::resolve(flags, None).unwrap_err().to_string().contains("--keep-attached"));
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn replay_takes_the_defaults_and_its_detection_flags() {
        let s = Settings::for_replay(&DetectFlags { window: Some(Duration::from_secs(2)), ..Default::default() });
        assert_eq!((s.window, s.poll_interval), (Duration::from_secs(2), Duration::from_nanos(DEFAULT_POLL_NS)));
        assert_eq!(s.controller().window_ns, 2 * NS_PER_SEC);
    }
}
