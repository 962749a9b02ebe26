//! Plays [`Flow`]s through real sockets: the client side in the lab's client
//! namespace, the server side in its server namespace, so every packet
//! crosses the gateway. Every loop ends by a deadline or a frame count, and
//! every endpoint reports what it sent and what it received, when, so a
//! blocked flow shows up as traffic that stopped arriving.
//!
//! Legs of one call may share a socket's port (connected UDP sockets with
//! `SO_REUSEPORT`: the kernel tells them apart by their peers), and a call
//! may adapt: its UDP endpoints give up when their media stays away for
//! the loss timeout, and the call goes on over TCP from then on.

use std::{
    io::{ErrorKind, Read, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket},
    sync::{
        Barrier, OnceLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context as _, anyhow};
use voipdetect_traffic::{Adaptive, AdaptiveLeg, Flow, Frame, Transport, addrs};

use crate::{lab::GatewayLab, netns};

/// How long receivers keep listening after the last scheduled frame.
const GRACE: Duration = Duration::from_millis(1500);
/// Longest a bulk transfer may run.
const BULK_LIMIT: Duration = Duration::from_secs(10);
/// Bulk transfers are paced to 400 Mbit/s: still bulk to the classifier,
/// but on a 2-core machine an unpaced one starves the other flows' veth
/// queues, and a drop there would look like a drop by voipdetect.
const BULK_BYTES_PER_SEC: f64 = 50e6;
/// Receive poll granularity (how quickly loops notice deadlines and stops).
const TICK: Duration = Duration::from_millis(20);

/// When each write or read happened (from the flows' common start), and
/// how many bytes it moved.
pub type Log = Vec<(Duration, u32)>;

/// What one flow delivered. Counts are datagrams for UDP, bytes for TCP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowResult {
    pub name: String,
    pub transport: Transport,
    pub is_call: bool,
    pub sent_up: u64,
    pub recv_up: u64,
    pub sent_down: u64,
    pub recv_down: u64,
    /// Latest arrival in either direction, from the flows' common start.
    pub last_recv: Option<Duration>,
    /// When the flow was scheduled to end.
    pub span: Duration,
    /// Wall-clock time of the flows' common start.
    pub started: SystemTime,
    /// Payload bytes written and read, with their times: client to server,
    /// then server to client.
    pub sent: [Log; 2],
    pub received: [Log; 2],
}

impl FlowResult {
    pub fn unit(&self) -> &'static str {
        match self.transport {
            Transport::Udp => "packets",
            Transport::Tcp => "bytes",
        }
    }
    pub fn sent(&self) -> u64 {
        self.sent_up + self.sent_down
    }
    pub fn received(&self) -> u64 {
        self.recv_up + self.recv_down
    }
    pub fn delivered_all(&self) -> bool {
        self.sent() > 0 && self.recv_up == self.sent_up && self.recv_down == self.sent_down
    }
    /// When traffic stopped arriving, for a flow that lost packets.
    pub fn cut_off_after(&self) -> Option<Duration> {
        (!self.delivered_all()).then(|| self.last_recv.unwrap_or_default())
    }
    /// Payload bytes sent, and delivered, at or after `t`.
    pub fn bytes_after(&self, t: Duration) -> (u64, u64) {
        let sum = |logs: &[Log; 2]| logs.iter().flatten().filter(|(at, _)| *at >= t).map(|(_, n)| u64::from(*n)).sum();
        (sum(&self.sent), sum(&self.received))
    }
    /// The first write of either side.
    pub fn first_sent(&self) -> Option<Duration> {
        self.sent.iter().flatten().map(|(at, _)| *at).min()
    }
}

#[derive(Default)]
struct Side {
    sent: u64,
    recv: u64,
    last_recv: Option<Duration>,
    sent_log: Log,
    recv_log: Log,
}

struct Sync {
    bound: Barrier,
    go: Barrier,
    start: OnceLock<Instant>,
}

/// One adaptive call's state, shared by its flows: when (ms after the
/// start, plus one; 0 not yet) each side gave up on UDP.
#[derive(Default)]
struct Fallback {
    client: AtomicU64,
    server: AtomicU64,
}

impl Fallback {
    fn side(&self, is_client: bool) -> &AtomicU64 {
        if is_client { &self.client } else { &self.server }
    }
}

/// An endpoint's part in an adaptive call.
#[derive(Clone, Copy)]
struct Adapt<'a> {
    state: &'a Fallback,
    is_client: bool,
    how: Adaptive,
}

