//! The built-in lab network: three network namespaces joined by veth pairs,
//! `client — gateway — server`, with the gateway routing between them. Used
//! by the demo and the end-to-end tests; nothing in it touches the host's
//! interfaces or routes, and addresses come from documentation prefixes.
//!
//! ```text
//!  client ns              gateway ns                 server ns
//!  c0 192.0.2.2 ── g0 192.0.2.1 | g1 198.51.100.1 ── s0 198.51.100.2, .3
//!     2001:db8:1::2   2001:db8:1::1 | 2001:db8:2::1     2001:db8:2::2, ::3
//! ```
//!
//! The addresses are `voipdetect_traffic::addrs`, the ones the traffic
//! generator's synthetic captures use too.

use std::{net::IpAddr, path::PathBuf, process::Stdio};

use anyhow::{Context as _, bail};
use voipdetect::state;
use voipdetect_traffic::addrs::{
    self, CLIENT_HOSTS, CLIENT_V4, CLIENT_V6, GW_CLIENT_V4, GW_CLIENT_V6, GW_SERVER_V4, GW_SERVER_V6, SERVER_V4, SERVER_V6, SERVER2_V4,
    SERVER2_V6,
};

use crate::{
    netns::{self, Netns},
    process::ControllerProcess,
};

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
        state::remove(&dir);
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
        // A second address: a call app's second relay.
        addr(&self.server, &self.server_if, &format!("{SERVER2_V4}/24"), &format!("{SERVER2_V6}/64"))?;

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
        neigh(&self.gateway, &self.gw_server_if, &SERVER2_V4.into(), MAC_SERVER)?;
        neigh(&self.gateway, &self.gw_server_if, &SERVER2_V6.into(), MAC_SERVER)?;
        // The client's further addresses, one per user a catalogue plays.
        let (mut adds, mut neighs) = (Vec::new(), Vec::new());
        for h in 1..=CLIENT_HOSTS {
            for (ip, len) in [(addrs::client(false, h), 24), (addrs::client(true, h), 64)] {
                let nodad = if ip.is_ipv6() { " nodad" } else { "" };
                adds.push(format!("addr add {ip}/{len} dev {}{nodad}", self.client_if));
                neighs.push(format!("neigh replace {ip} lladdr {MAC_CLIENT} dev {} nud permanent", self.gw_client_if));
            }
        }
        self.client.ip_batch(&adds)?;
        self.gateway.ip_batch(&neighs)?;
        neigh(&self.server, &self.server_if, &GW_SERVER_V4.into(), MAC_GW_SERVER)?;
        neigh(&self.server, &self.server_if, &GW_SERVER_V6.into(), MAC_GW_SERVER)?;
        Ok(())
    }

    /// This lab's own pin directory (bpffs is not per network namespace,
    /// so every lab needs its own); removed with the lab.
    pub fn pin_dir(&self) -> PathBuf {
        netns::pin_dir(&self.id)
    }

    /// Starts `voipdetect run` on both gateway interfaces with `args`,
    /// JSON events on its stdout, pinning in [`GatewayLab::pin_dir`].
    pub fn start_controller(&self, binary: &std::path::Path, args: &[&str]) -> anyhow::Result<ControllerProcess> {
        let mut cmd = self.gateway.command(binary);
        cmd.args(["run", "--iface", &self.gw_client_if, "--iface", &self.gw_server_if, "--json", "--pin-dir"])
            .arg(self.pin_dir())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        ControllerProcess::spawn(cmd)
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
            if let Some((id, _)) = voipdetect::datapath::xdp_prog(&out) {
                ids.push(id);
            }
        }
        Ok(ids)
    }

    /// A 64-byte UDP frame from the client to the server, addressed to the
    /// gateway's MAC, for live-frames floods out of the client's interface.
    pub fn flood_frame(&self) -> Vec<u8> {
        let mut f = voipdetect_traffic::frames::FrameSpec::udp(
            std::net::SocketAddr::new(CLIENT_V4.into(), 1),
            std::net::SocketAddr::new(SERVER_V4.into(), 2),
        )
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

/// The voipdetect binary to run in the lab: `$VOIPDETECT_BIN`, else the
/// `voipdetect` next to the running executable (or one directory up, where
/// cargo puts binaries relative to test executables in `deps/`).
pub fn voipdetect_binary() -> anyhow::Result<PathBuf> {
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
