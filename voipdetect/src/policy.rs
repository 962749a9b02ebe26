//! What the controller does with a call it found: an ordered list of rules
//! (networks, ports, interfaces, a weekly schedule) each naming an action,
//! the first match deciding, a default otherwise. `mode` and the allowlist
//! of older configurations are shorthands for a default and a first rule.

use ipnet::IpNet;
use jiff::{Timestamp, tz::TimeZone};
use voipdetect_common::FlowKey;

use crate::{event::Mode, key::addr};

/// What a rule asks for a call it matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleAction {
    /// Drop the call (and hold its endpoints, as `mode = "block"` does).
    Block,
    /// Rewrite the DSCP of both directions (Expedited Forwarding unless
    /// `mark_dscp` says otherwise) so the next hops prioritise the call.
    Mark,
    /// Report only.
    Monitor,
    /// Exempt: reported as allowed, never blocked.
    Allow,
}

impl RuleAction {
    pub fn name(self) -> &'static str {
        match self {
            RuleAction::Block => "block",
            RuleAction::Mark => "mark",
            RuleAction::Monitor => "monitor",
            RuleAction::Allow => "allow",
        }
    }
}

impl std::str::FromStr for RuleAction {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "block" => Ok(RuleAction::Block),
            "monitor" => Ok(RuleAction::Monitor),
            "allow" => Ok(RuleAction::Allow),
            "mark" => Ok(RuleAction::Mark),
            _ => Err(format!("{s:?} is not one of block, mark, monitor, allow")),
        }
    }
}

impl From<Mode> for RuleAction {
    fn from(m: Mode) -> Self {
        match m {
            Mode::Monitor => RuleAction::Monitor,
            Mode::Block => RuleAction::Block,
            Mode::Mark => RuleAction::Mark,
        }
    }
}

/// Days and a time of day, in one time zone. A range whose end is before
/// its start runs past midnight (22:00-06:00): the night that starts on a
/// listed day.
#[derive(Clone, Debug)]
pub struct Schedule {
    /// Monday first.
    pub days: [bool; 7],
    /// Minutes after midnight: [from, to).
    pub from_min: u16,
    pub to_min: u16,
    pub tz: TimeZone,
}

impl PartialEq for Schedule {
    fn eq(&self, o: &Self) -> bool {
        (self.days, self.from_min, self.to_min, self.tz.iana_name()) == (o.days, o.from_min, o.to_min, o.tz.iana_name())
    }
}

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
const FULL_DAYS: [&str; 7] = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"];

impl Schedule {
    /// `days` as "mon".."sun" (or "daily", "weekdays", "weekend"), `hours`
    /// as "HH:MM-HH:MM" (None: all day), `tz` an IANA name (None: the
    /// machine's zone). Errors name the part that is wrong.
    pub fn parse(days: &[String], hours: Option<&str>, tz: Option<&str>) -> Result<Self, (&'static str, String)> {
        let mut d = [false; 7];
        if days.is_empty() {
            d = [true; 7];
        }
        for day in days {
            match day.to_ascii_lowercase().as_str() {
                "daily" => d = [true; 7],
                "weekdays" => d[..5].fill(true),
                "weekend" => d[5..].fill(true),
                other => match DAYS.iter().position(|n| *n == other).or_else(|| FULL_DAYS.iter().position(|n| *n == other)) {
                    Some(i) => d[i] = true,
                    None => return Err(("days", format!("{day:?} is not a day (mon .. sun, weekdays, weekend, daily)"))),
                },
            }
        }
        let (from_min, to_min) = match hours {
            None => (0, 24 * 60),
            Some(h) => {
                let bad = || ("hours", format!("{h:?} is not HH:MM-HH:MM"));
                let (a, b) = h.split_once('-').ok_or_else(bad)?;
                let minutes = |t: &str| -> Option<u16> {
                    let (hh, mm) = t.trim().split_once(':')?;
                    let (hh, mm): (u16, u16) = (hh.parse().ok()?, mm.parse().ok()?);
                    (mm < 60 && (hh < 24 || (hh == 24 && mm == 0))).then_some(hh * 60 + mm)
                };
                let (a, b) = (minutes(a).ok_or_else(bad)?, minutes(b).ok_or_else(bad)?);
                if a == b {
                    return Err(("hours", format!("{h:?} is empty")));
                }
                (a, b)
            }
        };
        let tz = match tz {
            None => TimeZone::system(),
            Some(name) => TimeZone::get(name).map_err(|e| ("timezone", format!("{name:?}: {e}")))?,
        };
        Ok(Self { days: d, from_min, to_min, tz })
    }

