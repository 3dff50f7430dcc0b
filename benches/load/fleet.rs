//! The SSE load client: many event streams on raw sockets, read by a few plain threads.
//!
//! Each thread is one epoll loop (mio) over its share of the sockets: no async runtime, no
//! timers, one `recvmsg` per readiness, and a scan for `id: N` lines. Every id is noted
//! with two clocks: the kernel's receive timestamp (SO_TIMESTAMPNS: when the bytes reached
//! the client's socket, whatever the client was doing) and the moment the thread read them.
//! The gap between the two is the load client's own delay, so a run shows by itself whether
//! the client kept up.
//!
//! A read's timestamp is that of the last segment it took (TCP also merges queued segments,
//! keeping the newest stamp), so it is exact only for the read's last frame: a frame with
//! another after it in the same read (an event followed by a `: ping`) is marked inexact.
//!
//! The fleet can be *held*: its threads park, reading nothing, while the server fans an event
//! out, and read it all once released. The kernel stamps arrivals either way, so a held fleet
//! measures the same moment while taking none of the two cores the server is using; on a real
//! deployment the clients' reading happens on their own machines.

use std::io::{IoSliceMut, Write};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token, Waker};
use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg, setsockopt, sockopt};

const WAKER: Token = Token(usize::MAX);

/// Wall-clock nanoseconds, the clock the kernel stamps received data with.
pub fn realtime_ns() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i64)
}

/// One frame's arrival: its id, when the kernel received it, when the client read it.
#[derive(Debug, Clone, Copy)]
pub struct Seen {
    pub id: i64,
    pub kernel_ns: i64,
    pub read_ns: i64,
    /// `kernel_ns` is this frame's own arrival: no frame came after it in the same read.
    pub exact: bool,
}

struct Conn {
    stream: TcpStream,
    /// The unread tail of an `id:` line split across reads.
    carry: Vec<u8>,
    subscribed: bool,
    /// The last id seen, to count clients that got everything.
    last: i64,
}

struct Worker {
    waker: Arc<Waker>,
    handoff: mpsc::Sender<TcpStream>,
    thread: JoinHandle<(Vec<Seen>, Vec<i64>, u64)>,
}

/// Whether the fleet's threads may read, and how many are parked because they may not.
#[derive(Default)]
struct Gate {
    held: Mutex<bool>,
    changed: Condvar,
    parked: AtomicUsize,
}

impl Gate {
    /// Parks the calling client thread while the gate is held (and the fleet not stopping).
    fn wait_open(&self, stop: &AtomicBool) {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if !*held {
            return;
        }
        self.parked.fetch_add(1, Ordering::AcqRel);
        while *held && !stop.load(Ordering::Acquire) {
            held = self.changed.wait(held).unwrap_or_else(|p| p.into_inner());
        }
        self.parked.fetch_sub(1, Ordering::AcqRel);
    }

    fn set(&self, value: bool) {
        *self.held.lock().unwrap_or_else(|p| p.into_inner()) = value;
        self.changed.notify_all();
    }
}

/// What the client threads share with the fleet's owner.
#[derive(Default)]
struct Shared {
    subscribed: AtomicUsize,
    /// `id:` frames read so far, over all clients.
    frames: AtomicUsize,
    stop: AtomicBool,
    gate: Gate,
}

pub struct Fleet {
    workers: Vec<Worker>,
    next: usize,
    shared: Arc<Shared>,
}

impl Fleet {
    pub fn new(threads: usize) -> Self {
        let shared = Arc::new(Shared::default());
        let workers = (0..threads)
            .map(|i| {
                let poll = Poll::new().expect("epoll");
                let waker = Arc::new(Waker::new(poll.registry(), WAKER).expect("waker"));
                let (handoff, incoming) = mpsc::channel();
                let shared = shared.clone();
                let thread = std::thread::Builder::new()
                    .name(format!("sse-client-{i}"))
                    .spawn(move || run(poll, incoming, &shared))
                    .expect("thread");
                Worker { waker, handoff, thread }
            })
            .collect();
        Self { workers, next: 0, shared }
    }

    /// Opens one stream of `path` with `token`; it counts as subscribed once the server's
    /// first frame (`retry:`) arrives.
    pub fn open(&mut self, addr: SocketAddr, path: &str, token: &str) {
        let mut socket = std::net::TcpStream::connect(addr).expect("connect");
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\r\n");
        socket.write_all(request.as_bytes()).expect("request");
        socket.set_nonblocking(true).expect("nonblocking");
        setsockopt(&socket, sockopt::ReceiveTimestampns, &true).expect("SO_TIMESTAMPNS");
        let worker = &self.workers[self.next % self.workers.len()];
        self.next += 1;
        worker.handoff.send(TcpStream::from_std(socket)).expect("client thread alive");
        worker.waker.wake().expect("wake");
    }

