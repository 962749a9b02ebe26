//! Project tasks: `cargo xtask <task>`. Every task first makes sure the
//! toolchain pieces and Debian packages it needs are there, installing
//! only what is missing, so a fresh machine needs nothing done by hand.
mod eval;
mod modules;
mod setup;
mod soak;

use std::{
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "voipdetect project tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what is missing (nightly rust-src, bpf-linker, Debian packages).
    Setup,
    /// Build the XDP program and the controller.
    Build {
        #[arg(long)]
        release: bool,
    },
    /// Build, then run the controller: `cargo xtask run -- --iface IF [run flags]`.
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Build, then run the demo on the built-in lab network.
    Demo {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Every test tier: lint, unit tests, BPF_PROG_TEST_RUN fixtures, namespace end-to-end tests.
    Test,
    /// Accuracy report: the shared labelled captures and the generated corpus, scored.
    Eval,
    /// Performance benchmarks (release build): `cargo xtask bench [--quick] [per-packet|veth|poll|replay ...]`.
    Bench {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Long robustness runs: bigger flood, more garbage, restart, 10 minutes of fuzzing (< 20 min).
    Soak,
    /// clippy on the userspace crates and on the eBPF crates (their own target).
    Clippy,
    /// The product crate's module dependencies; fails on a cycle.
    Modules {
        /// Another crate root to read instead of voipdetect/src/lib.rs.
        lib: Option<PathBuf>,
    },
}

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_path_buf()
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root().join("target"), PathBuf::from)
}

/// Runs a command in the workspace root, failing if it fails.
pub fn run(cmd: &mut Command) -> anyhow::Result<()> {
    cmd.current_dir(root());
    let status = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}

pub fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// The shipped binary and the lab's, built.
struct Binaries {
    voipdetect: PathBuf,
    lab: PathBuf,
}

fn build(release: bool) -> anyhow::Result<Binaries> {
    setup::toolchain()?;
    let dir = target_dir().join(if release { "release" } else { "debug" });
    if !built_xdp_object(&dir) {
        println!("xtask: first build: the XDP programs are compiled for the BPF target too (core library included); a few minutes");
    }
    let mut cmd = cargo();
    cmd.args(["build", "--package", "voipdetect", "--package", "voipdetect-lab"]);
    if release {
        cmd.arg("--release");
    }
    run(&mut cmd)?;
    Ok(Binaries { voipdetect: dir.join("voipdetect"), lab: dir.join("voipdetect-lab") })
}

/// Whether a build in `dir` (target/debug or target/release) has already
/// produced the XDP object (left by voipdetect's build.rs in its OUT_DIR).
fn built_xdp_object(dir: &Path) -> bool {
    std::fs::read_dir(dir.join("build"))
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().starts_with("voipdetect-") && e.path().join("out").join("voipdetect").is_file())
}

/// The lab's tooling crates and the packages only they use: none of them
/// may reach the shipped binary.
const TOOLING: &[&str] = &["voipdetect-traffic", "voipdetect-lab", "voipdetect-bench-ebpf", "etherparse", "rand"];

