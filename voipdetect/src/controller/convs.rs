//! The conversations, kept in the order they arrived: a slab walked front
//! to back by every poll, an index from canonical key to place for the
//! first sight of a direction, and a place hint the caller may keep per
//! kernel slot so that a known flow is found without hashing.
//!
//! Why not one hash map: at a million conversations a hash map's order is
//! random, so every poll missed the cache for each conversation twice
//! (the lookup of each direction, then the walk over the map, each
//! followed by the boxed direction state allocated long before). Here the
//! walk runs in arrival order, which is the order the direction state was
//! allocated in and, for flows that arrived together, the order of the
//! kernel's slots too: the hardware prefetcher follows it.

use std::hash::BuildHasher as _;

use hashbrown::HashTable;
use voipdetect_common::{
    FlowKey,
    flow::FAMILY_V4,
    table::{flow_key4, key4},
};

use super::conv::Conv;

/// No place: a hint that has not been set matches nothing.
pub const NO_PLACE: u32 = u32::MAX;

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
    /// Places by key hash (4 bytes each: the key is the slab's). foldhash:
    /// fast, and seeded per process, so a sender choosing its 5-tuples
    /// cannot aim collisions.
    index: HashTable<u32>,
    hasher: foldhash::fast::RandomState,
}

/// The key `s` stands for.
fn key_of(keys6: &[FlowKey], s: Stored) -> FlowKey {
    match s.aside_at() {
        Some(at) => keys6[at],
        None => flow_key4(&s.0),
    }
}

/// Whether `s` stands for `k` (`inline`: `k`'s inline form, if any).
fn is(keys6: &[FlowKey], s: Stored, k: &FlowKey, inline: Option<Stored>) -> bool {
    match (s.aside_at(), inline) {
        (None, Some(i)) => s == i,
        (Some(at), None) => keys6[at] == *k,
        _ => false,
    }
}

impl Convs {
    pub(super) fn len(&self) -> usize {
        self.index.len()
    }

    fn place(&self, canonical: &FlowKey) -> Option<u32> {
        let (slab, keys6) = (&self.slab, &self.keys6);
        let inline = Stored::inline(canonical);
        let same = |&p: &u32| slab[p as usize].as_ref().is_some_and(|(s, _)| is(keys6, *s, canonical, inline));
        self.index.find(self.hasher.hash_one(canonical), same).copied()
    }

    pub(super) fn get(&self, canonical: &FlowKey) -> Option<&Conv> {
        let at = self.place(canonical)?;
        self.slab[at as usize].as_ref().map(|(_, c)| c)
    }

    pub(super) fn get_mut(&mut self, canonical: &FlowKey) -> Option<&mut Conv> {
        let at = self.place(canonical)?;
        self.slab[at as usize].as_mut().map(|(_, c)| c)
    }

    /// Indexes the conversation at `at` (just placed there).
    fn index_place(&mut self, at: u32) {
        let Self { slab, keys6, index, hasher, .. } = self;
        let hash_of = |p: &u32| slab[*p as usize].as_ref().map_or(0, |(s, _)| hasher.hash_one(key_of(keys6, *s)));
        index.insert_unique(hash_of(&at), at, hash_of);
    }

    /// How the slab keeps `k` (set aside if need be).
    fn store(&mut self, k: &FlowKey) -> Stored {
        if let Some(s) = Stored::inline(k) {
            return s;
        }
        let at = match self.free6.pop() {
            Some(at) => {
                self.keys6[at as usize] = *k;
                at
            }
            None => {
                self.keys6.push(*k);
                u32::try_from(self.keys6.len() - 1).expect("fewer than 4 G conversations")
            }
        };
        Stored::aside(at)
    }

