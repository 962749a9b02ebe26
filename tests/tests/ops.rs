//! Tier 3, operations: the controller as a gateway service. Restart after a
//! crash, the commands that read its pinned maps, metrics and call records,
//! and a flow flood next to a call.

use std::{
    process::Stdio,
    sync::atomic::AtomicBool,
    time::{Duration, Instant},
};

use voipdetect_lab::{ControllerProcess, GatewayLab, live};
use voipdetect_tests::binary;
use voipdetect_traffic::{addrs, pattern};

/// `voipdetect ARGS --pin-dir <lab's>` in the gateway namespace: (exit code, stdout, stderr).
fn cli(lab: &GatewayLab, args: &[&str]) -> (i32, String, String) {
    let out = lab.gateway.command(binary()).args(args).arg("--pin-dir").arg(lab.pin_dir()).stdin(Stdio::null()).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

fn status(lab: &GatewayLab) -> serde_json::Value {
    let (code, out, err) = cli(lab, &["status", "--json"]);
    assert_eq!(code, 0, "status: {err}");
    serde_json::from_str(&out).unwrap()
}

fn wait_verdict(ctl: &ControllerProcess, timeout: Duration) -> serde_json::Value {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(e) = ctl.next_event(Duration::from_millis(100))
            && e["event"] == "verdict"
            && e["action"] == "blocked"
        {
            return e;
        }
    }
    panic!("no blocking verdict within {timeout:?}: {}", ctl.stderr_text());
}

/// kill -9 mid-call: the program stays attached and keeps its blocklist
/// (fail-open: the block ends at its TTL, nothing new is blocked); a new
/// `run` takes over the pinned maps and links, with exactly one program
/// attached afterwards.
#[test]
fn restart_after_a_crash_readopts_and_blocks_expire_meanwhile() {
    voipdetect_tests::require_root();
    let lab = GatewayLab::new().unwrap();
    let ttl = 4;
    let ttl_arg = format!("{ttl}s");
    let call = pattern::rtp_call(14);
    std::thread::scope(|s| {
        let traffic = s.spawn(|| live::run(&lab, std::slice::from_ref(&call), &AtomicBool::new(false)).unwrap());
        let mut ctl = lab.start_controller(&binary(), &["--mode", "block", "--ttl", &ttl_arg]).unwrap();
        ctl.wait_attached(Duration::from_secs(20)).unwrap();
        wait_verdict(&ctl, Duration::from_secs(6));
        let killed_at = Instant::now();
        ctl.kill_hard().unwrap();

        // Fail-open: still attached, blocklist intact, nobody adding to it.
        let st = status(&lab);
        assert_eq!(st["controller_running"], false, "{st}");
        assert_eq!(st["attached"].as_array().map(Vec::len), Some(2), "{st}");
        assert_eq!(st["blocklist_active"], 2, "{st}");
        let ids_before = lab.gateway_xdp_ids().unwrap();
        assert_eq!(ids_before.len(), 2);

        // A new run re-adopts within the TTL: the blocklist survives.
        std::thread::sleep(Duration::from_millis(500));
        let mut ctl2 = lab.start_controller(&binary(), &["--mode", "block", "--ttl", &ttl_arg]).unwrap();
        ctl2.wait_attached(Duration::from_secs(20)).unwrap();
        let log = ctl2.stderr_text();
        assert!(log.contains("re-adopted the maps") && log.contains("re-adopted the link"), "{log}");
        let st = status(&lab);
        assert_eq!(st["controller_running"], true);
        assert!(st["blocklist_active"].as_u64() >= Some(2), "blocklist lost in the restart: {st}");
        let ids_after = lab.gateway_xdp_ids().unwrap();
        assert_eq!(ids_after.len(), 2, "exactly one program per interface");
        assert_ne!(ids_after, ids_before, "the new controller's program replaced the old one in the links");

        let r = traffic.join().unwrap().remove(0);
        // The crashed controller's block ran out at its TTL: the call got
        // through again for a while before the new controller called it.
        let status = ctl2.stop().unwrap();
        assert!(status.success());
        let events = ctl2.drain();
        assert!(
            events.iter().any(|e| e["event"] == "verdict" && e["action"] == "blocked"),
            "the new controller called the call again after the old block expired: {events:#?}"
        );
        assert!(killed_at.elapsed() > Duration::from_secs(ttl));
        assert!(r.cut_off_after().is_some(), "{r:?}");
        assert!(!lab.gateway_has_xdp().unwrap(), "a clean stop detaches");
        assert!(!lab.pin_dir().exists(), "a clean stop unpins");
    });
}