    /// Whether the schedule is on at `unix_ns`.
    pub fn active(&self, unix_ns: u64) -> bool {
        let Ok(t) = Timestamp::from_nanosecond(i128::from(unix_ns)) else { return false };
        let z = t.to_zoned_datetime(self.tz.clone());
        let day = z.weekday().to_monday_zero_offset() as usize;
        let minute = z.hour() as u16 * 60 + z.minute() as u16;
        if self.from_min < self.to_min {
            self.days[day] && (self.from_min..self.to_min).contains(&minute)
        } else {
            // Past midnight: the evening part on a listed day, the morning
            // part on the day after one.
            (self.days[day] && minute >= self.from_min) || (self.days[(day + 6) % 7] && minute < self.to_min)
        }
    }
}

/// One rule: every condition given must hold.
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    pub name: String,
    pub action: RuleAction,
    /// The side that sent first is in one of these.
    pub clients: Vec<IpNet>,
    /// The other side is in one of these.
    pub servers: Vec<IpNet>,
    /// Either side is in one of these.
    pub networks: Vec<IpNet>,
    /// Either side uses one of these ports.
    pub ports: Vec<u16>,
    /// The conversation arrives on one of these interfaces (either
    /// direction), by name; `ifindexes` once resolved.
    pub interfaces: Vec<String>,
    pub ifindexes: Vec<u32>,
    pub schedule: Option<Schedule>,
}

impl Rule {
    pub fn new(name: impl Into<String>, action: RuleAction) -> Self {
        Self {
            name: name.into(),
            action,
            clients: Vec::new(),
            servers: Vec::new(),
            networks: Vec::new(),
            ports: Vec::new(),
            interfaces: Vec::new(),
            ifindexes: Vec::new(),
            schedule: None,
        }
    }

    /// `key` oriented as its initiator sent it; `ifindexes` where each
    /// direction arrives (0: not seen, or a replay).
    fn matches(&self, key: &FlowKey, ifindexes: [u32; 2], unix_ns: u64) -> bool {
        let (client, server) = (addr(key, true), addr(key, false));
        let within = |nets: &[IpNet], a: &std::net::IpAddr| nets.iter().any(|n| n.contains(a));
        (self.clients.is_empty() || within(&self.clients, &client))
            && (self.servers.is_empty() || within(&self.servers, &server))
            && (self.networks.is_empty() || within(&self.networks, &client) || within(&self.networks, &server))
            && (self.ports.is_empty() || self.ports.contains(&key.sport) || self.ports.contains(&key.dport))
            && (self.interfaces.is_empty() || ifindexes.iter().any(|i| *i != 0 && self.ifindexes.contains(i)))
            && self.schedule.as_ref().is_none_or(|s| s.active(unix_ns))
    }
}

/// The rules in order and the action when none matches.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    pub rules: Vec<Rule>,
    pub default: RuleAction,
}

impl Default for Policy {
    fn default() -> Self {
        Self { rules: Vec::new(), default: RuleAction::Monitor }
    }
}

/// What the policy says about one call, and which rule said it.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub action: RuleAction,
    /// The rule's name, or "default".
    pub rule: String,
}

/// The name decisions by the default action carry.
pub const DEFAULT_RULE: &str = "default";

/// The rule name an `[allowlist]` section becomes.
pub const ALLOWLIST_RULE: &str = "allowlist";

impl Policy {
    /// The older shorthand: `mode` the default, the allowlist a first rule
    /// that allows (an allowlisted call is reported, never blocked).
    pub fn from_mode(mode: Mode, allowlist: &Allowlist) -> Self {
        let mut p = Policy { rules: Vec::new(), default: mode.into() };
        p.push_allowlist(allowlist);
        p
    }

