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

/// The receivers of the end-to-end table, in its order.
#[derive(Clone, Copy, PartialEq)]
enum Receiver {
    Socket,
    XdpDrop,
    Blocked,
    Tracked,
    NftIngress,
    NftPrerouting,
}

impl Receiver {
    const ALL: [Receiver; 6] =
        [Receiver::Socket, Receiver::XdpDrop, Receiver::Blocked, Receiver::Tracked, Receiver::NftIngress, Receiver::NftPrerouting];

    fn name(self) -> &'static str {
        match self {
            Receiver::Socket => "no filter (bound UDP socket)",
            Receiver::XdpDrop => "plain XDP_DROP",
            Receiver::Blocked => "voipdetect, blocklisted flow dropped",
            Receiver::Tracked => "voipdetect, tracked flow passed",
            Receiver::NftIngress => "nftables netdev ingress drop",
            Receiver::NftPrerouting => "nftables inet prerouting drop",
        }
    }
}

/// One measurement: `n` frames into a fresh pair whose receiving end is
/// `r`; returns (frames it handled, the generator's wall time).
fn once(r: Receiver, n: u32) -> anyhow::Result<(u64, Duration)> {
    let p = pair()?;
    match r {
        // No filter: a bound UDP socket takes everything.
        Receiver::Socket => {
            enable_gro(&p)?;
            let _sock = in_ns(p.sink_ns.name(), || Ok(std::net::UdpSocket::bind((SINK_IP, PORT))?))?;
            let before = udp_in(&p.sink_ns)?;
            let elapsed = generate(&p, n)?;
            Ok((udp_in(&p.sink_ns)? - before, elapsed))
        }
        // Plain XDP_DROP: the reference.
        Receiver::XdpDrop => {
            let mut refs = BenchProgs::load(0)?;
            in_ns(p.sink_ns.name(), || {
                refs.prog("bench_count_drop")?.attach(&p.sink_if, XdpMode::Driver)?;
                Ok(())
            })?;
            let elapsed = generate(&p, n)?;
            Ok((refs.dropped()?, elapsed))
        }
        // voipdetect, dropping a blocklisted flow or passing a tracked one.
        Receiver::Blocked | Receiver::Tracked => {
            let block = r == Receiver::Blocked;
            let mut dp = Datapath::load(&LoadOptions::default())?;
            in_ns(p.sink_ns.name(), || dp.attach(&p.sink_if).map(drop))?;
            let _sock = in_ns(p.sink_ns.name(), || Ok(std::net::UdpSocket::bind((SINK_IP, PORT))?))?;
            if block {
                let key = parse_ethernet(frame().as_slice()).map_err(|s| anyhow!("{s:?}"))?.key;
                let now = monotonic_ns();
                dp.block(&[key], BlockEntry::drop(now + 3_600_000_000_000, now))?;
            }
            let elapsed = generate(&p, n)?;
            let s = dp.stats()?;
            Ok((if block { s.get(Stat::Dropped) } else { s.get(Stat::Tracked) }, elapsed))
        }
        // nftables, at the earliest hook it has and in prerouting.
        Receiver::NftIngress | Receiver::NftPrerouting => {
            let (family, chain) = if r == Receiver::NftIngress {
                ("netdev", format!("type filter hook ingress device {} priority 0;", p.sink_if))
            } else {
                ("inet", "type filter hook prerouting priority -300;".to_string())
            };
            enable_gro(&p)?;
            let script = format!("table {family} vdbench {{\n  chain c {{\n    {chain}\n    udp dport {PORT} counter drop\n  }}\n}}\n");
            let file = std::env::temp_dir().join(format!("voipdetect-bench-{}.nft", std::process::id()));
            std::fs::write(&file, &script)?;
            let loaded = p.sink_ns.exec("nft", &["-f", &file.to_string_lossy()]).context("nft");
            let _ = std::fs::remove_file(&file);
            loaded?;
            let elapsed = generate(&p, n)?;
            Ok((nft_counter(&p.sink_ns)?, elapsed))
        }
    }
}

