//! Builds the benchmarks' reference XDP programs (`voipdetect-bench-ebpf`,
//! nightly, BPF target) and leaves the object in OUT_DIR for
//! `include_bytes_aligned!`, as the product crate's build.rs does for its
//! one program.
use anyhow::{Context as _, anyhow};

fn main() -> anyhow::Result<()> {
    let cargo_metadata::Metadata { packages, .. } = cargo_metadata::MetadataCommand::new().no_deps().exec().context("cargo metadata")?;
    let ebpf = packages
        .iter()
        .find(|p| p.name.as_str() == "voipdetect-bench-ebpf")
        .ok_or_else(|| anyhow!("voipdetect-bench-ebpf package not found"))?;
    let root_dir = ebpf.manifest_path.parent().ok_or_else(|| anyhow!("voipdetect-bench-ebpf manifest has no parent directory"))?;
    // The product's eBPF library (frame reader) and the common crate are compiled in too.
    if let Some(workspace) = root_dir.parent() {
        for dep in ["voipdetect-common", "voipdetect-ebpf"] {
            println!("cargo:rerun-if-changed={}", workspace.join(dep));
        }
    }
    // The nested cargo's status lines ("Compiling core ...") would reach
    // the user as dozens of `warning:` lines (aya-build forwards its
    // stderr as cargo warnings); its compiler diagnostics still come
    // through. SAFETY: set before any thread is started.
    unsafe { std::env::set_var("CARGO_TERM_QUIET", "true") };
    aya_build::build_ebpf(
        [aya_build::Package { name: "voipdetect-bench-ebpf", root_dir: root_dir.as_str(), ..Default::default() }],
        aya_build::Toolchain::Custom("nightly"),
    )
}
