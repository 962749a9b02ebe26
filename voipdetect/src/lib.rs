//! voipdetect's controller library: the loader, the classifier and the
//! drivers shared by the binary, the tests and the benchmarks.
pub mod batch;
pub mod bench;
pub mod capture;
pub mod classifier;
pub mod config;
pub mod controller;
pub mod corpus;
pub mod datapath;
pub mod demo;
pub mod engine;
pub mod frames;
pub mod lab;
pub mod metrics;
pub mod ops;
pub mod outputs;
pub mod plot;
pub mod replay;
pub mod report;
pub mod run;
pub mod synth;
#[cfg(test)]
mod testutil;
pub mod traffic;
pub mod window;
