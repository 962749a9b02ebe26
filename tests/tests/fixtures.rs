//! Tier 2: crafted frames through the loaded XDP program with
//! BPF_PROG_TEST_RUN. Each case states the action, the global counters that
//! must move (and by how much; every other counter must stay put) and what
//! must happen to the flow's map entry.

use std::net::SocketAddr;

use voipdetect::{
    clock::monotonic_ns,
    datapath::{Datapath, LoadOptions, Stats},
};
use voipdetect_common::{BlockEntry, FlowCounters, FlowKey, HoldEntry, HoldKey, Stat, parse::parse_ethernet};
use voipdetect_traffic::{
    frames::{FrameSpec, add_vlan_tag},
    pattern::rtp_header,
};

const PASS: u32 = 2;
const DROP: u32 = 1;

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn key_of(frame: &[u8]) -> FlowKey {
    parse_ethernet(frame).expect("fixture frame parses").key
}

/// What a case expects of the flow entry afterwards, relative to before.
#[derive(Default, Debug)]
struct FlowDelta {
    packets: u32,
    bytes: u64,
    empty: u32,
    dropped: u32,
    rtp_ok: u16,
    created: bool,
}

struct Case {
    name: &'static str,
    frame: Vec<u8>,
    action: u32,
    stats: Vec<(Stat, u64)>,
    /// None: the frame must not touch any flow entry.
    flow: Option<FlowDelta>,
}

fn udp4(payload: &[u8]) -> Vec<u8> {
    FrameSpec::udp(sa("192.0.2.2:40000"), sa("198.51.100.2:5004")).build(payload)
}

fn tracked(name: &'static str, frame: Vec<u8>, delta: FlowDelta) -> Case {
    let mut stats = vec![(Stat::Tracked, 1)];
    if delta.created {
        stats.push((Stat::NewFlow, 1));
    }
    if delta.empty > 0 {
        stats.push((Stat::EmptyPayload, 1));
    }
    Case { name, frame, action: PASS, stats, flow: Some(delta) }
}

fn passed(name: &'static str, frame: Vec<u8>, reason: Stat) -> Case {
    Case { name, frame, action: PASS, stats: vec![(reason, 1)], flow: None }
}

fn data(len: usize, created: bool) -> FlowDelta {
    FlowDelta { packets: 1, bytes: len as u64, created, ..Default::default() }
}

fn run_case(dp: &mut Datapath, c: &Case) {
    let key = parse_ethernet(c.frame.as_slice()).ok().map(|p| p.key);
    let before_flow: Option<FlowCounters> = key.and_then(|k| dp.flow(&k));
    let before_flows = count_flows(dp);
    let before: Stats = dp.stats().unwrap();
    let action = dp.test_run(&c.frame).unwrap_or_else(|e| panic!("{}: {e:#}", c.name));
    let delta = dp.stats().unwrap().since(&before);
    assert_eq!(action, c.action, "{}: XDP action", c.name);
    let mut want = Stats::default();
    for (s, n) in &c.stats {
        want.0[*s as usize] = *n;
    }
    assert_eq!(delta, want, "{}: counter deltas (indexed like Stat)", c.name);
    assert_eq!(delta.seen(), 1, "{}: one outcome per packet", c.name);
    match &c.flow {
        None => assert_eq!(count_flows(dp), before_flows, "{}: no flow entry may appear", c.name),
        Some(d) => {
            let after = dp.flow(&key.unwrap()).unwrap_or_else(|| panic!("{}: flow entry missing", c.name));
            assert_eq!(before_flow.is_none(), d.created, "{}: entry created", c.name);
            let b = before_flow.unwrap_or_default();
            assert_eq!(after.packets - b.packets, d.packets, "{}: packets", c.name);
            assert_eq!(after.bytes - b.bytes, d.bytes, "{}: bytes", c.name);
            assert_eq!(after.empty - b.empty, d.empty, "{}: empty", c.name);
            assert_eq!(after.dropped - b.dropped, d.dropped, "{}: dropped", c.name);
            assert_eq!(after.rtp_ok.wrapping_sub(b.rtp_ok), d.rtp_ok, "{}: rtp_ok", c.name);
            assert!(after.last_seen_ns >= b.last_seen_ns, "{}: last_seen", c.name);
        }
    }
}

fn count_flows(dp: &Datapath) -> usize {
    dp.for_each_flow(|_, _| {}).unwrap()
}

