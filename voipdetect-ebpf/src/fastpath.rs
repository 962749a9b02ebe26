//! The fast path's stages, shared by the product's entry point and the
//! benchmarks' stage programs (`voipdetect-bench-ebpf`), which price each
//! stage by running the same code up to it.
//!
//! Everything on the way of a known flow's packet is inlined: on this
//! machine kind a BPF subprogram's or helper's return goes through the
//! kernel's return thunk (SRSO "safe RET"), ~10 ns each, so the only calls
//! left are the precise clock (media flows), the blocklist and hold
//! lookups (when the controller changed them), and rare logging.
//!
//! The verifier's budget: the parser has dozens of paths (VLAN depth,
//! IPv4 options, IPv6 extensions, GTP-U), and the verifier would walk
//! everything after it once per path. The parsed packet goes through a
//! per-CPU map value instead (`SCRATCH`): what is read back from map
//! memory the verifier knows only by type, so the paths become one state
//! and the rest is checked once.

use aya_ebpf::{bindings::xdp_action, helpers::bpf_ktime_get_ns, programs::XdpContext};
use voipdetect_common::{
    FlowCounters, FlowKey, Stat, dscp,
    features::{count_drop, update, update_plain},
    flow::FAMILY_V4,
    hints::inspect,
    parse::{Packet, parse_any, parse_common},
};

use crate::{
    clock::coarse_ns,
    frame::Frame,
    maps::{BLOCKLIST, HOLDS_MEDIA, SCRATCH, count, hold_until},
    table::{FLOWS4, FLOWS6, NEW, NONE, slot4, slot6},
};

/// The largest payload offset the header checks look at.
const MAX_PAYLOAD_OFF: usize = 4096;

/// Something worth a debug line.
#[derive(Clone, Copy)]
pub enum Event {
    NewFlow,
    BlockStart,
}

/// The frame's packet, through the scratch entry (see the module docs);
/// `None` once a parse failure is counted.
///
/// Common frames (see `parse_common`) take a short path of their own, and
/// each path writes its result to the scratch entry itself: joined as
/// values, the general path's dozens of byte-sized pieces would be carried
/// through the common path too.
#[inline(always)]
pub fn parse(ctx: &XdpContext) -> Option<Packet> {
    let scratch = SCRATCH.get_ptr_mut(0)?;
    let frame = Frame::new(ctx);
    if let Some(p) = parse_common(&frame) {
        // SAFETY: this CPU's scratch entry; XDP runs with preemption disabled.
        unsafe { store(scratch, p) };
    } else {
        match parse_any(&frame) {
            // SAFETY: as above.
            Ok(p) => unsafe { store(scratch, p) },
            Err(reason) => {
                // Every parse failure passes, counted under its reason.
                count(reason);
                return None;
            }
        }
    }
    // SAFETY: as above. Volatile, so the compiler reloads it rather than
    // reuse what each parse path left in registers.
    Some(unsafe { load(scratch) })
}

const PACKET_WORDS: usize = size_of::<Packet>() / 8;
const _: () = assert!(size_of::<Packet>().is_multiple_of(8) && align_of::<Packet>() == 8);

/// A volatile store of a packet, word by word: as one volatile store of
/// the struct it is copied a byte at a time.
///
/// # Safety
/// `dst` is valid for writes and aligned.
#[inline(always)]
unsafe fn store(dst: *mut Packet, p: Packet) {
    // SAFETY: Packet is plain data of PACKET_WORDS words (asserted above).
    let words: [u64; PACKET_WORDS] = unsafe { core::mem::transmute(p) };
    for (i, w) in words.into_iter().enumerate() {
        // SAFETY: inside `*dst`, aligned (the caller's contract).
        unsafe { core::ptr::write_volatile(dst.cast::<u64>().add(i), w) };
    }
}

/// The volatile load matching [`store`].
///
/// # Safety
/// `src` is valid for reads, aligned, and holds a packet.
#[inline(always)]
unsafe fn load(src: *const Packet) -> Packet {
    let mut words = [0u64; PACKET_WORDS];
    for (i, w) in words.iter_mut().enumerate() {
        // SAFETY: inside `*src`, aligned (the caller's contract).
        *w = unsafe { core::ptr::read_volatile(src.cast::<u64>().add(i)) };
    }
    // SAFETY: the words of a Packet (the caller's contract); every bit
    // pattern the program stores is one.
    unsafe { core::mem::transmute(words) }
}

/// The slot of the packet's flow (claimed if new): its index, with
/// [`NEW`] set for a new flow, or [`NONE`].
#[inline(always)]
pub fn slot(ctx: &XdpContext, pkt: &Packet, generation: u32, seed: u64) -> u32 {
    let ifindex = ctx.ingress_ifindex() as u32;
    if pkt.key.family == FAMILY_V4 { slot4(&pkt.key, ifindex, generation, seed) } else { slot6(&pkt.key, ifindex, generation, seed) }
}

/// The counters in slot `idx` of the packet's family's table.
#[inline(always)]
pub fn counters<'a>(pkt: &Packet, idx: u32) -> Option<&'a mut FlowCounters> {
    let flow = if pkt.key.family == FAMILY_V4 {
        // SAFETY: a slot of the array, valid for this program run.
        FLOWS4.get_ptr_mut(idx & !NEW).map(|s| unsafe { &raw mut (*s).c })
    } else {
        // SAFETY: as above.
        FLOWS6.get_ptr_mut(idx & !NEW).map(|s| unsafe { &raw mut (*s).c })
    };
    // SAFETY: the slot's counters, covered by FlowCounters' concurrency contract.
    flow.and_then(|f| unsafe { f.as_mut() })
}

