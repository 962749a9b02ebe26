//! Reading captures: classic pcap and pcapng (told apart by the magic
//! number, not the file name), with the link types a gateway or a laptop
//! produces. Frames are handed to the one packet parser in
//! `voipdetect_common::parse` after the link-layer header is removed.
//!
//! Errors carry the byte offset of the record that failed; records before
//! it have already been delivered, so a capture cut short by a crash still
//! yields what it holds.

use std::path::Path;

use anyhow::Context as _;
use pcap_file::{
    DataLink, PcapError,
    pcap::PcapParser,
    pcapng::{Block, PcapNgParser, blocks::interface_description::InterfaceDescriptionOption},
};
use voipdetect_common::{
    Stat,
    parse::{Bytes, ETH_P_IPV4, ETH_P_IPV6, Packet, parse_ethernet, parse_ip},
};

/// Link-layer framings we can strip.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    Ethernet,
    /// Linux cooked capture v1 (16-byte header).
    LinuxSll,
    /// Linux cooked capture v2 (20-byte header).
    LinuxSll2,
    /// Bare IPv4 or IPv6, version in the first nibble.
    RawIp,
    /// BSD loopback: 4-byte address family, host byte order (NULL) or
    /// network byte order (LOOP).
    Null,
    Loop,
    /// Anything else: every frame counts as not IP.
    Other(u32),
}

impl From<DataLink> for Link {
    fn from(d: DataLink) -> Self {
        match d {
            DataLink::ETHERNET => Link::Ethernet,
            DataLink::LINUX_SLL => Link::LinuxSll,
            DataLink::LINUX_SLL2 => Link::LinuxSll2,
            DataLink::RAW | DataLink::IPV4 | DataLink::IPV6 => Link::RawIp,
            DataLink::NULL => Link::Null,
            DataLink::LOOP => Link::Loop,
            other => Link::Other(u32::from(other)),
        }
    }
}

/// Parses one frame of link type `link`.
pub fn parse_frame(link: Link, frame: &[u8]) -> Result<Packet, Stat> {
    match link {
        Link::Ethernet => parse_ethernet(frame),
        Link::LinuxSll => {
            let h: [u8; 16] = frame.load(0).ok_or(Stat::Truncated)?;
            parse_ip(frame, 16, u16::from_be_bytes([h[14], h[15]]))
        }
        Link::LinuxSll2 => {
            let h: [u8; 20] = frame.load(0).ok_or(Stat::Truncated)?;
            parse_ip(frame, 20, u16::from_be_bytes([h[0], h[1]]))
        }
        Link::RawIp => {
            let v: [u8; 1] = frame.load(0).ok_or(Stat::Truncated)?;
            parse_ip(frame, 0, version_ethertype(v[0] >> 4)?)
        }
        Link::Null | Link::Loop => {
            let h: [u8; 4] = frame.load(0).ok_or(Stat::Truncated)?;
            let family = if link == Link::Null { u32::from_ne_bytes(h) } else { u32::from_be_bytes(h) };
            // AF_INET is 2 everywhere; AF_INET6 is 10 (Linux), 24, 28 or 30 (BSDs, macOS).
            let ethertype = match family {
                2 => ETH_P_IPV4,
                10 | 24 | 28 | 30 => ETH_P_IPV6,
                _ => return Err(Stat::NotIp),
            };
            parse_ip(frame, 4, ethertype)
        }
        Link::Other(_) => Err(Stat::NotIp),
    }
}

fn version_ethertype(version: u8) -> Result<u16, Stat> {
    match version {
        4 => Ok(ETH_P_IPV4),
        6 => Ok(ETH_P_IPV6),
        _ => Err(Stat::NotIp),
    }
}

/// One captured frame.
#[derive(Clone, Copy, Debug)]
pub struct Record<'a> {
    /// Capture time, ns since the Unix epoch.
    pub ts_ns: u64,
    pub link: Link,
    pub data: &'a [u8],
    /// Byte offset of the record in the file.
    pub offset: usize,
}

/// A capture that could not be read past `offset`.
#[derive(Debug, thiserror::Error)]
#[error("{what} at offset {offset}")]
pub struct ReadError {
    pub offset: usize,
    pub what: String,
}

