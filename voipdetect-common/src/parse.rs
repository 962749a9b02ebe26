//! The one packet parser, shared by the XDP program and the capture replay.
//!
//! It reads through [`Bytes::load`], the single bounds-checked primitive:
//! the kernel implements it over `xdp_md` data pointers, userspace over a
//! byte slice. Accepted: Ethernet II with up to [`MAX_VLAN_TAGS`] 802.1Q /
//! 802.1ad tags; IPv4 with options (IHL honoured) and first fragments; IPv6
//! with up to [`MAX_IPV6_EXT`] extension headers (hop-by-hop, routing,
//! fragment, destination options, AH); TCP and UDP. Lengths come from the IP
//! and transport headers, never from the frame, so Ethernet padding and
//! capture snap lengths do not change what is counted. GTP-U (the mobile
//! core's user-plane tunnel) is opened once: the inner packet is the flow.
//! Everything else is an
//! `Err(Stat)` naming why the packet was not tracked; the caller passes it.

use crate::{
    flow::{FAMILY_V4, FAMILY_V6, FlowKey, PROTO_TCP, PROTO_UDP},
    stats::Stat,
};

/// VLAN tags walked before giving up ([`Stat::VlanTooDeep`]).
pub const MAX_VLAN_TAGS: usize = 2;
/// IPv6 extension headers walked before giving up ([`Stat::Ipv6ExtTooDeep`]).
pub const MAX_IPV6_EXT: usize = 4;

/// GTP-U's UDP port (3GPP TS 29.281 §4.4.2.3).
pub const GTPU_PORT: u16 = 2152;
/// GTP-U extension headers walked before giving up on the tunnel.
pub const MAX_GTP_EXT: usize = 2;

/// EtherTypes (IEEE 802 numbers).
pub const ETH_P_IPV4: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;

const ETH_HLEN: usize = 14;
const VLAN_HLEN: usize = 4;
const IPV4_MIN_HLEN: usize = 20;
const IPV6_HLEN: usize = 40;
const UDP_HLEN: usize = 8;
const TCP_MIN_HLEN: usize = 20;

/// IPv6 next-header values (IANA), RFC 8200 §4.
const IPV6_HOPOPTS: u8 = 0;
const IPV6_ROUTING: u8 = 43;
const IPV6_FRAGMENT: u8 = 44;
const IPV6_AH: u8 = 51;
const IPV6_DSTOPTS: u8 = 60;

/// Bounds-checked reads from a frame.
pub trait Bytes {
    /// The `N` bytes at `off`, or `None` when they run past the end.
    fn load<const N: usize>(&self, off: usize) -> Option<[u8; N]>;
}

impl Bytes for [u8] {
    #[inline]
    fn load<const N: usize>(&self, off: usize) -> Option<[u8; N]> {
        self.get(off..off.checked_add(N)?)?.try_into().ok()
    }
}

/// What the parser found in a frame it accepts. (`repr(C)`: the XDP
/// program hands it from its parser to the rest by pointer.)
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packet {
    pub key: FlowKey,
    /// Frame offset of the transport payload.
    pub payload_off: usize,
    /// Transport payload length according to the headers.
    pub payload_len: u32,
    /// Frame offset of the IP header, where mark mode rewrites the DSCP;
    /// 0 for a packet inside a tunnel (rewriting it would break the outer
    /// UDP checksum and the next hop queues by the outer header anyway).
    pub l3_off: u16,
    /// TCP flags byte (0 for UDP). With `l3_off`, a word: the struct has no
    /// padding, and the program copies it as words.
    pub tcp_flags: u16,
}

const _: () = assert!(size_of::<Packet>() == 56);

impl Packet {
    /// Nothing parsed yet.
    pub const EMPTY: Self = Self {
        key: FlowKey { src: [0; 16], dst: [0; 16], sport: 0, dport: 0, proto: 0, family: 0, _pad: [0; 2] },
        payload_off: 0,
        payload_len: 0,
        l3_off: 0,
        tcp_flags: 0,
    };
}

#[inline(always)]
fn be16(hi: u8, lo: u8) -> u16 {
    u16::from_be_bytes([hi, lo])
}

