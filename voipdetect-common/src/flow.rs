//! Map keys and values. Layouts are fixed (`repr(C)`, explicit padding,
//! compile-time size checks) because the kernel and the controller read the
//! same bytes.

use crate::features::{IAT_BUCKETS, SIZE_BUCKETS};

/// Address family tag stored in [`FlowKey::family`].
pub const FAMILY_V4: u8 = 4;
/// Address family tag stored in [`FlowKey::family`].
pub const FAMILY_V6: u8 = 6;

/// IP protocol numbers we track (IANA "Assigned Internet Protocol Numbers").
pub const PROTO_TCP: u8 = 6;
/// See [`PROTO_TCP`].
pub const PROTO_UDP: u8 = 17;

/// One direction of a transport conversation.
///
/// Addresses are in network byte order; an IPv4 address fills the first four
/// bytes and the rest stay zero. Ports are in host byte order. The reverse
/// direction of a conversation is a different key ([`FlowKey::reversed`]):
/// each direction is its own map entry, so the two directions never write the
/// same memory even when the NIC steers them to different CPUs.
///
/// Aligned to 8 (the layout is the same): the program copies keys, and a
/// byte-aligned one is copied a byte at a time, 40 loads and 40 stores.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct FlowKey {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub sport: u16,
    pub dport: u16,
    /// [`PROTO_TCP`] or [`PROTO_UDP`].
    pub proto: u8,
    /// [`FAMILY_V4`] or [`FAMILY_V6`].
    pub family: u8,
    pub _pad: [u8; 2],
}
const _: () = assert!(size_of::<FlowKey>() == 40 && align_of::<FlowKey>() == 8);

impl FlowKey {
    /// The key of the opposite direction.
    #[inline(always)]
    pub fn reversed(&self) -> Self {
        Self { src: self.dst, dst: self.src, sport: self.dport, dport: self.sport, proto: self.proto, family: self.family, _pad: [0; 2] }
    }

    /// True when this direction is the conversation's canonical one (the
    /// smaller endpoint sends); used to join both directions in userspace.
    pub fn is_canonical(&self) -> bool {
        (self.src, self.sport) <= (self.dst, self.dport)
    }

    /// The conversation's canonical direction.
    pub fn canonical(&self) -> Self {
        if self.is_canonical() { *self } else { self.reversed() }
    }
}

