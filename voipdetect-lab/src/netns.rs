//! Network namespaces the lab creates and always removes: on drop, on
//! panic (drop runs while unwinding), and at the next start if a process
//! died without dropping (names carry the creating pid).

use std::{
    fs::File,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
};

use anyhow::{Context as _, bail};
use voipdetect::datapath::pins::BPF_FS_ROOT;

/// Prefix of every namespace the lab creates.
pub const PREFIX: &str = "vd-";

/// The pin directory of the lab with id `id`: bpffs is not per network
/// namespace, so every lab needs its own.
pub fn pin_dir(id: &str) -> PathBuf {
    Path::new(BPF_FS_ROOT).join(format!("{PREFIX}{id}"))
}

/// Runs a command, failing with its stderr.
pub fn sh(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(program).args(args).stdin(Stdio::null()).output().with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!("{program} {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A unique id for this process's next lab: `<pid hex>x<counter hex>`.
pub fn next_id() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    format!("{:x}x{:x}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// A network namespace, deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates `vd-<id>-<role>`.
    pub fn create(id: &str, role: &str) -> anyhow::Result<Self> {
        let name = format!("{PREFIX}{id}-{role}");
        sh("ip", &["netns", "add", &name]).with_context(|| format!("creating network namespace {name}"))?;
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n <ns> ARGS`.
    pub fn ip(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut full = vec!["-n", &self.name];
        full.extend_from_slice(args);
        sh("ip", &full)
    }

    /// `ip -n <ns> -batch -` with one command per line on its stdin: one
    /// process for many commands.
    pub fn ip_batch(&self, lines: &[String]) -> anyhow::Result<()> {
        use std::io::Write as _;
        let mut child = Command::new("ip")
            .args(["-n", &self.name, "-batch", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("running ip -batch")?;
        child.stdin.take().expect("piped").write_all(lines.join("\n").as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!("ip -batch in {}: {}", self.name, String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(())
    }

    /// Runs a program inside the namespace and waits for it.
    pub fn exec(&self, program: &str, args: &[&str]) -> anyhow::Result<String> {
        let mut full = vec!["netns", "exec", &self.name, program];
        full.extend_from_slice(args);
        sh("ip", &full)
    }

    /// A command that will run inside the namespace. Unlike `ip netns
    /// exec`, only the network namespace changes: the child keeps the
    /// host's mounts, so /sys/fs/bpf (where a controller pins) is shared.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        use std::os::unix::process::CommandExt as _;
        let path = Path::new("/run/netns").join(&self.name);
        let fd = File::open(&path).map(std::os::fd::OwnedFd::from);
        let mut c = Command::new(program);
        match fd {
            Ok(fd) => {
                // SAFETY: between fork and exec the closure only calls
                // setns(2), which is async-signal-safe, on an fd opened
                // before the fork and kept alive by the closure.
                unsafe {
                    c.pre_exec(move || {
                        if libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                        Ok(())
                    });
                }
            }
            Err(e) => {
                // Make the spawn fail with the reason.
                let msg = format!("{}: {e}", path.display());
                // SAFETY: only builds an error value.
                unsafe { c.pre_exec(move || Err(std::io::Error::other(msg.clone()))) };
            }
        }
        c
    }

    /// Sets a sysctl inside the namespace.
    pub fn sysctl(&self, key: &str, value: &str) -> anyhow::Result<()> {
        self.exec("sysctl", &["-q", "-w", &format!("{key}={value}")]).map(drop)
    }

    /// Moves the calling thread into the namespace; sockets it opens from
    /// then on live there. Only network namespaces are per-thread, which is
    /// what makes this safe in a multi-threaded process.
    pub fn enter(&self) -> anyhow::Result<()> {
        enter(&self.name)
    }
}

/// Moves the calling thread into the named network namespace (see [`Netns::enter`]).
pub fn enter(name: &str) -> anyhow::Result<()> {
    {
        let path = Path::new("/run/netns").join(name);
        let f = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        // SAFETY: valid fd of a network namespace; affects this thread only.
        if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error()).context("setns");
        }
        Ok(())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = sh("ip", &["netns", "del", &self.name]) {
            eprintln!("warning: removing network namespace {}: {e:#}", self.name);
        }
    }
}

/// Runs `f` on a thread inside network namespace `ns` (the calling
/// thread's own namespace is left alone).
pub fn in_ns<T: Send>(ns: &str, f: impl FnOnce() -> anyhow::Result<T> + Send) -> anyhow::Result<T> {
    std::thread::scope(|s| s.spawn(|| enter(ns).and_then(|()| f())).join().map_err(|_| anyhow::anyhow!("thread in {ns} panicked"))?)
}

/// Deletes lab namespaces whose creating process no longer exists.
pub fn remove_stale() {
    let Ok(list) = sh("ip", &["netns", "list"]) else { return };
    for line in list.lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix(PREFIX) else { continue };
        let pid_hex = rest.split(['x', '-']).next().unwrap_or("");
        let Ok(pid) = u32::from_str_radix(pid_hex, 16) else { continue };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = sh("ip", &["netns", "del", name]);
            if let Some((id, _role)) = rest.rsplit_once('-') {
                let _ = std::fs::remove_dir_all(pin_dir(id));
            }
        }
    }
}
