//! Builds the XDP program (nightly, BPF target, bpf-linker) and leaves the
//! object in OUT_DIR for `include_bytes_aligned!`. `cargo xtask` installs
//! the toolchain pieces this needs.
use anyhow::{Context as _, anyhow};

fn main() -> anyhow::Result<()> {
    let cargo_metadata::Metadata { packages, .. } = cargo_metadata::MetadataCommand::new().no_deps().exec().context("cargo metadata")?;
    let ebpf =
        packages.iter().find(|p| p.name.as_str() == "voipdetect-ebpf").ok_or_else(|| anyhow!("voipdetect-ebpf package not found"))?;
    let root_dir = ebpf.manifest_path.parent().ok_or_else(|| anyhow!("voipdetect-ebpf manifest has no parent directory"))?;
    // The common crate's sources are compiled into the program too.
    let common = root_dir.parent().map(|p| p.join("voipdetect-common"));
    if let Some(common) = common {
        println!("cargo:rerun-if-changed={common}");
    }
    // The nested cargo's status lines ("Compiling core ...") would reach
    // the user as dozens of `warning:` lines (aya-build forwards its
    // stderr as cargo warnings); its compiler diagnostics still come
    // through. SAFETY: set before any thread is started.
    unsafe { std::env::set_var("CARGO_TERM_QUIET", "true") };
    aya_build::build_ebpf(
        [aya_build::Package { name: "voipdetect-ebpf", root_dir: root_dir.as_str(), ..Default::default() }],
        aya_build::Toolchain::Custom("nightly"),
    )
}
