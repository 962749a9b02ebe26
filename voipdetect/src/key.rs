//! The flow key as people read and write it: addresses, "ip:port"
//! endpoints, protocol names, and the "udp A:P B:Q" form operators type;
//! and a conversation's two ends as [`Socket`]s and [`Host`]s.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use anyhow::{anyhow, bail};
use voipdetect_common::{
    FlowKey,
    flow::{FAMILY_V4, FAMILY_V6, PROTO_TCP, PROTO_UDP},
};

/// The source (`src`) or destination address of a key.
pub fn addr(key: &FlowKey, src: bool) -> IpAddr {
    let a = if src { key.src } else { key.dst };
    if key.family == FAMILY_V4 { IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3])) } else { IpAddr::V6(Ipv6Addr::from(a)) }
}

/// The source or destination port of a key.
pub fn port(key: &FlowKey, src: bool) -> u16 {
    if src { key.sport } else { key.dport }
}

/// "ip:port", or "[v6]:port".
pub fn endpoint(key: &FlowKey, src: bool) -> String {
    SocketAddr::new(addr(key, src), port(key, src)).to_string()
}

/// "udp a:1 <-> b:2", for logs.
pub fn conv_name(k: &FlowKey) -> String {
    format!("{} {} <-> {}", proto_name(k.proto), endpoint(k, true), endpoint(k, false))
}

/// The conversation's Community ID (v1, seed 0): the identifier Suricata,
/// Zeek and others give the same 5-tuple, in either direction, so an
/// event here joins their logs of the same flow.
pub fn community_id(k: &FlowKey) -> String {
    community_id_seeded(k, 0)
}

fn community_id_seeded(k: &FlowKey, seed: u16) -> String {
    community_id::calculate_community_id(seed, addr(k, true), addr(k, false), Some(k.sport), Some(k.dport), k.proto, false)
        // Only a mixed address family or a missing port fails; a key has neither.
        .unwrap_or_default()
}

/// "tcp", "udp" (the transports tracked), or "other".
pub fn proto_name(proto: u8) -> &'static str {
    match proto {
        PROTO_TCP => "tcp",
        PROTO_UDP => "udp",
        _ => "other",
    }
}

/// One end of a conversation: an address, a port and a transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Socket {
    pub family: u8,
    pub proto: u8,
    pub port: u16,
    pub addr: [u8; 16],
}

/// One machine: an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Host {
    pub family: u8,
    pub addr: [u8; 16],
}

impl Socket {
    /// The sending (`src`) or receiving end of a key.
    pub fn of(key: &FlowKey, src: bool) -> Self {
        Self { family: key.family, proto: key.proto, port: port(key, src), addr: if src { key.src } else { key.dst } }
    }

    pub fn host(&self) -> Host {
        Host { family: self.family, addr: self.addr }
    }

    pub fn ip(&self) -> IpAddr {
        Host { family: self.family, addr: self.addr }.ip()
    }
}

impl std::fmt::Display for Socket {
    /// "udp 192.0.2.2:40000".
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", proto_name(self.proto), SocketAddr::new(self.ip(), self.port))
    }
}

impl Host {
    pub fn ip(&self) -> IpAddr {
        let a = self.addr;
        if self.family == FAMILY_V4 { IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3])) } else { IpAddr::V6(Ipv6Addr::from(a)) }
    }

    /// Whether the address is one a user's device has on a gateway's
    /// inside: private (RFC 1918), shared (RFC 6598, carrier-grade NAT),
    /// link-local, or IPv6 unique-local (RFC 4193) or link-local.
    pub fn looks_inside(&self) -> bool {
        match self.ip() {
            IpAddr::V4(a) => a.is_private() || a.is_link_local() || (a.octets()[0] == 100 && a.octets()[1] & 0xc0 == 64),
            IpAddr::V6(a) => (a.segments()[0] & 0xfe00) == 0xfc00 || (a.segments()[0] & 0xffc0) == 0xfe80,
        }
    }
}

