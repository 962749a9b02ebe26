//! The controller's settings, apart so its parts can read them without
//! reaching back into the module that drives them.

use crate::{classifier::Thresholds, clock::NS_PER_SEC, event::Mode, policy::Policy};

/// The poll cadence the windows and thresholds are tuned for; the live
/// driver's default and the replay's clock step.
pub const DEFAULT_POLL_NS: u64 = NS_PER_SEC / 4;

/// How long a call's host stays under suspicion after the call's last
/// packet. Call apps that lose their media come back within seconds on a
/// new port, relay or transport, and keep trying for up to about a minute
/// (ICE restarts, WebRTC's 30 s consent timeout, apps' reconnect loops);
/// two minutes cover that, and then the host's sockets are let go.
pub const DEFAULT_HOLD_NS: u64 = 120 * NS_PER_SEC;

/// Controller settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// What to do with each call found: rules, first match wins.
    pub policy: Policy,
    /// Length of a classification window.
    pub window_ns: u64,
    /// Lifetime of a verdict without activity; refreshed while the call lasts.
    pub ttl_ns: u64,
    /// A conversation without packets for this long is forgotten.
    pub idle_ns: u64,
    /// How long a call's host stays under suspicion (and, in block mode,
    /// its socket and relays held) after the call's last packet.
    pub hold_ns: u64,
    /// Also block media that flows one way only (music on hold, broadcast legs).
    pub block_one_way: bool,
    pub thresholds: Thresholds,
    /// The DSCP mark mode writes (Expedited Forwarding by default).
    pub mark_dscp: u8,
    /// Mixed into session ids: random in a live controller, so ids say
    /// nothing about addresses; 0 in replay, so they are reproducible.
    pub session_salt: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            policy: Policy::default(),
            window_ns: NS_PER_SEC,
            ttl_ns: 60 * NS_PER_SEC,
            idle_ns: 30 * NS_PER_SEC,
            hold_ns: DEFAULT_HOLD_NS,
            block_one_way: false,
            thresholds: Thresholds::default(),
            mark_dscp: voipdetect_common::dscp::DSCP_EF,
            session_salt: 0,
        }
    }
}

impl Config {
    /// The defaults with every call handled one way (tests, replay).
    pub fn with_mode(mode: Mode) -> Self {
        Self { policy: Policy::from_mode(mode, &Default::default()), ..Self::default() }
    }
}