/// The whole path of a parsed packet: its flow's slot, then [`packet`].
#[inline(always)]
pub fn run(ctx: &XdpContext, pkt: &Packet, generation: u32, holds: u32, seed: u64, event: &mut Option<Event>) -> u32 {
    let idx = slot(ctx, pkt, generation, seed);
    if idx == NONE {
        count(Stat::FlowTableFull);
        return xdp_action::XDP_PASS;
    }
    let Some(flow) = counters(pkt, idx) else { return xdp_action::XDP_PASS };
    let action = packet(ctx, flow, pkt, generation, holds, event);
    if idx & NEW != 0 {
        count(Stat::NewFlow);
        *event = event.or(Some(Event::NewFlow));
    }
    action
}

/// A packet of a flow whose counters are `flow`: dropped while the flow is
/// listed or held (or, listed for marking, its DSCP rewritten), else
/// counted.
#[inline(always)]
pub fn packet(ctx: &XdpContext, flow: &mut FlowCounters, pkt: &Packet, generation: u32, holds: u32, event: &mut Option<Event>) -> u32 {
    if flow.verdict_gen != generation || flow.blocked_until_ns != 0 {
        // A tick's resolution is plenty for a deadline.
        let coarse = coarse_ns();
        if blocked(flow, &pkt.key, coarse, generation, holds, event) {
            if flow.mark == 0 {
                count_drop(flow, coarse.max(flow.last_seen_ns));
                count(Stat::Dropped);
                return xdp_action::XDP_DROP;
            }
            if remark(ctx, pkt, dscp::dscp_of(flow.mark)) {
                count(Stat::Marked);
            }
        }
    }
    let now = if flow.media != 0 {
        let frame = Frame::new(ctx);
        // The offset came through memory: the verifier wants a bound on it
        // before it goes into a packet pointer, small enough that the
        // pointer plus a header stays under its 64 KiB packet limit. A
        // frame fits in a page, so a larger offset is past its end anyway.
        let bounded = Packet { payload_off: pkt.payload_off.min(MAX_PAYLOAD_OFF), ..*pkt };
        // Only the gaps between a media flow's packets need the precise
        // clock (the one helper call of this path).
        // SAFETY: helper without preconditions.
        let now = unsafe { bpf_ktime_get_ns() };
        update(flow, pkt, inspect(&frame, &bounded), now);
        now
    } else {
        let now = coarse_ns();
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
    xdp_action::XDP_PASS
}

/// True while the flow is listed or held; refreshes the cached verdict
/// when the controller has changed the blocklist or the holds since this
/// flow last looked (and on its first packet: a new flow starts with a
/// generation it cannot match).
#[inline(always)]
fn blocked(flow: &mut FlowCounters, key: &FlowKey, now: u64, generation: u32, holds: u32, event: &mut Option<Event>) -> bool {
    if flow.verdict_gen != generation {
        // SAFETY: read-only copy of a value the controller owns.
        let (mut until, mut mark) = unsafe { BLOCKLIST.get(key) }.map_or((0, 0), |e| (e.expires_ns, e.mark));
        // Holds apply to a flow's first packet, and afterwards only to
        // flows they caught: an existing flow an operator unblocked stays
        // unblocked whatever its socket.
        let first = flow.packets == 0 && flow.empty == 0 && flow.dropped == 0;
        if holds != 0 && (first || flow.held != 0) {
            let answer = hold_until(key);
            if first && answer & HOLDS_MEDIA != 0 {
                // A host under suspicion: its new conversation may be its
                // call coming back, over TCP too.
                flow.media = 1;
            }
            let held = answer & !HOLDS_MEDIA;
            flow.held = u8::from(held > now);
            if held > now {
                // A hold drops, whatever the blocklist says.
                mark = 0;
                if first {
                    count(Stat::Held);
                }
            }
            until = until.max(held);
        }
        let was_blocked = flow.blocked_until_ns > now;
        flow.blocked_until_ns = until;
        flow.mark = mark;
        flow.verdict_gen = generation;
        if until > now && !was_blocked && mark == 0 {
            count(Stat::BlockStart);
            *event = Some(Event::BlockStart);
        }
    }
    flow.blocked_until_ns > now
}

/// The largest IP header offset mark mode rewrites at (Ethernet and two
/// VLAN tags are 22 bytes): a bound the verifier needs on an offset read
/// from memory.
const MAX_L3_OFF: usize = 64;

/// Rewrites the packet's DSCP to `dscp` (mark mode; see
/// [`voipdetect_common::dscp`]): IPv4 with its header checksum updated,
/// IPv6 in the traffic class. Whether the header was there to rewrite.
#[inline(always)]
fn remark(ctx: &XdpContext, pkt: &Packet, dscp: u8) -> bool {
    let off = usize::from(pkt.l3_off);
    if off == 0 || off > MAX_L3_OFF {
        return false;
    }
    let (start, end) = (ctx.data(), ctx.data_end());
    let h = (start + off) as *mut u8;
    if pkt.key.family == FAMILY_V4 {
        if start + off + 12 > end {
            return false;
        }
        // SAFETY: bytes off..off+12 of the frame, checked above.
        unsafe {
            let (tos, sum) = dscp::ipv4(*h, *h.add(1), u16::from_be_bytes([*h.add(10), *h.add(11)]), dscp);
            let [hi, lo] = sum.to_be_bytes();
            *h.add(1) = tos;
            *h.add(10) = hi;
            *h.add(11) = lo;
        }
    } else {
        if start + off + 2 > end {
            return false;
        }
        // SAFETY: bytes off..off+2 of the frame, checked above.
        unsafe {
            let (b0, b1) = dscp::ipv6(*h, *h.add(1), dscp);
            *h = b0;
            *h.add(1) = b1;
        }
    }
    true
}
