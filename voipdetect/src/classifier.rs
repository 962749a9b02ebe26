//! The classifier: given what both directions of a conversation did, is it
//! a call? Every number it decides by lives in [`Thresholds`], each with the
//! reasoning behind its value.
//!
//! Two paths:
//! - **Structure** ([`Classifier::early`]), checked at every poll on the
//!   window so far. An RTP stream (same SSRC and payload type, sequence +1,
//!   timestamps moving) is media within the first second: a call when the
//!   other direction answers, one-way media when it stays silent. A
//!   conversation that began with STUN, DTLS or RTCP (a WebRTC or SIP media
//!   session) and now carries voice-shaped packets both ways is a call
//!   without waiting for a second window.
//! - **Behaviour** ([`Classifier::judge`]), on each complete window: each
//!   direction is voice (a steady stream of similar-sized packets at a
//!   packetisation interval), video (frames of back-to-back packets at a
//!   frame rate), quiet (comfort noise during silence suppression), other,
//!   or absent. The controller calls a conversation a call after
//!   [`Thresholds::windows_needed`] windows in a row in which one side spoke
//!   while the other spoke or stayed quiet, once both sides have spoken.
//!   Caught whatever the transport (UDP, TCP payload segments), padding or
//!   encryption.
//!
//! Two more judgements serve the controller's sessions:
//! - **Legs** ([`Classifier::leg`]): a conversation where one side speaks
//!   and the other stays silent. Apps that relay a call through two
//!   addresses (send to one, receive from the other, on one socket) show
//!   two such legs; the controller pairs them at their shared socket.
//! - **Held evidence** ([`Classifier::held`]): once a host's call is found,
//!   a new conversation of that host is the call coming back (a new port,
//!   relay or transport) on much lighter evidence than a first verdict
//!   needs: media headers in sequence, or a fraction of a second of voice
//!   cadence in a conversation whose other side is silent or speaks alike.

use voipdetect_common::flow::PROTO_TCP;

use crate::{event::Basis, key::proto_name, window::DirWindow};

