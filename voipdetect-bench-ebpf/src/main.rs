//! Reference XDP programs for the benchmarks, measured side by side with
//! the production program so every figure is a ratio taken in one run.
#![no_std]
#![no_main]

use aya_ebpf::{
    Global,
    bindings::xdp_action,
    helpers::{bpf_get_prandom_u32, bpf_redirect},
    macros::{map, xdp},
    maps::PerCpuArray,
    programs::XdpContext,
};
use voipdetect_common::parse::parse_ethernet;
use voipdetect_ebpf::frame::Frame;

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

/// The parser alone, the result kept alive so it is not optimised away.
#[xdp]
pub fn bench_parse(ctx: XdpContext) -> u32 {
    let frame = Frame::new(&ctx);
    let r = parse_ethernet(&frame).map(|p| p.payload_len);
    core::hint::black_box(r.is_ok());
    xdp_action::XDP_PASS
}

/// The packet generator: run with BPF_PROG_TEST_RUN in live-frames mode,
/// every frame is transmitted out of the interface `REDIRECT_IFINDEX`.
#[xdp]
pub fn bench_redirect(_ctx: XdpContext) -> u32 {
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