/// Network layer result: where the transport header starts, how long the
/// transport part is, and whether this is a first fragment (MF set).
struct L3 {
    l4_off: usize,
    l4_len: usize,
    proto: u8,
    first_fragment: bool,
}

/// Parses an Ethernet frame.
#[inline(always)]
pub fn parse_ethernet<B: Bytes + ?Sized>(b: &B) -> Result<Packet, Stat> {
    match parse_common(b) {
        Some(p) => Ok(p),
        None => parse_any(b),
    }
}

/// Where the common frames' fields are: Ethernet, then IPv4 without options.
const IP4: usize = ETH_HLEN;
const L4: usize = ETH_HLEN + IPV4_MIN_HLEN;

/// The frames nearly every packet of a gateway is: Ethernet without VLAN
/// tags, IPv4 without options, not a fragment, TCP or UDP but not GTP-U,
/// with the whole first 54 bytes present (a minimum-size Ethernet frame
/// has 60). Read with one bounds check and no loop: [`parse_any`] costs
/// the XDP program about four times as much. The answer is [`parse_any`]'s
/// whenever there is one (the tests compare them frame by frame); `None`
/// for anything else, invalid headers included, which then take the
/// general path and get its verdict.
#[inline(always)]
pub fn parse_common<B: Bytes + ?Sized>(b: &B) -> Option<Packet> {
    let h: [u8; L4 + TCP_MIN_HLEN] = b.load(0)?;
    // Version 4 with a 20-byte header; offset zero and no more fragments.
    if be16(h[12], h[13]) != ETH_P_IPV4 || h[IP4] != 0x45 || be16(h[IP4 + 6], h[IP4 + 7]) & 0x3fff != 0 {
        return None;
    }
    let l4_len = usize::from(be16(h[IP4 + 2], h[IP4 + 3])).checked_sub(IPV4_MIN_HLEN)?;
    let (sport, dport) = (be16(h[L4], h[L4 + 1]), be16(h[L4 + 2], h[L4 + 3]));
    let proto = h[IP4 + 9];
    let (payload_off, payload_len, tcp_flags) = match proto {
        PROTO_UDP if sport != GTPU_PORT && dport != GTPU_PORT => {
            let len = usize::from(be16(h[L4 + 4], h[L4 + 5]));
            if len < UDP_HLEN || len > l4_len {
                return None;
            }
            (L4 + UDP_HLEN, len - UDP_HLEN, 0)
        }
        PROTO_TCP => {
            let thl = usize::from(h[L4 + 12] >> 4) * 4;
            if thl < TCP_MIN_HLEN || thl > l4_len {
                return None;
            }
            (L4 + thl, l4_len - thl, u16::from(h[L4 + 13]))
        }
        _ => return None,
    };
    let mut key = FlowKey { sport, dport, proto, family: FAMILY_V4, ..FlowKey::default() };
    key.src[..4].copy_from_slice(&h[IP4 + 12..IP4 + 16]);
    key.dst[..4].copy_from_slice(&h[IP4 + 16..IP4 + 20]);
    Some(Packet { key, payload_off, payload_len: payload_len as u32, l3_off: IP4 as u16, tcp_flags })
}

/// Parses any frame the program accepts (see the module docs).
#[inline(always)]
pub fn parse_any<B: Bytes + ?Sized>(b: &B) -> Result<Packet, Stat> {
    let eth: [u8; ETH_HLEN] = b.load(0).ok_or(Stat::Truncated)?;
    let mut ethertype = be16(eth[12], eth[13]);
    let mut off = ETH_HLEN;
    for _ in 0..MAX_VLAN_TAGS {
        if ethertype != ETH_P_8021Q && ethertype != ETH_P_8021AD {
            break;
        }
        let tag: [u8; VLAN_HLEN] = b.load(off).ok_or(Stat::Truncated)?;
        ethertype = be16(tag[2], tag[3]);
        off += VLAN_HLEN;
    }
    if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
        return Err(Stat::VlanTooDeep);
    }
    parse_tunnelled(b, off, ethertype)
}