#[test]
fn frame_table() {
    voipdetect_tests::require_root();
    let mut dp = Datapath::load(&LoadOptions { flow_entries: 1024, ..Default::default() }).unwrap();

    let udp6 = FrameSpec::udp(sa("[2001:db8:1::2]:40000"), sa("[2001:db8:2::2]:5004"));
    let mut vlan1 = FrameSpec::udp(sa("192.0.2.2:40001"), sa("198.51.100.2:5004"));
    vlan1.vlans = vec![100];
    let mut vlan2 = vlan1.clone();
    vlan2.vlans = vec![100, 200];
    vlan2.src = sa("192.0.2.2:40002");
    let mut vlan3 = vlan2.clone();
    vlan3.vlans = vec![100, 200, 300];
    let tcp = FrameSpec::tcp(sa("192.0.2.2:40935"), sa("198.51.100.2:1935"));
    let mut opts = FrameSpec::udp(sa("192.0.2.2:40003"), sa("198.51.100.2:5004"));
    opts.ipv4_options = vec![1; 40];
    let mut frag_first = FrameSpec::udp(sa("192.0.2.2:40004"), sa("198.51.100.2:5004"));
    frag_first.fragment = Some((0, true));
    let mut frag_later = frag_first.clone();
    frag_later.fragment = Some((185, false));
    let mut v6ext = FrameSpec::udp(sa("[2001:db8:1::2]:40005"), sa("[2001:db8:2::2]:5004"));
    v6ext.ipv6_hop_by_hop = true;
    v6ext.ipv6_dest_opts = true;
    let mut v6frag = v6ext.clone();
    v6frag.fragment = Some((100, false));

    let mut bad_ihl = udp4(&[0; 20]);
    bad_ihl[14] = 0x43;
    let mut bad_doff = tcp.build(&[0; 20]);
    bad_doff[14 + 20 + 12] = 0x30;
    let mut arp = udp4(&[0; 20]);
    arp[12..14].copy_from_slice(&[0x08, 0x06]);
    let mut icmp = udp4(&[0; 20]);
    icmp[14 + 9] = 1;
    let mut four_tags = vlan2.build(&[0; 8]);
    add_vlan_tag(&mut four_tags, 7);
    add_vlan_tag(&mut four_tags, 8);

    let rtp = |seq: u16, ts: u32| {
        let mut p = rtp_header(0, seq, ts, 0x1234_5678).to_vec();
        p.resize(172, 0xd5);
        FrameSpec::udp(sa("192.0.2.2:40006"), sa("198.51.100.2:5006")).build(&p)
    };

    // GTP-U G-PDU (TS 29.281) carrying an IPv4 UDP packet: the inner flow counts.
    let inner = FrameSpec::udp(sa("10.10.0.1:31046"), sa("10.20.0.1:21176")).build(&[6; 44]);
    let mut gtp = vec![0x30, 0xff];
    gtp.extend_from_slice(&((inner.len() - 14) as u16).to_be_bytes());
    gtp.extend_from_slice(&[0, 0, 0, 9]);
    gtp.extend_from_slice(&inner[14..]);
    let gtp_frame = FrameSpec::udp(sa("192.0.2.10:2152"), sa("198.51.100.10:2152")).build(&gtp);

    let cases = vec![
        tracked("gtp-u tunnel, inner flow", gtp_frame, data(44, true)),
        tracked("ipv4 udp, new flow", udp4(&[7; 172]), data(172, true)),
        tracked("ipv4 udp, same flow", udp4(&[7; 160]), data(160, false)),
        tracked("ipv6 udp", udp6.build(&[1; 60]), data(60, true)),
        tracked("one vlan tag", vlan1.build(&[1; 33]), data(33, true)),
        tracked("two vlan tags", vlan2.build(&[1; 34]), data(34, true)),
        passed("three vlan tags", vlan3.build(&[1; 35]), Stat::VlanTooDeep),
        passed("four vlan tags", four_tags, Stat::VlanTooDeep),
        tracked("tcp with payload", tcp.build(&[2; 110]), data(110, true)),
        tracked("tcp pure ack", tcp.build(&[]), FlowDelta { empty: 1, ..Default::default() }),
        tracked("ipv4 with 40 bytes of options", opts.build(&[3; 50]), data(50, true)),
        passed("ipv4 ihl 3", bad_ihl, Stat::Malformed),
        passed("tcp data offset 3", bad_doff, Stat::Malformed),
        tracked("ipv4 first fragment", frag_first.build(&[4; 100]), data(100, true)),
        passed("ipv4 later fragment", frag_later.build(&[4; 100]), Stat::Fragment),
        tracked("ipv6 hop-by-hop + destination options", v6ext.build(&[5; 20]), data(20, true)),
        passed("ipv6 later fragment", v6frag.build(&[5; 20]), Stat::Fragment),
        passed("arp", arp, Stat::NotIp),
        passed("icmp", icmp, Stat::OtherL4),
        // BPF_PROG_TEST_RUN refuses frames shorter than an Ethernet header,
        // so that truncation is covered by the parser's unit tests only.
        passed("ipv6 header cut", udp6.build(&[0; 20])[..14 + 30].to_vec(), Stat::Truncated),
        passed("ipv4 header cut", udp4(&[0; 20])[..14 + 12].to_vec(), Stat::Truncated),
        passed("udp header cut", udp4(&[0; 20])[..14 + 20 + 4].to_vec(), Stat::Truncated),
        tracked("rtp 1", rtp(10, 1000), data(172, true)),
        tracked("rtp 2 in sequence", rtp(11, 1160), FlowDelta { rtp_ok: 1, ..data(172, false) }),
        tracked("rtp 3 in sequence", rtp(12, 1320), FlowDelta { rtp_ok: 1, ..data(172, false) }),
        tracked("rtp out of sequence", rtp(500, 1480), data(172, false)),
    ];
    for c in &cases {
        run_case(&mut dp, c);
    }

    // The blocklist: a listed flow drops, an expired entry does not, and
    // removing an entry takes effect at once.
    let call = udp4(&[9; 172]);
    let k = key_of(&call);
    let now = monotonic_ns();
    dp.block(&[k], BlockEntry::drop(now + 60_000_000_000, now)).unwrap();
    run_case(
        &mut dp,
        &Case {
            name: "listed flow, first drop",
            frame: call.clone(),
            action: DROP,
            stats: vec![(Stat::Dropped, 1), (Stat::BlockStart, 1)],
            flow: Some(FlowDelta { dropped: 1, ..Default::default() }),
        },
    );
    run_case(
        &mut dp,
        &Case {
            name: "listed flow, later drop",
            frame: call.clone(),
            action: DROP,
            stats: vec![(Stat::Dropped, 1)],
            flow: Some(FlowDelta { dropped: 1, ..Default::default() }),
        },
    );
    // A listed flow not seen before drops on its first packet.
    let fresh = FrameSpec::udp(sa("192.0.2.9:41000"), sa("198.51.100.2:5004")).build(&[1; 40]);
    dp.block(&[key_of(&fresh)], BlockEntry::drop(now + 60_000_000_000, now)).unwrap();
    run_case(
        &mut dp,
        &Case {
            name: "listed flow, first packet ever",
            frame: fresh,
            action: DROP,
            stats: vec![(Stat::Dropped, 1), (Stat::BlockStart, 1), (Stat::NewFlow, 1)],
            flow: Some(FlowDelta { dropped: 1, created: true, ..Default::default() }),
        },
    );
    // The drop path reads the coarse clock, one scheduler tick (≤ 10 ms)
    // behind: an entry stops dropping within a tick of its expiry.
    dp.block(&[k], BlockEntry::drop(monotonic_ns() - 50_000_000, now)).unwrap();
    run_case(&mut dp, &tracked("expired entry passes", call.clone(), data(172, false)));
    dp.block(&[k], BlockEntry::drop(monotonic_ns() + 60_000_000_000, now)).unwrap();
    run_case(
        &mut dp,
        &Case {
            name: "re-listed flow drops again",
            frame: call.clone(),
            action: DROP,
            stats: vec![(Stat::Dropped, 1), (Stat::BlockStart, 1)],
            flow: Some(FlowDelta { dropped: 1, ..Default::default() }),
        },
    );
    dp.unblock(&[k]).unwrap();
    run_case(&mut dp, &tracked("unlisted flow passes", call, data(172, false)));
}