    /// Puts the allowlist's rule first (if it lists anything).
    pub fn push_allowlist(&mut self, a: &Allowlist) {
        if !a.cidrs.is_empty() {
            let mut r = Rule::new(ALLOWLIST_RULE, RuleAction::Allow);
            r.networks = a.cidrs.clone();
            self.rules.insert(0, r);
        }
        if !a.ports.is_empty() {
            let mut r = Rule::new(ALLOWLIST_RULE, RuleAction::Allow);
            r.ports = a.ports.clone();
            self.rules.insert(0, r);
        }
    }

    /// Whether any rule or the default can block (holds are kept only then).
    pub fn may_block(&self) -> bool {
        self.default == RuleAction::Block || self.rules.iter().any(|r| r.action == RuleAction::Block)
    }

    /// The first rule that matches, else the default.
    pub fn decide(&self, key: &FlowKey, ifindexes: [u32; 2], unix_ns: u64) -> Decision {
        match self.rules.iter().find(|r| r.matches(key, ifindexes, unix_ns)) {
            Some(r) => Decision { action: r.action, rule: r.name.clone() },
            None => Decision { action: self.default, rule: DEFAULT_RULE.into() },
        }
    }

    /// Resolves every rule's interface names with `ifindex`.
    pub fn resolve_interfaces(&mut self, ifindex: impl Fn(&str) -> anyhow::Result<u32>) -> anyhow::Result<()> {
        for r in &mut self.rules {
            r.ifindexes = r.interfaces.iter().map(|n| ifindex(n)).collect::<anyhow::Result<_>>()?;
        }
        Ok(())
    }
}

/// Flows never blocked: any endpoint inside one of `cidrs`, or using one of
/// `ports` (the `[allowlist]` section; a shorthand for an `allow` rule).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Allowlist {
    pub cidrs: Vec<IpNet>,
    pub ports: Vec<u16>,
}

