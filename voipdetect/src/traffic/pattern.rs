//! Flow patterns: calls, the evasions users invented against rate-only
//! blockers, and the look-alikes that must never be blocked. Each returns a
//! [`Flow`] whose frames are fully determined by its parameters and seed.

use std::time::Duration;

use rand::{Rng, RngCore, SeedableRng, rngs::SmallRng};

use super::{Flow, Frame, Transport};

/// RTP payload types (RFC 3551 §6).
pub const PT_PCMU: u8 = 0;
pub const PT_G729: u8 = 18;

/// A voice stream in one direction.
#[derive(Clone, Debug)]
pub struct Voice {
    /// Packetisation interval.
    pub ptime_ms: u32,
    /// Codec payload bytes per packet.
    pub payload: usize,
    /// Stream length.
    pub duration: Duration,
    /// Uniform send-time jitter, ± ms.
    pub jitter_ms: f64,
    /// Carry an RTP header (else opaque random bytes: SRTP-like or app-specific).
    pub rtp: bool,
    /// RTP payload type and clock rate.
    pub pt: u8,
    pub clock_hz: u32,
    /// Prefix each frame with a 2-byte length (RFC 4571 framing on TCP).
    pub length_prefix: bool,
}

impl Voice {
    /// G.711 at `ptime_ms` with an RTP header.
    pub fn g711(ptime_ms: u32, duration: Duration) -> Self {
        Self {
            ptime_ms,
            payload: 8 * ptime_ms as usize,
            duration,
            jitter_ms: 1.0,
            rtp: true,
            pt: PT_PCMU,
            clock_hz: 8000,
            length_prefix: false,
        }
    }

    /// The frames of this stream; `seed` picks SSRC, start sequence and bytes.
    pub fn frames(&self, seed: u64) -> Vec<Frame> {
        let mut rng = SmallRng::seed_from_u64(seed);
        let ssrc: u32 = rng.random();
        let mut seq: u16 = rng.random();
        let mut ts: u32 = rng.random();
        let step = self.clock_hz / 1000 * self.ptime_ms;
        let count = (self.duration.as_millis() / u128::from(self.ptime_ms.max(1))) as u64;
        let mut out = Vec::with_capacity(count as usize);
        for i in 0..count {
            let nominal = i as f64 * f64::from(self.ptime_ms);
            let jitter = if self.jitter_ms > 0.0 { rng.random_range(-self.jitter_ms..self.jitter_ms) } else { 0.0 };
            let at = Duration::from_secs_f64((nominal + jitter).max(0.0) / 1000.0);
            let mut body = Vec::with_capacity(self.payload + 14);
            if self.rtp {
                body.extend_from_slice(&rtp_header(self.pt, seq, ts, ssrc));
            }
            let mut media = vec![0u8; self.payload];
            rng.fill_bytes(&mut media);
            body.extend_from_slice(&media);
            if self.length_prefix {
                let len = body.len() as u16;
                body.splice(0..0, len.to_be_bytes());
            }
            out.push(Frame { at, payload: body });
            seq = seq.wrapping_add(1);
            ts = ts.wrapping_add(step);
        }
        out
    }
}

/// A 12-byte RTP fixed header (RFC 3550 §5.1), no CSRCs, no marker.
pub fn rtp_header(pt: u8, seq: u16, ts: u32, ssrc: u32) -> [u8; 12] {
    let mut h = [0u8; 12];
    h[0] = 0x80;
    h[1] = pt & 0x7f;
    h[2..4].copy_from_slice(&seq.to_be_bytes());
    h[4..8].copy_from_slice(&ts.to_be_bytes());
    h[8..12].copy_from_slice(&ssrc.to_be_bytes());
    h
}

fn flow(name: &str, transport: Transport, server_port: u16, client_port: u16) -> Flow {
    Flow {
        name: name.to_owned(),
        transport,
        ipv6: false,
        client_port,
        server_port,
        up: Vec::new(),
        down: Vec::new(),
        bulk_bytes: 0,
        is_call: false,
    }
}

/// A two-way call: the same voice stream each way, independent seeds.
pub fn call(name: &str, transport: Transport, voice: &Voice, server_port: u16, client_port: u16) -> Flow {
    let mut f = flow(name, transport, server_port, client_port);
    f.up = voice.frames(u64::from(client_port) << 16 | u64::from(server_port));
    f.down = voice.frames(u64::from(server_port) << 16 | u64::from(client_port) | 1 << 40);
    f.is_call = true;
    f
}

