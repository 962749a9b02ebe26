//! voipdetect's XDP fast path.
//!
//! Per packet: parse (one bounds-checked cursor, see `voipdetect_common::parse`),
//! find or claim the direction's slot in the flow table, drop it if the
//! controller has listed or held the flow, otherwise apply the shared
//! feature update in place and pass: the full one (precise clock, gaps,
//! header checks) for a flow that may be media, counts and sizes for any
//! other. Every packet bumps exactly one outcome counter. Nothing here ever
//! drops a packet it could not parse. The stages live in the library
//! (`voipdetect_ebpf::fastpath`), where the benchmarks reach them too.
#![no_std]
#![no_main]

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use aya_log_ebpf::debug;
use voipdetect_common::{FlowKey, flow::FAMILY_V4};
use voipdetect_ebpf::{
    fastpath::{self, Event},
    maps::control,
};

#[xdp]
pub fn voipdetect(ctx: XdpContext) -> u32 {
    let Some(pkt) = fastpath::parse(&ctx) else { return xdp_action::XDP_PASS };
    let (generation, holds, seed) = control();
    let mut event = None;
    let action = fastpath::run(&ctx, &pkt, generation, holds, seed, &mut event);
    // Rare events are logged last, on the way out.
    if let Some(e) = event {
        log_flow(&ctx, e, &pkt.key);
    }
    action
}

/// Rare events, logged at debug level: silenced at load time unless asked
/// for (the level is a load-time constant, so the verifier prunes these
/// paths). The event name sits in the format string: formatting a string
/// argument costs the verifier a bounded copy loop per call site.
#[inline(always)]
fn log_flow(ctx: &XdpContext, what: Event, k: &FlowKey) {
    if k.family == FAMILY_V4 {
        let src = u32::from_be_bytes([k.src[0], k.src[1], k.src[2], k.src[3]]);
        let dst = u32::from_be_bytes([k.dst[0], k.dst[1], k.dst[2], k.dst[3]]);
        match what {
            Event::NewFlow => debug!(ctx, "new flow proto={} {:i}:{} -> {:i}:{}", k.proto, src, k.sport, dst, k.dport),
            Event::BlockStart => debug!(ctx, "block start proto={} {:i}:{} -> {:i}:{}", k.proto, src, k.sport, dst, k.dport),
        }
    } else {
        // IPv6 addresses stay out: 16-byte arguments at every call site
        // cost the verifier more than a debug line is worth.
        match what {
            Event::NewFlow => debug!(ctx, "new flow proto={} ipv6 port {} -> port {}", k.proto, k.sport, k.dport),
            Event::BlockStart => debug!(ctx, "block start proto={} ipv6 port {} -> port {}", k.proto, k.sport, k.dport),
        }
    }
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
