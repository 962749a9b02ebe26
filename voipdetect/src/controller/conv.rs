//! One conversation as the controller keeps it: both directions' counters
//! at the start of the window and where to read the latest ones, the run
//! of call-like windows, the one-way leg it may be, and its verdict with
//! its lifetime.

use voipdetect_common::FlowCounters;

use super::{
    config::Config,
    table::{FlowTable, SlotRef},
};
use crate::{
    classifier::{Classifier, DirKind, Finding, Hints, Leg, WindowJudgement},
    clock::secs,
    event::{Action, Basis, Label, SessionId},
    window::{DirWindow, Snap},
};

/// What the controller keeps about one direction between polls: its own
/// figures and where its counters are (the latest are read from there when
/// the conversation is judged: see [`Seen`]).
#[derive(Clone, Debug, Default)]
pub(super) struct DirState {
    /// Counters at the start of the current window.
    start: Snap,
    /// In-sequence RTP packets of the previous window: structure is judged
    /// over two windows, so a slow stream (WhatsApp sends 8 packets/s) is
    /// not cut in half by a window edge.
    prev_rtp_ok: u32,
    at: SlotRef,
    /// Its latest packet as of the latest poll that listed it: a
    /// conversation asleep is told by it whether a listing is news, and
    /// idle conversations are found without reading their slots.
    pub(super) last_seen_ns: u64,
}

impl DirState {
    fn fresh(at: SlotRef, c: &FlowCounters) -> Self {
        Self { start: Snap::default(), prev_rtp_ok: 0, at, last_seen_ns: c.last_seen_ns }
    }
}

/// Both directions' counters as read from their slots for the poll in
/// progress: None for a direction the conversation does not have, or
/// whose slot has since taken another flow (the kernel evicted it: it
/// counts as gone until the flow comes back).
pub(super) struct Seen(pub(super) [Option<FlowCounters>; 2]);

/// A verdict in force.
#[derive(Clone, Debug)]
pub(super) struct ActiveVerdict {
    pub(super) label: Label,
    pub(super) action: Action,
    pub(super) basis: Basis,
    pub(super) reason: String,
    /// The policy rule that decided the action ("default" when none).
    pub(super) rule: String,
    /// Whether the policy may change the action: not once an operator
    /// lifted the block by hand.
    pub(super) by_policy: bool,
    pub(super) pps: f64,
    pub(super) mean_size: f64,
    /// One-way media: the direction (0 canonical, 1 reverse) that sends.
    pub(super) sender: Option<usize>,
    pub(super) expires_ns: u64,
    /// Latest packet time (either direction, dropped ones included) seen.
    pub(super) last_activity_ns: u64,
}

// A million conversations are a million of each: growth here is memory
// and poll time (BENCHMARKS.md).
#[cfg(target_pointer_width = "64")]
const _: () = assert!(size_of::<Conv>() <= 120 && size_of::<LegRun>() == 12 && size_of::<DirState>() <= 64);

/// [`Conv::session`] when there is none: session ids have 48 bits.
const NO_SESSION: u64 = u64::MAX;

/// What [`Conv::upkeep`] did to the verdict.
pub(super) enum Upkeep {
    /// Nothing to tell.
    None,
    /// Extended while the conversation goes on.
    Refreshed,
    /// Expired: the conversation was quiet for the whole TTL.
    Released(Box<ActiveVerdict>),
}

/// One-way voice windows in a row: the latest window's [`Leg`], kept in
/// 12 bytes rather than 48 (every conversation has one). The run
/// saturates at 255 windows, the most `windows_needed` may ask for.
#[derive(Clone, Copy, Debug)]
pub(super) struct LegRun {
    pps: f32,
    mean_size: f32,
    cadence_ms: u16,
    /// The sending direction, or [`LegRun::NONE`].
    sender: u8,
    pub(super) streak: u8,
}

impl Default for LegRun {
    fn default() -> Self {
        Self { pps: 0.0, mean_size: 0.0, cadence_ms: 0, sender: Self::NONE, streak: 0 }
    }
}

impl LegRun {
    const NONE: u8 = u8::MAX;

    /// The latest window's leg, if the run goes on.
    pub(super) fn leg(&self) -> Option<Leg> {
        (self.sender != Self::NONE).then(|| Leg {
            sender: usize::from(self.sender),
            pps: f64::from(self.pps),
            cadence_ms: u32::from(self.cadence_ms),
            mean_size: f64::from(self.mean_size),
        })
    }

