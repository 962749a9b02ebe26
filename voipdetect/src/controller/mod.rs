//! The controller's logic, independent of where counters come from and of
//! what the clock is: the live driver lists it the program's flow-table
//! slots that changed every poll, with CLOCK_MONOTONIC, and the replay the
//! slots of its own table, built from a capture, with the capture's
//! clock; either way the controller reads the latest counters from the
//! slots when it judges ([`FlowTable`]). It joins the two directions of
//! each conversation ([`conv`]), cuts time into windows, asks the
//! classifier, groups the conversations of one call into a session
//! ([`session`]), and turns findings into verdict events, blocklist
//! commands with a TTL, and holds.
//!
//! A poll runs in three passes: every conversation on its own (structure,
//! behaviour windows, lighter evidence when its host is under suspicion,
//! verdict upkeep); then the one-way legs of all conversations, paired at
//! the socket they share (a call relayed through two addresses); then the
//! sessions (activity, holds, their end).

mod config;
mod conv;
mod convs;
mod session;
mod table;

use std::{collections::HashMap, hash::BuildHasher};

use voipdetect_common::{BlockEntry, FlowCounters, FlowKey};

pub use self::{
    config::{Config, DEFAULT_HOLD_NS, DEFAULT_POLL_NS},
    table::{FlowTable, SlotRef},
};
use self::{
    conv::{Conv, Seen, Upkeep, codec, totals},
    convs::Convs,
    session::{Anchor, Joining, Sessions, Suspects},
};
use crate::{
    classifier::{Classifier, Finding, Leg, Thresholds, ratio},
    clock::secs,
    event::{Action, Basis, Command, Event, EventKind, Label, PollOutput, SessionId},
    key::{Socket, conv_name},
    policy::{ALLOWLIST_RULE, Decision, Policy, RuleAction},
    window::describe,
};

/// See the module docs.
pub struct Controller {
    cfg: Config,
    classifier: Classifier,
    convs: Convs,
    sessions: Sessions,
    /// Unix time minus the clock `now_ns` comes from: schedules are in
    /// wall-clock time. 0 in replay, whose clock is the capture's (Unix).
    wall_offset_ns: i128,
    /// When the latest poll ended.
    last_poll_ns: u64,
    /// The conversations with a one-way leg in the poll in progress: their
    /// places and their senders' prints (kept: a poll of a million legs
    /// does not allocate anew).
    legs: Vec<[u32; 2]>,
    /// Hashes sockets into prints for pairing legs (see `pair_legs`).
    prints: foldhash::fast::RandomState,
}

fn dir_keys(canonical: &FlowKey) -> [FlowKey; 2] {
    [*canonical, canonical.reversed()]
}

/// A one-way leg as the second pass sees it.
#[derive(Clone, Copy)]
struct LegAt {
    key: FlowKey,
    /// Its conversation's place (the pairs found are issued there).
    place: u32,
    leg: Leg,
    sender: Socket,
    receiver: Socket,
}

/// The conversation's one-way leg, if it has run long enough to pair.
fn pairable(conv: &Conv, t: &Thresholds) -> Option<Leg> {
    conv.leg.leg().filter(|_| u32::from(conv.leg.streak) >= t.windows_needed && conv.undecided())
}

impl LegAt {
    /// The conversation's one-way leg with its sockets (see [`pairable`]).
    fn of(canonical: &FlowKey, place: u32, conv: &Conv, t: &Thresholds) -> Option<Self> {
        let leg = pairable(conv, t)?;
        Some(Self {
            key: *canonical,
            place,
            leg,
            sender: Socket::of(canonical, leg.sender == 0),
            receiver: Socket::of(canonical, leg.sender != 0),
        })
    }
}

impl Controller {
    pub fn new(cfg: Config) -> Self {
        let classifier = Classifier::new(cfg.thresholds.clone());
        let sessions = Sessions::new(cfg.session_salt);
        Self {
            cfg,
            classifier,
            convs: Convs::default(),
            sessions,
            wall_offset_ns: 0,
            last_poll_ns: 0,
            legs: Vec::new(),
            prints: Default::default(),
        }
    }

    /// Tells how the poll clock maps to Unix time (the live driver's
    /// CLOCK_MONOTONIC does not): Unix ns = poll ns + `offset_ns`.
    pub fn set_wall_offset(&mut self, offset_ns: i128) {
        self.wall_offset_ns = offset_ns;
    }

    /// Replaces the policy (a reload). Verdicts in force follow it at the
    /// next poll: blocks a rule no longer asks for are lifted, calls a
    /// rule now blocks are blocked.
    pub fn set_policy(&mut self, policy: Policy) {
        self.cfg.policy = policy;
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Conversations currently tracked.
    pub fn conversations(&self) -> usize {
        self.convs.len()
    }

    /// Conversations asleep: nothing pending until their next packet (a
    /// poll passes them over).
    pub fn dormant(&self) -> usize {
        self.convs.asleep()
    }

    /// Sessions currently tracked (calls and their holds).
    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }

    /// Conversations currently blocked.
    pub fn blocked(&self) -> usize {
        self.convs.values().filter(|c| c.verdict.as_ref().is_some_and(|v| v.action == Action::Blocked)).count()
    }

    /// The session of every conversation that has one (canonical keys).
    pub fn session_of_each(&self) -> impl Iterator<Item = (FlowKey, SessionId)> {
        self.convs.iter().filter_map(|(k, c)| Some((k, c.session()?)))
    }