    /// Opens `count` streams in steps the server's accept backlog absorbs, waiting for each
    /// step to be subscribed. Blocks the calling thread.
    pub fn open_many(&mut self, count: usize, addr: SocketAddr, path: &str, token: &str) {
        for step in 0..count.div_ceil(250) {
            for _ in 0..250.min(count - step * 250) {
                self.open(addr, path, token);
            }
            let want = (step * 250 + 250).min(count);
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while self.subscribed() < want {
                assert!(std::time::Instant::now() < deadline, "only {} of {want} clients subscribed", self.subscribed());
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }

    pub fn subscribed(&self) -> usize {
        self.shared.subscribed.load(Ordering::Acquire)
    }

    /// `id:` frames read so far, over all clients.
    pub fn frames(&self) -> usize {
        self.shared.frames.load(Ordering::Acquire)
    }

    /// Parks every client thread; returns once all are parked. Blocks the calling thread.
    pub fn hold(&self) {
        self.shared.gate.set(true);
        for worker in &self.workers {
            let _ = worker.waker.wake();
        }
        while self.shared.gate.parked.load(Ordering::Acquire) < self.workers.len() {
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// Lets the client threads read again, and waits until `frames()` reaches `want`
    /// (or 30 s pass). Blocks the calling thread.
    pub fn release_until(&self, want: usize) {
        self.shared.gate.set(false);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while self.frames() < want && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// Stops every thread; returns every arrival, each client's last id and the bytes read.
    pub fn finish(self) -> (Vec<Seen>, Vec<i64>, u64) {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.gate.set(false);
        let mut seen = Vec::new();
        let mut last = Vec::new();
        let mut bytes = 0;
        for worker in self.workers {
            let _ = worker.waker.wake();
            let (s, l, b) = worker.thread.join().expect("client thread");
            seen.extend(s);
            last.extend(l);
            bytes += b;
        }
        (seen, last, bytes)
    }
}

fn run(mut poll: Poll, incoming: mpsc::Receiver<TcpStream>, shared: &Shared) -> (Vec<Seen>, Vec<i64>, u64) {
    let mut conns: Vec<Conn> = Vec::new();
    let mut bytes = 0u64;
    let mut seen = Vec::new();
    let mut events = Events::with_capacity(4096);
    let mut buf = vec![0u8; 64 * 1024];
    let mut cmsg = nix::cmsg_space!(nix::sys::time::TimeSpec);
    while !shared.stop.load(Ordering::Acquire) {
        shared.gate.wait_open(&shared.stop);
        if poll.poll(&mut events, Some(Duration::from_millis(100))).is_err() {
            continue;
        }
        for event in &events {
            if event.token() == WAKER {
                while let Ok(mut stream) = incoming.try_recv() {
                    let token = Token(conns.len());
                    poll.registry().register(&mut stream, token, Interest::READABLE).expect("register");
                    conns.push(Conn { stream, carry: Vec::new(), subscribed: false, last: 0 });
                }
                continue;
            }
            let Some(conn) = conns.get_mut(event.token().0) else { continue };
            // Edge-triggered: read until the socket is empty.
            loop {
                let fd = conn.stream.as_raw_fd();
                let (n, kernel_ns) = {
                    let mut iov = [IoSliceMut::new(&mut buf)];
                    match recvmsg::<()>(fd, &mut iov, Some(&mut cmsg), MsgFlags::empty()) {
                        Ok(msg) if msg.bytes > 0 => {
                            let stamp = msg.cmsgs().ok().and_then(|mut c| {
                                c.find_map(|m| match m {
                                    ControlMessageOwned::ScmTimestampns(ts) => Some(ts.tv_sec() * 1_000_000_000 + ts.tv_nsec()),
                                    _ => None,
                                })
                            });
                            (msg.bytes, stamp)
                        }
                        _ => break,
                    }
                };
                let read_ns = realtime_ns();
                bytes += n as u64;
                let data = &buf[..n];
                if !conn.subscribed && data.windows(6).any(|w| w == b"retry:") {
                    conn.subscribed = true;
                    shared.subscribed.fetch_add(1, Ordering::AcqRel);
                }
                conn.carry.extend_from_slice(data);
                let mut start = 0;
                while let Some(pos) = conn.carry[start..].windows(4).position(|w| w == b"id: ") {
                    let from = start + pos + 4;
                    let Some(len) = conn.carry[from..].iter().position(|b| *b == b'\n') else { break };
                    if let Some(id) = std::str::from_utf8(&conn.carry[from..from + len]).ok().and_then(|t| t.parse().ok()) {
                        let end = |at: usize| conn.carry[at..].windows(2).position(|w| w == b"\n\n").map(|p| at + p + 2);
                        let exact = end(from).and_then(end).is_none();
                        seen.push(Seen { id, kernel_ns: kernel_ns.unwrap_or(read_ns), read_ns, exact });
                        shared.frames.fetch_add(1, Ordering::AcqRel);
                        conn.last = id;
                    }
                    start = from + len;
                }
                // Keep only what may hold the start of a split `id:` line.
                let keep_from = if start > 0 { start } else { conn.carry.len().saturating_sub(32) };
                conn.carry.drain(..keep_from);
            }
        }
    }
    (seen, conns.iter().map(|c| c.last).collect(), bytes)
}