/// Every number the classifier decides by.
#[derive(Clone, Debug, PartialEq)]
pub struct Thresholds {
    /// Lowest payload rate of a voice direction. Packetisation of 10–60 ms
    /// gives 16.7–100 packets/s; 10 leaves room for a window that starts
    /// or ends mid-call and for 80–100 ms bundling.
    pub min_pps: f64,
    /// Highest payload rate of a voice direction: 10 ms packetisation
    /// (100/s) plus jitter and the odd RTCP or retransmission. Bulk
    /// transfers exceed it by far.
    pub max_pps: f64,
    /// Largest mean payload: anything up to an MTU-sized packet, because
    /// padding every packet to a fixed size is a known evasion.
    pub max_mean_size: f64,
    /// Share of inter-packet gaps that must fall in the one packetisation
    /// bucket (10/20/30/40/60 ms). A codec clock makes this close to 1;
    /// network jitter moves a few gaps into neighbouring buckets.
    pub min_cadence_share: f64,
    /// Share of gaps under 2 ms tolerated in a voice direction: voice
    /// frames are spaced out, bulk and web traffic come back to back.
    pub max_burst_share: f64,
    /// A codec clock fixes a voice direction's rate: one packet per
    /// packetisation interval (50/s at 20 ms). Spaced packets (back-to-back
    /// extras such as FEC or RTCP left out, but not a packet that catches
    /// up after a late one: see `DirWindow::extra_bursts`) may exceed that rate by at most
    /// this factor, for window edges and clock drift. A 60 Hz game tick
    /// falls into the 20 ms gap bucket but sends 60 packets/s: 1.2× too
    /// many. The interval is the shortest one holding at least
    /// `rate_cadence_min_share` of the gaps, so a stream that mixes 20 and
    /// 40 ms frames is held to the 20 ms rate.
    pub max_rate_over_cadence: f64,
    pub rate_cadence_min_share: f64,
    /// A codec clock seen through network jitter: gaps scatter around the
    /// interval (a 20 ms stream with jitter of 10 ms on average keeps only
    /// about 40 % of its gaps in the 20 ms bucket, and shows bursts where a
    /// late packet catches up), but the rate stays the clock's. A direction
    /// whose rate is within `max_rate_over_cadence` of a codec clock's, with
    /// at least this share of its gaps in that interval's bucket or the two
    /// next to it (and the burst and size tests as for any voice), is voice
    /// too. Games keep their tick rates (60, 64, 128 Hz) away from codec
    /// clocks, and their state sizes spread.
    pub jitter_min_share: f64,
    /// On a path that loses nothing, a packet held up for a whole interval
    /// leaves a gap twice the interval, which the jittered-clock test counts
    /// as a lost frame (see `DirWindow::jittered_cadence`): a 20 ms stream
    /// with 8 ms of queueing on average, and no loss, counts 5–9 of them in
    /// about one window in eight, an apparent rate as sent of 56–59/s, over
    /// the margin. The next packet catches up back to back; counting
    /// as lost only the long gaps beyond such bursts, a direction at the
    /// clock's rate within this factor (a packet more or less at each edge
    /// of a window) is that clock. Half the margin of
    /// `max_rate_over_cadence`: a 60 Hz game that loses a tenth of its ticks
    /// sends 54/s, and on a path as jittery catches up as often.
    pub max_rate_caught_up: f64,
    /// A direction at a 20 or 30 ms cadence is not that clock when more than
    /// this many of its gaps, and more than `max_off_clock_share` of them,
    /// fall between the interval and twice it while fewer than a third as
    /// many are shorter than the interval (see `DirWindow::off_clock_gaps`):
    /// no loss of the clock makes such gaps, and jitter makes them with as
    /// many short ones. A 60 or 64 Hz game losing a tenth of its packets
    /// sends under the 20 ms voice rate's margin, but leaves 31–33 ms gaps
    /// where a lossy 20 ms codec leaves 40 ms ones, and no short ones. The
    /// same counts, mirrored, for a clock just faster than the interval
    /// held up on a jittery path: many gaps in the bucket right below the
    /// interval's, fewer than half as many in the one right above
    /// (`DirWindow::fast_clock_gaps`).
    /// (No real call's window in the shared captures comes near either.)
    pub max_off_clock_gaps: u32,
    pub max_off_clock_share: f64,
    /// Share of packets that must fall in two adjacent size buckets.
    /// Voice codecs emit near-constant sizes (CBR) or a narrow band (VBR);
    /// game servers and web traffic spread over many sizes. A 30 Hz game
    /// whose tick lands in the 30 ms voice bucket fails here on both sides:
    /// its client sends state that varies with the action too (30–420 B),
    /// not a codec's frame. The share is taken one standard error low
    /// (`DirWindow::size_stability_low`): such a game's snapshots put about
    /// 57 % of a window in the best two buckets and its client state 67 %,
    /// and with 25–30 packets a window chance lifted both over 70 % two
    /// windows running once in a few minutes of play.
    pub min_size_stability: f64,
    /// Largest ratio between the two directions' packet rates when both
    /// speak. A call sends the same codec stream both ways.
    pub max_rate_ratio: f64,
    /// Largest ratio between the two directions' mean payload sizes when
    /// both speak. Both ends of a call usually run the same codec; a game
    /// client's inputs are a fraction of the server's snapshots, a tunnel's
    /// polls and answers differ (a DNS tunnel polling at 20 ms: 137 B vs 48 B).
    pub max_size_ratio: f64,
    /// Quiet direction (silence suppression, RFC 3389 comfort noise every
    /// 160–400 ms): below `min_pps`, at least this many packets per second...
    pub quiet_min_pps: f64,
    /// ...of at most this mean size.
    pub quiet_max_size: f64,
    /// The kernel counts a flow as media (the precise clock for the gap
    /// histogram, header checks: about 50 ns a packet more) or plain. A
    /// plain conversation becomes media when no direction sends faster
    /// than this (the fastest video the classifier accepts), and a media
    /// conversation that is not a call goes back to plain when a window
    /// shows a direction faster: bulk transfers and streams pay the cheap
    /// path, a TCP audio call is seen from its first poll on.
    pub media_max_pps: f64,
    /// Video direction: frames of several back-to-back packets (the share
    /// of gaps under 2 ms lies between these two)...
    pub video_burst_share: (f64, f64),
    /// ...at a frame rate of 15–30 fps (frame gaps in the 30/40/60 ms
    /// buckets, at least this share of the gaps between frames)...
    pub video_min_frame_share: f64,
    /// ...carrying this many packets per second...
    ///
    /// Cloud gaming's downlink is not such video: 60 fps (frame gaps in the
    /// 20 ms bucket) at 700+ packets/s. Its uplink, controller input at
    /// 100 Hz, is as voice-shaped as a 10 ms codec, but a call needs the
    /// other side to speak or send 15–30 fps video, and a one-way leg needs
    /// the other side silent.
    pub video_pps: (f64, f64),
    /// ...of at least this mean size (video packets fill most of an MTU).
    pub video_min_size: f64,
    /// Consecutive call windows before a behaviour-only verdict: one window
    /// can be a coincidence, two seconds of two-way voice cadence are a call.
    /// Both sides must have spoken in the run: SSH with keystroke-timing
    /// obfuscation sends a 36 B packet every 20 ms while the user types,
    /// but the server only echoes now and then (quiet) or prints a burst
    /// (neither voice), so its windows never make a call. (Typing is one
    /// side speaking with the other quiet: a one-way leg, which is a call
    /// only when its socket receives voice on another leg.) At most 255:
    /// a conversation counts its run of one-way windows in a byte.
    pub windows_needed: u32,
    /// In-sequence RTP packets needed in a direction (over the current and
    /// the previous window) for a structural verdict. Random bytes match an
    /// SSRC, a payload type and a +1..4 sequence step with odds below 2^-50
    /// per packet; five in a row are not chance, and at WhatsApp's 8
    /// packets/s they take 0.6 s.
    pub rtp_min_in_seq: u32,
    /// Lowest rate of an RTP direction: a stream, not a stray packet.
    pub rtp_min_pps: f64,
    /// Packets the silent side of an RTP stream may send (RTCP, STUN
    /// consent checks) and still count as one-way media rather than an
    /// answered call. More than this, and the stream is a call.
    pub one_way_max_reverse: u32,
    /// One-way media is concluded only after the stream has run this long
    /// (the answering side of a call, or its comfort noise, often starts a
    /// moment later)...
    pub one_way_settle_s: f64,
    /// ...or once it has been silent this long (a short stream that ended).
    pub one_way_ended_s: f64,
    /// Packets a new flow needs before the controller keeps state for it:
    /// one or two packets cannot be judged, and a flood of such flows must
    /// not cost controller memory.
    pub min_packets_tracked: u32,
    /// Shortest window over which structural hints (STUN/DTLS/RTCP seen)
    /// let a voice-shaped conversation be called early.
    pub hinted_min_span_s: f64,
    /// ...and only this long after the conversation's first packet: a
    /// handshake opens a media session. Later, a hint is as likely chance
    /// (random bytes pass the RTCP check about once in 10 000 packets, so
    /// an encrypted game shows one every few minutes), and a half-second
    /// window of a few packets can look voice-shaped by chance too: a
    /// 30 Hz game with random state sizes both ways was called so after
    /// seven minutes. The behaviour test takes over, on whole windows.
    pub hinted_within_s: f64,
    /// Under suspicion (a new conversation of a host whose call was found
    /// within `hold`), in-sequence media headers needed: two already rule
    /// out chance (see `rtp_min_in_seq`) when the host is known to be in a
    /// call, and a relay's first media packets arrive in a trickle.
    pub held_rtp_in_seq: u32,
    /// Under suspicion, payload packets a direction needs before its
    /// cadence counts: five packets are four gaps, 80 ms of 20 ms voice,
    /// 120 ms of 30 ms audio over TCP.
    pub held_min_packets: u32,
    /// Under suspicion, the share of those gaps that must fall in one
    /// packetisation bucket. Higher than `min_cadence_share` because there
    /// are few gaps; the burst, size and rate tests stay as they are, so a
    /// game or a web page the host opens meanwhile still fails them.
    pub held_min_cadence_share: f64,
    /// Voice cadence counts as lighter evidence only this long after a
    /// conversation's first packet: it is for the call coming back on a new
    /// conversation, and a test on a few packets repeated every poll of a
    /// long-running one would sooner or later pass by chance. (Media
    /// headers in sequence count at any time: chance does not make them.)
    pub held_within_s: f64,
    /// A conversation that continues a call by voice cadence alone runs the
    /// call's codec: its rate and mean size per direction may differ from
    /// the call's by at most this factor (apps change their bitrate on a new
    /// path, rarely their packetisation). A game's state or a video stream
    /// the host starts meanwhile does not match.
    pub held_max_codec_ratio: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            min_pps: 10.0,
            max_pps: 130.0,
            max_mean_size: 1400.0,
            min_cadence_share: 0.5,
            max_burst_share: 0.3,
            max_rate_over_cadence: 1.12,
            rate_cadence_min_share: 0.2,
            jitter_min_share: 0.6,
            max_rate_caught_up: 1.06,
            max_off_clock_gaps: 2,
            max_off_clock_share: 0.05,
            min_size_stability: 0.7,
            max_rate_ratio: 3.0,
            max_size_ratio: 2.5,
            quiet_min_pps: 1.0,
            quiet_max_size: 200.0,
            media_max_pps: 400.0,
            video_burst_share: (0.2, 0.85),
            video_min_frame_share: 0.5,
            video_pps: (20.0, 400.0),
            video_min_size: 400.0,
            windows_needed: 2,
            rtp_min_in_seq: 5,
            rtp_min_pps: 5.0,
            one_way_max_reverse: 2,
            one_way_settle_s: 1.0,
            one_way_ended_s: 0.5,
            hinted_min_span_s: 0.5,
            hinted_within_s: 10.0,
            min_packets_tracked: 3,
            held_rtp_in_seq: 2,
            held_min_packets: 5,
            held_min_cadence_share: 0.6,
            held_within_s: 2.0,
            held_max_codec_ratio: 2.0,
        }
    }
}

