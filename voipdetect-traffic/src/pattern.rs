//! Flow patterns: calls, the evasions users invented against rate-only
//! blockers, and the look-alikes that must never be blocked. Each returns a
//! [`Flow`] whose frames are fully determined by its parameters and seed.

use std::time::Duration;

use rand::{Rng, RngCore, SeedableRng, rngs::SmallRng};

use voipdetect_common::hints::IAX2_PORT;

use crate::{Flow, Frame, Transport};

/// RTP payload types (RFC 3551 §6).
pub const PT_PCMU: u8 = 0;
pub const PT_G729: u8 = 18;

/// Silence suppression (discontinuous transmission): talk spurts of
/// `talk_ms` alternate between the two sides; the silent side sends one
/// comfort-noise packet of `cn_size` bytes every `cn_every_ms`.
#[derive(Clone, Copy, Debug)]
pub struct Dtx {
    pub talk_ms: (u64, u64),
    pub cn_every_ms: (u64, u64),
    pub cn_size: usize,
    /// Whether this side has the first spurt.
    pub starts: bool,
    /// Seed of the shared spurt schedule (the same for both sides).
    pub seed: u64,
}

/// A voice stream in one direction.
#[derive(Clone, Debug)]
pub struct Voice {
    /// Packetisation interval.
    pub ptime_ms: u32,
    /// Codec payload bytes per packet.
    pub payload: usize,
    /// Payload varies per packet by up to ± this many bytes (VBR codecs).
    pub size_jitter: usize,
    /// Pad every packet to this size (an evasion of size-based rules).
    pub pad_to: Option<usize>,
    /// Stream length.
    pub duration: Duration,
    /// Uniform send-time jitter, ± ms.
    pub jitter_ms: f64,
    /// Queueing delay on the path, exponential with this mean (ms), order
    /// kept: what a mobile or Wi-Fi path does to a codec's clock by the
    /// time the packets pass the gateway (gaps scatter, late packets catch
    /// up with the next in bursts).
    pub path_jitter_ms: f64,
    /// Carry an RTP header (else opaque random bytes: SRTP-like or app-specific).
    pub rtp: bool,
    /// RTP payload type and clock rate.
    pub pt: u8,
    pub clock_hz: u32,
    /// Prefix each frame with a 2-byte length (RFC 4571 framing on TCP).
    pub length_prefix: bool,
    /// Wrap each packet in TURN ChannelData on this channel (RFC 8656 §12).
    pub channel: Option<u16>,
    /// Put each packet behind Zoom's server-relayed media headers (an
    /// 8-byte SFU header, then a 19-byte audio media header).
    pub zoom_relayed: bool,
    /// Send IAX2 mini frames (RFC 5456 §8.1.2) of this call number instead
    /// of RTP: 4 bytes of call number and millisecond timestamp.
    pub iax2_call: Option<u16>,
    /// Carry each packet (with its IPv4 and UDP headers) through a
    /// WireGuard tunnel: what a user who tunnels a softphone shows.
    pub wireguard: bool,
    /// Multiplex an RTCP sender report every this many ms (RFC 5761).
    pub rtcp_every_ms: Option<u64>,
    pub dtx: Option<Dtx>,
}

impl Voice {
    /// G.711 at `ptime_ms` with an RTP header.
    pub fn g711(ptime_ms: u32, duration: Duration) -> Self {
        Self {
            ptime_ms,
            payload: 8 * ptime_ms as usize,
            size_jitter: 0,
            pad_to: None,
            duration,
            jitter_ms: 1.0,
            path_jitter_ms: 0.0,
            rtp: true,
            pt: PT_PCMU,
            clock_hz: 8000,
            length_prefix: false,
            channel: None,
            zoom_relayed: false,
            iax2_call: None,
            wireguard: false,
            rtcp_every_ms: None,
            dtx: None,
        }
    }

    /// The same stream without an RTP header: random bytes only.
    pub fn opaque(mut self) -> Self {
        self.rtp = false;
        self
    }

