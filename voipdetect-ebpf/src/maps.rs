//! The program's maps. Names and default sizes come from
//! `voipdetect_common::maps`; the controller resizes them at load time.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray},
};
use voipdetect_common::{
    BlockEntry, Control, FlowCounters, FlowKey, Stat,
    maps::{DEFAULT_BLOCK_ENTRIES, DEFAULT_FLOW_ENTRIES},
};

#[map(name = "VD_FLOWS")]
pub static FLOWS: LruHashMap<FlowKey, FlowCounters> = LruHashMap::with_max_entries(DEFAULT_FLOW_ENTRIES, 0);

#[map(name = "VD_BLOCKLIST")]
pub static BLOCKLIST: HashMap<FlowKey, BlockEntry> = HashMap::with_max_entries(DEFAULT_BLOCK_ENTRIES, 0);

#[map(name = "VD_STATS")]
pub static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Stat::COUNT as u32, 0);

#[map(name = "VD_CONTROL")]
pub static CONTROL: Array<Control> = Array::with_max_entries(1, 0);

/// Adds one to a global counter of this CPU.
#[inline(always)]
pub fn count(stat: Stat) {
    if let Some(slot) = STATS.get_ptr_mut(stat as u32) {
        // SAFETY: per-CPU slot, written only by this CPU; XDP runs with
        // preemption disabled.
        unsafe { *slot += 1 };
    }
}

/// The controller's current blocklist generation.
#[inline(always)]
pub fn block_gen() -> u32 {
    match CONTROL.get_ptr(0) {
        // SAFETY: array entries always exist; a torn read is impossible for
        // an aligned u32, and any value just triggers a re-check.
        Some(c) => unsafe { (*c).block_gen },
        None => 0,
    }
}