impl Adapt<'_> {
    fn give_up(&self, at: Duration) {
        let _ = self.state.side(self.is_client).compare_exchange(0, at.as_millis() as u64 + 1, Ordering::Relaxed, Ordering::Relaxed);
    }
    fn gave_up(&self) -> Option<Duration> {
        match self.state.side(self.is_client).load(Ordering::Relaxed) {
            0 => None,
            ms => Some(Duration::from_millis(ms - 1)),
        }
    }
}

/// Runs all `flows` at once and waits for them. `stop` ends them early.
pub fn run(lab: &GatewayLab, flows: &[Flow], stop: &AtomicBool) -> anyhow::Result<Vec<FlowResult>> {
    let parties = flows.len() * 2 + 1;
    let sync = Sync { bound: Barrier::new(parties), go: Barrier::new(parties), start: OnceLock::new() };
    let groups: Vec<(u16, Fallback)> = {
        let mut g: Vec<u16> = flows.iter().filter_map(|f| f.adaptive.map(|a| a.group)).collect();
        g.sort_unstable();
        g.dedup();
        g.into_iter().map(|id| (id, Fallback::default())).collect()
    };
    let mut started = SystemTime::now();
    let sides = thread::scope(|scope| -> anyhow::Result<Vec<Side>> {
        let mut handles = Vec::new();
        for flow in flows {
            let (client, server) = addrs::of(flow);
            for (ns, is_client) in [(lab.client.name(), true), (lab.server.name(), false)] {
                let (local, peer) = if is_client { (client, server) } else { (server, client) };
                let sync = &sync;
                let adapt = flow.adaptive.and_then(|how| {
                    let state = &groups.iter().find(|(id, _)| *id == how.group)?.1;
                    Some(Adapt { state, is_client, how })
                });
                let h = thread::Builder::new()
                    .name(format!("{}-{}", if is_client { "cli" } else { "srv" }, flow.client_port))
                    .spawn_scoped(scope, move || endpoint(ns, flow, is_client, local, peer, sync, stop, adapt))
                    .context("spawning a traffic thread")?;
                handles.push(h);
            }
        }
        sync.bound.wait();
        // A short lead so every thread is past the barrier before frame 0.
        let lead = Duration::from_millis(50);
        let _ = sync.start.set(Instant::now() + lead);
        started = SystemTime::now() + lead;
        sync.go.wait();
        let mut sides = Vec::new();
        for h in handles {
            sides.push(h.join().map_err(|_| anyhow!("a traffic thread panicked"))??);
        }
        Ok(sides)
    })?;
    let mut out = Vec::new();
    for (flow, pair) in flows.iter().zip(sides.chunks(2)) {
        let (c, s) = (&pair[0], &pair[1]);
        out.push(FlowResult {
            name: flow.name.clone(),
            transport: flow.transport,
            is_call: flow.is_call,
            sent_up: c.sent,
            recv_up: s.recv,
            sent_down: s.sent,
            recv_down: c.recv,
            last_recv: c.last_recv.max(s.last_recv),
            span: flow.span(),
            started,
            sent: [c.sent_log.clone(), s.sent_log.clone()],
            received: [s.recv_log.clone(), c.recv_log.clone()],
        });
    }
    Ok(out)
}

enum Sock {
    Udp(UdpSocket),
    TcpListener(TcpListener),
    TcpClient,
}

/// A UDP socket bound to `local` and connected to `peer`; with `shared`,
/// other legs of the same call may bind the same port.
fn udp_socket(local: SocketAddr, peer: SocketAddr, shared: bool) -> anyhow::Result<UdpSocket> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::for_address(local), Type::DGRAM, None).context("udp socket")?;
    if shared {
        s.set_reuse_port(true).context("SO_REUSEPORT")?;
    }
    s.bind(&local.into()).with_context(|| format!("binding udp {local}"))?;
    s.connect(&peer.into()).with_context(|| format!("connecting udp {local} to {peer}"))?;
    Ok(s.into())
}

/// A TCP connection from `local` (address and port: the flow's client
/// host, as in its synthetic capture) to `peer`.
fn tcp_connect(local: SocketAddr, peer: SocketAddr) -> anyhow::Result<TcpStream> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::for_address(local), Type::STREAM, None).context("tcp socket")?;
    // The port may still be in TIME_WAIT from an earlier run of the flow.
    s.set_reuse_address(true).context("SO_REUSEADDR")?;
    s.bind(&local.into()).with_context(|| format!("binding tcp {local}"))?;
    s.connect_timeout(&peer.into(), Duration::from_secs(3))?;
    Ok(s.into())
}

