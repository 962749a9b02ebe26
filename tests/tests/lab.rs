//! Tier 3: the real program and controller on veth pairs in network
//! namespaces, judged from the receivers' side. Every lab has unique names
//! and is removed on drop, also when an assertion fails.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::atomic::AtomicBool,
    time::{Duration, Instant},
};

use voipdetect_lab::{
    GatewayLab,
    live::{self, FlowResult},
};
use voipdetect_tests::binary;
use voipdetect_traffic::{Flow, addrs, pattern};

fn result<'a>(results: &'a [FlowResult], name: &str) -> &'a FlowResult {
    results.iter().find(|r| r.name == name).unwrap_or_else(|| panic!("no result for {name}"))
}

/// Call verdicts (not the one-way media reports that may precede them).
fn verdicts(events: &[serde_json::Value]) -> Vec<&serde_json::Value> {
    events.iter().filter(|e| e["event"] == "verdict" && e["one_way"] == false).collect()
}

fn has_port(e: &serde_json::Value, port: u16) -> bool {
    let p = format!(":{port}");
    e["src"].as_str().is_some_and(|s| s.ends_with(&p)) || e["dst"].as_str().is_some_and(|s| s.ends_with(&p))
}

#[test]
fn gateway_cuts_off_calls_and_spares_lookalikes() {
    voipdetect_tests::require_root();
    let lab = GatewayLab::new().unwrap();
    let mut ctl = lab.start_controller(&binary(), &["--mode", "block"]).unwrap();
    ctl.wait_attached(Duration::from_secs(20)).unwrap();

    let secs = 10;
    let rtp = pattern::rtp_call(secs);
    let tcp = pattern::tcp_audio_call(secs);
    let flows = vec![rtp.clone(), tcp.clone(), pattern::bulk_tcp(64 << 20), pattern::dns_burst(400), pattern::game(64, secs)];
    let results = live::run(&lab, &flows, &AtomicBool::new(false)).unwrap();
    let status = ctl.stop().unwrap();
    let events = ctl.drain();
    assert!(status.success(), "controller exit {status}: {}", ctl.stderr_text());
    assert!(!lab.gateway_has_xdp().unwrap(), "XDP still attached after the controller stopped");

    for r in &results {
        eprintln!("{r:?}");
    }
    for call in [&rtp, &tcp] {
        let r = result(&results, &call.name);
        let cut = r.cut_off_after().unwrap_or_else(|| panic!("{} was not cut off: {r:?}", call.name));
        assert!(cut <= Duration::from_secs(5), "{} cut off only after {cut:?}", call.name);
        assert!(r.received() > 0, "{} never got through at all", call.name);
    }
    for name in ["bulk tcp transfer", "dns burst", "game 64 Hz"] {
        let r = result(&results, name);
        assert!(r.delivered_all(), "{name} lost traffic: {r:?}");
    }
    let v = verdicts(&events);
    assert_eq!(v.len(), 2, "exactly the two calls are verdicts: {events:#?}");
    for call in [&rtp, &tcp] {
        let e = v.iter().find(|e| has_port(e, call.server_port)).unwrap_or_else(|| panic!("no verdict for {}", call.name));
        assert_eq!(e["verdict"], "voip");
        assert_eq!(e["action"], "blocked");
        for field in ["time", "iface", "proto", "src", "dst", "reason", "pps", "mean_size", "duration"] {
            assert!(!e[field].is_null(), "verdict lacks {field}: {e}");
        }
    }
    // Stopping the controller ends the verdicts it held.
    assert_eq!(events.iter().filter(|e| e["event"] == "release").count(), 2, "{events:#?}");
    assert!(events.iter().all(|e| e["one_way"] == false), "{events:#?}");
}

