//! The controller's logic, independent of where counters come from and of
//! what the clock is: the live driver feeds it the kernel's flow map every
//! poll with CLOCK_MONOTONIC, the replay feeds it the same counters built
//! from a capture with the capture's clock. It joins the two directions of
//! each conversation, cuts time into windows, asks the classifier, and turns
//! findings into verdict events and blocklist commands with a TTL.

use std::collections::{HashMap, hash_map::Entry};

use voipdetect_common::{BlockEntry, FlowCounters, FlowKey};

use crate::{
    classifier::{Classifier, Finding, Hints, Thresholds, WindowJudgement},
    clock::{NS_PER_SEC, secs},
    event::{Action, Command, Event, EventKind, Label, Mode, PollOutput},
    key::conv_name,
    policy::Allowlist,
    window::{DirWindow, Snap, describe},
};

/// The poll cadence the windows and thresholds are tuned for; the live
/// driver's default and the replay's clock step.
pub const DEFAULT_POLL_NS: u64 = NS_PER_SEC / 4;

/// Controller settings.
#[derive(Clone, Debug)]
pub struct Config {
    pub mode: Mode,
    /// Length of a classification window.
    pub window_ns: u64,
    /// Lifetime of a verdict without activity; refreshed while the call lasts.
    pub ttl_ns: u64,
    /// A conversation without packets for this long is forgotten.
    pub idle_ns: u64,
    /// Also block media that flows one way only (music on hold, broadcast legs).
    pub block_one_way: bool,
    pub thresholds: Thresholds,
    /// Conversations never blocked (reported only).
    pub allowlist: Allowlist,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            mode: Mode::Monitor,
            window_ns: NS_PER_SEC,
            ttl_ns: 60 * NS_PER_SEC,
            idle_ns: 30 * NS_PER_SEC,
            block_one_way: false,
            thresholds: Thresholds::default(),
            allowlist: Allowlist::default(),
        }
    }
}

/// What the controller keeps about one direction between polls.
#[derive(Clone, Debug)]
struct DirState {
    /// Counters at the start of the current window.
    start: Snap,
    /// Counters at the latest poll.
    cur: Snap,
    first_seen_ns: u64,
    last_seen_ns: u64,
    ifindex: u32,
    rtp_ssrc: u32,
    rtp_ts_step: u16,
    rtp_pt: u8,
    /// In-sequence RTP packets of the previous window: structure is judged
    /// over two windows, so a slow stream (WhatsApp sends 8 packets/s) is
    /// not cut in half by a window edge.
    prev_rtp_ok: u32,
}

impl DirState {
    fn fresh(c: &FlowCounters) -> Self {
        let mut d = Self {
            start: Snap::default(),
            cur: Snap::default(),
            first_seen_ns: 0,
            last_seen_ns: 0,
            ifindex: c.ifindex,
            rtp_ssrc: 0,
            rtp_ts_step: 0,
            rtp_pt: 0,
            prev_rtp_ok: 0,
        };
        d.read(c);
        d
    }

    fn read(&mut self, c: &FlowCounters) {
        self.cur = Snap::of(c);
        self.first_seen_ns = c.first_seen_ns;
        self.last_seen_ns = c.last_seen_ns;
        self.rtp_ssrc = c.rtp_ssrc;
        self.rtp_ts_step = c.rtp_ts_step;
        self.rtp_pt = c.rtp_pt;
    }
}

#[derive(Clone, Debug)]
struct ActiveVerdict {
    label: Label,
    action: Action,
    reason: String,
    pps: f64,
    mean_size: f64,
    /// One-way media: the direction (0 canonical, 1 reverse) that sends.
    sender: Option<usize>,
    expires_ns: u64,
    /// Latest packet time (either direction, dropped ones included) seen.
    last_activity_ns: u64,
}

#[derive(Clone, Debug)]
struct Conv {
    /// [canonical direction, reverse direction], boxed: most
    /// conversations (scans, floods, lookups) only ever have one.
    dirs: [Option<Box<DirState>>; 2],
    win_start_ns: u64,
    /// Consecutive call-like windows, and which sides spoke during them.
    streak: u32,
    talked: [bool; 2],
    /// STUN/DTLS/RTCP seen so far in this conversation.
    hints: Hints,
    /// Reason of the latest call-like window.
    reason: Option<Box<str>>,
    verdict: Option<Box<ActiveVerdict>>,
    /// Created during the poll in progress. Its first window starts at the
    /// earliest first packet of the directions seen in that poll, whichever
    /// the map happened to list first.
    fresh: bool,
}

