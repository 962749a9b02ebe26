//! Cheap checks on the first bytes of a transport payload: is this RTP,
//! RTCP, STUN, TURN ChannelData, DTLS, RTP behind a known media
//! encapsulation (RFC 4571 on TCP, Zoom's media header), or an IAX2 voice
//! frame? They read at most one fixed-size header at a fixed offset and
//! keep only header fields (SSRC, sequence, timestamp), never media content.
//!
//! On UDP the first byte splits the protocols that share a 5-tuple in
//! WebRTC and SIP media (RFC 7983 §7): 0–3 STUN, 20–63 DTLS, 64–79 TURN
//! ChannelData, 128–191 RTP/RTCP.

use crate::{
    flow::{PROTO_TCP, PROTO_UDP},
    parse::{Bytes, Packet},
};

/// Fields of an RTP fixed header (RFC 3550 §5.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rtp {
    pub ssrc: u32,
    pub seq: u16,
    pub ts: u32,
    /// Payload type, marker bit cleared.
    pub pt: u8,
}

/// An IAX2 voice frame (RFC 5456 §8.1): the sender's call number and the
/// low 16 bits of its timestamp (ms since the call started).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Iax2 {
    pub call: u16,
    pub ts: u16,
}

/// What a payload's first bytes look like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hint {
    None,
    Rtp(Rtp),
    /// RTP inside another framing: TURN ChannelData (RFC 8656 §12), an
    /// RFC 4571 length-prefixed TCP stream, or Zoom's media encapsulation.
    FramedRtp(Rtp),
    Rtcp,
    Stun,
    Dtls,
    Iax2(Iax2),
}

/// STUN magic cookie, RFC 8489 §5.
const STUN_COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];
const RTP_HLEN: u32 = 12;
const STUN_HLEN: u32 = 20;
const CHANNEL_HLEN: usize = 4;
const DTLS_HLEN: u32 = 13;
/// RFC 4571 §2: a 16-bit length precedes each RTP packet on a TCP stream.
const RFC4571_PREFIX: usize = 2;
/// IANA's port for IAX2 (RFC 5456 §1). IAX2's mini frame is only four
/// bytes of call number and timestamp, too generic to look for anywhere
/// else.
pub const IAX2_PORT: u16 = 4569;
/// IAX2 full-frame type of voice (RFC 5456 §8.2).
const IAX2_VOICE: u8 = 2;
/// An IAX2 full frame's header; mini frames are checked when at least
/// this long too (one load for both).
const IAX2_FULL_HLEN: u32 = 12;

/// Zoom's server-relayed media starts with an 8-byte "SFU" header whose
/// first byte is 5; its peer-to-peer media starts directly with the media
/// header. (Layout from public analyses of Zoom traffic: Princeton's
/// zoom-analysis, Citizen Lab 2020; nDPI decodes it the same way.)
const ZOOM_SFU_HLEN: usize = 8;
const ZOOM_SFU_MEDIA: u8 = 5;
/// Zoom media header types that carry RTP: 15 audio, 16 video.
const ZOOM_AUDIO: u8 = 15;
const ZOOM_VIDEO: u8 = 16;

/// Length of Zoom's media header of this type, i.e. where its RTP starts.
#[inline(always)]
fn zoom_media_hlen(media_type: u8) -> Option<usize> {
    match media_type {
        ZOOM_AUDIO => Some(19),
        ZOOM_VIDEO => Some(24),
        _ => None,
    }
}

/// RTP header check on 12 bytes of a payload `len` bytes long.
///
/// Version 2, a payload type outside the RTCP range (RFC 5761 §4: second
/// byte 192–223 is RTCP when multiplexed) and room for the CSRC list.
#[inline(always)]
pub fn rtp_header(h: &[u8; 12], len: u32) -> Option<Rtp> {
    if h[0] >> 6 != 2 || (192..=223).contains(&h[1]) {
        return None;
    }
    let csrc = u32::from(h[0] & 0x0f) * 4;
    if len < RTP_HLEN + csrc {
        return None;
    }
    Some(Rtp {
        pt: h[1] & 0x7f,
        seq: u16::from_be_bytes([h[2], h[3]]),
        ts: u32::from_be_bytes([h[4], h[5], h[6], h[7]]),
        ssrc: u32::from_be_bytes([h[8], h[9], h[10], h[11]]),
    })
}

