//! voipdetect's controller library: the loader, the classifier and the
//! drivers, shared by the binary (`main.rs`), the root-only test tiers and
//! the lab's benchmarks. The traffic generator and the lab live in crates
//! of their own (`voipdetect-traffic`, `voipdetect-lab`) and are not linked
//! into the shipped binary.
//!
//! Module map, dependencies pointing one way (`cargo xtask modules` checks
//! there is no cycle):
//!
//! ```text
//!  vocabulary   clock  key  event  policy
//!  detection    window → classifier → controller → engine → replay (capture, plot)
//!  kernel       datapath {pins, host, batch, maps, testrun*} → ops, metrics
//!               (datapath's flow tables, like engine's, are a controller
//!               `FlowTable`: datapath → controller)
//!  drivers      config, state, report → outputs, run      (main.rs dispatches)
//! ```
//!
//! - [`clock`]: CLOCK_MONOTONIC, wall clock, RFC 3339.
//! - [`key`]: flow keys as text (endpoints, protocol names, "udp A:P B:Q").
//! - [`event`]: the controller's vocabulary: modes, events, commands.
//! - [`policy`]: what happens to a call: ordered rules (networks, ports,
//!   interfaces, schedules), first match wins; the allowlist a shorthand.
//! - `window`, [`classifier`]: one direction's window; is it a call?
//! - [`controller`]: conversations, windows, verdicts and their lifetimes.
//! - [`engine`], [`replay`], [`capture`], [`plot`]: the offline driver.
//! - [`datapath`]: load, attach, detach; maps; host facts; pins.
//! - `prefetch`: fetching memory ahead of a walk that reads it at random.
//! - [`config`], [`state`], [`ops`], [`run`]: settings, the state file,
//!   the operator commands, the live driver; `report`, `outputs`,
//!   `metrics`: where events go.
//!
//! `*` behind the `test-run` feature, for tests and benchmarks only.

pub mod capture;
pub mod classifier;
pub mod clock;
pub mod config;
pub mod controller;
pub mod datapath;
pub mod engine;
pub mod event;
pub mod key;
mod metrics;
pub mod ops;
mod outputs;
pub mod plot;
pub mod policy;
mod prefetch;
pub mod replay;
mod report;
pub mod run;
pub mod state;
#[cfg(test)]
mod testutil;
mod window;

pub use classifier::Thresholds;
pub use config::Settings;
pub use controller::{Config, Controller};
pub use datapath::{Datapath, LoadOptions, Maps, Stats};
pub use engine::Engine;
pub use event::{Action, Command, Event, EventKind, Label, Mode, PollOutput};
pub use policy::Allowlist;
