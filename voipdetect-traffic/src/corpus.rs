//! The generator's catalogue as captures with labels in the shared
//! captures' format (`labels.tsv`, `split.tsv`), so the same scorer can
//! judge the detector on traffic whose truth is known by construction.
//! Built in memory; `voipdetect-lab corpus` writes it to a directory.

use std::time::Duration;

use pcap_file::pcap::{PcapPacket, PcapWriter};

use crate::{Flow, Frame, Transport, addrs, calls, pattern, synth};

/// When the synthetic captures start (capture clock, ns since the epoch).
const T0_NS: u64 = 1_767_225_600_000_000_000;

/// Header of `labels.tsv`, as in the shared captures.
const LABELS_HEADER: &str = "capture\tl4\ta\tb\tlabel\tgaming\tpkts_ab\tpkts_ba\tbytes_ab\tbytes_ba\tduration_s\tvlan\ttunnel\n";
/// Header of `split.tsv`.
const SPLIT_HEADER: &str = "capture\tset\tkind\ttheme\n";

/// Labelled captures, ready to be written out.
#[derive(Debug, Default)]
pub struct Corpus {
    /// File name and pcap bytes of each capture.
    pub captures: Vec<(String, Vec<u8>)>,
    /// `labels.tsv`: one row per conversation.
    pub labels: String,
    /// `split.tsv`: one row per capture.
    pub split: String,
}

/// A file name from a flow name.
fn slug(name: &str) -> String {
    let s: String = name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect();
    s.split('-').filter(|p| !p.is_empty()).collect::<Vec<_>>().join("-")
}

/// `frames` as a classic pcap (Ethernet, µs timestamps).
pub fn pcap(frames: &[synth::Timed]) -> Vec<u8> {
    let mut w = PcapWriter::new(Vec::new()).expect("writing to memory cannot fail");
    for t in frames {
        let p = PcapPacket::new(Duration::from_nanos(t.ts_ns), t.frame.len() as u32, &t.frame);
        w.write_packet(&p).expect("writing to memory cannot fail");
    }
    w.into_writer()
}

/// One labels.tsv row per conversation of `flow`, written as `capture`.
fn label_row(capture: &str, f: &Flow, label: &str, gaming: bool) -> String {
    let (c, s) = addrs::of(f);
    let bytes = |fr: &[Frame]| fr.iter().map(|x| x.payload.len()).sum::<usize>();
    let first = f.up.iter().chain(&f.down).map(|x| x.at).min().unwrap_or_default();
    let dur = f.span().saturating_sub(first).as_secs_f64();
    let (pkts_ab, bytes_ab) = if f.bulk_bytes > 0 {
        (f.bulk_bytes.div_ceil(synth::MSS as u64) as usize, f.bulk_bytes as usize)
    } else {
        (f.up.len(), bytes(&f.up))
    };
    let l4 = match f.transport {
        Transport::Udp => "UDP",
        Transport::Tcp => "TCP",
    };
    format!(
        "{capture}\t{l4}\t{}\t{}\t{label}\t{}\t{pkts_ab}\t{}\t{bytes_ab}\t{}\t{dur:.3}\t\t\n",
        c,
        s,
        u8::from(gaming),
        f.down.len(),
        bytes(&f.down)
    )
}

/// The corpus: one capture per flow of the catalogue, each flow `secs` long.
pub fn build(secs: u64) -> Corpus {
    let mut c = Corpus { labels: LABELS_HEADER.into(), split: SPLIT_HEADER.into(), ..Default::default() };
    let mut entries: Vec<(Flow, &str, &str)> = Vec::new();
    for f in pattern::call_variants(secs) {
        entries.push((f, "voip", "voip"));
    }
    entries.push((pattern::one_way_media(secs), "voip", "voip"));
    for f in pattern::decoys(secs) {
        entries.push((f, "other", "negative"));
    }
    // Over a link losing a tenth of the packets: a game's clock slows to a
    // codec's rate, a call's stays a call.
    for (i, f) in pattern::decoys(secs).iter().filter(|f| f.name.contains("60 Hz") || f.name.contains("64 Hz")).enumerate() {
        entries.push((f.lossy(0.1, 100 + i as u64), "other", "negative"));
    }
    for (i, f) in pattern::call_variants(secs)
        .iter()
        .filter(|f| ["opaque vbr 20 ms", "tcp 30 ms 110 B", "rtp 20 ms 160 B"].contains(&f.name.as_str()))
        .enumerate()
    {
        entries.push((f.lossy(0.1, 200 + i as u64), "voip", "voip"));
    }
    for (f, label, kind) in &entries {
        let capture = format!("{}.pcap", slug(&f.name));
        c.captures.push((capture.clone(), pcap(&synth::frames(std::slice::from_ref(f), T0_NS))));
        c.labels.push_str(&label_row(&capture, f, label, f.name.starts_with("game")));
        c.split.push_str(&format!("{capture}\tdev\t{kind}\t{}\n", f.name));
    }
    // Calls over several conversations: one capture each, a label per leg.
    for call in calls::session_calls(secs) {
        let call = calls::as_captured(&call);
        let capture = format!("{}.pcap", slug(&call.name));
        c.captures.push((capture.clone(), pcap(&synth::frames(&call.legs, T0_NS))));
        for leg in &call.legs {
            c.labels.push_str(&label_row(&capture, leg, "voip", false));
        }
        c.split.push_str(&format!("{capture}\tdev\tvoip\t{}\n", call.name));
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_capture_has_a_label_row_and_a_split_row() {
        let c = build(2);
        assert!(c.captures.len() > 40, "{}", c.captures.len());
        let legs: usize = calls::session_calls(2).iter().map(|c| c.legs.len() - 1).sum();
        assert_eq!(c.labels.lines().count(), c.captures.len() + legs + 1);
        assert_eq!(c.split.lines().count(), c.captures.len() + 1);
        for (name, bytes) in &c.captures {
            assert!(c.labels.contains(&format!("{name}\t")), "{name}");
            // Classic pcap with microseconds, in the writer's byte order.
            assert!(matches!(bytes[..4], [0xd4, 0xc3, 0xb2, 0xa1] | [0xa1, 0xb2, 0xc3, 0xd4]), "{name}: {:02x?}", &bytes[..4]);
        }
        let names: std::collections::BTreeSet<_> = c.captures.iter().map(|(n, _)| n).collect();
        assert_eq!(names.len(), c.captures.len(), "capture names are unique");
    }
}