fn dropped(name: &'static str, frame: Vec<u8>, created: bool, stats: &[Stat]) -> Case {
    let mut s: Vec<(Stat, u64)> = vec![(Stat::Dropped, 1)];
    s.extend(stats.iter().map(|st| (*st, 1)));
    if created {
        s.push((Stat::NewFlow, 1));
    }
    Case { name, frame, action: DROP, stats: s, flow: Some(FlowDelta { dropped: 1, created, ..Default::default() }) }
}

fn addr16(ip: &str) -> [u8; 16] {
    let mut a = [0; 16];
    a[..4].copy_from_slice(&ip.parse::<std::net::Ipv4Addr>().unwrap().octets());
    a
}

/// Holds: once a call's session is blocked, a new conversation from its
/// socket, or from its host to a relay it used, is dropped from its first
/// packet, in either direction; nothing else is, and flows that existed
/// before the hold are left alone.
#[test]
fn holds_drop_a_calls_new_conversations_from_their_first_packet() {
    voipdetect_tests::require_root();
    let mut dp = Datapath::load(&LoadOptions { flow_entries: 1024, ..Default::default() }).unwrap();
    let udp = |a: &str, b: &str| FrameSpec::udp(sa(a), sa(b)).build(&[7; 120]);
    let tcp = |a: &str, b: &str| FrameSpec::tcp(sa(a), sa(b)).build(&[7; 120]);
    // Before any hold: the socket's existing conversation.
    let before = udp("192.0.2.2:41001", "198.51.100.2:5004");
    run_case(&mut dp, &tracked("before the hold", before.clone(), data(120, true)));

    let now = monotonic_ns();
    let entry = HoldEntry { expires_ns: now + 60_000_000_000, since_ns: now };
    let (client, relay) = (addr16("192.0.2.2"), addr16("198.51.100.3"));
    let socket = HoldKey::socket(4, 17, client, 41001);
    let peer = HoldKey::peer(4, 17, client, relay, 3478);
    dp.hold(&socket, entry).unwrap();
    dp.hold(&peer, entry).unwrap();

    let cases = vec![
        dropped("held socket, new peer", udp("192.0.2.2:41001", "198.51.100.9:596"), true, &[Stat::BlockStart, Stat::Held]),
        dropped("held socket, next packet", udp("192.0.2.2:41001", "198.51.100.9:596"), false, &[]),
        dropped("held socket, first packet inbound", udp("198.51.100.8:596", "192.0.2.2:41001"), true, &[Stat::BlockStart, Stat::Held]),
        dropped("held relay, new local port", udp("192.0.2.2:42000", "198.51.100.3:3478"), true, &[Stat::BlockStart, Stat::Held]),
        dropped("held relay, first packet inbound", udp("198.51.100.3:3478", "192.0.2.2:42001"), true, &[Stat::BlockStart, Stat::Held]),
        tracked("same host, other relay port", udp("192.0.2.2:42002", "198.51.100.3:3479"), data(120, true)),
        tracked("other host, held relay", udp("192.0.2.77:42000", "198.51.100.3:3478"), data(120, true)),
        tracked("held socket's port over tcp", tcp("192.0.2.2:41001", "198.51.100.9:596"), data(120, true)),
        tracked("flow from before the hold", before.clone(), data(120, false)),
    ];
    for c in &cases {
        run_case(&mut dp, c);
    }
    let held = key_of(&udp("192.0.2.2:42000", "198.51.100.3:3478"));
    assert_eq!(dp.flow(&held).unwrap().held, 1, "the flow remembers it was held");

    // Lifting the hold lets the flows it caught through at once.
    dp.unhold(&peer).unwrap();
    run_case(&mut dp, &tracked("held relay after the hold ends", udp("192.0.2.2:42000", "198.51.100.3:3478"), data(120, false)));
    run_case(&mut dp, &tracked("new conversation after the hold ends", udp("192.0.2.2:42003", "198.51.100.3:3478"), data(120, true)));
    // An expired hold holds nothing.
    dp.hold(&peer, HoldEntry { expires_ns: monotonic_ns() - 50_000_000, since_ns: now }).unwrap();
    run_case(&mut dp, &tracked("expired hold", udp("192.0.2.2:42004", "198.51.100.3:3478"), data(120, true)));
    dp.unhold(&peer).unwrap();
    dp.unhold(&socket).unwrap();
    assert!(dp.holds().unwrap().is_empty());
    run_case(&mut dp, &tracked("no holds left", udp("192.0.2.2:41001", "198.51.100.7:596"), data(120, true)));
}