fn setsockopt_int(fd: std::os::fd::RawFd, opt: libc::c_int, value: libc::c_int) -> bool {
    // SAFETY: a valid socket and a c_int option value of the right size.
    unsafe { libc::setsockopt(fd, libc::SOL_SOCKET, opt, (&raw const value).cast(), size_of::<libc::c_int>() as libc::socklen_t) == 0 }
}

fn bind(flow: &Flow, is_client: bool, local: SocketAddr, peer: SocketAddr) -> anyhow::Result<Sock> {
    Ok(match (flow.transport, is_client) {
        (Transport::Udp, _) => {
            let s = udp_socket(local, peer, flow.shared_socket)?;
            // Room for bursts while this thread is not scheduled: a drop in
            // our own socket must not look like a drop on the path.
            set_rcvbuf(&s, 8 << 20);
            s.set_read_timeout(Some(TICK))?;
            Sock::Udp(s)
        }
        (Transport::Tcp, false) => {
            let l = TcpListener::bind(local).with_context(|| format!("listening on tcp {local}"))?;
            l.set_nonblocking(true)?;
            Sock::TcpListener(l)
        }
        (Transport::Tcp, true) => Sock::TcpClient,
    })
}

#[expect(clippy::too_many_arguments, reason = "one call site, each argument a different part of the run")]
fn endpoint(
    ns: &str,
    flow: &Flow,
    is_client: bool,
    local: SocketAddr,
    peer: SocketAddr,
    sync: &Sync,
    stop: &AtomicBool,
    adapt: Option<Adapt<'_>>,
) -> anyhow::Result<Side> {
    // Always reach both barriers, even after an error, or the others hang.
    let sock = netns::enter(ns).and_then(|()| bind(flow, is_client, local, peer));
    sync.bound.wait();
    sync.go.wait();
    let start = *sync.start.get().expect("set before the go barrier");
    let sock = sock?;
    let frames = if is_client { &flow.up } else { &flow.down };
    let busy = flow.span().max(if flow.bulk_bytes > 0 { BULK_LIMIT } else { Duration::ZERO });
    let deadline = start + busy + GRACE;
    let t = Timing { start, deadline, stop };
    match sock {
        Sock::Udp(s) => udp(s, frames, &t, adapt),
        Sock::TcpListener(l) => {
            let stream = match accept(&l, &t) {
                Ok(s) => s,
                // A fallback that never came: the call stayed on UDP.
                Err(_) if adapt.is_some() => return Ok(Side::default()),
                Err(e) => return Err(e),
            };
            // A fallback leg sends from the moment its connection arrives.
            let from = if adapt.is_some() { start.elapsed() } else { Duration::ZERO };
            tcp(stream, frames, 0, from, &t)
        }
        Sock::TcpClient => {
            let from = match adapt.filter(|a| a.how.leg == AdaptiveLeg::TcpFallback) {
                // Connect once the call's UDP side gave up, and go on from there.
                Some(a) => match wait_for_fallback(&a, &t) {
                    Some(at) => at,
                    None => return Ok(Side::default()),
                },
                None => {
                    sleep_until(start, stop);
                    Duration::ZERO
                }
            };
            let stream = tcp_connect(local, peer).with_context(|| format!("connecting to {peer} from {local}"))?;
            tcp(stream, frames, flow.bulk_bytes, from, &t)
        }
    }
}

/// When a flow's endpoints start, end, and whether to stop early.
struct Timing<'a> {
    start: Instant,
    deadline: Instant,
    stop: &'a AtomicBool,
}

impl Timing<'_> {
    fn over(&self) -> bool {
        Instant::now() >= self.deadline || self.stop.load(Ordering::Relaxed)
    }
}

/// Waits until this side of the call gave up on UDP; returns when.
fn wait_for_fallback(a: &Adapt<'_>, t: &Timing<'_>) -> Option<Duration> {
    while !t.over() {
        if let Some(at) = a.gave_up() {
            return Some(at);
        }
        thread::sleep(Duration::from_millis(5));
    }
    None
}

fn sleep_until(t: Instant, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now >= t {
            return;
        }
        thread::sleep((t - now).min(TICK));
    }
}