/// G.711 RTP over UDP at 20 ms: the classic call.
pub fn rtp_call(secs: u64) -> Flow {
    call("rtp/udp 20 ms call", Transport::Udp, &Voice::g711(20, Duration::from_secs(secs)), 5004, 40004)
}

/// Opaque audio over one TCP connection with 30 ms frames of 110 bytes:
/// the Flash softphone that walked past rate-only UDP blockers.
pub fn tcp_audio_call(secs: u64) -> Flow {
    let voice = Voice {
        ptime_ms: 30,
        payload: 110,
        duration: Duration::from_secs(secs),
        jitter_ms: 1.0,
        rtp: false,
        pt: 0,
        clock_hz: 8000,
        length_prefix: false,
    };
    call("audio/tcp 30 ms call", Transport::Tcp, &voice, 1935, 40935)
}

/// A bulk TCP upload of `bytes`, sent as fast as the path allows.
pub fn bulk_tcp(bytes: u64) -> Flow {
    let mut f = flow("bulk tcp transfer", Transport::Tcp, 5201, 45201);
    f.bulk_bytes = bytes;
    f
}

/// `queries` DNS-sized requests 2 ms apart, each answered 1 ms later.
pub fn dns_burst(queries: u32) -> Flow {
    let mut rng = SmallRng::seed_from_u64(53);
    let mut f = flow("dns burst", Transport::Udp, 53, 45353);
    for i in 0..queries {
        let at = Duration::from_millis(2 * u64::from(i));
        let q = rng.random_range(28..60);
        let a = rng.random_range(60..300);
        f.up.push(Frame { at, payload: random_bytes(&mut rng, q) });
        f.down.push(Frame { at: at + Duration::from_millis(1), payload: random_bytes(&mut rng, a) });
    }
    f
}

/// A game at `hz` ticks: small, steady client inputs; larger server
/// snapshots whose size follows the action.
pub fn game(hz: u32, secs: u64) -> Flow {
    let mut rng = SmallRng::seed_from_u64(u64::from(hz) * 7919);
    let mut f = flow(&format!("game {hz} Hz"), Transport::Udp, 27015, 47015);
    let ticks = u64::from(hz) * secs;
    let tick = 1.0 / f64::from(hz);
    for i in 0..ticks {
        let at = Duration::from_secs_f64(i as f64 * tick + rng.random_range(0.0..0.001));
        let up = rng.random_range(40..56);
        let down = rng.random_range(90..1100);
        f.up.push(Frame { at, payload: random_bytes(&mut rng, up) });
        f.down.push(Frame { at: at + Duration::from_micros(300), payload: random_bytes(&mut rng, down) });
    }
    f
}

fn random_bytes(rng: &mut SmallRng, n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    rng.fill_bytes(&mut v);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtp_frames_count_up_and_keep_their_ssrc() {
        let f = Voice::g711(20, Duration::from_secs(1)).frames(7);
        assert_eq!(f.len(), 50);
        assert_eq!(f[0].payload.len(), 12 + 160);
        let seq = |p: &[u8]| u16::from_be_bytes([p[2], p[3]]);
        assert_eq!(seq(&f[1].payload), seq(&f[0].payload).wrapping_add(1));
        assert_eq!(f[0].payload[8..12], f[49].payload[8..12]);
        assert!(f.windows(2).all(|w| w[0].at < w[1].at));
    }

    #[test]
    fn length_prefix_counts_the_frame() {
        let mut v = Voice::g711(30, Duration::from_millis(300));
        v.length_prefix = true;
        let f = v.frames(1);
        let p = &f[0].payload;
        assert_eq!(usize::from(u16::from_be_bytes([p[0], p[1]])), p.len() - 2);
    }

    #[test]
    fn game_server_sizes_vary_and_client_sizes_do_not() {
        let g = game(64, 2);
        let spread = |fr: &[Frame]| {
            let (min, max) = fr.iter().fold((usize::MAX, 0), |(a, b), f| (a.min(f.payload.len()), b.max(f.payload.len())));
            max - min
        };
        assert!(spread(&g.up) < 20);
        assert!(spread(&g.down) > 500);
    }
}
