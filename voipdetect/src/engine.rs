//! The offline driver's core: the kernel program's per-packet work (parse,
//! find the direction's counters, the shared feature update) on in-memory
//! counters, and the controller polled on the packets' own clock at the
//! live driver's cadence. `replay` feeds it captures; tests feed it
//! synthesised flows.

use std::collections::HashMap;

use voipdetect_common::{
    FlowCounters, FlowKey, Stat,
    features::update,
    hints::inspect,
    parse::{Bytes, Packet},
};

use crate::controller::{Config, Controller, Event};

/// Offline flow table plus controller.
pub struct Engine {
    flows: HashMap<FlowKey, FlowCounters>,
    ctl: Controller,
    poll_ns: u64,
    next_poll_ns: Option<u64>,
    last_ns: u64,
    /// Every event the controller produced, in order.
    pub events: Vec<Event>,
    /// Counters indexed like the kernel's [`Stat`].
    pub stats: [u64; Stat::COUNT],
}

impl Engine {
    pub fn new(cfg: Config, poll_ns: u64) -> Self {
        Self {
            flows: HashMap::new(),
            ctl: Controller::new(cfg),
            poll_ns: poll_ns.max(1),
            next_poll_ns: None,
            last_ns: 0,
            events: Vec::new(),
            stats: [0; Stat::COUNT],
        }
    }

    /// Runs the polls due before `ts_ns`.
    fn advance(&mut self, ts_ns: u64) {
        let next = *self.next_poll_ns.get_or_insert(ts_ns + self.poll_ns);
        let mut next = next;
        while next <= ts_ns {
            self.poll(next);
            next += self.poll_ns;
        }
        self.next_poll_ns = Some(next);
        self.last_ns = self.last_ns.max(ts_ns);
    }

    fn poll(&mut self, now_ns: u64) {
        for (k, c) in &self.flows {
            self.ctl.observe(k, c);
        }
        let out = self.ctl.finish_poll(now_ns);
        for cmd in &out.commands {
            if let crate::controller::Command::Forget { keys } = cmd {
                for k in keys {
                    self.flows.remove(k);
                }
            }
        }
        self.events.extend(out.events);
    }

    /// One packet parsed by `parse` from `bytes`, seen at `ts_ns`.
    pub fn packet<B: Bytes + ?Sized>(&mut self, ts_ns: u64, bytes: &B, parsed: Result<Packet, Stat>) {
        self.advance(ts_ns);
        match parsed {
            Err(reason) => self.stats[reason as usize] += 1,
            Ok(pkt) => {
                let c = self.flows.entry(pkt.key).or_insert_with(|| {
                    self.stats[Stat::NewFlow as usize] += 1;
                    FlowCounters::new(ts_ns, 0)
                });
                update(c, &pkt, inspect(bytes, &pkt), ts_ns);
                if pkt.payload_len == 0 {
                    self.stats[Stat::EmptyPayload as usize] += 1;
                }
                self.stats[Stat::Tracked as usize] += 1;
            }
        }
    }

    /// Polls once more after the last packet, then ends every verdict.
    pub fn finish(&mut self) {
        let end = self.last_ns + self.poll_ns;
        self.advance(end);
        let out = self.ctl.release_all(end);
        self.events.extend(out.events);
    }

    /// The direction-flows seen (those not forgotten as idle).
    pub fn flows(&self) -> &HashMap<FlowKey, FlowCounters> {
        &self.flows
    }

    pub fn controller(&self) -> &Controller {
        &self.ctl
    }
}