const PCAP_MAGICS: [[u8; 4]; 4] = [[0xd4, 0xc3, 0xb2, 0xa1], [0xa1, 0xb2, 0xc3, 0xd4], [0x4d, 0x3c, 0xb2, 0xa1], [0xa1, 0xb2, 0x3c, 0x4d]];
const PCAPNG_MAGIC: [u8; 4] = [0x0a, 0x0d, 0x0d, 0x0a];

fn describe(e: &PcapError) -> String {
    match e {
        PcapError::IncompleteBuffer => "truncated record".into(),
        other => format!("malformed record ({other})"),
    }
}

/// Reads a whole file into memory.
pub fn load(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))
}

/// Calls `f` for every frame of the capture in `bytes`.
pub fn for_each_record(bytes: &[u8], mut f: impl FnMut(Record<'_>)) -> Result<(), ReadError> {
    let magic: [u8; 4] = bytes.load(0).ok_or(ReadError { offset: 0, what: "file too short for a capture header".into() })?;
    if magic == PCAPNG_MAGIC {
        pcapng(bytes, &mut f)
    } else if PCAP_MAGICS.contains(&magic) {
        pcap(bytes, &mut f)
    } else {
        Err(ReadError { offset: 0, what: format!("not a pcap or pcapng file (magic {magic:02x?})") })
    }
}

fn pcap(bytes: &[u8], f: &mut impl FnMut(Record<'_>)) -> Result<(), ReadError> {
    let (mut rest, parser) = PcapParser::new(bytes).map_err(|e| ReadError { offset: 0, what: format!("pcap header: {}", describe(&e)) })?;
    let link = Link::from(parser.header().datalink);
    while !rest.is_empty() {
        let offset = bytes.len() - rest.len();
        let (next, pkt) = parser.next_packet(rest).map_err(|e| ReadError { offset, what: describe(&e) })?;
        f(Record { ts_ns: pkt.timestamp.as_nanos() as u64, link, data: &pkt.data, offset });
        rest = next;
    }
    Ok(())
}

/// Per-interface link type and timestamp scale (pcapng stores raw ticks).
struct Iface {
    link: Link,
    /// Multiply raw ticks by `num` and divide by `den` for ns.
    num: u128,
    den: u128,
}

fn iface_of(link: DataLink, opts: &[InterfaceDescriptionOption<'_>]) -> Iface {
    // pcapng §4.2 if_tsresol: MSB clear, 10^-n s; MSB set, 2^-n s. Default 10^-6.
    let resol = opts.iter().find_map(|o| if let InterfaceDescriptionOption::IfTsResol(r) = o { Some(*r) } else { None }).unwrap_or(6);
    let (num, den) = if resol & 0x80 == 0 {
        let n = u32::from(resol.min(19));
        if n <= 9 { (10u128.pow(9 - n), 1) } else { (1, 10u128.pow(n - 9)) }
    } else {
        (1_000_000_000, 1u128 << u32::from((resol & 0x7f).min(100)))
    };
    Iface { link: Link::from(link), num, den }
}

fn pcapng(bytes: &[u8], f: &mut impl FnMut(Record<'_>)) -> Result<(), ReadError> {
    let (mut rest, mut parser) =
        PcapNgParser::new(bytes).map_err(|e| ReadError { offset: 0, what: format!("pcapng section header: {}", describe(&e)) })?;
    let mut ifaces: Vec<Iface> = Vec::new();
    let mut last_ts = 0u64;
    while !rest.is_empty() {
        let offset = bytes.len() - rest.len();
        let (next, block) = parser.next_block(rest).map_err(|e| ReadError { offset, what: describe(&e) })?;
        match block {
            Block::SectionHeader(_) => ifaces.clear(),
            Block::InterfaceDescription(idb) => ifaces.push(iface_of(idb.linktype, &idb.options)),
            Block::EnhancedPacket(epb) => {
                let Some(i) = ifaces.get(epb.interface_id as usize) else {
                    return Err(ReadError { offset, what: format!("packet on undeclared interface {}", epb.interface_id) });
                };
                // pcap-file hands back the raw 64-bit tick count as "nanoseconds".
                let raw = epb.timestamp.as_nanos();
                last_ts = (raw * i.num / i.den) as u64;
                f(Record { ts_ns: last_ts, link: i.link, data: &epb.data, offset });
            }
            Block::SimplePacket(spb) => {
                // No timestamp: keep the previous packet's time.
                let link = ifaces.first().map_or(Link::Other(0), |i| i.link);
                f(Record { ts_ns: last_ts, link, data: &spb.data, offset });
            }
            Block::Packet(pb) => {
                let Some(i) = ifaces.get(usize::from(pb.interface_id)) else {
                    return Err(ReadError { offset, what: format!("packet on undeclared interface {}", pb.interface_id) });
                };
                last_ts = (u128::from(pb.timestamp) * i.num / i.den) as u64;
                f(Record { ts_ns: last_ts, link: i.link, data: &pb.data, offset });
            }
            _ => {}
        }
        rest = next;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pcap_file(link: u32, frames: &[(u64, &[u8])]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&[0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0]);
        v.extend_from_slice(&[0; 8]);
        v.extend_from_slice(&65535u32.to_le_bytes());
        v.extend_from_slice(&link.to_le_bytes());
        for (us, data) in frames {
            v.extend_from_slice(&((us / 1_000_000) as u32).to_le_bytes());
            v.extend_from_slice(&((us % 1_000_000) as u32).to_le_bytes());
            v.extend_from_slice(&(data.len() as u32).to_le_bytes());
            v.extend_from_slice(&(data.len() as u32).to_le_bytes());
            v.extend_from_slice(data);
        }
        v
    }

    fn ipv4_udp() -> Vec<u8> {
        let f =
            voipdetect_traffic::frames::FrameSpec::udp("10.0.0.1:5004".parse().unwrap(), "10.0.0.2:6000".parse().unwrap()).build(&[1; 20]);
        f[14..].to_vec()
    }

    #[test]
    fn pcap_with_raw_ip_and_timestamps() {
        let ip = ipv4_udp();
        let file = pcap_file(101, &[(1_500_000, &ip), (2_000_001, &ip)]);
        let mut seen = Vec::new();
        for_each_record(&file, |r| seen.push((r.ts_ns, parse_frame(r.link, r.data).map(|p| p.payload_len)))).unwrap();
        assert_eq!(seen, vec![(1_500_000_000, Ok(20)), (2_000_001_000, Ok(20))]);
    }

    #[test]
    fn truncated_last_record_keeps_the_ones_before() {
        let ip = ipv4_udp();
        let mut file = pcap_file(101, &[(1, &ip), (2, &ip)]);
        let cut = file.len() - 5;
        file.truncate(cut);
        let mut n = 0;
        let err = for_each_record(&file, |_| n += 1).unwrap_err();
        assert_eq!(n, 1);
        assert_eq!(err.offset, 24 + 16 + ip.len());
        assert!(err.to_string().contains("truncated"), "{err}");
    }

    #[test]
    fn not_a_capture() {
        let err = for_each_record(b"hello world, no capture", |_| {}).unwrap_err();
        assert_eq!(err.offset, 0);
        assert!(err.to_string().contains("not a pcap"));
        assert!(for_each_record(b"ab", |_| {}).is_err());
    }

    #[test]
    fn cooked_and_loopback_links() {
        let ip = ipv4_udp();
        let mut sll = vec![0u8; 14];
        sll.extend_from_slice(&[0x08, 0x00]);
        sll.extend_from_slice(&ip);
        assert_eq!(parse_frame(Link::LinuxSll, &sll).unwrap().payload_len, 20);
        let mut sll2 = vec![0x08, 0x00];
        sll2.extend_from_slice(&[0; 18]);
        sll2.extend_from_slice(&ip);
        assert_eq!(parse_frame(Link::LinuxSll2, &sll2).unwrap().payload_len, 20);
        let mut lo = 2u32.to_ne_bytes().to_vec();
        lo.extend_from_slice(&ip);
        assert_eq!(parse_frame(Link::Null, &lo).unwrap().payload_len, 20);
        assert_eq!(parse_frame(Link::Other(147), &ip), Err(Stat::NotIp));
    }
}