    /// Fetches what observing the flow whose slot word is `word` will
    /// read, ahead of it (see `for_each_changed_flow`).
    pub fn prefetch(&self, word: u32) {
        self.convs.prefetch(word);
    }

    /// Records that one direction is in slot `at` of `table`, with
    /// counters `c` as read in this poll (the walk lists the
    /// direction-flows with news; the poll reads every conversation's
    /// latest counters from their slots). `word` is the controller's word
    /// of the slot, to be left there afterwards (see [`FlowTable`]).
    pub fn observe(&mut self, at: SlotRef, key: &FlowKey, c: &FlowCounters, word: &mut u32, table: &impl FlowTable) {
        let reverse = !key.is_canonical();
        let min_packets = self.cfg.thresholds.min_packets_tracked;
        // A flow of a packet or two with no media hint cannot be judged
        // yet: no state until it has more (floods and scans cost nothing).
        let new = || worth_tracking(c, min_packets).then(|| Conv::new(c.first_seen_ns));
        if let Some((conv, sleep)) = self.convs.find_or_insert(key, reverse, word, table, new) {
            conv.observe(usize::from(reverse), at, c, self.last_poll_ns, sleep);
        }
    }

    /// An operator lifted this conversation's block: it stays a call, is
    /// only reported from now on and is not listed again while it lasts;
    /// its session holds nothing any more. Returns the changed verdict, as
    /// an event.
    pub fn lift(&mut self, canonical: &FlowKey, now_ns: u64, table: &impl FlowTable) -> Option<Event> {
        let conv = self.convs.get_mut(canonical, table)?;
        let seen = conv.seen(table);
        let v = conv.verdict.as_mut().filter(|v| v.action.listed())?;
        v.action = Action::Reported;
        v.by_policy = false;
        v.reason.push_str(" (block lifted by an operator)");
        self.sessions.lift(conv.session());
        let members = self.sessions.members(conv.session());
        Some(event(EventKind::Verdict, now_ns, canonical, conv, &seen, conv.verdict.as_ref()?, now_ns, members))
    }

    /// Classifies, manages verdicts and sessions and evicts idle
    /// conversations after a poll that ended at `now_ns`, reading their
    /// latest counters from `table`.
    pub fn finish_poll(&mut self, now_ns: u64, table: &impl FlowTable) -> PollOutput {
        let mut out = PollOutput::default();
        let unix_ns = u64::try_from(i128::from(now_ns) + self.wall_offset_ns).unwrap_or(0);
        let prev_poll_ns = std::mem::replace(&mut self.last_poll_ns, now_ns);
        let Self { cfg, classifier, convs, sessions, legs, prints, .. } = self;
        let suspects = sessions.suspects(cfg, now_ns);
        legs.clear();
        // The prints of the sockets that receive on a one-way leg,
        // gathered as the legs are found (see `pair_legs`). Grown as
        // needed, not sized for every leg: legs mostly share their
        // receivers (a server, a relay).
        let mut receivers = Prints::default();
        let print = |s: &Socket| prints.hash_one(s) as u32;
        let idle = |last: u64| now_ns.saturating_sub(last) > cfg.idle_ns;
        let ahead = |conv: &Conv| conv.slots().for_each(|at| table.prefetch(at));
        let mut seen = Seen([None, None]);
        convs.retain(idle, ahead, |place, canonical, conv, sleep| {
            // Asleep (and so idle, or the walk would have passed it over):
            // only its idle time counts (no session, no verdict).
            if *sleep != 0 {
                let idle = idle(*sleep);
                if idle {
                    out.commands.push(Command::Forget { keys: dir_keys(canonical) });
                }
                return !idle;
            }
            let at = Times { now_ns, unix_ns, prev_poll_ns };
            conv.read_seen(table, &mut seen);
            let seen = &seen;
            // Every direction's slot has taken another flow (the kernel
            // evicted them under pressure): nothing left to judge, and
            // nothing to forget in the kernel. A verdict or a session
            // still has its own end to reach.
            if Conv::gone(seen) && conv.verdict.is_none() && conv.session().is_none() {
                return false;
            }
            let keep = each_conv(cfg, classifier, sessions, &suspects, canonical, conv, seen, sleep, at, &mut out);
            if keep && let Some(leg) = pairable(conv, &cfg.thresholds) {
                receivers.insert(print(&Socket::of(canonical, leg.sender != 0)));
                legs.push([place, print(&Socket::of(canonical, leg.sender == 0))]);
            }
            keep
        });
        for (anchor, [to, from]) in pair_legs(legs, &receivers, convs, &cfg.thresholds) {
            let reason = format!(
                "split legs at {anchor}: sends {:.0} pps to {}, receives {:.0} pps from {}, {} ms, {}",
                to.leg.pps,
                to.receiver.ip(),
                from.leg.pps,
                from.sender.ip(),
                to.leg.cadence_ms,
                crate::classifier::pair(to.leg.mean_size, from.leg.mean_size, "B", false),
            );
            for l in [&to, &from] {
                if let Some(conv) = convs.at_mut(l.place) {
                    let seen = conv.seen(table);
                    let finding = Finding::Call { reason: reason.clone(), basis: Basis::Session };
                    // A leg's other side is silent: its rate is the leg's.
                    let rates = Rates { totals: (l.leg.pps, l.leg.mean_size), codec: (l.leg.pps, l.leg.mean_size) };
                    issue(cfg, sessions, &l.key, conv, &seen, finding, Anchor::Socket(anchor), rates, now_ns, unix_ns, &mut out);
                }
            }
        }
        sessions.upkeep(cfg, now_ns, |k| convs.get(k, table).map(|c| (c.last_activity(), c.verdict.is_some())), &mut out.commands);
        convs.compact_if_sparse(table);
        out
    }

