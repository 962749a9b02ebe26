//! The voipdetect command line: flags, logging and signals; the work is in
//! the library.
use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::{Parser, Subcommand};
use voipdetect::{
    config::{DEFAULT_PIN_DIR, Settings, parse_duration},
    controller::Mode,
    ops,
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
    Run(Box<RunArgs>),
    /// Run captures (pcap, pcapng) through the same detection, one JSON line per conversation.
    Replay {
        /// Capture files.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        #[command(flatten)]
        detect: DetectArgs,
        /// Also draw packets per second of the busiest conversations, verdicts marked, as SVG.
        #[arg(long, value_name = "OUT.svg")]
        plot: Option<PathBuf>,
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
    /// Write the traffic generator's catalogue of calls and look-alikes as labelled captures.
    Corpus {
        /// Directory for the captures, labels.tsv and split.tsv.
        #[arg(long)]
        out: PathBuf,
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
        ops::parse_flow(&self.proto, &self.src, &self.dst)
    }
}

#[derive(clap::Args)]
struct PinArgs {
    /// Where the controller pinned its maps and links.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_PIN_DIR)]
    pin_dir: PathBuf,
}

/// Detection settings the live and the offline driver share.
#[derive(clap::Args)]
struct DetectArgs {
    /// How often the flow map is read (replay: on the capture's clock) [default: 250ms].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    poll_interval: Option<Duration>,
    /// Classification window [default: 1s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    window: Option<Duration>,
    /// How long a verdict (and a block) lasts after the call's last packet [default: 60s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    ttl: Option<Duration>,
    /// Forget conversations idle this long [default: 30s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    idle_timeout: Option<Duration>,
}

impl DetectArgs {
    fn apply(&self, s: &mut Settings) {
        if let Some(v) = self.poll_interval {
            s.poll_interval = v;
        }
        if let Some(v) = self.window {
            s.window = v;
        }
        if let Some(v) = self.ttl {
            s.ttl = v;
        }
        if let Some(v) = self.idle_timeout {
            s.idle_timeout = v;
        }
    }
}

#[derive(clap::Args)]
struct RunArgs {
    /// TOML configuration; flags given here override it.
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Interface to attach to; repeat for each side of a gateway.
    #[arg(long = "iface", value_name = "IF")]
    ifaces: Vec<String>,
    /// monitor: report calls; block: also drop them [default: monitor].
    #[arg(long, value_enum)]
    mode: Option<Mode>,
    #[command(flatten)]
    detect: DetectArgs,
    /// Also block media flowing one way only (music on hold, broadcast legs).
    #[arg(long)]
    block_one_way: bool,
    /// Capacity of the kernel flow table (direction-flows).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    flow_entries: Option<u32>,
    /// Capacity of the kernel blocklist.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    block_entries: Option<u32>,
    /// One JSON object per event instead of text lines.
    #[arg(long)]
    json: bool,
    /// Write events to this file (appended) instead of stdout.
    #[arg(long, value_name = "FILE")]
    events: Option<PathBuf>,
    /// Write one record per call, when it ends or is released, to this file (appended).
    #[arg(long, value_name = "FILE")]
    call_records: Option<PathBuf>,
    /// Serve Prometheus metrics on this address (e.g. 127.0.0.1:9464).
    #[arg(long, value_name = "ADDR")]
    metrics: Option<std::net::SocketAddr>,
    /// Replace addresses in events and records by a keyed hash (key: outputs.pseudonym_key or $VOIPDETECT_PSEUDONYM_KEY).
    #[arg(long)]
    pseudonymize_ips: bool,
    /// Pin maps and links here, and take over what an earlier run left there.
    #[arg(long, value_name = "DIR")]
    pin_dir: Option<PathBuf>,
    /// Pin nothing: the program lives and dies with this process.
    #[arg(long, conflicts_with = "pin_dir")]
    no_pin: bool,
    /// On exit leave the program attached with its pinned maps (for a restart); default: detach and unpin.
    #[arg(long)]
    keep_attached: bool,
    /// Stop after this long instead of waiting for a signal.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    duration: Option<Duration>,
}

impl RunArgs {
    fn settings(self) -> anyhow::Result<Settings> {
        let mut s = match &self.config {
            Some(p) => Settings::from_file(p)?,
            None => Settings::default(),
        };
        if !self.ifaces.is_empty() {
            s.interfaces = self.ifaces;
        }
        if let Some(m) = self.mode {
            s.mode = m;
        }
        self.detect.apply(&mut s);
        s.block_one_way |= self.block_one_way;
        if let Some(v) = self.flow_entries {
            s.flow_entries = v;
        }
        if let Some(v) = self.block_entries {
            s.block_entries = v;
        }
        s.json |= self.json;
        if self.events.is_some() {
            s.events = self.events;
        }
        if self.call_records.is_some() {
            s.call_records = self.call_records;
        }
        if self.metrics.is_some() {
            s.metrics = self.metrics;
        }
        s.pseudonymize_ips |= self.pseudonymize_ips;
        if let Ok(k) = std::env::var("VOIPDETECT_PSEUDONYM_KEY") {
            s.pseudonym_key = Some(k);
        }
        if self.no_pin {
            s.pin_dir = None;
        } else if self.pin_dir.is_some() {
            s.pin_dir = self.pin_dir;
        }
        s.keep_attached |= self.keep_attached;
        if s.keep_attached && s.pin_dir.is_none() {
            anyhow::bail!("--keep-attached needs pinning (drop --no-pin)");
        }
        if self.duration.is_some() {
            s.duration = self.duration;
        }
        Ok(s)
    }
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
        Cmd::Run(a) => a.settings().and_then(|s| tokio_main(voipdetect::run::run(s, debug))),
        Cmd::Replay { files, detect, plot } => replay(&files, &detect, plot.as_deref()),
        Cmd::Flows { pins, interval, json } => ops::flows(&pins.pin_dir, interval, json),
        Cmd::Block { flow, ttl } => flow.key().and_then(|k| ops::block(&flow.pins.pin_dir, k, ttl)),
        Cmd::Unblock { flow } => flow.key().and_then(|k| ops::unblock(&flow.pins.pin_dir, k)),
        Cmd::Status { pins, json } => ops::status(&pins.pin_dir, json),
        Cmd::Detach { pins } => ops::detach(&pins.pin_dir),
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
fn replay(files: &[PathBuf], detect: &DetectArgs, plot: Option<&std::path::Path>) -> anyhow::Result<()> {
    let mut s = Settings::default();
    detect.apply(&mut s);
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
