//! What one direction did during a window: the difference of two counter
//! snapshots, and the shape measures the classifier reads from it.

use voipdetect_common::{
    FlowCounters,
    features::{CADENCE_BUCKETS, IAT_BUCKETS, PT_IAX2, SIZE_BUCKETS},
};

/// One direction's activity between two polls of its counters.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DirWindow {
    /// Seconds the window covers for this direction.
    pub span_s: f64,
    /// Seconds from the window's start (or the direction's first packet) to
    /// its latest packet: the span its gaps add up to, for rates taken over
    /// a few packets.
    pub active_s: f64,
    pub packets: u32,
    pub bytes: u64,
    pub empty: u32,
    pub dropped: u32,
    /// Gaps per bucket; private so that `gaps`, their sum, stays theirs.
    iat: [u32; IAT_BUCKETS],
    /// The sum of `iat`, worked out once: the voice tests ask it of a
    /// window half a dozen times, for every conversation every poll.
    gaps: u32,
    pub size: [u32; SIZE_BUCKETS],
    pub rtp_ok: u32,
    pub rtcp: u32,
    pub stun: u32,
    pub dtls: u32,
    pub framed: u32,
    /// Latest RTP SSRC and timestamp step seen (not differences).
    pub rtp_ssrc: u32,
    pub rtp_ts_step: u32,
    /// The in-sequence media frames are IAX2's (`rtp_ssrc` is its call
    /// number), not RTP's.
    pub iax2: bool,
}

fn d16(a: u16, b: u16) -> u32 {
    u32::from(b.wrapping_sub(a))
}

fn d8(a: u8, b: u8) -> u32 {
    u32::from(b.wrapping_sub(a))
}

/// The differenced part of a direction's counters: what the controller
/// keeps between polls (44 bytes of the slot's 96).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Snap {
    /// Payload bytes as two halves (low, high): 4-byte alignment keeps the
    /// snapshot at 44 bytes and a direction's state, which holds two, in a
    /// 128-byte allocation rather than 144 (see `bytes`).
    bytes: [u32; 2],
    pub packets: u32,
    pub empty: u32,
    pub dropped: u32,
    pub iat: [u8; IAT_BUCKETS],
    pub size: [u8; SIZE_BUCKETS],
    pub rtp_ok: u16,
    pub rtcp: u8,
    pub stun: u8,
    pub dtls: u8,
    pub framed: u8,
}

impl Snap {
    /// Payload bytes (the kernel's counter).
    pub fn bytes(&self) -> u64 {
        u64::from(self.bytes[0]) | u64::from(self.bytes[1]) << 32
    }

    pub fn of(c: &FlowCounters) -> Self {
        Self {
            bytes: [c.bytes as u32, (c.bytes >> 32) as u32],
            packets: c.packets,
            empty: c.empty,
            dropped: c.dropped,
            iat: c.iat_hist,
            size: c.size_hist,
            rtp_ok: c.rtp_ok,
            rtcp: c.rtcp,
            stun: c.stun,
            dtls: c.dtls,
            framed: c.framed,
        }
    }
}

impl DirWindow {
    /// Activity between two full counter readings over `span_s` seconds.
    pub fn between(start: &FlowCounters, end: &FlowCounters, span_s: f64) -> Self {
        Self::since(&Snap::of(start), end, span_s)
    }

    /// Activity from `start` to the counters `end` over `span_s` seconds.
    /// Counters are differenced with wrap-around (see `FlowCounters`); the
    /// RTP SSRC, timestamp step and payload type are `end`'s, not
    /// differences. (Straight from the counters: every conversation's
    /// windows are built every poll, and a snapshot of `end` on the way
    /// was a copy for nothing.)
    pub fn since(start: &Snap, end: &FlowCounters, span_s: f64) -> Self {
        let mut w = Self::default();
        w.set_since(start, end, span_s);
        w
    }