    /// The frames of this stream; `seed` picks SSRC, start sequence and bytes.
    pub fn frames(&self, seed: u64) -> Vec<Frame> {
        let mut rng = SmallRng::seed_from_u64(seed);
        let ssrc: u32 = rng.random();
        let mut seq: u16 = rng.random();
        let mut ts: u32 = rng.random();
        let step = self.clock_hz / 1000 * self.ptime_ms;
        let total_ms = self.duration.as_millis() as u64;
        let talking = self.dtx.map(|d| spurts(&d, total_ms));
        let mut out = Vec::new();
        let mut queue_free_at = Duration::ZERO;
        let mut next_rtcp = self.rtcp_every_ms.unwrap_or(u64::MAX);
        let mut t_ms = 0.0f64;
        while (t_ms as u64) < total_ms {
            let now = t_ms as u64;
            let speaking = talking.as_ref().is_none_or(|sp| sp.iter().any(|&(a, b)| (a..b).contains(&now)));
            let jitter = if self.jitter_ms > 0.0 { rng.random_range(-self.jitter_ms..self.jitter_ms) } else { 0.0 };
            let queued = if self.path_jitter_ms > 0.0 { -self.path_jitter_ms * (1.0 - rng.random::<f64>()).ln() } else { 0.0 };
            let at = Duration::from_secs_f64((t_ms + jitter + queued).max(0.0) / 1000.0).max(queue_free_at);
            queue_free_at = at;
            let size = if speaking {
                let j = self.size_jitter as i64;
                (self.payload as i64 + if j > 0 { rng.random_range(-j..=j) } else { 0 }).max(1) as usize
            } else {
                self.dtx.map_or(1, |d| d.cn_size)
            };
            out.push(Frame { at, payload: self.packet(&mut rng, seq, ts, ssrc, size) });
            seq = seq.wrapping_add(1);
            if now >= next_rtcp {
                out.push(Frame { at: at + Duration::from_micros(500), payload: self.wrap(rtcp_sr(ssrc, ts)) });
                next_rtcp += self.rtcp_every_ms.unwrap_or(u64::MAX);
            }
            let advance = match (speaking, self.dtx) {
                (false, Some(d)) => rng.random_range(d.cn_every_ms.0..=d.cn_every_ms.1) as f64,
                _ => f64::from(self.ptime_ms),
            };
            ts = ts.wrapping_add((advance as u32 / self.ptime_ms.max(1)).max(1) * step);
            t_ms += advance;
        }
        out
    }

    fn packet(&self, rng: &mut SmallRng, seq: u16, ts: u32, ssrc: u32, size: usize) -> Vec<u8> {
        let mut body = Vec::with_capacity(size + 16);
        if let Some(call) = self.iax2_call {
            // The mini frame's timestamp is the call's clock in ms.
            let ms = (ts / (self.clock_hz / 1000).max(1)) as u16;
            body.extend_from_slice(&(call & 0x7fff).to_be_bytes());
            body.extend_from_slice(&ms.to_be_bytes());
        } else if self.rtp {
            body.extend_from_slice(&rtp_header(self.pt, seq, ts, ssrc));
        }
        let start = body.len();
        body.resize(start + size, 0);
        rng.fill_bytes(&mut body[start..]);
        if let Some(pad) = self.pad_to
            && body.len() < pad
        {
            body.resize(pad, 0);
        }
        let body = self.wrap(body);
        if self.wireguard { wireguard_data(rng, u64::from(seq), 20 + 8 + body.len()) } else { body }
    }

    /// Zoom media headers, TURN ChannelData and RFC 4571 framing, where configured.
    fn wrap(&self, mut body: Vec<u8>) -> Vec<u8> {
        if self.zoom_relayed {
            // SFU header: type 5 (media), then fields we leave zero; the
            // audio media header: type 15 and 18 more bytes.
            let mut hdr = vec![0u8; 8 + 19];
            hdr[0] = 5;
            hdr[8] = 15;
            body.splice(0..0, hdr);
        }
        if let Some(ch) = self.channel {
            let len = body.len() as u16;
            let mut framed = ch.to_be_bytes().to_vec();
            framed.extend_from_slice(&len.to_be_bytes());
            framed.append(&mut body);
            framed.resize(framed.len().div_ceil(4) * 4, 0);
            body = framed;
        }
        if self.length_prefix {
            let len = body.len() as u16;
            body.splice(0..0, len.to_be_bytes());
        }
        body
    }
}

