//! `cargo xtask eval`: the accuracy report. Replays the shared, labelled
//! captures and the generator's corpus, scores both with the shared scorer
//! and adds time-to-verdict figures.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::{root, run};

/// (capture, proto, sorted endpoints)
type ConvKey = (String, String, [String; 2]);

fn conv(capture: &str, proto: &str, a: &str, b: &str) -> ConvKey {
    let mut e = [a.to_owned(), b.to_owned()];
    e.sort();
    (capture.to_owned(), proto.to_lowercase(), e)
}

/// Voice conversations named in a labels.tsv.
fn voip_labels(path: &Path) -> anyhow::Result<Vec<ConvKey>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f.len() > 4 && f[4] == "voip").then(|| conv(f[0], f[1], f[2], f[3]))
        })
        .collect())
}

struct Dataset {
    name: &'static str,
    labels: PathBuf,
    split: PathBuf,
    captures: Vec<PathBuf>,
}

struct Row {
    name: &'static str,
    score: serde_json::Value,
    ttv_rtp: Vec<f64>,
    ttv_other: Vec<f64>,
}

fn percentile(v: &[f64], p: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let i = ((s.len() - 1) as f64 * p).round() as usize;
    Some(s[i])
}

fn evaluate(bin: &Path, scorer: &Path, out: &Path, d: &Dataset) -> anyhow::Result<Row> {
    let dir = out.join(d.name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let mut outputs = Vec::new();
    for cap in &d.captures {
        let name = cap.file_name().context("capture name")?.to_string_lossy().into_owned();
        let jsonl = dir.join(format!("{name}.jsonl"));
        let res = Command::new(bin).arg("replay").arg(cap).output().with_context(|| format!("replaying {name}"))?;
        if !res.status.success() {
            bail!("replay of {name} failed: {}", String::from_utf8_lossy(&res.stderr));
        }
        std::fs::write(&jsonl, &res.stdout)?;
        outputs.push(jsonl);
    }
    let summary = dir.join("score.json");
    run(Command::new("python3")
        .arg(scorer)
        .arg("--labels")
        .arg(&d.labels)
        .arg("--split")
        .arg(&d.split)
        .arg("--quiet")
        .arg("--json")
        .arg(&summary)
        .args(&outputs)
        .stdout(std::process::Stdio::null()))?;
    let score: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&summary)?)?;
    let voip = voip_labels(&d.labels)?;
    let mut first_verdict: HashMap<ConvKey, (f64, bool)> = HashMap::new();
    for o in &outputs {
        for line in std::fs::read_to_string(o)?.lines() {
            let r: serde_json::Value = serde_json::from_str(line)?;
            let (Some(at), Some(first)) = (r["detected_at"].as_f64(), r["first_seen"].as_f64()) else { continue };
            let s = |k: &str| r[k].as_str().unwrap_or_default().to_owned();
            let rtp = s("reason").starts_with("rtp");
            first_verdict.insert(conv(&s("capture"), &s("proto"), &s("src"), &s("dst")), (at - first, rtp));
        }
    }
    let (mut ttv_rtp, mut ttv_other) = (Vec::new(), Vec::new());
    for k in &voip {
        if let Some(&(t, rtp)) = first_verdict.get(k) {
            if rtp { ttv_rtp.push(t) } else { ttv_other.push(t) }
        }
    }
    Ok(Row { name: d.name, score, ttv_rtp, ttv_other })
}

fn fmt_s(v: Option<f64>) -> String {
    v.map_or("-".into(), |x| format!("{x:.2} s"))
}

fn pct(v: &serde_json::Value) -> String {
    v.as_f64().map_or("-".into(), |x| format!("{:.1} %", 100.0 * x))
}

pub fn eval(bin: &Path, lab: &Path) -> anyhow::Result<()> {
    let shared = root().join("..").join("shared").join("captures");
    let scorer = shared.join("score.py");
    if !scorer.is_file() {
        bail!("{} not found: the shared captures live next to the repository", scorer.display());
    }
    let out = root().join("target").join("eval");
    let corpus = out.join("corpus");
    run(Command::new(lab).arg("corpus").arg("--out").arg(&corpus))?;
    let pcaps = |dir: &Path| -> anyhow::Result<Vec<PathBuf>> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(dir)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("pcap" | "pcapng")))
            .collect();
        v.sort();
        Ok(v)
    };
    let sets = [
        Dataset { name: "shared", labels: shared.join("labels.tsv"), split: shared.join("split.tsv"), captures: pcaps(&shared)? },
        Dataset { name: "generated", labels: corpus.join("labels.tsv"), split: corpus.join("split.tsv"), captures: pcaps(&corpus)? },
    ];
    let mut rows = Vec::new();
    for d in &sets {
        rows.push(evaluate(bin, &scorer, &out, d)?);
    }
    println!();
    println!(
        "{:<10} {:>11} {:>9} {:>16} {:>9} {:>8} {:>22} {:>22}",
        "dataset", "call flows", "recall", "recall ≥2s,≥50p", "FPR", "game FP", "TTV rtp median/p90", "TTV other median/p90"
    );
    for r in &rows {
        let a = &r.score["sets"]["all"];
        println!(
            "{:<10} {:>11} {:>9} {:>16} {:>9} {:>8} {:>22} {:>22}",
            r.name,
            format!("{}/{}", a["voip_detected"], a["voip"]),
            pct(&a["recall"]),
            format!("{} ({}/{})", pct(&a["recall_long"]), a["voip_long_detected"], a["voip_long"]),
            format!("{} ({})", pct(&a["fpr"]), a["false_positives"]),
            format!("{}/{}", a["gaming_false_positives"], a["gaming"]),
            format!("{} / {}", fmt_s(percentile(&r.ttv_rtp, 0.5)), fmt_s(percentile(&r.ttv_rtp, 0.9))),
            format!("{} / {}", fmt_s(percentile(&r.ttv_other, 0.5)), fmt_s(percentile(&r.ttv_other, 0.9))),
        );
    }
    println!("\nTTV: time from a call's first packet to its first verdict, on the capture clock; 'rtp' where an RTP header was visible.");
    println!("Per-capture outputs and scores: {}", out.display());
    println!();
    if crate::is_root() {
        // The leak needs the lab: live calls through a blocking gateway.
        run(Command::new(lab).arg("leak").arg("--bin").arg(bin))?;
    } else {
        println!("The leak measure needs root (network namespaces, XDP): run `cargo xtask eval` as root to see it.");
    }
    Ok(())
}
