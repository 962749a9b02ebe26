//! Calls spread over several conversations: what today's call apps do on
//! their own, and what they do when a blocker cuts one 5-tuple. Every call
//! keeps one local socket (or host) while its 5-tuples change:
//!
//! - **split relay**: sends to one relay address, receives from another,
//!   on one socket (Telegram's reflectors, some TURN and SFU set-ups);
//! - **reflectors**: the same, moving to other relays every few seconds;
//! - **port hops**: a new local port every few seconds, same relay (an ICE
//!   restart after a network change);
//! - **UDP, then TCP 443**: when its UDP media stops arriving, the client
//!   moves to TCP on port 443 (TURN over TLS), live by reacting to loss,
//!   in a synthetic capture at a fixed time.
//!
//! Voice is opaque everywhere (encrypted, no RTP header to see): these
//! are caught by behaviour and by their sessions, or not at all.

use std::time::Duration;

use crate::{
    Adaptive, AdaptiveLeg, Call, Flow, Frame, Transport,
    pattern::{Dtx, Voice, flow},
};

/// The relay ports the calls use (STUN/TURN's, then a reflector-like one).
const RELAY_PORTS: [u16; 2] = [3478, 596];
/// How often the hopping calls move on.
pub const HOP_EVERY: Duration = Duration::from_secs(3);
/// How long the adaptive client waits for media before it moves to TCP.
pub const LOSS_TIMEOUT: Duration = Duration::from_secs(2);
/// When, in a synthetic capture, the fallback call's UDP path breaks.
const SYNTH_FAILURE: Duration = Duration::from_secs(4);

/// A TLS 1.2 application-data record header (RFC 5246 §6.2.1): what media
/// relayed over TURN-over-TLS looks like on port 443.
fn tls_record(payload: &[u8]) -> Vec<u8> {
    let mut v = vec![0x17, 0x03, 0x03];
    v.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    v.extend_from_slice(payload);
    v
}

/// Encrypted Opus at 20 ms, sizes varying with the speech.
fn opus(secs: u64) -> Voice {
    let mut v = Voice::g711(20, Duration::from_secs(secs)).opaque();
    v.payload = 90;
    v.size_jitter = 30;
    v
}

/// Telegram-like voice: 60 ms frames of encrypted Opus.
fn opus_60ms(secs: u64) -> Voice {
    let mut v = Voice::g711(60, Duration::from_secs(secs)).opaque();
    v.payload = 140;
    v.size_jitter = 40;
    v
}

/// A leg of a call: one conversation of the client's socket with a relay.
/// Its sockets may share their port with other legs of the call (the
/// kernel tells connected UDP sockets apart by their peers).
fn leg(name: &str, transport: Transport, client_port: u16, relay: u8, server_port: u16) -> Flow {
    let mut f = flow(name, transport, server_port, client_port);
    f.relay = relay;
    f.is_call = true;
    f.shared_socket = transport == Transport::Udp;
    f
}

/// The frames of `frames` inside `[from, to)`.
fn between(frames: &[Frame], from: Duration, to: Duration) -> Vec<Frame> {
    frames.iter().filter(|f| f.at >= from && f.at < to).cloned().collect()
}

/// One socket sends its voice to one relay and receives the other side's
/// from another: each conversation carries voice one way only.
pub fn split_relay(secs: u64) -> Call {
    let name = "split relay";
    let voice = opus_60ms(secs);
    let (port, seed) = (41_001, 41_001);
    let mut up = leg(&format!("{name}: to relay 1"), Transport::Udp, port, 0, RELAY_PORTS[0]);
    up.up = voice.frames(seed);
    let mut down = leg(&format!("{name}: from relay 2"), Transport::Udp, port, 1, RELAY_PORTS[0]);
    down.down = voice.frames(seed + 1);
    Call { name: name.into(), legs: vec![up, down] }
}

