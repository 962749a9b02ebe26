//! The built-in lab network: three network namespaces joined by veth pairs,
//! `client — gateway — server`, with the gateway routing between them. Used
//! by the demo and the end-to-end tests; nothing in it touches the host's
//! interfaces or routes, and addresses come from documentation prefixes.
//!
//! ```text
//!  client ns              gateway ns                 server ns
//!  c0 192.0.2.2 ── g0 192.0.2.1 | g1 198.51.100.1 ── s0 198.51.100.2
//!     2001:db8:1::2   2001:db8:1::1 | 2001:db8:2::1     2001:db8:2::2
//! ```

pub mod netns;

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

pub use netns::Netns;

pub const CLIENT_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
pub const GW_CLIENT_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
pub const GW_SERVER_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
pub const SERVER_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
pub const CLIENT_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 2);
pub const GW_CLIENT_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1);
pub const GW_SERVER_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 1);
pub const SERVER_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 2);

/// Locally administered MACs, so neighbours can be static.
const MAC_CLIENT: &str = "02:00:00:00:01:02";
const MAC_GW_CLIENT: &str = "02:00:00:00:01:01";
const MAC_GW_SERVER: &str = "02:00:00:00:02:01";
const MAC_SERVER: &str = "02:00:00:00:02:02";

/// The client — gateway — server lab.
pub struct GatewayLab {
    pub id: String,
    /// Interface names: client side, gateway's client side, gateway's
    /// server side, server side.
    pub client_if: String,
    pub gw_client_if: String,
    pub gw_server_if: String,
    pub server_if: String,
    // Dropped last-declared-last: namespaces go after anything using them.
    pub client: Netns,
    pub gateway: Netns,
    pub server: Netns,
}

impl Drop for GatewayLab {
    fn drop(&mut self) {
        // Pins a killed controller left: removing them detaches its program.
        let dir = self.pin_dir();
        if dir.exists() {
            let _ = std::fs::remove_dir_all(&dir);
        }
        let _ = std::fs::remove_file(crate::run::state_path(&dir));
    }
}

/// Fails loudly unless the process can create namespaces and load XDP.
pub fn require_root(what: &str) -> anyhow::Result<()> {
    // SAFETY: no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("{what} needs root (network namespaces, veth, XDP); run it as root, e.g. through `cargo xtask`");
    }
    Ok(())
}

impl GatewayLab {
    /// Builds the lab. Removes labs left behind by dead processes first.
    pub fn new() -> anyhow::Result<Self> {
        require_root("the lab network")?;
        netns::remove_stale();
        let id = netns::next_id();
        let client = Netns::create(&id, "cli")?;
        let gateway = Netns::create(&id, "gw")?;
        let server = Netns::create(&id, "srv")?;
        let lab = Self {
            client_if: format!("vd{id}c0"),
            gw_client_if: format!("vd{id}g0"),
            gw_server_if: format!("vd{id}g1"),
            server_if: format!("vd{id}s0"),
            id,
            client,
            gateway,
            server,
        };
        lab.wire().with_context(|| format!("building lab {}", lab.id))?;
        Ok(lab)
    }

    fn wire(&self) -> anyhow::Result<()> {
        veth(&self.client, &self.client_if, MAC_CLIENT, &self.gateway, &self.gw_client_if, MAC_GW_CLIENT)?;
        veth(&self.gateway, &self.gw_server_if, MAC_GW_SERVER, &self.server, &self.server_if, MAC_SERVER)?;
        for ns in [&self.client, &self.gateway, &self.server] {
            // Static addresses, no duplicate address detection delay.
            ns.sysctl("net.ipv6.conf.all.accept_dad", "0")?;
            ns.sysctl("net.ipv6.conf.default.accept_dad", "0")?;
        }
        self.gateway.sysctl("net.ipv4.ip_forward", "1")?;
        self.gateway.sysctl("net.ipv6.conf.all.forwarding", "1")?;

        addr(&self.client, &self.client_if, &format!("{CLIENT_V4}/24"), &format!("{CLIENT_V6}/64"))?;
        addr(&self.gateway, &self.gw_client_if, &format!("{GW_CLIENT_V4}/24"), &format!("{GW_CLIENT_V6}/64"))?;
        addr(&self.gateway, &self.gw_server_if, &format!("{GW_SERVER_V4}/24"), &format!("{GW_SERVER_V6}/64"))?;
        addr(&self.server, &self.server_if, &format!("{SERVER_V4}/24"), &format!("{SERVER_V6}/64"))?;

        for (ns, ifc) in [
            (&self.client, &self.client_if),
            (&self.gateway, &self.gw_client_if),
            (&self.gateway, &self.gw_server_if),
            (&self.server, &self.server_if),
        ] {
            ns.ip(&["link", "set", ifc, "up"])?;
        }
        // Routes inside the end namespaces only: everything goes to the gateway.
        self.client.ip(&["route", "add", "default", "via", &GW_CLIENT_V4.to_string()])?;
        self.client.ip(&["-6", "route", "add", "default", "via", &GW_CLIENT_V6.to_string()])?;
        self.server.ip(&["route", "add", "default", "via", &GW_SERVER_V4.to_string()])?;
        self.server.ip(&["-6", "route", "add", "default", "via", &GW_SERVER_V6.to_string()])?;

        neigh(&self.client, &self.client_if, &GW_CLIENT_V4.into(), MAC_GW_CLIENT)?;
        neigh(&self.client, &self.client_if, &GW_CLIENT_V6.into(), MAC_GW_CLIENT)?;
        neigh(&self.gateway, &self.gw_client_if, &CLIENT_V4.into(), MAC_CLIENT)?;
        neigh(&self.gateway, &self.gw_client_if, &CLIENT_V6.into(), MAC_CLIENT)?;
        neigh(&self.gateway, &self.gw_server_if, &SERVER_V4.into(), MAC_SERVER)?;
        neigh(&self.gateway, &self.gw_server_if, &SERVER_V6.into(), MAC_SERVER)?;
        neigh(&self.server, &self.server_if, &GW_SERVER_V4.into(), MAC_GW_SERVER)?;
        neigh(&self.server, &self.server_if, &GW_SERVER_V6.into(), MAC_GW_SERVER)?;
        Ok(())
    }

