//! The coarse clock without a helper call.
//!
//! `bpf_ktime_get_coarse_ns` is a helper: its call and return cost ~18 ns
//! here, more than the parser. `bpf_jiffies64` the verifier rewrites into
//! a plain load of the kernel's tick counter (free), but jiffies are not
//! time. So each CPU keeps an anchor, a jiffies reading and the precise
//! clock at that moment, renewed every [`ANCHOR_TICKS`] ticks (one
//! precise read per CPU every quarter second at HZ = 250), and reads the
//! time as the anchor plus the ticks since, less one. Like
//! `bpf_ktime_get_coarse_ns` it never runs ahead of the precise clock and
//! lags it by at most two ticks: both follow CLOCK_MONOTONIC tick by tick.

use aya_ebpf::{
    Global,
    helpers::{bpf_jiffies64, bpf_ktime_get_ns},
    macros::map,
    maps::PerCpuArray,
};
use voipdetect_common::maps::DEFAULT_TICK_NS;

/// Ticks between anchors.
const ANCHOR_TICKS: u64 = 64;

/// The tick length in ns, set at load time from `clock_getres` of
/// CLOCK_MONOTONIC_COARSE (whose resolution is exactly one tick).
#[unsafe(no_mangle)]
static TICK_NS: Global<u64> = Global::new(DEFAULT_TICK_NS);

#[repr(C)]
pub struct Anchor {
    jiffies: u64,
    ns: u64,
}

#[map(name = "VD_CLOCK")]
static ANCHORS: PerCpuArray<Anchor> = PerCpuArray::with_max_entries(1, 0);

/// CLOCK_MONOTONIC to a tick (the coarse clock's resolution).
#[inline(always)]
pub fn coarse_ns() -> u64 {
    // SAFETY: inlined by the verifier into a load of `jiffies`.
    let now = unsafe { bpf_jiffies64() };
    let Some(a) = ANCHORS.get_ptr_mut(0) else {
        // SAFETY: helper without preconditions (unreachable: index 0 exists).
        return unsafe { bpf_ktime_get_ns() };
    };
    // SAFETY: this CPU's entry; XDP runs with preemption disabled.
    let a = unsafe { &mut *a };
    let ticks = now.wrapping_sub(a.jiffies);
    if a.ns == 0 || ticks >= ANCHOR_TICKS {
        a.jiffies = now;
        // SAFETY: helper without preconditions.
        a.ns = unsafe { bpf_ktime_get_ns() };
        return a.ns;
    }
    // The anchor was read somewhere inside its tick, so anchor plus whole
    // ticks could run up to a tick ahead of the precise clock; one tick
    // less never does (like the kernel's coarse clock, it lags instead).
    a.ns + ticks.saturating_sub(1) * TICK_NS.load()
}