    /// Makes this window [`DirWindow::since`]`(start, end, span_s)` in
    /// place (returned by value, a window was copied once more).
    pub fn set_since(&mut self, start: &Snap, end: &FlowCounters, span_s: f64) {
        // Every field named: one added later cannot keep a previous
        // window's value unnoticed.
        let Self {
            span_s: span,
            active_s,
            packets,
            bytes,
            empty,
            dropped,
            iat,
            gaps,
            size,
            rtp_ok,
            rtcp,
            stun,
            dtls,
            framed,
            rtp_ssrc,
            rtp_ts_step,
            iax2,
        } = self;
        for (i, v) in iat.iter_mut().enumerate() {
            *v = d8(start.iat[i], end.iat_hist[i]);
        }
        for (i, v) in size.iter_mut().enumerate() {
            *v = d8(start.size[i], end.size_hist[i]);
        }
        *span = span_s;
        *active_s = span_s;
        *packets = end.packets.wrapping_sub(start.packets);
        *bytes = end.bytes.wrapping_sub(start.bytes());
        *empty = end.empty.wrapping_sub(start.empty);
        *dropped = end.dropped.wrapping_sub(start.dropped);
        *gaps = iat.iter().sum();
        *rtp_ok = d16(start.rtp_ok, end.rtp_ok);
        *rtcp = d8(start.rtcp, end.rtcp);
        *stun = d8(start.stun, end.stun);
        *dtls = d8(start.dtls, end.dtls);
        *framed = d8(start.framed, end.framed);
        *rtp_ssrc = end.rtp_ssrc;
        *rtp_ts_step = u32::from(end.rtp_ts_step);
        *iax2 = end.rtp_pt == PT_IAX2;
    }

    /// Payload packets per second.
    pub fn pps(&self) -> f64 {
        if self.span_s > 0.0 { f64::from(self.packets) / self.span_s } else { 0.0 }
    }

    /// Payload gaps per second over the span the packets themselves cover
    /// (see `active_s`).
    pub fn active_pps(&self) -> f64 {
        if self.active_s > 0.0 { f64::from(self.gaps()) / self.active_s } else { self.pps() }
    }

    /// Mean payload size in bytes.
    pub fn mean_size(&self) -> f64 {
        if self.packets > 0 { self.bytes as f64 / f64::from(self.packets) } else { 0.0 }
    }

    /// Gaps counted in the window.
    pub fn gaps(&self) -> u32 {
        self.gaps
    }

    /// The voice packetisation (ms) most gaps fall into, and the share of
    /// gaps that do. `None` when no gap was seen.
    pub fn cadence(&self) -> Option<(u32, f64)> {
        let total = self.gaps();
        if total == 0 {
            return None;
        }
        CADENCE_BUCKETS
            .iter()
            .map(|&(ms, b)| (ms, self.iat[b]))
            .max_by_key(|&(_, n)| n)
            .map(|(ms, n)| (ms, f64::from(n) / f64::from(total)))
    }

    /// The shortest packetisation interval (ms) that at least `min_share`
    /// of the gaps fall into: what bounds the rate of a stream that mixes
    /// two intervals (20 and 40 ms, 20 and 60). The bucket right below the
    /// main cadence's (see [`DirWindow::cadence`]) does not count: jitter
    /// fills it, and a clock just faster than the interval (a 60 Hz game
    /// tick, 16.7 ms, against 20 ms) spills into it whenever its packets
    /// are held up, which would lift the bound to twice the rate.
    /// `main` is the window's [`DirWindow::cadence`], which the caller has.
    pub fn fastest_cadence(&self, main: u32, min_share: f64) -> Option<u32> {
        let total = f64::from(self.gaps());
        let main_bucket = cadence_bucket(main)?;
        CADENCE_BUCKETS
            .iter()
            .filter(|&&(_, b)| b == main_bucket || b + 2 <= main_bucket)
            .find(|&&(_, b)| total > 0.0 && f64::from(self.iat[b]) >= min_share * total)
            .map(|&(ms, _)| ms)
    }

