//! The per-packet feature update: what one packet does to its flow's
//! counters. The XDP program calls [`update`] (a flow that may be media) or
//! [`update_plain`] (any other) on the table slot in place; `voipdetect
//! replay` calls them on an in-memory entry with the capture's timestamps,
//! so both drivers produce identical counters.

use crate::{
    flow::{FlowCounters, FlowKey, PROTO_UDP},
    hints::{Hint, Iax2, Rtp, inspect},
    parse::{Bytes, Packet},
};

/// Inter-arrival buckets between payload packets of one direction.
pub const IAT_BUCKETS: usize = 10;
/// Upper bounds (exclusive) of the first nine IAT buckets, in µs. The
/// bucket edges sit halfway between common packetisation intervals so a
/// stream with a few ms of jitter stays in its bucket:
/// 0 `<2 ms` back-to-back burst (video frames, bulk), 1 `2–7.5 ms`,
/// 2 `~10 ms`, 3 `~20 ms`, 4 `~30 ms`, 5 `~40 ms`, 6 `~60 ms`,
/// 7 `80–250 ms` (slow keep-alives, comfort noise), 8 `0.25–1 s`, 9 `≥1 s`.
pub const IAT_UPPER_US: [u32; IAT_BUCKETS - 1] = [2_000, 7_500, 15_000, 25_000, 35_000, 50_000, 80_000, 250_000, 1_000_000];
/// The bucket a voice stream with this packetisation (ms) falls into.
pub const CADENCE_BUCKETS: [(u32, usize); 5] = [(10, 2), (20, 3), (30, 4), (40, 5), (60, 6)];

/// Payload size buckets.
pub const SIZE_BUCKETS: usize = 8;
/// Upper bounds (exclusive) of the first seven size buckets, in payload
/// bytes: `<48` (G.729, iLBC, comfort noise), `48–96`, `96–160` (Opus,
/// G.722 at 20 ms), `160–256` (G.711 at 20–30 ms), `256–512`, `512–900`,
/// `900–1200` (video), `≥1200` (MTU-sized: bulk, streaming).
pub const SIZE_UPPER: [u32; SIZE_BUCKETS - 1] = [48, 96, 160, 256, 512, 900, 1200];

/// The timestamp unit of [`FlowCounters::last_data_ticks`]: 1024 ns.
pub const TICK_SHIFT: u32 = 10;

const fn us_to_ticks(us: u32) -> u32 {
    ((us as u64 * 1000) >> TICK_SHIFT) as u32
}

const IAT_UPPER_TICKS: [u32; IAT_BUCKETS - 1] = {
    let mut t = [0; IAT_BUCKETS - 1];
    let mut i = 0;
    while i < t.len() {
        t[i] = us_to_ticks(IAT_UPPER_US[i]);
        i += 1;
    }
    t
};

/// RTP sequence steps accepted as "in sequence" (1 plus up to 3 lost).
const RTP_MAX_SEQ_STEP: u16 = 4;
/// Largest forward RTP timestamp step accepted: one second at 90 kHz.
const RTP_MAX_TS_STEP: u32 = 90_000;
/// [`FlowCounters::rtp_pt`] when the last media header was IAX2's, not
/// RTP's (RTP payload types have 7 bits).
pub const PT_IAX2: u8 = 0x80;
/// Largest forward IAX2 timestamp step accepted, in ms.
const IAX2_MAX_TS_STEP: u16 = 1000;

/// Bucket of an inter-arrival gap measured in 1024 ns ticks.
#[inline(always)]
pub fn iat_bucket_ticks(gap: u32) -> usize {
    let mut i = 0;
    while i < IAT_UPPER_TICKS.len() {
        if gap < IAT_UPPER_TICKS[i] {
            return i;
        }
        i += 1;
    }
    IAT_BUCKETS - 1
}

/// Bucket of an inter-arrival gap in µs (for tests and reports).
pub fn iat_bucket_us(us: u32) -> usize {
    iat_bucket_ticks(us_to_ticks(us))
}