/// Parses "udp" "192.0.2.2:40004" "198.51.100.2:5004" into the key of that
/// direction.
pub fn parse_flow(proto: &str, src: &str, dst: &str) -> anyhow::Result<FlowKey> {
    let proto = match proto.to_ascii_lowercase().as_str() {
        "udp" => PROTO_UDP,
        "tcp" => PROTO_TCP,
        other => bail!("protocol {other:?}: expected udp or tcp"),
    };
    let s: SocketAddr = src.parse().map_err(|e| anyhow!("source {src:?}: {e} (expected ip:port or [ipv6]:port)"))?;
    let d: SocketAddr = dst.parse().map_err(|e| anyhow!("destination {dst:?}: {e} (expected ip:port or [ipv6]:port)"))?;
    let mut k = FlowKey { proto, sport: s.port(), dport: d.port(), ..Default::default() };
    match (s, d) {
        (SocketAddr::V4(a), SocketAddr::V4(b)) => {
            k.family = FAMILY_V4;
            k.src[..4].copy_from_slice(&a.ip().octets());
            k.dst[..4].copy_from_slice(&b.ip().octets());
        }
        (SocketAddr::V6(a), SocketAddr::V6(b)) => {
            k.family = FAMILY_V6;
            k.src = a.ip().octets();
            k.dst = b.ip().octets();
        }
        _ => bail!("source and destination must be of the same address family"),
    }
    Ok(k)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The TCP and UDP vectors of the specification's baseline
    /// (community-id-spec, baseline/baseline_deflt.json and
    /// baseline_seed1.json), each in both directions.
    #[test]
    fn community_ids_match_the_specification_vectors() {
        let vectors = [
            (
                6,
                "2001:470:e5bf:dead:4957:2174:e82c:4887",
                63943,
                "2607:f8b0:400c:c03::1a",
                25,
                "1:/qFaeAR+gFe1KYjMzVDsMv+wgU4=",
                "1:eJYTW6AOzFLlSUoESovMjnu7rMw=",
            ),
            (6, "128.232.110.120", 34855, "66.35.250.204", 80, "1:LQU9qZlK+B5F3KDmev6m5PMibrg=", "1:3V71V58M3Ksw/yuFALMcW0LAHvc="),
            (17, "192.168.1.52", 54585, "8.8.8.8", 53, "1:d/FP5EW3wiY1vCndhwleRRKHowQ=", "1:Q9We8WO3piVF8yEQBNJF4uiSVrI="),
        ];
        for (proto, a, ap, b, bp, seed0, seed1) in vectors {
            let proto = if proto == 6 { "tcp" } else { "udp" };
            let fwd = parse_flow(proto, &endpoint_text(a, ap), &endpoint_text(b, bp)).unwrap();
            let rev = parse_flow(proto, &endpoint_text(b, bp), &endpoint_text(a, ap)).unwrap();
            for k in [fwd, rev] {
                assert_eq!(community_id(&k), seed0, "{}", conv_name(&k));
                assert_eq!(community_id_seeded(&k, 1), seed1, "{}", conv_name(&k));
            }
        }
    }

    fn endpoint_text(ip: &str, port: u16) -> String {
        SocketAddr::new(ip.parse().unwrap(), port).to_string()
    }

    #[test]
    fn a_typed_flow_reads_back_as_typed() {
        for (proto, a, b) in [("udp", "192.0.2.2:40004", "198.51.100.2:5004"), ("tcp", "[2001:db8:1::2]:443", "[2001:db8:2::2]:50000")] {
            let k = parse_flow(proto, a, b).unwrap();
            assert_eq!((proto_name(k.proto), endpoint(&k, true), endpoint(&k, false)), (proto, a.to_owned(), b.to_owned()));
            assert_eq!(conv_name(&k), format!("{proto} {a} <-> {b}"));
        }
    }

    #[test]
    fn bad_flows_are_refused_with_a_reason() {
        for (proto, a, b, why) in [
            ("icmp", "192.0.2.2:1", "192.0.2.3:2", "protocol"),
            ("udp", "192.0.2.2", "192.0.2.3:2", "source"),
            ("udp", "192.0.2.2:1", "[2001:db8::1]:2", "same address family"),
        ] {
            let e = parse_flow(proto, a, b).unwrap_err().to_string();
            assert!(e.contains(why), "{e}");
        }
        assert_eq!(proto_name(1), "other");
    }

    #[test]
    fn sockets_and_where_hosts_live() {
        let k = parse_flow("udp", "10.1.2.3:40000", "198.51.100.2:3478").unwrap();
        let (a, b) = (Socket::of(&k, true), Socket::of(&k, false));
        assert_eq!((a.to_string(), b.to_string()), ("udp 10.1.2.3:40000".to_owned(), "udp 198.51.100.2:3478".to_owned()));
        assert_eq!(Socket::of(&k.reversed(), false), a);
        assert!(a.host().looks_inside() && !b.host().looks_inside());
        for inside in ["[fd00::1]:1", "[fe80::1]:1", "100.64.0.1:1", "169.254.1.1:1", "192.168.1.1:1", "172.16.0.1:1"] {
            let k = parse_flow("udp", inside, inside).unwrap();
            assert!(Socket::of(&k, true).host().looks_inside(), "{inside}");
        }
        for outside in ["[2001:db8::1]:1", "100.128.0.1:1", "192.0.2.2:1", "8.8.8.8:1"] {
            let k = parse_flow("udp", outside, outside).unwrap();
            assert!(!Socket::of(&k, true).host().looks_inside(), "{outside}");
        }
    }
}