impl Conv {
    fn last_activity(&self) -> u64 {
        self.dirs.iter().flatten().map(|d| d.last_seen_ns).max().unwrap_or(0)
    }
    fn first_seen(&self) -> u64 {
        self.dirs.iter().flatten().map(|d| d.first_seen_ns).min().unwrap_or(0)
    }
    /// Index of the direction whose first packet came first.
    fn initiator(&self) -> usize {
        match &self.dirs {
            [Some(a), Some(b)] if b.first_seen_ns < a.first_seen_ns => 1,
            [None, Some(_)] => 1,
            _ => 0,
        }
    }
}

/// See the module docs.
pub struct Controller {
    cfg: Config,
    classifier: Classifier,
    /// foldhash: fast for a million tuples hashed every poll, and seeded
    /// per process, so a sender choosing its 5-tuples cannot aim collisions.
    convs: HashMap<FlowKey, Conv, foldhash::fast::RandomState>,
}

fn dir_keys(canonical: &FlowKey) -> [FlowKey; 2] {
    [*canonical, canonical.reversed()]
}

impl Controller {
    pub fn new(cfg: Config) -> Self {
        let classifier = Classifier::new(cfg.thresholds.clone());
        Self { cfg, classifier, convs: HashMap::default() }
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Conversations currently tracked.
    pub fn conversations(&self) -> usize {
        self.convs.len()
    }

    /// Conversations currently blocked.
    pub fn blocked(&self) -> usize {
        self.convs.values().filter(|c| c.verdict.as_ref().is_some_and(|v| v.action == Action::Blocked)).count()
    }

    /// Records one direction's counters as read in this poll.
    pub fn observe(&mut self, key: &FlowKey, c: &FlowCounters) {
        let canonical = key.canonical();
        let idx = usize::from(!key.is_canonical());
        let conv = match self.convs.entry(canonical) {
            Entry::Occupied(e) => e.into_mut(),
            // A flow of a packet or two with no media hint cannot be judged
            // yet: no state until it has more (floods and scans cost nothing).
            Entry::Vacant(_) if !worth_tracking(c, self.cfg.thresholds.min_packets_tracked) => return,
            Entry::Vacant(e) => e.insert(Conv {
                dirs: [None, None],
                win_start_ns: c.first_seen_ns,
                streak: 0,
                talked: [false; 2],
                hints: Hints::default(),
                reason: None,
                verdict: None,
                fresh: true,
            }),
        };
        if conv.fresh {
            conv.win_start_ns = conv.win_start_ns.min(c.first_seen_ns);
        }
        match &mut conv.dirs[idx] {
            Some(d) if d.first_seen_ns == c.first_seen_ns => d.read(c),
            // New direction, or the kernel evicted and recreated the entry:
            // its counters restarted from zero.
            slot => *slot = Some(Box::new(DirState::fresh(c))),
        }
    }

    /// An operator lifted this conversation's block: it stays a call, is
    /// only reported from now on and is not listed again while it lasts.
    /// Returns the changed verdict, as an event.
    pub fn lift(&mut self, canonical: &FlowKey, now_ns: u64) -> Option<Event> {
        let conv = self.convs.get_mut(canonical)?;
        let v = conv.verdict.as_mut().filter(|v| v.action == Action::Blocked)?;
        v.action = Action::Reported;
        v.reason.push_str(" (block lifted by an operator)");
        Some(event(EventKind::Verdict, now_ns, canonical, conv, conv.verdict.as_ref()?, now_ns))
    }

    /// Classifies, manages verdicts and evicts idle conversations after a
    /// poll that ended at `now_ns`.
    pub fn finish_poll(&mut self, now_ns: u64) -> PollOutput {
        let mut out = PollOutput::default();
        let cfg = &self.cfg;
        let classifier = &self.classifier;
        self.convs.retain(|canonical, conv| {
            conv.fresh = false;
            let last_activity = conv.last_activity();
            let window_done = now_ns.saturating_sub(conv.win_start_ns) >= cfg.window_ns;
            let windows = conv.dirs.each_ref().map(|d| {
                d.as_ref().map(|d| {
                    let from = conv.win_start_ns.max(d.first_seen_ns);
                    let span = secs(now_ns.saturating_sub(from));
                    let mut w = DirWindow::between_snaps(&d.start, &d.cur, span, d.rtp_ssrc, d.rtp_ts_step, d.rtp_pt);
                    w.rtp_ok += d.prev_rtp_ok;
                    w
                })
            });
            let dirs = [windows[0].as_ref(), windows[1].as_ref()];

            let proto = canonical.proto;
            for d in dirs.iter().flatten() {
                conv.hints.add(d);
            }
            if log::log_enabled!(log::Level::Debug) && (window_done || dirs.iter().flatten().any(|d| d.rtp_ok > 0)) {
                log::debug!("{} {}", conv_name(canonical), describe(dirs));
            }
            // One-way media is re-examined: the other side may start talking.
            let undecided = conv.verdict.as_ref().is_none_or(|v| v.label == Label::Media);
            let mut finding = if undecided { classifier.early(proto, dirs, conv.hints) } else { None };
            // One-way media needs a settled stream (see the thresholds).
            let t = &cfg.thresholds;
            let settled = secs(now_ns.saturating_sub(conv.first_seen())) >= t.one_way_settle_s
                || secs(now_ns.saturating_sub(last_activity)) >= t.one_way_ended_s;
            if !settled && matches!(finding, Some(Finding::OneWay { .. })) {
                finding = None;
            }
            if conv.verdict.as_ref().is_some_and(|v| v.label == Label::Media) && !matches!(finding, Some(Finding::Call { .. })) {
                finding = None;
            }
            if conv.verdict.is_none() && finding.is_none() && window_done {
                match classifier.judge(proto, dirs) {
                    WindowJudgement::Media { reason } => {
                        conv.streak += 1;
                        conv.talked = [true; 2];
                        conv.reason = Some(reason.into());
                    }
                    WindowJudgement::Half { talker, reason } => {
                        conv.streak += 1;
                        conv.talked[talker] = true;
                        conv.reason = Some(reason.into());
                    }
                    WindowJudgement::Hold => {}
                    WindowJudgement::Other => {
                        conv.streak = 0;
                        conv.talked = [false; 2];
                    }
                }
                if conv.streak >= cfg.thresholds.windows_needed && conv.talked == [true; 2] {
                    finding = conv.reason.take().map(|reason| Finding::Call { reason: reason.into() });
                }
            }
            // A call found on a conversation reported as one-way media
            // replaces that verdict below.
            let upgrade = conv.verdict.is_some() && matches!(finding, Some(Finding::Call { .. }));
            if let Some(v) = conv.verdict.as_mut().filter(|_| !upgrade) {
                let active = last_activity > v.last_activity_ns;
                v.last_activity_ns = v.last_activity_ns.max(last_activity);
                if now_ns >= v.expires_ns {
                    let v = conv.verdict.take().expect("checked above");
                    out.events.push(event(EventKind::Release, now_ns, canonical, conv, &v, last_activity));
                    if v.action == Action::Blocked {
                        out.commands.push(Command::Unblock { keys: dir_keys(canonical) });
                    }
                    conv.streak = 0;
                    conv.talked = [false; 2];
                    finding = None;
                } else if active && v.expires_ns - now_ns < cfg.ttl_ns / 2 {
                    v.expires_ns = now_ns.saturating_add(cfg.ttl_ns);
                    if v.action == Action::Blocked {
                        out.commands.push(Command::Block {
                            keys: dir_keys(canonical),
                            entry: BlockEntry { expires_ns: v.expires_ns, since_ns: now_ns },
                            refresh: true,
                        });
                    }
                }
            }
            if let Some(f) = finding {
                let (label, mut reason, blockable, sender) = match f {
                    Finding::Call { reason } => (Label::Voip, reason, true, None),
                    Finding::OneWay { dir, reason } => (Label::Media, reason, cfg.block_one_way, Some(dir)),
                };
                // Checked before any verdict is written to the blocklist.
                let allowed = blockable && cfg.mode == Mode::Block && cfg.allowlist.covers(canonical);
                if allowed {
                    reason.push_str(" (allowlisted)");
                }
                let blockable = blockable && !allowed;
                let action = if cfg.mode == Mode::Block && blockable { Action::Blocked } else { Action::Reported };
                let (pps, mean_size) = totals(dirs);
                let v = ActiveVerdict {
                    label,
                    action,
                    reason,
                    pps,
                    mean_size,
                    sender,
                    expires_ns: now_ns.saturating_add(cfg.ttl_ns),
                    last_activity_ns: last_activity,
                };
                out.events.push(event(EventKind::Verdict, now_ns, canonical, conv, &v, now_ns));
                if action == Action::Blocked {
                    out.commands.push(Command::Block {
                        keys: dir_keys(canonical),
                        entry: BlockEntry { expires_ns: v.expires_ns, since_ns: now_ns },
                        refresh: false,
                    });
                }
                conv.verdict = Some(Box::new(v));
            }

            if window_done {
                for (d, w) in conv.dirs.iter_mut().zip(&windows) {
                    if let (Some(d), Some(w)) = (d, w) {
                        d.prev_rtp_ok = w.rtp_ok - d.prev_rtp_ok;
                        d.start = d.cur;
                    }
                }
                conv.win_start_ns = now_ns;
            }

            let idle = now_ns.saturating_sub(last_activity) > cfg.idle_ns;
            if idle && conv.verdict.is_none() {
                out.commands.push(Command::Forget { keys: dir_keys(canonical) });
                return false;
            }
            true
        });
        out
    }

    /// Ends every active verdict now (controller shutdown, end of a replay).
    pub fn release_all(&mut self, now_ns: u64) -> PollOutput {
        let mut out = PollOutput::default();
        for (canonical, conv) in &mut self.convs {
            if let Some(v) = conv.verdict.take() {
                let last = conv.last_activity();
                out.events.push(event(EventKind::Release, now_ns, canonical, conv, &v, last));
                if v.action == Action::Blocked {
                    out.commands.push(Command::Unblock { keys: dir_keys(canonical) });
                }
            }
        }
        out
    }
}

/// Whether a flow seen for the first time deserves state yet.
fn worth_tracking(c: &FlowCounters, min_packets: u32) -> bool {
    c.packets.saturating_add(c.empty) >= min_packets || c.rtp_ok > 0 || c.stun > 0 || c.dtls > 0 || c.rtcp > 0
}

/// Combined payload rate and mean size of both directions.
fn totals(dirs: [Option<&DirWindow>; 2]) -> (f64, f64) {
    let (mut pps, mut packets, mut bytes) = (0.0, 0u64, 0u64);
    for d in dirs.into_iter().flatten() {
        pps += d.pps();
        packets += u64::from(d.packets);
        bytes += d.bytes;
    }
    (pps, if packets > 0 { bytes as f64 / packets as f64 } else { 0.0 })
}

fn event(kind: EventKind, at_ns: u64, canonical: &FlowKey, conv: &Conv, v: &ActiveVerdict, end_ns: u64) -> Event {
    let init = v.sender.unwrap_or_else(|| conv.initiator());
    let key = dir_keys(canonical)[init];
    let ifindex = conv.dirs[init].as_ref().map_or(0, |d| d.ifindex);
    let first_seen_ns = conv.first_seen();
    let order = [init, 1 - init];
    let tot = |i: usize| {
        conv.dirs[i]
            .as_ref()
            .map_or((0, 0), |d| (u64::from(d.cur.packets) + u64::from(d.cur.empty) + u64::from(d.cur.dropped), d.cur.bytes))
    };
    let (a, b) = (tot(order[0]), tot(order[1]));
    Event {
        kind,
        at_ns,
        key,
        ifindex,
        label: v.label,
        action: v.action,
        reason: v.reason.clone(),
        pps: v.pps,
        mean_size: v.mean_size,
        duration_s: secs(end_ns.saturating_sub(first_seen_ns)),
        first_seen_ns,
        last_seen_ns: conv.last_activity(),
        packets: [a.0, b.0],
        bytes: [a.1, b.1],
    }
}

#[cfg(test)]
mod tests {
    use voipdetect_common::{features::update, hints::Hint, parse::Packet};