/// Fails if the shipped binary's dependency tree (normal and build
/// dependencies) holds any of [`TOOLING`].
fn check_shipped_deps() -> anyhow::Result<()> {
    let out = cargo()
        .current_dir(root())
        .args(["tree", "--package", "voipdetect", "--edges", "normal,build", "--prefix", "none", "--format", "{p}"])
        .output()
        .context("running cargo tree")?;
    if !out.status.success() {
        bail!("cargo tree: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    let tree = String::from_utf8_lossy(&out.stdout);
    let linked: Vec<&str> = TOOLING.iter().copied().filter(|t| tree.lines().any(|l| l.split_whitespace().next() == Some(*t))).collect();
    if !linked.is_empty() {
        bail!("the shipped voipdetect binary depends on tooling: {} (`cargo tree -p voipdetect -i <crate>` shows how)", linked.join(", "));
    }
    println!("xtask: the shipped binary links none of {}", TOOLING.join(", "));
    Ok(())
}

pub fn is_root() -> bool {
    std::env::var("USER").is_ok_and(|u| u == "root")
        || std::fs::metadata("/proc/self").is_ok_and(|m| {
            use std::os::unix::fs::MetadataExt;
            m.uid() == 0
        })
}

fn clippy() -> anyhow::Result<()> {
    setup::toolchain()?;
    println!("xtask: rustfmt --check");
    run(cargo().args(["fmt", "--all", "--check"]))?;
    println!("xtask: clippy (userspace)");
    run(cargo().args([
        "clippy",
        "--workspace",
        "--exclude",
        "voipdetect-ebpf",
        "--exclude",
        "voipdetect-bench-ebpf",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    println!("xtask: clippy (eBPF, nightly, bpfel-unknown-none)");
    run(Command::new("rustup").args([
        "run",
        "nightly",
        "cargo",
        "clippy",
        "--package",
        "voipdetect-ebpf",
        "--package",
        "voipdetect-bench-ebpf",
        "--release",
        "--target",
        "bpfel-unknown-none",
        "-Z",
        "build-std=core",
        "--",
        "-D",
        "warnings",
    ]))
}

fn test() -> anyhow::Result<()> {
    setup::toolchain()?;
    setup::packages(setup::TEST_PACKAGES)?;
    clippy()?;
    modules::check(&root().join("voipdetect").join("src").join("lib.rs"))?;
    check_shipped_deps()?;
    println!("xtask: tier 1, unit tests (no root)");
    run(cargo().args([
        "test",
        "--workspace",
        "--exclude",
        "voipdetect-ebpf",
        "--exclude",
        "voipdetect-bench-ebpf",
        "--exclude",
        "voipdetect-tests",
    ]))?;
    if !is_root() {
        bail!(
            "tiers 2 and 3 (BPF_PROG_TEST_RUN fixtures, namespace end-to-end tests) need root: \
             they load XDP programs and create network namespaces. Run `cargo xtask test` as root."
        );
    }
    let bin = build(false)?.voipdetect;
    println!("xtask: tier 2, packet fixtures and kernel/replay parity through BPF_PROG_TEST_RUN (root)");
    run(cargo()
        .args(["test", "--package", "voipdetect-tests", "--test", "fixtures", "--test", "parity", "--test", "garbage"])
        .env("VOIPDETECT_BIN", &bin))?;
    println!("xtask: tier 3, end to end in network namespaces (root)");
    run(cargo()
        .args(["test", "--package", "voipdetect-tests", "--test", "lab", "--test", "ops", "--", "--test-threads=1"])
        .env("VOIPDETECT_BIN", &bin))?;
    println!("xtask: benchmarks in quick mode (they must keep working)");
    let release = build(true)?;
    exec(&release.lab, &["bench".to_owned(), "--quick".to_owned()])?;
    println!("xtask: all test tiers passed");
    Ok(())
}

fn bench(args: &[String]) -> anyhow::Result<()> {
    setup::packages(setup::BENCH_PACKAGES)?;
    let lab = build(true)?.lab;
    let mut full = vec!["bench".to_owned()];
    full.extend_from_slice(args);
    exec(&lab, &full)
}

fn exec(bin: &Path, args: &[String]) -> anyhow::Result<()> {
    run(Command::new(bin).args(args))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.task {
        Task::Setup => setup::toolchain().and_then(|()| setup::packages(setup::TEST_PACKAGES)),
        Task::Build { release } => build(release).map(drop),
        Task::Run { args } => build(true).and_then(|b| {
            let mut full = vec!["run".to_owned()];
            full.extend(args);
            exec(&b.voipdetect, &full)
        }),
        Task::Demo { args } => setup::packages(setup::DEMO_PACKAGES).and_then(|()| build(false)).and_then(|b| {
            let mut full = vec!["demo".to_owned(), "--bin".to_owned(), b.voipdetect.display().to_string()];
            full.extend(args);
            exec(&b.lab, &full)
        }),
        Task::Test => test(),
        Task::Eval => build(false).and_then(|b| eval::eval(&b.voipdetect, &b.lab)),
        Task::Bench { args } => bench(&args),
        Task::Soak => setup::toolchain()
            .and_then(|()| setup::packages(setup::TEST_PACKAGES))
            .and_then(|()| build(false))
            .and_then(|b| soak::soak(&b.voipdetect)),
        Task::Clippy => clippy(),
        Task::Modules { lib } => modules::check(&lib.unwrap_or_else(|| root().join("voipdetect").join("src").join("lib.rs"))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
