//! `voipdetect corpus`: the traffic generator's catalogue written as
//! captures with labels in the shared captures' format, so the same scorer
//! can judge the detector on traffic whose truth is known by construction.

use std::{
    fs::File,
    io::{BufWriter, Write},
    path::Path,
    time::Duration,
};

use anyhow::Context as _;
use pcap_file::pcap::{PcapPacket, PcapWriter};

use crate::{
    synth,
    traffic::{Flow, Transport, pattern},
};

/// When the synthetic captures start (capture clock, ns since the epoch).
const T0_NS: u64 = 1_767_225_600_000_000_000;

/// A file name from a flow name.
fn slug(name: &str) -> String {
    let s: String = name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect();
    s.split('-').filter(|p| !p.is_empty()).collect::<Vec<_>>().join("-")
}

/// Writes `frames` as a classic pcap (Ethernet, µs timestamps).
pub fn write_pcap(path: &Path, frames: &[synth::Timed]) -> anyhow::Result<()> {
    let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut w = PcapWriter::new(BufWriter::new(file)).context("pcap header")?;
    for t in frames {
        let p = PcapPacket::new(Duration::from_nanos(t.ts_ns), t.frame.len() as u32, &t.frame);
        w.write_packet(&p).with_context(|| format!("writing {}", path.display()))?;
    }
    w.into_writer().flush()?;
    Ok(())
}

/// One labels.tsv row per conversation of `flow`, written as `capture`.
fn label_row(capture: &str, f: &Flow, label: &str, gaming: bool) -> String {
    let (c, s) = synth::addrs(f);
    let bytes = |fr: &[crate::traffic::Frame]| fr.iter().map(|x| x.payload.len()).sum::<usize>();
    let first = f.up.iter().chain(&f.down).map(|x| x.at).min().unwrap_or_default();
    let dur = f.span().saturating_sub(first).as_secs_f64();
    let (pkts_ab, bytes_ab) =
        if f.bulk_bytes > 0 { (f.bulk_bytes.div_ceil(1448) as usize, f.bulk_bytes as usize) } else { (f.up.len(), bytes(&f.up)) };
    let l4 = match f.transport {
        Transport::Udp => "UDP",
        Transport::Tcp => "TCP",
    };
    let ep = |a: std::net::SocketAddr| match a {
        std::net::SocketAddr::V4(v) => v.to_string(),
        std::net::SocketAddr::V6(v) => format!("[{}]:{}", v.ip(), v.port()),
    };
    format!(
        "{capture}\t{l4}\t{}\t{}\t{label}\t{}\t{pkts_ab}\t{}\t{bytes_ab}\t{}\t{dur:.3}\t\t\n",
        ep(c),
        ep(s),
        u8::from(gaming),
        f.down.len(),
        bytes(&f.down)
    )
}

/// Writes the corpus (one capture per flow), `labels.tsv` and `split.tsv`
/// into `dir`; returns the number of captures.
pub fn write(dir: &Path, secs: u64) -> anyhow::Result<usize> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut labels = String::from("capture\tl4\ta\tb\tlabel\tgaming\tpkts_ab\tpkts_ba\tbytes_ab\tbytes_ba\tduration_s\tvlan\ttunnel\n");
    let mut split = String::from("capture\tset\tkind\ttheme\n");
    let mut entries: Vec<(Flow, &str, &str)> = Vec::new();
    for f in pattern::call_variants(secs) {
        entries.push((f, "voip", "voip"));
    }
    entries.push((pattern::one_way_media(secs), "voip", "voip"));
    for f in pattern::decoys(secs) {
        entries.push((f, "other", "negative"));
    }
    for (f, label, kind) in &entries {
        let capture = format!("{}.pcap", slug(&f.name));
        write_pcap(&dir.join(&capture), &synth::frames(std::slice::from_ref(f), T0_NS))?;
        labels.push_str(&label_row(&capture, f, label, f.name.starts_with("game")));
        split.push_str(&format!("{capture}\tdev\t{kind}\t{}\n", f.name));
    }
    std::fs::write(dir.join("labels.tsv"), labels)?;
    std::fs::write(dir.join("split.tsv"), split)?;
    Ok(entries.len())
}