/// Every receiver in turn, round after round (the host's speed drifts
/// over a run: a ratio is taken inside each round, and the table gives
/// the medians over the rounds).
pub fn run(scale: Scale) -> anyhow::Result<Table> {
    let n: u32 = scale.pick(2_000_000, 200_000);
    let rounds = scale.pick(5, 1);
    let all = Receiver::ALL;
    // Per receiver: the rates (Mpps) and handled shares, one per round.
    let (mut rates, mut shares) = (vec![Vec::new(); all.len()], vec![Vec::new(); all.len()]);
    for _ in 0..rounds {
        for (i, r) in all.iter().enumerate() {
            let (handled, elapsed) = once(*r, n)?;
            rates[i].push(handled as f64 / elapsed.as_secs_f64() / 1e6);
            shares[i].push(handled as f64 / f64::from(n));
        }
    }
    let at = |r: Receiver| all.iter().position(|&x| x == r).expect("listed");
    let ratio_to = |i: usize, reference: Receiver| super::median(rates[i].iter().zip(&rates[at(reference)]).map(|(a, b)| a / b).collect());
    let mut t = Table::new(
        &format!("End to end on a veth pair (live-frames generator, 64-byte UDP frames, {rounds} rounds of {n} frames, medians)"),
        &["receiver", "handled Mpps", "ratio to plain XDP_DROP", "ratio to nftables netdev ingress", "handled / offered"],
    );
    for (i, r) in all.iter().enumerate() {
        t.row(vec![
            r.name().into(),
            format!("{:.2}", super::median(rates[i].clone())),
            format!("{:.2}", ratio_to(i, Receiver::XdpDrop)),
            format!("{:.2}", ratio_to(i, Receiver::NftIngress)),
            format!("{:.0} %", 100.0 * super::median(shares[i].clone())),
        ]);
    }
    Ok(t)
}

const GW_IN_MAC: &str = "02:00:00:00:04:01";
const GW_OUT_MAC: &str = "02:00:00:00:04:02";
const FAR_MAC: &str = "02:00:00:00:04:03";
const FAR_IP: &str = "198.19.0.2";

/// A gateway between two veth pairs: generator -> gateway (IP forwarding)
/// -> far end, where `bench_count_drop` counts what was forwarded.
struct Gateway {
    gen_ns: Netns,
    gw_ns: Netns,
    far_ns: Netns,
    gen_if: String,
    gw_in: String,
    far_if: String,
}

fn gateway() -> anyhow::Result<Gateway> {
    netns::remove_stale();
    let id = netns::next_id();
    let gen_ns = Netns::create(&id, "fgen")?;
    let gw_ns = Netns::create(&id, "fgw")?;
    let far_ns = Netns::create(&id, "ffar")?;
    let (gen_if, gw_in, gw_out, far_if) = (format!("vd{id}fg"), format!("vd{id}fi"), format!("vd{id}fo"), format!("vd{id}ff"));
    let link = |a: &str, a_ns: &Netns, a_mac: &str, b: &str, b_ns: &Netns, b_mac: &str| {
        sh(
            "ip",
            &[
                "link",
                "add",
                a,
                "netns",
                a_ns.name(),
                "address",
                a_mac,
                "type",
                "veth",
                "peer",
                "name",
                b,
                "netns",
                b_ns.name(),
                "address",
                b_mac,
            ],
        )
    };
    link(&gen_if, &gen_ns, GEN_MAC, &gw_in, &gw_ns, GW_IN_MAC)?;
    link(&gw_out, &gw_ns, GW_OUT_MAC, &far_if, &far_ns, FAR_MAC)?;
    gen_ns.ip(&["addr", "add", "198.18.0.1/24", "dev", &gen_if])?;
    gw_ns.ip(&["addr", "add", "198.18.0.254/24", "dev", &gw_in])?;
    gw_ns.ip(&["addr", "add", "198.19.0.254/24", "dev", &gw_out])?;
    far_ns.ip(&["addr", "add", &format!("{FAR_IP}/24"), "dev", &far_if])?;
    for (ns, dev) in [(&gen_ns, &gen_if), (&gw_ns, &gw_in), (&gw_ns, &gw_out), (&far_ns, &far_if)] {
        ns.ip(&["link", "set", dev, "up"])?;
    }
    gw_ns.exec("sysctl", &["-qw", "net.ipv4.ip_forward=1"])?;
    // No neighbour resolution on the measured path.
    gw_ns.ip(&["neigh", "replace", FAR_IP, "lladdr", FAR_MAC, "dev", &gw_out, "nud", "permanent"])?;
    Ok(Gateway { gen_ns, gw_ns, far_ns, gen_if, gw_in, far_if })
}

/// A 64-byte frame from the generator through the gateway to the far end.
fn forwarded_frame(tcp: bool) -> Vec<u8> {
    let (src, dst) = ("198.18.0.1:40000".parse().expect("addr"), format!("{FAR_IP}:{PORT}").parse().expect("addr"));
    let mut f = if tcp { FrameSpec::tcp(src, dst).build(&[0; 6]) } else { FrameSpec::udp(src, dst).build(&[0; 18]) };
    f[0..6].copy_from_slice(&[2, 0, 0, 0, 4, 1]);
    f[6..12].copy_from_slice(&[2, 0, 0, 0, 3, 1]);
    f
}