    use super::*;

    const MS: u64 = 1_000_000;

    fn key() -> FlowKey {
        FlowKey { src: [1; 16], dst: [2; 16], sport: 4000, dport: 5000, proto: 17, family: 6, _pad: [0; 2] }
    }

    /// Both directions send 172 B every 20 ms while `active(t)`; the
    /// controller polls every 250 ms until `end_ms`.
    fn drive(ctl: &mut Controller, end_ms: u64, active: impl Fn(u64) -> bool) -> Vec<(u64, PollOutput)> {
        drive_with(ctl, end_ms, active, |_, _| {})
    }

    /// `drive`, calling `after_poll` with the controller and the time (ms)
    /// after every poll.
    fn drive_with(
        ctl: &mut Controller,
        end_ms: u64,
        active: impl Fn(u64) -> bool,
        mut after_poll: impl FnMut(&mut Controller, u64),
    ) -> Vec<(u64, PollOutput)> {
        let (a, b) = (key(), key().reversed());
        let mut ca = FlowCounters::new(MS, 3);
        let mut cb = FlowCounters::new(MS, 4);
        let mut outs = Vec::new();
        let mut forgotten = false;
        let mut t = MS;
        while t <= end_ms * MS {
            if (t - MS).is_multiple_of(20 * MS) && active(t / MS) {
                for (k, c) in [(a, &mut ca), (b, &mut cb)] {
                    let p = Packet { key: k, payload_off: 0, payload_len: 172, tcp_flags: 0 };
                    update(c, &p, Hint::None, t);
                }
            }
            if t.is_multiple_of(250 * MS) {
                // Forgotten flows are deleted from the kernel map: no longer read.
                if !forgotten {
                    ctl.observe(&a, &ca);
                    ctl.observe(&b, &cb);
                }
                let out = ctl.finish_poll(t);
                forgotten |= out.commands.iter().any(|c| matches!(c, Command::Forget { .. }));
                outs.push((t / MS, out));
                after_poll(ctl, t / MS);
            }
            t += MS;
        }
        outs
    }

