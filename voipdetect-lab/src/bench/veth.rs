//! End to end on a veth pair in two namespaces: a generator built on
//! BPF_PROG_TEST_RUN in live-frames mode redirects 64-byte UDP frames into
//! the pair; the receiving side drops or passes them with each contender.
//! Rates are what the receiver handled, per second of generator time.

use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use aya::programs::XdpMode;
use voipdetect_common::{BlockEntry, Stat, parse::parse_ethernet};

use voipdetect::{
    clock::monotonic_ns,
    datapath::{Datapath, LoadOptions},
};
use voipdetect_traffic::frames::FrameSpec;

use super::{BenchProgs, Scale, Table};
use crate::netns::{self, Netns, in_ns, sh};

const GEN_MAC: &str = "02:00:00:00:03:01";
const SINK_MAC: &str = "02:00:00:00:03:02";
const SINK_IP: &str = "198.18.0.2";
const PORT: u16 = 9000;

struct Pair {
    gen_ns: Netns,
    sink_ns: Netns,
    gen_if: String,
    sink_if: String,
}

fn pair() -> anyhow::Result<Pair> {
    netns::remove_stale();
    let id = netns::next_id();
    let gen_ns = Netns::create(&id, "bgen")?;
    let sink_ns = Netns::create(&id, "bsink")?;
    let (gen_if, sink_if) = (format!("vd{id}bg"), format!("vd{id}bs"));
    sh(
        "ip",
        &[
            "link",
            "add",
            &gen_if,
            "netns",
            gen_ns.name(),
            "address",
            GEN_MAC,
            "type",
            "veth",
            "peer",
            "name",
            &sink_if,
            "netns",
            sink_ns.name(),
            "address",
            SINK_MAC,
        ],
    )?;
    gen_ns.ip(&["addr", "add", "198.18.0.1/24", "dev", &gen_if])?;
    sink_ns.ip(&["addr", "add", &format!("{SINK_IP}/24"), "dev", &sink_if])?;
    gen_ns.ip(&["link", "set", &gen_if, "up"])?;
    sink_ns.ip(&["link", "set", &sink_if, "up"])?;
    Ok(Pair { gen_ns, sink_ns, gen_if, sink_if })
}

/// The 64-byte frame (60 + FCS) the generator sends.
fn frame() -> Vec<u8> {
    let mut f = FrameSpec::udp("198.18.0.1:9".parse().expect("addr"), format!("{SINK_IP}:{PORT}").parse().expect("addr")).build(&[0; 18]);
    f[0..6].copy_from_slice(&[2, 0, 0, 0, 3, 2]);
    f[6..12].copy_from_slice(&[2, 0, 0, 0, 3, 1]);
    f
}

/// Sends `n` frames; returns the generator's wall time.
fn generate(p: &Pair, n: u32) -> anyhow::Result<Duration> {
    let elapsed = super::live_frames(p.gen_ns.name(), &p.gen_if, "bench_redirect", &frame(), n)?;
    // Let the receiver's NAPI drain what is queued.
    std::thread::sleep(Duration::from_millis(200));
    Ok(elapsed)
}

/// Packets the sink's UDP layer saw (delivered or dropped for a full buffer).
fn udp_in(sink: &Netns) -> anyhow::Result<u64> {
    let snmp = sink.exec("cat", &["/proc/net/snmp"])?;
    let lines: Vec<&str> = snmp.lines().filter(|l| l.starts_with("Udp:")).collect();
    let [names, values, ..] = lines.as_slice() else { bail!("no Udp lines in /proc/net/snmp") };
    let pick = |field: &str| -> u64 {
        names.split_whitespace().position(|n| n == field).and_then(|i| values.split_whitespace().nth(i)?.parse().ok()).unwrap_or(0)
    };
    Ok(pick("InDatagrams") + pick("RcvbufErrors"))
}

fn nft_counter(sink: &Netns) -> anyhow::Result<u64> {
    let out = sink.exec("nft", &["-j", "list", "ruleset"])?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    let mut total = 0;
    for item in v["nftables"].as_array().into_iter().flatten() {
        for e in item["rule"]["expr"].as_array().into_iter().flatten() {
            total += e["counter"]["packets"].as_u64().unwrap_or(0);
        }
    }
    Ok(total)
}

/// GRO gives the receiving veth a NAPI context, which XDP redirects into
/// it need when no XDP program is attached there.
fn enable_gro(p: &Pair) -> anyhow::Result<()> {
    p.sink_ns.exec("ethtool", &["-K", &p.sink_if, "gro", "on"]).map(drop).context("ethtool -K gro on")
}