    /// The packetisation interval (ms) whose rate `pps` is within a factor
    /// `tolerance` of, and the share of gaps in its bucket or the two next
    /// to it: what a codec clock looks like after network jitter has
    /// spread its gaps (the rate stays the clock's, the gaps scatter around
    /// the interval). `None` when the rate is no codec's.
    ///
    /// Lost frames are put back first: on a path that also loses packets,
    /// a gap in the bucket of twice or three times the interval (see
    /// [`LOSS_BUCKETS`]) stands for one or two frames that never arrived.
    /// They count towards the clock's rate and not among the gaps that
    /// must gather around the interval. The rate as sent may not exceed
    /// the clock's margin either way, unless the long gaps were caught up:
    /// a packet held up for an interval or more leaves as long a gap, and
    /// the next one, on time, follows it back to back (see
    /// [`DirWindow::extra_bursts`]). Counting as lost only the long gaps
    /// that outnumber the bursts, the rate must then be within
    /// `caught_up_tolerance` of the clock's.
    pub fn jittered_cadence(&self, pps: f64, tolerance: f64, caught_up_tolerance: f64) -> Option<(u32, f64)> {
        let total = self.gaps();
        if total == 0 {
            return None;
        }
        CADENCE_BUCKETS.iter().find_map(|&(ms, b)| {
            let clock = 1000.0 / f64::from(ms);
            let (lost, long) = LOSS_BUCKETS
                .iter()
                .filter(|&&(at, _, _)| at == ms)
                .fold((0, 0), |(lost, long), &(_, bucket, frames)| (lost + frames * self.iat[bucket], long + self.iat[bucket]));
            let sent = pps * f64::from(total + lost) / f64::from(total);
            let held_up = pps * f64::from(total + lost.saturating_sub(self.iat[0])) / f64::from(total);
            // (`sent` and `held_up` are never below `pps`: their bounds hold `pps` too.)
            if !(sent * tolerance >= clock && (sent <= clock * tolerance || held_up <= clock * caught_up_tolerance)) {
                return None;
            }
            let near: u32 = self.iat[b.saturating_sub(1)..=(b + 1).min(IAT_BUCKETS - 1)].iter().sum();
            Some((ms, f64::from(near) / f64::from((total - long).max(1))))
        })
    }

    /// For a `cadence_ms` clock with a bucket between its interval and
    /// twice it (see [`OFF_CLOCK_CADENCES`]): the gaps in that bucket and
    /// the gaps shorter than the interval. Loss makes neither; jitter makes
    /// both in about equal numbers (a late packet's long gap, then a short
    /// one or a burst as the next arrives on time); a faster clock that
    /// loses packets makes only the long ones (a 60 Hz game's 16.7 ms
    /// ticks share the 20 ms bucket, and a lost tick leaves 33 ms where a
    /// lost 20 ms frame leaves 40).
    pub fn off_clock_gaps(&self, cadence_ms: u32) -> Option<(u32, u32)> {
        let b = off_clock_cadence_bucket(cadence_ms)?;
        Some((self.iat[b + 1], self.iat[..b].iter().sum()))
    }

    /// For the same clocks: the gaps in the bucket right below the
    /// interval's and in the bucket right above. Jitter fills both about
    /// equally; a clock just faster than the interval (16.7 ms against
    /// 20) spills into the one below whenever its packets are held up, and
    /// into the one above only when they are lost.
    pub fn fast_clock_gaps(&self, cadence_ms: u32) -> Option<(u32, u32)> {
        let b = off_clock_cadence_bucket(cadence_ms)?;
        Some((self.iat[b - 1], self.iat[b + 1]))
    }

    /// Back-to-back packets beyond those that catch up after a late one:
    /// extras off the clock (FEC, RTCP, retransmissions). A late packet
    /// leaves a gap longer than the clock's (`cadence_ms`) bucket and the
    /// next one, on time, follows it back to back; those bursts are the
    /// clock's own packets and count towards its rate.
    pub fn extra_bursts(&self, cadence_ms: u32) -> u32 {
        let Some(b) = cadence_bucket(cadence_ms) else { return self.iat[0] };
        let late: u32 = self.iat[b + 1..].iter().sum();
        self.iat[0].saturating_sub(late)
    }

