//! `voipdetect-lab`: the lab's tools. `demo` plays calls and look-alikes
//! through a blocking gateway in network namespaces; `bench` runs the
//! benchmarks of BENCHMARKS.md; `corpus` writes the traffic generator's
//! catalogue as labelled captures. `cargo xtask demo|bench|eval` run it.
use std::{path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use voipdetect_lab::{
    bench::{self, Scale},
    demo::{self, DemoOptions},
    require_root, voipdetect_binary,
};

#[derive(Parser)]
#[command(about = "voipdetect's lab: the demo, the benchmarks and the generated corpus")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build the lab network in namespaces, run calls and look-alikes through a blocking gateway, report, clean up.
    Demo {
        /// How long the flows run.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(5..=300))]
        seconds: u64,
        /// The voipdetect binary to run on the gateway [default: $VOIPDETECT_BIN, else the one next to this binary].
        #[arg(long, value_name = "PATH")]
        bin: Option<PathBuf>,
        /// Extra flags for `voipdetect run`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        run_args: Vec<String>,
    },
    /// The benchmarks of BENCHMARKS.md (root): per-packet, veth, poll, replay (default: all).
    Bench {
        /// Every section at a size that takes seconds (figures only indicative).
        #[arg(long)]
        quick: bool,
        #[arg(value_parser = ["per-packet", "veth", "poll", "replay"])]
        sections: Vec<String>,
    },
    /// Play every call spread over several conversations through a blocking gateway (root) and print how much got through after its first verdict.
    Leak {
        /// Length of each call.
        #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(u64).range(6..=120))]
        seconds: u64,
        /// The voipdetect binary to run on the gateway [default: $VOIPDETECT_BIN, else the one next to this binary].
        #[arg(long, value_name = "PATH")]
        bin: Option<PathBuf>,
    },
    /// Every look-alike and call variant over links losing 0-30 % and jittering 0-30 ms, in replay: look-alikes called and calls missed, by cell.
    Grid {
        /// Length of each look-alike.
        #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(5..=900))]
        look_alike_seconds: u64,
        /// Length of each call.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(5..=300))]
        call_seconds: u64,
        /// Seeds per cell (each seed its own losses and delays).
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=20))]
        seeds: u64,
    },
    /// Write the traffic generator's catalogue of calls and look-alikes as labelled captures.
    Corpus {
        /// Directory for the captures, labels.tsv and split.tsv.
        #[arg(long)]
        out: PathBuf,
        /// Length of each flow.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(2..=600))]
        seconds: u64,
    },
}

fn bench(quick: bool, sections: &[String]) -> anyhow::Result<()> {
    let on = |s: &str| sections.is_empty() || sections.iter().any(|w| w == s);
    let scale = Scale { quick };
    let started = std::time::Instant::now();
    require_root("voipdetect-lab bench")?;
    println!("# voipdetect benchmarks{}\n", if quick { " (quick: sizes cut down, figures only indicative)" } else { "" });
    if on("per-packet") {
        let (warm, cycling) = bench::testrun::run(scale)?;
        println!("{}\n{}", warm.render(), cycling.render());
    }
    if on("veth") {
        println!("{}", bench::veth::run(scale)?.render());
        println!("{}", bench::veth::forwarding(scale)?.render());
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
}

fn leak(binary: &std::path::Path, seconds: u64) -> anyhow::Result<()> {
    require_root("voipdetect-lab leak")?;
    let mut leaks = Vec::new();
    for call in voipdetect_traffic::calls::session_calls(seconds) {
        let (l, _) = voipdetect_lab::leak::run(binary, &call)?;
        leaks.push(l);
    }
    println!("Media delivered after each call's first verdict (block mode, a lab per call):");
    print!("{}", voipdetect_lab::leak::table(&leaks));
    Ok(())
}

fn corpus(out: &std::path::Path, seconds: u64) -> anyhow::Result<()> {
    let c = voipdetect_traffic::corpus::build(seconds);
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    for (name, bytes) in &c.captures {
        let path = out.join(name);
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
    }
    std::fs::write(out.join("labels.tsv"), &c.labels).context("writing labels.tsv")?;
    std::fs::write(out.join("split.tsv"), &c.split).context("writing split.tsv")?;
    println!("{} captures, labels.tsv and split.tsv written to {}", c.captures.len(), out.display());
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Demo { seconds, bin, run_args } => {
            bin.map_or_else(voipdetect_binary, Ok).and_then(|binary| demo::demo(&DemoOptions { seconds, binary, run_args })).map(drop)
        }
        Cmd::Bench { quick, sections } => bench(quick, &sections),
        Cmd::Leak { seconds, bin } => bin.map_or_else(voipdetect_binary, Ok).and_then(|binary| leak(&binary, seconds)),
        Cmd::Corpus { out, seconds } => corpus(&out, seconds),
        Cmd::Grid { look_alike_seconds, call_seconds, seeds } => {
            let started = std::time::Instant::now();
            let o = voipdetect_lab::grid::GridOptions {
                look_alike_secs: look_alike_seconds,
                call_secs: call_seconds,
                seeds,
                ..Default::default()
            };
            print!("{}", voipdetect_lab::grid::run(&o).report);
            println!("(ran in {:.0} s)", started.elapsed().as_secs_f64());
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