    /// Ends every active verdict and hold now (controller shutdown, end of
    /// a replay).
    pub fn release_all(&mut self, now_ns: u64, table: &impl FlowTable) -> PollOutput {
        let mut out = PollOutput::default();
        for (canonical, conv) in self.convs.iter_mut() {
            if let Some(v) = conv.verdict.take() {
                let last = conv.last_activity();
                let members = self.sessions.members(conv.session());
                let seen = conv.seen(table);
                out.events.push(event(EventKind::Release, now_ns, &canonical, conv, &seen, &v, last, members));
                if v.action.listed() {
                    out.commands.push(Command::Unblock { keys: dir_keys(&canonical) });
                }
            }
        }
        self.sessions.release_all(&mut out.commands);
        out
    }
}

/// The clocks of the poll in progress.
#[derive(Clone, Copy)]
struct Times {
    now_ns: u64,
    /// `now_ns` in Unix time (schedules).
    unix_ns: u64,
    /// When the poll before ended (0 before the first).
    prev_poll_ns: u64,
}

/// The first pass, for one conversation. Returns whether to keep it.
#[expect(clippy::too_many_arguments, reason = "the controller's parts, borrowed apart")]
fn each_conv(
    cfg: &Config,
    classifier: &Classifier,
    sessions: &mut Sessions,
    suspects: &Suspects,
    canonical: &FlowKey,
    conv: &mut Conv,
    seen: &Seen,
    sleep: &mut u64,
    Times { now_ns, unix_ns, prev_poll_ns }: Times,
    out: &mut PollOutput,
) -> bool {
    conv.fresh = false;
    let window_done = now_ns.saturating_sub(conv.win_start_ns) >= cfg.window_ns;
    let mut windows = [None, None];
    conv.windows(seen, now_ns, &mut windows);
    let dirs = [windows[0].as_ref(), windows[1].as_ref()];
    let proto = canonical.proto;
    for d in dirs.iter().flatten() {
        conv.hints.add(d);
    }
    if log::log_enabled!(log::Level::Debug) && (window_done || dirs.iter().flatten().any(|d| d.rtp_ok > 0)) {
        log::debug!("{} {}", conv_name(canonical), describe(dirs));
    }
    // A conversation the kernel counts plain has no gaps or headers to
    // judge: it becomes media once its rate allows voice or video.
    if conv.plain() && conv.verdict.is_none() {
        let t = &cfg.thresholds;
        let present = || dirs.iter().flatten().filter(|d| d.packets > 0);
        if present().any(|d| d.packets >= 2) && present().all(|d| d.pps() <= t.media_max_pps) {
            out.commands.push(Command::Media { keys: dir_keys(canonical), on: true });
            conv.set_media(true);
            conv.close_window(&windows, seen, now_ns);
        } else if conv.session().is_none() && conv.last_activity() <= prev_poll_ns && now_ns > prev_poll_ns {
            // Nothing since the poll before: asleep, its window to restart
            // at its next packet (an idle connection costs no poll, and a
            // keep-alive every few seconds is not promoted for being slow).
            conv.close_window(&windows, seen, now_ns);
            *sleep = conv.sleep();
        }
        return keep_unless_idle(cfg, sessions, canonical, conv, now_ns, out);
    }
    let mut finding = conv.early(cfg, classifier, proto, dirs, seen, now_ns);
    // Worked out once: the window's judgement and its leg both read them.
    let kinds = window_done.then(|| classifier.kinds(dirs));
    if conv.verdict.is_none()
        && finding.is_none()
        && let Some(kinds) = kinds
    {
        finding = conv.judge(cfg, classifier, proto, kinds);
    }
    // A new conversation of a host whose call was just found: the call
    // coming back on another port, relay or transport.
    let mut anchor = Anchor::Guess;
    if !suspects.is_empty()
        && conv.undecided()
        && !matches!(finding, Some(Finding::Call { .. }))
        && let Some((suspect, own_socket)) = suspects.of(canonical)
        && let young = secs(now_ns.saturating_sub(Conv::first_seen(seen))) <= cfg.thresholds.held_within_s
        && let Some((reason, two_way)) = classifier.held(proto, dirs, Conv::rtp_seen(seen), suspect.codec, young)
        && (two_way || own_socket)
    {
        finding = Some(Finding::Call { reason: format!("{reason} (held by session {})", suspect.id), basis: Basis::Held });
        anchor = Anchor::Session(suspect.id);
    }
    if window_done || !conv.busy {
        conv.busy = dirs.iter().flatten().any(|d| d.packets > 0);
    }
    if let Some(kinds) = kinds {
        conv.track_leg(classifier.leg_kinds(dirs, kinds));
    }
    // A call found on a conversation reported as one-way media replaces
    // that verdict below.
    let upgrade = conv.verdict.is_some() && matches!(finding, Some(Finding::Call { .. }));
    if !upgrade {
        match conv.upkeep(cfg, now_ns) {
            Upkeep::None => follow_policy(cfg, sessions, canonical, conv, seen, now_ns, unix_ns, out),
            Upkeep::Refreshed => {
                follow_policy(cfg, sessions, canonical, conv, seen, now_ns, unix_ns, out);
                let v = conv.verdict.as_ref().expect("refreshed a verdict");
                if let Some(entry) = listing(cfg, v.action, v.expires_ns, now_ns) {
                    out.commands.push(Command::Block { keys: dir_keys(canonical), entry, refresh: true });
                }
            }
            Upkeep::Released(v) => {
                let members = sessions.members(conv.session());
                out.events.push(event(EventKind::Release, now_ns, canonical, conv, seen, &v, conv.last_activity(), members));
                if v.action.listed() {
                    out.commands.push(Command::Unblock { keys: dir_keys(canonical) });
                }
                finding = None;
            }
        }
    }
    if let Some(f) = finding {
        let rates = Rates { totals: totals(dirs), codec: codec(dirs, cfg.thresholds.min_pps) };
        issue(cfg, sessions, canonical, conv, seen, f, anchor, rates, now_ns, unix_ns, out);
    }
    // A conversation that is no call and sends faster than any voice or
    // video: back to the kernel's plain path.
    if window_done
        && conv.verdict.is_none()
        && conv.session().is_none()
        && !conv.hints.any()
        && Conv::rtp_seen(seen) == [0, 0]
        && dirs.iter().flatten().any(|d| d.pps() > cfg.thresholds.media_max_pps)
    {
        out.commands.push(Command::Media { keys: dir_keys(canonical), on: false });
        conv.set_media(false);
    }
    if window_done {
        conv.close_window(&windows, seen, now_ns);
    }
    let keep = keep_unless_idle(cfg, sessions, canonical, conv, now_ns, out);
    if keep {
        *sleep = conv.settle(seen);
    }
    keep
}

