//! Reference XDP programs for the benchmarks, measured side by side with
//! the production program so every figure is a ratio taken in one run.
#![no_std]
#![no_main]

use aya_ebpf::{
    Global,
    bindings::xdp_action,
    helpers::{bpf_get_prandom_u32, bpf_jiffies64, bpf_ktime_get_coarse_ns, bpf_ktime_get_ns, bpf_redirect},
    macros::{map, xdp},
    maps::PerCpuArray,
    programs::XdpContext,
};
use voipdetect_common::parse::parse_ethernet;
use voipdetect_ebpf::{
    clock::coarse_ns,
    fastpath::{self, counters, slot},
    frame::Frame,
    maps::control,
};

/// Packets seen by `bench_count_drop`.
#[map(name = "BENCH_COUNT")]
static COUNT: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Where `bench_redirect` sends its frames (set at load time).
#[unsafe(no_mangle)]
static REDIRECT_IFINDEX: Global<u32> = Global::new(0);

/// The floor: an XDP program that does nothing.
#[xdp]
pub fn bench_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// A plain drop that counts what it drops (the end-to-end reference).
#[xdp]
pub fn bench_count_drop(_ctx: XdpContext) -> u32 {
    if let Some(c) = COUNT.get_ptr_mut(0) {
        // SAFETY: per-CPU slot of this CPU.
        unsafe { *c += 1 };
    }
    xdp_action::XDP_DROP
}

/// The parser alone, its whole result kept so none of it is optimised away.
#[xdp]
pub fn bench_parse(ctx: XdpContext) -> u32 {
    let frame = Frame::new(&ctx);
    let r = parse_ethernet(&frame).map(|p| p.payload_len);
    core::hint::black_box(r.is_ok());
    xdp_action::XDP_PASS
}

/// One call of a BPF subprogram that does nothing: what a global
/// function's call and return cost on this machine.
#[xdp]
pub fn bench_call(ctx: XdpContext) -> u32 {
    bench_noop(ctx.ctx)
}

#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn bench_noop(ctx: *mut aya_ebpf::bindings::xdp_md) -> u32 {
    core::hint::black_box(ctx);
    xdp_action::XDP_PASS
}

/// One read of the precise clock (`bpf_ktime_get_ns`).
#[xdp]
pub fn bench_clock(_ctx: XdpContext) -> u32 {
    // SAFETY: helper without preconditions.
    core::hint::black_box(unsafe { bpf_ktime_get_ns() });
    xdp_action::XDP_PASS
}

/// One read of the coarse clock (`bpf_ktime_get_coarse_ns`).
#[xdp]
pub fn bench_coarse_clock(_ctx: XdpContext) -> u32 {
    // SAFETY: helper without preconditions.
    core::hint::black_box(unsafe { bpf_ktime_get_coarse_ns() });
    xdp_action::XDP_PASS
}

/// One read of the jiffies counter (`bpf_jiffies64`, which the verifier
/// turns into a plain load).
#[xdp]
pub fn bench_jiffies(_ctx: XdpContext) -> u32 {
    // SAFETY: helper without preconditions.
    core::hint::black_box(unsafe { bpf_jiffies64() });
    xdp_action::XDP_PASS
}

// The product's path up to one stage, on the benchmark object's own
// instances of its maps: the differences between consecutive stages are
// what each stage costs.

/// Stage 1: the parse, through the per-CPU scratch entry.
#[xdp]
pub fn bench_stage_parse(ctx: XdpContext) -> u32 {
    core::hint::black_box(&fastpath::parse(&ctx));
    xdp_action::XDP_PASS
}

/// Stage 2: and the flow's slot (the control entry, the hash, the probes).
#[xdp]
pub fn bench_stage_slot(ctx: XdpContext) -> u32 {
    let Some(pkt) = fastpath::parse(&ctx) else { return xdp_action::XDP_PASS };
    let (generation, _, seed) = control();
    core::hint::black_box(slot(&ctx, &pkt, generation, seed));
    xdp_action::XDP_PASS
}

/// Stage 3: and the coarse clock, the slot's counters in hand.
#[xdp]
pub fn bench_stage_clock(ctx: XdpContext) -> u32 {
    let Some(pkt) = fastpath::parse(&ctx) else { return xdp_action::XDP_PASS };
    let (generation, _, seed) = control();
    let idx = slot(&ctx, &pkt, generation, seed);
    if let Some(c) = counters(&pkt, idx) {
        c.last_seen_ns = coarse_ns();
    }
    xdp_action::XDP_PASS
}

/// The packet generator: run with BPF_PROG_TEST_RUN in live-frames mode,
/// every frame is transmitted out of the interface `REDIRECT_IFINDEX`.
#[xdp]
pub fn bench_redirect(_ctx: XdpContext) -> u32 {
    // SAFETY: helper without memory arguments.
    unsafe { bpf_redirect(REDIRECT_IFINDEX.load(), 0) as u32 }
}

/// The Ethernet and IPv4 header `bench_redirect_fresh` restores (set at
/// load time).
#[unsafe(no_mangle)]
static REDIRECT_HEADER: Global<[u8; 34]> = Global::new([0; 34]);

/// Like `bench_redirect`, but every frame gets its Ethernet and IPv4 header
/// rewritten first. Live-frames mode initialises a page once and recycles
/// it; a forwarding hop rewrites the MAC addresses and the TTL in that
/// page, so without this the recycled frames come back addressed to the
/// next hop and the gateway drops them as not its own.
#[xdp]
pub fn bench_redirect_fresh(ctx: XdpContext) -> u32 {
    let (start, end) = (ctx.data(), ctx.data_end());
    if start + 34 > end {
        return xdp_action::XDP_ABORTED;
    }
    let header = REDIRECT_HEADER.load();
    let p = start as *mut u8;
    for (i, b) in header.iter().enumerate() {
        // SAFETY: i < 34, inside the bytes checked above.
        unsafe { *p.add(i) = *b };
    }
    // SAFETY: helper without memory arguments.
    unsafe { bpf_redirect(REDIRECT_IFINDEX.load(), 0) as u32 }
}

/// A flood of distinct flows: like `bench_redirect`, but every frame gets
/// a random source address (last byte), source port and destination port
/// first. Expects Ethernet + IPv4 (no options) + UDP.
#[xdp]
pub fn bench_flood(ctx: XdpContext) -> u32 {
    let (start, end) = (ctx.data(), ctx.data_end());
    if start + 38 > end {
        return xdp_action::XDP_PASS;
    }
    // SAFETY: helpers without memory arguments.
    let (a, b) = unsafe { (bpf_get_prandom_u32(), bpf_get_prandom_u32()) };
    let p = start as *mut u8;
    // SAFETY: offsets 29 and 34..38 lie inside the 38 bytes checked above.
    unsafe {
        *p.add(29) = a as u8;
        *p.add(34) = (a >> 8) as u8;
        *p.add(35) = (a >> 16) as u8;
        *p.add(36) = b as u8;
        *p.add(37) = (b >> 8) as u8;
    }
    // SAFETY: helper without memory arguments.
    unsafe { bpf_redirect(REDIRECT_IFINDEX.load(), 0) as u32 }
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