/// Bucket of a payload size.
#[inline(always)]
pub fn size_bucket(len: u32) -> usize {
    let mut i = 0;
    while i < SIZE_UPPER.len() {
        if len < SIZE_UPPER[i] {
            return i;
        }
        i += 1;
    }
    SIZE_BUCKETS - 1
}

/// Compare-and-swap: `*v` becomes `new` if it is `old`; whether it did.
/// (BPF_CMPXCHG on a double word, which every BPF CPU version has.)
#[cfg(target_arch = "bpf")]
#[inline(always)]
pub fn cas64(v: &mut u64, old: u64, new: u64) -> bool {
    use core::intrinsics::{AtomicOrdering::SeqCst, atomic_cxchg};
    // SAFETY: `v` is a valid, aligned u64 for the duration of the call.
    unsafe { atomic_cxchg::<u64, { SeqCst }, { SeqCst }>(v, old, new).1 }
}

/// See the BPF version.
#[cfg(not(target_arch = "bpf"))]
#[inline(always)]
pub fn cas64(v: &mut u64, old: u64, new: u64) -> bool {
    use core::sync::atomic::{AtomicU64, Ordering};
    // SAFETY: `v` is a valid, aligned u64 for the duration of the call.
    unsafe { AtomicU64::from_ptr(v) }.compare_exchange(old, new, Ordering::SeqCst, Ordering::SeqCst).is_ok()
}

#[inline(always)]
fn bump(v: &mut u8) {
    *v = v.wrapping_add(1);
}

/// Whether a new flow starts as possible media. Every UDP flow does: a
/// call's first packets (an RTP stream's first five, a STUN exchange) must
/// be seen, and most UDP flows are short. TCP flows start plain: the
/// controller turns one into media when its rate and sizes could be voice
/// (an audio call over TCP runs for minutes; a bulk transfer never does).
#[inline(always)]
pub fn starts_as_media(key: &FlowKey) -> u8 {
    u8::from(key.proto == PROTO_UDP)
}

/// Counts a dropped packet of a blocked flow.
#[inline(always)]
pub fn count_drop(c: &mut FlowCounters, now_ns: u64) {
    c.dropped = c.dropped.wrapping_add(1);
    // A flow held from its first packet never gets a payload update.
    if c.first_seen_ns == 0 {
        c.first_seen_ns = now_ns;
    }
    c.last_seen_ns = now_ns;
}

/// A new flow's counters as the program files them on its first packet.
#[inline(always)]
pub fn new_flow(key: &FlowKey, now_ns: u64, ifindex: u32) -> FlowCounters {
    FlowCounters { media: starts_as_media(key), ..FlowCounters::new(now_ns, ifindex) }
}

/// One packet, seen at `now_ns`, through the update its flow's media flag
/// picks: the replay's and the tests' form of what the program does (the
/// program reads the precise clock for media flows, the coarse one for
/// the others; a capture has one clock).
#[inline(always)]
pub fn apply<B: Bytes + ?Sized>(c: &mut FlowCounters, pkt: &Packet, frame: &B, now_ns: u64) {
    if c.media != 0 {
        update(c, pkt, inspect(frame, pkt), now_ns);
    } else {
        update_plain(c, pkt, now_ns);
    }
}

/// Applies one parsed packet of a plain (not media) flow, seen at
/// `now_ns` (the coarse clock is enough): counts and sizes, no gaps, no
/// header checks.
#[inline(always)]
pub fn update_plain(c: &mut FlowCounters, pkt: &Packet, now_ns: u64) {
    c.last_seen_ns = now_ns;
    let len = pkt.payload_len;
    if len == 0 {
        c.empty = c.empty.wrapping_add(1);
        return;
    }
    c.packets = c.packets.wrapping_add(1);
    c.bytes = c.bytes.wrapping_add(u64::from(len));
    if let Some(h) = c.size_hist.get_mut(size_bucket(len)) {
        bump(h);
    }
}

