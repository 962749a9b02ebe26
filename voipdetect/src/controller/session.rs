//! Sessions: the conversations of one call. A call app keeps one socket
//! (address and port) for its media while the 5-tuples around it change:
//! it sends to one relay and receives from another, moves to a new relay,
//! hops to a new local port, or falls back from UDP to TCP when its media
//! stops arriving. A session is anchored at that socket and, more loosely,
//! its host; every conversation a verdict is issued on joins one.
//!
//! Once a session is a call, its host stays under suspicion for the hold
//! time after the call's last packet: a new conversation of that host is
//! judged on lighter evidence (see `Classifier::held`). In block mode the
//! kernel also holds the anchor socket and the relays the call used: a new
//! conversation from that socket, or from the host to one of those relays,
//! is dropped from its first packet.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use voipdetect_common::{
    FlowKey, HoldEntry, HoldKey,
    flow::{PROTO_TCP, PROTO_UDP},
};

use super::config::Config;
use crate::{
    event::{Command, Label, SessionId},
    key::{Host, Socket},
};

/// A conversation joining a session with a new verdict.
#[derive(Clone, Copy, Debug)]
pub(super) struct Joining<'a> {
    pub(super) key: &'a FlowKey,
    /// The direction whose first packet came first.
    pub(super) initiator: usize,
    /// The session it is in already, if any.
    pub(super) current: Option<SessionId>,
    pub(super) anchor: Anchor,
    pub(super) label: Label,
    /// Its verdict blocks.
    pub(super) blocked: bool,
    pub(super) first_seen_ns: u64,
    /// Its payload rate per direction and mean size.
    pub(super) codec: (f64, f64),
}

/// Where a conversation joins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Anchor {
    /// The session anchored at this socket (found by pairing legs there).
    Socket(Socket),
    /// This session (a conversation of a host under suspicion).
    Session(SessionId),
    /// Work it out from the conversation's ends: a session either end
    /// anchors, else one of their hosts', else a new one at the end that
    /// looks like the user's.
    Guess,
}

#[derive(Debug)]
struct Session {
    anchor: Socket,
    members: BTreeSet<FlowKey>,
    /// Voip once any member is a call.
    label: Label,
    /// A member was blocked: the kernel holds the call's socket and relays.
    blocked: bool,
    /// An operator lifted a member's block: nothing is held any more.
    lifted: bool,
    last_activity_ns: u64,
    /// The call's payload rate per direction and mean size, from its first
    /// call verdict.
    codec: (f64, f64),
    /// Remote ends of the members over UDP, held in the kernel (block mode).
    relays: BTreeSet<Socket>,
    /// Holds written to the kernel, with the deadline each was written with.
    holds: BTreeMap<HoldKey, u64>,
}

/// Every session, and where to find them.
#[derive(Debug, Default)]
pub(super) struct Sessions {
    map: HashMap<SessionId, Session>,
    by_socket: HashMap<Socket, SessionId>,
    by_host: HashMap<Host, SessionId>,
    /// Mixed into session ids (0 in replay, so ids are reproducible).
    salt: u64,
}

/// A host under suspicion: its session, the session's socket, and the
/// call's payload rate per direction and mean size.
#[derive(Clone, Copy, Debug)]
pub(super) struct Suspect {
    pub(super) id: SessionId,
    anchor: Socket,
    pub(super) codec: (f64, f64),
}

/// The hosts under suspicion now.
pub(super) struct Suspects(HashMap<Host, Suspect>);

