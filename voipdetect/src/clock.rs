//! Clocks and time formatting. The kernel stamps packets with
//! CLOCK_MONOTONIC ([`monotonic_ns`]); reports show wall-clock time
//! ([`unix_now_ns`], [`rfc3339`]); the controller and replay count in ns.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub const NS_PER_SEC: u64 = 1_000_000_000;

/// CLOCK_MONOTONIC in ns: the clock `bpf_ktime_get_ns` reads.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid out-pointer; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * NS_PER_SEC + ts.tv_nsec as u64
}

/// Nanoseconds since the Unix epoch now.
pub fn unix_now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// Wall-clock time of a nanosecond timestamp since the Unix epoch, RFC 3339
/// with milliseconds.
pub fn rfc3339(unix_ns: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_nanos(unix_ns)).to_string()
}

/// Nanoseconds as seconds.
pub fn secs(ns: u64) -> f64 {
    ns as f64 / NS_PER_SEC as f64
}

/// A duration in ns, saturating at u64::MAX (about 584 years).
pub fn ns(d: Duration) -> u64 {
    d.as_nanos().min(u128::from(u64::MAX)) as u64
}

/// Converts CLOCK_MONOTONIC times to wall-clock times by the offset
/// between the two clocks read once.
#[derive(Clone, Copy, Debug)]
pub struct Wall {
    unix_now: u64,
    mono_now: u64,
}

impl Wall {
    /// Reads both clocks; `mono_now` is the monotonic time the caller
    /// already holds for this instant.
    pub fn at(mono_now: u64) -> Self {
        Self { unix_now: unix_now_ns(), mono_now }
    }

    /// The wall-clock time of monotonic time `t` (never in the future of
    /// the reading).
    pub fn of(&self, t: u64) -> u64 {
        self.unix_now.saturating_sub(self.mono_now.saturating_sub(t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_has_milliseconds_and_utc() {
        assert_eq!(rfc3339(1_700_000_000_123_456_789), "2023-11-14T22:13:20.123Z");
    }

    #[test]
    fn monotonic_times_map_to_wall_times_before_the_reading() {
        let w = Wall { unix_now: 1_000 * NS_PER_SEC, mono_now: 50 * NS_PER_SEC };
        assert_eq!(w.of(50 * NS_PER_SEC), 1_000 * NS_PER_SEC);
        assert_eq!(w.of(48 * NS_PER_SEC), 998 * NS_PER_SEC);
        // A time after the reading is clamped to it.
        assert_eq!(w.of(60 * NS_PER_SEC), 1_000 * NS_PER_SEC);
        assert_eq!(secs(1_500_000_000), 1.5);
        assert_eq!(ns(Duration::MAX), u64::MAX);
    }
}
