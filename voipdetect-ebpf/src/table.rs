//! The program's side of the flow tables (`voipdetect_common::table`):
//! find a flow's slot, or claim one for a new flow.
//!
//! Inlined into the program: a BPF subprogram's call and return cost
//! ~12 ns on this machine kind (its return goes through the kernel's
//! return thunk), a fifth of the whole budget. Every array lookup here is
//! one the verifier inlines too, so a packet of a known flow makes no call
//! at all. They return a slot index (with [`NEW`] set when the flow was
//! just created) or [`NONE`].

use aya_ebpf::{Global, bindings::BPF_F_MMAPABLE, macros::map, maps::Array};
use voipdetect_common::{
    FlowCounters, FlowKey, Stat,
    features::{cas64, starts_as_media},
    maps::{DEFAULT_FLOW_ENTRIES, V6_SHARE},
    table::{BUSY, EMPTY, LIVE, PROBES, Slot4, Slot6, TOMB, generation, hash, key4, key6, slot_index, state, tag},
};

use crate::maps::count;

#[map(name = "VD_FLOWS4")]
pub static FLOWS4: Array<Slot4> = Array::with_max_entries(DEFAULT_FLOW_ENTRIES, BPF_F_MMAPABLE);

#[map(name = "VD_FLOWS6")]
pub static FLOWS6: Array<Slot6> = Array::with_max_entries(DEFAULT_FLOW_ENTRIES / V6_SHARE, BPF_F_MMAPABLE);

/// The tables' slot counts minus one, set at load time to match the
/// sizes the maps were created with.
#[unsafe(no_mangle)]
static FLOWS4_MASK: Global<u32> = Global::new(DEFAULT_FLOW_ENTRIES - 1);
#[unsafe(no_mangle)]
static FLOWS6_MASK: Global<u32> = Global::new(DEFAULT_FLOW_ENTRIES / V6_SHARE - 1);

/// No slot: every probe was being written by another CPU.
pub const NONE: u32 = u32::MAX;
/// Set in a returned index when the flow was created by this call.
pub const NEW: u32 = 1 << 31;

/// Fills a slot this CPU has just claimed (state [`BUSY`]) with a new flow.
#[inline(always)]
fn fill(key: &FlowKey, c: &mut FlowCounters, ifindex: u32, generation: u32) {
    // first_seen_ns is set by the first update, from the clock it reads.
    // Word by word: a struct assignment would become a call to memset.
    let words = (c as *mut FlowCounters).cast::<u64>();
    for i in 0..size_of::<FlowCounters>() / 8 {
        // SAFETY: inside the slot's counters, which are 8-byte aligned.
        unsafe { core::ptr::write_volatile(words.add(i), 0) };
    }
    c.ifindex = ifindex;
    // Any value but `generation`: a new flow checks the blocklist (and
    // the holds) on its first packet.
    c.verdict_gen = !generation;
    c.media = starts_as_media(key);
}

/// Whether two keys' words are equal. Not `==`: LLVM turns a comparison
/// of arrays (or a chain of word comparisons) into a call to memcmp.
#[inline(always)]
fn same<const N: usize>(a: &[u64; N], b: &[u64; N]) -> bool {
    let mut diff = 0;
    for i in 0..N {
        diff |= a[i] ^ b[i];
    }
    diff == 0
}

/// One probe's verdict on a slot.
enum Seen {
    /// The flow lives here.
    Found,
    /// Empty: the flow is nowhere further on; claim this one.
    Empty,
    /// Retired or live: remember as a candidate, keep looking.
    Other,
}

#[inline(always)]
fn look(state: u32, matches: bool) -> Seen {
    match state {
        LIVE if matches => Seen::Found,
        EMPTY => Seen::Empty,
        _ => Seen::Other,
    }
}

macro_rules! slot_fn {
    ($name:ident, $table:ident, $mask:ident, $words:ident) => {
        /// The slot of `key`'s flow, claimed for it if new (see the module docs).
        #[inline(always)]
        pub fn $name(key: &FlowKey, ifindex: u32, block_gen: u32, seed: u64) -> u32 {
            let words = $words(key);
            let h = hash(&words, seed);
            let mask = $mask.load();
            // Where a new flow would go: the first retired slot, else the
            // slot whose flow was seen longest ago.
            let (mut tomb, mut oldest, mut oldest_seen) = (NONE, NONE, u64::MAX);
            let (mut claim, mut seen_tag) = (NONE, 0);
            let (mut tomb_tag, mut oldest_tag) = (0, 0);
            for probe in 0..PROBES {
                let idx = slot_index(h, probe, mask);
                let Some(s) = $table.get_ptr_mut(idx) else { return NONE };
                // SAFETY: a slot of the array, valid for this program run;
                // other CPUs may write it (see the module docs of the table).
                let s = unsafe { &mut *s };
                // SAFETY: an aligned u64 of the slot; read once.
                let t = unsafe { core::ptr::read_volatile(&s.tag) };
                let st = state(t);
                match look(st, same(&s.key, &words)) {
                    Seen::Found => return idx,
                    Seen::Empty => {
                        (claim, seen_tag) = (idx, t);
                        break;
                    }
                    Seen::Other if st == TOMB && tomb == NONE => (tomb, tomb_tag) = (idx, t),
                    Seen::Other if st == LIVE && s.c.last_seen_ns < oldest_seen => {
                        (oldest, oldest_tag) = (idx, t);
                        oldest_seen = s.c.last_seen_ns;
                    }
                    Seen::Other => {}
                }
            }
            // A retired slot first: it keeps the flows' windows short.
            let (idx, from) = if tomb != NONE {
                (tomb, tomb_tag)
            } else if claim != NONE {
                (claim, seen_tag)
            } else if oldest != NONE {
                (oldest, oldest_tag)
            } else {
                return NONE;
            };
            let Some(s) = $table.get_ptr_mut(idx) else { return NONE };
            // SAFETY: as above.
            let s = unsafe { &mut *s };
            // Another CPU may have taken the slot meanwhile (the same new
            // flow's first packet on two queues at once): give up on this
            // packet rather than file the flow twice.
            let next = generation(from).wrapping_add(1);
            if !cas64(&mut s.tag, from, tag(BUSY, next)) {
                return NONE;
            }
            if state(from) == LIVE {
                count(Stat::Evicted);
            }
            s.key = words;
            fill(key, &mut s.c, ifindex, block_gen);
            // SAFETY: an aligned u64 of the slot; published last.
            unsafe { core::ptr::write_volatile(&mut s.tag, tag(LIVE, next)) };
            idx | NEW
        }
    };
}

slot_fn!(slot4, FLOWS4, FLOWS4_MASK, key4);
slot_fn!(slot6, FLOWS6, FLOWS6_MASK, key6);
