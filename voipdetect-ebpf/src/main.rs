//! voipdetect's XDP fast path.
//!
//! Per packet: parse (one bounds-checked cursor, see `voipdetect_common::parse`),
//! find or claim the direction's slot in the flow table (`table`), drop it
//! if the controller has listed or held the flow, otherwise apply the shared
//! feature update in place and pass: the full one (precise clock, gaps,
//! header checks) for a flow that may be media, counts and sizes for any
//! other. Every packet bumps exactly one outcome counter. Nothing here ever
//! drops a packet it could not parse.
//!
//! The stages are global BPF functions (`vd_parse`, `vd_packet`,
//! `vd_count`, and the table's and holds' lookups): the verifier checks
//! each once, on its own, instead of every later stage once for every path
//! an earlier one can take (the parser alone has dozens: VLAN depth, IPv4
//! options, IPv6 extensions, GTP-U). Each returns plain numbers.
#![no_std]
#![no_main]
// The global functions take pointers because BPF's calling convention
// wants them; the verifier checks each against its pointee's size, and
// only this program calls them.
#![allow(clippy::not_unsafe_ptr_arg_deref)]

mod maps;
mod table;

use aya_ebpf::{
    bindings::{xdp_action, xdp_md},
    helpers::{bpf_ktime_get_coarse_ns, bpf_ktime_get_ns},
    macros::xdp,
    programs::XdpContext,
};
use aya_log_ebpf::debug;
use voipdetect_common::{
    FlowCounters, FlowKey, Stat,
    features::{count_drop, update, update_plain},
    flow::FAMILY_V4,
    hints::inspect,
    parse::{Packet, parse_ethernet},
};

use voipdetect_ebpf::frame::Frame;

use crate::{
    maps::{BLOCKLIST, HOLDS_MEDIA, control, count, vd_hold_until},
    table::{FLOWS4, FLOWS6, NEW, NONE, vd_slot4, vd_slot6},
};

/// [`vd_packet`]'s answer: the XDP action in the low byte, an [`Event`]
/// above it.
const EVENT_SHIFT: u32 = 8;
const EVENT_NEW_FLOW: u32 = 1;
const EVENT_BLOCK_START: u32 = 2;

/// The largest payload offset the header checks look at.
const MAX_PAYLOAD_OFF: usize = 4096;

#[xdp]
pub fn voipdetect(ctx: XdpContext) -> u32 {
    let mut pkt = Packet::EMPTY;
    let parsed = vd_parse(ctx.ctx, &mut pkt);
    if parsed != 0 {
        // Every parse failure passes, counted under its reason.
        if let Some(&reason) = Stat::ALL.get(parsed as usize - 1) {
            count(reason);
        }
        return xdp_action::XDP_PASS;
    }
    let (generation, holds, seed) = control();
    let answer = vd_packet(ctx.ctx, &pkt, generation, holds, seed);
    // Rare events are logged last, on the way out.
    match answer >> EVENT_SHIFT {
        EVENT_NEW_FLOW => log_flow(&ctx, Event::NewFlow, &pkt.key),
        EVENT_BLOCK_START => log_flow(&ctx, Event::BlockStart, &pkt.key),
        _ => {}
    }
    answer & 0xff
}

/// Parses the frame into `out`; 0, or the failure's [`Stat`] plus one.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn vd_parse(ctx: *mut xdp_md, out: *mut Packet) -> u32 {
    // SAFETY: the verifier hands a global function's memory argument over
    // as possibly null memory of the pointee's size, checked here.
    let Some(out) = (unsafe { out.as_mut() }) else { return Stat::Truncated as u32 + 1 };
    let frame = Frame::new(&XdpContext::new(ctx));
    match parse_ethernet(&frame) {
        Ok(p) => {
            *out = p;
            0
        }
        Err(reason) => reason as u32 + 1,
    }
}

