//! `voipdetect run`: the live driver. Loads the program once (re-adopting
//! what an earlier run left pinned), attaches it to every named interface,
//! polls the flow map on a fixed interval, feeds the controller and applies
//! its commands; SIGHUP reloads the rules. On SIGINT/SIGTERM it detaches and unpins everything unless
//! asked to keep the program for a restart; on every error path the
//! [`Datapath`] is dropped, which detaches.

use std::{collections::HashMap, time::Instant};

use anyhow::Context as _;
use log::{info, warn};
use tokio::signal::unix::{SignalKind, signal};
use voipdetect_common::SessionTag;

use crate::{
    clock::{Wall, monotonic_ns, rfc3339, unix_now_ns},
    config::{PSEUDONYM_KEY_ENV, Settings},
    controller::Controller,
    datapath::{Datapath, LoadOptions, ifindex, ifname, private_mount_namespace, random_seed},
    event::{Command, EventKind, PollOutput},
    metrics::{Metrics, Tracked},
    outputs::{Outputs, Pseudonymizer},
    policy::Policy,
    state::{self, RunState},
};

/// Checks what can be checked before touching the kernel; returns the
/// policy with its rules' interfaces resolved.
pub fn validate(s: &Settings) -> anyhow::Result<Policy> {
    s.validate()?;
    for iface in &s.interfaces {
        ifindex(iface)?;
    }
    let mut policy = s.policy();
    policy.resolve_interfaces(|n| ifindex(n).with_context(|| format!("a rule's interfaces: {n:?}")))?;
    Ok(policy)
}

/// SIGHUP: the configuration file read again with the flags of the start;
/// its rules, mode and allowlist replace the ones in force. Anything wrong
/// is one line and changes nothing.
fn reload(s: &Settings, ctl: &mut Controller) {
    let Some(flags) = &s.reload_from else {
        info!("SIGHUP: no --config file to reload");
        return;
    };
    let fresh = Settings::resolve((**flags).clone(), std::env::var(PSEUDONYM_KEY_ENV).ok()).and_then(|n| validate(&n).map(|p| (n, p)));
    match fresh {
        Ok((n, policy)) => {
            info!(
                "SIGHUP: {} rules, default {} (rules, mode and allowlist reloaded; other settings need a restart)",
                policy.rules.len(),
                n.mode.name()
            );
            ctl.set_policy(policy);
        }
        Err(e) => warn!("SIGHUP: reload failed, the rules in force stay: {e:#}"),
    }
}