/// A split-relay call that moves to other relays every [`HOP_EVERY`]:
/// four relays (two addresses, two ports), the send and the receive
/// relay always different.
pub fn reflectors(secs: u64) -> Call {
    let name = "reflector call over 4 relays";
    let voice = opus(secs);
    let port = 41_002;
    let (sent, received) = (voice.frames(41_002), voice.frames(41_003));
    let relays: Vec<(u8, u16)> = vec![(0, RELAY_PORTS[1]), (1, RELAY_PORTS[1]), (1, RELAY_PORTS[0] + 2), (0, RELAY_PORTS[0] + 2)];
    let mut legs: Vec<Flow> = relays
        .iter()
        .enumerate()
        .map(|(i, &(relay, server_port))| leg(&format!("{name}: relay {}", i + 1), Transport::Udp, port, relay, server_port))
        .collect();
    let total = Duration::from_secs(secs);
    let mut k = 0;
    let mut from = Duration::ZERO;
    while from < total {
        let to = from + HOP_EVERY;
        legs[(2 * k) % 4].up.extend(between(&sent, from, to));
        legs[(2 * k + 1) % 4].down.extend(between(&received, from, to));
        k += 1;
        from = to;
    }
    legs.retain(|l| !l.up.is_empty() || !l.down.is_empty());
    Call { name: name.into(), legs }
}

/// A two-way call that moves to a new local port every [`HOP_EVERY`],
/// keeping its relay.
pub fn port_hops(secs: u64) -> Call {
    let name = "port hops";
    let voice = opus(secs);
    let (sent, received) = (voice.frames(41_010), voice.frames(41_011));
    let total = Duration::from_secs(secs);
    let mut legs = Vec::new();
    let mut from = Duration::ZERO;
    let mut port = 41_010;
    while from < total {
        let to = from + HOP_EVERY;
        let mut f = leg(&format!("{name}: port {port}"), Transport::Udp, port, 0, RELAY_PORTS[0] + 1);
        f.up = between(&sent, from, to);
        f.down = between(&received, from, to);
        legs.push(f);
        port += 1;
        from = to;
    }
    Call { name: name.into(), legs }
}

/// A call over UDP that moves to TCP port 443 (media in TLS records) when
/// its media stops arriving for [`LOSS_TIMEOUT`]. Live, the client and the
/// relay react to the loss a block causes; in a synthetic capture the UDP
/// path breaks after 4 s.
pub fn udp_then_tcp(secs: u64) -> Call {
    let name = "udp, then tcp 443";
    let voice = opus(secs);
    let (sent, received) = (voice.frames(41_020), voice.frames(41_021));
    let adaptive = |leg| Some(Adaptive { group: 1, leg, loss_timeout: LOSS_TIMEOUT });
    // Both flows carry the whole schedule: live, each side sends on UDP
    // until it gives up on it, then on TCP (see `as_captured`).
    let mut udp = leg(&format!("{name}: udp"), Transport::Udp, 41_020, 0, RELAY_PORTS[0] + 3);
    udp.up = sent.clone();
    udp.down = received.clone();
    udp.adaptive = adaptive(AdaptiveLeg::Udp);
    let mut tcp = leg(&format!("{name}: tcp"), Transport::Tcp, 41_021, 0, 443);
    let record = |f: &Frame| Frame { at: f.at, payload: tls_record(&f.payload) };
    tcp.up = sent.iter().map(record).collect();
    tcp.down = received.iter().map(record).collect();
    tcp.adaptive = adaptive(AdaptiveLeg::TcpFallback);
    Call { name: name.into(), legs: vec![udp, tcp] }
}

/// The schedule a synthetic capture plays for an adaptive call: the UDP
/// path breaks at 4 s, the client gives up on it [`LOSS_TIMEOUT`] later.
pub fn as_captured(call: &Call) -> Call {
    let switch = SYNTH_FAILURE + LOSS_TIMEOUT;
    let legs = call
        .legs
        .iter()
        .map(|l| {
            let mut l = l.clone();
            match l.adaptive.map(|a| a.leg) {
                Some(AdaptiveLeg::Udp) => {
                    l.up = between(&l.up, Duration::ZERO, SYNTH_FAILURE);
                    l.down = between(&l.down, Duration::ZERO, SYNTH_FAILURE);
                }
                Some(AdaptiveLeg::TcpFallback) => {
                    l.up = between(&l.up, switch, Duration::MAX);
                    l.down = between(&l.down, switch, Duration::MAX);
                }
                None => {}
            }
            l
        })
        .collect();
    Call { name: call.name.clone(), legs }
}

