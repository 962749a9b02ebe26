//! The voipdetect command line: flags, logging and signals; the work is in
//! the library.
use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::{Parser, Subcommand};
use voipdetect::{
    config::{DetectFlags, PSEUDONYM_KEY_ENV, RunFlags, Settings, parse_duration},
    datapath::pins::DEFAULT_PIN_DIR,
    key, ops,
};

#[derive(Parser)]
#[command(version, about = "Finds real-time voice and video calls with XDP, reports them and blocks them on request")]
struct Cli {
    /// Log level: error, warn, info, debug (debug also enables the XDP program's own log lines).
    #[arg(long, global = true, default_value = "info", value_parser = ["error", "warn", "info", "debug", "trace"])]
    log_level: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Attach to interfaces and detect (and optionally block) calls until SIGINT/SIGTERM.
    Run(Box<RunFlags>),
    /// Run captures (pcap, pcapng) through the same detection, one JSON line per conversation.
    Replay {
        /// Capture files.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        #[command(flatten)]
        detect: DetectFlags,
        /// Also draw packets per second of the busiest conversations, verdicts marked, as SVG.
        #[arg(long, value_name = "OUT.svg")]
        plot: Option<PathBuf>,
        /// JSON lines (replay's only format; accepted so scripts can pass the flag they pass to run).
        #[arg(long)]
        json: bool,
    },
    /// Tracked flows of the running controller, with current rates (reads its pinned maps).
    Flows {
        #[command(flatten)]
        pins: PinArgs,
        /// How long to watch for the rates.
        #[arg(long, default_value = "1s", value_parser = parse_duration)]
        interval: Duration,
        #[arg(long)]
        json: bool,
    },
    /// Block a conversation by hand (both directions): voipdetect block udp SRC DST [--ttl 10m].
    Block {
        #[command(flatten)]
        flow: FlowArgs,
        #[arg(long, default_value = "60s", value_parser = parse_duration)]
        ttl: Duration,
    },
    /// Lift a block by hand (both directions). The controller then only reports that call while it lasts.
    Unblock {
        #[command(flatten)]
        flow: FlowArgs,
    },
    /// Attached interfaces, mode and counters of the running (or kept) program.
    Status {
        #[command(flatten)]
        pins: PinArgs,
        #[arg(long)]
        json: bool,
    },
    /// Remove a program left attached and pinned (after --keep-attached or a crash).
    Detach {
        #[command(flatten)]
        pins: PinArgs,
    },
}

/// A conversation named on the command line, and where its controller pins.
#[derive(clap::Args)]
struct FlowArgs {
    #[command(flatten)]
    pins: PinArgs,
    /// udp or tcp.
    #[arg(value_name = "PROTO")]
    proto: String,
    /// ip:port or [ipv6]:port.
    #[arg(value_name = "SRC")]
    src: String,
    #[arg(value_name = "DST")]
    dst: String,
}

impl FlowArgs {
    fn key(&self) -> anyhow::Result<voipdetect_common::FlowKey> {
        key::parse_flow(&self.proto, &self.src, &self.dst)
    }
}

#[derive(clap::Args)]
struct PinArgs {
    /// Where the controller pinned its maps and links.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_PIN_DIR)]
    pin_dir: PathBuf,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help, --version
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // One line: clap's message without the usage block that follows it.
            let msg = e.render().to_string();
            let text: Vec<&str> = msg
                .lines()
                .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect();
            eprintln!("{}", text.join(" "));
            return ExitCode::from(2);
        }
    };
    env_logger::Builder::new().parse_filters(&format!("warn,voipdetect={0},aya_log={0}", cli.log_level)).format_target(false).init();
    let debug = cli.log_level == "debug" || cli.log_level == "trace";
    let result = match cli.cmd {
        Cmd::Run(flags) => {
            Settings::resolve(*flags, std::env::var(PSEUDONYM_KEY_ENV).ok()).and_then(|s| tokio_main(voipdetect::run::run(s, debug)))
        }
        Cmd::Replay { files, detect, plot, json: _ } => replay(&files, &detect, plot.as_deref()),
        Cmd::Flows { pins, interval, json } => ops::flows(&pins.pin_dir, interval, json),
        Cmd::Block { flow, ttl } => flow.key().and_then(|k| ops::block(&flow.pins.pin_dir, k, ttl)),
        Cmd::Unblock { flow } => flow.key().and_then(|k| ops::unblock(&flow.pins.pin_dir, k)),
        Cmd::Status { pins, json } => ops::status(&pins.pin_dir, json),
        Cmd::Detach { pins } => ops::detach(&pins.pin_dir),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // `voipdetect replay ... | head`: the reader has all it wanted.
        Err(e) if e.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)) => {
            ExitCode::SUCCESS
        }
        Err(e) => {
            // One line with the context chain.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Replays every file; a file that cannot be read to its end is reported
/// (with the offset) after the conversations before the failure.
fn replay(files: &[PathBuf], detect: &DetectFlags, plot: Option<&std::path::Path>) -> anyhow::Result<()> {
    let s = Settings::for_replay(detect);
    let cfg = s.controller();
    let poll = s.poll_interval.as_nanos() as u64;
    let mut out = std::io::stdout().lock();
    let mut failed = Vec::new();
    let mut plots = Vec::new();
    for f in files {
        match voipdetect::replay::replay_file(f, &cfg, poll, &mut out, plot.is_some()) {
            Ok((None, p)) => plots.extend(p),
            Ok((Some(e), p)) => {
                plots.extend(p);
                failed.push(format!("{}: {e}", f.display()));
            }
            Err(e) => failed.push(format!("{e:#}")),
        }
    }
    if let Some(path) = plot {
        voipdetect::plot::write_svg(path, &plots)?;
        eprintln!("plot written to {}", path.display());
    }
    match failed.as_slice() {
        [] => Ok(()),
        [one] => Err(anyhow::anyhow!("{one}")),
        many => Err(anyhow::anyhow!("{} files failed: {}", many.len(), many.join("; "))),
    }
}

fn tokio_main<F: Future<Output = anyhow::Result<()>>>(f: F) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(f)
}
