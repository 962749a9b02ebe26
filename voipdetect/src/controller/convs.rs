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
use voipdetect_common::FlowKey;

use super::conv::Conv;

/// No place: a hint that has not been set matches nothing.
pub const NO_PLACE: u32 = u32::MAX;

#[derive(Default)]
pub(super) struct Convs {
    /// Live conversations and holes (`None`), in arrival order.
    slab: Vec<Option<(FlowKey, Conv)>>,
    /// Beside each place: 0, or the latest activity of a conversation
    /// asleep (see `Conv::settle`). The walk passes a sleeper over by this
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

impl Convs {
    pub(super) fn len(&self) -> usize {
        self.index.len()
    }

    fn place(&self, canonical: &FlowKey) -> Option<u32> {
        let slab = &self.slab;
        let is = |&p: &u32| slab[p as usize].as_ref().is_some_and(|(k, _)| k == canonical);
        self.index.find(self.hasher.hash_one(canonical), is).copied()
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
        let Self { slab, index, hasher, .. } = self;
        let hash_of = |p: &u32| slab[*p as usize].as_ref().map_or(0, |(k, _)| hasher.hash_one(k));
        index.insert_unique(hash_of(&at), at, hash_of);
    }

    /// The conversation of `canonical`, found through `hint` (its place
    /// when the caller last asked) or the index, or made by `new` (which
    /// may decline: None). `hint` is set to its place.
    pub(super) fn find_or_insert(&mut self, canonical: &FlowKey, hint: &mut u32, new: impl FnOnce() -> Option<Conv>) -> Option<&mut Conv> {
        let hinted = self.slab.get(*hint as usize).is_some_and(|e| e.as_ref().is_some_and(|(k, _)| k == canonical));
        if !hinted {
            *hint = match self.place(canonical) {
                Some(at) => at,
                None => {
                    let conv = new()?;
                    let at = match self.free.pop() {
                        Some(at) => {
                            self.slab[at as usize] = Some((*canonical, conv));
                            at
                        }
                        None => {
                            self.slab.push(Some((*canonical, conv)));
                            self.asleep.push(0);
                            u32::try_from(self.slab.len() - 1).expect("fewer than 4 G conversations")
                        }
                    };
                    self.index_place(at);
                    at
                }
            };
        }
        // Asked for because its flow changed: the walk looks at it.
        self.asleep[*hint as usize] = 0;
        self.slab[*hint as usize].as_mut().map(|(_, c)| c)
    }

    /// Keeps the conversations `keep` says yes to (given their place),
    /// walking them in order. A conversation asleep is passed over
    /// without reading it unless `idle` says its latest activity is too
    /// old (then `keep` sees it).
    pub(super) fn retain(&mut self, idle: impl Fn(u64) -> bool, mut keep: impl FnMut(u32, &FlowKey, &mut Conv) -> bool) {
        let Self { slab, asleep, free, index, hasher } = self;
        for (i, (entry, sleep)) in slab.iter_mut().zip(asleep.iter_mut()).enumerate() {
            if *sleep != 0 && !idle(*sleep) {
                continue;
            }
            let at = i as u32;
            let Some((k, c)) = entry else { continue };
            if keep(at, k, c) {
                *sleep = c.dormant.map_or(0, u64::from);
            } else {
                if let Ok(e) = index.find_entry(hasher.hash_one(*k), |&p| p == at) {
                    e.remove();
                }
                free.push(at);
                *entry = None;
                *sleep = 0;
            }
        }
    }

    /// The conversation at `place`.
    pub(super) fn at(&self, place: u32) -> Option<(&FlowKey, &Conv)> {
        self.slab.get(place as usize)?.as_ref().map(|(k, c)| (k, c))
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

    pub(super) fn iter(&self) -> impl Iterator<Item = (&FlowKey, &Conv)> {
        self.slab.iter().flatten().map(|(k, c)| (k, c))
    }

    pub(super) fn iter_mut(&mut self) -> impl Iterator<Item = (&FlowKey, &mut Conv)> {
        self.slab.iter_mut().flatten().map(|(k, c)| (&*k, c))
    }

    pub(super) fn values(&self) -> impl Iterator<Item = &Conv> {
        self.iter().map(|(_, c)| c)
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
        assert_eq!(convs.find_or_insert(&key(8), &mut wrong, || unreachable!()).map(|c| c.win_start_ns), Some(8));
        assert_eq!(wrong, hints[8]);
        // Drop all but every tenth: the slab compacts, the walk keeps order.
        convs.retain(|_| true, |_, k, _| k.sport % 10 == 0);
        assert_eq!(convs.len(), 200);
        convs.compact_if_sparse();
        let order: Vec<u16> = convs.iter().map(|(k, _)| k.sport).collect();
        assert_eq!(order, (0..2000).step_by(10).collect::<Vec<_>>());
        for i in (0..2000u16).step_by(10) {
            let c = convs.find_or_insert(&key(i), &mut hints[usize::from(i)], || unreachable!("still there"));
            assert_eq!(c.map(|c| c.win_start_ns), Some(u64::from(i)));
            assert_eq!(convs.get(&key(i)).map(|c| c.win_start_ns), Some(u64::from(i)));
        }
        assert!(convs.get(&key(11)).is_none());
        // Holes are filled before the slab grows.
        convs.retain(|_| true, |_, k, _| k.sport != 0);
        convs.compact_if_sparse();
        let mut h = NO_PLACE;
        convs.find_or_insert(&key(9999), &mut h, || Some(Conv::new(1)));
        assert_eq!(h, 0);
    }
}