#[test]
fn verifier_budget_has_headroom() {
    voipdetect_tests::require_root();
    let mut dp = Datapath::load(&LoadOptions::default()).unwrap();
    let n = dp.verified_instructions().unwrap().expect("this kernel reports verified instructions");
    eprintln!("figure: the verifier walked {n} instructions of its 1 000 000 limit");
    // The parsed packet reaches the rest of the program through a per-CPU
    // map value, which the verifier knows only by type, so the rest is
    // checked once rather than once per parse path (about 345 000 steps
    // here; the same code joined as values took 780 000 before it grew).
    // Fail here, with room to spare, if a change brings the
    // multiplication back.
    assert!(n < 500_000, "the verifier walked {n} instructions: the stages multiply again");
}

/// A full table takes a new flow in the slot of the one seen longest ago
/// among its probes, and counts it, rather than refusing it.
#[test]
fn a_full_table_evicts_instead_of_refusing() {
    voipdetect_tests::require_root();
    let mut dp = Datapath::load(&LoadOptions { flow_entries: 64, ..Default::default() }).unwrap();
    for port in 0..1000u16 {
        let f = FrameSpec::udp(sa(&format!("192.0.2.2:{}", 10000 + port)), sa("198.51.100.2:5004")).build(&[0; 20]);
        assert_eq!(dp.test_run(&f).unwrap(), PASS);
    }
    let s = dp.stats().unwrap();
    assert_eq!(s.get(Stat::Tracked), 1000);
    assert_eq!(s.get(Stat::FlowTableFull), 0);
    assert_eq!(s.get(Stat::NewFlow), 1000);
    assert!(s.get(Stat::Evicted) >= 1000 - 64, "{} evicted", s.get(Stat::Evicted));
    assert_eq!(count_flows(&dp), 64, "the IPv4 table has 64 slots");
}

