//! The flow key as people read and write it: addresses, "ip:port"
//! endpoints, protocol names, and the "udp A:P B:Q" form operators type.

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

/// "tcp", "udp" (the transports tracked), or "other".
pub fn proto_name(proto: u8) -> &'static str {
    match proto {
        PROTO_TCP => "tcp",
        PROTO_UDP => "udp",
        _ => "other",
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
}