impl Suspects {
    /// The suspect either end's host is, if any, and whether that end is
    /// the session's own socket.
    pub(super) fn of(&self, k: &FlowKey) -> Option<(Suspect, bool)> {
        [true, false].iter().find_map(|&src| {
            let end = Socket::of(k, src);
            self.0.get(&end.host()).map(|s| (*s, s.anchor == end))
        })
    }

    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The end of a conversation that is most likely the user's socket: the
/// only one with an inside address, else the end that spoke first (the
/// client of a relay or server).
pub(super) fn local_end(k: &FlowKey, initiator: usize) -> Socket {
    let ends = [Socket::of(k, true), Socket::of(k, false)];
    match (ends[0].host().looks_inside(), ends[1].host().looks_inside()) {
        (true, false) => ends[0],
        (false, true) => ends[1],
        // The canonical key's source sends direction 0.
        _ => ends[initiator],
    }
}

/// A 48-bit id from the anchor and the session's start (ms), keyed by `salt`.
fn session_id(anchor: &Socket, first_seen_ns: u64, salt: u64) -> SessionId {
    use std::hash::{BuildHasher as _, Hash as _, Hasher as _};
    let mut h = foldhash::quality::FixedState::with_seed(salt).build_hasher();
    anchor.hash(&mut h);
    (first_seen_ns / 1_000_000).hash(&mut h);
    SessionId(h.finish() & 0xffff_ffff_ffff)
}

impl Sessions {
    pub(super) fn new(salt: u64) -> Self {
        Self { salt, ..Default::default() }
    }

    pub(super) fn len(&self) -> usize {
        self.map.len()
    }

    /// Hosts whose call was found and whose hold has not run out: sessions
    /// labelled a call, not lifted by an operator, active within `hold`.
    pub(super) fn suspects(&self, cfg: &Config, now_ns: u64) -> Suspects {
        let mut s = HashMap::new();
        for (id, sess) in &self.map {
            if sess.label == Label::Voip && !sess.lifted && sess.last_activity_ns.saturating_add(cfg.hold_ns) > now_ns {
                s.insert(sess.anchor.host(), Suspect { id: *id, anchor: sess.anchor, codec: sess.codec });
            }
        }
        Suspects(s)
    }

    /// Puts a conversation with a new verdict in a session and returns it.
    pub(super) fn join(&mut self, j: &Joining<'_>, now_ns: u64) -> SessionId {
        let Joining { key: k, initiator, current, anchor, label, blocked, first_seen_ns, codec } = *j;
        let ends = [Socket::of(k, true), Socket::of(k, false)];
        let found = current.filter(|id| self.map.contains_key(id)).or(match anchor {
            Anchor::Session(id) => self.map.contains_key(&id).then_some(id),
            Anchor::Socket(s) => self.by_socket.get(&s).copied(),
            Anchor::Guess => {
                ends.iter().find_map(|e| self.by_socket.get(e)).or_else(|| ends.iter().find_map(|e| self.by_host.get(&e.host()))).copied()
            }
        });
        let id = found.unwrap_or_else(|| {
            let at = match anchor {
                Anchor::Socket(s) => s,
                _ => local_end(k, initiator),
            };
            let mut id = session_id(&at, first_seen_ns, self.salt);
            while self.map.contains_key(&id) {
                id.0 = (id.0 + 1) & 0xffff_ffff_ffff;
            }
            self.map.insert(
                id,
                Session {
                    anchor: at,
                    members: BTreeSet::new(),
                    label,
                    blocked: false,
                    lifted: false,
                    last_activity_ns: now_ns,
                    codec,
                    relays: BTreeSet::new(),
                    holds: BTreeMap::new(),
                },
            );
            self.by_socket.entry(at).or_insert(id);
            self.by_host.entry(at.host()).or_insert(id);
            id
        });
        let s = self.map.get_mut(&id).expect("inserted or found above");
        s.members.insert(*k);
        if label == Label::Voip {
            s.label = Label::Voip;
        }
        if blocked {
            s.blocked = true;
        }
        // The far end of a call over UDP: where the call may come back to
        // from a new local port.
        if label == Label::Voip && k.proto == PROTO_UDP {
            let host = s.anchor.host();
            if let Some(far) = ends.iter().find(|e| e.host() != host) {
                s.relays.insert(*far);
            }
        }
        id
    }

    /// Conversations of session `id`, canonical keys in order.
    pub(super) fn members(&self, id: Option<SessionId>) -> Vec<FlowKey> {
        id.and_then(|id| self.map.get(&id)).map_or_else(Vec::new, |s| s.members.iter().copied().collect())
    }