/// A conclusion about a conversation.
#[derive(Clone, Debug, PartialEq)]
pub enum Finding {
    /// Two-way real-time media.
    Call { reason: String, basis: Basis },
    /// Media in one direction only: `dir` (0 for the canonical direction)
    /// sends. Always found by its media headers.
    OneWay { dir: usize, reason: String },
}

/// One side speaking, the other silent, over a whole window: half of a
/// call that is relayed through two addresses, or a one-way stream.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Leg {
    /// The direction (0 canonical, 1 reverse) that speaks.
    pub sender: usize,
    pub pps: f64,
    pub cadence_ms: u32,
    pub mean_size: f64,
}

/// What one complete window looked like.
#[derive(Clone, Debug, PartialEq)]
pub enum WindowJudgement {
    /// Both sides spoke (or one showed video).
    Media { reason: String },
    /// One side spoke, the other stayed quiet (silence suppression).
    Half { talker: usize, reason: String },
    /// Both quiet: neither evidence for nor against a call.
    Hold,
    /// Not a call window.
    Other,
}

/// How one direction behaved in a window.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum DirKind {
    Voice { pps: f64, cadence_ms: u32, mean_size: f64 },
    Video { pps: f64, fps: u32, mean_size: f64 },
    Quiet { pps: f64 },
    Other,
    Absent,
}

