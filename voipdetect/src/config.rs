//! Settings of `voipdetect run`: built-in defaults, then a TOML file
//! (`--config`), then command-line flags. Every value is checked before
//! anything is loaded or attached; a bad one is a one-line error naming its
//! key.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::{anyhow, bail};
use ipnet::IpNet;
use serde::Deserialize;

use crate::{
    classifier::Thresholds,
    controller::{self, Mode, NS_PER_SEC},
    datapath::LoadOptions,
};

/// Where pinned maps and links live unless told otherwise.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/voipdetect";

/// Everything `run` needs, resolved.
#[derive(Clone, Debug)]
pub struct Settings {
    pub interfaces: Vec<String>,
    pub mode: Mode,
    pub poll_interval: Duration,
    pub window: Duration,
    pub ttl: Duration,
    pub idle_timeout: Duration,
    pub block_one_way: bool,
    pub flow_entries: u32,
    pub block_entries: u32,
    pub thresholds: Thresholds,
    pub allowlist: Allowlist,
    /// JSON lines instead of text for events.
    pub json: bool,
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
}

impl Default for Settings {
    fn default() -> Self {
        let c = controller::Config::default();
        let l = LoadOptions::default();
        Self {
            interfaces: Vec::new(),
            mode: Mode::Monitor,
            poll_interval: Duration::from_millis(250),
            window: Duration::from_nanos(c.window_ns),
            ttl: Duration::from_nanos(c.ttl_ns),
            idle_timeout: Duration::from_nanos(c.idle_ns),
            block_one_way: false,
            flow_entries: l.flow_entries,
            block_entries: l.block_entries,
            thresholds: Thresholds::default(),
            allowlist: Allowlist::default(),
            json: false,
            events: None,
            call_records: None,
            metrics: None,
            pseudonymize_ips: false,
            pseudonym_key: None,
            pin_dir: Some(PathBuf::from(DEFAULT_PIN_DIR)),
            keep_attached: false,
            duration: None,
        }
    }
}

/// Flows never blocked: any endpoint inside one of `cidrs`, or using one of `ports`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Allowlist {
    pub cidrs: Vec<IpNet>,
    pub ports: Vec<u16>,
}

impl Allowlist {
    pub fn is_empty(&self) -> bool {
        self.cidrs.is_empty() && self.ports.is_empty()
    }

    /// Whether the conversation of `key` is exempt.
    pub fn covers(&self, key: &voipdetect_common::FlowKey) -> bool {
        let ports = [key.sport, key.dport];
        if ports.iter().any(|p| self.ports.contains(p)) {
            return true;
        }
        let addrs = [crate::report::addr(key, true), crate::report::addr(key, false)];
        addrs.iter().any(|a| self.cidrs.iter().any(|n| n.contains(a)))
    }
}

/// The TOML file, every key optional.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct File {
    interfaces: Option<Vec<String>>,
    mode: Option<String>,
    poll_interval: Option<String>,
    window: Option<String>,
    ttl: Option<String>,
    idle_timeout: Option<String>,
    block_one_way: Option<bool>,
    pin_dir: Option<String>,
    keep_attached: Option<bool>,
    maps: Option<Maps>,
    allowlist: Option<AllowFile>,
    outputs: Option<Outputs>,
    thresholds: Option<ThresholdFile>,
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
    max_burst_share: Option<f64>,
    min_size_stability: Option<f64>,
    max_rate_ratio: Option<f64>,
    max_size_ratio: Option<f64>,
    quiet_min_pps: Option<f64>,
    quiet_max_size: Option<f64>,
    windows_needed: Option<u32>,
    rtp_min_in_seq: Option<u32>,
    rtp_min_pps: Option<f64>,
    one_way_max_reverse: Option<u32>,
    one_way_settle_s: Option<f64>,
    one_way_ended_s: Option<f64>,
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
    /// Reads a TOML file over the defaults.
    pub fn from_file(path: &std::path::Path) -> anyhow::Result<Self> {
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
            self.mode = match m.as_str() {
                "monitor" => Mode::Monitor,
                "block" => Mode::Block,
                other => return Err(key_err("mode", format!("{other:?} is not one of monitor, block"))),
            };
        }
        dur("poll_interval", f.poll_interval, &mut self.poll_interval)?;
        dur("window", f.window, &mut self.window)?;
        dur("ttl", f.ttl, &mut self.ttl)?;
        dur("idle_timeout", f.idle_timeout, &mut self.idle_timeout)?;
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
                let net = c
                    .parse::<IpNet>()
                    .or_else(|_| c.parse::<std::net::IpAddr>().map(IpNet::from))
                    .map_err(|e| key_err(&format!("allowlist.cidrs[{i}]"), format!("{c:?}: {e}")))?;
                self.allowlist.cidrs.push(net);
            }
            self.allowlist.ports = a.ports.unwrap_or_default();
        }
        if let Some(o) = f.outputs {
            if let Some(v) = o.json {
                self.json = v;
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
                max_burst_share,
                min_size_stability,
                max_rate_ratio,
                max_size_ratio,
                quiet_min_pps,
                quiet_max_size,
                windows_needed,
                rtp_min_in_seq,
                rtp_min_pps,
                one_way_max_reverse,
                one_way_settle_s,
                one_way_ended_s,
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
            ("max_burst_share", t.max_burst_share),
            ("min_size_stability", t.min_size_stability),
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
        if t.windows_needed == 0 || t.rtp_min_in_seq == 0 {
            return Err(key_err("thresholds", "windows_needed and rtp_min_in_seq must be at least 1"));
        }
        Ok(())
    }

    pub fn controller(&self) -> controller::Config {
        let ns = |d: Duration| d.as_nanos().min(u128::from(u64::MAX)) as u64;
        controller::Config {
            mode: self.mode,
            window_ns: ns(self.window),
            ttl_ns: ns(self.ttl),
            idle_ns: ns(self.idle_timeout).max(NS_PER_SEC),
            block_one_way: self.block_one_way,
            thresholds: self.thresholds.clone(),
            allowlist: self.allowlist.clone(),
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
        assert!(s.json && s.pseudonymize_ips);
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
            ("interfaces = [\"a\"]\n[outputs]\npseudonymize_ips = true", "outputs.pseudonym_key"),
        ];
        for (text, key) in cases {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(key), "{text:?}: {e}");
            assert_eq!(e.lines().count(), 1, "{e}");
        }
    }

    #[test]
    fn allowlist_matches_addresses_and_ports() {
        let a = Allowlist { cidrs: vec!["192.0.2.0/24".parse().unwrap()], ports: vec![5060] };
        let mut k = voipdetect_common::FlowKey { family: 4, proto: 17, sport: 40000, dport: 5004, ..Default::default() };
        k.src[..4].copy_from_slice(&[198, 51, 100, 2]);
        k.dst[..4].copy_from_slice(&[203, 0, 113, 9]);
        assert!(!a.covers(&k));
        k.dst[..4].copy_from_slice(&[192, 0, 2, 77]);
        assert!(a.covers(&k));
        k.dst[..4].copy_from_slice(&[203, 0, 113, 9]);
        k.dport = 5060;
        assert!(a.covers(&k));
    }
}