/// `voipdetect unblock` on a call the controller blocked: the call gets
/// through from then on, the controller does not list it again while it
/// lasts (its refresh finds the entry gone), and its events say why.
#[test]
fn an_operator_unblock_lets_the_call_through_for_good() {
    voipdetect_tests::require_root();
    let lab = GatewayLab::new().unwrap();
    // A short TTL: the controller's first refresh falls well inside the call.
    let mut ctl = lab.start_controller(&binary(), &["--mode", "block", "--ttl", "2s"]).unwrap();
    ctl.wait_attached(Duration::from_secs(20)).unwrap();
    let call = pattern::rtp_call(10);
    let (client, server) = addrs::of(&call);
    let r = std::thread::scope(|s| {
        let traffic = s.spawn(|| live::run(&lab, std::slice::from_ref(&call), &AtomicBool::new(false)).unwrap());
        let verdict = wait_verdict(&ctl, Duration::from_secs(6));
        // `flows` shows both directions in the verdict's session.
        let (code, out, err) = cli(&lab, &["flows", "--json", "--interval", "100ms"]);
        assert_eq!(code, 0, "{err}");
        let rows: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let (c, s) = (client.to_string(), server.to_string());
        let call_rows: Vec<_> = rows
            .iter()
            .filter(|r| (r["src"] == c.as_str() && r["dst"] == s.as_str()) || (r["src"] == s.as_str() && r["dst"] == c.as_str()))
            .collect();
        assert_eq!(call_rows.len(), 2, "{out}");
        assert!(call_rows.iter().all(|r| r["session"] == verdict["session"] && !r["blocked_for"].is_null()), "{verdict}\n{out}");
        // Lifted after a moment of the block, before the first refresh (1 s in).
        std::thread::sleep(Duration::from_millis(200));
        let (code, _, err) = cli(&lab, &["unblock", "udp", &client.to_string(), &server.to_string()]);
        assert_eq!(code, 0, "{err}");
        traffic.join().unwrap().remove(0)
    });
    let st = status(&lab);
    ctl.stop().unwrap();
    let events = ctl.drain();
    // Cut off for the moment between verdict and unblock, then through to the end.
    assert!(r.cut_off_after().is_some(), "{r:?}");
    assert!(r.last_recv.unwrap() > Duration::from_secs(9), "blocked again after the unblock: {r:?}");
    let lost = r.sent() - r.received();
    assert!(lost < 150, "lost {lost}: {r:?}");
    assert_eq!(st["blocklist_active"], 0, "{st}");
    assert!(
        events.iter().any(|e| e["event"] == "verdict"
            && e["action"] == "reported"
            && e["reason"].as_str().is_some_and(|r| r.ends_with("(block lifted by an operator)"))),
        "{events:#?}"
    );
}