/// Applies one parsed packet of a flow that may be media, seen at `now_ns`
/// (the precise clock: gaps are measured), to its direction's counters.
#[inline(always)]
pub fn update(c: &mut FlowCounters, pkt: &Packet, hint: Hint, now_ns: u64) {
    c.last_seen_ns = now_ns;
    let len = pkt.payload_len;
    if len == 0 {
        c.empty = c.empty.wrapping_add(1);
        return;
    }
    c.packets = c.packets.wrapping_add(1);
    c.bytes = c.bytes.wrapping_add(u64::from(len));

    let now = (now_ns >> TICK_SHIFT) as u32 | 1;
    if c.last_data_ticks != 0 {
        let b = iat_bucket_ticks(now.wrapping_sub(c.last_data_ticks));
        if let Some(h) = c.iat_hist.get_mut(b) {
            bump(h);
        }
    }
    c.last_data_ticks = now;
    if let Some(h) = c.size_hist.get_mut(size_bucket(len)) {
        bump(h);
    }

    match hint {
        Hint::None => {}
        Hint::Rtp(r) => rtp_continuity(c, &r),
        Hint::FramedRtp(r) => {
            bump(&mut c.framed);
            rtp_continuity(c, &r);
        }
        Hint::Rtcp => bump(&mut c.rtcp),
        Hint::Stun => bump(&mut c.stun),
        Hint::Dtls => bump(&mut c.dtls),
        Hint::Iax2(f) => iax2_continuity(c, &f),
    }
}

/// Counts an IAX2 voice frame that continues its call's stream: the same
/// call number, the timestamp moved forward by at most a second. Kept in
/// the RTP fields (a flow carries one or the other), tagged by [`PT_IAX2`].
#[inline(always)]
fn iax2_continuity(c: &mut FlowCounters, f: &Iax2) {
    let dts = f.ts.wrapping_sub(c.rtp_ts as u16);
    if c.rtp_pt == PT_IAX2 && c.rtp_ssrc == u32::from(f.call) && (1..=IAX2_MAX_TS_STEP).contains(&dts) {
        c.rtp_ok = c.rtp_ok.wrapping_add(1);
        c.rtp_ts_step = dts;
    }
    c.rtp_ssrc = u32::from(f.call);
    c.rtp_ts = u32::from(f.ts);
    c.rtp_pt = PT_IAX2;
}