/// Structural hints a conversation has shown at any time so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Hints {
    pub stun: bool,
    pub dtls: bool,
    pub rtcp: bool,
}

impl Hints {
    pub fn any(self) -> bool {
        self.stun || self.dtls || self.rtcp
    }
    pub fn add(&mut self, d: &DirWindow) {
        self.stun |= d.stun > 0;
        self.dtls |= d.dtls > 0;
        self.rtcp |= d.rtcp > 0;
    }
    fn describe(self) -> String {
        let mut v = Vec::new();
        if self.stun {
            v.push("stun");
        }
        if self.dtls {
            v.push("dtls");
        }
        if self.rtcp {
            v.push("rtcp");
        }
        v.join("+")
    }
}

#[derive(Clone, Debug, Default)]
pub struct Classifier {
    pub t: Thresholds,
}

impl Classifier {
    pub fn new(t: Thresholds) -> Self {
        Self { t }
    }

    /// Structural evidence in the window so far, if it settles the question.
    pub fn early(&self, proto: u8, dirs: [Option<&DirWindow>; 2], hints: Hints) -> Option<Finding> {
        let t = &self.t;
        fn rtp<'a>(d: Option<&'a DirWindow>, t: &Thresholds) -> Option<&'a DirWindow> {
            d.filter(|d| d.rtp_ok >= t.rtp_min_in_seq && d.pps() >= t.rtp_min_pps)
        }
        let is_rtp = |d| rtp(d, t);
        match (is_rtp(dirs[0]), is_rtp(dirs[1])) {
            (Some(a), Some(b)) => return Some(Finding::Call { reason: rtp_reason(proto, a, Some(b)), basis: Basis::Rtp }),
            (Some(_), None) | (None, Some(_)) => {
                let m = usize::from(is_rtp(dirs[0]).is_none());
                let media = dirs[m]?;
                let reverse = dirs[1 - m].map_or(0, |d| d.packets);
                return Some(if reverse <= t.one_way_max_reverse {
                    Finding::OneWay { dir: m, reason: rtp_reason(proto, media, None) }
                } else {
                    Finding::Call { reason: rtp_reason(proto, media, dirs[1 - m]), basis: Basis::Rtp }
                });
            }
            (None, None) => {}
        }
        // A media session's handshake, then voice both ways.
        let [Some(a), Some(b)] = dirs else { return None };
        if hints.any() && a.span_s.min(b.span_s) >= t.hinted_min_span_s {
            let (ka, kb) = (self.kind(a), self.kind(b));
            if media_pair(ka, kb, t) {
                let reason = format!("{} then {}", hints.describe(), kind_reason(proto, ka, kb));
                return Some(Finding::Call { reason, basis: Basis::Handshake });
            }
        }
        None
    }

    /// How each direction behaved in the window (`Absent` for none).
    pub fn kinds(&self, dirs: [Option<&DirWindow>; 2]) -> [DirKind; 2] {
        // Written out rather than through `map`: every conversation every
        // poll, and the array adapters cost more than an absent side.
        let kind = |d: Option<&DirWindow>| d.map_or(DirKind::Absent, |d| self.kind(d));
        [kind(dirs[0]), kind(dirs[1])]
    }

    /// Judges a complete window.
    pub fn judge(&self, proto: u8, dirs: [Option<&DirWindow>; 2]) -> WindowJudgement {
        self.judge_kinds(proto, self.kinds(dirs))
    }

    /// [`Classifier::judge`] given the window's [`Classifier::kinds`].
    pub fn judge_kinds(&self, proto: u8, [ka, kb]: [DirKind; 2]) -> WindowJudgement {
        if media_pair(ka, kb, &self.t) {
            return WindowJudgement::Media { reason: kind_reason(proto, ka, kb) };
        }
        match (ka, kb) {
            (DirKind::Voice { .. }, DirKind::Quiet { .. }) => WindowJudgement::Half { talker: 0, reason: kind_reason(proto, ka, kb) },
            (DirKind::Quiet { .. }, DirKind::Voice { .. }) => WindowJudgement::Half { talker: 1, reason: kind_reason(proto, ka, kb) },
            (DirKind::Quiet { .. }, DirKind::Quiet { .. }) => WindowJudgement::Hold,
            _ => WindowJudgement::Other,
        }
    }

    /// A complete window in which one side spoke and the other stayed
    /// silent (nothing, comfort noise, or a keep-alive or two).
    pub fn leg(&self, dirs: [Option<&DirWindow>; 2]) -> Option<Leg> {
        self.leg_kinds(dirs, self.kinds(dirs))
    }

    /// [`Classifier::leg`] given the window's [`Classifier::kinds`].
    pub fn leg_kinds(&self, dirs: [Option<&DirWindow>; 2], kinds: [DirKind; 2]) -> Option<Leg> {
        let silent =
            |i: usize| dirs[i].is_none_or(|d| d.packets <= self.t.one_way_max_reverse || matches!(kinds[i], DirKind::Quiet { .. }));
        (0..2).find_map(|sender| {
            dirs[sender]?;
            match kinds[sender] {
                DirKind::Voice { pps, cadence_ms, mean_size } if silent(1 - sender) => Some(Leg { sender, pps, cadence_ms, mean_size }),
                _ => None,
            }
        })
    }

    /// The lighter evidence that a new conversation of a host under
    /// suspicion carries the host's call. `rtp_seen` are the in-sequence
    /// media headers each direction has shown since it began. Says whether
    /// the evidence is two-way: one-way media from a host in a call may be
    /// a stream of its own (music on hold), and joins the call only from
    /// the call's own socket (a relay change of a split call).
    /// `codec` is the call's payload rate per direction and mean size;
    /// `young`, whether the conversation is new enough for its cadence to
    /// count (see `held_within_s`).
    pub fn held(
        &self,
        proto: u8,
        dirs: [Option<&DirWindow>; 2],
        rtp_seen: [u32; 2],
        codec: (f64, f64),
        young: bool,
    ) -> Option<(String, bool)> {
        let t = &self.t;
        let alike = |d: &DirWindow| {
            ratio(d.active_pps(), codec.0) <= t.held_max_codec_ratio && ratio(d.mean_size(), codec.1) <= t.held_max_codec_ratio
        };
        let voice = |d: &DirWindow| self.light_voice(d).filter(|_| alike(d));
        let ready = |d: Option<&DirWindow>| d.is_some_and(|d| d.packets >= t.held_min_packets);
        if let Some(m) = (0..2).find(|&i| rtp_seen[i] >= t.held_rtp_in_seq) {
            let d = dirs[m].map_or_else(|| "rtp".to_owned(), |d| rtp_reason(proto, d, None));
            let answered = rtp_seen[1 - m] >= t.held_rtp_in_seq || dirs[1 - m].is_some_and(|o| ready(Some(o)) && voice(o).is_some());
            return Some((format!("{d}, {} media headers in sequence", rtp_seen[m]), answered));
        }
        if !young {
            return None;
        }
        let speaking: Vec<usize> = (0..2).filter(|&i| ready(dirs[i])).collect();
        match speaking.as_slice() {
            // One side with enough packets: it must sound like voice, and
            // the other may not yet say anything against it.
            [i] => {
                let d = dirs[*i]?;
                let ms = voice(d)?;
                Some((format!("{} {:.0} {} one side, {ms} ms, {:.0} B", proto_name(proto), d.pps(), unit(proto), d.mean_size()), false))
            }
            // Both sides: both must.
            [_, _] => {
                let (a, b) = (dirs[0]?, dirs[1]?);
                let (ma, mb) = (voice(a)?, voice(b)?);
                (ratio(a.mean_size(), b.mean_size()) <= t.max_size_ratio).then(|| {
                    let cad = if ma == mb { format!("{ma} ms") } else { format!("{ma}/{mb} ms") };
                    let reason = format!(
                        "{} {}, {cad}, {}",
                        proto_name(proto),
                        pair(a.pps(), b.pps(), unit(proto), true),
                        pair(a.mean_size(), b.mean_size(), "B", false)
                    );
                    (reason, true)
                })
            }
            _ => None,
        }
    }

    /// A direction's first packets under suspicion: the voice tests with
    /// fewer gaps. Returns the packetisation interval.
    fn light_voice(&self, d: &DirWindow) -> Option<u32> {
        let t = &self.t;
        let (ms, share) = d.cadence()?;
        let fastest = d.fastest_cadence(ms, t.rate_cadence_min_share)?;
        // Gaps per second of the packets' own span rather than packets per
        // second of the window: over a few packets, the window's end adds
        // idle time, and N packets span N - 1 gaps.
        let spaced = d.gaps() - d.extra_bursts(fastest);
        let rate = if d.active_s > 0.0 { f64::from(spaced) / d.active_s } else { f64::INFINITY };
        (share >= t.held_min_cadence_share
            && d.gap_share(0) <= t.max_burst_share
            && d.size_stability_low() >= t.min_size_stability
            && d.mean_size() <= t.max_mean_size
            && rate <= 1000.0 / f64::from(fastest) * t.max_rate_over_cadence)
            .then_some(ms)
    }

    /// Whether the direction's gaps fit a `cadence_ms` clock with its
    /// losses and jitter (see `max_off_clock_gaps`).
    fn on_clock(&self, d: &DirWindow, cadence_ms: u32) -> bool {
        let t = &self.t;
        let many = |n: u32| n > t.max_off_clock_gaps && f64::from(n) > t.max_off_clock_share * f64::from(d.gaps());
        let lost_ticks = d.off_clock_gaps(cadence_ms).is_some_and(|(off, shorter)| many(off) && 3 * shorter < off);
        let fast_ticks = d.fast_clock_gaps(cadence_ms).is_some_and(|(below, above)| many(below) && 2 * above < below);
        !lost_ticks && !fast_ticks
    }

    /// How a direction behaved.
    pub fn kind(&self, d: &DirWindow) -> DirKind {
        let t = &self.t;
        if d.packets == 0 {
            return DirKind::Absent;
        }
        let pps = d.pps();
        let mean_size = d.mean_size();
        if pps < t.min_pps {
            return if pps >= t.quiet_min_pps && mean_size <= t.quiet_max_size { DirKind::Quiet { pps } } else { DirKind::Other };
        }
        // What both voice tests ask first, worked out once.
        let burst = d.gap_share(0);
        let voice_shaped = pps <= t.max_pps
            && mean_size <= t.max_mean_size
            && burst <= t.max_burst_share
            && d.size_stability_low() >= t.min_size_stability;
        if voice_shaped
            && let Some((cadence_ms, share)) = d.cadence()
            && share >= t.min_cadence_share
            && let Some(fastest_ms) = d.fastest_cadence(cadence_ms, t.rate_cadence_min_share)
            && pps * (1.0 - f64::from(d.extra_bursts(fastest_ms)) / f64::from(d.gaps()))
                <= 1000.0 / f64::from(fastest_ms) * t.max_rate_over_cadence
            && self.on_clock(d, cadence_ms)
        {
            return DirKind::Voice { pps, cadence_ms, mean_size };
        }
        if voice_shaped
            && let Some((cadence_ms, share)) = d.jittered_cadence(pps, t.max_rate_over_cadence, t.max_rate_caught_up)
            && share >= t.jitter_min_share
            && self.on_clock(d, cadence_ms)
        {
            return DirKind::Voice { pps, cadence_ms, mean_size };
        }
        if (t.video_pps.0..=t.video_pps.1).contains(&pps)
            && mean_size >= t.video_min_size
            && (t.video_burst_share.0..=t.video_burst_share.1).contains(&burst)
            && let Some((frame_ms, share)) = d.frame_cadence()
            && share >= t.video_min_frame_share
        {
            return DirKind::Video { pps, fps: 1000 / frame_ms.max(1), mean_size };
        }
        DirKind::Other
    }
}

