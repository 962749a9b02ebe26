//! Commands that work on a running controller's pinned maps from another
//! process: `flows`, `block`, `unblock`, `status`, `detach`.

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow, bail};
use serde::Serialize;
use voipdetect_common::{
    BlockEntry, FlowCounters, FlowKey, Stat,
    flow::{FAMILY_V4, FAMILY_V6, PROTO_TCP, PROTO_UDP},
};

use crate::{
    datapath::Maps,
    report::{endpoint, proto_name},
    run::{RunState, monotonic_ns, state_path},
};

/// Parses "udp 192.0.2.2:40004 198.51.100.2:5004" into the key of that
/// direction.
pub fn parse_flow(proto: &str, src: &str, dst: &str) -> anyhow::Result<FlowKey> {
    let proto = match proto.to_ascii_lowercase().as_str() {
        "udp" => PROTO_UDP,
        "tcp" => PROTO_TCP,
        other => bail!("protocol {other:?}: expected udp or tcp"),
    };
    let s: SocketAddr = src.parse().map_err(|e| anyhow!("source {src:?}: {e} (expected ip:port or [ipv6]:port)"))?;
    let d: SocketAddr = dst.parse().map_err(|e| anyhow!("destination {dst:?}: {e} (expected ip:port or [ipv6]:port)"))?;
    let mut k = FlowKey { proto, sport: s.port(), dport: d.port(), ..Default::default() };
    match (s, d) {
        (SocketAddr::V4(a), SocketAddr::V4(b)) => {
            k.family = FAMILY_V4;
            k.src[..4].copy_from_slice(&a.ip().octets());
            k.dst[..4].copy_from_slice(&b.ip().octets());
        }
        (SocketAddr::V6(a), SocketAddr::V6(b)) => {
            k.family = FAMILY_V6;
            k.src = a.ip().octets();
            k.dst = b.ip().octets();
        }
        _ => bail!("source and destination must be of the same address family"),
    }
    Ok(k)
}

/// Lists both directions of a conversation until `ttl` from now.
pub fn block(pin_dir: &Path, key: FlowKey, ttl: Duration) -> anyhow::Result<()> {
    let mut maps = Maps::open_pinned(pin_dir)?;
    let now = monotonic_ns();
    maps.block(&[key, key.reversed()], BlockEntry { expires_ns: now + ttl.as_nanos() as u64, since_ns: now })?;
    println!(
        "blocked {} {} <-> {} for {}",
        proto_name(key.proto),
        endpoint(&key, true),
        endpoint(&key, false),
        humantime::format_duration(ttl)
    );
    Ok(())
}

pub fn unblock(pin_dir: &Path, key: FlowKey) -> anyhow::Result<()> {
    let mut maps = Maps::open_pinned(pin_dir)?;
    maps.unblock(&[key, key.reversed()])?;
    println!("unblocked {} {} <-> {}", proto_name(key.proto), endpoint(&key, true), endpoint(&key, false));
    Ok(())
}

#[derive(Serialize)]
struct FlowRow {
    proto: &'static str,
    src: String,
    dst: String,
    pps: f64,
    mean_size: f64,
    packets: u64,
    bytes: u64,
    age: f64,
    idle: f64,
    blocked_for: Option<f64>,
    dropped: u64,
}