    /// A forgotten conversation leaves its session.
    pub(super) fn leave(&mut self, k: &FlowKey, id: Option<SessionId>) {
        if let Some(s) = id.and_then(|id| self.map.get_mut(&id)) {
            s.members.remove(k);
        }
    }

    /// The policy blocked a member of session `id` (its holds start), or
    /// lifted the blocks (its drop holds end; the host stays a suspect).
    pub(super) fn set_blocked(&mut self, id: Option<SessionId>, blocked: bool) {
        if let Some(s) = id.and_then(|id| self.map.get_mut(&id)) {
            s.blocked = blocked;
        }
    }

    /// An operator lifted a block of session `id`: it and its holds end.
    pub(super) fn lift(&mut self, id: Option<SessionId>) {
        if let Some(s) = id.and_then(|id| self.map.get_mut(&id)) {
            s.lifted = true;
        }
    }

    /// After a poll: follows each session's activity, writes and refreshes
    /// its kernel holds in block mode, and ends it once no member has a
    /// verdict and its hold has run out. `member` tells a member's latest
    /// packet and whether it has a verdict (None: forgotten).
    pub(super) fn upkeep(
        &mut self,
        cfg: &Config,
        now_ns: u64,
        member: impl Fn(&FlowKey) -> Option<(u64, bool)>,
        commands: &mut Vec<Command>,
    ) {
        let mut ended = Vec::new();
        for (id, s) in &mut self.map {
            let mut verdicts = false;
            s.members.retain(|k| match member(k) {
                Some((last, has_verdict)) => {
                    s.last_activity_ns = s.last_activity_ns.max(last);
                    verdicts |= has_verdict;
                    true
                }
                None => false,
            });
            let hold_until = s.last_activity_ns.saturating_add(cfg.hold_ns);
            let suspect = !s.lifted && s.label == Label::Voip && hold_until > now_ns;
            let holding = suspect && s.blocked;
            let mut wanted: BTreeSet<HoldKey> = if holding { kernel_holds(s) } else { BTreeSet::new() };
            if suspect {
                wanted.insert(HoldKey::host(s.anchor.family, s.anchor.addr));
            }
            s.holds.retain(|key, _| {
                let keep = wanted.contains(key);
                if !keep {
                    commands.push(Command::Unhold { key: *key });
                }
                keep
            });
            for key in wanted {
                let written = s.holds.get(&key).copied();
                // Written anew when missing or when it would run out within
                // half a hold: a refresh per half hold, not per poll.
                if written.is_none_or(|w| w < now_ns.saturating_add(cfg.hold_ns / 2)) {
                    commands.push(Command::Hold { key, entry: HoldEntry { expires_ns: hold_until, since_ns: now_ns } });
                    s.holds.insert(key, hold_until);
                }
            }
            if !verdicts && hold_until <= now_ns {
                for key in std::mem::take(&mut s.holds).into_keys() {
                    commands.push(Command::Unhold { key });
                }
                ended.push(*id);
            }
        }
        for id in ended {
            if let Some(s) = self.map.remove(&id) {
                self.by_socket.retain(|_, v| *v != id);
                self.by_host.retain(|_, v| *v != id);
                let _ = s;
            }
        }
    }

