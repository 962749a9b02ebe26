//! Where the controller reads a direction-flow's counters: a slot of a
//! flow table (the program's, mapped into this process, or the replay's
//! own), named by its index and the generation it had when the flow took
//! it. The controller keeps only that name and its own figures (the
//! counters at the start of the window) per direction, and reads the
//! latest counters from the slot when it judges: a copy of them was 44
//! bytes a direction, a million times over.

use voipdetect_common::{FlowCounters, FlowKey};

/// A direction-flow's slot: index (with the table in its top bit when
/// there are two) and generation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlotRef {
    pub idx: u32,
    pub generation: u32,
}

/// The flow tables as the controller reads them. Each slot also keeps a
/// word for the controller, which it uses to find a flow's conversation
/// (see `convs`): the table is the controller's index.
pub trait FlowTable {
    /// The counters in `at`, unless the slot has since taken another flow
    /// or none.
    fn read(&self, at: SlotRef) -> Option<FlowCounters>;
    /// [`FlowTable::read`] into `out`, where a copy may be written in
    /// place (every poll reads every conversation's counters: returned by
    /// value, they were copied once more on the way).
    fn read_into(&self, at: SlotRef, out: &mut Option<FlowCounters>) {
        *out = self.read(at);
    }
    /// The controller's word in the slot of `key`'s flow, if it has one.
    fn place_of(&self, key: &FlowKey) -> Option<u32>;
    /// Leaves `place` in the controller's word of `at`, unless the slot
    /// has since taken another flow.
    fn set_place(&self, at: SlotRef, place: u32);
    /// Asks the CPU to fetch `at` into the cache: it will be read soon.
    fn prefetch(&self, _at: SlotRef) {}
}
