//! Raw TCP helpers for the layer-4 tests: a backend that says who it is
//! and echoes, clients that send a PROXY protocol header first, and
//! sockets bound to other loopback addresses (127.0.0.X) so that one test
//! can play several client IPs.

use super::ops::admin_get;
use super::{runtime_config, Proxy, IO_TIMEOUT};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What the backend's threads share with the test.
#[derive(Default)]
struct Counts {
    accepted: AtomicUsize,
    /// Connections on which the backend read EOF from the proxy.
    eofs: AtomicUsize,
    stopped: AtomicBool,
}

/// A TCP backend: on each connection it writes `ID\n`, then echoes every
/// byte it reads; at EOF it writes `ID bye N\n` (N: bytes it read) and
/// closes. So a client learns who answered from the first line, and sees
/// that its half-close arrived from the last.
pub struct TcpBackend {
    addr: SocketAddr,
    counts: Arc<Counts>,
    acceptor: Mutex<Option<JoinHandle<()>>>,
    /// After `stop`: the port bound but not listening (refused, and kept).
    hold: Mutex<Option<socket2::Socket>>,
}

impl TcpBackend {
    pub fn start(id: &str) -> TcpBackend {
        let listener = TcpListener::bind("127.0.0.1:0").expect("tcp backend bind");
        let addr = listener.local_addr().expect("tcp backend addr");
        let counts = Arc::new(Counts::default());
        let (c, name) = (Arc::clone(&counts), id.to_string());
        let acceptor = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if c.stopped.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                c.accepted.fetch_add(1, Ordering::SeqCst);
                let (c, name) = (Arc::clone(&c), name.clone());
                std::thread::spawn(move || echo(stream, &name, &c));
            }
        });
        TcpBackend { addr, counts, acceptor: Mutex::new(Some(acceptor)), hold: Mutex::new(None) }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn accepted(&self) -> usize {
        self.counts.accepted.load(Ordering::SeqCst)
    }

    pub fn eofs(&self) -> usize {
        self.counts.eofs.load(Ordering::SeqCst)
    }

    /// Waits (bounded) until the backend has read EOF on `n` connections.
    pub fn wait_eofs(&self, n: usize, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        while self.eofs() < n {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    }

    /// Stops listening: connects are refused from now on (the port stays
    /// bound, so no other test takes it). Open connections go on.
    pub fn stop(&self) {
        if self.counts.stopped.swap(true, Ordering::SeqCst) {
            return;
        }
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(h) = self.acceptor.lock().expect("lock").take() {
            let _ = h.join();
        }
        *self.hold.lock().expect("lock") = hold_port(self.addr);
    }
}

impl Drop for TcpBackend {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A bound, non-listening socket on `addr`: connects to it are refused and
/// no other test is given the port. Best effort: `None` if the bind fails
/// (the port then refuses connects all the same).
pub fn hold_port(addr: SocketAddr) -> Option<socket2::Socket> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).ok()?;
    socket.set_reuse_address(true).ok()?;
    socket.bind(&addr.into()).ok()?;
    Some(socket)
}

fn echo(mut s: TcpStream, id: &str, c: &Counts) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
    let _ = s.set_write_timeout(Some(IO_TIMEOUT));
    if s.write_all(format!("{id}\n").as_bytes()).is_err() {
        return;
    }
    let mut buf = vec![0u8; 64 * 1024];
    let mut n = 0u64;
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => {
                n += k as u64;
                if s.write_all(&buf[..k]).is_err() {
                    return;
                }
            }
            Err(_) => return,
        }
    }
    c.eofs.fetch_add(1, Ordering::SeqCst);
    let _ = s.write_all(format!("{id} bye {n}\n").as_bytes());
    let _ = s.shutdown(Shutdown::Write);
}

/// A client connection to a TCP listener, with timeouts, from 127.0.0.1
/// or (`from`) another loopback address.
pub fn connect_from(from: Option<[u8; 4]>, to: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    if let Some(ip) = from {
        socket.bind(&SocketAddr::from((ip, 0)).into()).expect("bind a loopback client address");
    }
    socket.connect_timeout(&to.into(), IO_TIMEOUT).expect("connect");
    let s: TcpStream = socket.into();
    s.set_read_timeout(Some(IO_TIMEOUT)).expect("read timeout");
    s.set_write_timeout(Some(IO_TIMEOUT)).expect("write timeout");
    let _ = s.set_nodelay(true);
    s
}

