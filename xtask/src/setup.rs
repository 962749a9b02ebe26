//! Installs what the build and the tests need, only where it is missing,
//! and says what it does. Running it twice installs nothing the second time.

use std::process::Command;

use anyhow::{Context as _, bail};

use crate::{root, run};

/// bpf-linker release known to work with nightly's LLVM 22 here.
const BPF_LINKER_VERSION: &str = "0.13.0";

/// Debian packages the test tiers use: `ip` for the lab, `sipp` for the SIP
/// user-agent test, tcpdump to watch what reaches its receiver, and what the
/// benchmarks' quick mode (part of the tests) compares against.
pub const TEST_PACKAGES: &[&str] = &["iproute2", "procps", "sip-tester", "tcpdump", "nftables", "tshark", "ethtool"];
/// The benchmarks: nftables and tshark are the references, ethtool turns on
/// GRO for veth receivers without XDP.
pub const BENCH_PACKAGES: &[&str] = &["iproute2", "procps", "nftables", "tshark", "ethtool"];
/// The demo needs only the lab.
pub const DEMO_PACKAGES: &[&str] = &["iproute2", "procps"];

fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Adds a rustup component unless the toolchain has it (`None`: the
/// toolchain cargo runs with here).
fn component(toolchain: Option<&str>, name: &str, why: &str) -> anyhow::Result<()> {
    let which: &[&str] = match &toolchain {
        Some(t) => &["--toolchain", t],
        None => &[],
    };
    let installed = output(Command::new("rustup").args(["component", "list", "--installed"]).args(which)).unwrap_or_default();
    if !installed.lines().any(|l| l.starts_with(name)) {
        println!("xtask: adding {name} to {} ({why})", toolchain.unwrap_or("the default toolchain"));
        run(Command::new("rustup").args(["component", "add", name]).args(which))?;
    }
    Ok(())
}

/// Nightly with rust-src, and bpf-linker built against nightly's LLVM.
pub fn toolchain() -> anyhow::Result<()> {
    let toolchains = output(Command::new("rustup").args(["toolchain", "list"])).context("rustup not found")?;
    if !toolchains.lines().any(|l| l.starts_with("nightly")) {
        println!("xtask: installing the nightly toolchain (the eBPF crate needs it)");
        run(Command::new("rustup").args(["toolchain", "install", "nightly", "--profile", "minimal"]))?;
    }
    component(Some("nightly"), "rust-src", "for -Z build-std=core")?;
    component(Some("nightly"), "clippy", "to lint the eBPF crate")?;
    component(None, "clippy", "to lint userspace")?;
    component(None, "rustfmt", "to check formatting")?;
    let linker = output(Command::new("bpf-linker").arg("--version")).unwrap_or_default();
    if !linker.contains(BPF_LINKER_VERSION) {
        install_bpf_linker()?;
    }
    Ok(())
}

/// `cargo install bpf-linker` cannot find a system LLVM here; link it
/// against nightly's own libLLVM instead (../shared/notes/toolchain.md).
fn install_bpf_linker() -> anyhow::Result<()> {
    let sysroot =
        output(Command::new("rustc").args(["+nightly", "--print", "sysroot"])).context("rustc +nightly --print sysroot")?.trim().to_owned();
    let lib_dir = std::path::Path::new(&sysroot).join("lib");
    let lib = std::fs::read_dir(&lib_dir)
        .with_context(|| format!("reading {}", lib_dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("libLLVM.so."))
        .with_context(|| format!("no libLLVM.so.* in {}", lib_dir.display()))?;
    let verbose = output(Command::new("rustc").args(["+nightly", "-vV"])).unwrap_or_default();
    let major = verbose
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .context("nightly's LLVM version")?
        .to_owned();
    let prefix = root().join("target").join("xtask").join("llvm-prefix");
    let prefix_lib = prefix.join("lib");
    std::fs::create_dir_all(&prefix_lib)?;
    for name in ["libLLVM.so", lib.as_str()] {
        let link = prefix_lib.join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(lib_dir.join(&lib), &link).with_context(|| format!("linking {}", link.display()))?;
    }
    println!("xtask: installing bpf-linker {BPF_LINKER_VERSION} against nightly's LLVM {major} (about a minute)");
    run(Command::new("cargo")
        .args([
            "install",
            "bpf-linker",
            "--version",
            BPF_LINKER_VERSION,
            "--no-default-features",
            "--features",
            &format!("llvm-{major}"),
            "--locked",
        ])
        .env("LLVM_PREFIX", &prefix)
        .env("RUSTFLAGS", format!("-C link-arg=-Wl,-rpath,{}", lib_dir.display())))
}

fn installed(pkg: &str) -> bool {
    output(Command::new("dpkg-query").args(["-W", "-f=${Status}", pkg])).is_some_and(|s| s.contains("install ok installed"))
}

/// Installs the Debian packages in `wanted` that are missing.
pub fn packages(wanted: &[&str]) -> anyhow::Result<()> {
    let missing: Vec<&str> = wanted.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    if output(Command::new("id").arg("-u")).is_none_or(|u| u.trim() != "0") {
        bail!("missing Debian packages {}: install them as root (apt-get install {0})", missing.join(" "));
    }
    println!("xtask: installing Debian packages: {}", missing.join(" "));
    run(Command::new("apt-get").args(["update", "-qq"]))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}