/// Runs until SIGINT/SIGTERM (or the configured duration).
pub async fn run(s: Settings, kernel_debug_log: bool) -> anyhow::Result<()> {
    let policy = validate(&s)?;
    state::check_not_running(s.pin_dir.as_deref())?;
    let pseudo = s.pseudonymize_ips.then(|| Pseudonymizer::new(s.pseudonym_key.as_deref().unwrap_or_default()));
    let mut outputs = Outputs::new(s.events.as_deref(), s.format, s.call_records.as_deref(), pseudo)?;
    let metrics = Metrics::new();
    let listener = match s.metrics {
        Some(addr) => Some(tokio::net::TcpListener::bind(addr).await.with_context(|| format!("metrics endpoint {addr}"))?),
        None => None,
    };
    let mut dp = Datapath::load(&LoadOptions {
        flow_entries: s.flow_entries,
        block_entries: s.block_entries,
        kernel_debug_log,
        pin_dir: s.pin_dir.clone(),
    })?;
    for iface in &s.interfaces {
        dp.attach(iface)?;
    }
    if let Some(dir) = s.pin_dir.as_ref().filter(|_| private_mount_namespace()) {
        info!(
            "pins in {} belong to a private mount namespace (ip netns exec?) and go when voipdetect exits: --keep-attached and a restart's take-over need the host's",
            dir.display()
        );
    }
    if dp.adopted_maps() {
        info!("blocklist kept from the previous run: {} entries", dp.blocklist()?.len());
    }
    if let Some(dir) = &s.pin_dir {
        RunState {
            pid: std::process::id(),
            interfaces: s.interfaces.clone(),
            mode: s.mode.name().to_owned(),
            started: rfc3339(unix_now_ns()),
            pin_dir: dir.display().to_string(),
            keep_attached: s.keep_attached,
        }
        .write()?;
    }
    // Counting blocked conversations walks them all: only done for a scrape target.
    let serving = listener.is_some();
    let _server = listener.map(|l| tokio::spawn(metrics.clone().serve(l)));
    // Session ids mix in a secret of this run: they say nothing about addresses.
    let salt = random_seed();
    let rules = policy.rules.len();
    let mut ctl = Controller::new(crate::controller::Config { session_salt: salt, policy, ..s.controller() });
    let mut names = IfNames::default();
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut sighup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let mut changes = dp.change_tracker();
    let mut tick = tokio::time::interval(s.poll_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let deadline = s.duration.map(|d| tokio::time::Instant::now() + d);
    info!(
        "monitoring {} in {} mode ({rules} rules before it), polling every {:?}",
        s.interfaces.join(", "),
        s.mode.name(),
        s.poll_interval
    );
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let started = Instant::now();
                let now = monotonic_ns();
                ctl.set_wall_offset(i128::from(unix_now_ns()) - i128::from(now));
                let (flows, out) = dp.poll(&mut changes, &mut ctl, now);
                apply(&mut dp, &mut ctl, out, &mut outputs, &metrics, &mut names, now)?;
                if serving {
                    let tracked = Tracked { conversations: ctl.conversations(), sessions: ctl.sessions(), blocked: ctl.blocked() };
                    let (v4, v6) = dp.flow_slots();
                    metrics.poll(&dp.stats()?, flows, v4 + v6, tracked, started.elapsed().as_secs_f64());
                }
            }
            _ = sighup.recv() => reload(&s, &mut ctl),
            _ = sigint.recv() => { info!("SIGINT: stopping"); break; }
            _ = sigterm.recv() => { info!("SIGTERM: stopping"); break; }
            _ = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => {
                info!("run time over: stopping");
                break;
            }
        }
    }
    if s.keep_attached {
        // The program goes on without us: existing verdicts stay listed
        // until their expiry; nothing new is blocked until a controller
        // re-adopts the pins.
        info!("--keep-attached: leaving the program attached and its maps pinned in {:?}", s.pin_dir);
        dp.keep_on_drop(true);
        return Ok(());
    }
    let now = monotonic_ns();
    let out = ctl.release_all(now, &*dp);
    apply(&mut dp, &mut ctl, out, &mut outputs, &metrics, &mut names, now)?;
    dp.detach_all();
    if let Some(dir) = &s.pin_dir {
        state::remove(dir);
    }
    Ok(())
}

/// Interface names by index, looked up once.
#[derive(Default)]
struct IfNames(HashMap<u32, String>);

impl IfNames {
    fn get(&mut self, index: u32) -> &str {
        self.0.entry(index).or_insert_with(|| ifname(index).unwrap_or_else(|| format!("if{index}")))
    }
}

fn apply(
    dp: &mut Datapath,
    ctl: &mut Controller,
    mut out: PollOutput,
    outputs: &mut Outputs,
    metrics: &Metrics,
    names: &mut IfNames,
    now_mono: u64,
) -> anyhow::Result<()> {
    for cmd in &out.commands {
        match cmd {
            // Only this controller and `voipdetect unblock` delete entries:
            // one it listed and finds gone was lifted by an operator.
            Command::Block { keys, refresh: true, .. } if !dp.listed(keys)? => out.events.extend(ctl.lift(&keys[0], now_mono, &**dp)),
            Command::Block { keys, entry, .. } => dp.block(keys, *entry)?,
            Command::Unblock { keys } => dp.unblock(keys)?,
            Command::Forget { keys } => keys.iter().for_each(|k| dp.remove_flow(k)),
            Command::Media { keys, on } => keys.iter().for_each(|k| dp.set_media(k, *on)),
            Command::Hold { key, entry } => dp.hold(key, *entry)?,
            Command::Unhold { key } => dp.unhold(key)?,
        }
    }
    let wall = Wall::at(now_mono);
    for e in &out.events {
        match e.kind {
            EventKind::Verdict => dp.tag(&e.key, SessionTag { id: e.session.0, since_ns: e.at_ns }),
            EventKind::Release => dp.untag(&e.key),
        }
        metrics.event(e);
        let iface = names.get(e.ifindex).to_owned();
        if let Err(err) = outputs.event(e, &iface, |t| wall.of(t)) {
            warn!("writing an event: {err:#}");
        }
    }
    Ok(())
}
