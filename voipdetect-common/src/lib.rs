//! The contract between the voipdetect XDP program and its controller.
//!
//! Everything here is `no_std` and used by both sides: the map value layouts
//! ([`flow`]), the global counter indices ([`stats`]), the one packet parser
//! ([`parse`]), the cheap media-header checks ([`hints`]), the per-packet
//! feature update ([`features`]), the DSCP rewrite of mark mode ([`dscp`]) and the flow tables' layout and hashing
//! ([`table`]). The kernel program runs them on XDP frames;
//! the userspace replay runs them on captured frames, so both produce the same
//! counters for the same packets.
#![no_std]
#![cfg_attr(target_arch = "bpf", feature(core_intrinsics))]
#![cfg_attr(target_arch = "bpf", expect(internal_features, reason = "atomic_xadd: see features::add32"))]

pub mod dscp;
pub mod features;
pub mod flow;
pub mod hints;
pub mod maps;
pub mod parse;
pub mod stats;
pub mod table;

pub use flow::{BlockEntry, Control, FlowCounters, FlowKey, HoldEntry, HoldKey, SessionTag};
pub use stats::Stat;