/// Talk-spurt intervals (ms) of one side: alternating turns from a
/// schedule both sides derive from the same seed.
fn spurts(d: &Dtx, total_ms: u64) -> Vec<(u64, u64)> {
    let mut rng = SmallRng::seed_from_u64(d.seed);
    let mut out = Vec::new();
    let (mut t, mut mine) = (0, d.starts);
    while t < total_ms {
        let len = rng.random_range(d.talk_ms.0..=d.talk_ms.1);
        if mine {
            out.push((t, t + len));
        }
        mine = !mine;
        t += len;
    }
    out
}

/// A minimal RTCP sender report (RFC 3550 §6.4.1): header, SSRC, sender info.
fn rtcp_sr(ssrc: u32, ts: u32) -> Vec<u8> {
    let mut v = vec![0x80, 200, 0, 6];
    v.extend_from_slice(&ssrc.to_be_bytes());
    v.extend_from_slice(&[0; 8]);
    v.extend_from_slice(&ts.to_be_bytes());
    v.extend_from_slice(&[0; 8]);
    v
}

/// A WireGuard transport data message carrying `inner` plaintext bytes:
/// type 4, the receiver's index, a 64-bit counter, the plaintext padded to
/// 16 bytes and encrypted (random here), a 16-byte tag.
fn wireguard_data(rng: &mut SmallRng, counter: u64, inner: usize) -> Vec<u8> {
    let mut v = vec![4, 0, 0, 0, 0x5e, 0x1f, 0x0a, 0x77];
    v.extend_from_slice(&counter.to_le_bytes());
    let sealed = inner.div_ceil(16) * 16 + 16;
    v.append(&mut random_bytes(rng, sealed));
    v
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

pub(crate) fn flow(name: &str, transport: Transport, server_port: u16, client_port: u16) -> Flow {
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
        relay: 0,
        client: 0,
        shared_socket: false,
        adaptive: None,
    }
}

/// A two-way call: the same voice stream each way, independent seeds.
pub fn call(name: &str, transport: Transport, voice: &Voice, server_port: u16, client_port: u16) -> Flow {
    let mut f = flow(name, transport, server_port, client_port);
    f.up = voice.frames(u64::from(client_port) << 16 | u64::from(server_port));
    let mut back = voice.clone();
    if let Some(d) = &mut back.dtx {
        d.starts = !d.starts;
    }
    // Each IAX2 peer numbers the call itself.
    if let Some(call) = &mut back.iax2_call {
        *call ^= 0x0100;
    }
    f.down = back.frames(u64::from(server_port) << 16 | u64::from(client_port) | 1 << 40);
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
    let mut voice = Voice::g711(30, Duration::from_secs(secs)).opaque();
    voice.payload = 110;
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
    game_on(hz, secs, 27015, 47015)
}