/// [`parse_ip`], then into a GTP-U tunnel if the packet is one.
#[inline(always)]
pub fn parse_tunnelled<B: Bytes + ?Sized>(b: &B, off: usize, ethertype: u16) -> Result<Packet, Stat> {
    // One call site of parse_ip in a two-round loop rather than two calls:
    // the XDP program's stack has room for only one copy of its locals.
    let (mut off, mut ethertype) = (off, ethertype);
    let mut tunnel = true;
    loop {
        let pkt = parse_ip(b, off, ethertype)?;
        match gtp_payload(b, &pkt) {
            Some((inner_off, inner_type)) if tunnel => {
                off = inner_off;
                ethertype = inner_type;
                tunnel = false;
            }
            // The inner packet of a tunnel is not marked (see `l3_off`).
            _ if !tunnel => return Ok(Packet { l3_off: 0, ..pkt }),
            _ => return Ok(pkt),
        }
    }
}

/// Where the inner IP packet of a GTP-U G-PDU starts, and its EtherType.
/// `None` when `outer` is not one (then the outer flow is tracked).
#[inline(always)]
fn gtp_payload<B: Bytes + ?Sized>(b: &B, outer: &Packet) -> Option<(usize, u16)> {
    let k = &outer.key;
    if k.proto != PROTO_UDP || (k.sport != GTPU_PORT && k.dport != GTPU_PORT) {
        return None;
    }
    // TS 29.281 §5.1: version 1, protocol type GTP (0x30), message G-PDU (255).
    let h: [u8; 8] = b.load(outer.payload_off)?;
    if h[0] & 0xf0 != 0x30 || h[1] != 0xff {
        return None;
    }
    let mut off = outer.payload_off + 8;
    if h[0] & 0x07 != 0 {
        // Sequence number, N-PDU number and next extension type follow.
        let opt: [u8; 4] = b.load(off)?;
        off += 4;
        let mut next = if h[0] & 0x04 != 0 { opt[3] } else { 0 };
        for _ in 0..MAX_GTP_EXT {
            if next == 0 {
                break;
            }
            // §5.2: length in 4-octet units; the last octet names the next type.
            let len: [u8; 1] = b.load(off)?;
            let len = usize::from(len[0]) * 4;
            if len == 0 {
                return None;
            }
            let last: [u8; 1] = b.load(off + len - 1)?;
            next = last[0];
            off += len;
        }
        if next != 0 {
            return None;
        }
    }
    let v: [u8; 1] = b.load(off)?;
    match v[0] >> 4 {
        4 => Some((off, ETH_P_IPV4)),
        6 => Some((off, ETH_P_IPV6)),
        _ => None,
    }
}

/// Parses an IP packet starting at `off`, its version given by `ethertype`.
#[inline(always)]
pub fn parse_ip<B: Bytes + ?Sized>(b: &B, off: usize, ethertype: u16) -> Result<Packet, Stat> {
    let mut key = FlowKey::default();
    let l3 = match ethertype {
        ETH_P_IPV4 => parse_ipv4(b, off, &mut key)?,
        ETH_P_IPV6 => parse_ipv6(b, off, &mut key)?,
        _ => return Err(Stat::NotIp),
    };
    // Frames are far shorter than 64 KiB: the offset fits.
    parse_l4(b, l3, key).map(|p| Packet { l3_off: off as u16, ..p })
}

#[inline(always)]
fn parse_ipv4<B: Bytes + ?Sized>(b: &B, off: usize, key: &mut FlowKey) -> Result<L3, Stat> {
    // RFC 791 §3.1.
    let h: [u8; IPV4_MIN_HLEN] = b.load(off).ok_or(Stat::Truncated)?;
    if h[0] >> 4 != 4 {
        return Err(Stat::Malformed);
    }
    let hlen = usize::from(h[0] & 0x0f) * 4;
    if hlen < IPV4_MIN_HLEN {
        return Err(Stat::Malformed);
    }
    let total = usize::from(be16(h[2], h[3]));
    if total < hlen {
        return Err(Stat::Malformed);
    }
    let frag = be16(h[6], h[7]);
    if frag & 0x1fff != 0 {
        return Err(Stat::Fragment);
    }
    key.family = FAMILY_V4;
    key.src[..4].copy_from_slice(&h[12..16]);
    key.dst[..4].copy_from_slice(&h[16..20]);
    Ok(L3 { l4_off: off + hlen, l4_len: total - hlen, proto: h[9], first_fragment: frag & 0x2000 != 0 })
}

