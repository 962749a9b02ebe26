//! `cargo xtask soak`: the long versions of the robustness proofs — a
//! bigger flow flood next to a call, ten times the garbage frames, the
//! crash-and-restart test, and ten minutes of coverage-guided fuzzing of the
//! replay reader and the parser. Prints the figures BENCHMARKS.md records.

use std::process::{Command, Stdio};

use anyhow::{Context as _, bail};

use crate::{root, run};

/// Runs one root-only test with `env`, echoing its output; returns the
/// `figure:` lines it printed.
fn test(bin: &std::path::Path, file: &str, name: &str, env: &[(&str, &str)]) -> anyhow::Result<Vec<String>> {
    let mut cmd = crate::cargo();
    cmd.current_dir(root())
        .args(["test", "--package", "voipdetect-tests", "--test", file, "--", "--exact", name, "--nocapture"])
        .env("VOIPDETECT_BIN", bin)
        .stderr(Stdio::piped())
        .stdout(Stdio::inherit());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().context("running cargo test")?;
    let text = String::from_utf8_lossy(&out.stderr);
    eprint!("{text}");
    if !out.status.success() {
        bail!("{file}::{name} failed");
    }
    Ok(text.lines().filter_map(|l| l.strip_prefix("figure: ")).map(str::to_owned).collect())
}

fn ensure_cargo_fuzz() -> anyhow::Result<()> {
    let ok = Command::new("cargo").args(["fuzz", "--version"]).output().is_ok_and(|o| o.status.success());
    if !ok {
        println!("xtask: installing cargo-fuzz");
        run(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))?;
    }
    Ok(())
}

/// Fuzzes `target` for `secs`; returns libFuzzer's execution count.
fn fuzz(target: &str, secs: u32) -> anyhow::Result<u64> {
    let dir = root().join("fuzz");
    let corpus = dir.join("corpus").join(target);
    let out = Command::new("rustup")
        .args(["run", "nightly", "cargo", "fuzz", "run", target])
        .arg(&corpus)
        .args(["--", &format!("-max_total_time={secs}"), "-print_final_stats=1"])
        .current_dir(&dir)
        .stdout(Stdio::inherit())
        .stderr(Stdio::piped())
        .output()
        .context("running cargo fuzz")?;
    let text = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        eprint!("{text}");
        bail!("fuzz target {target} failed (a crash is kept under fuzz/artifacts/{target})");
    }
    let runs =
        text.lines().find_map(|l| l.strip_prefix("stat::number_of_executed_units:")).and_then(|v| v.trim().parse().ok()).unwrap_or(0);
    Ok(runs)
}

pub fn soak(bin: &std::path::Path) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    ensure_cargo_fuzz()?;
    let mut figures = Vec::new();
    println!("xtask: soak 1/4, flow flood of 12 M frames next to a call");
    figures.extend(test(
        bin,
        "ops",
        "a_flow_flood_does_not_delay_the_block_or_cost_other_flows",
        &[("VOIPDETECT_FLOOD_FRAMES", "12000000")],
    )?);
    println!("xtask: soak 2/4, ten million broken frames");
    figures.extend(test(
        bin,
        "garbage",
        "a_million_broken_frames_all_pass_and_are_all_counted",
        &[("VOIPDETECT_GARBAGE_FRAMES", "10000000")],
    )?);
    println!("xtask: soak 3/4, kill -9 mid-call and restart");
    test(bin, "ops", "restart_after_a_crash_readopts_and_blocks_expire_meanwhile", &[])?;
    figures.push("restart after kill -9: re-adopted, blocklist kept, one program attached".into());
    println!("xtask: soak 4/4, fuzzing (5 minutes per target)");
    for target in ["replay_reader", "frame"] {
        let runs = fuzz(target, 300)?;
        figures.push(format!("fuzz {target}: {runs} executions in 300 s, no crash"));
    }
    println!("\nSoak figures ({:.0} s):", started.elapsed().as_secs_f64());
    for f in &figures {
        println!("- {f}");
    }
    Ok(())
}
