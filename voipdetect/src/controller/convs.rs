//! The conversations, kept in the order they arrived: a slab walked front
//! to back by every poll, found by key through the flow table itself.
//! Every slot of the table has a word for the controller (see
//! `UserWords`), where it leaves the place of the slot's conversation: a
//! listed flow finds its conversation by its own slot's word, the first
//! sight of a direction by its reverse direction's slot, and a lookup by
//! key by either. (A hash index from key to place beside the slab was 10
//! bytes a conversation, and its inserts a share of the poll.) Words are
//! hints, checked against the key the slab keeps: a slot's new flow
//! inherits its predecessor's.
//!
//! Why not one hash map: at a million conversations a hash map's order is
//! random, so every poll missed the cache for each conversation twice
//! (the lookup of each direction, then the walk over the map, each
//! followed by the boxed direction state allocated long before). Here the
//! walk runs in arrival order, which is the order the direction state was
//! allocated in and, for flows that arrived together, the order of the
//! kernel's slots too: the hardware prefetcher follows it.

use voipdetect_common::{
    FlowKey,
    flow::FAMILY_V4,
    table::{flow_key4, key4, reversed4},
};

use super::{conv::Conv, table::FlowTable};

/// A canonical key as the slab keeps it: an IPv4 key inline as the flow
/// table's 16-byte words, any other in [`Convs::keys6`] (its place there
/// in the first word). A whole `FlowKey` is 40 bytes, 24 of them IPv6
/// address room an IPv4 conversation never uses, a million times over.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Stored([u64; 2]);

impl Stored {
    /// Marks a key kept aside (an IPv4 key's second word never has it:
    /// ports and protocol fill its low 40 bits).
    const ASIDE: u64 = 1 << 63;

    /// The inline form of `k`, if it has one: an IPv4 key with nothing
    /// its words leave out (which `flow_key4` would not give back).
    #[inline]
    fn inline(k: &FlowKey) -> Option<Self> {
        let bare = |a: &[u8; 16]| a[4..] == [0; 12];
        (k.family == FAMILY_V4 && bare(&k.src) && bare(&k.dst) && k._pad == [0; 2]).then(|| Self(key4(k)))
    }

    /// The inline form of the canonical key of a conversation whose
    /// direction `k` is (`reverse`: `k` is the reverse direction), if it
    /// has one: [`Stored::inline`] of `k.canonical()` without the key.
    #[inline]
    fn inline_of_dir(k: &FlowKey, reverse: bool) -> Option<Self> {
        let s = Self::inline(k)?;
        Some(if reverse { Self(reversed4(s.0)) } else { s })
    }

    fn aside(at: u32) -> Self {
        Self([u64::from(at), Self::ASIDE])
    }

    /// Its place in `keys6`, if it is kept aside.
    fn aside_at(self) -> Option<usize> {
        (self.0[1] == Self::ASIDE).then_some(self.0[0] as usize)
    }
}

#[derive(Default)]
pub(super) struct Convs {
    /// Live conversations and holes (`None`), in arrival order.
    slab: Vec<Option<(Stored, Conv)>>,
    /// The keys that are not inline (IPv6), and holes among them.
    keys6: Vec<FlowKey>,
    free6: Vec<u32>,
    /// Beside each place: 0, or the latest activity of a conversation
    /// asleep (its sleep word: see `Conv::settle`). The walk passes a sleeper over by this
    /// word alone, 8 bytes instead of its slab entry: with most of a
    /// million conversations asleep, reading their entries was most of a
    /// poll.
    asleep: Vec<u64>,
    /// Holes to fill before the slab grows.
    free: Vec<u32>,
    /// Live conversations.
    live: usize,
}

/// Puts `x` in the first of `v`'s holes listed in `free`, or at its end;
/// its place.
fn fill<T>(v: &mut Vec<T>, free: &mut Vec<u32>, x: T) -> u32 {
    match free.pop() {
        Some(at) => {
            v[at as usize] = x;
            at
        }
        None => {
            v.push(x);
            u32::try_from(v.len() - 1).expect("fewer than 4 G conversations")
        }
    }
}

/// The key `s` stands for.
fn key_of(keys6: &[FlowKey], s: Stored) -> FlowKey {
    match s.aside_at() {
        Some(at) => keys6[at],
        None => flow_key4(&s.0),
    }
}

/// A canonical key as a slab entry is matched against: its inline form,
/// or the whole key when it is kept aside.
#[derive(Clone, Copy)]
enum Want<'a> {
    Inline(Stored),
    Aside(&'a FlowKey),
}

impl<'a> Want<'a> {
    fn of(canonical: &'a FlowKey) -> Self {
        Stored::inline(canonical).map_or(Want::Aside(canonical), Want::Inline)
    }
}

