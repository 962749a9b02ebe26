//! Plays [`Flow`]s through real sockets: the client side in the lab's client
//! namespace, the server side in its server namespace, so every packet
//! crosses the gateway. Every loop ends by a deadline or a frame count, and
//! every endpoint reports what it sent and what it received, so a blocked
//! flow shows up as traffic that stopped arriving.

use std::{
    io::{ErrorKind, Read, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket},
    sync::{
        Barrier, OnceLock,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow};

use voipdetect_traffic::{Flow, Frame, Transport, addrs};

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
}

#[derive(Default)]
struct Side {
    sent: u64,
    recv: u64,
    last_recv: Option<Duration>,
}

struct Sync {
    bound: Barrier,
    go: Barrier,
    start: OnceLock<Instant>,
}

/// Runs all `flows` at once and waits for them. `stop` ends them early.
pub fn run(lab: &GatewayLab, flows: &[Flow], stop: &AtomicBool) -> anyhow::Result<Vec<FlowResult>> {
    let parties = flows.len() * 2 + 1;
    let sync = Sync { bound: Barrier::new(parties), go: Barrier::new(parties), start: OnceLock::new() };
    let sides = thread::scope(|scope| -> anyhow::Result<Vec<Side>> {
        let mut handles = Vec::new();
        for flow in flows {
            let (client, server) = addrs::of(flow);
            for (ns, is_client) in [(lab.client.name(), true), (lab.server.name(), false)] {
                let (local, peer) = if is_client { (client, server) } else { (server, client) };
                let sync = &sync;
                let h = thread::Builder::new()
                    .name(format!("{}-{}", if is_client { "cli" } else { "srv" }, flow.client_port))
                    .spawn_scoped(scope, move || endpoint(ns, flow, is_client, local, peer, sync, stop))
                    .context("spawning a traffic thread")?;
                handles.push(h);
            }
        }
        sync.bound.wait();
        // A short lead so every thread is past the barrier before frame 0.
        let _ = sync.start.set(Instant::now() + Duration::from_millis(50));
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
        });
    }
    Ok(out)
}

enum Sock {
    Udp(UdpSocket),
    TcpListener(TcpListener),
    TcpClient,
}

fn bind(flow: &Flow, is_client: bool, local: SocketAddr, peer: SocketAddr) -> anyhow::Result<Sock> {
    Ok(match (flow.transport, is_client) {
        (Transport::Udp, _) => {
            let s = UdpSocket::bind(local).with_context(|| format!("binding udp {local}"))?;
            // Room for bursts while this thread is not scheduled: a drop in
            // our own socket must not look like a drop on the path.
            set_rcvbuf(&s, 8 << 20);
            s.connect(peer)?;
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

fn endpoint(
    ns: &str,
    flow: &Flow,
    is_client: bool,
    local: SocketAddr,
    peer: SocketAddr,
    sync: &Sync,
    stop: &AtomicBool,
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
    match sock {
        Sock::Udp(s) => udp(s, frames, start, deadline, stop),
        Sock::TcpListener(l) => {
            let stream = accept(&l, deadline, stop)?;
            tcp(stream, frames, 0, start, deadline, stop)
        }
        Sock::TcpClient => {
            sleep_until(start, stop);
            let stream =
                TcpStream::connect_timeout(&peer, Duration::from_secs(3)).with_context(|| format!("connecting to {peer} from {local}"))?;
            tcp(stream, frames, flow.bulk_bytes, start, deadline, stop)
        }
    }
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

fn udp(s: UdpSocket, frames: &[Frame], start: Instant, deadline: Instant, stop: &AtomicBool) -> anyhow::Result<Side> {
    thread::scope(|scope| {
        let sender = scope.spawn(|| {
            let mut sent = 0u64;
            for f in frames {
                sleep_until(start + f.at, stop);
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                // A failed send can be an earlier ICMP error reported late
                // (ECONNREFUSED), not this packet's fate: try once more.
                if s.send(&f.payload).is_ok() || s.send(&f.payload).is_ok() {
                    sent += 1;
                }
            }
            sent
        });
        let mut side = Side::default();
        let mut buf = vec![0u8; 65536];
        while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
            match s.recv(&mut buf) {
                Ok(_) => {
                    side.recv += 1;
                    side.last_recv = Some(start.elapsed());
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::ConnectionRefused) => {}
                Err(e) => return Err(e).context("udp receive"),
            }
        }
        side.sent = sender.join().map_err(|_| anyhow!("udp sender panicked"))?;
        Ok(side)
    })
}

fn set_rcvbuf(s: &impl std::os::fd::AsRawFd, bytes: libc::c_int) {
    // SAFETY: a valid socket and a c_int option value of the right size.
    // SO_RCVBUFFORCE (root) ignores rmem_max; fall back to SO_RCVBUF.
    unsafe {
        let p = (&bytes as *const libc::c_int).cast();
        let n = size_of::<libc::c_int>() as libc::socklen_t;
        if libc::setsockopt(s.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, p, n) != 0 {
            libc::setsockopt(s.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVBUF, p, n);
        }
    }
}

fn accept(l: &TcpListener, deadline: Instant, stop: &AtomicBool) -> anyhow::Result<TcpStream> {
    while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
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

fn tcp(s: TcpStream, frames: &[Frame], bulk: u64, start: Instant, deadline: Instant, stop: &AtomicBool) -> anyhow::Result<Side> {
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(TICK))?;
    s.set_write_timeout(Some(TICK))?;
    let mut tx = s.try_clone()?;
    thread::scope(|scope| {
        let sender = scope.spawn(move || {
            let mut sent = 0u64;
            let mut write = |buf: &[u8], sent: &mut u64| -> bool {
                let mut off = 0;
                while off < buf.len() {
                    if Instant::now() >= deadline || stop.load(Ordering::Relaxed) {
                        return false;
                    }
                    match tx.write(&buf[off..]) {
                        Ok(n) => {
                            off += n;
                            *sent += n as u64;
                        }
                        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                        Err(_) => return false,
                    }
                }
                true
            };
            for f in frames {
                sleep_until(start + f.at, stop);
                if !write(&f.payload, &mut sent) {
                    break;
                }
            }
            let chunk = vec![0x5au8; 64 * 1024];
            let bulk_start = Instant::now();
            while sent < bulk {
                let n = (bulk - sent).min(chunk.len() as u64) as usize;
                if !write(&chunk[..n], &mut sent) {
                    break;
                }
                let due = Duration::from_secs_f64(sent as f64 / BULK_BYTES_PER_SEC);
                sleep_until(bulk_start + due, stop);
            }
            let _ = tx.shutdown(Shutdown::Write);
            sent
        });
        let mut side = Side::default();
        let mut rx = &s;
        let mut buf = vec![0u8; 65536];
        while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
            match rx.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    side.recv += n as u64;
                    side.last_recv = Some(start.elapsed());
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => break,
            }
        }
        side.sent = sender.join().map_err(|_| anyhow!("tcp sender panicked"))?;
        Ok(side)
    })
}