    /// The run after a window whose leg was `leg`.
    fn next(self, leg: Option<Leg>) -> Self {
        let Some(l) = leg else { return Self::default() };
        let streak = if usize::from(self.sender) == l.sender { self.streak.saturating_add(1) } else { 1 };
        Self {
            pps: l.pps as f32,
            mean_size: l.mean_size as f32,
            cadence_ms: u16::try_from(l.cadence_ms).unwrap_or(u16::MAX),
            sender: u8::try_from(l.sender).unwrap_or(Self::NONE),
            streak,
        }
    }
}

#[derive(Clone, Debug)]
pub(super) struct Conv {
    /// The direction seen first (the [`Conv::first_dir`]'s), in place: a
    /// conversation with one direction (scans, floods, lookups, one-way
    /// streams) needs no allocation, and a poll finds its counters' slot
    /// without a second cache miss.
    first: DirState,
    /// The other direction, once seen.
    second: Option<Box<DirState>>,
    pub(super) win_start_ns: u64,
    /// Consecutive call-like windows, and which sides spoke during them.
    streak: u16,
    talked: [bool; 2],
    /// STUN/DTLS/RTCP seen so far in this conversation.
    pub(super) hints: Hints,
    pub(super) verdict: Option<Box<ActiveVerdict>>,
    /// Created during the poll in progress. Its first window starts at the
    /// earliest first packet of the directions seen in that poll, whichever
    /// the map happened to list first.
    pub(super) fresh: bool,
    pub(super) leg: LegRun,
    /// The session this conversation belongs to, from its first verdict
    /// on; [`NO_SESSION`] before (8 bytes where an `Option` takes 16).
    session: u64,
    /// Whether the latest window judged (or, before the first, the poll
    /// so far) carried payload: a conversation sleeps only after a whole
    /// window without.
    pub(super) busy: bool,
    /// The kernel's media flag of each direction (see
    /// `FlowCounters::media`) as of the latest poll that listed it, or as
    /// the controller asked for it since: a bit per direction.
    media: u8,
    /// Which direction `first` is (0 canonical, 1 reverse), or
    /// [`Conv::NO_DIR`] before any.
    first_dir: u8,
}

impl Conv {
    const NO_DIR: u8 = u8::MAX;

    pub(super) fn new(first_seen_ns: u64) -> Self {
        Self {
            first: DirState::default(),
            second: None,
            first_dir: Self::NO_DIR,
            win_start_ns: first_seen_ns,
            streak: 0,
            talked: [false; 2],
            hints: Hints::default(),
            verdict: None,
            fresh: true,
            leg: LegRun::default(),
            session: NO_SESSION,
            busy: false,
            media: 0,
        }
    }

    /// Direction `i`'s state, if it has been seen.
    fn dir(&self, i: usize) -> Option<&DirState> {
        match self.first_dir {
            Self::NO_DIR => None,
            f if usize::from(f) == i => Some(&self.first),
            _ => self.second.as_deref(),
        }
    }

    fn dir_mut(&mut self, i: usize) -> Option<&mut DirState> {
        match self.first_dir {
            Self::NO_DIR => None,
            f if usize::from(f) == i => Some(&mut self.first),
            _ => self.second.as_deref_mut(),
        }
    }

    /// Both directions' states (canonical, reverse).
    fn dirs(&self) -> [Option<&DirState>; 2] {
        [self.dir(0), self.dir(1)]
    }

    /// Sets direction `i`'s state.
    fn set_dir(&mut self, i: usize, d: DirState) {
        match self.first_dir {
            Self::NO_DIR => {
                self.first = d;
                self.first_dir = i as u8;
            }
            f if usize::from(f) == i => self.first = d,
            _ => self.second = Some(Box::new(d)),
        }
    }