#[inline(always)]
fn parse_ipv6<B: Bytes + ?Sized>(b: &B, off: usize, key: &mut FlowKey) -> Result<L3, Stat> {
    // RFC 8200 §3.
    let h: [u8; 8] = b.load(off).ok_or(Stat::Truncated)?;
    if h[0] >> 4 != 6 {
        return Err(Stat::Malformed);
    }
    key.src = b.load(off + 8).ok_or(Stat::Truncated)?;
    key.dst = b.load(off + 24).ok_or(Stat::Truncated)?;
    key.family = FAMILY_V6;
    let mut len = usize::from(be16(h[4], h[5]));
    let mut next = h[6];
    let mut off = off + IPV6_HLEN;
    let mut first_fragment = false;
    for _ in 0..MAX_IPV6_EXT {
        let ext_len = match next {
            IPV6_HOPOPTS | IPV6_ROUTING | IPV6_DSTOPTS => {
                let e: [u8; 2] = b.load(off).ok_or(Stat::Truncated)?;
                next = e[0];
                (usize::from(e[1]) + 1) * 8
            }
            IPV6_FRAGMENT => {
                // RFC 8200 §4.5: offset in 8-octet units in the top 13 bits, M in bit 0.
                let e: [u8; 4] = b.load(off).ok_or(Stat::Truncated)?;
                let field = be16(e[2], e[3]);
                if field & 0xfff8 != 0 {
                    return Err(Stat::Fragment);
                }
                first_fragment = field & 1 != 0;
                next = e[0];
                8
            }
            IPV6_AH => {
                // RFC 4302 §2.2: length in 4-octet units, minus 2.
                let e: [u8; 2] = b.load(off).ok_or(Stat::Truncated)?;
                next = e[0];
                (usize::from(e[1]) + 2) * 4
            }
            _ => return Ok(L3 { l4_off: off, l4_len: len, proto: next, first_fragment }),
        };
        if ext_len > len {
            return Err(Stat::Malformed);
        }
        len -= ext_len;
        off += ext_len;
    }
    match next {
        IPV6_HOPOPTS | IPV6_ROUTING | IPV6_FRAGMENT | IPV6_AH | IPV6_DSTOPTS => Err(Stat::Ipv6ExtTooDeep),
        _ => Ok(L3 { l4_off: off, l4_len: len, proto: next, first_fragment }),
    }
}