impl Allowlist {
    pub fn is_empty(&self) -> bool {
        self.cidrs.is_empty() && self.ports.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::parse_flow;

    /// 2026-11-30 was a Monday; this is 12:00 UTC that day.
    const MONDAY_NOON_UTC: u64 = 1_796_040_000_000_000_000;
    const HOUR: u64 = 3_600_000_000_000;

    fn key(src: &str, dst: &str) -> FlowKey {
        parse_flow("udp", src, dst).unwrap()
    }

    #[test]
    fn the_test_clock_is_what_it_says() {
        let z = Timestamp::from_nanosecond(i128::from(MONDAY_NOON_UTC)).unwrap().to_zoned_datetime(TimeZone::UTC);
        assert_eq!((z.weekday().to_monday_zero_offset(), z.hour(), z.minute()), (0, 12, 0));
    }

    #[test]
    fn allowlist_matches_addresses_and_ports() {
        let a = Allowlist { cidrs: vec!["192.0.2.0/24".parse().unwrap()], ports: vec![5060] };
        let p = Policy::from_mode(Mode::Block, &a);
        let at = |k: &FlowKey| p.decide(k, [0, 0], MONDAY_NOON_UTC);
        assert_eq!(at(&key("198.51.100.2:40000", "203.0.113.9:5004")), Decision { action: RuleAction::Block, rule: "default".into() });
        assert_eq!(at(&key("198.51.100.2:40000", "192.0.2.77:5004")).action, RuleAction::Allow);
        assert_eq!(at(&key("198.51.100.2:40000", "203.0.113.9:5060")), Decision { action: RuleAction::Allow, rule: "allowlist".into() });
    }

    #[test]
    fn first_match_wins_and_clients_servers_networks_mean_what_they_say() {
        let mut guest = Rule::new("guest", RuleAction::Block);
        guest.clients = vec!["10.20.0.0/16".parse().unwrap()];
        let mut staff = Rule::new("staff", RuleAction::Allow);
        staff.networks = vec!["10.30.0.0/16".parse().unwrap()];
        let mut trunk = Rule::new("trunk", RuleAction::Monitor);
        trunk.servers = vec!["192.0.2.0/24".parse().unwrap()];
        let p = Policy { rules: vec![trunk, guest, staff], default: RuleAction::Monitor };
        let rule = |src, dst| p.decide(&key(src, dst), [0, 0], MONDAY_NOON_UTC).rule;
        assert_eq!(rule("10.20.1.1:4000", "203.0.113.9:3478"), "guest");
        // The guest as the called side is not a client.
        assert_eq!(rule("203.0.113.9:3478", "10.20.1.1:4000"), "default");
        assert_eq!(rule("203.0.113.9:3478", "10.30.1.1:4000"), "staff");
        // Earlier rules win: a guest calling the trunk is only monitored.
        assert_eq!(rule("10.20.1.1:4000", "192.0.2.5:5060"), "trunk");
    }

    #[test]
    fn interfaces_match_either_direction() {
        let mut r = Rule::new("wifi", RuleAction::Block);
        r.interfaces = vec!["wlan0".into()];
        let mut p = Policy { rules: vec![r], default: RuleAction::Monitor };
        p.resolve_interfaces(|n| if n == "wlan0" { Ok(7) } else { anyhow::bail!("unknown") }).unwrap();
        let k = key("10.0.0.1:1", "10.0.0.2:2");
        assert_eq!(p.decide(&k, [3, 7], MONDAY_NOON_UTC).action, RuleAction::Block);
        assert_eq!(p.decide(&k, [3, 0], MONDAY_NOON_UTC).action, RuleAction::Monitor);
        let mut bad = p.clone();
        bad.rules[0].interfaces = vec!["nosuch".into()];
        assert!(bad.resolve_interfaces(|_| anyhow::bail!("unknown interface")).is_err());
    }

    #[test]
    fn schedules_follow_days_hours_and_time_zones() {
        let days = |d: &[&str]| d.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let office = Schedule::parse(&days(&["weekdays"]), Some("08:00-18:00"), Some("UTC")).unwrap();
        assert!(office.active(MONDAY_NOON_UTC));
        assert!(!office.active(MONDAY_NOON_UTC + 7 * HOUR), "19:00");
        assert!(!office.active(MONDAY_NOON_UTC - 5 * HOUR), "07:00");
        assert!(!office.active(MONDAY_NOON_UTC + 5 * 24 * HOUR), "Saturday");
        // The same hours in Tokyo (UTC+9): Monday 12:00 UTC is 21:00 there.
        let tokyo = Schedule::parse(&days(&["mon"]), Some("08:00-18:00"), Some("Asia/Tokyo")).unwrap();
        assert!(!tokyo.active(MONDAY_NOON_UTC));
        assert!(tokyo.active(MONDAY_NOON_UTC - 4 * HOUR), "Monday 17:00 in Tokyo");
        // Past midnight: the night that starts on Sunday reaches into Monday.
        let night = Schedule::parse(&days(&["sun"]), Some("22:00-06:00"), Some("UTC")).unwrap();
        assert!(night.active(MONDAY_NOON_UTC - 8 * HOUR), "Monday 04:00");
        assert!(!night.active(MONDAY_NOON_UTC), "Monday 12:00");
        assert!(night.active(MONDAY_NOON_UTC - 13 * HOUR), "Sunday 23:00");
        assert!(!night.active(MONDAY_NOON_UTC + 11 * HOUR), "Monday 23:00");
        // A rule with a schedule applies only while it is on.
        let mut r = Rule::new("office", RuleAction::Block);
        r.schedule = Some(office);
        let p = Policy { rules: vec![r], default: RuleAction::Monitor };
        let k = key("10.0.0.1:1", "10.0.0.2:2");
        assert_eq!(p.decide(&k, [0, 0], MONDAY_NOON_UTC).rule, "office");
        assert_eq!(p.decide(&k, [0, 0], MONDAY_NOON_UTC + 7 * HOUR).rule, "default");
    }

    #[test]
    fn bad_schedules_name_their_part() {
        let days = |d: &[&str]| d.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(Schedule::parse(&days(&["someday"]), None, None).unwrap_err().0, "days");
        assert_eq!(Schedule::parse(&[], Some("8-18"), None).unwrap_err().0, "hours");
        assert_eq!(Schedule::parse(&[], Some("25:00-26:00"), None).unwrap_err().0, "hours");
        assert_eq!(Schedule::parse(&[], Some("08:00-08:00"), None).unwrap_err().0, "hours");
        assert_eq!(Schedule::parse(&[], None, Some("Mars/Olympus")).unwrap_err().0, "timezone");
        assert_eq!("mark".parse::<RuleAction>(), Ok(RuleAction::Mark));
        assert!("drop".parse::<RuleAction>().unwrap_err().contains("block, mark, monitor, allow"));
    }
}