/// `sipp` places a call (SIP INVITE, G.711 RTP from a pcap) to `sipp -sn uas -rtp_echo` through the gateway.
#[test]
fn a_real_sip_user_agent_call_is_detected_and_its_rtp_blocked() {
    voipdetect_tests::require_root();
    let lab = GatewayLab::new().unwrap();
    let mut ctl = lab.start_controller(&binary(), &["--mode", "block"]).unwrap();
    ctl.wait_attached(Duration::from_secs(20)).unwrap();

    // uac_pcap plays "pcap/g711a.pcap" relative to its working directory.
    let work = tempdir(&lab.id);
    std::os::unix::fs::symlink("/usr/share/sip-tester", work.join("pcap")).unwrap();
    let capture = work.join("server-rtp.pcap");
    let server_ip = addrs::SERVER_V4.to_string();
    let client_ip = addrs::CLIENT_V4.to_string();

    let mut dump = lab
        .server
        .command("tcpdump")
        .args(["-i", &lab.server_if, "-n", "-U", "-w"])
        .arg(&capture)
        .args(["udp", "and", "port", "6000", "and", "dst", "host", &server_ip])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _dump_guard = KillOnDrop(dump.id());
    let mut uas = lab
        .server
        .command("sipp")
        .args(["-sn", "uas", "-rtp_echo", "-i", &server_ip, "-mi", &server_ip, "-p", "5060", "-m", "1"])
        .args(["-timeout", "40s", "-nostdin", "-bg"])
        .current_dir(&work)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    let uac = lab
        .client
        .command("sipp")
        .args(["-sn", "uac_pcap", &format!("{server_ip}:5060"), "-i", &client_ip, "-mi", &client_ip])
        .args(["-m", "1", "-l", "1", "-timeout", "40s", "-nostdin"])
        .current_dir(&work)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    eprintln!("sipp uac exit: {uac}");
    let _ = uas.wait();
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: signalling our own child.
    unsafe { libc_kill(dump.id()) };
    let _ = dump.wait();
    let status = ctl.stop().unwrap();
    let events = ctl.drain();
    assert!(status.success(), "{}", ctl.stderr_text());

    let v = verdicts(&events);
    let rtp_verdict = v.iter().find(|e| has_port(e, 6000)).unwrap_or_else(|| panic!("no verdict on the RTP flow: {events:#?}"));
    assert_eq!(rtp_verdict["action"], "blocked");
    assert!(rtp_verdict["reason"].as_str().unwrap().starts_with("rtp"), "{rtp_verdict}");
    assert!(!v.iter().any(|e| has_port(e, 5060)), "SIP signalling must not be called a call: {events:#?}");

    // From the server's side: RTP arrived, then stopped long before the
    // 8 s of audio were over.
    let times = packet_times(&capture);
    eprintln!("{} RTP packets reached the server; call lasted {:?}", times.len(), started.elapsed());
    assert!(!times.is_empty(), "no RTP reached the server at all");
    let span = times.last().unwrap() - times.first().unwrap();
    assert!(span < 5.0, "RTP kept arriving for {span:.1} s");
    assert!(times.len() < 200, "{} RTP packets got through (8 s of audio is 400)", times.len());
}

struct KillOnDrop(u32);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // SAFETY: signalling a child of ours (or a pid that has already exited).
        unsafe { libc_kill(self.0) };
    }
}

unsafe extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}

/// SIGTERM to `pid`.
unsafe fn libc_kill(pid: u32) {
    // SAFETY: the caller names a process of its own.
    unsafe { kill(pid as i32, 15) };
}

