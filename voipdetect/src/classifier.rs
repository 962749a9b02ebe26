//! The classifier: given what both directions of a conversation did in a
//! window, is it a call? All thresholds live in [`Thresholds`], each with
//! the reasoning behind its value.
//!
//! Two paths:
//! - **Structure** ([`Classifier::early`]), checked at every poll on the
//!   window so far: an RTP stream (same SSRC, sequence +1, timestamps moving)
//!   in both directions is a call within the first second.
//! - **Behaviour** ([`Classifier::judge`]), on each complete window: both
//!   directions carry a steady, voice-rate stream of similar-sized packets
//!   at a packetisation interval, at comparable rates. Caught whatever the
//!   transport (UDP, TCP payload segments) or encryption. A conversation
//!   needs [`Thresholds::windows_needed`] such windows in a row.

use voipdetect_common::flow::PROTO_TCP;

use crate::window::DirWindow;

/// Every number the classifier decides by.
#[derive(Clone, Debug, PartialEq)]
pub struct Thresholds {
    /// Lowest payload rate of a voice direction. Packetisation of 10–60 ms
    /// gives 16.7–100 packets/s; 10 leaves room for a window that starts
    /// or ends mid-call and for 80–100 ms bundling.
    pub min_pps: f64,
    /// Highest payload rate of a voice direction: 10 ms packetisation
    /// (100/s) plus jitter and the odd RTCP or retransmission. Bulk
    /// transfers and 128 Hz game ticks both exceed it.
    pub max_pps: f64,
    /// Largest mean payload: anything up to an MTU-sized packet, because
    /// padding every packet to a fixed size is a known evasion.
    pub max_mean_size: f64,
    /// Share of inter-packet gaps that must fall in the one packetisation
    /// bucket (10/20/30/40/60 ms). A codec clock makes this close to 1;
    /// network jitter moves a few gaps into neighbouring buckets.
    pub min_cadence_share: f64,
    /// Share of gaps under 2 ms tolerated: voice frames are spaced out,
    /// bulk and web traffic come in back-to-back bursts.
    pub max_burst_share: f64,
    /// Share of packets that must fall in two adjacent size buckets.
    /// Voice codecs emit near-constant sizes (CBR) or a narrow band (VBR);
    /// game servers and web traffic spread over many sizes.
    pub min_size_stability: f64,
    /// Largest ratio between the two directions' packet rates. A call
    /// sends the same codec stream both ways; a game client or a one-way
    /// stream with acknowledgements does not.
    pub max_rate_ratio: f64,
    /// Largest ratio between the two directions' mean payload sizes. Both
    /// ends of a call run the same codec; a game client's inputs are a
    /// fraction of the server's snapshots.
    pub max_size_ratio: f64,
    /// Consecutive media windows before a behaviour-only verdict: one
    /// window can be a coincidence, two seconds of steady two-way voice
    /// cadence are a call.
    pub windows_needed: u32,
    /// In-sequence RTP packets needed in each direction for a structural
    /// verdict. Random bytes match an SSRC and a +1 sequence with odds of
    /// 2^-48 per packet; six in a row is not chance.
    pub rtp_min_in_seq: u32,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            min_pps: 10.0,
            max_pps: 130.0,
            max_mean_size: 1400.0,
            min_cadence_share: 0.5,
            max_burst_share: 0.3,
            min_size_stability: 0.7,
            max_rate_ratio: 3.0,
            max_size_ratio: 3.0,
            windows_needed: 2,
            rtp_min_in_seq: 6,
        }
    }
}

/// A conclusion about a conversation.
#[derive(Clone, Debug, PartialEq)]
pub enum Finding {
    /// Two-way real-time media.
    Call { reason: String },
    /// Media in one direction only: `dir` is 0 for the canonical direction.
    OneWay { dir: usize, reason: String },
}

/// What one complete window looked like.
#[derive(Clone, Debug, PartialEq)]
pub enum WindowJudgement {
    /// Both directions carried voice-like streams.
    Media { reason: String },
    /// Not a call window.
    Other,
}

