//! Global counters, one slot per reason in a per-CPU array.
//!
//! The first [`Stat::OUTCOMES`] slots are outcomes: the kernel bumps exactly
//! one of them per packet, so their sum is the number of packets seen and
//! `seen - dropped` is the number passed. The rest are events counted
//! alongside an outcome.

/// Index into the `VD_STATS` per-CPU array.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stat {
    /// Passed and counted into a flow.
    Tracked = 0,
    /// Dropped: the flow is on the blocklist.
    Dropped,
    /// Passed: not IPv4 or IPv6 (ARP, LLDP, ...).
    NotIp,
    /// Passed: a header ran past the end of the frame.
    Truncated,
    /// Passed: a header field is impossible (IHL < 5, lengths that do not add up, ...).
    Malformed,
    /// Passed: a non-first IP fragment, which carries no ports.
    Fragment,
    /// Passed: a transport other than TCP or UDP (ICMP, ESP, SCTP, ...).
    OtherL4,
    /// Passed: more VLAN tags than [`crate::parse::MAX_VLAN_TAGS`].
    VlanTooDeep,
    /// Passed: more IPv6 extension headers than [`crate::parse::MAX_IPV6_EXT`].
    Ipv6ExtTooDeep,
    /// Passed: no slot for a new flow (every probe was being written by
    /// another CPU at that moment).
    FlowTableFull,
    /// Event: a new direction-flow entry was created.
    NewFlow,
    /// Event: a tracked packet without transport payload (TCP pure ACK, ...).
    EmptyPayload,
    /// Event: a flow picked up a blocklist verdict (first drop of a block).
    BlockStart,
    /// Event: a new flow matched a hold (its call came back on another
    /// 5-tuple) and is dropped from its first packet.
    Held,
    /// Event: a new flow took the slot of the flow seen longest ago among
    /// its probes (the table was full there).
    Evicted,
    /// Event: a passed packet had its DSCP rewritten (mark mode).
    Marked,
}

impl Stat {
    /// Number of outcome slots (see the module docs).
    pub const OUTCOMES: usize = Stat::FlowTableFull as usize + 1;
    /// Number of slots in the map.
    pub const COUNT: usize = Stat::Marked as usize + 1;

    /// Every stat in index order.
    pub const ALL: [Stat; Stat::COUNT] = [
        Stat::Tracked,
        Stat::Dropped,
        Stat::NotIp,
        Stat::Truncated,
        Stat::Malformed,
        Stat::Fragment,
        Stat::OtherL4,
        Stat::VlanTooDeep,
        Stat::Ipv6ExtTooDeep,
        Stat::FlowTableFull,
        Stat::NewFlow,
        Stat::EmptyPayload,
        Stat::BlockStart,
        Stat::Held,
        Stat::Evicted,
        Stat::Marked,
    ];

    /// Stable snake_case name used in reports and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Stat::Tracked => "tracked",
            Stat::Dropped => "dropped",
            Stat::NotIp => "not_ip",
            Stat::Truncated => "truncated",
            Stat::Malformed => "malformed",
            Stat::Fragment => "fragment",
            Stat::OtherL4 => "other_l4",
            Stat::VlanTooDeep => "vlan_too_deep",
            Stat::Ipv6ExtTooDeep => "ipv6_ext_too_deep",
            Stat::FlowTableFull => "flow_table_full",
            Stat::NewFlow => "new_flow",
            Stat::EmptyPayload => "empty_payload",
            Stat::BlockStart => "block_start",
            Stat::Held => "held",
            Stat::Evicted => "evicted",
            Stat::Marked => "marked",
        }
    }

    /// True for the slots that partition all packets.
    pub const fn is_outcome(self) -> bool {
        (self as usize) < Self::OUTCOMES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_is_in_index_order() {
        for (i, s) in Stat::ALL.iter().enumerate() {
            assert_eq!(*s as usize, i, "{}", s.name());
        }
    }
}