/// Reads one `\n`-terminated line, byte by byte (nothing read past it).
pub fn read_line(s: &mut TcpStream) -> io::Result<String> {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    loop {
        if s.read(&mut b)? == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, format!("EOF after {line:?}")));
        }
        if b[0] == b'\n' {
            return Ok(String::from_utf8_lossy(&line).to_string());
        }
        line.push(b[0]);
    }
}

/// Everything until EOF.
pub fn read_all(s: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    Ok(out)
}

/// One short connection through a TCP listener at `to` (from `from`):
/// reads the greeting, sends `ping`, half-closes, and checks the echo, the
/// backend's bye and the close. Returns the backend's id.
pub fn one_exchange(from: Option<[u8; 4]>, to: SocketAddr) -> String {
    let mut s = connect_from(from, to);
    let id = read_line(&mut s).expect("the backend's greeting");
    s.write_all(b"ping").expect("write");
    s.shutdown(Shutdown::Write).expect("half-close");
    let rest = read_all(&mut s).expect("echo and bye");
    assert_eq!(String::from_utf8_lossy(&rest), format!("ping{id} bye 4\n"), "echo, then the bye at EOF");
    id
}

/// A PROXY protocol v1 header for TCP over IPv4.
pub fn v1(src: &str, dst: &str, sport: u16, dport: u16) -> Vec<u8> {
    format!("PROXY TCP4 {src} {dst} {sport} {dport}\r\n").into_bytes()
}

/// The 12-byte signature every v2 header starts with.
pub const V2_SIG: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// A PROXY protocol v2 PROXY header for TCP over IPv4.
pub fn v2(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
    let mut h = V2_SIG.to_vec();
    h.extend_from_slice(&[0x21, 0x11, 0, 12]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    h.extend_from_slice(&sport.to_be_bytes());
    h.extend_from_slice(&dport.to_be_bytes());
    h
}

/// A PROXY protocol v2 LOCAL header (a balancer's own connection).
pub fn v2_local() -> Vec<u8> {
    let mut h = V2_SIG.to_vec();
    h.extend_from_slice(&[0x20, 0x00, 0, 0]);
    h
}

/// The series' value in a `/metrics` text (0 when absent).
pub fn series(text: &str, name: &str) -> f64 {
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok()).unwrap_or(0.0)
}

pub fn tcp_connections(listener: &str, upstream: &str, end: &str) -> String {
    format!("ringway_tcp_connections_total{{listener=\"{listener}\",upstream=\"{upstream}\",end=\"{end}\"}}")
}

pub fn proxy_refused(listener: &str, reason: &str) -> String {
    format!("ringway_proxy_protocol_refused_total{{listener=\"{listener}\",reason=\"{reason}\"}}")
}

pub fn upstream_outcome(upstream: &str, server: SocketAddr, outcome: &str) -> String {
    format!("ringway_upstream_requests_total{{upstream=\"{upstream}\",server=\"{server}\",outcome=\"{outcome}\"}}")
}

/// The proxy's `/metrics` text.
pub fn metrics(p: &Proxy) -> String {
    admin_get(p, "/metrics").text()
}

/// Waits (up to 5 s) until `name` reads `want` on `/metrics` (counters
/// are bumped when a connection ends, just after its client saw the end).
pub fn wait_series(p: &Proxy, name: &str, want: f64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = metrics(p);
        if series(&text, name) == want {
            return;
        }
        if Instant::now() >= deadline {
            let ours: Vec<&str> = text
                .lines()
                .filter(|l| {
                    l.starts_with("ringway_tcp") || l.starts_with("ringway_proxy") || l.starts_with("ringway_up")
                })
                .collect();
            panic!("{name} is {}, expected {want}; series:\n{}", series(&text, name), ours.join("\n"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An admin listener, upstream `x` over `servers` (`upstream_extra` keys)
/// and HTTP listener `public` sending `/` to `x`, reading PROXY headers
/// from `trusted`; `listener_extra` keys, then `more` tables.
pub fn pp_config(
    servers: &[SocketAddr],
    upstream_extra: &str,
    trusted: &str,
    timeouts: &[(&str, &str)],
    more: &str,
) -> String {
    let list = servers.iter().map(|s| format!("\"{s}\"")).collect::<Vec<_>>().join(", ");
    format!(
        r#"{header}
[admin]
bind = "127.0.0.1:0"

[upstreams.x]
servers = [{list}]
{upstream_extra}

[[listeners]]
name = "public"
bind = "127.0.0.1:0"
proxy_protocol = true
trusted = [{trusted}]
routes = [ {{ prefix = "/", upstream = "x" }} ]
{more}"#,
        header = runtime_config(2, timeouts, &[]),
    )
}

/// `trusted` for a client on loopback.
pub const LOOPBACK: &str = "\"127.0.0.1/32\"";