/// Two directions that together look like a call window.
fn media_pair(a: DirKind, b: DirKind, t: &Thresholds) -> bool {
    match (a, b) {
        (DirKind::Voice { pps: pa, mean_size: sa, .. }, DirKind::Voice { pps: pb, mean_size: sb, .. }) => {
            ratio(pa, pb) <= t.max_rate_ratio && ratio(sa, sb) <= t.max_size_ratio
        }
        // A video call: at least one side sends video, the other video or voice.
        (DirKind::Video { .. }, DirKind::Video { .. } | DirKind::Voice { .. }) | (DirKind::Voice { .. }, DirKind::Video { .. }) => true,
        _ => false,
    }
}

/// max/min of two positive numbers (infinite when one is zero).
pub(crate) fn ratio(a: f64, b: f64) -> f64 {
    let (lo, hi) = if a < b { (a, b) } else { (b, a) };
    if lo > 0.0 { hi / lo } else { f64::INFINITY }
}

fn unit(proto: u8) -> &'static str {
    if proto == PROTO_TCP { "seg/s" } else { "pps" }
}

/// "50 pps each way" when the two are within 10 %, else "50/33 pps".
pub(crate) fn pair(a: f64, b: f64, suffix: &str, each_way: bool) -> String {
    let close = (a - b).abs() <= 0.1 * a.max(b);
    match (close, each_way) {
        (true, true) => format!("{:.0} {suffix} each way", (a + b) / 2.0),
        (true, false) => format!("{:.0} {suffix}", (a + b) / 2.0),
        _ => format!("{a:.0}/{b:.0} {suffix}"),
    }
}

