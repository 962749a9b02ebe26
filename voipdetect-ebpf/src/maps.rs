//! The program's maps. Names and default sizes come from
//! `voipdetect_common::maps`; the controller resizes them at load time.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, PerCpuArray},
};
use voipdetect_common::{
    BlockEntry, Control, FlowKey, HoldEntry, HoldKey, SessionTag, Stat,
    maps::{DEFAULT_BLOCK_ENTRIES, DEFAULT_HOLD_ENTRIES, DEFAULT_SESSION_ENTRIES},
    parse::Packet,
};

#[map(name = "VD_BLOCKLIST")]
pub static BLOCKLIST: HashMap<FlowKey, BlockEntry> = HashMap::with_max_entries(DEFAULT_BLOCK_ENTRIES, 0);

#[map(name = "VD_HOLDS")]
pub static HOLDS: HashMap<HoldKey, HoldEntry> = HashMap::with_max_entries(DEFAULT_HOLD_ENTRIES, 0);

/// Written by the controller for other processes; never read here.
/// `BPF_F_NO_PREALLOC`: it holds only the conversations with a verdict.
#[map(name = "VD_SESSIONS")]
pub static SESSIONS: HashMap<FlowKey, SessionTag> = HashMap::with_max_entries(DEFAULT_SESSION_ENTRIES, 1);

#[map(name = "VD_STATS")]
pub static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Stat::COUNT as u32, 0);

/// Where the parsed packet waits for the rest of the program (see the
/// crate docs: it is there for the verifier, not for speed).
#[map(name = "VD_SCRATCH")]
pub static SCRATCH: PerCpuArray<Packet> = PerCpuArray::with_max_entries(1, 0);

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

/// The controller's current blocklist generation, how many holds it has
/// listed, and the flow tables' hash seed.
#[inline(always)]
pub fn control() -> (u32, u32, u64) {
    match CONTROL.get_ptr(0) {
        // SAFETY: array entries always exist; a torn read is impossible for
        // aligned words, and any value just triggers a re-check.
        Some(c) => unsafe { ((*c).block_gen, (*c).holds, (*c).seed) },
        None => (0, 0, 0),
    }
}

/// The latest deadline of the drop holds that match a flow (the sockets
/// at either end, either end's host with the other end), with its lowest
/// bit set when either end's host is held as media ([`HOLDS_MEDIA`]; a
/// nanosecond off a deadline changes nothing).
///
#[inline(always)]
#[expect(clippy::needless_borrows_for_generic_args, reason = "by value, the 40-byte key would be copied for every lookup")]
pub fn hold_until(k: &FlowKey) -> u64 {
    let (mut until, mut media) = (0u64, false);
    let mut key = HoldKey::socket(k.family, k.proto, k.src, k.sport);
    for round in 0..6u8 {
        match round {
            1 => key = HoldKey::socket(k.family, k.proto, k.dst, k.dport),
            2 => key = HoldKey::peer(k.family, k.proto, k.src, k.dst, k.dport),
            3 => key = HoldKey::peer(k.family, k.proto, k.dst, k.src, k.sport),
            4 => key = HoldKey::host(k.family, k.src),
            5 => key = HoldKey::host(k.family, k.dst),
            _ => {}
        }
        // SAFETY: read-only copy of a value the controller owns.
        if let Some(h) = unsafe { HOLDS.get(&key) } {
            if round < 4 {
                until = until.max(h.expires_ns);
            } else {
                media = true;
            }
        }
    }
    (until & !HOLDS_MEDIA) | if media { HOLDS_MEDIA } else { 0 }
}

/// The bit of [`hold_until`]'s answer that says "count as media".
pub const HOLDS_MEDIA: u64 = 1;