/// RTCP: version 2, packet type 192–223 (SR 200, RR 201, SDES 202, BYE 203,
/// APP 204, feedback 205/206, XR 207), first packet's length fits.
#[inline(always)]
pub fn is_rtcp(h: &[u8; 12], len: u32) -> bool {
    let words = u32::from(u16::from_be_bytes([h[2], h[3]])) + 1;
    h[0] >> 6 == 2 && (192..=223).contains(&h[1]) && words * 4 <= len
}

/// STUN message: top two bits zero, magic cookie, length that fills the datagram.
#[inline(always)]
pub fn is_stun(h: &[u8; 12], len: u32) -> bool {
    let body = u32::from(u16::from_be_bytes([h[2], h[3]]));
    h[0] & 0xc0 == 0 && h[4..8] == STUN_COOKIE && body % 4 == 0 && body + STUN_HLEN == len
}

/// DTLS record header (RFC 9147 §4 / RFC 6347 §4.1): content type 20–25,
/// version 1.0 (0xfeff) or 1.2 (0xfefd), a record that fits.
#[inline(always)]
pub fn is_dtls(h: &[u8; 14], len: u32) -> bool {
    let rec = u32::from(u16::from_be_bytes([h[11], h[12]]));
    (20..=25).contains(&h[0]) && h[1] == 0xfe && (h[2] == 0xff || h[2] == 0xfd) && rec + DTLS_HLEN <= len
}

/// TURN ChannelData (RFC 8656 §12.4): channel 0x4000–0x4fff and a length
/// that, padded to four bytes, fills the datagram. Returns the data length.
#[inline(always)]
pub fn channel_data_len(h: &[u8; 4], len: u32) -> Option<u32> {
    let data = u32::from(u16::from_be_bytes([h[2], h[3]]));
    let framed = data + CHANNEL_HLEN as u32;
    ((0x40..=0x4f).contains(&h[0]) && framed <= len && len - framed < 4).then_some(data)
}

/// IAX2 voice on 12 payload bytes: a mini frame (F bit clear, a call
/// number — 0 starts a meta frame — and a 16-bit timestamp, then media) or
/// a full frame of type voice (F bit set, 32-bit timestamp).
#[inline(always)]
pub fn iax2_voice(h: &[u8; 12], len: u32) -> Option<Iax2> {
    let call = u16::from_be_bytes([h[0] & 0x7f, h[1]]);
    if h[0] & 0x80 == 0 {
        (call != 0 && len > 4).then_some(Iax2 { call, ts: u16::from_be_bytes([h[2], h[3]]) })
    } else {
        (h[10] == IAX2_VOICE).then_some(Iax2 { call, ts: u16::from_be_bytes([h[6], h[7]]) })
    }
}

/// Inspects the payload of `pkt`.
#[inline(always)]
pub fn inspect<B: Bytes + ?Sized>(b: &B, pkt: &Packet) -> Hint {
    let len = pkt.payload_len;
    let off = pkt.payload_off;
    match pkt.key.proto {
        PROTO_UDP if pkt.key.sport == IAX2_PORT || pkt.key.dport == IAX2_PORT => match b.load::<12>(off) {
            Some(h) if len >= IAX2_FULL_HLEN => iax2_voice(&h, len).map_or(Hint::None, Hint::Iax2),
            _ => Hint::None,
        },
        PROTO_UDP => inspect_udp(b, off, len),
        PROTO_TCP => inspect_tcp(b, off, len),
        _ => Hint::None,
    }
}

#[inline(always)]
fn inspect_udp<B: Bytes + ?Sized>(b: &B, off: usize, len: u32) -> Hint {
    if len < 4 {
        return Hint::None;
    }
    let Some(first) = b.load::<4>(off) else { return Hint::None };
    match first[0] {
        0..=3 if len >= STUN_HLEN => match b.load::<12>(off) {
            Some(h) if is_stun(&h, len) => Hint::Stun,
            _ => Hint::None,
        },
        20..=63 if len >= DTLS_HLEN => match b.load::<14>(off) {
            Some(h) if is_dtls(&h, len) => Hint::Dtls,
            _ => Hint::None,
        },
        ZOOM_SFU_MEDIA | ZOOM_AUDIO | ZOOM_VIDEO => zoom_rtp(b, off, len, first[0]),
        0x40..=0x4f => match channel_data_len(&first, len) {
            Some(data) => match b.load::<12>(off + CHANNEL_HLEN) {
                Some(h) => match rtp_header(&h, data) {
                    Some(rtp) => Hint::FramedRtp(rtp),
                    // TURN relaying something else (often STUN-negotiated media we cannot see).
                    None => Hint::Stun,
                },
                None => Hint::Stun,
            },
            None => Hint::None,
        },
        128..=191 if len >= RTP_HLEN => match b.load::<12>(off) {
            Some(h) => match rtp_header(&h, len) {
                Some(rtp) => Hint::Rtp(rtp),
                None if is_rtcp(&h, len) => Hint::Rtcp,
                None => Hint::None,
            },
            None => Hint::None,
        },
        _ => Hint::None,
    }
}