struct Outcome {
    name: &'static str,
    handled: u64,
    elapsed: Duration,
    offered: u32,
}

pub fn run(scale: Scale) -> anyhow::Result<Table> {
    let n: u32 = scale.pick(10_000_000, 200_000);
    let mut outcomes = Vec::new();

    // No filter: a bound UDP socket takes everything.
    {
        let p = pair()?;
        enable_gro(&p)?;
        let _sock = in_ns(p.sink_ns.name(), || Ok(std::net::UdpSocket::bind((SINK_IP, PORT))?))?;
        let before = udp_in(&p.sink_ns)?;
        let elapsed = generate(&p, n)?;
        outcomes.push(Outcome { name: "no filter (bound UDP socket)", handled: udp_in(&p.sink_ns)? - before, elapsed, offered: n });
    }
    // Plain XDP_DROP: the reference.
    {
        let p = pair()?;
        let mut refs = BenchProgs::load(0)?;
        in_ns(p.sink_ns.name(), || {
            refs.prog("bench_count_drop")?.attach(&p.sink_if, XdpMode::Driver)?;
            Ok(())
        })?;
        let elapsed = generate(&p, n)?;
        outcomes.push(Outcome { name: "plain XDP_DROP", handled: refs.dropped()?, elapsed, offered: n });
    }
    // voipdetect, dropping a blocklisted flow and passing a tracked one.
    for block in [true, false] {
        let p = pair()?;
        let mut dp = Datapath::load(&LoadOptions::default())?;
        in_ns(p.sink_ns.name(), || dp.attach(&p.sink_if).map(drop))?;
        let _sock = in_ns(p.sink_ns.name(), || Ok(std::net::UdpSocket::bind((SINK_IP, PORT))?))?;
        if block {
            let key = parse_ethernet(frame().as_slice()).map_err(|s| anyhow!("{s:?}"))?.key;
            let now = monotonic_ns();
            dp.block(&[key], BlockEntry { expires_ns: now + 3_600_000_000_000, since_ns: now })?;
        }
        let elapsed = generate(&p, n)?;
        let s = dp.stats()?;
        let (name, handled) = if block {
            ("voipdetect, blocklisted flow dropped", s.get(Stat::Dropped))
        } else {
            ("voipdetect, tracked flow passed", s.get(Stat::Tracked))
        };
        outcomes.push(Outcome { name, handled, elapsed, offered: n });
    }
    // nftables, at the earliest hook it has and in prerouting.
    for (name, family, chain) in [
        ("nftables netdev ingress drop", "netdev", "type filter hook ingress device IFACE priority 0;"),
        ("nftables inet prerouting drop", "inet", "type filter hook prerouting priority -300;"),
    ] {
        let p = pair()?;
        enable_gro(&p)?;
        let chain = chain.replace("IFACE", &p.sink_if);
        let script = format!("table {family} vdbench {{\n  chain c {{\n    {chain}\n    udp dport {PORT} counter drop\n  }}\n}}\n");
        let file = std::env::temp_dir().join(format!("voipdetect-bench-{}.nft", std::process::id()));
        std::fs::write(&file, &script)?;
        let loaded = p.sink_ns.exec("nft", &["-f", &file.to_string_lossy()]).context("nft");
        let _ = std::fs::remove_file(&file);
        loaded?;
        let elapsed = generate(&p, n)?;
        outcomes.push(Outcome { name, handled: nft_counter(&p.sink_ns)?, elapsed, offered: n });
    }

    let rate = |o: &Outcome| o.handled as f64 / o.elapsed.as_secs_f64() / 1e6;
    let reference = outcomes.iter().find(|o| o.name == "plain XDP_DROP").map(rate).unwrap_or(f64::NAN);
    let mut t = Table::new(
        "End to end on a veth pair (live-frames generator, 64-byte UDP frames)",
        &["receiver", "handled Mpps", "ratio to plain XDP_DROP", "offered Mpps", "handled / offered"],
    );
    for o in &outcomes {
        t.row(vec![
            o.name.into(),
            format!("{:.2}", rate(o)),
            format!("{:.2}", rate(o) / reference),
            format!("{:.2}", f64::from(o.offered) / o.elapsed.as_secs_f64() / 1e6),
            format!("{:.0} %", 100.0 * o.handled as f64 / f64::from(o.offered)),
        ]);
    }
    Ok(t)
}