/// What a voice-like direction looks like, for reasons.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Voice {
    pps: f64,
    cadence_ms: u32,
    mean_size: f64,
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
    pub fn early(&self, proto: u8, dirs: [Option<&DirWindow>; 2]) -> Option<Finding> {
        let need = self.t.rtp_min_in_seq;
        let [a, b] = dirs;
        let rtp = |d: Option<&DirWindow>| d.map_or(0, |d| d.rtp_ok);
        let (ra, rb) = (rtp(a), rtp(b));
        if ra >= need && rb >= need {
            let (a, b) = (a?, b?);
            return Some(Finding::Call { reason: rtp_reason(proto, a, Some(b)) });
        }
        None
    }

    /// Judges a complete window.
    pub fn judge(&self, proto: u8, dirs: [Option<&DirWindow>; 2]) -> WindowJudgement {
        let [Some(a), Some(b)] = dirs else { return WindowJudgement::Other };
        let (Some(va), Some(vb)) = (self.voice(a), self.voice(b)) else { return WindowJudgement::Other };
        if ratio(va.pps, vb.pps) > self.t.max_rate_ratio || ratio(va.mean_size, vb.mean_size) > self.t.max_size_ratio {
            return WindowJudgement::Other;
        }
        WindowJudgement::Media { reason: behaviour_reason(proto, va, vb) }
    }

    /// A direction that looks like one voice stream.
    fn voice(&self, d: &DirWindow) -> Option<Voice> {
        let t = &self.t;
        let pps = d.pps();
        let mean_size = d.mean_size();
        if !(t.min_pps..=t.max_pps).contains(&pps) || mean_size > t.max_mean_size {
            return None;
        }
        let (cadence_ms, share) = d.cadence()?;
        if share < t.min_cadence_share || d.gap_share(0) > t.max_burst_share {
            return None;
        }
        if d.size_stability() < t.min_size_stability {
            return None;
        }
        Some(Voice { pps, cadence_ms, mean_size })
    }
}

/// max/min of two positive numbers (infinite when one is zero).
fn ratio(a: f64, b: f64) -> f64 {
    let (lo, hi) = if a < b { (a, b) } else { (b, a) };
    if lo > 0.0 { hi / lo } else { f64::INFINITY }
}

fn unit(proto: u8) -> &'static str {
    if proto == PROTO_TCP { "seg/s" } else { "pps" }
}

fn proto_name(proto: u8) -> &'static str {
    if proto == PROTO_TCP { "tcp" } else { "udp" }
}

/// "50 pps each way" when the two are within 10 %, else "50/33 pps".
fn pair(a: f64, b: f64, suffix: &str, each_way: bool) -> String {
    let close = (a - b).abs() <= 0.1 * a.max(b);
    match (close, each_way) {
        (true, true) => format!("{:.0} {suffix} each way", (a + b) / 2.0),
        (true, false) => format!("{:.0} {suffix}", (a + b) / 2.0),
        _ => format!("{a:.0}/{b:.0} {suffix}"),
    }
}

fn behaviour_reason(proto: u8, a: Voice, b: Voice) -> String {
    let cad = if a.cadence_ms == b.cadence_ms {
        format!("{} ms", a.cadence_ms)
    } else {
        format!("{}/{} ms", a.cadence_ms, b.cadence_ms)
    };
    format!(
        "{} {}, {cad}, {}",
        proto_name(proto),
        pair(a.pps, b.pps, unit(proto), true),
        pair(a.mean_size, b.mean_size, "B", false)
    )
}

fn rtp_reason(proto: u8, a: &DirWindow, b: Option<&DirWindow>) -> String {
    let framing = if proto == PROTO_TCP { "rtp/tcp" } else { "rtp" };
    let mut s = format!("{framing} ssrc={:#010x}", a.rtp_ssrc);
    match b {
        Some(b) => {
            s.push_str(&format!(" {}", pair(a.pps(), b.pps(), unit(proto), true)));
            if let Some((ms, _)) = a.cadence() {
                s.push_str(&format!(", {ms} ms"));
            }
            s.push_str(&format!(", {}", pair(a.mean_size(), b.mean_size(), "B", false)));
        }
        None => {
            s.push_str(&format!(" {:.0} {} one way, {:.0} B", a.pps(), unit(proto), a.mean_size()));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use voipdetect_common::{FlowCounters, features::update, parse::Packet, hints::Hint, FlowKey};

    use super::*;
    use crate::{
        testutil::verdict_times,
        traffic::{Transport, pattern},
    };

    /// A window of one direction: `n` packets of `size` bytes, `gap_ms` apart.
    fn stream(n: u32, gap_ms: f64, size: impl Fn(u32) -> u32) -> DirWindow {
        let mut c = FlowCounters::new(0, 0);
        for i in 0..n {
            let pkt = Packet { key: FlowKey::default(), payload_off: 0, payload_len: size(i), tcp_flags: 0 };
            update(&mut c, &pkt, Hint::None, 1_000_000 + (f64::from(i) * gap_ms * 1e6) as u64);
        }
        DirWindow::between(&FlowCounters::new(0, 0), &c, f64::from(n) * gap_ms / 1000.0)
    }

    fn judge(a: &DirWindow, b: &DirWindow) -> bool {
        matches!(Classifier::default().judge(17, [Some(a), Some(b)]), WindowJudgement::Media { .. })
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
    fn rtp_structure_decides_early() {
        let mut a = stream(10, 20.0, |_| 172);
        a.rtp_ok = 9;
        let mut b = a.clone();
        assert!(matches!(Classifier::default().early(17, [Some(&a), Some(&b)]), Some(Finding::Call { .. })));
        b.rtp_ok = 2;
        assert_eq!(Classifier::default().early(17, [Some(&a), Some(&b)]), None);
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