/// Whether `s` stands for the key `want` describes.
#[inline]
fn is(keys6: &[FlowKey], s: Stored, want: Want<'_>) -> bool {
    match want {
        // Never equal to an entry kept aside: an inline form's second
        // word never has `Stored::ASIDE`.
        Want::Inline(i) => s == i,
        Want::Aside(k) => s.aside_at().is_some_and(|at| keys6[at] == *k),
    }
}

impl Convs {
    pub(super) fn len(&self) -> usize {
        self.live
    }

    /// Whether the conversation `want` describes is at `place`.
    #[inline]
    fn holds(&self, place: u32, want: Want<'_>) -> bool {
        self.slab.get(place as usize).is_some_and(|e| e.as_ref().is_some_and(|(s, _)| is(&self.keys6, *s, want)))
    }

    /// The place of `canonical`'s conversation, through the words of the
    /// slots of `keys` (its directions).
    fn place(&self, canonical: &FlowKey, keys: &[FlowKey], table: &impl FlowTable) -> Option<u32> {
        let want = Want::of(canonical);
        keys.iter().filter_map(|k| table.place_of(k)).find(|&p| self.holds(p, want))
    }

    pub(super) fn get(&self, canonical: &FlowKey, table: &impl FlowTable) -> Option<&Conv> {
        let at = self.place(canonical, &[*canonical, canonical.reversed()], table)?;
        self.slab[at as usize].as_ref().map(|(_, c)| c)
    }

    pub(super) fn get_mut(&mut self, canonical: &FlowKey, table: &impl FlowTable) -> Option<&mut Conv> {
        let at = self.place(canonical, &[*canonical, canonical.reversed()], table)?;
        self.slab[at as usize].as_mut().map(|(_, c)| c)
    }

    /// How the slab keeps `k` (set aside if need be).
    fn store(&mut self, k: &FlowKey) -> Stored {
        if let Some(s) = Stored::inline(k) {
            return s;
        }
        Stored::aside(fill(&mut self.keys6, &mut self.free6, *k))
    }

    /// The conversation of the direction-flow `key` and its sleep word,
    /// found through `word` (its slot's word, which names its place once
    /// the conversation has seen this direction) or its reverse
    /// direction's slot, or made by `new` (which may decline: None).
    /// `word` is set to its place: the caller leaves it in the slot.
    ///
    /// `reverse` says which direction `key` is (`!key.is_canonical()`).
    /// A listed flow's word mostly names its conversation already: that
    /// is checked without making the canonical key (every changed flow of
    /// every poll comes through here).
    pub(super) fn find_or_insert(
        &mut self,
        key: &FlowKey,
        reverse: bool,
        word: &mut u32,
        table: &impl FlowTable,
        new: impl FnOnce() -> Option<Conv>,
    ) -> Option<(&mut Conv, &mut u64)> {
        let canonical = || if reverse { key.reversed() } else { *key };
        let aside;
        let want = match Stored::inline_of_dir(key, reverse) {
            Some(inline) => Want::Inline(inline),
            None => {
                aside = canonical();
                Want::Aside(&aside)
            }
        };
        if !self.holds(*word, want) {
            let canonical = &canonical();
            *word = match self.place(canonical, &[key.reversed()], table) {
                Some(at) => at,
                None => {
                    let conv = new()?;
                    let stored = self.store(canonical);
                    self.live += 1;
                    let at = fill(&mut self.slab, &mut self.free, Some((stored, conv)));
                    // A hole's sleep word was cleared when it was made.
                    self.asleep.resize(self.slab.len(), 0);
                    at
                }
            };
        }
        let at = *word as usize;
        self.slab[at].as_mut().map(|(_, c)| (c, &mut self.asleep[at]))
    }

    /// Fetches the entry and sleep word at `place`, if there is one.
    pub(super) fn prefetch(&self, place: u32) {
        if let (Some(e), Some(w)) = (self.slab.get(place as usize), self.asleep.get(place as usize)) {
            crate::prefetch::prefetch(e);
            crate::prefetch::prefetch(w);
        }
    }

    /// Conversations asleep.
    pub(super) fn asleep(&self) -> usize {
        self.asleep.iter().filter(|&&s| s != 0).count()
    }

