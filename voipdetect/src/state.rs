//! The state file of a controller that pins its program: who runs it, on
//! which interfaces, in which mode. `status` shows it, and a second `run`
//! on the same pin directory reads it to refuse starting twice.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

/// Where state files live (a tmpfs: gone after a reboot, like the pins).
const STATE_DIR: &str = "/run/voipdetect";

/// What `status` reads about a running (or kept) controller.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct RunState {
    pub pid: u32,
    pub interfaces: Vec<String>,
    pub mode: String,
    pub started: String,
    pub pin_dir: String,
    pub keep_attached: bool,
}

/// Where the state file of the controller pinning in `pin_dir` lives:
/// one per pin directory, named after it.
pub fn state_path(pin_dir: &Path) -> PathBuf {
    let name = pin_dir.file_name().map_or_else(|| "voipdetect".into(), |n| n.to_string_lossy().into_owned());
    PathBuf::from(STATE_DIR).join(format!("{name}.json"))
}

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

impl RunState {
    /// The state file of `pin_dir`, if there is a readable one.
    pub fn read(pin_dir: &Path) -> Option<Self> {
        std::fs::read_to_string(state_path(pin_dir)).ok().and_then(|t| serde_json::from_str(&t).ok())
    }

    /// Writes the state file of this state's pin directory.
    pub fn write(&self) -> anyhow::Result<()> {
        let path = state_path(Path::new(&self.pin_dir));
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, serde_json::to_vec_pretty(self)?).with_context(|| format!("writing {}", path.display()))
    }

    /// Whether the process that wrote it still runs.
    pub fn running(&self) -> bool {
        pid_alive(self.pid)
    }

    /// Whether a controller in process `me` must not start beside this one:
    /// it is another process, still running, and not just keeping the
    /// program for a restart.
    fn conflicts_with(&self, me: u32) -> bool {
        self.pid != me && self.running() && !self.keep_attached
    }
}

/// Removes the state file of `pin_dir`.
pub fn remove(pin_dir: &Path) {
    let _ = std::fs::remove_file(state_path(pin_dir));
}

/// Refuses to start a second controller on a pin directory a running one uses.
pub fn check_not_running(pin_dir: Option<&Path>) -> anyhow::Result<()> {
    let Some(dir) = pin_dir else { return Ok(()) };
    match RunState::read(dir) {
        Some(st) if st.conflicts_with(std::process::id()) => {
            bail!("a voipdetect controller (pid {}) is already running with pin directory {}; stop it first", st.pid, dir.display())
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(pid: u32, keep_attached: bool) -> RunState {
        RunState {
            pid,
            interfaces: vec!["eth1".into()],
            mode: "block".into(),
            started: "2026-11-28T10:00:00.000Z".into(),
            pin_dir: "/sys/fs/bpf/voipdetect".into(),
            keep_attached,
        }
    }

    #[test]
    fn one_state_file_per_pin_directory() {
        assert_eq!(state_path(Path::new("/sys/fs/bpf/voipdetect")), Path::new("/run/voipdetect/voipdetect.json"));
        assert_eq!(state_path(Path::new("/sys/fs/bpf/vd-1x0")), Path::new("/run/voipdetect/vd-1x0.json"));
    }

    #[test]
    fn only_another_live_controller_conflicts() {
        let me = std::process::id();
        // Process 1 always runs.
        assert!(state(1, false).conflicts_with(me));
        assert!(!state(1, true).conflicts_with(me), "it only keeps the program for a restart");
        assert!(!state(me, false).conflicts_with(me), "ourselves");
        assert!(!state(u32::MAX, false).conflicts_with(me), "gone");
    }
}
