//! A `voipdetect run` the lab started: its JSON events and its stderr
//! collected by threads, stopped with SIGTERM (then SIGKILL) on drop.

use std::{
    process::{Child, Command},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

/// A running `voipdetect run`; stopped with SIGTERM (then SIGKILL) on drop.
pub struct ControllerProcess {
    child: Option<Child>,
    pub events: std::sync::Mutex<std::sync::mpsc::Receiver<serde_json::Value>>,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

impl ControllerProcess {
    pub(crate) fn spawn(mut cmd: Command) -> anyhow::Result<Self> {
        let mut child = cmd.spawn().context("starting voipdetect run")?;
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str(&line)
                    && tx.send(v).is_err()
                {
                    break;
                }
            }
        });
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let log2 = log.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(mut l) = log2.lock() {
                    l.push_str(&line);
                    l.push('\n');
                }
            }
        });
        Ok(Self { child: Some(child), events: std::sync::Mutex::new(rx), stderr: log })
    }

    /// Waits until the controller reports it is attached (or fails).
    pub fn wait_attached(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.stderr_text().matches("attached to").count() >= 2 {
                return Ok(());
            }
            if let Some(child) = &mut self.child
                && let Some(status) = child.try_wait()?
            {
                bail!("voipdetect run exited with {status}: {}", self.stderr_text().trim());
            }
            if Instant::now() > deadline {
                bail!("voipdetect run did not attach within {timeout:?}: {}", self.stderr_text().trim());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The controller's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// SIGKILL, as a crash would: no cleanup runs.
    pub fn kill_hard(&mut self) -> anyhow::Result<()> {
        if let Some(mut c) = self.child.take() {
            c.kill()?;
            c.wait()?;
        }
        Ok(())
    }

    /// Everything the controller wrote to stderr so far.
    pub fn stderr_text(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Stops it with SIGTERM and waits (bounded); returns its exit status.
    pub fn stop(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        self.signal_and_wait(libc::SIGTERM)
    }

    /// Sends `signal` and waits up to 10 s (then SIGKILL) for the exit.
    pub fn signal_and_wait(&mut self, signal: i32) -> anyhow::Result<std::process::ExitStatus> {
        let Some(mut child) = self.child.take() else { bail!("already stopped") };
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as libc::pid_t, signal) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let status = child.wait()?;
                bail!("voipdetect run ignored signal {signal} for 10 s; killed ({status})");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Drains the events received so far.
    pub fn drain(&self) -> Vec<serde_json::Value> {
        self.events.lock().map(|rx| rx.try_iter().collect()).unwrap_or_default()
    }

    /// Waits up to `timeout` for the next event.
    pub fn next_event(&self, timeout: Duration) -> Option<serde_json::Value> {
        self.events.lock().ok()?.recv_timeout(timeout).ok()
    }
}

impl Drop for ControllerProcess {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.stop();
        }
    }
}
