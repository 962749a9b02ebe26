//! Facts about the host the program runs on: interfaces, capabilities,
//! the BPF filesystem, what is already attached to an interface, and its
//! random pool.

use std::{ffi::CString, path::Path};

use anyhow::{Context as _, anyhow, bail};
use log::info;

use super::pins::BPF_FS_ROOT;

/// bpffs's magic number (linux/magic.h).
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

fn on_bpffs(path: &Path) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_encoded_bytes()) else { return false };
    // SAFETY: a zeroed statfs is a valid out-buffer; `c` is NUL-terminated.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as i64 == BPF_FS_MAGIC }
}

/// Makes sure `dir` can hold pins: mounts the BPF filesystem on
/// /sys/fs/bpf when it is not there yet (as bpftool and Cilium do), and
/// refuses a directory on any other filesystem.
pub(super) fn ensure_bpffs(dir: &Path) -> anyhow::Result<()> {
    let existing = dir.ancestors().find(|a| a.exists()).unwrap_or(Path::new("/"));
    if on_bpffs(existing) {
        return Ok(());
    }
    if dir.starts_with(BPF_FS_ROOT) && existing.starts_with("/sys") {
        let (src, target, fstype) = (c"bpf", CString::new(BPF_FS_ROOT)?, c"bpf");
        // SAFETY: NUL-terminated strings; a plain mount of a pseudo filesystem.
        let r = unsafe { libc::mount(src.as_ptr(), target.as_ptr(), fstype.as_ptr(), 0, c"mode=0700".as_ptr().cast()) };
        if r != 0 {
            return Err(std::io::Error::last_os_error()).with_context(|| format!("mounting the BPF filesystem on {BPF_FS_ROOT}"));
        }
        info!("mounted the BPF filesystem on {BPF_FS_ROOT}");
        return Ok(());
    }
    bail!("pin directory {} is not on a BPF filesystem (mount -t bpf bpf DIR)", dir.display())
}

/// Whether this process has a mount namespace of its own (as under `ip
/// netns exec` or `unshare -m`, which unshare one and then exec us): a BPF
/// filesystem mounted there, and the pins in it, go when the process
/// exits. Compared with the parent's namespace (the shell or service
/// manager that started us), else with init's; false when neither can be
/// read.
pub fn private_mount_namespace() -> bool {
    use std::os::unix::fs::MetadataExt as _;
    let ns = |pid: &str| std::fs::metadata(format!("/proc/{pid}/ns/mnt")).ok().map(|m| (m.dev(), m.ino()));
    // SAFETY: no preconditions.
    let parent = unsafe { libc::getppid() };
    let Some(own) = ns("self") else { return false };
    match ns(&parent.to_string()).or_else(|| ns("1")) {
        Some(other) => own != other,
        None => false,
    }
}

/// Makes a pinned object readable and writable by root only.
pub(super) fn restrict(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).with_context(|| format!("chmod 0600 {}", path.display()))
}

/// The XDP program attached to an interface, if any: (id, name), from
/// `ip -details -json link show`.
pub(super) fn attached_xdp(iface: &str) -> Option<(u64, String)> {
    let out = std::process::Command::new("ip").args(["-details", "-json", "link", "show", "dev", iface]).output().ok()?;
    xdp_prog(&String::from_utf8_lossy(&out.stdout))
}

/// The XDP program (id, name) in the output of `ip -details -json link
/// show dev IF`: one program under `prog`, several under `attached`.
pub fn xdp_prog(ip_json: &str) -> Option<(u64, String)> {
    let v: serde_json::Value = serde_json::from_str(ip_json).ok()?;
    let xdp = &v.get(0)?["xdp"];
    let prog = if xdp["prog"].is_object() { &xdp["prog"] } else { &xdp["attached"][0]["prog"] };
    Some((prog["id"].as_u64()?, prog["name"].as_str().unwrap_or("").to_owned()))
}

/// The index of a network interface in this network namespace.
pub fn ifindex(iface: &str) -> anyhow::Result<u32> {
    let name = CString::new(iface).map_err(|_| anyhow!("invalid interface name {iface:?}"))?;
    // SAFETY: `name` is a valid NUL-terminated string for the call.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        bail!("unknown interface {iface:?}: no such network interface in this network namespace");
    }
    Ok(index)
}

