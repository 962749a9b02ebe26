//! Commands that work on a running controller's pinned maps from another
//! process: `flows`, `block`, `unblock`, `status`, `detach`.

use std::{
    collections::HashMap,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use serde::Serialize;
use voipdetect_common::{BlockEntry, FlowCounters, FlowKey, Stat};

use crate::{
    clock::{monotonic_ns, secs},
    datapath::{
        Maps, check_privileges,
        pins::{link_pin_iface, pinned_links},
    },
    event::SessionId,
    key::{conv_name, endpoint, proto_name},
    state::{self, RunState},
};

/// Lists both directions of a conversation until `ttl` from now.
pub fn block(pin_dir: &Path, key: FlowKey, ttl: Duration) -> anyhow::Result<()> {
    let mut maps = Maps::open_pinned(pin_dir)?;
    let now = monotonic_ns();
    maps.block(&[key, key.reversed()], BlockEntry::drop(now + ttl.as_nanos() as u64, now))?;
    println!("blocked {} for {}", conv_name(&key), humantime::format_duration(ttl));
    Ok(())
}

pub fn unblock(pin_dir: &Path, key: FlowKey) -> anyhow::Result<()> {
    let mut maps = Maps::open_pinned(pin_dir)?;
    maps.unblock(&[key, key.reversed()])?;
    println!("unblocked {}", conv_name(&key));
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
    /// A hold (not the blocklist) drops it: its call came back on it.
    held: bool,
    /// Listed for marking (mark mode), not dropping: the DSCP it gets.
    marked_dscp: Option<u8>,
    dropped: u64,
    /// The call's session, for conversations the controller has a verdict on.
    session: Option<String>,
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
    let sessions = maps.sessions()?;
    let mut rows = Vec::new();
    maps.for_each_flow(|k, c| {
        let before = first.get(k).filter(|b| b.first_seen_ns == c.first_seen_ns);
        let dp = c.packets.wrapping_sub(before.map_or(c.packets, |b| b.packets));
        let db = c.bytes.wrapping_sub(before.map_or(c.bytes, |b| b.bytes));
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
            blocked_for: blocks
                .get(k)
                .map(|b| b.expires_ns)
                .into_iter()
                .chain((c.held != 0).then_some(c.blocked_until_ns))
                .max()
                .filter(|until| *until > now)
                .map(|until| secs(until - now)),
            held: c.held != 0 && c.blocked_until_ns > now,
            marked_dscp: blocks.get(k).filter(|b| b.is_mark() && c.held == 0).map(|b| voipdetect_common::dscp::dscp_of(b.mark)),
            dropped: u64::from(c.dropped),
            session: sessions.get(k).map(|t| SessionId(t.id).to_string()),
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
        "{:<5} {:<46} {:<46} {:>8} {:>7} {:>10} {:>8} {:>7} {:<12} verdict",
        "proto", "src", "dst", "pps", "size", "packets", "age s", "idle s", "session"
    );
    for r in &rows {
        let by = if r.held { "held" } else { "blocked" };
        let verdict = match (r.blocked_for, r.marked_dscp) {
            (Some(t), Some(d)) => format!("marked DSCP {d} {t:.0} s more"),
            (Some(t), None) => format!("{by} {t:.0} s more, {} dropped", r.dropped),
            (None, _) => String::new(),
        };
        println!(
            "{:<5} {:<46} {:<46} {:>8.1} {:>7.0} {:>10} {:>8.1} {:>7.1} {:<12} {verdict}",
            r.proto,
            r.src,
            r.dst,
            r.pps,
            r.mean_size,
            r.packets,
            r.age,
            r.idle,
            r.session.as_deref().unwrap_or("-")
        );
    }
    println!("{} direction-flows", rows.len());
    Ok(())
}

/// The running controller, its interfaces and the kernel's counters.
pub fn status(pin_dir: &Path, json: bool) -> anyhow::Result<()> {
    let maps = Maps::open_pinned(pin_dir)?;
    let state = RunState::read(pin_dir);
    let links = pinned_links(pin_dir).with_context(|| format!("reading {}", pin_dir.display()))?;
    let stats = maps.stats()?;
    let flows = maps.for_each_flow(|_, _| {})?;
    let (v4, v6) = maps.flow_slots();
    let now = monotonic_ns();
    let blocked = maps.blocklist()?.iter().filter(|(_, e)| e.expires_ns > now).count();
    let running = state.as_ref().is_some_and(RunState::running);
    if json {
        let counters: HashMap<&str, u64> = Stat::ALL.iter().map(|s| (s.name(), stats.get(*s))).collect();
        let v = serde_json::json!({
            "pin_dir": pin_dir.display().to_string(),
            "controller_running": running,
            "state": state,
            "attached": links,
            "flows_tracked": flows,
            "flow_slots": {"v4": v4, "v6": v6},
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
    println!("flows:      {flows} direction-flows tracked in {v4} IPv4 + {v6} IPv6 slots, {blocked} blocklist entries active");
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
    check_privileges()?;
    let entries: Vec<_> =
        std::fs::read_dir(pin_dir).with_context(|| format!("nothing pinned at {}", pin_dir.display()))?.filter_map(Result::ok).collect();
    for e in &entries {
        let name = e.file_name().to_string_lossy().into_owned();
        std::fs::remove_file(e.path()).with_context(|| format!("removing {}", e.path().display()))?;
        if let Some(iface) = link_pin_iface(&name) {
            println!("detached from {iface}");
        }
    }
    let _ = std::fs::remove_dir(pin_dir);
    state::remove(pin_dir);
    println!("removed {}", pin_dir.display());
    Ok(())
}
