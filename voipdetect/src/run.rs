//! `voipdetect run`: the live driver. Loads the program once, attaches it to
//! every named interface, polls the flow map on a fixed interval, feeds the
//! controller and applies its commands. Detaches on SIGINT/SIGTERM and, by
//! dropping the [`Datapath`], on every error path.

use std::{collections::HashMap, time::Duration};

use anyhow::{Context as _, bail};
use log::{info, warn};
use tokio::signal::unix::{SignalKind, signal};

use crate::{
    controller::{Command, Config, Controller, PollOutput},
    datapath::{Datapath, LoadOptions, ifindex, ifname},
    report::{EventRecord, Reporter, unix_now_ns},
};

/// CLOCK_MONOTONIC in ns: the clock `bpf_ktime_get_ns` reads.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid out-pointer; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[derive(Clone, Debug)]
pub struct RunOptions {
    pub ifaces: Vec<String>,
    pub poll_interval: Duration,
    pub json: bool,
    pub load: LoadOptions,
    pub controller: Config,
    /// Stop after this long (tests, demos); `None` runs until a signal.
    pub duration: Option<Duration>,
}

/// Validates what can be checked before touching the kernel.
pub fn validate(opts: &RunOptions) -> anyhow::Result<()> {
    if opts.ifaces.is_empty() {
        bail!("no interface given: use --iface IF");
    }
    for iface in &opts.ifaces {
        ifindex(iface)?;
    }
    if opts.poll_interval.is_zero() {
        bail!("--poll-interval must be greater than zero");
    }
    if opts.controller.ttl_ns == 0 {
        bail!("--ttl must be greater than zero");
    }
    Ok(())
}

/// Runs until SIGINT/SIGTERM (or `duration`).
pub async fn run(opts: RunOptions) -> anyhow::Result<()> {
    validate(&opts)?;
    let mut dp = Datapath::load(&opts.load)?;
    for iface in &opts.ifaces {
        dp.attach(iface)?;
    }
    let mut ctl = Controller::new(opts.controller.clone());
    let mut reporter = Reporter::new(std::io::stdout().lock(), opts.json);
    let mut names = IfNames::default();
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut tick = tokio::time::interval(opts.poll_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let deadline = opts.duration.map(|d| tokio::time::Instant::now() + d);
    info!(
        "monitoring {} in {:?} mode, polling every {:?}",
        opts.ifaces.join(", "),
        opts.controller.mode,
        opts.poll_interval
    );
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let now = monotonic_ns();
                dp.for_each_flow(|k, c| ctl.observe(k, c))?;
                let out = ctl.finish_poll(now);
                apply(&mut dp, &out, &mut reporter, &mut names, now)?;
            }
            _ = sigint.recv() => { info!("SIGINT: stopping"); break; }
            _ = sigterm.recv() => { info!("SIGTERM: stopping"); break; }
            _ = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => {
                info!("run time over: stopping");
                break;
            }
        }
    }
    let now = monotonic_ns();
    let out = ctl.release_all(now);
    apply(&mut dp, &out, &mut reporter, &mut names, now)?;
    dp.detach_all();
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

fn apply<W: std::io::Write>(
    dp: &mut Datapath,
    out: &PollOutput,
    reporter: &mut Reporter<W>,
    names: &mut IfNames,
    now_mono: u64,
) -> anyhow::Result<()> {
    for cmd in &out.commands {
        match cmd {
            Command::Block { keys, entry } => dp.block(keys, *entry)?,
            Command::Unblock { keys } => dp.unblock(keys)?,
            Command::Forget { keys } => keys.iter().for_each(|k| dp.remove_flow(k)),
        }
    }
    let wall_now = unix_now_ns();
    for e in &out.events {
        let unix = wall_now.saturating_sub(now_mono.saturating_sub(e.at_ns));
        let iface = names.get(e.ifindex).to_owned();
        if let Err(err) = reporter.emit(&EventRecord::new(e, unix, &iface)) {
            warn!("writing an event: {err}");
        }
    }
    Ok(())
}