    /// Ends every hold now (controller shutdown, end of a replay).
    pub(super) fn release_all(&mut self, commands: &mut Vec<Command>) {
        for s in self.map.values_mut() {
            for key in std::mem::take(&mut s.holds).into_keys() {
                commands.push(Command::Unhold { key });
            }
        }
    }
}

/// The kernel's drop holds of a blocked call: its socket (if UDP) and,
/// from its host, every relay it used over UDP. (Its host's media hold,
/// which drops nothing, comes with the suspicion in either mode.) Over TCP nothing is held in the
/// kernel: a TCP connection to the same server may be the app's messaging,
/// and the host's suspicion catches a TCP call within a fraction of a
/// second anyway.
fn kernel_holds(s: &Session) -> BTreeSet<HoldKey> {
    let a = s.anchor;
    let mut keys = BTreeSet::new();
    if a.proto == PROTO_UDP {
        keys.insert(HoldKey::socket(a.family, a.proto, a.addr, a.port));
    }
    for r in &s.relays {
        if r.proto != PROTO_TCP && r.family == a.family {
            keys.insert(HoldKey::peer(a.family, r.proto, a.addr, r.addr, r.port));
        }
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::parse_flow;

    fn joining(key: &FlowKey, blocked: bool) -> Joining<'_> {
        Joining {
            key,
            initiator: 0,
            current: None,
            anchor: Anchor::Guess,
            label: Label::Voip,
            blocked,
            first_seen_ns: 0,
            codec: (50.0, 100.0),
        }
    }

    use crate::event::Mode;

    fn cfg(mode: Mode) -> Config {
        Config { hold_ns: 10_000_000_000, ..Config::with_mode(mode) }
    }

    #[test]
    fn the_users_end_anchors_a_session() {
        let k = parse_flow("udp", "198.51.100.2:3478", "10.0.0.5:40000").unwrap();
        assert_eq!(local_end(&k, 0).to_string(), "udp 10.0.0.5:40000", "the inside address");
        let k = parse_flow("udp", "192.0.2.2:40000", "198.51.100.2:3478").unwrap();
        assert_eq!(local_end(&k, 0).to_string(), "udp 192.0.2.2:40000", "the initiator");
        assert_eq!(local_end(&k, 1).to_string(), "udp 198.51.100.2:3478");
    }

    #[test]
    fn a_hop_joins_its_hosts_session_and_relays_are_held_in_block_mode() {
        let mut s = Sessions::new(0);
        let call = parse_flow("udp", "192.0.2.2:40000", "198.51.100.2:3478").unwrap().canonical();
        let hop = parse_flow("udp", "192.0.2.2:40002", "198.51.100.3:3478").unwrap().canonical();
        let id = s.join(&joining(&call, true), 0);
        assert_eq!(s.join(&joining(&hop, true), 0), id, "same host, same session");
        assert_eq!(s.members(Some(id)), [call, hop]);
        let mut cmds = Vec::new();
        s.upkeep(&cfg(Mode::Block), 1, |_| Some((1, true)), &mut cmds);
        let held: Vec<String> = cmds
            .iter()
            .map(|c| match c {
                Command::Hold { key, .. } => format!("{} {}", key.kind, key.remote_port + key.local_port),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(held, ["3 0", "1 40000", "2 3478", "2 3478"], "the host as media, the socket, and both relays from the host");
        // Refreshed only when half the hold has gone by; released after.
        cmds.clear();
        s.upkeep(&cfg(Mode::Block), 2, |_| Some((2, true)), &mut cmds);
        assert!(cmds.is_empty(), "{cmds:?}");
        s.upkeep(&cfg(Mode::Block), 30_000_000_000, |_| Some((2, false)), &mut cmds);
        assert_eq!(cmds.iter().filter(|c| matches!(c, Command::Unhold { .. })).count(), 4);
        assert_eq!(s.len(), 0);
    }

    #[test]
    fn monitor_mode_drops_nothing_but_still_suspects() {
        let mut s = Sessions::new(0);
        let call = parse_flow("udp", "192.0.2.2:40000", "198.51.100.2:3478").unwrap().canonical();
        s.join(&joining(&call, false), 0);
        let mut cmds = Vec::new();
        s.upkeep(&cfg(Mode::Monitor), 1, |_| Some((1, true)), &mut cmds);
        let kinds: Vec<u8> = cmds.iter().filter_map(|c| if let Command::Hold { key, .. } = c { Some(key.kind) } else { None }).collect();
        assert_eq!(kinds, [voipdetect_common::flow::HOLD_HOST], "only the host's media hold: {cmds:?}");
        let other = parse_flow("tcp", "192.0.2.2:50000", "203.0.113.9:443").unwrap();
        assert_eq!(s.suspects(&cfg(Mode::Monitor), 2).of(&other).map(|x| x.1), Some(false));
        assert_eq!(s.suspects(&cfg(Mode::Monitor), 2).of(&call).map(|x| x.1), Some(true));
        assert!(s.suspects(&cfg(Mode::Monitor), 20_000_000_000).of(&other).is_none(), "the hold ran out");
    }
}
