//! Backends that fail on command, for the upstream resilience tests: refuse
//! (see `dead_addr`, or `FaultBackend::kill`), reset before answering, reset
//! mid-body, hang, answer garbage, answer slowly, close idle keep-alive
//! connections quickly, send junk on idle connections, and die under load.
//! Every socket has a read timeout; every thread ends when its connection
//! does (at the latest after `IO_TIMEOUT`).

use super::{parse_fields, Conn, IO_TIMEOUT};
use std::collections::HashMap;
use std::io::{self, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What the backend does with the next request it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Answer `200` with the body `"<name> <target>\n"` and keep the
    /// connection.
    None,
    /// Read the whole request, then reset the connection (SO_LINGER 0).
    ResetBeforeAnswer,
    /// Send a head with `Content-Length: 1000` and 10 body bytes, wait a
    /// little, then reset.
    ResetMidBody,
    /// Read the request and never answer (until the proxy closes the
    /// connection, the backend is killed, or `IO_TIMEOUT` passes).
    Hang,
    /// Answer bytes that are not HTTP, then close.
    Garbage,
    /// Answer like `None`, after this long.
    Delay(Duration),
    /// Answer like `None` the first request on a connection; reset (like
    /// `ResetBeforeAnswer`) any later one: a keep-alive connection the
    /// backend drops just as it is reused.
    ResetReused,
}

/// What the backend does with a keep-alive connection between requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idle {
    /// Wait for the next request.
    Keep,
    /// Close the connection when no request came within this long (a short
    /// backend keep-alive timeout).
    Close(Duration),
    /// When no request came within this long, write `JUNK_RESPONSE` on the
    /// idle connection (once), then keep waiting.
    Junk(Duration),
}

/// The unsolicited bytes `Idle::Junk` writes: a complete response no
/// request asked for.
pub const JUNK_RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nJUNK!";

/// The bytes `Fault::Garbage` answers with.
pub const GARBAGE: &[u8] = b"SSH-2.0-OpenSSH_9.2\r\n\r\n";

/// One request as the fault backend read it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub target: String,
    pub body: Vec<u8>,
    /// Index of the backend connection it arrived on.
    pub conn: usize,
    /// Sent by the proxy's active health checker.
    pub health_check: bool,
}

#[derive(Default)]
struct Log {
    requests: Vec<Seen>,
    /// Connections the backend closed because they idled (`Idle::Close`).
    idle_closed: usize,
    /// Junk responses written (`Idle::Junk`).
    junk_written: usize,
}

struct Shared {
    name: String,
    fault: Mutex<Fault>,
    idle: Idle,
    stopped: AtomicBool,
    /// A clone of every open connection, to close them all on `kill`.
    /// Each connection thread removes its own entry before it closes, so a
    /// clone never keeps a socket the backend meant to close alive.
    conns: Mutex<HashMap<usize, TcpStream>>,
    accepted: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    log: Mutex<Log>,
    changed: Condvar,
}

impl Shared {
    fn update(&self, f: impl FnOnce(&mut Log)) {
        f(&mut self.log.lock().expect("lock"));
        self.changed.notify_all();
    }

    fn forget(&self, id: usize) {
        self.conns.lock().expect("lock").remove(&id);
    }
}

/// A backend whose behaviour the test switches at run time.
pub struct FaultBackend {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Mutex<Option<JoinHandle<()>>>,
    /// After `kill`: a bound, non-listening socket on the old port, so
    /// connects keep being refused and no other test can take the port.
    hold: Mutex<Option<socket2::Socket>>,
}

impl FaultBackend {
    /// A healthy backend named `name` (`Fault::None`, `Idle::Keep`).
    pub fn start(name: &str) -> FaultBackend {
        Self::start_with(name, Fault::None, Idle::Keep)
    }

