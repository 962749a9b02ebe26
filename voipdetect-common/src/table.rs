//! The flow tables: open addressing over `BPF_F_MMAPABLE` arrays the XDP
//! program owns and the controller reads through `mmap`, one for IPv4
//! (a 16-byte key: 128-byte slots) and one for IPv6 (40 bytes: 152).
//!
//! A flow lives in one of [`PROBES`] consecutive slots from the one its
//! keyed hash names (sixteen: with linear probing's clusters, eight left
//! 0.5 % of new flows without a free slot at half load; sixteen keep that
//! under 0.1 % up to half and under 1 % up to two thirds, and a lookup of a
//! known flow still stops after one or two). A slot's `tag` word holds its state (low half) and a
//! generation bumped every time it takes a new flow (high half). A slot is
//! [`EMPTY`] until a flow claims it (compare-and-swap of the tag to
//! [`BUSY`], key and counters written, then [`LIVE`]); the controller
//! retires an idle flow by compare-and-swap from the `LIVE` tag it read to
//! [`TOMB`], so a slot that took another flow meanwhile is never retired.
//! (The tag is 64 bits: BPF has a 64-bit compare-and-swap on every CPU
//! version, a 32-bit one only from v3.) Slots never become empty again, so
//! a lookup can stop at the first empty slot. When all probes are taken, a
//! new flow takes the slot whose flow was seen longest ago among them, and
//! that eviction is counted: a flood can only push out flows that are
//! older than its own, never one that is active, and the secret seed keeps
//! it from aiming at one slot.
//!
//! Everything here is used by both sides: the program to find and claim
//! slots, the controller to find flows, read them, and retire them.

use crate::flow::{FAMILY_V4, FlowCounters, FlowKey};

/// Slots a flow may live in, from the one its hash names.
pub const PROBES: u32 = 16;

/// Slot states (the `state` word).
pub const EMPTY: u32 = 0;
/// Being written by the CPU that claimed it.
pub const BUSY: u32 = 1;
pub const LIVE: u32 = 2;
/// Its flow was retired; skipped by lookups, reused by inserts.
pub const TOMB: u32 = 3;

/// An IPv4 direction-flow: key words, state, generation, counters, and
/// the controller's own words.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Slot4 {
    pub key: [u64; 2],
    /// State and generation (see the module docs and [`tag`]).
    pub tag: u64,
    pub c: FlowCounters,
    pub user: UserWords,
}
const _: () = assert!(size_of::<Slot4>() == 128);

/// An IPv6 direction-flow.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Slot6 {
    pub key: [u64; 5],
    pub tag: u64,
    pub c: FlowCounters,
    pub user: UserWords,
}
const _: () = assert!(size_of::<Slot6>() == 152);

/// Two words of a slot that belong to the controller: the program never
/// reads or writes them, not even when a new flow takes the slot. The
/// controller keeps there what it tracks per slot between polls (a stamp
/// of the latest packet it saw, and where it keeps the flow's state), so
/// that costs no memory of its own: in the IPv4 slot they were padding,
/// and a side array of them was 24 bytes of controller memory per flow at
/// the table's working load. Whoever reads them must take them as hints
/// (a slot's new flow inherits its predecessor's).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct UserWords {
    pub stamp: u32,
    pub place: u32,
}

/// A tag: `state` with `generation`.
#[inline(always)]
pub const fn tag(state: u32, generation: u32) -> u64 {
    (generation as u64) << 32 | state as u64
}

/// The state of a tag.
#[inline(always)]
pub const fn state(tag: u64) -> u32 {
    tag as u32
}

/// The generation of a tag.
#[inline(always)]
pub const fn generation(tag: u64) -> u32 {
    (tag >> 32) as u32
}

#[inline(always)]
fn word(b: &[u8], at: usize) -> u64 {
    let mut w = 0u64;
    let mut i = 0;
    while i < 8 {
        w |= (b[at + i] as u64) << (8 * i);
        i += 1;
    }
    w
}

/// An IPv4 key's words: the addresses, then ports and protocol.
#[inline(always)]
pub fn key4(k: &FlowKey) -> [u64; 2] {
    let addrs = u64::from(u32::from_le_bytes([k.src[0], k.src[1], k.src[2], k.src[3]]))
        | u64::from(u32::from_le_bytes([k.dst[0], k.dst[1], k.dst[2], k.dst[3]])) << 32;
    let rest = u64::from(k.sport) | u64::from(k.dport) << 16 | u64::from(k.proto) << 32;
    [addrs, rest]
}

/// The words of the opposite direction of an IPv4 key's words (those of
/// [`FlowKey::reversed`]), without going through a key.
#[inline(always)]
pub fn reversed4(w: [u64; 2]) -> [u64; 2] {
    let ports = (w[1] & 0xffff) << 16 | (w[1] >> 16) & 0xffff;
    [w[0].rotate_left(32), (w[1] & !0xffff_ffff) | ports]
}

/// An IPv6 key's words: the key's 40 bytes.
#[inline(always)]
pub fn key6(k: &FlowKey) -> [u64; 5] {
    let rest = u64::from(k.sport) | u64::from(k.dport) << 16 | u64::from(k.proto) << 32 | u64::from(k.family) << 40;
    [word(&k.src, 0), word(&k.src, 8), word(&k.dst, 0), word(&k.dst, 8), rest]
}

/// The flow key of an IPv4 slot's words.
#[inline]
pub fn flow_key4(w: &[u64; 2]) -> FlowKey {
    let mut k = FlowKey { family: FAMILY_V4, ..Default::default() };
    k.src[..4].copy_from_slice(&(w[0] as u32).to_le_bytes());
    k.dst[..4].copy_from_slice(&((w[0] >> 32) as u32).to_le_bytes());
    k.sport = w[1] as u16;
    k.dport = (w[1] >> 16) as u16;
    k.proto = (w[1] >> 32) as u8;
    k
}