/// Per-direction counters, updated by [`crate::features::update`] (flows
/// the controller treats as media) or [`crate::features::update_plain`]
/// (every other flow): 96 bytes, the value part of a flow-table slot.
///
/// Concurrency: each direction is its own entry, so the two directions of a
/// call never share memory. One direction is handled by one CPU (RSS and
/// veth keep a 5-tuple on one queue); where it is not, an increment may be
/// lost to a race, which moves a count or a ratio by 1/N and nothing else.
/// So the adds are plain: an atomic add costs the fast path ~5 ns a packet
/// for an exactness no decision here depends on.
///
/// The histogram and hint counters are `u8` and wrap: the controller only
/// uses their differences between two polls, and only for directions slow
/// enough to be voice or video (under 400 packets/s, so at most 100 a
/// poll); `rtp_ok` is `u16`, read as a count since the flow began.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FlowCounters {
    /// CLOCK_MONOTONIC of the first packet (precise for media flows, the
    /// coarse clock's tick otherwise).
    pub first_seen_ns: u64,
    /// Time of the latest packet of any kind, dropped ones included.
    pub last_seen_ns: u64,
    /// Transport payload bytes of payload-bearing packets.
    pub bytes: u64,
    /// Kernel-owned cache of this flow's blocklist expiry (0: not listed),
    /// valid while `verdict_gen` equals the controller's generation.
    pub blocked_until_ns: u64,
    /// Payload-bearing packets: every non-empty UDP datagram, every TCP
    /// segment carrying data. Rates and sizes are taken from these.
    pub packets: u32,
    /// Packets without transport payload (TCP pure ACK, SYN, FIN, RST).
    pub empty: u32,
    /// Packets dropped because this flow is on the blocklist.
    pub dropped: u32,
    /// Blocklist generation `blocked_until_ns` was read at.
    pub verdict_gen: u32,
    /// `(ns >> 10) | 1` of the latest payload packet (≈µs, wraps every 73 min):
    /// the anchor for the next inter-arrival gap. 0 means none yet.
    pub last_data_ticks: u32,
    /// Last RTP header seen (RFC 3550 §5.1) — or, when `rtp_pt` is
    /// [`crate::features::PT_IAX2`], the last IAX2 voice frame's call
    /// number and timestamp.
    pub rtp_ssrc: u32,
    pub rtp_ts: u32,
    /// Interface the flow's first packet arrived on.
    pub ifindex: u32,
    pub rtp_seq: u16,
    /// RTP timestamp step of the latest in-sequence packet (saturates).
    pub rtp_ts_step: u16,
    /// Packets that continued an RTP stream: same SSRC and payload type,
    /// sequence +1..+4, timestamp moved forward by at most a second at 90 kHz
    /// (or IAX2 voice frames of one call with a timestamp moving forward).
    pub rtp_ok: u16,
    /// Inter-arrival gaps between payload packets, by [`crate::features::iat_bucket_ticks`].
    pub iat_hist: [u8; IAT_BUCKETS],
    /// Payload sizes, by [`crate::features::size_bucket`].
    pub size_hist: [u8; SIZE_BUCKETS],
    /// STUN messages (RFC 8489) and TURN ChannelData frames (RFC 8656 §12).
    pub stun: u8,
    /// RTCP packets (RFC 3550 §6, RFC 5761 §4).
    pub rtcp: u8,
    /// DTLS records (RFC 9147 §4), as used for DTLS-SRTP key exchange.
    pub dtls: u8,
    /// Media framed in another layer: RTP in TURN ChannelData or in an
    /// RFC 4571 length-prefixed TCP stream.
    pub framed: u8,
    /// Payload type of the last RTP header (marker bit cleared).
    pub rtp_pt: u8,
    /// 1 when `blocked_until_ns` came from a hold (see [`HoldKey`]), not
    /// the blocklist: a blocklist change then re-reads the holds too.
    pub held: u8,
    /// 1 while the flow may be media: its packets read the precise clock
    /// for the gap histogram and have their headers checked. Set for UDP
    /// flows when they are created (see [`crate::features::starts_as_media`]);
    /// the controller sets and clears it afterwards.
    pub media: u8,
    /// Kernel-owned cache of the listed verdict's kind, valid with
    /// `blocked_until_ns`: 0 drops, [`crate::dscp::mark`] of a DSCP
    /// rewrites the packets' DSCP instead (mark mode) and passes them.
    pub mark: u8,
}
const _: () = assert!(size_of::<FlowCounters>() == 96);

impl FlowCounters {
    /// All zero: the value a new entry starts from.
    pub const ZERO: Self = Self {
        first_seen_ns: 0,
        last_seen_ns: 0,
        bytes: 0,
        blocked_until_ns: 0,
        packets: 0,
        empty: 0,
        dropped: 0,
        verdict_gen: 0,
        last_data_ticks: 0,
        rtp_ssrc: 0,
        rtp_ts: 0,
        ifindex: 0,
        rtp_seq: 0,
        rtp_ts_step: 0,
        rtp_ok: 0,
        iat_hist: [0; IAT_BUCKETS],
        size_hist: [0; SIZE_BUCKETS],
        stun: 0,
        rtcp: 0,
        dtls: 0,
        framed: 0,
        rtp_pt: 0,
        held: 0,
        media: 0,
        mark: 0,
    };

    /// A fresh entry for a flow first seen at `now_ns` on `ifindex`.
    #[inline(always)]
    pub fn new(now_ns: u64, ifindex: u32) -> Self {
        Self { first_seen_ns: now_ns, last_seen_ns: now_ns, ifindex, ..Self::ZERO }
    }
}

/// A verdict written by the controller. The kernel only reads it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct BlockEntry {
    /// CLOCK_MONOTONIC deadline; at and after it the entry no longer drops.
    pub expires_ns: u64,
    /// When the controller first wrote this verdict.
    pub since_ns: u64,
    /// 0: drop the flow's packets; [`crate::dscp::mark`] of a DSCP: rewrite
    /// their DSCP to it and pass them (mark mode).
    pub mark: u8,
    pub _pad: [u8; 7],
}
const _: () = assert!(size_of::<BlockEntry>() == 24);

impl BlockEntry {
    /// A drop until `expires_ns`.
    pub const fn drop(expires_ns: u64, since_ns: u64) -> Self {
        Self { expires_ns, since_ns, mark: 0, _pad: [0; 7] }
    }

    /// A DSCP rewrite (`mark`: see [`crate::dscp::mark`]) until `expires_ns`.
    pub const fn marking(expires_ns: u64, since_ns: u64, mark: u8) -> Self {
        Self { expires_ns, since_ns, mark, _pad: [0; 7] }
    }

    pub const fn is_mark(&self) -> bool {
        self.mark != 0
    }
}