    /// The conversation of `canonical` and its sleep word, found through
    /// `hint` (its place when the caller last asked) or the index, or made
    /// by `new` (which may decline: None). `hint` is set to its place.
    pub(super) fn find_or_insert(
        &mut self,
        canonical: &FlowKey,
        hint: &mut u32,
        new: impl FnOnce() -> Option<Conv>,
    ) -> Option<(&mut Conv, &mut u64)> {
        let inline = Stored::inline(canonical);
        let hinted = self.slab.get(*hint as usize).is_some_and(|e| e.as_ref().is_some_and(|(s, _)| is(&self.keys6, *s, canonical, inline)));
        if !hinted {
            *hint = match self.place(canonical) {
                Some(at) => at,
                None => {
                    let conv = new()?;
                    let stored = self.store(canonical);
                    let at = match self.free.pop() {
                        Some(at) => {
                            self.slab[at as usize] = Some((stored, conv));
                            at
                        }
                        None => {
                            self.slab.push(Some((stored, conv)));
                            self.asleep.push(0);
                            u32::try_from(self.slab.len() - 1).expect("fewer than 4 G conversations")
                        }
                    };
                    self.index_place(at);
                    at
                }
            };
        }
        let at = *hint as usize;
        self.slab[at].as_mut().map(|(_, c)| (c, &mut self.asleep[at]))
    }

    /// Conversations asleep.
    pub(super) fn asleep(&self) -> usize {
        self.asleep.iter().filter(|&&s| s != 0).count()
    }

