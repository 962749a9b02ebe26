//! Map names and default sizes, defined once for both sides.

/// The IPv4 flow table: `ARRAY<Slot4>`, mmap-able (see [`crate::table`]).
pub const FLOWS4: &str = "VD_FLOWS4";
/// The IPv6 flow table: `ARRAY<Slot6>`, mmap-able.
pub const FLOWS6: &str = "VD_FLOWS6";
/// Load-time constants: the slot-count masks of the two tables.
pub const FLOWS4_MASK: &str = "FLOWS4_MASK";
pub const FLOWS6_MASK: &str = "FLOWS6_MASK";
/// Global: the kernel's tick in nanoseconds (the coarse clock's step),
/// which turns jiffies into time.
pub const TICK_NS: &str = "TICK_NS";
/// Global: the tick assumed when the loader sets none (HZ = 250).
pub const DEFAULT_TICK_NS: u64 = 4_000_000;
/// Verdicts written by the controller: `HASH<FlowKey, BlockEntry>`.
pub const BLOCKLIST: &str = "VD_BLOCKLIST";
/// Global counters: `PERCPU_ARRAY<u64>` indexed by [`crate::Stat`].
pub const STATS: &str = "VD_STATS";
/// Controller-to-kernel settings: `ARRAY<Control>` with one entry.
pub const CONTROL: &str = "VD_CONTROL";
/// Holds written by the controller: `HASH<HoldKey, HoldEntry>`.
pub const HOLDS: &str = "VD_HOLDS";
/// Sessions of the conversations with a verdict: `HASH<FlowKey, SessionTag>`
/// (not preallocated), written by the controller for other processes.
pub const SESSIONS: &str = "VD_SESSIONS";

/// Default slots of the IPv4 flow table (settable at load time; a power
/// of two). The IPv6 table gets a quarter as many.
pub const DEFAULT_FLOW_ENTRIES: u32 = 1 << 18;
/// IPv6 slots per IPv4 slot.
pub const V6_SHARE: u32 = 4;
/// Default capacity of the blocklist (settable at load time).
pub const DEFAULT_BLOCK_ENTRIES: u32 = 1 << 14;
/// Capacity of the hold map: a few holds per call being held.
pub const DEFAULT_HOLD_ENTRIES: u32 = 1 << 12;
/// Capacity of the session tags: two per conversation with a verdict.
pub const DEFAULT_SESSION_ENTRIES: u32 = 1 << 15;

/// Name of the XDP program in the object file.
pub const PROGRAM: &str = "voipdetect";