/// Settings the controller changes at run time (one array entry).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Control {
    /// Bumped after every blocklist write. A flow whose cached
    /// `verdict_gen` differs looks the blocklist up again on its next
    /// packet, so the fast path does one hash lookup per packet, not two.
    pub block_gen: u32,
    /// Holds listed in the hold map. While it is zero, a new flow looks
    /// nothing up there.
    pub holds: u32,
    /// The flow tables' hash seed: secret, set once when the tables are
    /// created (a controller that adopts pinned tables keeps it), so a
    /// sender cannot aim its 5-tuples at one slot's probe sequence.
    pub seed: u64,
}
const _: () = assert!(size_of::<Control>() == 16);

/// [`HoldKey::kind`]: every conversation of one socket (`local`,
/// `local_port`, `proto`; `remote` and `remote_port` zero).
pub const HOLD_SOCKET: u8 = 1;
/// [`HoldKey::kind`]: every conversation between one host (`local`) and
/// one remote socket (`remote`, `remote_port`, `proto`; `local_port` zero).
pub const HOLD_PEER: u8 = 2;
/// [`HoldKey::kind`]: every conversation of one host (`local` only), which
/// is not dropped but counted as media from its first packet: a call's
/// host under suspicion, whose next conversation may be the call coming
/// back over TCP.
pub const HOLD_HOST: u8 = 3;

/// A hold: while a call's session lasts, a new conversation of its
/// socket, or between its host and a relay it used, is the call coming
/// back on another 5-tuple (a relay change, a port hop). The program looks
/// holds up on a flow's first packet only and caches the answer in the
/// flow entry, so a hold costs the fast path nothing once a flow exists.
/// Addresses in network byte order, IPv4 in the first four bytes; ports in
/// host byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct HoldKey {
    pub local: [u8; 16],
    pub remote: [u8; 16],
    pub local_port: u16,
    pub remote_port: u16,
    pub proto: u8,
    pub family: u8,
    /// [`HOLD_SOCKET`], [`HOLD_PEER`] or [`HOLD_HOST`].
    pub kind: u8,
    pub _pad: u8,
}
const _: () = assert!(size_of::<HoldKey>() == 40);

impl HoldKey {
    /// The hold on the socket `addr:port` (`proto`).
    #[inline(always)]
    pub fn socket(family: u8, proto: u8, addr: [u8; 16], port: u16) -> Self {
        Self { local: addr, remote: [0; 16], local_port: port, remote_port: 0, proto, family, kind: HOLD_SOCKET, _pad: 0 }
    }

    /// The host `addr`'s new conversations start as media.
    #[inline(always)]
    pub fn host(family: u8, addr: [u8; 16]) -> Self {
        Self { local: addr, remote: [0; 16], local_port: 0, remote_port: 0, proto: 0, family, kind: HOLD_HOST, _pad: 0 }
    }

    /// The hold on conversations between host `addr` and `remote:port`.
    #[inline(always)]
    pub fn peer(family: u8, proto: u8, addr: [u8; 16], remote: [u8; 16], port: u16) -> Self {
        Self { local: addr, remote, local_port: 0, remote_port: port, proto, family, kind: HOLD_PEER, _pad: 0 }
    }
}

/// The session a conversation belongs to, written by the controller for
/// both directions of every conversation it has a verdict on, so that
/// `voipdetect flows` (another process) can show it. The program never
/// reads it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SessionTag {
    /// The session's id (48 bits).
    pub id: u64,
    /// CLOCK_MONOTONIC time the conversation joined it.
    pub since_ns: u64,
}
const _: () = assert!(size_of::<SessionTag>() == 16);

/// A hold's deadline, written by the controller.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct HoldEntry {
    /// CLOCK_MONOTONIC deadline; at and after it the hold no longer applies.
    pub expires_ns: u64,
    /// When the controller first wrote it.
    pub since_ns: u64,
}
const _: () = assert!(size_of::<HoldEntry>() == 16);

#[cfg(feature = "user")]
mod user {
    use super::*;

    // SAFETY: all four are repr(C), contain only integers and arrays of
    // integers, and every padding byte is an explicit field.
    unsafe impl aya::Pod for FlowKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for FlowCounters {}
    // SAFETY: as above.
    unsafe impl aya::Pod for BlockEntry {}
    // SAFETY: as above.
    unsafe impl aya::Pod for Control {}
    // SAFETY: as above.
    unsafe impl aya::Pod for HoldKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for HoldEntry {}
    // SAFETY: as above.
    unsafe impl aya::Pod for SessionTag {}
}