/// `flows`, `block`, `unblock` and `status` against a running controller.
#[test]
fn commands_read_and_change_the_running_controller() {
    voipdetect_tests::require_root();
    let lab = GatewayLab::new().unwrap();
    let mut ctl = lab.start_controller(&binary(), &["--mode", "monitor"]).unwrap();
    ctl.wait_attached(Duration::from_secs(20)).unwrap();
    let game = pattern::game(64, 9);
    let (client, server) = addrs::of(&game);
    let (c, s) = (client.to_string(), server.to_string());
    std::thread::scope(|sc| {
        let traffic = sc.spawn(|| live::run(&lab, std::slice::from_ref(&game), &AtomicBool::new(false)).unwrap());
        std::thread::sleep(Duration::from_secs(2));
        let (code, out, err) = cli(&lab, &["flows", "--json", "--interval", "500ms"]);
        assert_eq!(code, 0, "{err}");
        let rows: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let row = rows.iter().find(|r| r["src"] == c.as_str()).unwrap_or_else(|| panic!("game flow not listed: {out}"));
        assert!(row["pps"].as_f64().unwrap() > 30.0, "{row}");
        assert!(row["blocked_for"].is_null());

        let (code, _, err) = cli(&lab, &["block", "udp", &c, &s, "--ttl", "60s"]);
        assert_eq!(code, 0, "{err}");
        let st = status(&lab);
        assert_eq!(st["blocklist_active"], 2, "{st}");
        std::thread::sleep(Duration::from_secs(3));
        let (code, _, err) = cli(&lab, &["unblock", "udp", &c, &s]);
        assert_eq!(code, 0, "{err}");
        let r = traffic.join().unwrap().remove(0);
        // About three seconds of 64 Hz each way went missing, and traffic
        // came back after the unblock.
        let lost = r.sent() - r.received();
        assert!((250..=500).contains(&lost), "lost {lost}: {r:?}");
        assert!(r.last_recv.unwrap() > Duration::from_secs(8), "{r:?}");
        let st = status(&lab);
        assert_eq!(st["blocklist_active"], 0);
        assert!(st["seen"].as_u64().unwrap() > 1000, "{st}");
        assert!(st["counters"]["dropped"].as_u64().unwrap() >= 250, "{st}");
    });
    // A second controller cannot attach next to the running one: not with
    // the same pins, not with others.
    for extra in [&[][..], &["--no-pin"][..]] {
        let mut cmd = lab.gateway.command(binary());
        cmd.args(["run", "--iface", &lab.gw_client_if, "--duration", "2s"]);
        if extra.is_empty() {
            cmd.arg("--pin-dir").arg(lab.pin_dir());
        } else {
            cmd.args(extra);
        }
        let out = cmd.stdin(Stdio::null()).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{extra:?}: second run started: {err}");
        assert!(err.contains("already"), "{extra:?}: {err}");
    }
    assert_eq!(lab.gateway_xdp_ids().unwrap().len(), 2);
    // Bad input to the commands: one line, non-zero.
    for args in [
        &["block", "sctp", "1.2.3.4:1", "5.6.7.8:2"][..],
        &["block", "udp", "1.2.3.4", "5.6.7.8:2"],
        &["unblock", "udp", "1.2.3.4:1", "[::1]:2"],
    ] {
        let (code, _, err) = cli(&lab, args);
        assert_ne!(code, 0, "{args:?}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
    }
    ctl.stop().unwrap();
    let (code, _, err) = cli(&lab, &["status"]);
    assert_ne!(code, 0);
    assert!(err.contains("no voipdetect maps pinned"), "{err}");
}

/// Prometheus text and call records, addresses pseudonymised.
#[test]
fn metrics_and_pseudonymised_call_records() {
    voipdetect_tests::require_root();
    let lab = GatewayLab::new().unwrap();
    let dir = std::env::temp_dir().join(format!("voipdetect-records-{}", lab.id));
    let _ = std::fs::remove_dir_all(&dir);
    let records = dir.join("calls.jsonl");
    let rec = records.to_string_lossy().into_owned();
    // SAFETY: set before any thread of this test reads the environment.
    unsafe { std::env::set_var("VOIPDETECT_PSEUDONYM_KEY", "test key") };
    let mut ctl = lab
        .start_controller(&binary(), &["--mode", "block", "--metrics", "127.0.0.1:19464", "--call-records", &rec, "--pseudonymize-ips"])
        .unwrap();
    ctl.wait_attached(Duration::from_secs(20)).unwrap();
    let call = pattern::rtp_call(5);
    live::run(&lab, std::slice::from_ref(&call), &AtomicBool::new(false)).unwrap();
    let scrape = std::thread::scope(|s| {
        s.spawn(|| {
            voipdetect_lab::netns::enter(lab.gateway.name()).unwrap();
            use std::io::{Read, Write};
            let mut c = std::net::TcpStream::connect("127.0.0.1:19464").unwrap();
            c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            let mut body = String::new();
            c.read_to_string(&mut body).unwrap();
            body
        })
        .join()
        .unwrap()
    });
    assert!(scrape.starts_with("HTTP/1.1 200"), "{scrape}");
    let metric = |name: &str| -> f64 {
        scrape
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing:\n{scrape}"))
    };
    // Called within a fraction of a second: a few packets passed, the rest dropped.
    assert!(metric("voipdetect_packets_total{reason=\"tracked\"}") >= 5.0);
    assert!(metric("voipdetect_packets_total{reason=\"dropped\"}") > 100.0);
    assert_eq!(metric("voipdetect_verdicts_total{kind=\"voip\",basis=\"rtp\",action=\"blocked\"}"), 1.0);
    assert!(metric("voipdetect_flows_tracked") >= 2.0);
    assert!(metric("voipdetect_blocked_conversations") >= 1.0);
    assert!(metric("voipdetect_poll_duration_seconds") > 0.0);
    ctl.stop().unwrap();
    let text = std::fs::read_to_string(&records).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 1, "{text}");
    let r = &lines[0];
    assert_eq!((r["record"].as_str(), r["verdict"].as_str(), r["action"].as_str()), (Some("call"), Some("voip"), Some("blocked")));
    assert!(r["a"].as_str().unwrap().starts_with("ip-") && r["b"].as_str().unwrap().starts_with("ip-"), "{r}");
    assert!(!text.contains("192.0.2.") && !text.contains("198.51.100."), "addresses leaked: {text}");
    assert!(r["packets_ab"].as_u64().unwrap() > 100 && r["packets_ba"].as_u64().unwrap() > 100, "{r}");
    assert!(r["bytes_ab"].as_u64().unwrap() > 0);
    let d = r["duration"].as_f64().unwrap();
    assert!((4.0..=6.5).contains(&d), "{r}");
}

