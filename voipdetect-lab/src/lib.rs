//! voipdetect's lab: tooling, never linked into the shipped binary.
//!
//! - [`netns`], [`lab`]: the client — gateway — server network namespaces;
//! - [`process`]: a `voipdetect run` started in the lab's gateway;
//! - [`live`]: the traffic generator's flows played through real sockets;
//! - [`leak`]: how much of a blocked call still gets through its hops;
//! - [`demo`]: the main job on the lab (`cargo xtask demo`);
//! - [`grid`]: every look-alike and call variant over lossy, jittery
//!   links, through the replay engine (precision and recall by cell);
//! - [`bench`]: the benchmarks of BENCHMARKS.md (`cargo xtask bench`), with
//!   their reference XDP programs from `voipdetect-bench-ebpf`.
//!
//! The `voipdetect-lab` binary runs the demo, the benchmarks, and writes
//! the generated corpus (`voipdetect-lab corpus --out DIR`).

pub mod bench;
pub mod demo;
pub mod grid;
pub mod lab;
pub mod leak;
pub mod live;
pub mod netns;
pub mod process;

pub use lab::{GatewayLab, require_root, voipdetect_binary};
pub use process::ControllerProcess;