    /// Client and server addresses of one family.
    pub fn endpoints(&self, ipv6: bool) -> (IpAddr, IpAddr) {
        if ipv6 { (CLIENT_V6.into(), SERVER_V6.into()) } else { (CLIENT_V4.into(), SERVER_V4.into()) }
    }

    /// This lab's own pin directory (bpffs is not per network namespace,
    /// so every lab needs its own); removed with the lab.
    pub fn pin_dir(&self) -> std::path::PathBuf {
        std::path::PathBuf::from(format!("/sys/fs/bpf/vd-{}", self.id))
    }

    /// Starts `voipdetect run` on both gateway interfaces with `args`,
    /// JSON events on its stdout, pinning in [`GatewayLab::pin_dir`].
    pub fn start_controller(&self, binary: &std::path::Path, args: &[&str]) -> anyhow::Result<Controller> {
        let mut cmd = self.gateway.command(binary);
        cmd.args(["run", "--iface", &self.gw_client_if, "--iface", &self.gw_server_if, "--json", "--pin-dir"])
            .arg(self.pin_dir())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        Controller::spawn(cmd)
    }

    /// Whether any XDP program is attached in the gateway namespace.
    pub fn gateway_has_xdp(&self) -> anyhow::Result<bool> {
        let links = self.gateway.ip(&["link", "show"])?;
        Ok(links.contains("xdp"))
    }

    /// Ids of the XDP programs attached to the gateway's two interfaces.
    pub fn gateway_xdp_ids(&self) -> anyhow::Result<Vec<u64>> {
        let mut ids = Vec::new();
        for ifc in [&self.gw_client_if, &self.gw_server_if] {
            let out = self.gateway.ip(&["-details", "-json", "link", "show", "dev", ifc])?;
            if let Some((id, _)) = crate::datapath::xdp_prog(&out) {
                ids.push(id);
            }
        }
        Ok(ids)
    }

    /// A 64-byte UDP frame from the client to the server, addressed to the
    /// gateway's MAC, for live-frames floods out of the client's interface.
    pub fn flood_frame(&self) -> Vec<u8> {
        let mut f =
            crate::frames::FrameSpec::udp(std::net::SocketAddr::new(CLIENT_V4.into(), 1), std::net::SocketAddr::new(SERVER_V4.into(), 2))
                .build(&[0; 18]);
        f[0..6].copy_from_slice(&[2, 0, 0, 0, 1, 1]);
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 1, 2]);
        f
    }
}

fn veth(a: &Netns, a_if: &str, a_mac: &str, b: &Netns, b_if: &str, b_mac: &str) -> anyhow::Result<()> {
    netns::sh(
        "ip",
        &[
            "link",
            "add",
            a_if,
            "netns",
            a.name(),
            "address",
            a_mac,
            "type",
            "veth",
            "peer",
            "name",
            b_if,
            "netns",
            b.name(),
            "address",
            b_mac,
        ],
    )
    .map(drop)
}

fn addr(ns: &Netns, ifc: &str, v4: &str, v6: &str) -> anyhow::Result<()> {
    ns.ip(&["addr", "add", v4, "dev", ifc])?;
    ns.ip(&["-6", "addr", "add", v6, "dev", ifc, "nodad"])?;
    Ok(())
}

fn neigh(ns: &Netns, ifc: &str, ip: &IpAddr, mac: &str) -> anyhow::Result<()> {
    ns.ip(&["neigh", "replace", &ip.to_string(), "lladdr", mac, "dev", ifc, "nud", "permanent"]).map(drop)
}

/// A running `voipdetect run`; stopped with SIGTERM (then SIGKILL) on drop.
pub struct Controller {
    child: Option<Child>,
    pub events: std::sync::Mutex<std::sync::mpsc::Receiver<serde_json::Value>>,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Controller {
    fn spawn(mut cmd: Command) -> anyhow::Result<Self> {
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

impl Drop for Controller {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.stop();
        }
    }
}

/// The voipdetect binary to run in the lab: `$VOIPDETECT_BIN`, else the
/// `voipdetect` next to the running executable (or one directory up, where
/// cargo puts binaries relative to test executables in `deps/`).
pub fn voipdetect_binary() -> anyhow::Result<std::path::PathBuf> {
    if let Some(p) = std::env::var_os("VOIPDETECT_BIN") {
        return Ok(p.into());
    }
    let exe = std::env::current_exe()?;
    if exe.file_name().is_some_and(|n| n == "voipdetect") {
        return Ok(exe);
    }
    for dir in exe.ancestors().skip(1).take(2) {
        let candidate = dir.join("voipdetect");
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!("voipdetect binary not found next to {}; set VOIPDETECT_BIN", exe.display())
}