    pub fn start_with(name: &str, fault: Fault, idle: Idle) -> FaultBackend {
        let listener = TcpListener::bind("127.0.0.1:0").expect("fault backend bind");
        let addr = listener.local_addr().expect("fault backend addr");
        let shared = Arc::new(Shared {
            name: name.to_string(),
            fault: Mutex::new(fault),
            idle,
            stopped: AtomicBool::new(false),
            conns: Mutex::new(HashMap::new()),
            accepted: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            log: Mutex::new(Log::default()),
            changed: Condvar::new(),
        });
        let s = Arc::clone(&shared);
        let acceptor = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if s.stopped.load(Ordering::SeqCst) {
                    // The wake-up connection from `kill`, or a late client:
                    // dropped unanswered; the listener closes on return.
                    return;
                }
                let Ok(stream) = stream else { continue };
                let id = s.accepted.fetch_add(1, Ordering::SeqCst);
                if let Ok(clone) = stream.try_clone() {
                    s.conns.lock().expect("lock").insert(id, clone);
                }
                let s = Arc::clone(&s);
                std::thread::spawn(move || {
                    serve(stream, id, &s);
                    s.forget(id);
                });
            }
        });
        FaultBackend { addr, shared, acceptor: Mutex::new(Some(acceptor)), hold: Mutex::new(None) }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Changes what the backend does with the requests it reads from now on.
    pub fn set(&self, fault: Fault) {
        *self.shared.fault.lock().expect("lock") = fault;
    }

    /// Stops accepting (the port refuses connections from now on) and
    /// closes every open connection.
    pub fn kill(&self) {
        let s = &self.shared;
        if s.stopped.swap(true, Ordering::SeqCst) {
            return;
        }
        // Wake the acceptor so it sees `stopped`, returns and closes the
        // listener; then nothing more is accepted.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(h) = self.acceptor.lock().expect("lock").take() {
            let _ = h.join();
        }
        *self.hold.lock().expect("lock") = hold_port(self.addr);
        let conns: Vec<TcpStream> = s.conns.lock().expect("lock").drain().map(|(_, c)| c).collect();
        for c in conns {
            let _ = c.shutdown(Shutdown::Both);
        }
    }

    /// Every request read so far, health checks included.
    pub fn all_seen(&self) -> Vec<Seen> {
        self.shared.log.lock().expect("lock").requests.clone()
    }

    /// The requests read so far, without the active health checks.
    pub fn requests(&self) -> Vec<Seen> {
        self.all_seen().into_iter().filter(|r| !r.health_check).collect()
    }

    /// Request targets (without health checks), in arrival order.
    pub fn targets(&self) -> Vec<String> {
        self.requests().into_iter().map(|r| r.target).collect()
    }

    pub fn request_count(&self) -> usize {
        self.requests().len()
    }

    pub fn health_checks(&self) -> usize {
        self.all_seen().iter().filter(|r| r.health_check).count()
    }

    pub fn connections_accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    pub fn idle_closed(&self) -> usize {
        self.shared.log.lock().expect("lock").idle_closed
    }

    /// Most requests the backend was working on at the same time.
    pub fn max_concurrent(&self) -> usize {
        self.shared.max_in_flight.load(Ordering::SeqCst)
    }

    /// Waits up to `IO_TIMEOUT` until `cond(all requests incl. health
    /// checks, idle closes, junk writes)` holds; returns whether it did.
    pub fn wait_until(&self, cond: impl Fn(&[Seen], usize, usize) -> bool) -> bool {
        let deadline = Instant::now() + IO_TIMEOUT;
        let mut log = self.shared.log.lock().expect("lock");
        loop {
            if cond(&log.requests, log.idle_closed, log.junk_written) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            log = self.shared.changed.wait_timeout(log, left).expect("lock").0;
        }
    }
}

impl Drop for FaultBackend {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Binds a non-listening socket to `addr` (best effort: `None` if the port
/// cannot be taken again).
fn hold_port(addr: SocketAddr) -> Option<socket2::Socket> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).ok()?;
    socket.set_reuse_address(true).ok()?;
    socket.bind(&addr.into()).ok()?;
    Some(socket)
}

enum Readable {
    Data,
    Closed,
    Timeout,
}

/// Waits up to `wait` for the next bytes on an idle connection, without
/// consuming them. (The proxy never pipelines requests to a backend, so
/// nothing is left in the `Conn` buffer between requests.)
fn wait_readable(stream: &TcpStream, wait: Duration) -> Readable {
    let _ = stream.set_read_timeout(Some(wait));
    let r = stream.peek(&mut [0u8; 1]);
    let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
    match r {
        Ok(0) => Readable::Closed,
        Ok(_) => Readable::Data,
        Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => Readable::Timeout,
        Err(_) => Readable::Closed,
    }
}