/// What the gateway's ingress runs in `forwarding`.
#[derive(Clone, Copy, PartialEq)]
enum GatewayXdp {
    None,
    Empty,
    Voipdetect,
}

/// One forwarding measurement: frames per second that reached the far end.
fn forward_once(tcp: bool, xdp: GatewayXdp, n: u32) -> anyhow::Result<f64> {
    let g = gateway()?;
    let mut counter = BenchProgs::load(0)?;
    in_ns(g.far_ns.name(), || {
        counter.prog("bench_count_drop")?.attach(&g.far_if, XdpMode::Driver)?;
        Ok(())
    })?;
    let mut empty = BenchProgs::load(0)?;
    let mut dp = None;
    match xdp {
        // Frames redirected into a veth need a NAPI context there: an XDP
        // program gives one, else GRO.
        GatewayXdp::None => drop(g.gw_ns.exec("ethtool", &["-K", &g.gw_in, "gro", "on"]).context("ethtool -K gro on")?),
        GatewayXdp::Empty => in_ns(g.gw_ns.name(), || {
            empty.prog("bench_pass")?.attach(&g.gw_in, XdpMode::Driver)?;
            Ok(())
        })?,
        GatewayXdp::Voipdetect => {
            let mut d = Datapath::load(&LoadOptions::default())?;
            in_ns(g.gw_ns.name(), || d.attach(&g.gw_in).map(drop))?;
            dp = Some(d);
        }
    }
    let elapsed = super::live_frames(g.gen_ns.name(), &g.gen_if, "bench_redirect_fresh", &forwarded_frame(tcp), n)?;
    std::thread::sleep(Duration::from_millis(200));
    let forwarded = counter.dropped()?;
    // Some loss under overload is part of the figure (the rate counts what
    // arrived); most of the frames not arriving means the lab is broken.
    anyhow::ensure!(forwarded * 2 >= u64::from(n), "the gateway forwarded only {forwarded} of {n} frames");
    if let Some(dp) = dp.as_mut() {
        let tracked = dp.stats()?.get(Stat::Tracked);
        // The far end also counts the namespaces' own chatter (IPv6
        // neighbour discovery, a few frames), which voipdetect passes
        // untracked.
        anyhow::ensure!(tracked + 16 >= forwarded, "voipdetect tracked {tracked} of {forwarded} forwarded frames");
    }
    Ok(forwarded as f64 / elapsed.as_secs_f64() / 1e6)
}

/// The pass path's cost on what a gateway forwards: one flow from a
/// generator namespace through a forwarding namespace to a far end, with
/// nothing, an empty XDP program, or voipdetect on the gateway's ingress
/// (a UDP flow is a media flow to voipdetect, a TCP flow a plain one). The
/// generator and the gateway share the core the generator runs on, so the
/// rate is what one core does generating and forwarding; the ratio is the
/// part of that voipdetect takes. Rounds interleave the cases; medians.
pub fn forwarding(scale: Scale) -> anyhow::Result<Table> {
    let n: u32 = scale.pick(2_000_000, 100_000);
    let rounds = scale.pick(5, 1);
    let cases = [
        ("UDP, no XDP program on the gateway", false, GatewayXdp::None),
        ("UDP, an empty XDP program", false, GatewayXdp::Empty),
        ("UDP (media flow), voipdetect", false, GatewayXdp::Voipdetect),
        ("TCP, no XDP program on the gateway", true, GatewayXdp::None),
        ("TCP, an empty XDP program", true, GatewayXdp::Empty),
        ("TCP (plain flow), voipdetect", true, GatewayXdp::Voipdetect),
    ];
    let mut rates = vec![Vec::new(); cases.len()];
    for _ in 0..rounds {
        for (i, (_, tcp, xdp)) in cases.iter().enumerate() {
            rates[i].push(forward_once(*tcp, *xdp, n)?);
        }
    }
    let rates: Vec<f64> = rates.into_iter().map(super::median).collect();
    let mut t = Table::new(
        "A gateway namespace forwarding one flow (live-frames generator, 64-byte frames, one core)",
        &["gateway ingress", "forwarded Mpps (median)", "ratio to no program", "ratio to an empty program"],
    );
    for (i, (name, _, _)) in cases.iter().enumerate() {
        let base = i - i % 3;
        t.row(vec![
            (*name).into(),
            format!("{:.3}", rates[i]),
            format!("{:.2}", rates[i] / rates[base]),
            format!("{:.2}", rates[i] / rates[base + 1]),
        ]);
    }
    Ok(t)
}