fn kind_parts(k: DirKind) -> (f64, String, f64) {
    match k {
        DirKind::Voice { pps, cadence_ms, mean_size } => (pps, format!("{cadence_ms} ms"), mean_size),
        DirKind::Video { pps, fps, mean_size } => (pps, format!("video {fps} fps"), mean_size),
        DirKind::Quiet { pps } => (pps, "silent".into(), 0.0),
        DirKind::Other | DirKind::Absent => (0.0, "-".into(), 0.0),
    }
}

/// "udp 50 pps each way, 20 ms, 172 B", or per side when they differ.
pub fn kind_reason(proto: u8, a: DirKind, b: DirKind) -> String {
    let (pa, ca, sa) = kind_parts(a);
    let (pb, cb, sb) = kind_parts(b);
    let cad = if ca == cb { ca } else { format!("{ca}/{cb}") };
    let sizes = if sa > 0.0 && sb > 0.0 { pair(sa, sb, "B", false) } else { format!("{:.0} B", sa.max(sb)) };
    format!("{} {}, {cad}, {sizes}", proto_name(proto), pair(pa, pb, unit(proto), true))
}

fn rtp_reason(proto: u8, a: &DirWindow, b: Option<&DirWindow>) -> String {
    let mut s = if a.iax2 {
        format!("iax2 call={}", a.rtp_ssrc)
    } else {
        let framing = if proto == PROTO_TCP { "rtp/tcp" } else { "rtp" };
        format!("{framing} ssrc={:#010x}", a.rtp_ssrc)
    };
    match b {
        Some(b) => s.push_str(&format!(" {}", pair(a.pps(), b.pps(), unit(proto), true))),
        None => s.push_str(&format!(" one way, {:.0} {}", a.pps(), unit(proto))),
    }
    if let Some((ms, _)) = a.cadence() {
        s.push_str(&format!(", {ms} ms"));
    }
    match b {
        Some(b) if b.packets > 0 => s.push_str(&format!(", {}", pair(a.mean_size(), b.mean_size(), "B", false))),
        _ => s.push_str(&format!(", {:.0} B", a.mean_size())),
    }
    s
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use voipdetect_common::{FlowCounters, FlowKey, features::update, hints::Hint, parse::Packet};

    use voipdetect_traffic::{Transport, pattern};

    use super::*;
    use crate::testutil::verdict_times;

    /// A window of one direction: `n` packets of `size` bytes, `gap_ms` apart.
    fn stream(n: u32, gap_ms: f64, size: impl Fn(u32) -> u32) -> DirWindow {
        stream_gaps(n, |_| gap_ms, size)
    }

    /// `n` packets; packet `i` of `size(i)` bytes comes `gap_ms(i)` after the one before.
    fn stream_gaps(n: u32, gap_ms: impl Fn(u32) -> f64, size: impl Fn(u32) -> u32) -> DirWindow {
        let mut c = FlowCounters::new(0, 0);
        let mut t_ms = 0.0;
        for i in 0..n {
            if i > 0 {
                t_ms += gap_ms(i);
            }
            let pkt = Packet { key: FlowKey::default(), payload_off: 0, payload_len: size(i), l3_off: 0, tcp_flags: 0 };
            update(&mut c, &pkt, Hint::None, 1_000_000 + (t_ms * 1e6) as u64);
        }
        DirWindow::between(&FlowCounters::new(0, 0), &c, (t_ms + gap_ms(n)) / 1000.0)
    }

    fn judge(a: &DirWindow, b: &DirWindow) -> bool {
        matches!(Classifier::default().judge(17, [Some(a), Some(b)]), WindowJudgement::Media { .. })
    }

    /// Every 10th packet lost: a 20 ms codec's lost frames leave 40 ms
    /// gaps, a 60 Hz tick's 33 ms ones, which no 20 ms clock makes; jitter
    /// that pushes one packet late and the next one on time makes as many
    /// short gaps as long ones.
    #[test]
    fn a_lossy_60_hz_tick_is_not_a_20_ms_clock() {
        let lossy = |tick_ms: f64| stream_gaps(50, |i| if i % 9 == 0 { 2.0 * tick_ms } else { tick_ms }, |_| 60);
        let (voice, game) = (lossy(20.0), lossy(1000.0 / 60.0));
        assert!(judge(&voice, &voice));
        assert!(game.pps() < 56.0 && game.cadence().unwrap().0 == 20, "{game:?}");
        assert!(game.off_clock_gaps(20).is_some_and(|(off, shorter)| off >= 5 && shorter == 0), "{game:?}");
        assert!(!judge(&game, &game), "{game:?}");
        // Every sixth packet 8 ms late: a 28 ms gap, then a 12 ms one.
        let late = |i: u32| match i % 6 {
            2 => 28.0,
            3 => 12.0,
            _ => 20.0,
        };
        let jittered = stream_gaps(50, late, |_| 60);
        assert!(jittered.off_clock_gaps(20).is_some_and(|(off, shorter)| off == shorter), "{jittered:?}");
        assert!(judge(&jittered, &jittered));
    }

    #[test]
    fn voice_cadences_are_media() {
        for ptime in [10.0, 20.0, 30.0, 40.0, 60.0] {
            let n = (1000.0 / ptime) as u32;
            let w = stream(n, ptime, |_| 33);
            assert!(judge(&w, &w), "{ptime} ms");
        }
    }

    #[test]
    fn variable_bitrate_stays_media() {
        let a = stream(50, 20.0, |i| 70 + (i * 37) % 60);
        let b = stream(50, 20.0, |i| 80 + (i * 53) % 50);
        assert!(judge(&a, &b));
    }

    #[test]
    fn asymmetric_game_is_not_media() {
        let client = stream(64, 15.6, |i| 40 + i % 16);
        let server = stream(64, 15.6, |i| 90 + (i * 397) % 1000);
        assert!(!judge(&client, &server));
    }

    #[test]
    fn steady_streams_of_very_different_sizes_are_not_a_call() {
        let a = stream(50, 20.0, |_| 40);
        let b = stream(50, 20.0, |_| 900);
        assert!(!judge(&a, &b));
    }

    #[test]
    fn a_rate_the_cadence_cannot_explain_is_not_voice() {
        // 60 and 64 Hz ticks land in the 20 ms gap bucket at 60+ packets/s.
        for hz in [60.0, 64.0] {
            let tick = stream(hz as u32, 1000.0 / hz, |i| 50 + i % 9);
            assert!(!judge(&tick, &tick), "{hz} Hz");
        }
        // 20 ms voice with a little jitter in the count stays voice, and so
        // does a stream mixing 20 and 40 ms frames (40 ms the commoner).
        let voice = stream(52, 19.3, |_| 60);
        assert!(judge(&voice, &voice));
        let mixed = stream_gaps(36, |i| if i % 3 == 1 { 20.0 } else { 40.0 }, |_| 80);
        assert_eq!(mixed.cadence().map(|c| c.0), Some(40));
        assert!(judge(&mixed, &mixed), "{mixed:?}");
    }

    #[test]
    fn bursts_and_high_rates_are_not_media() {
        let bulk = stream(2000, 0.5, |_| 1448);
        let acks = stream(0, 1.0, |_| 0);
        assert!(!judge(&bulk, &acks));
        let fast = stream(250, 4.0, |_| 100);
        assert!(!judge(&fast, &fast));
    }

    #[test]
    fn one_direction_is_never_a_call() {
        let w = stream(50, 20.0, |_| 160);
        assert_eq!(Classifier::default().judge(17, [Some(&w), None]), WindowJudgement::Other);
    }

    #[test]
    fn silence_suppression_is_half_a_call_window() {
        let talk = stream(50, 20.0, |_| 33);
        let cn = stream(4, 250.0, |_| 2);
        assert!(matches!(Classifier::default().judge(17, [Some(&talk), Some(&cn)]), WindowJudgement::Half { talker: 0, .. }));
        assert_eq!(Classifier::default().judge(17, [Some(&cn), Some(&cn)]), WindowJudgement::Hold);
    }

    #[test]
    fn rtp_structure_decides_early() {
        let mut a = stream(10, 20.0, |_| 172);
        a.rtp_ok = 9;
        let mut b = a.clone();
        let c = Classifier::default();
        let none = Hints::default();
        assert!(matches!(c.early(17, [Some(&a), Some(&b)], none), Some(Finding::Call { .. })));
        // RTP one way, the other side sending too: still a call.
        b.rtp_ok = 2;
        assert!(matches!(c.early(17, [Some(&a), Some(&b)], none), Some(Finding::Call { .. })));
        // RTP one way, nothing back: one-way media from that side.
        assert!(matches!(c.early(17, [None, Some(&a)], none), Some(Finding::OneWay { dir: 1, .. })));
        // No RTP at all: not decided early.
        a.rtp_ok = 0;
        b.rtp_ok = 0;
        assert_eq!(c.early(17, [Some(&a), Some(&b)], none), None);
    }

    // The same decisions on generated traffic, through the shared parser,
    // feature update and controller.

    #[test]
    fn rtp_call_is_called_within_a_second() {
        let t = verdict_times(&[pattern::rtp_call(5)]);
        assert_eq!(t.len(), 1, "{t:?}");
        assert!(t[0] <= 1.0, "{t:?}");
    }

    #[test]
    fn tcp_30ms_audio_is_called_within_three_seconds() {
        let t = verdict_times(&[pattern::tcp_audio_call(6)]);
        assert_eq!(t.len(), 1, "{t:?}");
        assert!(t[0] <= 3.0, "{t:?}");
    }

    #[test]
    fn lookalikes_are_never_called() {
        for f in [pattern::bulk_tcp(20 << 20), pattern::dns_burst(200), pattern::game(64, 8)] {
            assert!(verdict_times(std::slice::from_ref(&f)).is_empty(), "{}", f.name);
        }
    }

    #[test]
    fn opaque_udp_voice_is_called_by_behaviour() {
        let mut v = pattern::Voice::g711(20, Duration::from_secs(6));
        v.rtp = false;
        let t = verdict_times(&[pattern::call("opaque", Transport::Udp, &v, 4000, 40000)]);
        assert_eq!(t.len(), 1);
        assert!(t[0] <= 3.0, "{t:?}");
    }
}