/// The clock of flows that are not media (jiffies, the tick length from
/// the loader, and a per-CPU anchor renewed from the precise clock) never
/// runs ahead of CLOCK_MONOTONIC and lags it by at most two ticks, across
/// anchor renewals.
#[test]
fn the_coarse_clock_follows_the_monotonic_clock() {
    voipdetect_tests::require_root();
    let mut res = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid out-pointer.
    assert_eq!(unsafe { libc::clock_getres(libc::CLOCK_MONOTONIC_COARSE, &mut res) }, 0);
    let tick = res.tv_nsec as u64;
    let mut dp = Datapath::load(&LoadOptions { flow_entries: 1024, ..Default::default() }).unwrap();
    let f = FrameSpec::tcp(sa("192.0.2.2:40935"), sa("198.51.100.2:443")).build(&[7; 100]);
    let key = key_of(&f);
    for pause_ms in [0, 30, 70, 300, 10, 600] {
        std::thread::sleep(std::time::Duration::from_millis(pause_ms));
        let before = monotonic_ns();
        assert_eq!(dp.test_run(&f).unwrap(), PASS);
        let after = monotonic_ns();
        let seen = dp.flow(&key).unwrap().last_seen_ns;
        assert!(seen <= after, "the coarse clock ran {} ns ahead", seen - after);
        assert!(seen + 2 * tick >= before, "the coarse clock lagged {} ns (tick {tick} ns)", before - seen);
    }
}