/// Everything after the parse: the flow's slot, then [`vd_count`].
/// Returns the action and an event (see [`EVENT_SHIFT`]).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn vd_packet(ctx: *mut xdp_md, pkt: *const Packet, generation: u32, holds: u32, seed: u64) -> u32 {
    // SAFETY: as in `vd_parse`.
    let Some(pkt) = (unsafe { pkt.as_ref() }) else { return xdp_action::XDP_PASS };
    // SAFETY: the context of this program run.
    let ifindex = unsafe { (*ctx).ingress_ifindex };
    let idx = if pkt.key.family == FAMILY_V4 {
        vd_slot4(&pkt.key, ifindex, generation, seed)
    } else {
        vd_slot6(&pkt.key, ifindex, generation, seed)
    };
    if idx == NONE {
        count(Stat::FlowTableFull);
        return xdp_action::XDP_PASS;
    }
    // The slot's counters, handed on as plain memory: whichever table they
    // are in, the verifier checks what follows once.
    let flow = if pkt.key.family == FAMILY_V4 {
        // SAFETY: a slot of the array, valid for this program run.
        FLOWS4.get_ptr_mut(idx & !NEW).map(|s| unsafe { &raw mut (*s).c })
    } else {
        // SAFETY: as above.
        FLOWS6.get_ptr_mut(idx & !NEW).map(|s| unsafe { &raw mut (*s).c })
    };
    let Some(flow) = flow else { return xdp_action::XDP_PASS };
    let mut answer = vd_count(ctx, flow, pkt, generation, holds);
    if idx & NEW != 0 {
        count(Stat::NewFlow);
        if answer >> EVENT_SHIFT == 0 {
            answer |= EVENT_NEW_FLOW << EVENT_SHIFT;
        }
    }
    answer
}

/// A packet of a flow whose counters are `flow`: dropped while the flow is
/// listed or held, else counted. Returns the action and an event.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn vd_count(ctx: *mut xdp_md, flow: *mut FlowCounters, pkt: *const Packet, generation: u32, holds: u32) -> u32 {
    // SAFETY: as in `vd_parse`; the flow's slot is covered by
    // FlowCounters' concurrency contract.
    let (Some(flow), Some(pkt)) = (unsafe { flow.as_mut() }, unsafe { pkt.as_ref() }) else { return xdp_action::XDP_PASS };
    let mut event = 0;
    if flow.verdict_gen != generation || flow.blocked_until_ns != 0 {
        // The coarse clock (a jiffy's resolution) is plenty for a deadline
        // and costs a fraction of the precise one, which only the
        // inter-arrival histogram of media flows needs.
        // SAFETY: helper without preconditions.
        let coarse = unsafe { bpf_ktime_get_coarse_ns() };
        let mut e = None;
        let drop = blocked(flow, &pkt.key, coarse, generation, holds, &mut e);
        if e.is_some() {
            event = EVENT_BLOCK_START << EVENT_SHIFT;
        }
        if drop {
            count_drop(flow, coarse.max(flow.last_seen_ns));
            count(Stat::Dropped);
            return xdp_action::XDP_DROP | event;
        }
    }
    let now = if flow.media != 0 {
        let frame = Frame::new(&XdpContext::new(ctx));
        // The offset came through memory: the verifier wants a bound on it
        // before it goes into a packet pointer, small enough that the
        // pointer plus a header stays under its 64 KiB packet limit. A
        // frame fits in a page, so a larger offset is past its end anyway.
        let bounded = Packet { payload_off: pkt.payload_off.min(MAX_PAYLOAD_OFF), ..*pkt };
        // SAFETY: helper without preconditions.
        let now = unsafe { bpf_ktime_get_ns() };
        update(flow, pkt, inspect(&frame, &bounded), now);
        now
    } else {
        // SAFETY: helper without preconditions.
        let now = unsafe { bpf_ktime_get_coarse_ns() };
        update_plain(flow, pkt, now);
        now
    };
    if flow.first_seen_ns == 0 {
        flow.first_seen_ns = now;
    }
    if pkt.payload_len == 0 {
        count(Stat::EmptyPayload);
    }
    count(Stat::Tracked);
    xdp_action::XDP_PASS | event
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
            let answer = vd_hold_until(key);
            if first && answer & HOLDS_MEDIA != 0 {
                // A host under suspicion: its new conversation may be its
                // call coming back, over TCP too.
                flow.media = 1;
            }
            let held = answer & !HOLDS_MEDIA;
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
