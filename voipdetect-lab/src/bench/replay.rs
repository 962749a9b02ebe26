//! Replay throughput next to tshark's conversation statistics on the same
//! generated capture.

use std::{path::Path, process::Command, time::Instant};

use anyhow::{Context as _, bail};

use voipdetect::{
    controller::{Config, DEFAULT_POLL_NS},
    replay::replay_bytes,
};
use voipdetect_traffic::{Flow, corpus, pattern, synth};

use super::{Scale, Table};

/// The catalogue `copies` times over, each copy on its own ports.
fn flows(copies: u16) -> Vec<Flow> {
    let mut out = Vec::new();
    for i in 0..copies {
        for mut f in pattern::call_variants(10).into_iter().chain(pattern::decoys(10)) {
            f.client_port = f.client_port.wrapping_add(i * 211);
            f.server_port = f.server_port.wrapping_add(i * 211);
            out.push(f);
        }
    }
    out
}

pub fn run(scale: Scale, dir: &Path) -> anyhow::Result<Table> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join("replay-bench.pcap");
    let frames = synth::frames(&flows(scale.pick(20, 1)), 1_767_225_600_000_000_000);
    std::fs::write(&path, corpus::pcap(&frames)).with_context(|| format!("writing {}", path.display()))?;
    let packets = frames.len() as f64;
    drop(frames);

    let t0 = Instant::now();
    let bytes = std::fs::read(&path)?;
    let r = replay_bytes(&bytes, Config::default(), DEFAULT_POLL_NS);
    let ours = t0.elapsed().as_secs_f64();
    if let Some(e) = r.error {
        bail!("replay: {e}");
    }
    let t0 = Instant::now();
    let out = Command::new("tshark").arg("-r").arg(&path).args(["-q", "-z", "conv,udp"]).output().context("running tshark")?;
    let theirs = t0.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!("tshark: {}", String::from_utf8_lossy(&out.stderr));
    }
    let mut t = Table::new("Replay throughput", &["tool", "packets", "seconds", "packets/s", "ratio to tshark"]);
    let row = |name: &str, s: f64| {
        vec![name.into(), format!("{packets:.0}"), format!("{s:.2}"), format!("{:.0}", packets / s), format!("{:.1}×", theirs / s)]
    };
    t.row(row("voipdetect replay (detection included)", ours));
    t.row(row("tshark -q -z conv,udp", theirs));
    let _ = std::fs::remove_file(&path);
    Ok(t)
}