/// Name of interface `index`, for reports.
pub fn ifname(index: u32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: `buf` has the IF_NAMESIZE bytes if_indextoname writes at most.
    let p = unsafe { libc::if_indextoname(index, buf.as_mut_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: on success `buf` holds a NUL-terminated name.
    Some(unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned())
}

const PRIVILEGE_HINT: &str =
    "missing privileges: loading and attaching XDP programs needs root (CAP_BPF or CAP_SYS_ADMIN, and CAP_NET_ADMIN)";

/// Capability bits (linux/capability.h).
const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_BPF: u32 = 39;

/// Checks the effective capabilities up front: the kernel answers a missing
/// one with EPERM or EACCES, which it also uses for a verifier rejection,
/// so the error code alone cannot tell the two apart.
pub fn check_privileges() -> anyhow::Result<()> {
    let status = std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    if !may_load_xdp(&status)? {
        bail!(PRIVILEGE_HINT);
    }
    Ok(())
}

/// Whether the effective capabilities in a `/proc/PID/status` text allow
/// loading and attaching XDP programs.
fn may_load_xdp(status: &str) -> anyhow::Result<bool> {
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .ok_or_else(|| anyhow!("no CapEff in /proc/self/status"))?;
    let has = |cap: u32| eff & (1 << cap) != 0;
    Ok((has(CAP_BPF) || has(CAP_SYS_ADMIN)) && has(CAP_NET_ADMIN))
}

/// Eight bytes from the kernel's random pool: the tables' hash seed and
/// the salts of this run (session ids, change stamps).
pub fn random_seed() -> u64 {
    let mut b = [0u8; 8];
    // SAFETY: getrandom writes at most `b.len()` bytes into `b`.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n == 8 {
        return u64::from_ne_bytes(b);
    }
    // Never short for 8 bytes on Linux; a clock-based seed beats none.
    use std::hash::{BuildHasher as _, Hasher as _};
    std::collections::hash_map::RandomState::new().build_hasher().finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_needed_for_xdp() {
        let status = |eff: u64| format!("Name:\tvoipdetect\nCapInh:\t0000000000000000\nCapEff:\t{eff:016x}\n");
        let bit = |c: u32| 1u64 << c;
        assert!(may_load_xdp(&status(0x000001ffffffffff)).unwrap(), "root");
        assert!(may_load_xdp(&status(bit(CAP_BPF) | bit(CAP_NET_ADMIN))).unwrap());
        assert!(may_load_xdp(&status(bit(CAP_SYS_ADMIN) | bit(CAP_NET_ADMIN))).unwrap());
        assert!(!may_load_xdp(&status(bit(CAP_BPF))).unwrap(), "no CAP_NET_ADMIN");
        assert!(!may_load_xdp(&status(bit(CAP_NET_ADMIN))).unwrap(), "neither CAP_BPF nor CAP_SYS_ADMIN");
        assert!(may_load_xdp("Name: x").is_err());
    }

    #[test]
    fn the_attached_program_is_read_from_ip_json() {
        let one = r#"[{"ifname":"g0","xdp":{"mode":1,"prog":{"id":42,"name":"voipdetect","tag":"ab"}}}]"#;
        assert_eq!(xdp_prog(one), Some((42, "voipdetect".into())));
        let multi = r#"[{"ifname":"g0","xdp":{"attached":[{"mode":1,"prog":{"id":7,"name":"other"}}]}}]"#;
        assert_eq!(xdp_prog(multi), Some((7, "other".into())));
        assert_eq!(xdp_prog(r#"[{"ifname":"g0"}]"#), None);
        assert_eq!(xdp_prog("not json"), None);
    }

    #[test]
    fn interfaces_by_name_and_index() {
        // Every network namespace has a loopback interface, index 1.
        assert_eq!(ifindex("lo").unwrap(), 1);
        assert_eq!(ifname(1).as_deref(), Some("lo"));
        let e = ifindex("vd-no-such-if").unwrap_err().to_string();
        assert!(e.contains("unknown interface"), "{e}");
        assert!(ifindex("bad\0name").is_err());
    }

    #[test]
    fn a_pin_directory_outside_bpffs_is_refused() {
        let e = ensure_bpffs(&std::env::temp_dir().join("vd-not-bpffs")).unwrap_err().to_string();
        assert!(e.contains("not on a BPF filesystem"), "{e}");
    }
}
