//! voipdetect's traffic generator, without I/O: what the demo, the tests,
//! the benchmarks and the accuracy report send, described as data. Tooling
//! only; the shipped binary does not link it.
//!
//! - [`pattern`]: flows as schedules of payloads (calls and their evasions,
//!   and the look-alikes that must never be called);
//! - [`calls`]: calls spread over several conversations, the way call apps
//!   route around a block (split relays, port hops, a fallback to TCP);
//! - [`frames`]: Ethernet frames built with etherparse;
//! - [`synth`]: a flow's frames as the gateway would capture them;
//! - [`corpus`]: the whole catalogue as labelled captures, in memory;
//! - [`addrs`]: the addresses generated flows use (the lab's client and server).
//!
//! `voipdetect-lab` plays the same flows through sockets in its namespaces.

pub mod addrs;
pub mod calls;
pub mod corpus;
pub mod frames;
pub mod pattern;
pub mod synth;

use std::time::Duration;

/// How a flow is carried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        }
    }
}

/// One payload and when to send it, relative to the flow's start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub at: Duration,
    pub payload: Vec<u8>,
}

/// A conversation between the lab's client and server.
#[derive(Clone, Debug)]
pub struct Flow {
    pub name: String,
    pub transport: Transport,
    pub ipv6: bool,
    pub client_port: u16,
    pub server_port: u16,
    /// Client to server.
    pub up: Vec<Frame>,
    /// Server to client.
    pub down: Vec<Frame>,
    /// TCP only: bytes the client writes as fast as it can (a bulk transfer).
    pub bulk_bytes: u64,
    /// What a correct classifier says about it.
    pub is_call: bool,
    /// Which of the server's addresses the flow uses: 0 its first, 1 its
    /// second (a second relay of a call app).
    pub relay: u8,
    /// Which of the client's addresses: 0 its first; catalogues give each
    /// flow a host of its own (see `addrs::CLIENT_HOSTS`), as if each were
    /// another user, so one flow's verdict never colours another's.
    pub client: u8,
    /// The client's socket is shared with other flows of the same call:
    /// one local port talking to several relays.
    pub shared_socket: bool,
    /// Part of a call that reacts to loss (live only: a synthetic capture
    /// plays the schedule as written).
    pub adaptive: Option<Adaptive>,
}

/// A call that moves to TCP when its UDP media stops arriving, the way
/// real apps react to loss: its UDP flow and its TCP flow share a `group`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Adaptive {
    pub group: u16,
    pub leg: AdaptiveLeg,
    /// How long media may stay away before the client gives up on UDP.
    pub loss_timeout: Duration,
}

/// Which flow of an adaptive call this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdaptiveLeg {
    /// The UDP flow the call starts on.
    Udp,
    /// The TCP flow it falls back to; its frames before the fallback are
    /// never sent live.
    TcpFallback,
}

/// A call made of several conversations.
#[derive(Clone, Debug)]
pub struct Call {
    pub name: String,
    pub legs: Vec<Flow>,
}

impl Flow {
    /// Time of the last scheduled frame.
    pub fn span(&self) -> Duration {
        self.up.iter().chain(&self.down).map(|f| f.at).max().unwrap_or_default()
    }

    /// The flow as a jittery path delivers it: each frame of either
    /// direction held up by up to `max` (uniformly, seeded), never
    /// overtaking the one before, so a late frame's successors catch up
    /// back to back.
    pub fn jittered(&self, max: Duration, seed: u64) -> Flow {
        use rand::{Rng as _, SeedableRng as _, rngs::SmallRng};
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut delay = |frames: &[Frame]| -> Vec<Frame> {
            let mut last = Duration::ZERO;
            frames
                .iter()
                .map(|f| {
                    last = last.max(f.at + max.mul_f64(rng.random_range(0.0..1.0)));
                    Frame { at: last, payload: f.payload.clone() }
                })
                .collect()
        };
        let (up, down) = (delay(&self.up), delay(&self.down));
        Flow { name: format!("{}, jittered up to {:?}", self.name, max), up, down, ..self.clone() }
    }

    /// The flow as a lossy link delivers it: each frame of either direction
    /// lost with probability `share`, independently (seeded, so a test
    /// sees the same losses every run).
    pub fn lossy(&self, share: f64, seed: u64) -> Flow {
        use rand::{Rng as _, SeedableRng as _, rngs::SmallRng};
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut keep = |frames: &[Frame]| -> Vec<Frame> { frames.iter().filter(|_| !rng.random_bool(share)).cloned().collect() };
        let (up, down) = (keep(&self.up), keep(&self.down));
        Flow { name: format!("{}, {:.0} % lost", self.name, share * 100.0), up, down, ..self.clone() }
    }
}