    #[test]
    fn a_block_lifted_by_an_operator_is_not_written_again() {
        let mut ctl = Controller::new(cfg(Mode::Block));
        let canonical = key().canonical();
        let mut lifted = Vec::new();
        // The operator lifts the block at 3 s, while the call goes on to 8 s.
        let outs = drive_with(
            &mut ctl,
            14_000,
            |t| t < 8_000,
            |ctl, t| {
                if t == 3_000 {
                    lifted.extend(ctl.lift(&canonical, t * MS));
                    assert_eq!(ctl.lift(&canonical, t * MS), None, "lifted twice");
                }
            },
        );
        let [e] = lifted.as_slice() else { panic!("not lifted: {lifted:?}") };
        assert_eq!((e.kind, e.action), (EventKind::Verdict, Action::Reported));
        assert!(e.reason.ends_with("(block lifted by an operator)"), "{}", e.reason);
        let blocks: Vec<_> =
            outs.iter().filter(|(_, o)| o.commands.iter().any(|c| matches!(c, Command::Block { .. }))).map(|(t, _)| *t).collect();
        assert!(!blocks.is_empty() && blocks.iter().all(|&t| t <= 3_000), "blocks at {blocks:?}");
        // Its end unblocks nothing and is reported, not blocked.
        assert!(!outs.iter().any(|(_, o)| o.commands.iter().any(|c| matches!(c, Command::Unblock { .. }))));
        let release: Vec<_> = outs.iter().flat_map(|(_, o)| &o.events).filter(|e| e.kind == EventKind::Release).collect();
        assert_eq!(release.len(), 1);
        assert_eq!(release[0].action, Action::Reported);
    }

