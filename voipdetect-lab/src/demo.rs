//! `voipdetect-lab demo` (run by `cargo xtask demo`): the main job on the built-in lab. Builds the
//! client — gateway — server namespaces, runs the controller in block mode
//! on both gateway interfaces, plays two calls (RTP over UDP at 20 ms, audio
//! over TCP at 30 ms) next to a bulk transfer and a game, prints verdicts as
//! they happen and what each receiver got, then removes everything.

use std::{
    path::PathBuf,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::Context as _;

use voipdetect_traffic::pattern;

use crate::{
    lab::{GatewayLab, require_root},
    live::{self, FlowResult},
};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// Demo settings.
pub struct DemoOptions {
    pub seconds: u64,
    pub binary: PathBuf,
    /// Extra flags for `voipdetect run`.
    pub run_args: Vec<String>,
}

pub fn demo(opts: &DemoOptions) -> anyhow::Result<Vec<FlowResult>> {
    require_root("the demo")?;
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    println!("Building the lab: client — gateway — server in network namespaces ...");
    let lab = GatewayLab::new()?;
    println!(
        "  client {} ({}), gateway {} ({} / {}), server {} ({})",
        lab.client.name(),
        lab.client_if,
        lab.gateway.name(),
        lab.gw_client_if,
        lab.gw_server_if,
        lab.server.name(),
        lab.server_if
    );
    let mut args = vec!["--mode", "block"];
    args.extend(opts.run_args.iter().map(String::as_str));
    let mut ctl = lab.start_controller(&opts.binary, &args)?;
    ctl.wait_attached(Duration::from_secs(20)).context("starting the controller")?;
    println!("Controller attached to {} and {} in block mode.", lab.gw_client_if, lab.gw_server_if);

    let flows = vec![
        pattern::rtp_call(opts.seconds),
        pattern::tcp_audio_call(opts.seconds),
        pattern::bulk_tcp(256 << 20),
        pattern::game(64, opts.seconds),
    ];
    println!("Playing for {} s: {}.\n", opts.seconds, flows.iter().map(|f| f.name.as_str()).collect::<Vec<_>>().join(", "));

    let started = Instant::now();
    let ctl_ref = &ctl;
    let results = std::thread::scope(|s| {
        let printer = s.spawn(move || {
            let mut events = Vec::new();
            while !STOP.load(Ordering::Relaxed) {
                if let Some(v) = ctl_ref.next_event(Duration::from_millis(100)) {
                    println!("  [{:5.1} s] {}", started.elapsed().as_secs_f64(), describe(&v));
                    events.push(v);
                }
            }
            events
        });
        let r = live::run(&lab, &flows, &STOP);
        STOP.store(true, Ordering::Relaxed);
        let _ = printer.join();
        r
    })?;
    let status = ctl.stop()?;
    if !status.success() {
        eprintln!("controller exited with {status}:\n{}", ctl.stderr_text());
    }
    println!("\nWhat the receivers got:");
    println!("{}", table(&results));
    drop(lab);
    println!("Lab removed.");
    Ok(results)
}

/// One line for a controller event.
pub fn describe(v: &serde_json::Value) -> String {
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("?").to_owned();
    let what = match (s("event").as_str(), s("action").as_str()) {
        ("verdict", "blocked") => "BLOCKED",
        ("verdict", _) => "CALL",
        ("release", _) => "released",
        _ => "event",
    };
    format!("{what} {} {} -> {} ({}): {}", s("proto"), s("src"), s("dst"), s("iface"), s("reason"))
}

/// The receivers' table.
pub fn table(results: &[FlowResult]) -> String {
    let mut out = format!("  {:<24} {:>13} {:>13} {:>9}  {}\n", "flow", "sent", "received", "unit", "outcome");
    for r in results {
        let outcome = match r.cut_off_after() {
            None => "delivered 100 %".to_owned(),
            Some(t) => format!("cut off after {:.1} s", t.as_secs_f64()),
        };
        out.push_str(&format!("  {:<24} {:>13} {:>13} {:>9}  {outcome}\n", r.name, r.sent(), r.received(), r.unit()));
    }
    out
}
