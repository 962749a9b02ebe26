//! The controller's vocabulary: what it is asked to do ([`Mode`]), what it
//! says ([`Event`]) and what it asks the driver to change in the kernel
//! ([`Command`]). Reports, metrics, outputs and the configuration speak it
//! without depending on the controller itself.

use voipdetect_common::{BlockEntry, FlowKey, HoldEntry, HoldKey};

/// Report only, also block, or prioritise (mark): what happens to a call
/// no rule names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Mode {
    #[default]
    Monitor,
    Block,
    /// Rewrite the call's DSCP (Expedited Forwarding unless configured).
    Mark,
}

impl Mode {
    /// The name used in flags, the configuration and the state file.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Monitor => "monitor",
            Mode::Block => "block",
            Mode::Mark => "mark",
        }
    }
}

impl std::str::FromStr for Mode {
    type Err = String;

    /// The same spellings clap accepts for `--mode`.
    fn from_str(s: &str) -> Result<Self, String> {
        <Mode as clap::ValueEnum>::from_str(s, false).map_err(|_| format!("{s:?} is not one of monitor, block, mark"))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    Verdict,
    Release,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Blocked,
    /// Passed with its DSCP rewritten (mark mode).
    Marked,
    Reported,
}

impl Action {
    /// Blocked or marked: the blocklist holds the call.
    pub fn listed(self) -> bool {
        self != Action::Reported
    }

    pub fn name(self) -> &'static str {
        match self {
            Action::Blocked => "blocked",
            Action::Marked => "marked",
            Action::Reported => "reported",
        }
    }
}

/// What the controller called a conversation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Label {
    /// A two-way call.
    Voip,
    /// Real-time media flowing one way.
    Media,
}

/// What a verdict rests on: a label with few values for metrics and
/// reports, so nothing has to parse reason strings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Basis {
    /// Media headers in sequence (RTP, RTP framed in another layer, IAX2).
    Rtp,
    /// A media session's set-up (STUN, DTLS, RTCP), then voice-shaped packets.
    Handshake,
    /// Voice windows in a row, by behaviour alone.
    Behaviour,
    /// A video stream with voice or video the other way.
    Video,
    /// One socket sending voice to one peer and receiving voice from another.
    Session,
    /// A new conversation of a host or socket whose call was just found,
    /// on lighter evidence.
    Held,
}

impl Basis {
    pub fn name(self) -> &'static str {
        match self {
            Basis::Rtp => "rtp",
            Basis::Handshake => "handshake",
            Basis::Behaviour => "behaviour",
            Basis::Video => "video",
            Basis::Session => "session",
            Basis::Held => "held",
        }
    }
}

/// A session's stable id: 48 bits, shown as 12 hex digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub u64);

impl std::fmt::Display for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:012x}", self.0 & 0xffff_ffff_ffff)
    }
}

/// A verdict or its release.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub kind: EventKind,
    pub at_ns: u64,
    /// The conversation, as sent by its initiator (first packet seen).
    pub key: FlowKey,
    /// Interface the initiator's packets arrive on (0 in replay).
    pub ifindex: u32,
    pub label: Label,
    pub action: Action,
    pub basis: Basis,
    pub reason: String,
    /// The policy rule that decided the action ("default": none matched).
    pub rule: String,
    /// The session (the call) this conversation belongs to...
    pub session: SessionId,
    /// ...and every conversation the session spans so far (canonical keys).
    pub conversations: Vec<FlowKey>,
    /// Payload packets per second, both directions together.
    pub pps: f64,
    /// Mean payload size over both directions.
    pub mean_size: f64,
    /// Seconds from the conversation's first packet to this event.
    pub duration_s: f64,
    /// Conversation's first packet.
    pub first_seen_ns: u64,
    /// Latest packet of either direction.
    pub last_seen_ns: u64,
    /// Packets (all kinds, dropped included) and payload bytes, initiator's
    /// direction first.
    pub packets: [u64; 2],
    pub bytes: [u64; 2],
}

/// A change the driver applies to the kernel maps.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// List both directions until `entry.expires_ns`. A `refresh` extends
    /// a block this controller wrote before: if an operator has lifted it
    /// meanwhile (`voipdetect unblock`), the driver calls the controller's
    /// `lift` instead of listing the flow again.
    Block { keys: [FlowKey; 2], entry: BlockEntry, refresh: bool },
    /// Take both directions off the blocklist.
    Unblock { keys: [FlowKey; 2] },
    /// Forget idle flows.
    Forget { keys: [FlowKey; 2] },
    /// Count both directions as media (gaps, header checks) or plain.
    Media { keys: [FlowKey; 2], on: bool },
    /// Drop new conversations matching `key` from their first packet
    /// until `entry.expires_ns` (block mode, while a call's session lasts).
    Hold { key: HoldKey, entry: HoldEntry },
    /// End a hold.
    Unhold { key: HoldKey },
}

/// Events and commands produced by one poll.
#[derive(Debug, Default)]
pub struct PollOutput {
    pub events: Vec<Event>,
    pub commands: Vec<Command>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_as_the_flag_spells_them() {
        for m in [Mode::Monitor, Mode::Block, Mode::Mark] {
            assert_eq!(m.name().parse::<Mode>(), Ok(m));
        }
        assert!("drop".parse::<Mode>().unwrap_err().contains("monitor, block, mark"));
    }
}