    fn cfg(mode: Mode) -> Config {
        Config { mode, ttl_ns: 4_000 * MS, idle_ns: 3_000 * MS, ..Default::default() }
    }

    #[test]
    fn block_mode_lists_both_directions_refreshes_and_releases() {
        let mut ctl = Controller::new(cfg(Mode::Block));
        let outs = drive(&mut ctl, 20_000, |t| t < 8_000);
        let mut verdicts = Vec::new();
        let mut blocks = Vec::new();
        let mut releases = Vec::new();
        let mut unblocks = Vec::new();
        let mut forgets = Vec::new();
        for (t, o) in &outs {
            for e in &o.events {
                match e.kind {
                    EventKind::Verdict => verdicts.push((*t, e.clone())),
                    EventKind::Release => releases.push((*t, e.clone())),
                }
            }
            for c in &o.commands {
                match c {
                    Command::Block { keys, entry, refresh } => blocks.push((*t, *keys, *entry, *refresh)),
                    Command::Unblock { keys } => unblocks.push((*t, *keys)),
                    Command::Forget { keys } => forgets.push((*t, *keys)),
                }
            }
        }
        assert_eq!(verdicts.len(), 1);
        let (vt, v) = &verdicts[0];
        assert!(*vt <= 2_500, "verdict at {vt} ms");
        assert_eq!((v.label, v.action), (Label::Voip, Action::Blocked));
        assert!(v.reason.contains("50 pps each way") && v.reason.contains("20 ms"), "{}", v.reason);
        // Both directions, with the TTL.
        let (bt, keys, entry, refresh) = blocks[0];
        assert_eq!(bt, *vt);
        assert!(!refresh && blocks[1..].iter().all(|b| b.3), "{blocks:?}");
        assert_eq!(keys, [key().canonical(), key().canonical().reversed()]);
        assert_eq!(entry.expires_ns, bt * MS + 4_000 * MS);
        // Refreshed while the call lasts, not after.
        assert!(blocks.len() >= 3, "{blocks:?}");
        assert!(blocks.iter().all(|(t, ..)| *t <= 8_250));
        // Released when the last refresh expires, then forgotten when idle.
        let last_expiry = blocks.last().unwrap().2.expires_ns / MS;
        assert_eq!(releases.len(), 1);
        assert_eq!(unblocks.len(), 1);
        assert!(releases[0].0 >= last_expiry && releases[0].0 < last_expiry + 250, "{releases:?}");
        assert!((releases[0].1.duration_s - 8.0).abs() < 0.1, "{}", releases[0].1.duration_s);
        assert_eq!(forgets.len(), 1);
        assert!(forgets[0].0 > releases[0].0);
        assert_eq!(ctl.conversations(), 0);
    }