/// Distinct 5-tuples the flood must bring to the gateway (issue 5: "at least 1M").
const FLOOD_FLOWS: u64 = 1_000_000;
/// The flood is offered in chunks of this many frames.
const FLOOD_CHUNK: u32 = 1 << 20;
/// Upper bound on frames offered, however slowly the gateway takes them.
const FLOOD_CAP: u32 = 40 << 20;

/// A flood of random 5-tuples through the gateway next to a call: at least
/// `flood` frames, and more (in bounded chunks) until the gateway has counted
/// FLOOD_FLOWS new flows — the generator offers frames faster than the
/// gateway's veth ring takes them, and how many it drops depends on the
/// machine. Returns (seconds until the call was cut off, controller RSS
/// bytes, final status, flood frames per second offered, frames offered).
fn call_under_flood(flood: u32) -> (f64, u64, serde_json::Value, f64, u32) {
    let lab = GatewayLab::new().unwrap();
    let mut ctl = lab.start_controller(&binary(), &["--mode", "block", "--flow-entries", "65536"]).unwrap();
    ctl.wait_attached(Duration::from_secs(20)).unwrap();
    let call = pattern::rtp_call(8);
    let frame = lab.flood_frame();
    let r = std::thread::scope(|s| {
        let flooder = s.spawn(|| {
            let (mut sent, mut took) = (0u32, Duration::ZERO);
            if flood == 0 {
                return (0.0, 0);
            }
            while sent < FLOOD_CAP && (sent < flood || status(&lab)["counters"]["new_flow"].as_u64().unwrap() < FLOOD_FLOWS) {
                let n = FLOOD_CHUNK.min(FLOOD_CAP - sent);
                took += voipdetect_lab::bench::live_frames(lab.client.name(), &lab.client_if, "bench_flood", &frame, n).unwrap();
                sent += n;
            }
            (f64::from(sent) / took.as_secs_f64(), sent)
        });
        let r = live::run(&lab, std::slice::from_ref(&call), &AtomicBool::new(false)).unwrap().remove(0);
        (r, flooder.join().unwrap())
    });
    let (r, (rate, sent)) = r;
    let pid = ctl.pid().unwrap();
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:").map(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().unwrap() * 1024))
        .unwrap();
    let st = status(&lab);
    ctl.stop().unwrap();
    let cut = r.cut_off_after().unwrap_or_else(|| panic!("call not cut off (flood {flood}): {r:?}"));
    (cut.as_secs_f64(), rss, st, rate, sent)
}