/// Forgets a conversation idle for `idle_timeout` without a verdict;
/// whether to keep it.
fn keep_unless_idle(cfg: &Config, sessions: &mut Sessions, canonical: &FlowKey, conv: &Conv, now_ns: u64, out: &mut PollOutput) -> bool {
    let idle = now_ns.saturating_sub(conv.last_activity()) > cfg.idle_ns;
    if idle && conv.verdict.is_none() {
        out.commands.push(Command::Forget { keys: dir_keys(canonical) });
        sessions.leave(canonical, conv.session());
        return false;
    }
    true
}

/// A conversation's rates in the window that made its verdict.
#[derive(Clone, Copy)]
struct Rates {
    /// Payload rate and mean size of both directions.
    totals: (f64, f64),
    /// Of a speaking direction (one at voice rate): the call's codec, as a
    /// session keeps it.
    codec: (f64, f64),
}

/// Turns a finding into a verdict: the event, the blocklist command, the
/// conversation's place in its session.
#[expect(clippy::too_many_arguments, reason = "the controller's parts, borrowed apart")]
fn issue(
    cfg: &Config,
    sessions: &mut Sessions,
    canonical: &FlowKey,
    conv: &mut Conv,
    seen: &Seen,
    finding: Finding,
    anchor: Anchor,
    rates: Rates,
    now_ns: u64,
    unix_ns: u64,
    out: &mut PollOutput,
) {
    let (label, mut reason, blockable, sender, basis) = match finding {
        Finding::Call { reason, basis } => (Label::Voip, reason, true, None, basis),
        Finding::OneWay { dir, reason } => (Label::Media, reason, cfg.block_one_way, Some(dir), Basis::Rtp),
    };
    // Decided before any verdict is written to the blocklist.
    let decision = decide(&cfg.policy, canonical, seen, unix_ns);
    if blockable && decision.action == RuleAction::Allow {
        reason.push_str(&allowed_note(&decision));
    }
    let action = action_of(&decision, blockable);
    let (pps, mean_size) = rates.totals;
    let joining = Joining {
        key: canonical,
        initiator: Conv::initiator(seen),
        current: conv.session(),
        anchor,
        label,
        blocked: action == Action::Blocked,
        first_seen_ns: Conv::first_seen(seen),
        codec: rates.codec,
    };
    let session = sessions.join(&joining, now_ns);
    conv.set_session(session);
    let v = conv::ActiveVerdict {
        label,
        action,
        basis,
        reason,
        rule: decision.rule,
        by_policy: true,
        pps,
        mean_size,
        sender,
        expires_ns: now_ns.saturating_add(cfg.ttl_ns),
        last_activity_ns: conv.last_activity(),
    };
    out.events.push(event(EventKind::Verdict, now_ns, canonical, conv, seen, &v, now_ns, sessions.members(Some(session))));
    if let Some(entry) = listing(cfg, action, v.expires_ns, now_ns) {
        out.commands.push(Command::Block { keys: dir_keys(canonical), entry, refresh: false });
    }
    conv.verdict = Some(Box::new(v));
}

/// The policy's decision for a conversation: its initiator's key, the
/// interfaces each direction arrives on, the wall-clock time.
fn decide(policy: &Policy, canonical: &FlowKey, seen: &Seen, unix_ns: u64) -> Decision {
    let init = Conv::initiator(seen);
    let ifindexes = seen.0.each_ref().map(|c| c.as_ref().map_or(0, |c| c.ifindex));
    policy.decide(&dir_keys(canonical)[init], ifindexes, unix_ns)
}

fn action_of(d: &Decision, blockable: bool) -> Action {
    match d.action {
        RuleAction::Block if blockable => Action::Blocked,
        RuleAction::Mark if blockable => Action::Marked,
        _ => Action::Reported,
    }
}

