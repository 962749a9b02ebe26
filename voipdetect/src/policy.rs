//! What the controller may block: conversations an operator exempts are
//! reported, never blocked.

use ipnet::IpNet;
use voipdetect_common::FlowKey;

use crate::key::addr;

/// Flows never blocked: any endpoint inside one of `cidrs`, or using one of `ports`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Allowlist {
    pub cidrs: Vec<IpNet>,
    pub ports: Vec<u16>,
}

impl Allowlist {
    pub fn is_empty(&self) -> bool {
        self.cidrs.is_empty() && self.ports.is_empty()
    }

    /// Whether the conversation of `key` is exempt.
    pub fn covers(&self, key: &FlowKey) -> bool {
        let ports = [key.sport, key.dport];
        if ports.iter().any(|p| self.ports.contains(p)) {
            return true;
        }
        let addrs = [addr(key, true), addr(key, false)];
        addrs.iter().any(|a| self.cidrs.iter().any(|n| n.contains(a)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowlist_matches_addresses_and_ports() {
        let a = Allowlist { cidrs: vec!["192.0.2.0/24".parse().unwrap()], ports: vec![5060] };
        let mut k = FlowKey { family: 4, proto: 17, sport: 40000, dport: 5004, ..Default::default() };
        k.src[..4].copy_from_slice(&[198, 51, 100, 2]);
        k.dst[..4].copy_from_slice(&[203, 0, 113, 9]);
        assert!(!a.covers(&k));
        k.dst[..4].copy_from_slice(&[192, 0, 2, 77]);
        assert!(a.covers(&k));
        k.dst[..4].copy_from_slice(&[203, 0, 113, 9]);
        k.dport = 5060;
        assert!(a.covers(&k));
    }
}