    /// Keeps the conversations `keep` says yes to (given their place and
    /// sleep word, which it may change), walking them in order. A
    /// conversation asleep is passed over without reading it unless `idle`
    /// says its latest activity is too old (then `keep` sees it).
    ///
    /// `ahead` sees each awake conversation a few places before `keep`
    /// does: time enough to fetch what `keep` will read elsewhere (its
    /// counters' slots, in table order rather than arrival order).
    pub(super) fn retain(
        &mut self,
        idle: impl Fn(u64) -> bool,
        ahead: impl Fn(&Conv),
        mut keep: impl FnMut(u32, &FlowKey, &mut Conv, &mut u64) -> bool,
    ) {
        /// Places ahead: 8 and 48 measured, 48 a little better (a miss
        /// here includes a page walk: the tables are mapped in 4 KiB pages).
        const AHEAD: usize = 48;
        let Self { slab, keys6, free6, asleep, free, live } = self;
        for i in 0..slab.len() {
            // The sleep word first: a sleeper's entry is not to be read.
            if asleep.get(i + AHEAD) == Some(&0)
                && let Some(Some((_, c))) = slab.get(i + AHEAD)
            {
                ahead(c);
            }
            let (entry, sleep) = (&mut slab[i], &mut asleep[i]);
            if *sleep != 0 && !idle(*sleep) {
                continue;
            }
            let at = i as u32;
            let Some((s, c)) = entry else { continue };
            let k = key_of(keys6, *s);
            if !keep(at, &k, c, sleep) {
                *live -= 1;
                if let Some(at6) = s.aside_at() {
                    free6.push(at6 as u32);
                }
                free.push(at);
                *entry = None;
                *sleep = 0;
            }
        }
    }

    /// The conversation at `place`.
    pub(super) fn at(&self, place: u32) -> Option<(FlowKey, &Conv)> {
        self.slab.get(place as usize)?.as_ref().map(|(s, c)| (key_of(&self.keys6, *s), c))
    }

    pub(super) fn at_mut(&mut self, place: u32) -> Option<&mut Conv> {
        self.slab.get_mut(place as usize)?.as_mut().map(|(_, c)| c)
    }

    /// Moves the live conversations to the front, in order, once they are
    /// a quarter of the slab (after a burst; the walk pays for holes), and
    /// tells their slots their new places.
    pub(super) fn compact_if_sparse(&mut self, table: &impl FlowTable) {
        if self.slab.len() <= 1024 || self.live >= self.slab.len() / 4 {
            return;
        }
        let mut live = self.slab.iter().map(Option::is_some);
        self.asleep.retain(|_| live.next().unwrap_or(false));
        self.asleep.shrink_to_fit();
        self.slab.retain(Option::is_some);
        self.slab.shrink_to_fit();
        self.free = Vec::new();
        for (at, (_, c)) in self.slab.iter().flatten().enumerate() {
            for slot in c.slots() {
                table.set_place(slot, at as u32);
            }
        }
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (FlowKey, &Conv)> {
        self.slab.iter().flatten().map(|(s, c)| (key_of(&self.keys6, *s), c))
    }

    pub(super) fn iter_mut(&mut self) -> impl Iterator<Item = (FlowKey, &mut Conv)> {
        let keys6 = &self.keys6;
        self.slab.iter_mut().flatten().map(|(s, c)| (key_of(keys6, *s), c))
    }

    pub(super) fn values(&self) -> impl Iterator<Item = &Conv> {
        self.slab.iter().flatten().map(|(_, c)| c)
    }
}

#[cfg(test)]
mod tests {
    use voipdetect_common::{
        FlowCounters,
        flow::{FAMILY_V4, FAMILY_V6, PROTO_UDP},
    };

    use super::*;
    use crate::engine::table::Slots;

    fn key(i: u16) -> FlowKey {
        FlowKey { proto: PROTO_UDP, family: FAMILY_V4, sport: i, dport: 60_000, ..Default::default() }
    }

    /// Files `k`'s flow in the table (first seen at `tag`) and lists it as
    /// a poll would: its conversation, made if `make` (marked by `tag`),
    /// with the flow as its direction; the conversation's mark.
    fn list(convs: &mut Convs, t: &mut Slots, k: &FlowKey, tag: u64, make: bool) -> Option<u64> {
        t.get_or_insert_with(k, || FlowCounters::new(tag, 0));
        let (at, _, c, word) = t.iter().find(|(_, key, ..)| *key == k).unwrap();
        let mut w = word.get();
        let mark = convs.find_or_insert(k, !k.is_canonical(), &mut w, t, || make.then(|| Conv::new(tag))).map(|(conv, sleep)| {
            conv.observe(usize::from(!k.is_canonical()), at, c, 0, sleep);
            conv.win_start_ns
        });
        word.set(w);
        mark
    }

