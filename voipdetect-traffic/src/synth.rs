//! Captures synthesised from the traffic generator's [`Flow`]s: the same
//! payload schedules the lab sends through sockets, framed as the gateway
//! would see them (TCP with a handshake, sequence numbers and ACKs), with
//! timestamps instead of sleeps.

use crate::{
    Flow, Transport, addrs,
    frames::{FrameSpec, TcpFields},
};

/// A frame and its capture time in ns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timed {
    pub ts_ns: u64,
    pub frame: Vec<u8>,
}

/// TCP delayed-ACK timer (Linux's minimum).
const DELACK_NS: u64 = 40_000_000;
/// Bulk transfer pacing: 1448-byte segments at about 1 Gbit/s.
const BULK_GAP_NS: u64 = 12_000;
/// TCP maximum segment size on a 1500-byte Ethernet path with timestamps.
pub const MSS: usize = 1448;

/// All frames of `flows`, starting at `t0_ns`, in time order.
pub fn frames(flows: &[Flow], t0_ns: u64) -> Vec<Timed> {
    let mut out = Vec::new();
    for f in flows {
        match f.transport {
            Transport::Udp => udp(f, t0_ns, &mut out),
            Transport::Tcp => tcp(f, t0_ns, &mut out),
        }
    }
    out.sort_by_key(|t| t.ts_ns);
    out
}

fn udp(f: &Flow, t0: u64, out: &mut Vec<Timed>) {
    let (c, s) = addrs::of(f);
    let up = FrameSpec::udp(c, s);
    let down = FrameSpec::udp(s, c);
    for fr in &f.up {
        out.push(Timed { ts_ns: t0 + fr.at.as_nanos() as u64, frame: up.build(&fr.payload) });
    }
    for fr in &f.down {
        out.push(Timed { ts_ns: t0 + fr.at.as_nanos() as u64, frame: down.build(&fr.payload) });
    }
}

/// One side of a TCP connection.
struct Side {
    spec: FrameSpec,
    seq: u32,
}

fn seg(side: &mut Side, ack: u32, ts_ns: u64, payload: &[u8], flags: TcpFields) -> Timed {
    side.spec.tcp = TcpFields { seq: side.seq, ack, ..flags };
    side.seq = side.seq.wrapping_add(payload.len() as u32 + u32::from(flags.syn || flags.fin));
    Timed { ts_ns, frame: side.spec.build(payload) }
}

fn tcp(f: &Flow, t0: u64, out: &mut Vec<Timed>) {
    let (c, s) = addrs::of(f);
    let mut cli = Side { spec: FrameSpec::tcp(c, s), seq: 1_000 };
    let mut srv = Side { spec: FrameSpec::tcp(s, c), seq: 500_000 };
    // Handshake 1 ms before the first frame.
    let first = f.up.iter().chain(&f.down).map(|fr| fr.at.as_nanos() as u64).min().unwrap_or(0);
    let hs = (t0 + first).saturating_sub(1_000_000);
    out.push(seg(&mut cli, 0, hs, &[], TcpFields { syn: true, ..Default::default() }));
    let ack_c = cli.seq;
    out.push(seg(&mut srv, ack_c, hs + 100_000, &[], TcpFields { syn: true, ..Default::default() }));
    let ack_s = srv.seq;
    out.push(seg(&mut cli, ack_s, hs + 200_000, &[], TcpFields::default()));

    // Data both ways, in time order, each side ACKing what it received:
    // piggybacked on its own next segment, or a pure ACK when the delayed-
    // ACK timer runs out first.
    let mut events: Vec<(u64, bool, &[u8])> = Vec::new();
    for fr in &f.up {
        events.push((t0 + fr.at.as_nanos() as u64, true, &fr.payload));
    }
    for fr in &f.down {
        events.push((t0 + fr.at.as_nanos() as u64, false, &fr.payload));
    }
    let bulk = vec![0x5a; MSS];
    let mut left = f.bulk_bytes as usize;
    let mut t = t0;
    while left > 0 {
        let n = left.min(MSS);
        events.push((t, true, &bulk[..n]));
        left -= n;
        t += BULK_GAP_NS;
    }
    events.sort_by_key(|e| e.0);
    // Pending ACK per side: (due time) of the peer's unacked data.
    let (mut cli_owes, mut srv_owes): (Option<u64>, Option<u64>) = (None, None);
    let mut unacked_segments = 0u32;
    for (ts, from_client, payload) in events {
        // Flush delayed ACKs that fell due before this event.
        if let Some(due) = srv_owes.filter(|&d| d <= ts) {
            let a = cli.seq;
            out.push(seg(&mut srv, a, due, &[], TcpFields::default()));
            srv_owes = None;
            unacked_segments = 0;
        }
        if let Some(due) = cli_owes.filter(|&d| d <= ts) {
            let a = srv.seq;
            out.push(seg(&mut cli, a, due, &[], TcpFields::default()));
            cli_owes = None;
        }
        let psh = TcpFields { psh: true, ..Default::default() };
        if from_client {
            let a = srv.seq;
            out.push(seg(&mut cli, a, ts, payload, psh));
            cli_owes = None;
            unacked_segments += 1;
            // Quick ACK every second full segment (bulk), else delayed.
            if unacked_segments >= 2 {
                let a = cli.seq;
                out.push(seg(&mut srv, a, ts + 20_000, &[], TcpFields::default()));
                srv_owes = None;
                unacked_segments = 0;
            } else {
                srv_owes.get_or_insert(ts + DELACK_NS);
            }
        } else {
            let a = cli.seq;
            out.push(seg(&mut srv, a, ts, payload, psh));
            srv_owes = None;
            unacked_segments = 0;
            cli_owes.get_or_insert(ts + DELACK_NS);
        }
    }
    if let Some(due) = srv_owes {
        let a = cli.seq;
        out.push(seg(&mut srv, a, due, &[], TcpFields::default()));
    }
    if let Some(due) = cli_owes {
        let a = srv.seq;
        out.push(seg(&mut cli, a, due, &[], TcpFields::default()));
    }
}