    /// Among gaps that are not back-to-back (≥ 2 ms), the video frame
    /// interval most fall into (30/40/60 ms buckets: 33, 25 and 15 fps) and
    /// the share that do.
    pub fn frame_cadence(&self) -> Option<(u32, f64)> {
        let spaced: u32 = self.iat[1..].iter().sum();
        if spaced == 0 {
            return None;
        }
        CADENCE_BUCKETS
            .iter()
            .filter(|&&(ms, _)| ms >= 30)
            .map(|&(ms, b)| (ms, self.iat[b]))
            .max_by_key(|&(_, n)| n)
            .map(|(ms, n)| (ms, f64::from(n) / f64::from(spaced)))
    }

    /// Share of gaps in bucket `b`.
    pub fn gap_share(&self, b: usize) -> f64 {
        let total = self.gaps();
        if total == 0 { 0.0 } else { f64::from(self.iat[b]) / f64::from(total) }
    }

    /// Share of packets in the two adjacent size buckets holding the most:
    /// 1.0 for a constant-size stream, low when sizes spread out. Two
    /// buckets, so a variable-bitrate codec straddling an edge still counts
    /// as steady.
    pub fn size_stability(&self) -> f64 {
        if self.packets == 0 {
            return 0.0;
        }
        let best = self.size.windows(2).map(|w| w[0] + w[1]).max().unwrap_or(0);
        f64::from(best) / f64::from(self.packets)
    }

    /// [`DirWindow::size_stability`] less one standard error: what the
    /// window's packets show for sure rather than at their luckiest. A
    /// constant-size stream keeps 1.0; sizes spread at random reach a high
    /// share in a window of a few dozen packets by chance alone.
    pub fn size_stability_low(&self) -> f64 {
        let p = self.size_stability();
        if self.packets == 0 { 0.0 } else { p - (p * (1.0 - p) / f64::from(self.packets)).sqrt() }
    }
}

/// Packetisation intervals (ms) whose next gap bucket up lies between the
/// interval and twice it, where no loss of that clock falls: 20 ms (the
/// 30 ms bucket; a lost frame leaves 40) and 30 ms (the 40 ms bucket; 60).
/// 10 ms has none (its losses leave 20 and 30 ms), nor 40 and 60 ms (codecs
/// mix 40 and 60 ms frames; the bucket after 60 ms spans 80–250 ms).
pub const OFF_CLOCK_CADENCES: [u32; 2] = [20, 30];

/// The gap bucket of a packetisation interval (see `CADENCE_BUCKETS`).
fn cadence_bucket(ms: u32) -> Option<usize> {
    CADENCE_BUCKETS.iter().find(|&&(at, _)| at == ms).map(|&(_, b)| b)
}

/// [`cadence_bucket`] of one of the [`OFF_CLOCK_CADENCES`].
fn off_clock_cadence_bucket(ms: u32) -> Option<usize> {
    OFF_CLOCK_CADENCES.contains(&ms).then(|| cadence_bucket(ms)).flatten()
}

/// Where a codec clock's lost frames leave their gaps: (interval ms, gap
/// bucket, frames lost). 20 ms: 40 ms (bucket 5) is one lost, 60 ms
/// (bucket 6) two; 30 ms: 60 ms is one. Not for 10 ms (its 20 and 30 ms
/// gaps are also its jitter's neighbours) nor 40 and 60 ms (the next
/// bucket, 80–250 ms, is as much a pause as a loss).
pub const LOSS_BUCKETS: [(u32, usize, u32); 3] = [(20, 5, 1), (20, 6, 2), (30, 6, 1)];

/// A one-line summary of both directions' windows, for debug logs.
pub fn describe(dirs: [Option<&DirWindow>; 2]) -> String {
    let one = |d: Option<&DirWindow>| match d {
        None => "-".to_owned(),
        Some(d) => format!(
            "[{:.2}s {:.3}a {}p {:.0}pps {:.0}B iat{:?} size{:?} stab{:.2} rtp{} stun{} dtls{} rtcp{} empty{}]",
            d.span_s,
            d.active_s,
            d.packets,
            d.pps(),
            d.mean_size(),
            d.iat,
            d.size,
            d.size_stability(),
            d.rtp_ok,
            d.stun,
            d.dtls,
            d.rtcp,
            d.empty
        ),
    };
    format!("{} / {}", one(dirs[0]), one(dirs[1]))
}