    /// The slots of its directions.
    pub(super) fn slots(&self) -> impl Iterator<Item = SlotRef> + '_ {
        let first = (self.first_dir != Self::NO_DIR).then_some(self.first.at);
        first.into_iter().chain(self.second.as_ref().map(|d| d.at))
    }

    /// Both directions' latest counters, from their slots.
    pub(super) fn seen(&self, table: &impl FlowTable) -> Seen {
        let mut seen = Seen([None, None]);
        self.read_seen(table, &mut seen);
        seen
    }

    /// [`Conv::seen`] into `seen`, whose counters are overwritten in place
    /// (the poll reads them for every conversation into one `Seen`).
    #[inline]
    pub(super) fn read_seen(&self, table: &impl FlowTable, seen: &mut Seen) {
        for (i, c) in seen.0.iter_mut().enumerate() {
            match self.dir(i) {
                Some(d) => table.read_into(d.at, c),
                None => *c = None,
            }
        }
    }

    /// Whether no direction's slot holds its flow any more.
    pub(super) fn gone(seen: &Seen) -> bool {
        seen.0[0].is_none() && seen.0[1].is_none()
    }

    /// Records that direction `idx` is in slot `at` with counters `c` in
    /// this poll; the poll before ended at `last_poll_ns`. `sleep` is the
    /// conversation's sleep word (see [`Conv::settle`]), cleared if this
    /// wakes it.
    pub(super) fn observe(&mut self, idx: usize, at: SlotRef, c: &FlowCounters, last_poll_ns: u64, sleep: &mut u64) {
        if self.fresh {
            self.win_start_ns = self.win_start_ns.min(c.first_seen_ns);
        }
        if *sleep != 0 {
            if self.dir(idx).is_some_and(|d| d.at == at && d.last_seen_ns == c.last_seen_ns) {
                return;
            }
            // Awake: its window starts where the quiet ended, at the last
            // poll that saw nothing new (where the windows it slept
            // through, each empty, would have left it).
            *sleep = 0;
            self.win_start_ns = self.win_start_ns.max(last_poll_ns);
        }
        match self.dir_mut(idx) {
            Some(d) if d.at == at => d.last_seen_ns = c.last_seen_ns,
            // New direction, or the kernel evicted and recreated the entry
            // (in another slot, or the same one a generation on): its
            // counters restarted from zero.
            _ => self.set_dir(idx, DirState::fresh(at, c)),
        }
        self.set_media_of(idx, c.media != 0);
    }

    fn set_media_of(&mut self, idx: usize, media: bool) {
        let bit = 1 << idx;
        self.media = if media { self.media | bit } else { self.media & !bit };
    }

    pub(super) fn session(&self) -> Option<SessionId> {
        (self.session != NO_SESSION).then_some(SessionId(self.session))
    }

    pub(super) fn set_session(&mut self, id: SessionId) {
        debug_assert_ne!(id.0, NO_SESSION);
        self.session = id.0;
    }

    pub(super) fn last_activity(&self) -> u64 {
        // Written out: every poll asks it of every conversation.
        match (self.first_dir, &self.second) {
            (Self::NO_DIR, _) => 0,
            (_, None) => self.first.last_seen_ns,
            (_, Some(d)) => self.first.last_seen_ns.max(d.last_seen_ns),
        }
    }

    pub(super) fn first_seen(seen: &Seen) -> u64 {
        match &seen.0 {
            [Some(a), Some(b)] => a.first_seen_ns.min(b.first_seen_ns),
            [Some(c), None] | [None, Some(c)] => c.first_seen_ns,
            [None, None] => 0,
        }
    }

    /// Index of the direction whose first packet came first.
    pub(super) fn initiator(seen: &Seen) -> usize {
        match &seen.0 {
            [Some(a), Some(b)] if b.first_seen_ns < a.first_seen_ns => 1,
            [None, Some(_)] => 1,
            _ => 0,
        }
    }

    /// Whether the kernel counts this conversation plain (no gaps, no
    /// header checks) in any direction: it cannot be judged until the
    /// controller makes it media.
    pub(super) fn plain(&self) -> bool {
        (0..2).any(|i| self.dir(i).is_some() && self.media & 1 << i == 0)
    }

    /// Records the media flag the controller asked the kernel for.
    pub(super) fn set_media(&mut self, media: bool) {
        for i in 0..2 {
            if self.dir(i).is_some() {
                self.set_media_of(i, media);
            }
        }
    }

    /// Whether a call may still be found here: no verdict yet, or only
    /// one-way media (the other side may start talking).
    pub(super) fn undecided(&self) -> bool {
        self.verdict.as_ref().is_none_or(|v| v.label == Label::Media)
    }

    /// In-sequence media headers each direction has shown since it began
    /// (the kernel's 16-bit counters, which the controller sees long
    /// before they wrap).
    pub(super) fn rtp_seen(seen: &Seen) -> [u32; 2] {
        seen.0.each_ref().map(|c| c.as_ref().map_or(0, |c| u32::from(c.rtp_ok)))
    }

    /// Both directions' activity in the window so far, written into `out`
    /// (two 152-byte windows: returned by value they were copied out
    /// again, for every conversation every poll).
    pub(super) fn windows(&self, seen: &Seen, now_ns: u64, out: &mut [Option<DirWindow>; 2]) {
        for ((w, d), c) in out.iter_mut().zip(self.dirs()).zip(&seen.0) {
            let (Some(d), Some(c)) = (d, c) else {
                *w = None;
                continue;
            };
            let from = self.win_start_ns.max(c.first_seen_ns);
            let span = secs(now_ns.saturating_sub(from));
            // Written in place: a window is 152 bytes, built for every
            // conversation every poll.
            let w = w.get_or_insert_with(DirWindow::default);
            w.set_since(&d.start, c, span);
            w.rtp_ok += d.prev_rtp_ok;
            w.active_s = secs(c.last_seen_ns.saturating_sub(from)).min(span);
        }
    }

    /// Structural evidence in the window so far (see `Classifier::early`),
    /// with one-way media held back until the stream has settled.
    pub(super) fn early(
        &self,
        cfg: &Config,
        classifier: &Classifier,
        proto: u8,
        dirs: [Option<&DirWindow>; 2],
        seen: &Seen,
        now_ns: u64,
    ) -> Option<Finding> {
        if !self.undecided() {
            return None;
        }
        let t = &cfg.thresholds;
        // Worked out when needed: most conversations have no hints and no
        // finding, and this runs for every one every poll.
        let age_s = || secs(now_ns.saturating_sub(Self::first_seen(seen)));
        let hints = if self.hints.any() && age_s() <= t.hinted_within_s { self.hints } else { Hints::default() };
        let finding = classifier.early(proto, dirs, hints)?;
        let settled = age_s() >= t.one_way_settle_s || secs(now_ns.saturating_sub(self.last_activity())) >= t.one_way_ended_s;
        match finding {
            Finding::OneWay { .. } if !settled => None,
            // One-way media already reported: only a call changes that.
            Finding::OneWay { .. } if self.verdict.is_some() => None,
            f => Some(f),
        }
    }

    /// Judges a complete window by behaviour; a call once
    /// `windows_needed` call-like windows ran in a row with both sides
    /// having spoken.
    pub(super) fn judge(&mut self, cfg: &Config, classifier: &Classifier, proto: u8, kinds: [DirKind; 2]) -> Option<Finding> {
        // The run is complete only after a call-like window (a held one
        // changes neither the streak nor who talked), so its reason is
        // this window's: nothing of it needs keeping between windows.
        let reason = match classifier.judge_kinds(proto, kinds) {
            WindowJudgement::Media { reason } => {
                self.streak = self.streak.saturating_add(1);
                self.talked = [true; 2];
                reason
            }
            WindowJudgement::Half { talker, reason } => {
                self.streak = self.streak.saturating_add(1);
                self.talked[talker] = true;
                reason
            }
            WindowJudgement::Hold => return None,
            WindowJudgement::Other => {
                self.streak = 0;
                self.talked = [false; 2];
                return None;
            }
        };
        if u32::from(self.streak) >= cfg.thresholds.windows_needed && self.talked == [true; 2] {
            let basis = if reason.contains("video") { Basis::Video } else { Basis::Behaviour };
            return Some(Finding::Call { reason, basis });
        }
        None
    }

    /// Follows the run of one-way voice windows (called on complete windows).
    pub(super) fn track_leg(&mut self, leg: Option<Leg>) {
        self.leg = self.leg.next(leg);
    }

    /// Extends the verdict while the conversation goes on and ends it once
    /// it has been quiet for a whole TTL.
    pub(super) fn upkeep(&mut self, cfg: &Config, now_ns: u64) -> Upkeep {
        let last_activity = self.last_activity();
        let Some(v) = self.verdict.as_mut() else { return Upkeep::None };
        let active = last_activity > v.last_activity_ns;
        v.last_activity_ns = v.last_activity_ns.max(last_activity);
        if now_ns >= v.expires_ns {
            let v = self.verdict.take().expect("checked above");
            self.streak = 0;
            self.talked = [false; 2];
            return Upkeep::Released(v);
        }
        if active && v.expires_ns - now_ns < cfg.ttl_ns / 2 {
            v.expires_ns = now_ns.saturating_add(cfg.ttl_ns);
            return Upkeep::Refreshed;
        }
        Upkeep::None
    }

    /// The sleep word for a conversation with nothing pending: no verdict,
    /// no session, nothing since its window started, and no run of windows,
    /// leg or structure carried from before. (Plain conversations sleep by
    /// their own rule: see `each_conv`.) Every poll until its next packet
    /// would then find an empty window and leave it as it is, so the polls
    /// can pass it over (the controller's work follows what changed, not
    /// what exists). 0 when something is pending.
    pub(super) fn settle(&self, seen: &Seen) -> u64 {
        let unchanged = |d: &DirState, c: &Option<FlowCounters>| c.as_ref().is_none_or(|c| d.start == Snap::of(c));
        // The counters compared last: a busy conversation is told by a flag.
        let quiet = self.verdict.is_none()
            && self.session().is_none()
            && !self.fresh
            && !self.busy
            && self.streak == 0
            && self.talked == [false; 2]
            && self.leg.leg().is_none()
            && !self.plain()
            && self.dirs().into_iter().zip(&seen.0).all(|(d, c)| d.is_none_or(|d| unchanged(d, c) && d.prev_rtp_ok == 0));
        if quiet { self.sleep() } else { 0 }
    }

    /// The sleep word of this conversation asleep: its latest activity,
    /// which the walk compares with the idle timeout without reading the
    /// conversation. (Never 0, which reads as awake, once it has packets:
    /// the clocks run from boot or the epoch.)
    pub(super) fn sleep(&self) -> u64 {
        self.last_activity()
    }

    /// Starts the next window at `now_ns`.
    pub(super) fn close_window(&mut self, windows: &[Option<DirWindow>; 2], seen: &Seen, now_ns: u64) {
        for (i, (w, c)) in windows.iter().zip(&seen.0).enumerate() {
            if let (Some(d), Some(w), Some(c)) = (self.dir_mut(i), w, c) {
                d.prev_rtp_ok = w.rtp_ok - d.prev_rtp_ok;
                d.start = Snap::of(c);
            }
        }
        self.win_start_ns = now_ns;
    }

    /// Packets (all kinds, dropped included) and payload bytes of direction `i`.
    pub(super) fn totals_of(seen: &Seen, i: usize) -> (u64, u64) {
        seen.0[i].as_ref().map_or((0, 0), |c| (u64::from(c.packets) + u64::from(c.empty) + u64::from(c.dropped), c.bytes))
    }
}

