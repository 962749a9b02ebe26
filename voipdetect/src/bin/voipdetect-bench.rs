//! `voipdetect-bench [--quick] [SECTION...]`: the benchmarks of
//! BENCHMARKS.md. Sections: per-packet, veth, poll, replay (default: all).
use std::process::ExitCode;

use voipdetect::bench::{self, Scale};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let wanted: Vec<&str> = args.iter().filter(|a| !a.starts_with("--")).map(String::as_str).collect();
    let known = ["per-packet", "veth", "poll", "replay"];
    if let Some(bad) = wanted.iter().find(|w| !known.contains(w)) {
        eprintln!("error: unknown section {bad:?} (sections: {})", known.join(", "));
        return ExitCode::from(2);
    }
    let on = |s: &str| wanted.is_empty() || wanted.contains(&s);
    let scale = Scale { quick };
    let started = std::time::Instant::now();
    let result = (|| -> anyhow::Result<()> {
        voipdetect::lab::require_root("voipdetect-bench")?;
        println!("# voipdetect benchmarks{}\n", if quick { " (quick: sizes cut down, figures only indicative)" } else { "" });
        if on("per-packet") {
            println!("{}", bench::testrun::run(scale)?.render());
        }
        if on("veth") {
            println!("{}", bench::veth::run(scale)?.render());
        }
        if on("poll") {
            let (t, m) = bench::poll::run(scale)?;
            println!("{}\n{}", t.render(), m.render());
        }
        if on("replay") {
            let dir = std::env::temp_dir().join(format!("voipdetect-bench-{}", std::process::id()));
            let t = bench::replay::run(scale, &dir);
            let _ = std::fs::remove_dir_all(&dir);
            println!("{}", t?.render());
        }
        println!("(ran in {:.0} s)", started.elapsed().as_secs_f64());
        Ok(())
    })();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