#[inline(always)]
fn parse_l4<B: Bytes + ?Sized>(b: &B, l3: L3, mut key: FlowKey) -> Result<Packet, Stat> {
    let L3 { l4_off, l4_len, proto, first_fragment } = l3;
    key.proto = proto;
    match proto {
        PROTO_UDP => {
            // RFC 768.
            let u: [u8; UDP_HLEN] = b.load(l4_off).ok_or(Stat::Truncated)?;
            key.sport = be16(u[0], u[1]);
            key.dport = be16(u[2], u[3]);
            let ulen = usize::from(be16(u[4], u[5]));
            // A first fragment carries only part of the datagram the UDP
            // length describes: count what this packet carries.
            let len = if first_fragment { l4_len } else { ulen };
            if len < UDP_HLEN || len > l4_len {
                return Err(Stat::Malformed);
            }
            Ok(Packet { key, payload_off: l4_off + UDP_HLEN, payload_len: (len - UDP_HLEN) as u32, l3_off: 0, tcp_flags: 0 })
        }
        PROTO_TCP => {
            // RFC 9293 §3.1.
            let t: [u8; TCP_MIN_HLEN] = b.load(l4_off).ok_or(Stat::Truncated)?;
            key.sport = be16(t[0], t[1]);
            key.dport = be16(t[2], t[3]);
            let thl = usize::from(t[12] >> 4) * 4;
            if thl < TCP_MIN_HLEN || thl > l4_len {
                return Err(Stat::Malformed);
            }
            Ok(Packet { key, payload_off: l4_off + thl, payload_len: (l4_len - thl) as u32, l3_off: 0, tcp_flags: u16::from(t[13]) })
        }
        _ => Err(Stat::OtherL4),
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::{vec, vec::Vec};

    use etherparse::{IpNumber, Ipv4Header, Ipv4Options, PacketBuilder};

    use super::*;

    const A4: [u8; 4] = [192, 0, 2, 2];
    const B4: [u8; 4] = [198, 51, 100, 2];
    const A6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
    const B6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

    fn udp4(payload: &[u8]) -> Vec<u8> {
        let b = PacketBuilder::ethernet2([2; 6], [4; 6]).ipv4(A4, B4, 64).udp(40000, 5004);
        let mut v = Vec::new();
        b.write(&mut v, payload).unwrap();
        v
    }

    /// The parse, with the fast path checked against the general one on
    /// every frame a test parses.
    fn parse(f: &[u8]) -> Result<Packet, Stat> {
        if let Some(p) = parse_common(f) {
            assert_eq!(Ok(p), parse_any(f), "the common-frame path disagrees on {f:02x?}");
        }
        parse_ethernet(f)
    }

    #[test]
    fn common_frames_take_the_fast_path_and_agree_with_the_general_one() {
        let (udp, tcp) = (udp4(&[0x80; 160]), tcp4(&[7; 100], None));
        assert!(parse_common(udp.as_slice()).is_some());
        assert!(parse_common(tcp.as_slice()).is_some());
        // Every header byte of both, changed to a handful of values (the
        // fields' edges), alone and in pairs: wherever the fast path answers,
        // it answers what the general one does.
        let values = [0x00, 0x01, 0x05, 0x06, 0x08, 0x11, 0x14, 0x20, 0x3f, 0x40, 0x45, 0x46, 0x50, 0x86, 0xdd, 0xff];
        let mut answered = 0;
        for base in [&udp, &tcp] {
            for i in 12..L4 + TCP_MIN_HLEN {
                for &v in &values {
                    let mut f = base.clone();
                    f[i] = v;
                    answered += usize::from(parse(&f).is_ok() && parse_common(f.as_slice()).is_some());
                    for j in (i + 1..L4 + TCP_MIN_HLEN).step_by(5) {
                        let mut g = f.clone();
                        g[j] = values[(i + j) % values.len()];
                        let _ = parse(&g);
                    }
                }
            }
            // Short frames: the fast path needs 54 bytes, the general one less.
            for n in 0..base.len().min(80) {
                let _ = parse(&base[..n]);
            }
        }
        assert!(answered > 500, "{answered}");
    }

    #[test]
    fn gtp_u_tunnel_is_opened() {
        let inner = udp4(&[5; 40]);
        let inner_ip = &inner[14..];
        let mut gtp = vec![0x32, 0xff];
        gtp.extend_from_slice(&((inner_ip.len() + 4) as u16).to_be_bytes());
        gtp.extend_from_slice(&[0, 0, 0, 1, 0, 7, 0, 0]);
        gtp.extend_from_slice(inner_ip);
        let mut f = Vec::new();
        PacketBuilder::ethernet2([2; 6], [4; 6])
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .udp(GTPU_PORT, GTPU_PORT)
            .write(&mut f, &gtp)
            .unwrap();
        let p = parse(&f).unwrap();
        assert_eq!((&p.key.src[..4], p.key.dport, p.payload_len), (&A4[..], 5004, 40));
        // Not a G-PDU: the outer flow is what is tracked.
        let off = 14 + 20 + 8 + 1;
        f[off] = 0x01;
        assert_eq!(parse(&f).unwrap().key.dport, GTPU_PORT);
    }

    #[test]
    fn ipv4_udp() {
        let f = udp4(&[7; 172]);
        let p = parse(&f).unwrap();
        assert_eq!(p.key.family, FAMILY_V4);
        assert_eq!(p.key.proto, PROTO_UDP);
        assert_eq!(&p.key.src[..4], &A4);
        assert_eq!(&p.key.dst[..4], &B4);
        assert_eq!(p.key.src[4..], [0; 12]);
        assert_eq!((p.key.sport, p.key.dport), (40000, 5004));
        assert_eq!(p.payload_len, 172);
        assert_eq!(p.payload_off, 14 + 20 + 8);
    }

    #[test]
    fn ethernet_padding_does_not_count_as_payload() {
        let mut f = udp4(&[1, 2]);
        f.resize(60, 0);
        assert_eq!(parse(&f).unwrap().payload_len, 2);
    }

    #[test]
    fn ipv4_options_move_the_transport_header() {
        let mut h = Ipv4Header::new(0, 64, IpNumber::UDP, A4, B4).unwrap();
        h.options = Ipv4Options::try_from(&[1u8, 1, 1, 1, 1, 1, 1, 1][..]).unwrap();
        let mut f = Vec::new();
        PacketBuilder::ethernet2([2; 6], [4; 6])
            .ip(etherparse::IpHeaders::Ipv4(h, Default::default()))
            .udp(1, 2)
            .write(&mut f, &[9; 10])
            .unwrap();
        let p = parse(&f).unwrap();
        assert_eq!(p.payload_off, 14 + 28 + 8);
        assert_eq!(p.payload_len, 10);
    }

    #[test]
    fn impossible_ihl_is_malformed() {
        let mut f = udp4(&[0; 8]);
        f[14] = 0x44;
        assert_eq!(parse(&f), Err(Stat::Malformed));
    }

    #[test]
    fn every_truncation_is_truncated() {
        let f = udp4(&[0; 8]);
        for len in 0..14 + 20 + 8 {
            assert_eq!(parse(&f[..len]), Err(Stat::Truncated), "len {len}");
        }
    }

    #[test]
    fn vlan_tags_up_to_two() {
        let mut f = Vec::new();
        PacketBuilder::ethernet2([2; 6], [4; 6])
            .double_vlan(10u16.try_into().unwrap(), 20u16.try_into().unwrap())
            .ipv4(A4, B4, 64)
            .udp(1, 2)
            .write(&mut f, &[0; 4])
            .unwrap();
        assert_eq!(parse(&f).unwrap().payload_off, 14 + 8 + 20 + 8);
        f.splice(12..12, [0x81, 0x00, 0x00, 0x05]);
        assert_eq!(parse(&f), Err(Stat::VlanTooDeep));
    }

    #[test]
    fn not_ip_and_other_transports() {
        let mut f = udp4(&[0; 8]);
        f[12] = 0x08;
        f[13] = 0x06;
        assert_eq!(parse(&f), Err(Stat::NotIp));
        let mut f = udp4(&[0; 8]);
        f[14 + 9] = 1;
        assert_eq!(parse(&f), Err(Stat::OtherL4));
    }

    #[test]
    fn ipv4_fragments() {
        let mut f = udp4(&[0; 8]);
        f[14 + 6] = 0x00;
        f[14 + 7] = 0x10; // offset 16 units
        assert_eq!(parse(&f), Err(Stat::Fragment));
        // A first fragment (MF, offset 0) carries ports; its UDP length
        // describes the whole datagram.
        let mut f = udp4(&[0; 8]);
        f[14 + 6] = 0x20;
        f[14 + 20 + 4] = 0x05;
        let p = parse(&f).unwrap();
        assert_eq!(p.payload_len, 8);
    }

    #[test]
    fn udp_length_must_fit() {
        let mut f = udp4(&[0; 8]);
        f[14 + 20 + 4] = 0;
        f[14 + 20 + 5] = 7;
        assert_eq!(parse(&f), Err(Stat::Malformed));
        let mut f = udp4(&[0; 8]);
        f[14 + 20 + 5] = 200;
        assert_eq!(parse(&f), Err(Stat::Malformed));
    }

    fn tcp4(payload: &[u8], doff: Option<u8>) -> Vec<u8> {
        let mut f = Vec::new();
        PacketBuilder::ethernet2([2; 6], [4; 6]).ipv4(A4, B4, 64).tcp(40000, 1935, 1, 1000).ack(5).write(&mut f, payload).unwrap();
        if let Some(d) = doff {
            f[14 + 20 + 12] = d << 4;
        }
        f
    }

    #[test]
    fn tcp_payload_and_pure_ack() {
        let p = parse(&tcp4(&[3; 110], None)).unwrap();
        assert_eq!((p.key.proto, p.payload_len, p.payload_off), (PROTO_TCP, 110, 14 + 20 + 20));
        assert_eq!(p.tcp_flags & 0x10, 0x10);
        assert_eq!(parse(&tcp4(&[], None)).unwrap().payload_len, 0);
    }

    #[test]
    fn tcp_data_offset_out_of_range() {
        assert_eq!(parse(&tcp4(&[0; 10], Some(4))), Err(Stat::Malformed));
        assert_eq!(parse(&tcp4(&[0; 10], Some(15))), Err(Stat::Malformed));
    }

    fn udp6(ext: &[(u8, Vec<u8>)], payload: &[u8]) -> Vec<u8> {
        // Hand-assembled so extension headers can be chained freely.
        let mut l4 = vec![0u8; 8];
        l4[0..2].copy_from_slice(&40000u16.to_be_bytes());
        l4[2..4].copy_from_slice(&5004u16.to_be_bytes());
        l4[4..6].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        l4.extend_from_slice(payload);
        let mut exts = Vec::new();
        let mut first = PROTO_UDP;
        for (kind, body) in ext.iter().rev() {
            let mut h = vec![first];
            h.extend_from_slice(body);
            h.extend_from_slice(&exts);
            exts = h;
            first = *kind;
        }
        let mut f = vec![4u8; 6];
        f.extend_from_slice(&[2; 6]);
        f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
        f.extend_from_slice(&((exts.len() + l4.len()) as u16).to_be_bytes());
        f.extend_from_slice(&[first, 64]);
        f.extend_from_slice(&A6);
        f.extend_from_slice(&B6);
        f.extend_from_slice(&exts);
        f.extend_from_slice(&l4);
        f
    }

    /// An 8-byte hop-by-hop/destination-options body after the next-header byte.
    fn opts8() -> Vec<u8> {
        vec![0, 1, 4, 0, 0, 0, 0]
    }

    fn frag(offset_units: u16, more: bool) -> Vec<u8> {
        let field = (offset_units << 3) | u16::from(more);
        let mut v = vec![0];
        v.extend_from_slice(&field.to_be_bytes());
        v.extend_from_slice(&[0, 0, 0, 7]);
        v
    }

    #[test]
    fn ipv6_with_extension_headers() {
        let p = parse(&udp6(&[], &[1; 20])).unwrap();
        assert_eq!((p.key.family, p.key.src, p.key.dst, p.payload_len), (FAMILY_V6, A6, B6, 20));
        let p = parse(&udp6(&[(0, opts8()), (60, opts8())], &[1; 20])).unwrap();
        assert_eq!(p.payload_off, 14 + 40 + 16 + 8);
        assert_eq!(p.payload_len, 20);
    }

    #[test]
    fn ipv6_fragments() {
        assert_eq!(parse(&udp6(&[(44, frag(3, false))], &[1; 20])), Err(Stat::Fragment));
        let p = parse(&udp6(&[(44, frag(0, true))], &[1; 20])).unwrap();
        assert_eq!(p.payload_len, 20);
    }

    #[test]
    fn ipv6_extension_chain_too_long() {
        let chain: Vec<_> = (0..MAX_IPV6_EXT + 1).map(|_| (60, opts8())).collect();
        assert_eq!(parse(&udp6(&chain, &[1; 4])), Err(Stat::Ipv6ExtTooDeep));
        let chain: Vec<_> = (0..MAX_IPV6_EXT).map(|_| (60, opts8())).collect();
        assert!(parse(&udp6(&chain, &[1; 4])).is_ok());
    }

    #[test]
    fn ipv6_extension_longer_than_payload() {
        let mut big = opts8();
        big[0] = 200;
        assert_eq!(parse(&udp6(&[(0, big)], &[1; 4])), Err(Stat::Malformed));
    }
}
