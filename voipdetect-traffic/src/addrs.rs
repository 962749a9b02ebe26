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

/// Client and server addresses of one family; `relay` 1 picks the
/// server's second address.
pub fn endpoints(ipv6: bool, relay: u8) -> (IpAddr, IpAddr) {
    match (ipv6, relay) {
        (false, 0) => (CLIENT_V4.into(), SERVER_V4.into()),
        (false, _) => (CLIENT_V4.into(), SERVER2_V4.into()),
        (true, 0) => (CLIENT_V6.into(), SERVER_V6.into()),
        (true, _) => (CLIENT_V6.into(), SERVER2_V6.into()),
    }
}

/// The client and server socket addresses of `flow`.
pub fn of(flow: &Flow) -> (SocketAddr, SocketAddr) {
    let (c, s) = endpoints(flow.ipv6, flow.relay);
    (SocketAddr::new(c, flow.client_port), SocketAddr::new(s, flow.server_port))
}