fn udp(s: UdpSocket, frames: &[Frame], t: &Timing<'_>, adapt: Option<Adapt<'_>>) -> anyhow::Result<Side> {
    let adapt = adapt.filter(|a| a.how.leg == AdaptiveLeg::Udp);
    let start = t.start;
    thread::scope(|scope| {
        let sender = scope.spawn(|| {
            let (mut sent, mut log) = (0u64, Log::new());
            for f in frames {
                sleep_until(start + f.at, t.stop);
                if t.stop.load(Ordering::Relaxed) || adapt.is_some_and(|a| a.gave_up().is_some()) {
                    break;
                }
                // A failed send can be an earlier ICMP error reported late
                // (ECONNREFUSED), not this packet's fate: try once more.
                if s.send(&f.payload).is_ok() || s.send(&f.payload).is_ok() {
                    sent += 1;
                    log.push((start.elapsed(), f.payload.len() as u32));
                }
            }
            (sent, log)
        });
        let mut side = Side::default();
        let mut buf = vec![0u8; 65536];
        while !t.over() {
            match s.recv(&mut buf) {
                Ok(n) => {
                    let at = start.elapsed();
                    side.recv += 1;
                    side.last_recv = Some(at);
                    side.recv_log.push((at, n as u32));
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::ConnectionRefused) => {}
                Err(e) => return Err(e).context("udp receive"),
            }
            // The media stayed away for the loss timeout: give up on UDP,
            // the way a real client moves to another path.
            if let Some(a) = adapt
                && let Some(last) = side.last_recv
                && start.elapsed().saturating_sub(last) >= a.how.loss_timeout
            {
                a.give_up(start.elapsed());
                break;
            }
        }
        (side.sent, side.sent_log) = sender.join().map_err(|_| anyhow!("udp sender panicked"))?;
        Ok(side)
    })
}

fn set_rcvbuf(s: &impl std::os::fd::AsRawFd, bytes: libc::c_int) {
    // SO_RCVBUFFORCE (root) ignores rmem_max; fall back to SO_RCVBUF.
    if !setsockopt_int(s.as_raw_fd(), libc::SO_RCVBUFFORCE, bytes) {
        setsockopt_int(s.as_raw_fd(), libc::SO_RCVBUF, bytes);
    }
}

fn accept(l: &TcpListener, t: &Timing<'_>) -> anyhow::Result<TcpStream> {
    while !t.over() {
        match l.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false)?;
                return Ok(s);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => thread::sleep(Duration::from_millis(2)),
            Err(e) => return Err(e).context("accept"),
        }
    }
    Err(anyhow!("no connection arrived"))
}

/// Runs a TCP endpoint: the frames scheduled at or after `from`, then
/// `bulk` bytes as fast as the pacing allows, while reading what arrives.
fn tcp(s: TcpStream, frames: &[Frame], bulk: u64, from: Duration, t: &Timing<'_>) -> anyhow::Result<Side> {
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(TICK))?;
    s.set_write_timeout(Some(TICK))?;
    let mut tx = s.try_clone()?;
    let start = t.start;
    thread::scope(|scope| {
        let sender = scope.spawn(move || {
            let (mut sent, mut log) = (0u64, Log::new());
            let mut write = |buf: &[u8], sent: &mut u64, log: &mut Log| -> bool {
                let mut off = 0;
                while off < buf.len() {
                    if t.over() {
                        return false;
                    }
                    match tx.write(&buf[off..]) {
                        Ok(n) => {
                            off += n;
                            *sent += n as u64;
                            log.push((start.elapsed(), n as u32));
                        }
                        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                        Err(_) => return false,
                    }
                }
                true
            };
            for f in frames.iter().filter(|f| f.at >= from) {
                sleep_until(start + f.at, t.stop);
                if !write(&f.payload, &mut sent, &mut log) {
                    break;
                }
            }
            let chunk = vec![0x5au8; 64 * 1024];
            let bulk_start = Instant::now();
            let mut bulk_sent = 0u64;
            while bulk_sent < bulk {
                let n = (bulk - bulk_sent).min(chunk.len() as u64) as usize;
                let before = sent;
                let ok = write(&chunk[..n], &mut sent, &mut log);
                bulk_sent += sent - before;
                if !ok {
                    break;
                }
                let due = Duration::from_secs_f64(bulk_sent as f64 / BULK_BYTES_PER_SEC);
                sleep_until(bulk_start + due, t.stop);
            }
            let _ = tx.shutdown(Shutdown::Write);
            (sent, log)
        });
        let mut side = Side::default();
        let mut rx = &s;
        let mut buf = vec![0u8; 65536];
        while !t.over() {
            match rx.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    let at = start.elapsed();
                    side.recv += n as u64;
                    side.last_recv = Some(at);
                    side.recv_log.push((at, n as u32));
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => break,
            }
        }
        (side.sent, side.sent_log) = sender.join().map_err(|_| anyhow!("tcp sender panicked"))?;
        Ok(side)
    })
}
