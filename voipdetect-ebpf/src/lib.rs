//! Pieces shared by the XDP programs of this crate: the production program
//! (`voipdetect` binary target) and the benchmark programs (`bench-progs`).
#![no_std]

pub mod frame;
