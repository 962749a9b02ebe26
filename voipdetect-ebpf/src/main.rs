//! voipdetect's XDP fast path.
//!
//! Per packet: parse (one bounds-checked cursor, see `voipdetect_common::parse`),
//! find or create the direction's flow entry, drop it if the controller has
//! listed the flow, otherwise apply the shared feature update in place and
//! pass. Every packet bumps exactly one outcome counter. Nothing here ever
//! drops a packet it could not parse.
#![no_std]
#![no_main]

mod maps;

use aya_ebpf::{
    bindings::xdp_action,
    helpers::{bpf_ktime_get_coarse_ns, bpf_ktime_get_ns},
    macros::xdp,
    programs::XdpContext,
};
use aya_log_ebpf::debug;
use voipdetect_common::{
    FlowCounters, FlowKey, Stat,
    features::{count_drop, update},
    flow::FAMILY_V4,
    hints::inspect,
    parse::parse_ethernet,
};

use voipdetect_ebpf::frame::Frame;

use crate::maps::{BLOCKLIST, FLOWS, control, count, vd_hold_until};

/// `bpf_map_update_elem` flag: create only.
const BPF_NOEXIST: u64 = 1;

#[xdp]
pub fn voipdetect(ctx: XdpContext) -> u32 {
    let frame = Frame::new(&ctx);
    let pkt = match parse_ethernet(&frame) {
        Ok(pkt) => pkt,
        Err(reason) => {
            count(reason);
            return xdp_action::XDP_PASS;
        }
    };
    let (generation, holds) = control();
    // Rare events are logged last, just before returning: nothing the
    // program still needs is live across the log call.
    let mut event = None;
    let Some(flow) = flow_entry(&ctx, &pkt.key, generation, &mut event) else {
        count(Stat::FlowTableFull);
        return xdp_action::XDP_PASS;
    };
    // SAFETY: the pointer came from a successful lookup; the entry stays
    // valid for this program run (RCU), and concurrent writers are covered
    // by FlowCounters' concurrency contract.
    let flow = unsafe { &mut *flow };
    if flow.verdict_gen != generation || flow.blocked_until_ns != 0 {
        // The coarse clock (a jiffy's resolution) is plenty for a deadline
        // and costs a fraction of the precise one, which only the
        // inter-arrival histogram of passed packets needs.
        // SAFETY: helper without preconditions.
        let coarse = unsafe { bpf_ktime_get_coarse_ns() };
        if blocked(flow, &pkt.key, coarse, generation, holds, &mut event) {
            count_drop(flow, coarse.max(flow.last_seen_ns));
            count(Stat::Dropped);
            if let Some(e) = event {
                log_flow(&ctx, e, &pkt.key);
            }
            return xdp_action::XDP_DROP;
        }
    }
    // SAFETY: helper without preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    if flow.first_seen_ns == 0 {
        flow.first_seen_ns = now;
    }
    update(flow, &pkt, inspect(&frame, &pkt), now);
    if pkt.payload_len == 0 {
        count(Stat::EmptyPayload);
    }
    count(Stat::Tracked);
    if let Some(e) = event {
        log_flow(&ctx, e, &pkt.key);
    }
    xdp_action::XDP_PASS
}

/// Template for new entries, in .rodata: building one on the stack would
/// cost 120 of the program's 512 stack bytes.
static ZERO_FLOW: FlowCounters = FlowCounters::ZERO;

/// The flow's entry, created on its first packet.
#[inline(always)]
#[expect(clippy::needless_borrows_for_generic_args, reason = "by value, the 120-byte template would be copied onto the stack")]
fn flow_entry(ctx: &XdpContext, key: &FlowKey, generation: u32, event: &mut Option<Event>) -> Option<*mut FlowCounters> {
    if let Some(c) = FLOWS.get_ptr_mut(key) {
        return Some(c);
    }
    // NOEXIST: if another CPU created it meanwhile, keep that entry.
    if FLOWS.insert(key, &ZERO_FLOW, BPF_NOEXIST).is_ok() {
        let c = FLOWS.get_ptr_mut(key)?;
        // SAFETY: just created by this CPU; valid for this program run.
        let c = unsafe { &mut *c };
        // first_seen_ns is set from the precise clock by the first update.
        c.ifindex = ctx.ingress_ifindex() as u32;
        // Any value but `generation`: a new flow checks the blocklist on its first packet.
        c.verdict_gen = !generation;
        count(Stat::NewFlow);
        *event = Some(Event::NewFlow);
        return Some(c);
    }
    FLOWS.get_ptr_mut(key)
}

/// True while the flow is listed or held; refreshes the cached verdict
/// when the controller has changed the blocklist or the holds since this
/// flow last looked (and on its first packet: a new flow starts with a
/// generation it cannot match).
#[inline(always)]
fn blocked(flow: &mut FlowCounters, key: &FlowKey, now: u64, generation: u32, holds: u32, event: &mut Option<Event>) -> bool {
    if flow.verdict_gen != generation {
        // SAFETY: read-only copy of a value the controller owns.
        let mut until = unsafe { BLOCKLIST.get(key) }.map_or(0, |e| e.expires_ns);
        // Holds apply to a flow's first packet, and afterwards only to
        // flows they caught: an existing flow an operator unblocked stays
        // unblocked whatever its socket.
        let first = flow.packets == 0 && flow.empty == 0 && flow.dropped == 0;
        if holds != 0 && (first || flow.held != 0) {
            let held = vd_hold_until(key);
            flow.held = u8::from(held > now);
            if first && held > now {
                count(Stat::Held);
            }
            until = until.max(held);
        }
        let was_blocked = flow.blocked_until_ns > now;
        flow.blocked_until_ns = until;
        flow.verdict_gen = generation;
        if until > now && !was_blocked {
            count(Stat::BlockStart);
            *event = Some(Event::BlockStart);
        }
    }
    flow.blocked_until_ns > now
}

/// Rare events, logged at debug level: silenced at load time unless asked
/// for (the level is a load-time constant, so the verifier prunes these
/// paths). The event name sits in the format string: formatting a string
/// argument costs the verifier a bounded copy loop per call site.
#[derive(Clone, Copy)]
enum Event {
    NewFlow,
    BlockStart,
}

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