/// Client hosts of the spread calls start after this many (the single
/// flows' hosts come first).
const CALL_HOSTS: u8 = 40;

/// Every call spread over several conversations, each from a host of its own.
pub fn session_calls(secs: u64) -> Vec<Call> {
    let mut calls = vec![split_relay(secs), reflectors(secs), port_hops(secs), udp_then_tcp(secs)];
    for (i, c) in calls.iter_mut().enumerate() {
        for leg in &mut c.legs {
            leg.client = CALL_HOSTS + 1 + i as u8;
        }
    }
    calls
}

/// Voice that is hard to see: 60 ms frames, opaque VBR with silence
/// suppression (Opus DTX: a packet every 400 ms in silence), and voice
/// that crossed a jittery path (queueing delays of 8 ms on average on a
/// 20 ms stream, 15 ms on a 60 ms one, both ways).
pub fn hard_to_see_calls(secs: u64) -> Vec<Flow> {
    let mut v = Vec::new();
    v.push(crate::pattern::call("opaque 60 ms vbr", Transport::Udp, &opus_60ms(secs), 41_030, 41_030));
    let mut dtx = opus(secs);
    dtx.dtx = Some(Dtx { talk_ms: (1500, 4000), cn_every_ms: (380, 420), cn_size: 14, starts: true, seed: 41 });
    v.push(crate::pattern::call("opaque vbr with silence suppression", Transport::Udp, &dtx, 41_031, 41_031));
    let mut jittery = opus(secs);
    jittery.path_jitter_ms = 8.0;
    v.push(crate::pattern::call("opaque vbr 20 ms over a jittery path", Transport::Udp, &jittery, 41_032, 41_032));
    let mut jittery60 = opus_60ms(secs);
    jittery60.path_jitter_ms = 15.0;
    v.push(crate::pattern::call("opaque 60 ms over a jittery path", Transport::Udp, &jittery60, 41_033, 41_033));
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addrs;

    #[test]
    fn split_legs_share_the_clients_socket_and_speak_one_way() {
        let c = split_relay(6);
        let [up, down] = c.legs.as_slice() else { panic!("two legs") };
        let (a, b) = (addrs::of(up), addrs::of(down));
        assert_eq!(a.0, b.0, "one client socket");
        assert_ne!(a.1.ip(), b.1.ip(), "two relays");
        assert!(up.down.is_empty() && down.up.is_empty());
        assert!(up.up.len() > 90 && down.down.len() > 90, "{} {}", up.up.len(), down.down.len());
        assert!(up.shared_socket && down.shared_socket);
    }

    #[test]
    fn hopping_calls_move_every_few_seconds_without_gaps() {
        for c in [reflectors(9), port_hops(9)] {
            assert!(c.legs.len() >= 3, "{}: {} legs", c.name, c.legs.len());
            let mut all: Vec<Duration> = c.legs.iter().flat_map(|l| l.up.iter().map(|f| f.at)).collect();
            all.sort();
            let gap = all.windows(2).map(|w| w[1] - w[0]).max().unwrap();
            assert!(gap < Duration::from_millis(60), "{}: the voice stops for {gap:?}", c.name);
        }
        let r = reflectors(9);
        for l in &r.legs {
            let sends = l.up.first().map(|f| f.at);
            let receives = l.down.first().map(|f| f.at);
            assert!(sends.is_none() || receives.is_none() || sends != receives, "{}: one direction per hop", l.name);
        }
    }

    #[test]
    fn the_captured_fallback_moves_to_tcp_after_the_loss_timeout() {
        let c = as_captured(&udp_then_tcp(10));
        let (udp, tcp) = (&c.legs[0], &c.legs[1]);
        assert!(udp.up.iter().all(|f| f.at < SYNTH_FAILURE));
        assert!(tcp.up.iter().all(|f| f.at >= SYNTH_FAILURE + LOSS_TIMEOUT));
        assert!(!tcp.up.is_empty() && tcp.up[0].payload[..3] == [0x17, 0x03, 0x03]);
        // Live, both flows carry the whole schedule; the client picks.
        let live = udp_then_tcp(10);
        assert!(live.legs[0].up.len() > udp.up.len());
    }
}