#[test]
fn a_flow_flood_does_not_delay_the_block_or_cost_other_flows() {
    voipdetect_tests::require_root();
    let (quiet, _, _, _, _) = call_under_flood(0);
    let flood: u32 = std::env::var("VOIPDETECT_FLOOD_FRAMES").ok().and_then(|v| v.parse().ok()).unwrap_or(4_000_000);
    let (flooded, rss, st, rate, sent) = call_under_flood(flood);
    eprintln!(
        "figure: flood of {sent} random 5-tuples offered at {:.2} Mpps, {} new flows at the gateway; call cut off after {quiet:.2} s without and {flooded:.2} s with it; controller RSS {} MiB",
        rate / 1e6,
        st["counters"]["new_flow"],
        rss >> 20
    );
    assert!(flooded <= quiet + 1.0, "the flood delayed the block: {quiet:.2} s vs {flooded:.2} s");
    let c = &st["counters"];
    assert!(c["new_flow"].as_u64().unwrap() >= FLOOD_FLOWS, "{sent} frames offered did not create {FLOOD_FLOWS} flows: {st}");
    assert_eq!(c["flow_table_full"], 0, "the flow table refused entries instead of evicting: {st}");
    assert!(c["evicted"].as_u64().unwrap() > 0, "a flood past the table's size evicted nothing: {st}");
    // 65 536 IPv4 slots: the table never grows past what it was given.
    assert!(st["flows_tracked"].as_u64().unwrap() <= 65_536, "{st}");
    // Only the call's two directions are listed: every drop is the call's.
    assert_eq!(st["blocklist_active"], 2, "{st}");
    assert!(rss < 200 << 20, "controller RSS {} MiB", rss >> 20);
}

/// The XDP program's own log lines (new flow, block start) reach the
/// controller's log with --log-level debug, and not without.
#[test]
fn kernel_debug_lines_only_when_asked() {
    voipdetect_tests::require_root();
    for debug in [true, false] {
        let lab = GatewayLab::new().unwrap();
        let mut args = vec!["--mode", "block"];
        if debug {
            args.extend(["--log-level", "debug"]);
        }
        let mut ctl = lab.start_controller(&binary(), &args).unwrap();
        ctl.wait_attached(Duration::from_secs(20)).unwrap();
        live::run(&lab, &[pattern::rtp_call(3)], &AtomicBool::new(false)).unwrap();
        ctl.stop().unwrap();
        let log = ctl.stderr_text();
        let lines = ["new flow proto=17 192.0.2.2:40004 -> 198.51.100.2:5004", "block start proto=17"];
        for l in lines {
            assert_eq!(log.contains(l), debug, "debug={debug}: {l:?} in\n{log}");
        }
    }
}