    #[test]
    fn allowlisted_calls_are_reported_never_blocked() {
        let mut cfg = cfg(Mode::Block);
        cfg.allowlist.ports = vec![5000];
        let mut ctl = Controller::new(cfg);
        let outs = drive(&mut ctl, 4_000, |_| true);
        let events: Vec<_> = outs.iter().flat_map(|(_, o)| &o.events).collect();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].action, Action::Reported);
        assert!(events[0].reason.ends_with("(allowlisted)"), "{}", events[0].reason);
        assert!(outs.iter().all(|(_, o)| !o.commands.iter().any(|c| matches!(c, Command::Block { .. }))));
    }

    #[test]
    fn monitor_mode_reports_without_commands() {
        let mut ctl = Controller::new(cfg(Mode::Monitor));
        let outs = drive(&mut ctl, 6_000, |_| true);
        let events: Vec<_> = outs.iter().flat_map(|(_, o)| &o.events).collect();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].action, Action::Reported);
        assert!(outs.iter().all(|(_, o)| o.commands.iter().all(|c| matches!(c, Command::Forget { .. }))));
    }

    #[test]
    fn a_recreated_kernel_entry_restarts_its_window() {
        let mut ctl = Controller::new(cfg(Mode::Monitor));
        let mut c = FlowCounters::new(MS, 1);
        c.packets = 1_000_000;
        c.bytes = 1 << 40;
        ctl.observe(&key(), &c);
        let fresh = FlowCounters::new(2 * MS, 1);
        ctl.observe(&key(), &fresh);
        let out = ctl.finish_poll(1_500 * MS);
        assert!(out.events.is_empty());
    }
}
