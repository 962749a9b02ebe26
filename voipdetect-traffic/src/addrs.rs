//! The address plan every generated flow uses: the lab's client and
//! server (documentation prefixes, RFC 5737 and RFC 3849), so a synthetic
//! capture of a flow shows the same endpoints as the flow played live.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::Flow;

pub const CLIENT_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
pub const GW_CLIENT_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
pub const GW_SERVER_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
pub const SERVER_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
pub const CLIENT_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 2);
pub const GW_CLIENT_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1);
pub const GW_SERVER_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 1);
pub const SERVER_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 2);
/// The server's second address: a call app's second relay.
pub const SERVER2_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 3);
pub const SERVER2_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 3);

/// The client's further addresses, one per user a catalogue plays:
/// 192.0.2.11 to .90 and 2001:db8:1::11 to ::5a.
pub const CLIENT_HOSTS: u8 = 80;

/// The client's address `host` (0 its first) of one family.
pub fn client(ipv6: bool, host: u8) -> IpAddr {
    match (ipv6, host) {
        (false, 0) => CLIENT_V4.into(),
        (true, 0) => CLIENT_V6.into(),
        (false, h) => Ipv4Addr::new(192, 0, 2, 10 + h).into(),
        (true, h) => Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x10 + u16::from(h)).into(),
    }
}

/// The server's address `relay` (0 its first, else its second) of one family.
pub fn server(ipv6: bool, relay: u8) -> IpAddr {
    match (ipv6, relay) {
        (false, 0) => SERVER_V4.into(),
        (false, _) => SERVER2_V4.into(),
        (true, 0) => SERVER_V6.into(),
        (true, _) => SERVER2_V6.into(),
    }
}

/// The client and server socket addresses of `flow`.
pub fn of(flow: &Flow) -> (SocketAddr, SocketAddr) {
    (SocketAddr::new(client(flow.ipv6, flow.client), flow.client_port), SocketAddr::new(server(flow.ipv6, flow.relay), flow.server_port))
}