/// Reads one request (head and Content-Length body); `None` on EOF, error
/// or timeout.
fn read_request(conn: &mut Conn, id: usize) -> Option<Seen> {
    let head = conn.read_until(b"\r\n\r\n", 1 << 20).ok()??;
    let raw_head = String::from_utf8_lossy(&head).to_string();
    let fields = parse_fields(&raw_head);
    let value = |name: &str| fields.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone());
    let length: usize = value("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    let body = conn.read_exact_vec(length).ok()?;
    let target = raw_head.split("\r\n").next().unwrap_or("").split(' ').nth(1).unwrap_or("").to_string();
    let health_check = value("user-agent").is_some_and(|v| v == "ringway-health-check");
    Some(Seen { target, body, conn: id, health_check })
}

fn serve(stream: TcpStream, id: usize, s: &Shared) {
    let mut conn = Conn::new(stream);
    for nth in 0..100_000 {
        // Between requests: the idle behaviour.
        match s.idle {
            Idle::Keep => {}
            Idle::Close(after) => match wait_readable(&conn.stream, after) {
                Readable::Closed => return,
                Readable::Data => {}
                Readable::Timeout => {
                    // Nothing arrived in time: close the idle connection.
                    s.forget(id);
                    let _ = conn.stream.shutdown(Shutdown::Both);
                    s.update(|l| l.idle_closed += 1);
                    return;
                }
            },
            Idle::Junk(after) => match wait_readable(&conn.stream, after) {
                Readable::Closed => return,
                Readable::Data => {}
                Readable::Timeout => {
                    if conn.stream.write_all(JUNK_RESPONSE).is_err() {
                        return;
                    }
                    s.update(|l| l.junk_written += 1);
                }
            },
        }
        let Some(seen) = read_request(&mut conn, id) else { return };
        let target = seen.target.clone();
        let fault = *s.fault.lock().expect("lock");
        let now = s.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        s.max_in_flight.fetch_max(now, Ordering::SeqCst);
        s.update(|l| l.requests.push(seen));
        let fault = match fault {
            Fault::ResetReused if nth == 0 => Fault::None,
            Fault::ResetReused => Fault::ResetBeforeAnswer,
            f => f,
        };
        if !answer(&mut conn, id, s, fault, &target) {
            return;
        }
    }
}

/// Carries out `fault` for one request and takes it off `in_flight`;
/// whether the connection stays open. A response comes off `in_flight`
/// before its bytes are written: once they are out, the proxy may send the
/// next request at once, and another connection's thread could read it
/// before this one ran again, counting two in flight where the proxy never
/// had two.
fn answer(conn: &mut Conn, id: usize, s: &Shared, fault: Fault, target: &str) -> bool {
    let answered = || s.in_flight.fetch_sub(1, Ordering::SeqCst);
    let ok = |conn: &mut Conn| -> io::Result<()> {
        let body = format!("{} {target}\n", s.name);
        let resp = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len());
        answered();
        conn.stream.write_all(resp.as_bytes())
    };
    match fault {
        Fault::None => ok(conn).is_ok(),
        Fault::Delay(d) => {
            std::thread::sleep(d);
            ok(conn).is_ok()
        }
        Fault::ResetBeforeAnswer | Fault::ResetReused => {
            // The last handle closes with SO_LINGER 0 when `serve` returns:
            // an RST, no FIN.
            answered();
            s.forget(id);
            let _ = socket2::SockRef::from(&conn.stream).set_linger(Some(Duration::ZERO));
            false
        }
        Fault::ResetMidBody => {
            answered();
            let _ = conn.stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789");
            std::thread::sleep(Duration::from_millis(50));
            s.forget(id);
            let _ = socket2::SockRef::from(&conn.stream).set_linger(Some(Duration::ZERO));
            false
        }
        Fault::Hang => {
            // Wait, answering nothing, until the peer closes (or the
            // backend is killed, or the read timeout passes).
            let _ = conn.read_to_close();
            answered();
            false
        }
        Fault::Garbage => {
            answered();
            let _ = conn.stream.write_all(GARBAGE);
            let _ = conn.stream.shutdown(Shutdown::Write);
            let _ = conn.read_to_close();
            false
        }
    }
}
