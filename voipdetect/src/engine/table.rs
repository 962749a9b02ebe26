//! The replay's flow table: direction-flows in slots that keep their
//! place while the flow lives, named to the controller the way the
//! program's tables name theirs ([`SlotRef`]: an index, and a generation
//! bumped each time the slot takes a new flow), so that the controller
//! reads both kinds of table the same way.

use std::{cell::Cell, collections::HashMap};

use voipdetect_common::{FlowCounters, FlowKey};

use crate::controller::{Controller, FlowTable, SlotRef};

struct Slot {
    key: FlowKey,
    c: FlowCounters,
    generation: u32,
    live: bool,
    /// The controller's word (see `FlowTable`); a new flow inherits it.
    place: Cell<u32>,
}

/// A flow as [`Slots::iter`] gives it: its slot, key, counters and the
/// controller's word.
pub type Listed<'a> = (SlotRef, &'a FlowKey, &'a FlowCounters, &'a Cell<u32>);

#[derive(Default)]
pub struct Slots {
    slots: Vec<Slot>,
    index: HashMap<FlowKey, u32>,
    /// Slots whose flow was removed, to be taken first.
    free: Vec<u32>,
}

impl Slots {
    /// `key`'s counters, filed with `new()` if it has none yet.
    pub fn get_or_insert_with(&mut self, key: &FlowKey, new: impl FnOnce() -> FlowCounters) -> &mut FlowCounters {
        let idx = match self.index.get(key) {
            Some(&idx) => idx,
            None => {
                let idx = match self.free.pop() {
                    Some(idx) => {
                        let s = &mut self.slots[idx as usize];
                        (s.key, s.c, s.generation, s.live) = (*key, new(), s.generation.wrapping_add(1), true);
                        idx
                    }
                    None => {
                        self.slots.push(Slot { key: *key, c: new(), generation: 1, live: true, place: Cell::new(0) });
                        u32::try_from(self.slots.len() - 1).expect("fewer than 4 G flows")
                    }
                };
                self.index.insert(*key, idx);
                idx
            }
        };
        &mut self.slots[idx as usize].c
    }

    pub fn get_mut(&mut self, key: &FlowKey) -> Option<&mut FlowCounters> {
        let idx = *self.index.get(key)?;
        Some(&mut self.slots[idx as usize].c)
    }

    /// Removes `key`'s flow, returning its counters.
    pub fn remove(&mut self, key: &FlowKey) -> Option<FlowCounters> {
        let idx = self.index.remove(key)?;
        let s = &mut self.slots[idx as usize];
        s.live = false;
        self.free.push(idx);
        Some(s.c)
    }

    /// The slot `at` names, if it still holds that flow.
    fn holding(&self, at: SlotRef) -> Option<&Slot> {
        self.slots.get(at.idx as usize).filter(|s| s.live && s.generation == at.generation)
    }

    /// Lists `flows` (from [`Slots::iter`], in the caller's order) to
    /// `ctl`, each with its slot's word, as the program's change walk
    /// lists its slots.
    pub fn list<'a>(&'a self, ctl: &mut Controller, flows: impl IntoIterator<Item = Listed<'a>>) {
        for (at, k, c, word) in flows {
            let mut w = word.get();
            ctl.observe(at, k, c, &mut w, self);
            word.set(w);
        }
    }

    /// Every flow with its slot and the controller's word in it.
    pub fn iter(&self) -> impl Iterator<Item = Listed<'_>> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.live)
            .map(|(i, s)| (SlotRef { idx: i as u32, generation: s.generation }, &s.key, &s.c, &s.place))
    }
}

impl FlowTable for Slots {
    fn read(&self, at: SlotRef) -> Option<FlowCounters> {
        self.holding(at).map(|s| s.c)
    }

    fn place_of(&self, key: &FlowKey) -> Option<u32> {
        self.index.get(key).map(|&idx| self.slots[idx as usize].place.get())
    }

    fn set_place(&self, at: SlotRef, place: u32) {
        if let Some(s) = self.holding(at) {
            s.place.set(place);
        }
    }
}

#[cfg(test)]
mod tests {
    use voipdetect_common::flow::{FAMILY_V4, PROTO_UDP};

    use super::*;

    #[test]
    fn a_slot_taken_again_is_a_new_generation() {
        let key = |p| FlowKey { proto: PROTO_UDP, family: FAMILY_V4, sport: p, dport: 9, ..Default::default() };
        let mut t = Slots::default();
        t.get_or_insert_with(&key(1), || FlowCounters::new(5, 0)).packets = 3;
        t.get_or_insert_with(&key(2), FlowCounters::default);
        let at = |t: &Slots, k| t.iter().find(|(_, key, ..)| **key == k).map(|(at, ..)| at);
        let one = at(&t, key(1)).unwrap();
        assert_eq!(t.read(one).map(|c| c.packets), Some(3));
        assert_eq!(t.remove(&key(1)).map(|c| c.first_seen_ns), Some(5));
        assert_eq!(t.read(one), None, "removed");
        // The next flow takes the slot, a generation on: the old name reads nothing.
        t.get_or_insert_with(&key(3), FlowCounters::default);
        let three = at(&t, key(3)).unwrap();
        assert_eq!((three.idx, three.generation), (one.idx, one.generation + 1));
        assert_eq!(t.read(one), None);
        assert!(t.read(three).is_some());
        assert_eq!(t.iter().count(), 2);
        // The controller's word goes with the slot, to its next flow too.
        t.set_place(three, 7);
        t.set_place(one, 8);
        assert_eq!(t.place_of(&key(3)), Some(7), "an old name writes nothing");
        t.remove(&key(3));
        t.get_or_insert_with(&key(4), FlowCounters::default);
        assert_eq!(t.place_of(&key(4)), Some(7));
    }
}