/// Counts a packet that continues the previous RTP header's stream.
#[inline(always)]
fn rtp_continuity(c: &mut FlowCounters, r: &Rtp) {
    let dseq = r.seq.wrapping_sub(c.rtp_seq);
    let dts = r.ts.wrapping_sub(c.rtp_ts);
    if r.ssrc == c.rtp_ssrc && r.pt == c.rtp_pt && (1..=RTP_MAX_SEQ_STEP).contains(&dseq) && dts <= RTP_MAX_TS_STEP {
        c.rtp_ok = c.rtp_ok.wrapping_add(1);
        if dseq == 1 && dts != 0 {
            c.rtp_ts_step = if dts > u16::MAX as u32 { u16::MAX } else { dts as u16 };
        }
    }
    c.rtp_ssrc = r.ssrc;
    c.rtp_seq = r.seq;
    c.rtp_ts = r.ts;
    c.rtp_pt = r.pt;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::FlowKey;

    const MS: u64 = 1_000_000;

    fn pkt(len: u32) -> Packet {
        Packet { key: FlowKey::default(), payload_off: 0, payload_len: len, l3_off: 0, tcp_flags: 0 }
    }

    #[test]
    fn buckets_separate_packetisation_intervals() {
        let b = |ms: f64| iat_bucket_us((ms * 1000.0) as u32);
        assert_eq!(b(0.3), 0);
        for (ms, bucket) in CADENCE_BUCKETS {
            let ms = f64::from(ms);
            assert_eq!(b(ms), bucket);
            assert_eq!(b(ms * 0.9), bucket, "{ms} ms -10 %");
            assert_eq!(b(ms * 1.1), bucket, "{ms} ms +10 %");
        }
        assert_eq!(b(160.0), 7);
        assert_eq!(b(5000.0), IAT_BUCKETS - 1);
        assert_eq!(size_bucket(20), 0);
        assert_eq!(size_bucket(172), 3);
        assert_eq!(size_bucket(1500), SIZE_BUCKETS - 1);
    }

    #[test]
    fn a_20ms_stream_fills_one_gap_bucket() {
        let mut c = FlowCounters::new(0, 1);
        for i in 0..50u64 {
            update(&mut c, &pkt(172), Hint::None, 1_000 * MS + i * 20 * MS);
        }
        assert_eq!(c.packets, 50);
        assert_eq!(c.bytes, 50 * 172);
        assert_eq!(c.iat_hist[3], 49);
        assert_eq!(c.iat_hist.iter().map(|&x| u32::from(x)).sum::<u32>(), 49);
        // A plain flow counts the same packets and sizes, no gaps.
        let mut p = FlowCounters::new(0, 1);
        for i in 0..50u64 {
            update_plain(&mut p, &pkt(172), 1_000 * MS + i * 20 * MS);
        }
        assert_eq!((p.packets, p.bytes, p.size_hist, p.iat_hist), (c.packets, c.bytes, c.size_hist, [0; IAT_BUCKETS]));
        assert_eq!(p.last_seen_ns, c.last_seen_ns);
        assert_eq!(c.size_hist[3], 50);
        assert_eq!(c.last_seen_ns, 1_000 * MS + 49 * 20 * MS);
    }

    #[test]
    fn stream_starting_at_time_zero_still_counts_its_first_gap() {
        let mut c = FlowCounters::new(0, 1);
        update(&mut c, &pkt(10), Hint::None, 0);
        update(&mut c, &pkt(10), Hint::None, 30 * MS);
        assert_eq!(c.iat_hist[4], 1);
    }

    #[test]
    fn empty_segments_are_counted_apart() {
        let mut c = FlowCounters::new(0, 1);
        update(&mut c, &pkt(0), Hint::None, MS);
        update(&mut c, &pkt(0), Hint::None, 2 * MS);
        assert_eq!((c.packets, c.empty, c.bytes, c.last_data_ticks), (0, 2, 0, 0));
    }

    #[test]
    fn rtp_continuity_counts_in_sequence_packets_only() {
        let mut c = FlowCounters::new(0, 1);
        let mut t = 0;
        let mut send = |c: &mut FlowCounters, ssrc, seq, ts| {
            t += 20 * MS;
            update(c, &pkt(172), Hint::Rtp(Rtp { ssrc, seq, ts, pt: 0 }), t);
        };
        send(&mut c, 9, 65534, 1000);
        send(&mut c, 9, 65535, 1160);
        send(&mut c, 9, 0, 1320); // sequence wraps
        send(&mut c, 9, 3, 1800); // two lost: still in sequence
        send(&mut c, 10, 4, 1960); // another SSRC: not
        send(&mut c, 10, 40, 2120); // jump: not
        assert_eq!(c.rtp_ok, 3);
        assert_eq!(c.rtp_ts_step, 160);
    }

    #[test]
    fn iax2_continuity_counts_frames_of_one_call() {
        let mut c = FlowCounters::new(0, 1);
        let mut t = 0;
        let mut send = |c: &mut FlowCounters, call, ts| {
            t += 20 * MS;
            update(c, &pkt(24), Hint::Iax2(Iax2 { call, ts }), t);
        };
        send(&mut c, 7, 65_500);
        send(&mut c, 7, 65_520);
        send(&mut c, 7, 4); // the 16-bit timestamp wraps
        send(&mut c, 7, 4); // not forward: not counted
        send(&mut c, 8, 24); // another call: not
        send(&mut c, 8, 3000); // a jump: not
        assert_eq!(c.rtp_ok, 2);
        assert_eq!((c.rtp_ts_step, c.rtp_pt), (20, PT_IAX2));
        // An RTP stream that happens to reuse the number is not continued.
        let mut r = FlowCounters::new(0, 1);
        update(&mut r, &pkt(172), Hint::Rtp(Rtp { ssrc: 7, seq: 1, ts: 20, pt: 0 }), MS);
        update(&mut r, &pkt(24), Hint::Iax2(Iax2 { call: 7, ts: 40 }), 2 * MS);
        assert_eq!(r.rtp_ok, 0);
    }
}