/// RTP behind Zoom's media header, which starts the payload (peer to
/// peer) or follows the SFU header (relayed). Anything else with these
/// first bytes is no hint at all: the RTP check and, in the controller,
/// five in-sequence packets keep chance matches out.
#[inline(always)]
fn zoom_rtp<B: Bytes + ?Sized>(b: &B, off: usize, len: u32, first: u8) -> Hint {
    let at = if first == ZOOM_SFU_MEDIA { ZOOM_SFU_HLEN } else { 0 };
    let Some([media_type]) = b.load::<1>(off + at) else { return Hint::None };
    let Some(hlen) = zoom_media_hlen(media_type) else { return Hint::None };
    let rtp_at = at + hlen;
    if len < (rtp_at as u32) + RTP_HLEN {
        return Hint::None;
    }
    match b.load::<12>(off + rtp_at).and_then(|h| rtp_header(&h, len - rtp_at as u32)) {
        Some(r) => Hint::FramedRtp(r),
        None => Hint::None,
    }
}

#[inline(always)]
fn inspect_tcp<B: Bytes + ?Sized>(b: &B, off: usize, len: u32) -> Hint {
    // Only a segment that starts with an RFC 4571 frame is checked: enough
    // for media sent one frame per segment, which is how real-time senders
    // with TCP_NODELAY write.
    if len < RTP_HLEN + RFC4571_PREFIX as u32 {
        return Hint::None;
    }
    let Some(h) = b.load::<14>(off) else { return Hint::None };
    let frame = u32::from(u16::from_be_bytes([h[0], h[1]]));
    if frame < RTP_HLEN || frame + RFC4571_PREFIX as u32 > len {
        return Hint::None;
    }
    let mut rtp = [0u8; 12];
    rtp.copy_from_slice(&h[RFC4571_PREFIX..]);
    match rtp_header(&rtp, frame) {
        Some(r) => Hint::FramedRtp(r),
        None => Hint::None,
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec::Vec;

    use super::*;
    use crate::flow::FlowKey;

    fn rtp(pt: u8, seq: u16, ts: u32, ssrc: u32, payload: usize) -> Vec<u8> {
        let mut v = Vec::from([0x80, pt]);
        v.extend_from_slice(&seq.to_be_bytes());
        v.extend_from_slice(&ts.to_be_bytes());
        v.extend_from_slice(&ssrc.to_be_bytes());
        v.resize(12 + payload, 0xd5);
        v
    }

    fn pkt(proto: u8, payload: &[u8]) -> Packet {
        Packet { key: FlowKey { proto, ..Default::default() }, payload_off: 0, payload_len: payload.len() as u32, l3_off: 0, tcp_flags: 0 }
    }

    fn udp(payload: &[u8]) -> Hint {
        inspect(payload, &pkt(PROTO_UDP, payload))
    }

    #[test]
    fn rtp_and_rtcp() {
        let p = rtp(0, 7, 160, 0xdead_beef, 160);
        assert_eq!(udp(&p), Hint::Rtp(Rtp { ssrc: 0xdead_beef, seq: 7, ts: 160, pt: 0 }));
        // RTCP receiver report: PT 201, length 1 word after the header.
        let rr = [0x81, 201, 0, 1, 0, 0, 0, 1, 0, 0, 0, 2];
        assert_eq!(udp(&rr), Hint::Rtcp);
        // Version 1 is not RTP.
        let mut v1 = p.clone();
        v1[0] = 0x40;
        assert_eq!(udp(&v1), Hint::None);
        // The CSRC list must fit.
        let mut cc = rtp(0, 1, 1, 1, 0);
        cc[0] = 0x8f;
        assert_eq!(udp(&cc), Hint::None);
    }

    #[test]
    fn stun_and_channel_data() {
        let mut stun = Vec::from([0x00, 0x01, 0x00, 0x08, 0x21, 0x12, 0xa4, 0x42]);
        stun.resize(28, 0);
        assert_eq!(udp(&stun), Hint::Stun);
        stun[4] = 0;
        assert_eq!(udp(&stun), Hint::None);
        let inner = rtp(111, 9, 960, 42, 60);
        let mut chan = Vec::from([0x40, 0x01]);
        chan.extend_from_slice(&(inner.len() as u16).to_be_bytes());
        chan.extend_from_slice(&inner);
        assert_eq!(udp(&chan), Hint::FramedRtp(Rtp { ssrc: 42, seq: 9, ts: 960, pt: 111 }));
    }

    #[test]
    fn dtls_record() {
        let mut d = Vec::from([22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4]);
        d.extend_from_slice(&[1, 2, 3, 4]);
        assert_eq!(udp(&d), Hint::Dtls);
        d[2] = 0x03;
        assert_eq!(udp(&d), Hint::None);
    }

    #[test]
    fn rtp_over_tcp_rfc4571() {
        let inner = rtp(0, 3, 240, 5, 240);
        let mut seg = (inner.len() as u16).to_be_bytes().to_vec();
        seg.extend_from_slice(&inner);
        assert_eq!(inspect(seg.as_slice(), &pkt(PROTO_TCP, &seg)), Hint::FramedRtp(Rtp { ssrc: 5, seq: 3, ts: 240, pt: 0 }));
        // Without the prefix a TCP segment is not checked for RTP.
        assert_eq!(inspect(inner.as_slice(), &pkt(PROTO_TCP, &inner)), Hint::None);
    }

    #[test]
    fn rtp_behind_zoom_media_header() {
        let inner = rtp(98, 11, 960, 77, 120);
        let want = Hint::FramedRtp(Rtp { ssrc: 77, seq: 11, ts: 960, pt: 98 });
        // Relayed by a server: SFU header (type 5), media header type 15 (19 bytes).
        let mut sfu = Vec::from([5, 0, 1, 0, 0, 0, 0, 0, ZOOM_AUDIO]);
        sfu.resize(8 + 19, 0);
        sfu.extend_from_slice(&inner);
        assert_eq!(udp(&sfu), want);
        // Video (24-byte media header), peer to peer: no SFU header.
        let mut p2p = Vec::from([ZOOM_VIDEO]);
        p2p.resize(24, 0);
        p2p.extend_from_slice(&inner);
        assert_eq!(udp(&p2p), want);
        // Another media type, or no RTP where it should start: nothing.
        sfu[8] = 13;
        assert_eq!(udp(&sfu), Hint::None);
        p2p[24] = 0x40;
        assert_eq!(udp(&p2p), Hint::None);
        // Too short to hold the RTP header.
        assert_eq!(udp(&p2p[..30]), Hint::None);
    }

    #[test]
    fn iax2_voice_frames_on_its_port() {
        let on_port = |payload: &[u8]| {
            let mut p = pkt(PROTO_UDP, payload);
            p.key.dport = IAX2_PORT;
            inspect(payload, &p)
        };
        // Mini frame: call 0x1234, timestamp 160 ms, 20 bytes of voice.
        let mut mini = Vec::from([0x12, 0x34, 0x00, 0xa0]);
        mini.resize(24, 0x55);
        assert_eq!(on_port(&mini), Hint::Iax2(Iax2 { call: 0x1234, ts: 160 }));
        // Elsewhere the same bytes are nothing.
        assert_eq!(udp(&mini), Hint::None);
        // Full frame of type voice: F bit, 32-bit timestamp 0x0001_0140.
        let full = [0x92, 0x34, 0x00, 0x07, 0x00, 0x01, 0x01, 0x40, 3, 3, IAX2_VOICE, 4, 0xff, 0xff];
        assert_eq!(on_port(&full), Hint::Iax2(Iax2 { call: 0x1234, ts: 0x0140 }));
        // A full control frame, and a meta frame (call 0), are not voice.
        let mut control = full;
        control[10] = 6;
        assert_eq!(on_port(&control), Hint::None);
        mini[0] = 0;
        mini[1] = 0;
        assert_eq!(on_port(&mini), Hint::None);
    }

    #[test]
    fn short_payloads_are_nothing() {
        assert_eq!(udp(&[0x80, 0, 0]), Hint::None);
        assert_eq!(udp(&[]), Hint::None);
    }
}
