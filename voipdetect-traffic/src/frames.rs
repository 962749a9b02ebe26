//! Ethernet frames built with etherparse, for the fixture tests, the
//! benchmarks and captures synthesised from the generator's flows.

use std::net::{IpAddr, SocketAddr};

use etherparse::{
    DoubleVlanHeader, EtherType, IpFragOffset, IpHeaders, IpNumber, Ipv4Extensions, Ipv4Header, Ipv4Options, Ipv6Extensions,
    Ipv6FragmentHeader, Ipv6Header, Ipv6RawExtHeader, PacketBuilder, SingleVlanHeader, VlanHeader, VlanId,
};

use crate::Transport;

pub const SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x0a, 0x01];
pub const DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x0a, 0x02];

/// TCP header fields a frame carries.
#[derive(Clone, Copy, Debug, Default)]
pub struct TcpFields {
    pub seq: u32,
    pub ack: u32,
    pub syn: bool,
    pub fin: bool,
    pub psh: bool,
}

/// What to build.
#[derive(Clone, Debug)]
pub struct FrameSpec {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub transport: Transport,
    pub tcp: TcpFields,
    /// 802.1Q tags, outermost first (at most two; see [`add_vlan_tag`] for more).
    pub vlans: Vec<u16>,
    /// IPv4 options (a multiple of 4 bytes, at most 40).
    pub ipv4_options: Vec<u8>,
    /// IPv6 hop-by-hop and destination-options headers.
    pub ipv6_hop_by_hop: bool,
    pub ipv6_dest_opts: bool,
    /// Fragment: offset in 8-byte units, more-fragments flag.
    pub fragment: Option<(u16, bool)>,
}

impl FrameSpec {
    pub fn new(transport: Transport, src: SocketAddr, dst: SocketAddr) -> Self {
        Self {
            src,
            dst,
            transport,
            tcp: TcpFields { ack: 1, ..Default::default() },
            vlans: Vec::new(),
            ipv4_options: Vec::new(),
            ipv6_hop_by_hop: false,
            ipv6_dest_opts: false,
            fragment: None,
        }
    }

    pub fn udp(src: SocketAddr, dst: SocketAddr) -> Self {
        Self::new(Transport::Udp, src, dst)
    }

    pub fn tcp(src: SocketAddr, dst: SocketAddr) -> Self {
        Self::new(Transport::Tcp, src, dst)
    }

    fn ip(&self) -> IpHeaders {
        let proto = match self.transport {
            Transport::Udp => IpNumber::UDP,
            Transport::Tcp => IpNumber::TCP,
        };
        match (self.src.ip(), self.dst.ip()) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let mut h = Ipv4Header::new(0, 64, proto, s.octets(), d.octets()).expect("valid header");
                h.options = Ipv4Options::try_from(self.ipv4_options.as_slice()).expect("options of 4n ≤ 40 bytes");
                if let Some((off, more)) = self.fragment {
                    h.fragment_offset = IpFragOffset::try_new(off).expect("13-bit offset");
                    h.more_fragments = more;
                }
                IpHeaders::Ipv4(h, Ipv4Extensions::default())
            }
            (s, d) => {
                let v6 = |a: IpAddr| match a {
                    IpAddr::V6(a) => a.octets(),
                    IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
                };
                let h = Ipv6Header {
                    traffic_class: 0,
                    flow_label: Default::default(),
                    payload_length: 0,
                    next_header: proto,
                    hop_limit: 64,
                    source: v6(s),
                    destination: v6(d),
                };
                let opts = || Ipv6RawExtHeader::new_raw(proto, &[1, 4, 0, 0, 0, 0]).expect("6-byte PadN option");
                let ext = Ipv6Extensions {
                    hop_by_hop_options: self.ipv6_hop_by_hop.then(opts),
                    destination_options: self.ipv6_dest_opts.then(opts),
                    fragment: self
                        .fragment
                        .map(|(off, more)| Ipv6FragmentHeader::new(proto, IpFragOffset::try_new(off).expect("13-bit offset"), more, 7)),
                    ..Default::default()
                };
                IpHeaders::Ipv6(h, ext)
            }
        }
    }

    /// Serialises the frame around `payload`.
    pub fn build(&self, payload: &[u8]) -> Vec<u8> {
        let eth = PacketBuilder::ethernet2(SRC_MAC, DST_MAC);
        let vid = |v: u16| VlanId::try_new(v).expect("12-bit VLAN id");
        let ip = match self.vlans.as_slice() {
            [] => eth.ip(self.ip()),
            [a] => eth.vlan(VlanHeader::Single(SingleVlanHeader { vlan_id: vid(*a), ..Default::default() })).ip(self.ip()),
            [a, b, ..] => eth
                .vlan(VlanHeader::Double(DoubleVlanHeader {
                    outer: SingleVlanHeader { vlan_id: vid(*a), ether_type: EtherType::VLAN_TAGGED_FRAME, ..Default::default() },
                    inner: SingleVlanHeader { vlan_id: vid(*b), ..Default::default() },
                }))
                .ip(self.ip()),
        };
        let mut out = Vec::new();
        match self.transport {
            Transport::Udp => {
                let b = ip.udp(self.src.port(), self.dst.port());
                out.reserve(b.size(payload.len()));
                b.write(&mut out, payload).expect("serialising udp");
            }
            Transport::Tcp => {
                let t = &self.tcp;
                let mut b = ip.tcp(self.src.port(), self.dst.port(), t.seq, 65535);
                if t.ack != 0 {
                    b = b.ack(t.ack);
                }
                if t.syn {
                    b = b.syn();
                }
                if t.fin {
                    b = b.fin();
                }
                if t.psh {
                    b = b.psh();
                }
                out.reserve(b.size(payload.len()));
                b.write(&mut out, payload).expect("serialising tcp");
            }
        }
        for _ in 2..self.vlans.len() {
            add_vlan_tag(&mut out, 99);
        }
        out
    }
}

/// Pushes one more 802.1Q tag in front of the frame's current EtherType.
pub fn add_vlan_tag(frame: &mut Vec<u8>, vid: u16) {
    let tag = [0x81, 0x00, (vid >> 8) as u8 & 0x0f, vid as u8];
    frame.splice(12..12, tag);
}