/// The IPv4 header checksum of `h` (20 bytes) summed with its own field:
/// 0 (or 0xffff) when the header is intact.
fn ipv4_sum_ok(h: &[u8]) -> bool {
    let mut sum: u32 = h[..20].chunks(2).map(|w| u32::from(u16::from_be_bytes([w[0], w[1]]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum == 0xffff
}

/// Mark mode: a flow listed for marking passes with its DSCP rewritten
/// (IPv4 with an intact header checksum, IPv6 in its traffic class, VLAN
/// tags or not, ECN kept, nothing else changed); a flow listed for
/// dropping still drops; a packet inside a GTP-U tunnel passes unchanged.
#[test]
fn marked_flows_pass_with_their_dscp_rewritten() {
    use voipdetect_common::dscp::{DSCP_EF, mark};
    voipdetect_tests::require_root();
    let mut dp = Datapath::load(&LoadOptions { flow_entries: 1024, ..Default::default() }).unwrap();
    let now = monotonic_ns();
    let marking = BlockEntry::marking(now + 60_000_000_000, now, mark(DSCP_EF));
    let mut vlan = FrameSpec::udp(sa("192.0.2.2:40100"), sa("198.51.100.2:5004"));
    vlan.vlans = vec![100];
    let cases = [
        ("udp ipv4", FrameSpec::udp(sa("192.0.2.2:40101"), sa("198.51.100.2:5004")).build(&[5; 160]), 14),
        ("udp ipv4 in a vlan", vlan.build(&[5; 160]), 18),
        ("tcp ipv4", FrameSpec::tcp(sa("192.0.2.2:40102"), sa("198.51.100.2:443")).build(&[5; 160]), 14),
        ("udp ipv6", FrameSpec::udp(sa("[2001:db8:1::2]:40103"), sa("[2001:db8:2::2]:5004")).build(&[5; 160]), 14),
    ];
    for (name, mut frame, l3) in cases {
        let v4 = frame[l3] >> 4 == 4;
        // ECN "ECT(1)" on the way in: it must come out the same.
        if v4 {
            frame[l3 + 1] |= 1;
            frame[l3 + 10..l3 + 12].fill(0);
            let sum: u32 = frame[l3..l3 + 20].chunks(2).map(|w| u32::from(u16::from_be_bytes([w[0], w[1]]))).sum();
            let sum = (sum & 0xffff) + (sum >> 16);
            let c = !(((sum & 0xffff) + (sum >> 16)) as u16);
            frame[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
            assert!(ipv4_sum_ok(&frame[l3..]), "{name}: fixture checksum");
        } else {
            frame[l3 + 1] |= 0x10;
        }
        dp.block(&[key_of(&frame)], marking).unwrap();
        let before = dp.stats().unwrap();
        let (action, out) = dp.test_run_out(&frame).unwrap();
        let after = dp.stats().unwrap();
        assert_eq!(action, PASS, "{name}");
        assert_eq!(out.len(), frame.len(), "{name}");
        let (dscp, ecn) =
            if v4 { (out[l3 + 1] >> 2, out[l3 + 1] & 3) } else { (((out[l3] & 0x0f) << 2) | (out[l3 + 1] >> 6), (out[l3 + 1] >> 4) & 3) };
        assert_eq!((dscp, ecn), (DSCP_EF, 1), "{name}: DSCP and ECN");
        if v4 {
            assert!(ipv4_sum_ok(&out[l3..]), "{name}: IPv4 header checksum broken");
        }
        let changed: Vec<usize> = (0..frame.len()).filter(|&i| out[i] != frame[i]).collect();
        let allowed: &[usize] = if v4 { &[l3 + 1, l3 + 10, l3 + 11] } else { &[l3, l3 + 1] };
        assert!(changed.iter().all(|i| allowed.contains(i)), "{name}: bytes {changed:?} changed");
        assert_eq!(after.get(Stat::Marked) - before.get(Stat::Marked), 1, "{name}");
        assert_eq!(after.get(Stat::Tracked) - before.get(Stat::Tracked), 1, "{name}: a marked packet is counted as passed");
        assert_eq!(after.get(Stat::Dropped), before.get(Stat::Dropped), "{name}");
        assert_eq!(dp.flow(&key_of(&frame)).unwrap().packets, 1, "{name}: counted into its flow");
    }

    // A listing turned from marking to dropping drops.
    let frame = FrameSpec::udp(sa("192.0.2.2:40101"), sa("198.51.100.2:5004")).build(&[5; 160]);
    dp.block(&[key_of(&frame)], BlockEntry::drop(now + 60_000_000_000, now)).unwrap();
    assert_eq!(dp.test_run_out(&frame).unwrap().0, DROP, "re-listed to drop");

    // The inner flow of a GTP-U tunnel: listed for marking, passed as it came.
    let inner = FrameSpec::udp(sa("10.45.0.2:40104"), sa("198.51.100.2:5004")).build(&[5; 80]);
    let mut gtp = vec![0x30, 0xff];
    gtp.extend_from_slice(&((inner.len() - 14) as u16).to_be_bytes());
    gtp.extend_from_slice(&[0, 0, 0, 9]);
    gtp.extend_from_slice(&inner[14..]);
    let tunnelled = FrameSpec::udp(sa("192.0.2.10:2152"), sa("198.51.100.10:2152")).build(&gtp);
    dp.block(&[key_of(&tunnelled)], marking).unwrap();
    let (action, out) = dp.test_run_out(&tunnelled).unwrap();
    assert_eq!((action, out), (PASS, tunnelled), "a tunnelled packet passes unchanged");
}