/// The blocklist entry an action needs (None: nothing listed).
fn listing(cfg: &Config, action: Action, expires_ns: u64, now_ns: u64) -> Option<BlockEntry> {
    match action {
        Action::Blocked => Some(BlockEntry::drop(expires_ns, now_ns)),
        Action::Marked => Some(BlockEntry::marking(expires_ns, now_ns, voipdetect_common::dscp::mark(cfg.mark_dscp))),
        Action::Reported => None,
    }
}

/// What an allowed call's reason says.
fn allowed_note(d: &Decision) -> String {
    if d.rule == ALLOWLIST_RULE { " (allowlisted)".into() } else { format!(" (allowed by rule {})", d.rule) }
}

/// A verdict in force follows the policy: a reload or a schedule that
/// turns a call's action around lifts its block, or blocks it, at once;
/// the change is told as a new verdict event naming the rule.
#[expect(clippy::too_many_arguments, reason = "the controller's parts, borrowed apart")]
fn follow_policy(
    cfg: &Config,
    sessions: &mut Sessions,
    canonical: &FlowKey,
    conv: &mut Conv,
    seen: &Seen,
    now_ns: u64,
    unix_ns: u64,
    out: &mut PollOutput,
) {
    let Some(v) = conv.verdict.as_ref().filter(|v| v.by_policy) else { return };
    let blockable = v.label == Label::Voip || cfg.block_one_way;
    let decision = decide(&cfg.policy, canonical, seen, unix_ns);
    let action = action_of(&decision, blockable);
    if action == v.action && decision.rule == v.rule {
        return;
    }
    let v = conv.verdict.as_mut().expect("checked above");
    let was = v.action;
    v.action = action;
    v.reason =
        format!("{} (now rule {}: {})", v.reason.split(" (now rule ").next().unwrap_or_default(), decision.rule, decision.action.name());
    v.rule = decision.rule;
    if was != action {
        match listing(cfg, action, v.expires_ns, now_ns) {
            // Blocked and marked are both blocklist entries: one write
            // turns one into the other.
            Some(entry) => out.commands.push(Command::Block { keys: dir_keys(canonical), entry, refresh: false }),
            None => out.commands.push(Command::Unblock { keys: dir_keys(canonical) }),
        }
        sessions.set_blocked(conv.session(), action == Action::Blocked);
    }
    let members = sessions.members(conv.session());
    let v = conv.verdict.as_ref().expect("checked above");
    out.events.push(event(EventKind::Verdict, now_ns, canonical, conv, seen, v, now_ns, members));
}

/// Socket prints: hashes, 32 bits of them.
type Prints = std::collections::HashSet<u32, foldhash::fast::RandomState>;

/// Sockets that send voice on one leg and receive voice on another, with
/// the two legs alike (the same codec both ways): (socket, [the leg it
/// sends on, the leg it receives on]), from the conversations at
/// `legs` ([place, its sender's print]), whose receivers' prints are
/// `receivers`.
fn pair_legs(legs: &[[u32; 2]], receivers: &Prints, convs: &Convs, t: &Thresholds) -> Vec<(Socket, [LegAt; 2])> {
    let mut pairs = Vec::new();
    let leg_at = |p: u32| convs.at(p).and_then(|(k, c)| LegAt::of(&k, p, c, t));
    // Only a socket that receives on one leg can pair: index the senders
    // among those alone, found by print without reading their
    // conversations (a poll may hold a million one-way legs, of which a
    // handful meet at a socket). A print that matches by chance adds a
    // sender no leg receives at: the pairing below is by socket.
    let mut sending: HashMap<Socket, Vec<LegAt>, foldhash::fast::RandomState> = HashMap::default();
    for l in legs.iter().filter(|[_, sender]| receivers.contains(sender)).filter_map(|&[p, _]| leg_at(p)) {
        sending.entry(l.sender).or_default().push(l);
    }
    if sending.is_empty() {
        return pairs;
    }
    for l in legs.iter().filter_map(|&[p, _]| leg_at(p)) {
        let Some(outs) = sending.get(&l.receiver) else { continue };
        let alike = |o: &&LegAt| {
            o.key != l.key && ratio(o.leg.pps, l.leg.pps) <= t.max_rate_ratio && ratio(o.leg.mean_size, l.leg.mean_size) <= t.max_size_ratio
        };
        if let Some(o) = outs.iter().find(alike) {
            pairs.push((l.receiver, [*o, l]));
        }
    }
    pairs
}

/// Whether a flow seen for the first time deserves state yet.
fn worth_tracking(c: &FlowCounters, min_packets: u32) -> bool {
    c.packets.saturating_add(c.empty).saturating_add(c.dropped) >= min_packets || c.rtp_ok > 0 || c.stun > 0 || c.dtls > 0 || c.rtcp > 0
}