/// The flow table now: rates from two reads `interval` apart.
pub fn flows(pin_dir: &Path, interval: Duration, json: bool) -> anyhow::Result<()> {
    let maps = Maps::open_pinned(pin_dir)?;
    let mut first: HashMap<FlowKey, FlowCounters> = HashMap::new();
    maps.for_each_flow(|k, c| {
        first.insert(*k, *c);
    })?;
    let t0 = Instant::now();
    std::thread::sleep(interval);
    let span = t0.elapsed().as_secs_f64();
    let now = monotonic_ns();
    let blocks: HashMap<FlowKey, BlockEntry> = maps.blocklist()?.into_iter().collect();
    let mut rows = Vec::new();
    maps.for_each_flow(|k, c| {
        let before = first.get(k).filter(|b| b.first_seen_ns == c.first_seen_ns);
        let dp = c.packets.wrapping_sub(before.map_or(c.packets, |b| b.packets));
        let db = c.bytes.wrapping_sub(before.map_or(c.bytes, |b| b.bytes));
        let secs = |ns: u64| ns as f64 / 1e9;
        rows.push(FlowRow {
            proto: proto_name(k.proto),
            src: endpoint(k, true),
            dst: endpoint(k, false),
            pps: f64::from(dp) / span,
            mean_size: if dp > 0 {
                db as f64 / f64::from(dp)
            } else if c.packets > 0 {
                c.bytes as f64 / f64::from(c.packets)
            } else {
                0.0
            },
            packets: u64::from(c.packets) + u64::from(c.empty),
            bytes: c.bytes,
            age: secs(now.saturating_sub(c.first_seen_ns)),
            idle: secs(now.saturating_sub(c.last_seen_ns)),
            blocked_for: blocks.get(k).filter(|b| b.expires_ns > now).map(|b| secs(b.expires_ns - now)),
            dropped: u64::from(c.dropped),
        });
    })?;
    rows.sort_by(|a, b| b.pps.total_cmp(&a.pps).then(b.packets.cmp(&a.packets)));
    if json {
        for r in &rows {
            println!("{}", serde_json::to_string(r)?);
        }
        return Ok(());
    }
    println!(
        "{:<5} {:<46} {:<46} {:>8} {:>7} {:>10} {:>8} {:>7} verdict",
        "proto", "src", "dst", "pps", "size", "packets", "age s", "idle s"
    );
    for r in &rows {
        let verdict = r.blocked_for.map_or(String::new(), |t| format!("blocked {t:.0} s more, {} dropped", r.dropped));
        println!(
            "{:<5} {:<46} {:<46} {:>8.1} {:>7.0} {:>10} {:>8.1} {:>7.1} {verdict}",
            r.proto, r.src, r.dst, r.pps, r.mean_size, r.packets, r.age, r.idle
        );
    }
    println!("{} direction-flows", rows.len());
    Ok(())
}

/// The running controller, its interfaces and the kernel's counters.
pub fn status(pin_dir: &Path, json: bool) -> anyhow::Result<()> {
    let maps = Maps::open_pinned(pin_dir)?;
    let state: Option<RunState> = std::fs::read_to_string(state_path(pin_dir)).ok().and_then(|t| serde_json::from_str(&t).ok());
    let links: Vec<String> = std::fs::read_dir(pin_dir)
        .with_context(|| format!("reading {}", pin_dir.display()))?
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_string_lossy().strip_prefix("link-").map(str::to_owned))
        .collect();
    let stats = maps.stats()?;
    let flows = maps.for_each_flow(|_, _| {})?;
    let now = monotonic_ns();
    let blocked = maps.blocklist()?.iter().filter(|(_, e)| e.expires_ns > now).count();
    let running = state.as_ref().is_some_and(|s| Path::new(&format!("/proc/{}", s.pid)).exists());
    if json {
        let counters: HashMap<&str, u64> = Stat::ALL.iter().map(|s| (s.name(), stats.get(*s))).collect();
        let v = serde_json::json!({
            "pin_dir": pin_dir.display().to_string(),
            "controller_running": running,
            "state": state,
            "attached": links,
            "flows_tracked": flows,
            "blocklist_active": blocked,
            "seen": stats.seen(),
            "passed": stats.passed(),
            "counters": counters,
        });
        println!("{v}");
        return Ok(());
    }
    match &state {
        Some(s) => println!(
            "controller: pid {} ({}), mode {}, started {}",
            s.pid,
            if running { "running" } else { "not running: the program goes on alone, verdicts expire at their TTL" },
            s.mode,
            s.started
        ),
        None => println!("controller: no state file; the program runs without one"),
    }
    println!("attached:   {}", if links.is_empty() { "nothing".into() } else { links.join(", ") });
    println!("flows:      {flows} direction-flows tracked, {blocked} blocklist entries active");
    println!("packets:    {} seen, {} passed, {} dropped", stats.seen(), stats.passed(), stats.get(Stat::Dropped));
    for s in Stat::ALL {
        if !matches!(s, Stat::Dropped) {
            println!("  {:<18} {}", s.name(), stats.get(s));
        }
    }
    Ok(())
}

/// Removes what a controller left pinned (after `--keep-attached`, or a
/// crash): detaches the program from every interface and drops the maps.
pub fn detach(pin_dir: &Path) -> anyhow::Result<()> {
    crate::datapath::check_privileges()?;
    let entries: Vec<_> =
        std::fs::read_dir(pin_dir).with_context(|| format!("nothing pinned at {}", pin_dir.display()))?.filter_map(Result::ok).collect();
    for e in &entries {
        let name = e.file_name().to_string_lossy().into_owned();
        std::fs::remove_file(e.path()).with_context(|| format!("removing {}", e.path().display()))?;
        if let Some(iface) = name.strip_prefix("link-") {
            println!("detached from {iface}");
        }
    }
    let _ = std::fs::remove_dir(pin_dir);
    let _ = std::fs::remove_file(state_path(pin_dir));
    println!("removed {}", pin_dir.display());
    Ok(())
}