fn game_on(hz: u32, secs: u64, server_port: u16, client_port: u16) -> Flow {
    let mut rng = SmallRng::seed_from_u64(u64::from(hz) * 7919);
    let mut f = flow(&format!("game {hz} Hz"), Transport::Udp, server_port, client_port);
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

pub(crate) fn random_bytes(rng: &mut SmallRng, n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    rng.fill_bytes(&mut v);
    v
}

/// Hands out distinct port pairs and client hosts for a catalogue of flows.
struct Ports {
    n: u16,
    host: u8,
}

impl Ports {
    fn new(n: u16, host: u8) -> Self {
        Self { n, host }
    }

    /// (server port, client port) of the next flow.
    fn next(&mut self) -> (u16, u16) {
        self.n += 1;
        (10_000 + self.n, 30_000 + self.n)
    }

    /// A client host of its own for the next flow.
    fn host(&mut self) -> u8 {
        self.host += 1;
        assert!(self.host <= crate::addrs::CLIENT_HOSTS, "more flows than client hosts");
        self.host
    }

    /// Gives every flow a host of its own.
    fn spread(&mut self, flows: &mut [Flow]) {
        for f in flows {
            f.client = self.host();
        }
    }
}

/// STUN binding request or success response (RFC 8489 §5) with a
/// PRIORITY-sized attribute block.
fn stun(rng: &mut SmallRng, response: bool) -> Vec<u8> {
    let mut v = vec![if response { 0x01 } else { 0x00 }, 0x01, 0x00, 0x18, 0x21, 0x12, 0xa4, 0x42];
    v.extend(random_bytes(rng, 12));
    v.extend(random_bytes(rng, 24));
    v
}

/// A DTLS 1.2 handshake record (RFC 6347 §4.1) of `len` body bytes.
fn dtls(rng: &mut SmallRng, len: usize) -> Vec<u8> {
    let mut v = vec![22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 1];
    v.extend_from_slice(&(len as u16).to_be_bytes());
    v.extend(random_bytes(rng, len));
    v
}

/// ICE connectivity checks (and, with `handshake`, a DTLS handshake)
/// before the media, which starts 300 ms later.
fn with_preamble(mut f: Flow, handshake: bool) -> Flow {
    let mut rng = SmallRng::seed_from_u64(u64::from(f.server_port));
    let shift = Duration::from_millis(300);
    for fr in f.up.iter_mut().chain(f.down.iter_mut()) {
        fr.at += shift;
    }
    let ms = Duration::from_millis;
    let mut up = vec![Frame { at: ms(0), payload: stun(&mut rng, false) }, Frame { at: ms(50), payload: stun(&mut rng, true) }];
    let mut down = vec![Frame { at: ms(10), payload: stun(&mut rng, true) }, Frame { at: ms(40), payload: stun(&mut rng, false) }];
    if handshake {
        up.push(Frame { at: ms(100), payload: dtls(&mut rng, 180) });
        down.push(Frame { at: ms(130), payload: dtls(&mut rng, 1100) });
        up.push(Frame { at: ms(180), payload: dtls(&mut rng, 300) });
        down.push(Frame { at: ms(210), payload: dtls(&mut rng, 60) });
    }
    up.append(&mut f.up);
    down.append(&mut f.down);
    f.up = up;
    f.down = down;
    f
}

/// 30 fps video: frames of 1–4 packets of 600–1200 bytes, back to back.
pub(crate) fn video_frames(secs: u64, seed: u64) -> Vec<Frame> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut out = Vec::new();
    let frames = secs * 30;
    for i in 0..frames {
        let t = i as f64 / 30.0 + rng.random_range(0.0..0.002);
        for k in 0..rng.random_range(1..=4u32) {
            let at = Duration::from_secs_f64(t + f64::from(k) * 0.0002);
            let n = rng.random_range(600..=1200);
            out.push(Frame { at, payload: random_bytes(&mut rng, n) });
        }
    }
    out
}