#[expect(clippy::too_many_arguments, reason = "the controller's parts, borrowed apart")]
fn event(
    kind: EventKind,
    at_ns: u64,
    canonical: &FlowKey,
    conv: &Conv,
    seen: &Seen,
    v: &conv::ActiveVerdict,
    end_ns: u64,
    members: Vec<FlowKey>,
) -> Event {
    let init = v.sender.unwrap_or_else(|| Conv::initiator(seen));
    let key = dir_keys(canonical)[init];
    let ifindex = seen.0[init].as_ref().map_or(0, |c| c.ifindex);
    let first_seen_ns = Conv::first_seen(seen);
    let (a, b) = (Conv::totals_of(seen, init), Conv::totals_of(seen, 1 - init));
    Event {
        kind,
        at_ns,
        key,
        ifindex,
        label: v.label,
        action: v.action,
        basis: v.basis,
        reason: v.reason.clone(),
        rule: v.rule.clone(),
        session: conv.session().unwrap_or(SessionId(0)),
        conversations: members,
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
    use voipdetect_common::{
        features::{new_flow, update},
        hints::Hint,
        parse::Packet,
    };

    use super::*;
    use crate::{engine::table::Slots, event::Mode};

    const MS: u64 = 1_000_000;

    /// One poll at `now_ns` as the live driver makes it: `flows` (each as
    /// it is now) written to the table, listed to the controller, then
    /// the poll finished reading the table.
    fn poll(ctl: &mut Controller, table: &mut Slots, flows: &[(FlowKey, &FlowCounters)], now_ns: u64) -> PollOutput {
        for (k, c) in flows {
            *table.get_or_insert_with(k, || **c) = **c;
        }
        for (at, k, c, word) in table.iter().filter(|(_, k, ..)| flows.iter().any(|(f, _)| f == *k)) {
            let mut w = word.get();
            ctl.observe(at, k, c, &mut w, table);
            word.set(w);
        }
        ctl.finish_poll(now_ns, table)
    }

    fn key() -> FlowKey {
        FlowKey { src: [1; 16], dst: [2; 16], sport: 4000, dport: 5000, proto: 17, family: 6, _pad: [0; 2] }
    }

    /// Both directions send 172 B every 20 ms while `active(t)`; the
    /// controller polls every 250 ms until `end_ms`.
    fn drive(ctl: &mut Controller, end_ms: u64, active: impl Fn(u64) -> bool) -> Vec<(u64, PollOutput)> {
        drive_with(ctl, end_ms, active, |_, _, _| {})
    }

    /// `drive`, calling `after_poll` with the controller, the time (ms)
    /// and the flow table after every poll.
    fn drive_with(
        ctl: &mut Controller,
        end_ms: u64,
        active: impl Fn(u64) -> bool,
        mut after_poll: impl FnMut(&mut Controller, u64, &Slots),
    ) -> Vec<(u64, PollOutput)> {
        let (a, b) = (key(), key().reversed());
        let mut ca = new_flow(&a, MS, 3);
        let mut cb = new_flow(&b, MS, 4);
        let mut outs = Vec::new();
        let mut forgotten = false;
        let mut table = Slots::default();
        let mut t = MS;
        while t <= end_ms * MS {
            if (t - MS).is_multiple_of(20 * MS) && active(t / MS) {
                for (k, c) in [(a, &mut ca), (b, &mut cb)] {
                    let p = Packet { key: k, payload_off: 0, payload_len: 172, l3_off: 0, tcp_flags: 0 };
                    update(c, &p, Hint::None, t);
                }
            }
            if t.is_multiple_of(250 * MS) {
                // Forgotten flows are deleted from the kernel map: no longer read.
                let listed = if forgotten { Vec::new() } else { vec![(a, &ca), (b, &cb)] };
                let out = poll(ctl, &mut table, &listed, t);
                forgotten |= out.commands.iter().any(|c| matches!(c, Command::Forget { .. }));
                outs.push((t / MS, out));
                after_poll(ctl, t / MS, &table);
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
            |ctl, t, table| {
                if t == 3_000 {
                    lifted.extend(ctl.lift(&canonical, t * MS, table));
                    assert_eq!(ctl.lift(&canonical, t * MS, table), None, "lifted twice");
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
        Config { ttl_ns: 4_000 * MS, idle_ns: 3_000 * MS, ..Config::with_mode(mode) }
    }

    /// A conversation with nothing pending sleeps: polls pass it over
    /// until its next packet wakes it, and it is still forgotten when idle.
    #[test]
    fn quiet_conversations_sleep_until_their_next_packet() {
        let mut ctl = Controller::new(cfg(Mode::Monitor));
        let k = key();
        let mut c = new_flow(&k, MS, 3);
        let send = |c: &mut FlowCounters, from_ms: u64| {
            // A second of 1200-byte packets every 100 ms: no call.
            for i in 0..10 {
                let p = Packet { key: k, payload_off: 0, payload_len: 1200, l3_off: 0, tcp_flags: 0 };
                update(c, &p, Hint::None, (from_ms + 100 * i) * MS);
            }
        };
        send(&mut c, 1);
        let mut table = Slots::default();
        let mut poll = |ctl: &mut Controller, c: &FlowCounters, at_ms: u64| poll(ctl, &mut table, &[(k, c)], at_ms * MS);
        for at in [1_000, 2_000, 2_250] {
            poll(&mut ctl, &c, at);
        }
        assert_eq!(ctl.dormant(), 0, "its last window had packets");
        poll(&mut ctl, &c, 3_000);
        assert_eq!((ctl.conversations(), ctl.dormant()), (1, 1), "asleep after a window without packets");
        let out = poll(&mut ctl, &c, 3_250);
        assert!(out.events.is_empty() && out.commands.is_empty());
        assert_eq!(ctl.dormant(), 1, "unchanged counters do not wake it");
        send(&mut c, 3_300);
        poll(&mut ctl, &c, 4_250);
        assert_eq!(ctl.dormant(), 0, "a packet wakes it");
        poll(&mut ctl, &c, 5_250);
        assert_eq!(ctl.dormant(), 1);
        // Idle 3 s after its last packet (4.2 s): forgotten while asleep.
        let out = poll(&mut ctl, &c, 7_500);
        assert!(out.commands.iter().any(|c| matches!(c, Command::Forget { .. })), "{:?}", out.commands);
        assert_eq!(ctl.conversations(), 0);
    }

    /// A plain (TCP) conversation sleeps once a poll passes without a
    /// packet, and its window restarts at the next: after a bulk transfer,
    /// a keep-alive every few seconds does not get the connection promoted
    /// to media for being slow on average, while a steady slow stream
    /// still does.
    #[test]
    fn plain_conversations_sleep_and_slow_keepalives_stay_plain() {
        let mut ctl = Controller::new(Config { idle_ns: 60_000 * MS, ..cfg(Mode::Monitor) });
        let k = FlowKey { proto: voipdetect_common::flow::PROTO_TCP, ..key() };
        let mut c = new_flow(&k, MS, 3);
        assert_eq!(c.media, 0, "TCP starts plain");
        let send = |c: &mut FlowCounters, at_ms: u64| {
            let p = Packet { key: k, payload_off: 0, payload_len: 40, l3_off: 0, tcp_flags: 0 };
            voipdetect_common::features::update_plain(c, &p, at_ms * MS);
        };
        // A bulk transfer: 1 000 packets in the first 250 ms (too fast for media).
        for i in 0..1_000u64 {
            let p = Packet { key: k, payload_off: 0, payload_len: 1200, l3_off: 0, tcp_flags: 0 };
            voipdetect_common::features::update_plain(&mut c, &p, MS + i * MS / 5);
        }
        let mut promoted = false;
        let mut table = Slots::default();
        // Then a 40-byte keep-alive every 3 s for 30 s, polls every 250 ms.
        for at in (250..30_000).step_by(250) {
            if at % 3_000 == 250 {
                send(&mut c, at - 100);
            }
            let out = poll(&mut ctl, &mut table, &[(k, &c)], at * MS);
            promoted |= out.commands.iter().any(|c| matches!(c, Command::Media { on: true, .. }));
            if at % 3_000 == 1_000 {
                assert_eq!((ctl.conversations(), ctl.dormant()), (1, 1), "asleep between keep-alives at {at} ms");
            }
        }
        assert!(!promoted, "a keep-alive every 3 s is not media");
        // 20 packets a second, steadily: promoted.
        for at in (30_000..33_000).step_by(250) {
            for i in 0..5 {
                send(&mut c, at - 250 + 50 * i);
            }
            let out = poll(&mut ctl, &mut table, &[(k, &c)], at * MS);
            promoted |= out.commands.iter().any(|c| matches!(c, Command::Media { on: true, .. }));
        }
        assert!(promoted, "a steady slow stream is promoted");
    }

    /// Mark mode lists the call with its DSCP instead of a drop, refreshes
    /// it the same way and releases it at the end; no drop holds.
    #[test]
    fn mark_mode_lists_the_call_for_marking() {
        let mut ctl = Controller::new(Config { mark_dscp: 34, ..cfg(Mode::Mark) });
        let outs = drive(&mut ctl, 20_000, |t| t < 8_000);
        let commands: Vec<&Command> = outs.iter().flat_map(|(_, o)| &o.commands).collect();
        let listed: Vec<&BlockEntry> =
            commands.iter().filter_map(|c| if let Command::Block { entry, .. } = c { Some(entry) } else { None }).collect();
        assert!(!listed.is_empty() && listed.iter().all(|e| e.mark == voipdetect_common::dscp::mark(34)), "{listed:?}");
        assert!(commands.iter().any(|c| matches!(c, Command::Unblock { .. })), "released at the end");
        assert!(
            !commands.iter().any(|c| matches!(c, Command::Hold { key, .. } if key.kind != voipdetect_common::flow::HOLD_HOST)),
            "no drop holds"
        );
        let v = outs.iter().flat_map(|(_, o)| &o.events).find(|e| e.kind == EventKind::Verdict).unwrap();
        assert_eq!((v.action, v.rule.as_str()), (Action::Marked, "default"));
    }

    /// A rule with a schedule blocks the call while it is on; when it ends
    /// the block is lifted at once; a reload that blocks everything blocks
    /// it again. Each change is a verdict event naming the rule.
    #[test]
    fn verdicts_follow_the_rules_their_schedules_and_reloads() {
        use crate::policy::{Rule, Schedule};
        let mut night = Rule::new("night", RuleAction::Block);
        night.networks = vec!["::/0".parse().unwrap()];
        night.schedule = Some(Schedule::parse(&[], Some("00:00-00:30"), Some("UTC")).unwrap());
        let mut ctl = Controller::new(Config { policy: Policy { rules: vec![night], default: RuleAction::Monitor }, ..cfg(Mode::Monitor) });
        // Poll time 0 is Monday 2026-11-30 00:29:55 UTC: the rule ends 5 s in.
        const MONDAY_MIDNIGHT: i128 = 1_795_996_800_000_000_000;
        ctl.set_wall_offset(MONDAY_MIDNIGHT + i128::from(29 * 60 + 55) * 1_000_000_000);
        let outs = drive_with(
            &mut ctl,
            14_000,
            |t| t < 8_000,
            |ctl, t, _| {
                if t == 6_000 {
                    ctl.set_policy(Policy { rules: Vec::new(), default: RuleAction::Block });
                }
            },
        );
        let verdicts: Vec<(u64, Action, &str)> = outs
            .iter()
            .flat_map(|(t, o)| o.events.iter().filter(|e| e.kind == EventKind::Verdict).map(move |e| (*t, e.action, e.rule.as_str())))
            .collect();
        assert!(verdicts.len() == 3, "{verdicts:?}");
        assert!(verdicts[0].0 < 5_000 && verdicts[0].1 == Action::Blocked && verdicts[0].2 == "night", "{verdicts:?}");
        assert_eq!(&verdicts[1..], [(5_000, Action::Reported, "default"), (6_250, Action::Blocked, "default")]);
        let commands = |t: u64| outs.iter().find(|(at, _)| *at == t).map(|(_, o)| o.commands.clone()).unwrap_or_default();
        assert!(commands(5_000).iter().any(|c| matches!(c, Command::Unblock { .. })), "{:?}", commands(5_000));
        assert!(commands(6_250).iter().any(|c| matches!(c, Command::Block { refresh: false, .. })), "{:?}", commands(6_250));
        let release: Vec<_> = outs.iter().flat_map(|(_, o)| &o.events).filter(|e| e.kind == EventKind::Release).collect();
        assert_eq!(release.len(), 1);
        assert_eq!((release[0].action, release[0].rule.as_str()), (Action::Blocked, "default"));
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
                    Command::Hold { .. } | Command::Unhold { .. } | Command::Media { .. } => {}
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
        cfg.policy.push_allowlist(&crate::policy::Allowlist { cidrs: Vec::new(), ports: vec![5000] });
        let mut ctl = Controller::new(cfg);
        let outs = drive(&mut ctl, 4_000, |_| true);
        let events: Vec<_> = outs.iter().flat_map(|(_, o)| &o.events).collect();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].action, Action::Reported);
        assert!(events[0].reason.ends_with("(allowlisted)"), "{}", events[0].reason);
        assert!(outs.iter().all(|(_, o)| !o.commands.iter().any(|c| matches!(c, Command::Block { .. }))));
    }

    #[test]
    fn monitor_mode_reports_without_blocking() {
        let mut ctl = Controller::new(cfg(Mode::Monitor));
        let outs = drive(&mut ctl, 6_000, |_| true);
        let events: Vec<_> = outs.iter().flat_map(|(_, o)| &o.events).collect();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].action, Action::Reported);
        // Nothing listed, nothing dropped: the only hold makes the host's
        // new conversations media.
        for c in outs.iter().flat_map(|(_, o)| &o.commands) {
            match c {
                Command::Forget { .. } | Command::Unhold { .. } => {}
                Command::Hold { key, .. } => assert_eq!(key.kind, voipdetect_common::flow::HOLD_HOST, "{c:?}"),
                other => panic!("{other:?}"),
            }
        }
    }

    /// A conversation whose slots the kernel gave to other flows (evicted
    /// under pressure) is dropped without a word to the kernel, unless a
    /// verdict still has to run out; then it is released and unblocked
    /// at its expiry like any other.
    #[test]
    fn a_conversation_whose_slots_are_gone_is_dropped_unless_a_verdict_holds_it() {
        let evict = |table: &mut Slots| {
            for k in [key(), key().reversed()] {
                table.remove(&k);
            }
        };
        // Nothing pending: gone at the next poll, nothing forgotten.
        let mut ctl = Controller::new(cfg(Mode::Monitor));
        let mut table = Slots::default();
        let mut c = new_flow(&key(), MS, 3);
        for i in 0..10 {
            let p = Packet { key: key(), payload_off: 0, payload_len: 1200, l3_off: 0, tcp_flags: 0 };
            update(&mut c, &p, Hint::None, (1 + 100 * i) * MS);
        }
        poll(&mut ctl, &mut table, &[(key(), &c)], 1_000 * MS);
        assert_eq!(ctl.conversations(), 1);
        evict(&mut table);
        let out = poll(&mut ctl, &mut table, &[], 1_250 * MS);
        assert_eq!(ctl.conversations(), 0);
        assert!(out.commands.is_empty(), "{:?}", out.commands);
        // A blocked call evicted: kept until its verdict expires, then
        // unblocked and released.
        let mut ctl = Controller::new(cfg(Mode::Block));
        let outs = drive(&mut ctl, 3_000, |_| true);
        assert!(outs.iter().any(|(_, o)| o.commands.iter().any(|c| matches!(c, Command::Block { .. }))), "blocked");
        let mut table = Slots::default();
        let mut released = Vec::new();
        for t in (3_250..10_000).step_by(250) {
            let out = poll(&mut ctl, &mut table, &[], t * MS);
            released.extend(out.commands.iter().filter(|c| matches!(c, Command::Unblock { .. })).map(|_| t));
        }
        assert_eq!(released.len(), 1, "{released:?}");
        assert_eq!(ctl.conversations(), 0);
    }

    #[test]
    fn a_recreated_kernel_entry_restarts_its_window() {
        let mut ctl = Controller::new(cfg(Mode::Monitor));
        let mut table = Slots::default();
        let mut c = FlowCounters::new(MS, 1);
        c.packets = 1_000_000;
        c.bytes = 1 << 40;
        let list = |ctl: &mut Controller, table: &Slots| {
            for (at, k, c, word) in table.iter() {
                let mut w = word.get();
                ctl.observe(at, k, c, &mut w, table);
                word.set(w);
            }
        };
        table.get_or_insert_with(&key(), || c);
        list(&mut ctl, &table);
        // Evicted and recreated: the slot's next generation, counting afresh.
        table.remove(&key());
        table.get_or_insert_with(&key(), || FlowCounters::new(2 * MS, 1));
        list(&mut ctl, &table);
        let out = ctl.finish_poll(1_500 * MS, &table);
        assert!(out.events.is_empty());
        assert_eq!(ctl.conversations(), 1);
    }
}