fn tempdir(id: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("voipdetect-lab-{id}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Capture times (s) of the packets in a pcap, read with tcpdump.
fn packet_times(file: &Path) -> Vec<f64> {
    let out = Command::new("tcpdump").args(["-r"]).arg(file).args(["-n", "-tt"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| l.split_whitespace().next()?.parse().ok()).collect()
}

/// Runs `voipdetect ARGS` in the gateway namespace (optionally without
/// privileges) and returns (exit code, stderr).
fn run_in_gateway(lab: &GatewayLab, unprivileged: bool, args: &[&str]) -> (i32, String) {
    let bin = binary();
    let mut cmd = if unprivileged {
        let mut c = lab.gateway.command("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--bounding-set=-all"]).arg(&bin);
        c
    } else {
        lab.gateway.command(&bin)
    };
    cmd.args(args);
    if args.first() == Some(&"run") {
        cmd.arg("--pin-dir").arg(lab.pin_dir());
    }
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn bad_input_is_one_clear_line_and_attaches_nothing() {
    voipdetect_tests::require_root();
    let lab = GatewayLab::new().unwrap();
    let good = lab.gw_client_if.as_str();
    let dir = std::env::temp_dir().join(format!("voipdetect-badinput-{}", lab.id));
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.to_string_lossy().into_owned()
    };
    let bad_ttl = write("ttl.toml", &format!("interfaces = [\"{good}\"]\nttl = \"forever\"\n"));
    let bad_key = write("key.toml", &format!("interfaces = [\"{good}\"]\n[thresholds]\nmin_ppss = 3.0\n"));
    let bad_cidr = write("cidr.toml", &format!("interfaces = [\"{good}\"]\n[allowlist]\ncidrs = [\"10.0.0.0/40\"]\n"));
    let not_toml = write("broken.toml", "interfaces = [\n");
    let truncated = write("cut.pcap", "\u{d4}\u{c3}");
    let missing = dir.join("missing.pcap").to_string_lossy().into_owned();
    let cases: Vec<(&str, bool, Vec<&str>, &str)> = vec![
        ("config: bad duration", false, vec!["run", "--config", &bad_ttl], "config key ttl"),
        ("config: unknown key", false, vec!["run", "--config", &bad_key], "thresholds.min_ppss"),
        ("config: bad network", false, vec!["run", "--config", &bad_cidr], "allowlist.cidrs[0]"),
        ("config: not TOML", false, vec!["run", "--config", &not_toml], "broken.toml"),
        ("config: missing file", false, vec!["run", "--config", &missing], "missing.pcap"),
        ("replay: missing capture", false, vec!["replay", &missing], "missing.pcap: cannot read"),
        ("replay: truncated capture", false, vec!["replay", &truncated], "cut.pcap"),
        ("unknown interface", false, vec!["run", "--iface", good, "--iface", "nosuch0"], "unknown interface \"nosuch0\""),
        ("bad duration", false, vec!["run", "--iface", good, "--poll-interval", "banana"], "--poll-interval"),
        ("bad mode", false, vec!["run", "--iface", good, "--mode", "destroy"], "--mode"),
        ("bad event format", false, vec!["run", "--iface", good, "--format", "xml"], "--format"),
        ("zero map size", false, vec!["run", "--iface", good, "--flow-entries", "0"], "--flow-entries"),
        ("no interface", false, vec!["run"], "--iface"),
        ("missing privileges", true, vec!["run", "--iface", good], "missing privileges"),
    ];
    for (name, unprivileged, args, expect) in cases {
        let (code, stderr) = run_in_gateway(&lab, unprivileged, &args);
        assert_ne!(code, 0, "{name}: must fail");
        let lines: Vec<_> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{name}: one line of error, got {stderr:?}");
        assert!(lines[0].contains(expect), "{name}: {:?} should mention {expect:?}", lines[0]);
        assert!(!lab.gateway_has_xdp().unwrap(), "{name}: something was left attached");
        assert!(!lab.pin_dir().exists(), "{name}: something was left pinned");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--format eve`: events and call records in Suricata's layout, each
/// with the Community ID of its conversation as the specification
/// computes it from the addresses in the same line.
#[test]
fn eve_events_and_records_carry_community_ids() {
    voipdetect_tests::require_root();
    let lab = GatewayLab::new().unwrap();
    let dir = tempdir(&format!("eve-{}", lab.id));
    let records = dir.join("calls.jsonl");
    let records_arg = records.to_string_lossy().into_owned();
    let mut ctl = lab.start_controller(&binary(), &["--format", "eve", "--call-records", &records_arg]).unwrap();
    ctl.wait_attached(Duration::from_secs(20)).unwrap();
    let call = pattern::rtp_call(4);
    let results = live::run(&lab, std::slice::from_ref(&call), &AtomicBool::new(false)).unwrap();
    let status = ctl.stop().unwrap();
    assert!(status.success(), "controller exit {status}: {}", ctl.stderr_text());
    assert!(result(&results, &call.name).delivered_all(), "monitor mode drops nothing");
    let events = ctl.drain();
    let text = std::fs::read_to_string(&records).unwrap();
    let records: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let expect_id = |line: &serde_json::Value| {
        let endpoint = |ip: &str, port: &str| {
            std::net::SocketAddr::new(line[ip].as_str().unwrap().parse().unwrap(), line[port].as_u64().unwrap() as u16).to_string()
        };
        let proto = line["proto"].as_str().unwrap().to_ascii_lowercase();
        let key = voipdetect::key::parse_flow(&proto, &endpoint("src_ip", "src_port"), &endpoint("dest_ip", "dest_port")).unwrap();
        voipdetect::key::community_id(&key)
    };
    let verdict = events
        .iter()
        .find(|e| e["event_type"] == "voip" && e["voip"]["event"] == "verdict")
        .unwrap_or_else(|| panic!("no EVE verdict: {events:#?}"));
    assert_eq!(verdict["proto"], "UDP");
    assert!(verdict["timestamp"].as_str().unwrap().ends_with("+0000"), "{verdict}");
    assert_eq!(verdict["community_id"].as_str(), Some(expect_id(verdict).as_str()), "{verdict}");
    assert!(verdict["src_port"] == call.server_port || verdict["dest_port"] == call.server_port, "{verdict}");
    let record = records.iter().find(|r| r["event_type"] == "voip_call").unwrap_or_else(|| panic!("no EVE call record: {text}"));
    assert_eq!(record["community_id"], verdict["community_id"], "{record}");
    assert_eq!(record["voip_call"]["session"], verdict["voip"]["session"], "{record}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A tcpdump writing a capture; stopped (and waited for) on drop.
struct Capture(std::process::Child);

impl Drop for Capture {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc_kill(self.0.id()) };
        let _ = self.0.wait();
    }
}

/// Starts tcpdump in `ns` on `iface` writing `file`.
fn capture(ns: &voipdetect_lab::netns::Netns, iface: &str, file: &Path, filter: &[&str]) -> Capture {
    Capture(
        ns.command("tcpdump")
            .args(["-i", iface, "-n", "-U", "-w"])
            .arg(file)
            .args(filter)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// (TOS byte, UDP destination port) of every IPv4 packet in a capture, and
/// whether tcpdump found any IP header checksum bad.
fn tos_and_ports(file: &Path) -> (Vec<(u8, u16)>, bool) {
    let out = Command::new("tcpdump").args(["-r"]).arg(file).args(["-n", "-v"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let mut packets = Vec::new();
    let mut tos = None;
    for line in text.lines() {
        if let Some(t) = line.split("(tos 0x").nth(1) {
            tos = u8::from_str_radix(t.split(',').next().unwrap_or_default().trim(), 16).ok();
        } else if let (Some(t), Some(port)) =
            (tos.take(), line.split(" > ").nth(1).and_then(|d| d.split(':').next()?.rsplit('.').next()?.parse().ok()))
        {
            packets.push((t, port));
        }
    }
    (packets, text.contains("bad cksum"))
}

/// Rules in a namespace: calls on the staff port are marked (DSCP 46 on
/// arrival, checksums intact), others blocked by the default; a game is
/// left alone. Then the rule is rewritten to block and SIGHUP reloads it:
/// the marked call is cut off at once.
#[test]
fn rules_mark_one_call_block_another_and_reload_on_sighup() {
    voipdetect_tests::require_root();
    let lab = GatewayLab::new().unwrap();
    let dir = tempdir(&format!("rules-{}", lab.id));
    let config = dir.join("voipdetect.toml");
    let rules = |action: &str| format!("mode = \"block\"\n[[rules]]\nname = \"staff\"\naction = \"{action}\"\nports = [5004]\n");
    std::fs::write(&config, rules("mark")).unwrap();
    let config_arg = config.to_string_lossy().into_owned();
    let (to_server, to_client) = (dir.join("to-server.pcap"), dir.join("to-client.pcap"));
    let filter = ["udp", "and", "(port", "5004", "or", "port", "27015)"];
    let _d1 = capture(&lab.server, &lab.server_if, &to_server, &filter);
    let _d2 = capture(&lab.client, &lab.client_if, &to_client, &filter);
    std::thread::sleep(Duration::from_millis(500));
    let mut ctl = lab.start_controller(&binary(), &["--config", &config_arg]).unwrap();
    ctl.wait_attached(Duration::from_secs(20)).unwrap();
    let pid = ctl.pid().unwrap();

    let secs = 10;
    let (staff, other, game) = (pattern::rtp_call(secs), pattern::tcp_audio_call(secs), pattern::game(64, secs));
    let reload_at = Duration::from_secs(5);
    let results = std::thread::scope(|s| {
        let cfg = &config;
        s.spawn(move || {
            std::thread::sleep(reload_at);
            std::fs::write(cfg, rules("block")).unwrap();
            // SAFETY: signalling the controller this test started.
            unsafe { kill(pid as i32, 1) };
        });
        live::run(&lab, &[staff.clone(), other.clone(), game.clone()], &AtomicBool::new(false)).unwrap()
    });
    std::thread::sleep(Duration::from_millis(300));
    let status = ctl.stop().unwrap();
    assert!(status.success(), "controller exit {status}: {}", ctl.stderr_text());
    let events = ctl.drain();
    let (staff_r, other_r, game_r) = (result(&results, &staff.name), result(&results, &other.name), result(&results, &game.name));
    eprintln!("cut off: staff {:?}, other {:?}", staff_r.cut_off_after(), other_r.cut_off_after());

    let staff_verdicts: Vec<(&str, &str)> = verdicts(&events)
        .into_iter()
        .filter(|e| has_port(e, staff.server_port))
        .map(|e| (e["action"].as_str().unwrap_or_default(), e["rule"].as_str().unwrap_or_default()))
        .collect();
    assert_eq!(staff_verdicts, [("marked", "staff"), ("blocked", "staff")], "{events:#?}");
    let other_v = verdicts(&events).into_iter().find(|e| has_port(e, other.server_port)).expect("the other call is found");
    assert_eq!((other_v["action"].as_str(), other_v["rule"].as_str()), (Some("blocked"), Some("default")), "{other_v}");
    assert!(ctl.stderr_text().contains("SIGHUP"), "the reload is logged: {}", ctl.stderr_text());
    assert!(!ctl.stderr_text().contains("private mount namespace"), "the host's mounts are shared here: {}", ctl.stderr_text());

    // The marked call went through until the reload, then stopped.
    let cut = staff_r.cut_off_after().unwrap_or_else(|| panic!("the staff call was not cut off after the reload: {staff_r:?}"));
    assert!(cut >= reload_at - Duration::from_millis(500) && cut <= reload_at + Duration::from_secs(2), "cut off after {cut:?}");
    assert!(other_r.cut_off_after().is_some_and(|t| t <= Duration::from_secs(5)), "{other_r:?}");
    assert!(game_r.delivered_all(), "{game_r:?}");

    // From the receivers' side: the call's packets in both directions
    // arrive marked after its verdict; the game's never; no header broken.
    // Each capture holds both directions: the ones the gateway forwarded
    // are those arriving (by destination port).
    for (file, what, to_server) in [(&to_server, "to the server", true), (&to_client, "to the client", false)] {
        let (packets, bad) = tos_and_ports(file);
        assert!(!bad, "{what}: a bad IP header checksum");
        let dst = |f: &Flow| if to_server { f.server_port } else { f.client_port };
        let call: Vec<u8> = packets.iter().filter(|(_, p)| *p == dst(&staff)).map(|(t, _)| *t).collect();
        let marked = call.iter().filter(|t| **t == 0xb8).count();
        assert!(marked > 50, "{what}: {marked} of {} call packets marked", call.len());
        let first = call.iter().position(|t| *t == 0xb8).unwrap();
        assert!(call[first..].iter().all(|t| *t == 0xb8), "{what}: unmarked call packets after the first marked one");
        assert!(call.iter().all(|t| *t == 0 || *t == 0xb8), "{what}: other TOS values {call:?}");
        let game_tos: Vec<u8> = packets.iter().filter(|(_, p)| *p == dst(&game)).map(|(t, _)| *t).collect();
        assert!(!game_tos.is_empty() && game_tos.iter().all(|t| *t == 0), "{what}: the game's packets were touched");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Under `ip netns exec` (a private mount namespace) pins die with the
/// process: `run` says so in one line, and still cleans up after itself.
#[test]
fn run_says_when_its_pins_cannot_outlive_it() {
    voipdetect_tests::require_root();
    let lab = GatewayLab::new().unwrap();
    let pins = lab.pin_dir().to_string_lossy().into_owned();
    let out = Command::new("ip")
        .args(["netns", "exec", lab.gateway.name()])
        .arg(binary())
        .args(["run", "--iface", &lab.gw_client_if, "--duration", "1s", "--pin-dir", &pins])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| l.contains("private mount namespace")).collect();
    assert_eq!(lines.len(), 1, "one line about the private mount namespace: {stderr}");
    assert!(!lab.gateway_has_xdp().unwrap(), "left attached");
}

#[test]
fn controller_detaches_on_sigterm_and_sigint() {
    voipdetect_tests::require_root();
    let lab = GatewayLab::new().unwrap();
    for signal in [15, 2] {
        let mut ctl = lab.start_controller(&binary(), &["--mode", "block"]).unwrap();
        ctl.wait_attached(Duration::from_secs(20)).unwrap();
        assert!(lab.gateway_has_xdp().unwrap());
        let status = ctl.signal_and_wait(signal).unwrap();
        assert!(status.success(), "signal {signal}: {status}");
        assert!(!lab.gateway_has_xdp().unwrap(), "signal {signal}: still attached");
    }
}

/// Runs `flows` through a blocking gateway; returns the receivers' view and
/// the controller's events.
fn through_gateway(flows: &[Flow], extra: &[&str]) -> (Vec<FlowResult>, Vec<serde_json::Value>) {
    let lab = GatewayLab::new().unwrap();
    let mut args = vec!["--mode", "block"];
    args.extend_from_slice(extra);
    let mut ctl = lab.start_controller(&binary(), &args).unwrap();
    ctl.wait_attached(Duration::from_secs(20)).unwrap();
    let results = live::run(&lab, flows, &AtomicBool::new(false)).unwrap();
    let status = ctl.stop().unwrap();
    assert!(status.success(), "controller exit {status}: {}", ctl.stderr_text());
    (results, ctl.drain())
}

#[test]
fn every_call_variant_is_cut_off_and_one_way_media_only_reported() {
    voipdetect_tests::require_root();
    let secs = 10;
    let mut flows = pattern::call_variants(secs);
    let one_way = pattern::one_way_media(secs);
    flows.push(one_way.clone());
    let (results, events) = through_gateway(&flows, &[]);
    let mut failures = Vec::new();
    for f in &flows {
        let r = result(&results, &f.name);
        let verdict = verdicts(&events).into_iter().find(|e| has_port(e, f.server_port)).cloned();
        eprintln!("{:<40} {:?} {}", f.name, r.cut_off_after(), verdict.as_ref().map_or("-".into(), |v| v["reason"].to_string()));
        if f.is_call {
            match r.cut_off_after() {
                Some(t) if t <= Duration::from_secs(5) && r.received() > 0 => {}
                other => failures.push(format!("{}: cut off {other:?}, {r:?}", f.name)),
            }
        }
    }
    let r = result(&results, &one_way.name);
    assert!(r.delivered_all(), "one-way media must not be blocked by default: {r:?}");
    let v = events.iter().find(|e| e["event"] == "verdict" && has_port(e, one_way.server_port)).expect("one-way media reported");
    assert!(!verdicts(&events).iter().any(|e| has_port(e, one_way.server_port)), "one-way media called a call");
    assert_eq!((v["one_way"].as_bool(), v["action"].as_str()), (Some(true), Some("reported")), "{v}");
    assert!(v["src"].as_str().unwrap().ends_with(&format!(":{}", one_way.server_port)), "the sender is the source: {v}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Calls that route around a block (split relays, relays that change,
/// port hops, a fallback to TCP 443 when their media stops arriving), each
/// through a blocking gateway of its own: every one is called, at most 5 %
/// of the media it sends after its first verdict arrives, over all its
/// legs, and every leg it opens after that verdict is blocked within half a
/// second.
#[test]
fn calls_that_route_around_a_block_stay_blocked() {
    voipdetect_tests::require_root();
    let mut failures = Vec::new();
    let mut leaks = Vec::new();
    for call in voipdetect_traffic::calls::session_calls(12) {
        let (leak, events) = voipdetect_lab::leak::run(&binary(), &call).unwrap();
        let sessions: std::collections::BTreeSet<_> =
            events.iter().filter(|e| e["event"] == "verdict").filter_map(|e| e["session"].as_str()).collect();
        eprintln!("{}: sessions {sessions:?}", call.name);
        for e in events.iter().filter(|e| e["event"] == "verdict") {
            eprintln!("  {} {} -> {} {}: {}", e["action"], e["src"], e["dst"], e["basis"], e["reason"]);
        }
        match leak.verdict {
            None => failures.push(format!("{}: never called", call.name)),
            Some(_) if leak.share() > 0.05 => {
                failures.push(format!("{}: {:.1} % delivered after the verdict", call.name, 100.0 * leak.share()))
            }
            Some(_) => {}
        }
        if let Some(d) = leak.slowest_reblock.filter(|d| *d > Duration::from_millis(500)) {
            failures.push(format!("{}: a later leg got through for {d:?}", call.name));
        }
        if sessions.len() != 1 {
            failures.push(format!("{}: {} sessions", call.name, sessions.len()));
        }
        leaks.push(leak);
    }
    eprint!("{}", voipdetect_lab::leak::table(&leaks));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn no_lookalike_loses_a_packet() {
    voipdetect_tests::require_root();
    let flows = pattern::decoys(10);
    let (results, events) = through_gateway(&flows, &[]);
    // The controller's events go with a loss: a look-alike that loses
    // traffic was most likely blocked, and the verdict says why.
    for r in &results {
        assert!(r.delivered_all(), "{} lost traffic; events {events:#?}; flow {r:?}", r.name);
    }
    assert!(verdicts(&events).is_empty(), "look-alikes called calls: {events:#?}");
}
