//! Rewriting a packet's DSCP in place (mark mode): the arithmetic the XDP
//! program runs on an IP header, here so it can be tested against a full
//! checksum computation. ECN bits are kept; neither the TCP nor the UDP
//! checksum covers the TOS or traffic-class byte, so only IPv4's header
//! checksum changes.

/// Expedited Forwarding (RFC 3246): what real-time voice is marked with.
pub const DSCP_EF: u8 = 46;

/// A blocklist entry's `mark` and a flow's cached `mark` hold this bit and
/// the DSCP; 0 means "drop".
pub const MARK_SET: u8 = 0x80;

/// The largest DSCP value (six bits).
pub const DSCP_MAX: u8 = 63;

/// The `mark` value that asks for `dscp`.
pub const fn mark(dscp: u8) -> u8 {
    MARK_SET | (dscp & DSCP_MAX)
}

/// The DSCP a `mark` value asks for.
pub const fn dscp_of(mark: u8) -> u8 {
    mark & DSCP_MAX
}

/// IPv4: the new TOS byte and header checksum for `dscp`, given the
/// header's first byte (version and IHL), TOS byte and checksum; the
/// checksum updated incrementally (RFC 1624, eqn. 3).
pub fn ipv4(ver_ihl: u8, tos: u8, checksum: u16, dscp: u8) -> (u8, u16) {
    let new_tos = (dscp << 2) | (tos & 0x03);
    let (old, new) = (u16::from_be_bytes([ver_ihl, tos]), u16::from_be_bytes([ver_ihl, new_tos]));
    let mut sum = u32::from(!checksum) + u32::from(!old) + u32::from(new);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    (new_tos, !(sum as u16))
}

/// IPv6: the header's first two bytes with the traffic class's DSCP set
/// (the version, ECN and flow label kept).
pub fn ipv6(b0: u8, b1: u8, dscp: u8) -> (u8, u8) {
    let tc = (b0 << 4) | (b1 >> 4);
    let new_tc = (dscp << 2) | (tc & 0x03);
    ((b0 & 0xf0) | (new_tc >> 4), (new_tc << 4) | (b1 & 0x0f))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The IPv4 header checksum computed from scratch.
    fn full_checksum(h: &[u8; 20]) -> u16 {
        let mut sum = 0u32;
        for (i, w) in h.chunks(2).enumerate() {
            if i != 5 {
                sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
            }
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    #[test]
    fn the_incremental_ipv4_checksum_equals_a_full_one() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..10_000 {
            let mut h = [0u8; 20];
            for b in h.iter_mut() {
                *b = next() as u8;
            }
            h[0] = 0x45;
            let c = full_checksum(&h);
            h[10..12].copy_from_slice(&c.to_be_bytes());
            let dscp = (next() % 64) as u8;
            let (tos, csum) = ipv4(h[0], h[1], c, dscp);
            assert_eq!(tos >> 2, dscp);
            assert_eq!(tos & 3, h[1] & 3, "ECN kept");
            h[1] = tos;
            // Both forms of zero are valid one's complement sums; a
            // receiver accepts either.
            let want = full_checksum(&h);
            assert!(csum == want || (csum == 0xffff && want == 0) || (csum == 0 && want == 0xffff), "{csum:#x} vs {want:#x}");
        }
    }

    #[test]
    fn ipv6_keeps_version_ecn_and_flow_label() {
        // Version 6, traffic class 0x03 (ECN CE), flow label 0xabcde.
        let (b0, b1) = ipv6(0x60, 0x3a, DSCP_EF);
        assert_eq!(b0 >> 4, 6);
        let tc = (b0 << 4) | (b1 >> 4);
        assert_eq!((tc >> 2, tc & 3), (DSCP_EF, 3));
        assert_eq!(b1 & 0x0f, 0x0a, "flow label's top bits kept");
    }

    #[test]
    fn marks_carry_the_dscp() {
        assert_eq!(dscp_of(mark(DSCP_EF)), DSCP_EF);
        assert_ne!(mark(0), 0, "marking to best effort is still a mark");
    }
}