/// Every kind of call voipdetect must catch, each on its own ports and host:
/// RTP at every common packetisation and frame size, IPv6, silence
/// suppression, opaque and padded media, audio over TCP with and without
/// framing, a video call, and the session set-ups that reveal media early.
pub fn call_variants(secs: u64) -> Vec<Flow> {
    let d = Duration::from_secs(secs);
    let mut p = Ports::new(0, 0);
    let mut v = Vec::new();
    let mut add = |name: String, transport: Transport, voice: Voice, ipv6: bool, v: &mut Vec<Flow>| {
        let (s, c) = p.next();
        let mut f = call(&name, transport, &voice, s, c);
        f.ipv6 = ipv6;
        v.push(f);
    };
    for ptime in [10, 20, 30, 40, 60] {
        let mut small = Voice::g711(ptime, d);
        small.payload = 20;
        small.pt = PT_G729;
        add(format!("rtp {ptime} ms 20 B"), Transport::Udp, small, false, &mut v);
        let mut large = Voice::g711(ptime, d);
        large.payload = if ptime <= 20 { 160 } else { 240 };
        add(format!("rtp {ptime} ms {} B", large.payload), Transport::Udp, large, false, &mut v);
    }
    add("rtp ipv6 20 ms 160 B".into(), Transport::Udp, Voice::g711(20, d), true, &mut v);
    let mut g729 = Voice::g711(20, d);
    g729.payload = 20;
    add("rtp ipv6 20 ms 20 B".into(), Transport::Udp, g729, true, &mut v);
    let dtx = Dtx { talk_ms: (1000, 3000), cn_every_ms: (160, 400), cn_size: 2, starts: true, seed: 7 };
    let mut rtp_dtx = Voice::g711(20, d);
    rtp_dtx.dtx = Some(dtx);
    add("rtp with silence suppression".into(), Transport::Udp, rtp_dtx.clone(), false, &mut v);
    add("opaque with silence suppression".into(), Transport::Udp, rtp_dtx.opaque(), false, &mut v);
    let mut vbr = Voice::g711(20, d).opaque();
    vbr.payload = 100;
    vbr.size_jitter = 40;
    add("opaque vbr 20 ms".into(), Transport::Udp, vbr.clone(), false, &mut v);
    let mut vbr6 = vbr.clone();
    vbr6.ptime_ms = 30;
    add("opaque vbr ipv6 30 ms".into(), Transport::Udp, vbr6, true, &mut v);
    for (ptime, size) in [(30, 110), (40, 150)] {
        let mut t = Voice::g711(ptime, d).opaque();
        t.payload = size;
        add(format!("tcp {ptime} ms {size} B"), Transport::Tcp, t.clone(), false, &mut v);
        t.length_prefix = true;
        add(format!("tcp {ptime} ms {size} B length-prefixed"), Transport::Tcp, t, false, &mut v);
    }
    let mut framed = Voice::g711(20, d);
    framed.length_prefix = true;
    add("rtp over tcp rfc4571".into(), Transport::Tcp, framed, false, &mut v);
    let mut padded = Voice::g711(20, d).opaque();
    padded.payload = 33;
    padded.pad_to = Some(1000);
    add("padded to 1000 B".into(), Transport::Udp, padded, false, &mut v);

    // Video call: Opus-like audio and 30 fps video on their own ports.
    let (s, c) = p.next();
    let mut audio = vbr.clone();
    audio.payload = 80;
    v.push(call("video call: audio", Transport::Udp, &audio, s, c));
    let (s, c) = p.next();
    let mut video = flow("video call: video", Transport::Udp, s, c);
    video.up = video_frames(secs, u64::from(s));
    video.down = video_frames(secs, u64::from(c));
    video.is_call = true;
    v.push(video);

    // Set-ups that show media structure before any rate window closes.
    let (s, c) = p.next();
    let mut turn = Voice::g711(20, d);
    turn.channel = Some(0x4001);
    v.push(with_preamble(call("stun, then rtp in turn channeldata", Transport::Udp, &turn, s, c), false));
    let (s, c) = p.next();
    let mut srtp = Voice::g711(20, d);
    srtp.payload = 80;
    srtp.pt = 111;
    srtp.clock_hz = 48_000;
    v.push(with_preamble(call("stun + dtls, then srtp", Transport::Udp, &srtp, s, c), true));
    let (s, c) = p.next();
    let mut zoom = Voice::g711(20, d);
    zoom.payload = 60;
    zoom.pt = 112;
    zoom.clock_hz = 16_000;
    zoom.zoom_relayed = true;
    v.push(call("rtp behind zoom's media headers", Transport::Udp, &zoom, s, c));
    let (_, c) = p.next();
    let mut wg = Voice::g711(20, d);
    wg.payload = 90;
    wg.size_jitter = 30;
    wg.wireguard = true;
    v.push(call("rtp inside a wireguard tunnel", Transport::Udp, &wg, 51_820, c));
    let (_, c) = p.next();
    let mut iax2 = Voice::g711(20, d).opaque();
    iax2.iax2_call = Some(0x0d05);
    v.push(call("iax2 mini frames", Transport::Udp, &iax2, IAX2_PORT, c));
    let (s, c) = p.next();
    let mut rtcp = vbr;
    rtcp.rtcp_every_ms = Some(500);
    v.push(call("opaque media with rtcp", Transport::Udp, &rtcp, s, c));
    v.extend(crate::calls::hard_to_see_calls(secs));
    Ports::new(0, 0).spread(&mut v);
    v
}

/// Music on hold: RTP one way, nothing back.
pub fn one_way_media(secs: u64) -> Flow {
    let mut f = flow("one-way rtp (music on hold)", Transport::Udp, 16_384, 36_384);
    f.client = ONE_WAY_HOST;
    f.down = Voice::g711(20, Duration::from_secs(secs)).frames(99);
    f.is_call = false;
    f
}

