//! Helpers for the test tiers and the benchmarks only (feature
//! `test-run`): frames through the loaded program with
//! `BPF_PROG_TEST_RUN`, the verifier's walk, and direct access to flow
//! entries.

use std::time::Duration;

use anyhow::{Context as _, anyhow};
use aya::programs::{ProgramError, TestRun as _, TestRunOptions};
use voipdetect_common::{FlowCounters, FlowKey};

use super::{Datapath, Maps};

impl Datapath {
    /// Instructions the kernel's verifier walked to accept the program (its
    /// limit is 1 000 000); None on kernels older than 5.16.
    pub fn verified_instructions(&mut self) -> anyhow::Result<Option<u32>> {
        let info = self.program()?.info().context("reading the program's info")?;
        Ok(info.verified_instruction_count())
    }

    /// Runs the program once on `frame` through `BPF_PROG_TEST_RUN` and
    /// returns its XDP action.
    pub fn test_run(&mut self, frame: &[u8]) -> anyhow::Result<u32> {
        Ok(self.test_run_repeat(frame, 1)?.0)
    }

    /// Runs the program `repeat` times on `frame`; returns the action and the
    /// kernel's mean time per run.
    pub fn test_run_repeat(&mut self, frame: &[u8], repeat: u32) -> anyhow::Result<(u32, Duration)> {
        let program = self.program()?;
        let opts = TestRunOptions { data_in: Some(frame), repeat, ..Default::default() };
        let r = program.test_run(opts).map_err(|e: ProgramError| anyhow::Error::new(e).context("BPF_PROG_TEST_RUN"))?;
        Ok((r.return_value, r.duration))
    }
}

impl Maps {
    /// One flow's counters, if tracked.
    pub fn flow(&self, key: &FlowKey) -> Option<FlowCounters> {
        self.flows.get(key, 0).ok()
    }

    /// Writes a flow entry from userspace (benchmarks fill the map this way).
    pub fn insert_flow(&mut self, key: &FlowKey, c: &FlowCounters) -> anyhow::Result<()> {
        self.flows.insert(key, c, 0).context("writing the flow map")
    }

    /// The flow map's kernel memory as `/proc/self/fdinfo` reports it, and
    /// its capacity.
    pub fn flow_map_memory(&self) -> anyhow::Result<(u64, u32)> {
        use aya::maps::IterableMap as _;
        use std::os::fd::{AsFd as _, AsRawFd as _};
        let fd = self.flows.map().fd().as_fd().as_raw_fd();
        let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).context("reading fdinfo")?;
        let field = |name: &str| info.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.trim().parse::<u64>().ok());
        let memlock = field("memlock:").ok_or_else(|| anyhow!("no memlock in fdinfo"))?;
        let max = field("max_entries:").ok_or_else(|| anyhow!("no max_entries in fdinfo"))?;
        Ok((memlock, max as u32))
    }
}