/// The flow key of an IPv6 slot's words.
pub fn flow_key6(w: &[u64; 5]) -> FlowKey {
    let mut k = FlowKey::default();
    k.src[..8].copy_from_slice(&w[0].to_le_bytes());
    k.src[8..].copy_from_slice(&w[1].to_le_bytes());
    k.dst[..8].copy_from_slice(&w[2].to_le_bytes());
    k.dst[8..].copy_from_slice(&w[3].to_le_bytes());
    k.sport = w[4] as u16;
    k.dport = (w[4] >> 16) as u16;
    k.proto = (w[4] >> 32) as u8;
    k.family = (w[4] >> 40) as u8;
    k
}

/// MurmurHash3's 64-bit finaliser: every input bit reaches every output bit.
#[inline(always)]
fn fmix(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// The keyed hash of a key's words. Without the seed, which 5-tuples
/// share a probe sequence cannot be worked out.
#[inline(always)]
pub fn hash(words: &[u64], seed: u64) -> u64 {
    let mut h = seed;
    let mut i = 0;
    while i < words.len() {
        h = fmix(h ^ words[i]).wrapping_add(i as u64);
        i += 1;
    }
    h
}

/// The index of the `probe`-th slot for hash `h` in a table of `mask + 1`
/// slots (a power of two).
#[inline(always)]
pub fn slot_index(h: u64, probe: u32, mask: u32) -> u32 {
    (h as u32).wrapping_add(probe) & mask
}

/// A table's slot count for `wanted` flows: the power of two at or above it.
pub fn capacity(wanted: u32) -> u32 {
    wanted.max(PROBES).checked_next_power_of_two().unwrap_or(1 << 31)
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::collections::HashSet;

    use super::*;
    use crate::flow::{FAMILY_V6, PROTO_TCP, PROTO_UDP};

    fn v4(i: u32) -> FlowKey {
        let mut k = FlowKey { family: FAMILY_V4, proto: PROTO_UDP, sport: 40000, dport: 3478, ..Default::default() };
        k.src[..4].copy_from_slice(&(0x0a00_0000 | i).to_be_bytes());
        k.dst[..4].copy_from_slice(&[198, 51, 100, 2]);
        k
    }

    #[test]
    fn keys_go_to_words_and_back() {
        let k = v4(7);
        assert_eq!(flow_key4(&key4(&k)), k);
        let mut k6 = FlowKey { family: FAMILY_V6, proto: PROTO_TCP, sport: 443, dport: 50000, ..Default::default() };
        k6.src = [0x20, 1, 0xd, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
        k6.dst = [0x20, 1, 0xd, 0xb8, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9];
        assert_eq!(flow_key6(&key6(&k6)), k6);
        // The two directions of a conversation are two keys.
        assert_ne!(key4(&k), key4(&k.reversed()));
        let odd = FlowKey { sport: 0xfffe, dport: 1, proto: 0xff, ..v4(0xff_ffff) };
        for k in [k, odd, odd.reversed()] {
            assert_eq!(reversed4(key4(&k)), key4(&k.reversed()));
        }
    }

    #[test]
    fn the_seed_moves_every_flow_and_flows_spread() {
        let mask = capacity(1 << 16) - 1;
        let (a, b) = (0x1234_5678_9abc_def0, 0x0fed_cba9_8765_4321);
        let moved =
            (0..1000).filter(|&i| slot_index(hash(&key4(&v4(i)), a), 0, mask) != slot_index(hash(&key4(&v4(i)), b), 0, mask)).count();
        assert!(moved > 990, "{moved}");
        // 10 000 sequential sources over 65 536 slots: no home slot holds
        // more than a handful.
        let mut count = std::collections::HashMap::new();
        for i in 0..10_000 {
            *count.entry(slot_index(hash(&key4(&v4(i)), a), 0, mask)).or_insert(0u32) += 1;
        }
        assert!(count.values().all(|&n| n <= 6), "{:?}", count.values().max());
        let distinct: HashSet<_> = (0..10_000).map(|i| hash(&key4(&v4(i)), a)).collect();
        assert_eq!(distinct.len(), 10_000);
    }

    /// The share of new flows that find every probe taken (and so evict
    /// the oldest) while a table fills to `load` with sequential sources.
    fn full_windows(load: f64) -> f64 {
        let slots = 1u32 << 16;
        let mut taken = std::vec![false; slots as usize];
        let n = (f64::from(slots) * load) as u32;
        let mut full = 0;
        for i in 0..n {
            let h = hash(&key4(&v4(i)), 0x5eed);
            match (0..PROBES).map(|p| slot_index(h, p, slots - 1)).find(|&j| !taken[j as usize]) {
                Some(j) => taken[j as usize] = true,
                None => full += 1,
            }
        }
        f64::from(full) / f64::from(n)
    }

    #[test]
    fn a_table_evicts_almost_nothing_below_two_thirds_full() {
        // Linear probing clusters: with 8 probes, 0.5 % of flows already
        // found their window full at half load, 2.8 % at 70 %.
        let (half, two_thirds) = (full_windows(0.5), full_windows(0.67));
        assert!(half < 0.001, "{half}");
        assert!(two_thirds < 0.01, "{two_thirds}");
    }

    #[test]
    fn capacities_are_powers_of_two() {
        assert_eq!(capacity(1), PROBES);
        assert_eq!(capacity(1000), 1024);
        assert_eq!(capacity(1 << 20), 1 << 20);
        assert_eq!(slot_index(u64::MAX, 1, 1023), 0);
    }
}