/// Client hosts of the look-alikes start after this many (the calls' hosts come first).
const DECOY_HOSTS: u8 = 50;
/// The one-way stream's client host.
const ONE_WAY_HOST: u8 = 49;

/// Everything that must never be called a call, each on its own ports and host.
pub fn decoys(secs: u64) -> Vec<Flow> {
    let mut p = Ports::new(100, 0);
    let mut rng = SmallRng::seed_from_u64(4242);
    let mut v = Vec::new();
    for hz in [20, 30, 60, 64, 128] {
        let (s, c) = p.next();
        v.push(game_on(hz, secs, s, c));
    }
    let total = Duration::from_secs(secs);
    let ms = |x: f64| Duration::from_secs_f64(x / 1000.0);

    // A 30 Hz game whose client and server both send state that varies
    // with the action: the tick lands in the 30 ms voice bucket, the
    // sizes spread over many.
    let (s, c) = p.next();
    let mut g30 = flow("game 30 Hz, varying state both ways", Transport::Udp, s, c);
    for i in 0..30 * secs {
        let at = i as f64 * 1000.0 / 30.0;
        let (up, down) = (rng.random_range(30..420), rng.random_range(80..1200));
        g30.up.push(Frame { at: ms(at + rng.random_range(0.0..1.5)), payload: random_bytes(&mut rng, up) });
        g30.down.push(Frame { at: ms(at + 8.0 + rng.random_range(0.0..1.5)), payload: random_bytes(&mut rng, down) });
    }
    v.push(g30);

    // Cloud gaming: 60 fps video down (a frame of 6-14 MTU-sized packets
    // every 16.7 ms), and a steady controller-input stream up at 100 Hz
    // (one 10 ms voice stream's cadence, size and rate).
    let (s, c) = p.next();
    let mut cloud = flow("cloud gaming: video down, input up", Transport::Udp, s, c);
    for i in 0..60 * secs {
        let t = i as f64 * 1000.0 / 60.0 + rng.random_range(0.0..1.0);
        for k in 0..rng.random_range(6..=14u32) {
            let n = rng.random_range(1100..=1300);
            cloud.down.push(Frame { at: ms(t + f64::from(k) * 0.05), payload: random_bytes(&mut rng, n) });
        }
    }
    for i in 0..100 * secs {
        cloud.up.push(Frame { at: ms(i as f64 * 10.0 + rng.random_range(0.0..0.6)), payload: random_bytes(&mut rng, 52) });
    }
    v.push(cloud);

    // A peer-to-peer game with rollback netcode: both peers send their
    // inputs every 60 Hz frame, small and alike both ways — a 16.7 ms
    // cadence next to 20 ms voice.
    let (s, c) = p.next();
    let mut p2p = flow("p2p game 60 Hz, symmetric inputs", Transport::Udp, s, c);
    for i in 0..60 * secs {
        let at = i as f64 * 1000.0 / 60.0;
        let (up, down) = (rng.random_range(40..70), rng.random_range(40..70));
        p2p.up.push(Frame { at: ms(at + rng.random_range(0.0..1.0)), payload: random_bytes(&mut rng, up) });
        p2p.down.push(Frame { at: ms(at + 5.0 + rng.random_range(0.0..1.0)), payload: random_bytes(&mut rng, down) });
    }
    v.push(p2p);

    // Interactive SSH with keystroke-timing obfuscation (OpenSSH 9.5+):
    // while typing, the client sends a packet every 20 ms; the server
    // echoes real keystrokes and now and then prints a command's output.
    let (s, c) = p.next();
    let mut ssh = flow("ssh, obfuscated keystrokes", Transport::Tcp, s, c);
    let mut t = 200.0;
    while ms(t) < total {
        let typing = rng.random_range(2000.0..4000.0);
        let end = t + typing;
        let mut k = t;
        while k < end && ms(k) < total {
            ssh.up.push(Frame { at: ms(k), payload: random_bytes(&mut rng, 36) });
            k += 20.0;
        }
        let mut e = t + rng.random_range(50.0..150.0);
        while e < end && ms(e) < total {
            ssh.down.push(Frame { at: ms(e), payload: random_bytes(&mut rng, 36) });
            e += rng.random_range(60.0..400.0);
        }
        if ms(end + 50.0) < total {
            for i in 0..rng.random_range(1..6) {
                let n = rng.random_range(200..1400);
                ssh.down.push(Frame { at: ms(end + 50.0 + f64::from(i)), payload: random_bytes(&mut rng, n) });
            }
        }
        t = end + rng.random_range(1000.0..3000.0);
    }
    ssh.down.sort_by_key(|f| f.at);
    v.push(ssh);

    let mut dns = dns_burst(300);
    dns.client_port = p.next().1;
    v.push(dns);

    // NTP in iburst mode: 8 polls 2 s apart (RFC 5905), 48-byte packets.
    let (_, c) = p.next();
    let mut ntp = flow("ntp iburst", Transport::Udp, 123, c);
    for i in 0..8u64.min(secs / 2 + 1) {
        ntp.up.push(Frame { at: Duration::from_secs(2 * i), payload: random_bytes(&mut rng, 48) });
        ntp.down.push(Frame { at: Duration::from_secs(2 * i) + ms(2.0), payload: random_bytes(&mut rng, 48) });
    }
    v.push(ntp);

    // Telemetry: a report a second, acknowledged.
    let (s, c) = p.next();
    let mut tel = flow("telemetry", Transport::Udp, s, c);
    for i in 0..secs {
        let at = Duration::from_secs(i) + ms(rng.random_range(0.0..50.0));
        let n = rng.random_range(150..400);
        tel.up.push(Frame { at, payload: random_bytes(&mut rng, n) });
        tel.down.push(Frame { at: at + ms(3.0), payload: random_bytes(&mut rng, 24) });
    }
    v.push(tel);

    // STUN binding keep-alives every 2.5 s (ICE consent freshness).
    let (s, c) = p.next();
    let mut keep = flow("stun keep-alives", Transport::Udp, s, c);
    let mut t = 0.0;
    while ms(t) < total {
        keep.up.push(Frame { at: ms(t), payload: stun(&mut rng, false) });
        keep.down.push(Frame { at: ms(t + 5.0), payload: stun(&mut rng, true) });
        t += 2500.0;
    }
    v.push(keep);

    let mut bulk = bulk_tcp(32 << 20);
    let (s, c) = p.next();
    (bulk.server_port, bulk.client_port) = (s, c);
    v.push(bulk);

    // Video streaming over UDP: a segment of MTU-sized packets every
    // 2 s from the server, a small acknowledgement every fourth packet.
    let (s, c) = p.next();
    let mut stream = flow("video streaming", Transport::Udp, s, c);
    let mut t = 0.0;
    while ms(t) < total {
        for i in 0..600 {
            let at = t + f64::from(i) * 0.4;
            stream.down.push(Frame { at: ms(at), payload: random_bytes(&mut rng, 1350) });
            if i % 4 == 3 {
                stream.up.push(Frame { at: ms(at + 0.2), payload: random_bytes(&mut rng, 40) });
            }
        }
        t += 2000.0;
    }
    v.push(stream);

    // QUIC web browsing: a request, a burst of responses, a pause.
    let (s, c) = p.next();
    let mut quic = flow("quic web bursts", Transport::Udp, s, c);
    let mut t = 0.0;
    while ms(t) < total {
        quic.up.push(Frame { at: ms(t), payload: random_bytes(&mut rng, 1250) });
        let n = rng.random_range(5..60);
        for i in 0..n {
            let size = rng.random_range(100..1350);
            quic.down.push(Frame { at: ms(t + 15.0 + f64::from(i) * 0.3), payload: random_bytes(&mut rng, size) });
            if i % 2 == 1 {
                quic.up.push(Frame { at: ms(t + 15.2 + f64::from(i) * 0.3), payload: random_bytes(&mut rng, 45) });
            }
        }
        t += rng.random_range(300.0..2500.0);
    }
    quic.up.sort_by_key(|f| f.at);
    v.push(quic);

    // 100 packets/s of 1200 bytes, one way.
    let (s, c) = p.next();
    let mut udp = flow("udp 100 pps of 1200 B", Transport::Udp, s, c);
    for i in 0..secs * 100 {
        udp.up.push(Frame { at: ms(i as f64 * 10.0), payload: random_bytes(&mut rng, 1200) });
    }
    v.push(udp);
    Ports::new(0, DECOY_HOSTS).spread(&mut v);
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