/// Payload rate and mean size of the directions at voice rate or more
/// (of the busier one when neither is).
pub(super) fn codec(dirs: [Option<&DirWindow>; 2], min_pps: f64) -> (f64, f64) {
    let speaking = |d: &&DirWindow| d.pps() >= min_pps;
    let busiest = dirs.into_iter().flatten().max_by(|a, b| a.pps().total_cmp(&b.pps()));
    let any_speaking = dirs.into_iter().flatten().any(|d| speaking(&d));
    // Without a vector: this runs for every conversation every window.
    let chosen = |d: &&DirWindow| if any_speaking { speaking(d) } else { busiest.is_some_and(|b| std::ptr::eq(*d, b)) };
    let (mut n, mut pps, mut packets, mut bytes) = (0u32, 0.0, 0u64, 0u64);
    for d in dirs.into_iter().flatten().filter(chosen) {
        n += 1;
        pps += d.pps();
        packets += u64::from(d.packets);
        bytes += d.bytes;
    }
    (pps / f64::from(n.max(1)), if packets > 0 { bytes as f64 / packets as f64 } else { 0.0 })
}

/// Combined payload rate and mean size of both directions.
pub(super) fn totals(dirs: [Option<&DirWindow>; 2]) -> (f64, f64) {
    let (mut pps, mut packets, mut bytes) = (0.0, 0u64, 0u64);
    for d in dirs.into_iter().flatten() {
        pps += d.pps();
        packets += u64::from(d.packets);
        bytes += d.bytes;
    }
    (pps, if packets > 0 { bytes as f64 / packets as f64 } else { 0.0 })
}