    /// Keeps the conversations `keep` says yes to (given their place and
    /// sleep word, which it may change), walking them in order. A
    /// conversation asleep is passed over without reading it unless `idle`
    /// says its latest activity is too old (then `keep` sees it).
    pub(super) fn retain(&mut self, idle: impl Fn(u64) -> bool, mut keep: impl FnMut(u32, &FlowKey, &mut Conv, &mut u64) -> bool) {
        let Self { slab, keys6, free6, asleep, free, index, hasher } = self;
        for (i, (entry, sleep)) in slab.iter_mut().zip(asleep.iter_mut()).enumerate() {
            if *sleep != 0 && !idle(*sleep) {
                continue;
            }
            let at = i as u32;
            let Some((s, c)) = entry else { continue };
            let k = key_of(keys6, *s);
            if !keep(at, &k, c, sleep) {
                if let Ok(e) = index.find_entry(hasher.hash_one(k), |&p| p == at) {
                    e.remove();
                }
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

    /// Moves the live conversations to the front, in order, once they are
    /// a quarter of the slab (after a burst; the walk pays for holes).
    /// Places change: hints kept by callers miss once and are set again
    /// through the index.
    pub(super) fn compact_if_sparse(&mut self) {
        if self.slab.len() <= 1024 || self.index.len() >= self.slab.len() / 4 {
            return;
        }
        let mut live = self.slab.iter().map(Option::is_some);
        self.asleep.retain(|_| live.next().unwrap_or(false));
        self.asleep.shrink_to_fit();
        self.slab.retain(Option::is_some);
        self.slab.shrink_to_fit();
        self.free = Vec::new();
        self.index.clear();
        for at in 0..self.slab.len() {
            self.index_place(at as u32);
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
    use voipdetect_common::flow::{FAMILY_V4, PROTO_UDP};

    use super::*;

    fn key(i: u16) -> FlowKey {
        FlowKey { proto: PROTO_UDP, family: FAMILY_V4, sport: i, dport: 60_000, ..Default::default() }
    }

    #[test]
    fn hints_find_without_the_index_and_survive_holes_and_compaction() {
        let mut convs = Convs::default();
        let mut hints = vec![NO_PLACE; 2000];
        for i in 0..2000u16 {
            assert!(convs.find_or_insert(&key(i), &mut hints[usize::from(i)], || Some(Conv::new(u64::from(i)))).is_some());
        }
        assert_eq!(convs.len(), 2000);
        // A declined insert makes nothing and leaves the hint unset.
        let mut h = NO_PLACE;
        assert!(convs.find_or_insert(&key(5000), &mut h, || None).is_none());
        assert_eq!((h, convs.len()), (NO_PLACE, 2000));
        // A stale hint (pointing at another conversation) is corrected.
        let mut wrong = hints[7];
        assert_eq!(convs.find_or_insert(&key(8), &mut wrong, || unreachable!()).map(|(c, _)| c.win_start_ns), Some(8));
        assert_eq!(wrong, hints[8]);
        // Drop all but every tenth: the slab compacts, the walk keeps order.
        convs.retain(|_| true, |_, k, _, _| k.sport % 10 == 0);
        assert_eq!(convs.len(), 200);
        convs.compact_if_sparse();
        let order: Vec<u16> = convs.iter().map(|(k, _)| k.sport).collect::<Vec<_>>();
        assert_eq!(order, (0..2000).step_by(10).collect::<Vec<_>>());
        for i in (0..2000u16).step_by(10) {
            let c = convs.find_or_insert(&key(i), &mut hints[usize::from(i)], || unreachable!("still there"));
            assert_eq!(c.map(|(c, _)| c.win_start_ns), Some(u64::from(i)));
            assert_eq!(convs.get(&key(i)).map(|c| c.win_start_ns), Some(u64::from(i)));
        }
        assert!(convs.get(&key(11)).is_none());
        // Holes are filled before the slab grows.
        convs.retain(|_| true, |_, k, _, _| k.sport != 0);
        convs.compact_if_sparse();
        let mut h = NO_PLACE;
        convs.find_or_insert(&key(9999), &mut h, || Some(Conv::new(1)));
        assert_eq!(h, 0);
    }

    #[test]
    fn keys_kept_aside_are_found_freed_and_reused() {
        use voipdetect_common::flow::FAMILY_V6;
        let v6 = |i: u16| {
            let mut k = FlowKey { proto: PROTO_UDP, family: FAMILY_V6, sport: i, dport: 3478, ..Default::default() };
            k.src[0] = 0x20;
            k.dst[15] = 9;
            k
        };
        // An IPv4 key with bytes its table words do not carry is kept
        // aside too, never shortened.
        let odd = FlowKey { src: [10, 0, 0, 1, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], ..key(1) };
        let mut convs = Convs::default();
        for (i, k) in (0..100).map(v6).chain([key(1), odd]).enumerate() {
            let mut h = NO_PLACE;
            convs.find_or_insert(&k, &mut h, || Some(Conv::new(i as u64)));
        }
        assert_eq!((convs.len(), convs.keys6.len()), (102, 101));
        assert_eq!(convs.get(&odd).map(|c| c.win_start_ns), Some(101));
        assert_eq!(convs.get(&key(1)).map(|c| c.win_start_ns), Some(100));
        assert_eq!(convs.get(&v6(42)).map(|c| c.win_start_ns), Some(42));
        assert!(convs.get(&FlowKey { family: FAMILY_V6, ..key(1) }).is_none());
        let seen: Vec<FlowKey> = convs.iter().map(|(k, _)| k).collect();
        assert_eq!(seen[..3], [v6(0), v6(1), v6(2)]);
        assert_eq!(seen[100..], [key(1), odd]);
        // Forgotten keys free their room; new ones take it.
        convs.retain(|_| true, |_, k, _, _| k.family != FAMILY_V6 || k.sport >= 50);
        assert_eq!(convs.len(), 52);
        for i in 1000..1050 {
            let mut h = NO_PLACE;
            convs.find_or_insert(&v6(i), &mut h, || Some(Conv::new(u64::from(i))));
        }
        assert_eq!(convs.keys6.len(), 101, "holes reused");
        assert!((1000..1050).chain(50..100).all(|i| convs.get(&v6(i)).is_some_and(|c| c.win_start_ns == u64::from(i))));
        assert!(convs.get(&v6(7)).is_none());
    }
}