    #[test]
    fn slot_words_find_conversations_through_holes_and_compaction() {
        let (mut convs, mut t) = (Convs::default(), Slots::default());
        for i in 0..2000u16 {
            assert_eq!(list(&mut convs, &mut t, &key(i), u64::from(i), true), Some(u64::from(i)));
        }
        assert_eq!(convs.len(), 2000);
        // A declined insert makes nothing.
        assert_eq!(list(&mut convs, &mut t, &key(5000), 5000, false), None);
        assert_eq!(convs.len(), 2000);
        // A reverse direction whose slot's word names another conversation
        // (a new flow inherits its slot's word) finds its own through the
        // first direction's slot.
        let back = key(8).reversed();
        t.get_or_insert_with(&back, || FlowCounters::new(8, 0));
        t.set_place(t.iter().find(|(_, k, ..)| **k == back).unwrap().0, t.place_of(&key(7)).unwrap());
        assert_eq!(list(&mut convs, &mut t, &back, 8, false), Some(8));
        assert_eq!(t.place_of(&back), t.place_of(&key(8)));
        // Now its own word names it: found without the canonical key.
        assert_eq!(list(&mut convs, &mut t, &back, 8, false), Some(8));
        // A word naming another conversation is not taken for this one's.
        t.set_place(t.iter().find(|(_, k, ..)| **k == back).unwrap().0, t.place_of(&key(7)).unwrap());
        assert_eq!(list(&mut convs, &mut t, &back, 8, false), Some(8));
        assert_eq!(t.place_of(&back), t.place_of(&key(8)));
        assert_eq!(convs.len(), 2000);
        // Drop all but every tenth: the slab compacts, the walk keeps
        // order, and the slots learn the new places.
        convs.retain(|_| true, |_| {}, |_, k, _, _| k.sport % 10 == 0);
        assert_eq!(convs.len(), 200);
        convs.compact_if_sparse(&t);
        let order: Vec<u16> = convs.iter().map(|(k, _)| k.sport).collect::<Vec<_>>();
        assert_eq!(order, (0..2000).step_by(10).collect::<Vec<_>>());
        for i in (0..2000u16).step_by(10) {
            assert_eq!(list(&mut convs, &mut t, &key(i), 0, false), Some(u64::from(i)), "still there");
            assert_eq!(convs.get(&key(i).canonical(), &t).map(|c| c.win_start_ns), Some(u64::from(i)));
        }
        assert!(convs.get(&key(11).canonical(), &t).is_none());
        // Holes are filled before the slab grows.
        convs.retain(|_| true, |_| {}, |_, k, _, _| k.sport != 0);
        convs.compact_if_sparse(&t);
        list(&mut convs, &mut t, &key(9999), 9999, true);
        assert_eq!(t.place_of(&key(9999)), Some(0));
        assert_eq!(convs.get(&key(9999).canonical(), &t).map(|c| c.win_start_ns), Some(9999));
    }

    #[test]
    fn keys_kept_aside_are_found_freed_and_reused() {
        let v6 = |i: u16| {
            let mut k = FlowKey { proto: PROTO_UDP, family: FAMILY_V6, sport: i, dport: 3478, ..Default::default() };
            k.src[0] = 0x20;
            k.dst[15] = 9;
            k
        };
        // An IPv4 key with bytes its table words do not carry is kept
        // aside too, never shortened.
        let odd = FlowKey { src: [10, 0, 0, 1, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], ..key(1) };
        let (mut convs, mut t) = (Convs::default(), Slots::default());
        for (i, k) in (0..100).map(v6).chain([key(1), odd]).enumerate() {
            list(&mut convs, &mut t, &k, i as u64, true);
        }
        assert_eq!((convs.len(), convs.keys6.len()), (102, 101));
        assert_eq!(convs.get(&odd.canonical(), &t).map(|c| c.win_start_ns), Some(101));
        assert_eq!(convs.get(&key(1).canonical(), &t).map(|c| c.win_start_ns), Some(100));
        assert_eq!(convs.get(&v6(42).canonical(), &t).map(|c| c.win_start_ns), Some(42));
        assert!(convs.get(&FlowKey { family: FAMILY_V6, ..key(1) }.canonical(), &t).is_none());
        let seen: Vec<FlowKey> = convs.iter().map(|(k, _)| k).collect();
        assert_eq!(seen[..3], [v6(0), v6(1), v6(2)].map(|k| k.canonical()));
        assert_eq!(seen[100..], [key(1), odd].map(|k| k.canonical()));
        // Forgotten keys free their room; new ones take it.
        convs.retain(|_| true, |_| {}, |_, k, _, _| k.family != FAMILY_V6 || k.sport.min(k.dport) >= 50);
        assert_eq!(convs.len(), 52);
        for i in 1000..1050 {
            list(&mut convs, &mut t, &v6(i), u64::from(i), true);
        }
        assert_eq!(convs.keys6.len(), 101, "holes reused");
        assert!((1000..1050).chain(50..100).all(|i| convs.get(&v6(i).canonical(), &t).is_some_and(|c| c.win_start_ns == u64::from(i))));
        assert!(convs.get(&v6(7).canonical(), &t).is_none());
    }
}
