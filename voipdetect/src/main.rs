//! The voipdetect command line: flags, logging and signals; the work is in
//! the library.
use std::{process::ExitCode, time::Duration};

use clap::{Parser, Subcommand};
use voipdetect::{
    controller::{self, Mode, NS_PER_SEC},
    datapath::LoadOptions,
    run::{RunOptions, run},
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
    Run(RunArgs),
    /// Run captures (pcap, pcapng) through the same detection, one JSON line per conversation.
    Replay {
        /// Capture files.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<std::path::PathBuf>,
        #[command(flatten)]
        detect: DetectArgs,
    },
    /// Write the traffic generator's catalogue of calls and look-alikes as labelled captures.
    Corpus {
        /// Directory for the captures, labels.tsv and split.tsv.
        #[arg(long)]
        out: std::path::PathBuf,
        /// Length of each flow.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(2..=600))]
        seconds: u64,
    },
    /// Build the lab network in namespaces, run calls and look-alikes through a blocking gateway, report, clean up.
    Demo {
        /// How long the flows run.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(5..=300))]
        seconds: u64,
    },
}

fn duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 250ms, 60s, 5m)"))?;
    if d.is_zero() { Err("must be greater than zero".into()) } else { Ok(d) }
}

/// Settings the live and the offline driver share.
#[derive(clap::Args)]
struct DetectArgs {
    /// How often the flow map is read (replay: on the capture's clock).
    #[arg(long, value_name = "DURATION", default_value = "250ms", value_parser = duration)]
    poll_interval: Duration,
    /// Classification window.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = duration)]
    window: Duration,
    /// How long a verdict (and a block) lasts after the call's last packet.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = duration)]
    ttl: Duration,
    /// Forget conversations idle this long.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = duration)]
    idle_timeout: Duration,
}

impl DetectArgs {
    fn config(&self, mode: Mode, block_one_way: bool) -> controller::Config {
        controller::Config {
            mode,
            window_ns: ns(self.window),
            ttl_ns: ns(self.ttl),
            idle_ns: ns(self.idle_timeout).max(NS_PER_SEC),
            block_one_way,
            ..Default::default()
        }
    }
}

#[derive(clap::Args)]
struct RunArgs {
    /// Interface to attach to; repeat for each side of a gateway.
    #[arg(long = "iface", required = true, value_name = "IF")]
    ifaces: Vec<String>,
    /// monitor: report calls; block: also drop them.
    #[arg(long, value_enum, default_value_t = Mode::Monitor)]
    mode: Mode,
    #[command(flatten)]
    detect: DetectArgs,
    /// Also block media flowing one way only (music on hold, broadcast legs).
    #[arg(long)]
    block_one_way: bool,
    /// Capacity of the kernel flow table (direction-flows).
    #[arg(long, value_name = "N", default_value_t = voipdetect_common::maps::DEFAULT_FLOW_ENTRIES, value_parser = clap::value_parser!(u32).range(1..))]
    flow_entries: u32,
    /// Capacity of the kernel blocklist.
    #[arg(long, value_name = "N", default_value_t = voipdetect_common::maps::DEFAULT_BLOCK_ENTRIES, value_parser = clap::value_parser!(u32).range(1..))]
    block_entries: u32,
    /// One JSON object per event instead of text lines.
    #[arg(long)]
    json: bool,
    /// Stop after this long instead of waiting for a signal.
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    duration: Option<Duration>,
}

fn ns(d: Duration) -> u64 {
    d.as_nanos().min(u128::from(u64::MAX)) as u64
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
    env_logger::Builder::new()
        .parse_filters(&format!("warn,voipdetect={0},aya_log={0}", cli.log_level))
        .format_target(false)
        .init();
    let debug = cli.log_level == "debug" || cli.log_level == "trace";
    let result = match cli.cmd {
        Cmd::Run(a) => {
            let opts = RunOptions {
                ifaces: a.ifaces,
                poll_interval: a.detect.poll_interval,
                json: a.json,
                load: LoadOptions {
                    flow_entries: a.flow_entries,
                    block_entries: a.block_entries,
                    kernel_debug_log: debug,
                },
                controller: a.detect.config(a.mode, a.block_one_way),
                duration: a.duration,
            };
            tokio_main(run(opts))
        }
        Cmd::Replay { files, detect } => replay(&files, &detect),
        Cmd::Corpus { out, seconds } => voipdetect::corpus::write(&out, seconds).map(|n| {
            println!("{n} captures, labels.tsv and split.tsv written to {}", out.display());
        }),
        Cmd::Demo { seconds } => std::env::current_exe()
            .map_err(anyhow::Error::from)
            .and_then(|binary| voipdetect::demo::demo(&voipdetect::demo::DemoOptions { seconds, binary, run_args: vec![] }))
            .map(drop),
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
fn replay(files: &[std::path::PathBuf], detect: &DetectArgs) -> anyhow::Result<()> {
    let cfg = detect.config(Mode::Monitor, false);
    let mut out = std::io::stdout().lock();
    let mut failed = Vec::new();
    for f in files {
        match voipdetect::replay::replay_file(f, &cfg, ns(detect.poll_interval), &mut out) {
            Ok(None) => {}
            Ok(Some(e)) => failed.push(format!("{}: {e}", f.display())),
            Err(e) => failed.push(format!("{e:#}")),
        }
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
