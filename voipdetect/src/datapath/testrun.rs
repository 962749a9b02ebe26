//! Helpers for the test tiers and the benchmarks only (feature
//! `test-run`): frames through the loaded program with
//! `BPF_PROG_TEST_RUN`, the verifier's walk, and direct access to flow
//! entries.

use std::time::Duration;

use anyhow::{Context as _, anyhow};
use aya::programs::{ProgramError, TestRun as _, TestRunOptions};
use voipdetect_common::{FlowCounters, FlowKey, flow::FAMILY_V4};

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

    /// Runs the program once on `frame`; returns its XDP action and the
    /// frame as the program left it (mark mode rewrites headers).
    pub fn test_run_out(&mut self, frame: &[u8]) -> anyhow::Result<(u32, Vec<u8>)> {
        let program = self.program()?;
        let mut out = vec![0u8; frame.len() + 256];
        let opts = TestRunOptions { data_in: Some(frame), data_out: Some(&mut out), ..Default::default() };
        let r = program.test_run(opts).map_err(|e: ProgramError| anyhow::Error::new(e).context("BPF_PROG_TEST_RUN"))?;
        out.truncate(r.data_size_out as usize);
        Ok((r.return_value, out))
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
        if key.family == FAMILY_V4 {
            self.flows4.find(key, self.seed).and_then(|i| self.flows4.read(i)).map(|s| s.c)
        } else {
            self.flows6.find(key, self.seed).and_then(|i| self.flows6.read(i)).map(|s| s.c)
        }
    }

    /// Files a flow from userspace, as the program would on its first
    /// packet (benchmarks fill the tables this way).
    pub fn insert_flow(&mut self, key: &FlowKey, c: &FlowCounters) -> anyhow::Result<()> {
        let slot = if key.family == FAMILY_V4 { self.flows4.insert(key, c, self.seed) } else { self.flows6.insert(key, c, self.seed) };
        slot.map(drop).ok_or_else(|| anyhow!("no free slot among the probes of {key:?}"))
    }

    /// Changes a flow's counters in place, as its packets would (the
    /// benchmarks make flows change this way). Whether the flow was found.
    pub fn update_flow(&mut self, key: &FlowKey, f: impl FnOnce(&mut FlowCounters)) -> bool {
        if key.family == FAMILY_V4 {
            self.flows4.find(key, self.seed).is_some_and(|i| self.flows4.update(i, f))
        } else {
            self.flows6.find(key, self.seed).is_some_and(|i| self.flows6.update(i, f))
        }
    }

    /// The flow tables' kernel memory as `/proc/self/fdinfo` reports it,
    /// and their slots: (IPv4, IPv6).
    pub fn flow_table_memory(&self) -> anyhow::Result<[(u64, u32); 2]> {
        let read = |fd: i32| -> anyhow::Result<(u64, u32)> {
            let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).context("reading fdinfo")?;
            let field = |name: &str| info.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.trim().parse::<u64>().ok());
            let memlock = field("memlock:").ok_or_else(|| anyhow!("no memlock in fdinfo"))?;
            let max = field("max_entries:").ok_or_else(|| anyhow!("no max_entries in fdinfo"))?;
            Ok((memlock, max as u32))
        };
        Ok([read(self.flows4.raw_fd())?, read(self.flows6.raw_fd())?])
    }
}
