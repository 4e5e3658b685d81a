//! Shared helpers for the integration tests: a recording backend, a proxy
//! process started from a config, demo backend processes and raw HTTP
//! clients. Everything binds 127.0.0.1 on ephemeral ports, every read has a
//! timeout, every child process is killed on drop.

pub mod dns;
pub mod faults;
pub mod ops;
pub mod tcp;
pub mod tls;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Read/write timeout for every socket in the tests.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a process may take to print its readiness line.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes of the repeating body pattern used by the large-body tests.
pub const PATTERN_LEN: usize = 64 * 1024;

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_ringway")
}

/// A 64 KiB block of non-trivial bytes; large bodies repeat it.
pub fn pattern() -> Vec<u8> {
    (0..PATTERN_LEN).map(|i| (i % 251) as u8 ^ (i / 251) as u8).collect()
}

/// A fresh path under the temp dir, unique per process and call.
pub fn unique_temp_path(stem: &str, ext: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    std::env::temp_dir().join(format!("ringway-test-{stem}-{}-{n}-{nanos}{ext}", std::process::id()))
}

/// An address that refuses connections: a socket bound but never listening,
/// so the port stays ours (no other test can take it) and connects get RST.
pub struct DeadAddr {
    _socket: socket2::Socket,
    pub addr: SocketAddr,
}

pub fn dead_addr() -> DeadAddr {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into()).expect("bind");
    let addr = socket.local_addr().expect("addr").as_socket().expect("inet");
    DeadAddr { _socket: socket, addr }
}

// ---------------------------------------------------------------------------
// Buffered connection with raw access.
// ---------------------------------------------------------------------------

/// A TCP stream with a read buffer that hands out raw bytes.
pub struct Conn {
    pub stream: TcpStream,
    buf: Vec<u8>,
    pos: usize,
}

impl Conn {
    pub fn new(stream: TcpStream) -> Conn {
        stream.set_read_timeout(Some(IO_TIMEOUT)).expect("read timeout");
        stream.set_write_timeout(Some(IO_TIMEOUT)).expect("write timeout");
        let _ = stream.set_nodelay(true);
        Conn { stream, buf: Vec::new(), pos: 0 }
    }

    pub fn connect(addr: SocketAddr) -> Conn {
        Conn::new(TcpStream::connect(addr).expect("connect"))
    }

    fn buffered(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    /// Reads more bytes into the buffer; Ok(0) on EOF.
    fn fill(&mut self) -> io::Result<usize> {
        if self.pos > 0 && self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
        let mut tmp = [0u8; 64 * 1024];
        let n = self.stream.read(&mut tmp)?;
        self.buf.extend_from_slice(&tmp[..n]);
        Ok(n)
    }

    fn take(&mut self, n: usize) -> Vec<u8> {
        let v = self.buf[self.pos..self.pos + n].to_vec();
        self.pos += n;
        v
    }

    /// Everything up to and including `delim`. `Ok(None)` on a clean EOF
    /// before any byte; an error on EOF in the middle.
    pub fn read_until(&mut self, delim: &[u8], max: usize) -> io::Result<Option<Vec<u8>>> {
        let mut searched: usize = 0;
        loop {
            let data = self.buffered();
            if data.len() >= delim.len() {
                let from = searched.saturating_sub(delim.len());
                if let Some(i) = data[from..].windows(delim.len()).position(|w| w == delim) {
                    return Ok(Some(self.take(from + i + delim.len())));
                }
                searched = data.len();
            }
            if data.len() > max {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "delimiter not found"));
            }
            if self.fill()? == 0 {
                return if self.buffered().is_empty() {
                    Ok(None)
                } else {
                    Err(io::Error::new(io::ErrorKind::UnexpectedEof, "eof inside a message"))
                };
            }
        }
    }

    pub fn read_exact_vec(&mut self, n: usize) -> io::Result<Vec<u8>> {
        while self.buffered().len() < n {
            if self.fill()? == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "eof inside a body"));
            }
        }
        Ok(self.take(n))
    }

    /// Calls `sink` with up to `n` bytes at a time until `n` are consumed,
    /// without keeping them.
    pub fn stream_exact(&mut self, mut n: u64, mut sink: impl FnMut(&[u8])) -> io::Result<()> {
        while n > 0 {
            if self.buffered().is_empty() && self.fill()? == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "eof inside a body"));
            }
            let k = (self.buffered().len() as u64).min(n) as usize;
            sink(&self.buf[self.pos..self.pos + k]);
            self.pos += k;
            n -= k as u64;
        }
        Ok(())
    }

    /// Everything until the peer closes (or a read error/timeout).
    pub fn read_to_close(&mut self) -> io::Result<Vec<u8>> {
        let mut out = self.buffered().to_vec();
        self.pos = self.buf.len();
        let mut tmp = [0u8; 64 * 1024];
        loop {
            let n = self.stream.read(&mut tmp)?;
            if n == 0 {
                return Ok(out);
            }
            out.extend_from_slice(&tmp[..n]);
        }
    }

    /// Whether the peer has closed: true on EOF/reset within `wait`.
    pub fn closed_within(&mut self, wait: Duration) -> bool {
        if !self.buffered().is_empty() {
            return false;
        }
        self.stream.set_read_timeout(Some(wait)).expect("read timeout");
        let mut tmp = [0u8; 1024];
        let r = self.stream.read(&mut tmp);
        self.stream.set_read_timeout(Some(IO_TIMEOUT)).expect("read timeout");
        match r {
            Ok(0) => true,
            Ok(n) => {
                self.buf.extend_from_slice(&tmp[..n]);
                false
            }
            Err(e) => !matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut),
        }
    }

    pub fn write(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    /// Takes the bytes read from the socket but not consumed yet.
    pub fn take_buffered(&mut self) -> Vec<u8> {
        let v = self.buffered().to_vec();
        self.pos = self.buf.len();
        v
    }

    /// Reads a chunked body. Returns (raw bytes, decoded bytes).
    pub fn read_chunked(&mut self) -> io::Result<(Vec<u8>, Vec<u8>)> {
        let mut raw = Vec::new();
        let mut decoded = Vec::new();
        for _ in 0..10_000_000 {
            let line = self.read_until(b"\r\n", 64 * 1024)?.ok_or_else(eof)?;
            raw.extend_from_slice(&line);
            let text = String::from_utf8_lossy(&line[..line.len() - 2]).to_string();
            let size_text = text.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_text, 16)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, format!("bad chunk size {text:?}")))?;
            if size == 0 {
                // Trailer fields until the empty line.
                for _ in 0..1000 {
                    let t = self.read_until(b"\r\n", 64 * 1024)?.ok_or_else(eof)?;
                    raw.extend_from_slice(&t);
                    if t == b"\r\n" {
                        return Ok((raw, decoded));
                    }
                }
                return Err(io::Error::new(io::ErrorKind::InvalidData, "endless trailer"));
            }
            let data = self.read_exact_vec(size + 2)?;
            if &data[size..] != b"\r\n" {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "chunk not followed by CRLF"));
            }
            raw.extend_from_slice(&data);
            decoded.extend_from_slice(&data[..size]);
        }
        Err(io::Error::new(io::ErrorKind::InvalidData, "too many chunks"))
    }
}

fn eof() -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, "eof")
}

// ---------------------------------------------------------------------------
// Heads.
// ---------------------------------------------------------------------------

/// Header fields of a raw head (after the start line), in order.
pub fn parse_fields(raw_head: &str) -> Vec<(String, String)> {
    raw_head
        .split("\r\n")
        .skip(1)
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':').map(|(n, v)| (n.to_string(), v.trim().to_string())))
        .collect()
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

fn all_fields<'a>(fields: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    fields.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str()).collect()
}

// ---------------------------------------------------------------------------
// Recording backend.
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct Recorded {
    pub raw_head: String,
    pub raw_body: Vec<u8>,
    pub decoded_body: Vec<u8>,
    /// Decoded body length (also set when the body is not kept).
    pub body_len: u64,
    /// In counting mode: whether the decoded body repeated `pattern()`.
    pub body_matches_pattern: bool,
    pub conn_id: usize,
    /// Whether the whole message (head and body, as framed) arrived.
    pub complete: bool,
}

impl Recorded {
    pub fn request_line(&self) -> &str {
        self.raw_head.split("\r\n").next().unwrap_or("")
    }

    pub fn method(&self) -> &str {
        self.request_line().split(' ').next().unwrap_or("")
    }

    /// The request target as received (path and query).
    pub fn target(&self) -> &str {
        self.request_line().split(' ').nth(1).unwrap_or("")
    }

    pub fn fields(&self) -> Vec<(String, String)> {
        parse_fields(&self.raw_head)
    }

    pub fn header(&self, name: &str) -> Option<String> {
        field(&self.fields(), name).map(str::to_string)
    }

    pub fn headers_named(&self, name: &str) -> Vec<String> {
        all_fields(&self.fields(), name).into_iter().map(str::to_string).collect()
    }
}

/// Writes a whole response on the backend's socket.
pub type StreamFn = dyn FnOnce(&mut TcpStream) -> io::Result<()> + Send;

/// What the backend writes for one request.
pub enum Reply {
    /// Write these bytes and keep the connection for the next request.
    Bytes(Vec<u8>),
    /// Write these bytes, then close.
    Close(Vec<u8>),
    /// Write with the function (e.g. a large streamed body), then close.
    Stream(Box<StreamFn>),
    /// Run the function, then keep serving requests on the connection
    /// (e.g. write a response and arrange for stray bytes later).
    StreamKeep(Box<StreamFn>),
    /// Take the connection over: the function gets the bytes that arrived
    /// after the request (already read by the backend) and the socket; the
    /// connection is closed when it returns (e.g. a 101 and a tunnel).
    Takeover(Box<TakeoverFn>),
}

/// Takes a connection over after a request, see `Reply::Takeover`.
pub type TakeoverFn = dyn FnOnce(Vec<u8>, &mut TcpStream) -> io::Result<()> + Send;

/// A complete `200 OK` with a Content-Length body.
pub fn ok(body: &str) -> Reply {
    Reply::Bytes(format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len()).into_bytes())
}

type Handler = dyn Fn(&Recorded) -> Reply + Send + Sync;

#[derive(Clone, Copy, PartialEq, Eq)]
enum BodyMode {
    Keep,
    CountPattern,
}

/// What the backend saw, shared with its connection threads; every change
/// is signalled so tests can wait for a state without sleeping.
#[derive(Default)]
struct BackendState {
    inner: Mutex<Seen>,
    changed: Condvar,
}

#[derive(Default)]
struct Seen {
    requests: Vec<Recorded>,
    closed: usize,
}

impl BackendState {
    fn push(&self, rec: Recorded) {
        self.inner.lock().expect("lock").requests.push(rec);
        self.changed.notify_all();
    }

    fn conn_closed(&self) {
        self.inner.lock().expect("lock").closed += 1;
        self.changed.notify_all();
    }
}

pub struct RecordingBackend {
    addr: SocketAddr,
    state: Arc<BackendState>,
    accepted: Arc<AtomicUsize>,
}

impl RecordingBackend {
    /// Starts a backend that records every request (raw head and body) and
    /// answers with `handler`.
    pub fn start(handler: impl Fn(&Recorded) -> Reply + Send + Sync + 'static) -> RecordingBackend {
        Self::start_mode(BodyMode::Keep, Arc::new(handler))
    }

    /// Like `start`, but request bodies are only counted and compared with
    /// `pattern()`, not kept (for very large uploads).
    pub fn start_counting(handler: impl Fn(&Recorded) -> Reply + Send + Sync + 'static) -> RecordingBackend {
        Self::start_mode(BodyMode::CountPattern, Arc::new(handler))
    }

    /// A backend that answers `<id> <target>\n` to every request.
    pub fn echo_id(id: &str) -> RecordingBackend {
        let id = id.to_string();
        Self::start(move |r| ok(&format!("{id} {}\n", r.target())))
    }

    /// Like `start`, listening on `addr` (another loopback address such as
    /// 127.0.0.2, or a given port); `None` if it cannot be bound.
    pub fn start_on(
        addr: SocketAddr,
        handler: impl Fn(&Recorded) -> Reply + Send + Sync + 'static,
    ) -> Option<RecordingBackend> {
        Some(Self::serve(TcpListener::bind(addr).ok()?, BodyMode::Keep, Arc::new(handler)))
    }

    /// Like `echo_id`, listening on `addr` (see `start_on`).
    pub fn echo_id_on(addr: SocketAddr, id: &str) -> Option<RecordingBackend> {
        let id = id.to_string();
        Self::start_on(addr, move |r| ok(&format!("{id} {}\n", r.target())))
    }

    fn start_mode(mode: BodyMode, handler: Arc<Handler>) -> RecordingBackend {
        Self::serve(TcpListener::bind("127.0.0.1:0").expect("backend bind"), mode, handler)
    }

    fn serve(listener: TcpListener, mode: BodyMode, handler: Arc<Handler>) -> RecordingBackend {
        let addr = listener.local_addr().expect("backend addr");
        let state = Arc::new(BackendState::default());
        let accepted = Arc::new(AtomicUsize::new(0));
        {
            let state = Arc::clone(&state);
            let accepted = Arc::clone(&accepted);
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    let Ok(stream) = stream else { continue };
                    let conn_id = accepted.fetch_add(1, Ordering::SeqCst);
                    let state = Arc::clone(&state);
                    let handler = Arc::clone(&handler);
                    std::thread::spawn(move || {
                        serve_conn(stream, conn_id, mode, &state, &*handler);
                        state.conn_closed();
                    });
                }
            });
        }
        RecordingBackend { addr, state, accepted }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.inner.lock().expect("lock").requests.clone()
    }

    /// Backend connections that ended (the proxy closed them, or the
    /// backend's reply closed them).
    pub fn connections_closed(&self) -> usize {
        self.state.inner.lock().expect("lock").closed
    }

    /// Waits (up to `IO_TIMEOUT`) until `cond(requests, closed connections)`
    /// holds; returns whether it did.
    pub fn wait_until(&self, cond: impl Fn(&[Recorded], usize) -> bool) -> bool {
        let deadline = Instant::now() + IO_TIMEOUT;
        let mut seen = self.state.inner.lock().expect("lock");
        loop {
            if cond(&seen.requests, seen.closed) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            seen = self.state.changed.wait_timeout(seen, left).expect("lock").0;
        }
    }

    /// Waits until at least `n` requests were recorded; returns them all.
    pub fn wait_requests(&self, n: usize) -> Vec<Recorded> {
        assert!(self.wait_until(|r, _| r.len() >= n), "backend saw {:?}, expected {n} requests", self.requests());
        self.requests()
    }

    /// Waits until at least `n` backend connections have ended.
    pub fn wait_closed(&self, n: usize) {
        assert!(self.wait_until(|_, c| c >= n), "only {} of {n} backend connections ended", self.connections_closed());
    }

    pub fn connections_accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

fn serve_conn(stream: TcpStream, conn_id: usize, mode: BodyMode, state: &BackendState, handler: &Handler) {
    let mut conn = Conn::new(stream);
    // Idle keep-alive connections from the proxy's pool may sit for long;
    // the backend waits on them without a deadline-induced failure.
    for _ in 0..100_000 {
        let Ok(Some(head)) = conn.read_until(b"\r\n\r\n", 1 << 20) else { return };
        let raw_head = String::from_utf8_lossy(&head).to_string();
        let fields = parse_fields(&raw_head);
        let chunked = field(&fields, "transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
        let length: u64 = field(&fields, "content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
        let mut rec = Recorded {
            raw_head,
            raw_body: Vec::new(),
            decoded_body: Vec::new(),
            body_len: 0,
            body_matches_pattern: true,
            conn_id,
            complete: true,
        };
        let body_ok = match (mode, chunked) {
            (BodyMode::Keep, true) => conn.read_chunked().map(|(raw, dec)| {
                rec.raw_body = raw;
                rec.decoded_body = dec;
            }),
            (BodyMode::Keep, false) => conn.read_exact_vec(length as usize).map(|b| {
                rec.raw_body = b.clone();
                rec.decoded_body = b;
            }),
            (BodyMode::CountPattern, chunked) => count_body(&mut conn, chunked, length, &mut rec),
        };
        if mode == BodyMode::Keep {
            rec.body_len = rec.decoded_body.len() as u64;
        }
        if body_ok.is_err() {
            rec.body_matches_pattern = false;
            rec.complete = false;
            state.push(rec);
            return;
        }
        let reply = handler(&rec);
        state.push(rec);
        match reply {
            Reply::Bytes(b) => {
                if conn.stream.write_all(&b).is_err() {
                    return;
                }
            }
            Reply::Close(b) => {
                let _ = conn.stream.write_all(&b);
                let _ = conn.stream.shutdown(Shutdown::Write);
                // Let the peer read everything before the socket goes away.
                let _ = conn.read_to_close();
                return;
            }
            Reply::Stream(f) => {
                let _ = f(&mut conn.stream);
                let _ = conn.stream.shutdown(Shutdown::Write);
                let _ = conn.read_to_close();
                return;
            }
            Reply::StreamKeep(f) => {
                if f(&mut conn.stream).is_err() {
                    return;
                }
            }
            Reply::Takeover(f) => {
                let early = conn.take_buffered();
                let _ = f(early, &mut conn.stream);
                let _ = conn.stream.shutdown(Shutdown::Write);
                let _ = conn.read_to_close();
                return;
            }
        }
    }
}

fn count_body(conn: &mut Conn, chunked: bool, length: u64, rec: &mut Recorded) -> io::Result<()> {
    let pat = pattern();
    let mut offset: u64 = 0;
    let mut matches = true;
    let mut check = |data: &[u8]| {
        let mut d = data;
        while !d.is_empty() {
            let at = (offset % PATTERN_LEN as u64) as usize;
            let k = d.len().min(PATTERN_LEN - at);
            if d[..k] != pat[at..at + k] {
                matches = false;
            }
            offset += k as u64;
            d = &d[k..];
        }
    };
    if !chunked {
        conn.stream_exact(length, &mut check)?;
    } else {
        for _ in 0..100_000_000u64 {
            let line = conn.read_until(b"\r\n", 64 * 1024)?.ok_or_else(eof)?;
            let text = String::from_utf8_lossy(&line[..line.len() - 2]).to_string();
            let size = u64::from_str_radix(text.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))?;
            if size == 0 {
                loop {
                    let t = conn.read_until(b"\r\n", 64 * 1024)?.ok_or_else(eof)?;
                    if t == b"\r\n" {
                        break;
                    }
                }
                break;
            }
            conn.stream_exact(size, &mut check)?;
            if conn.read_exact_vec(2)? != b"\r\n" {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "chunk without CRLF"));
            }
        }
    }
    rec.body_len = offset;
    rec.body_matches_pattern = matches;
    Ok(())
}

// ---------------------------------------------------------------------------
// Child processes.
// ---------------------------------------------------------------------------

/// Reads a child's stdout on a thread; lines arrive on a channel.
pub fn line_reader(stdout: std::process::ChildStdout) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                // Keep draining so the child never blocks on a full pipe.
                continue;
            }
        }
    });
    rx
}

/// Collects a child's stderr on a thread.
fn collect(mut stderr: std::process::ChildStderr) -> Arc<Mutex<Vec<u8>>> {
    let out = Arc::new(Mutex::new(Vec::new()));
    let o = Arc::clone(&out);
    std::thread::spawn(move || {
        let mut tmp = [0u8; 4096];
        while let Ok(n) = stderr.read(&mut tmp) {
            if n == 0 {
                break;
            }
            o.lock().expect("lock").extend_from_slice(&tmp[..n]);
        }
    });
    out
}

/// A running `ringway --config FILE`.
pub struct Proxy {
    child: Child,
    listeners: Vec<(String, SocketAddr)>,
    config_path: PathBuf,
    stderr: Arc<Mutex<Vec<u8>>>,
    /// The rest of the child's stdout, line by line (after the listening
    /// lines `start` consumed).
    stdout: Mutex<mpsc::Receiver<String>>,
    /// The admin address, once read off stdout.
    admin: Mutex<Option<SocketAddr>>,
}

/// The `name = "..."` of every `[[listeners]]` table in a config text.
fn listener_names(toml: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut in_listener = false;
    for line in toml.lines().map(str::trim) {
        if line.starts_with('[') && !line.starts_with("[ ") && !line.contains('=') {
            in_listener = line == "[[listeners]]";
            continue;
        }
        if in_listener {
            if let Some(v) = line.strip_prefix("name").map(str::trim_start).and_then(|r| r.strip_prefix('=')) {
                names.push(v.trim().trim_matches('"').to_string());
                in_listener = false;
            }
        }
    }
    names
}

impl Proxy {
    /// Writes `toml` to a temp file, starts the proxy, and waits for one
    /// listening line per `[[listeners]]` name.
    pub fn start(toml: &str) -> Proxy {
        let config_path = unique_temp_path("proxy", ".toml");
        std::fs::write(&config_path, toml).expect("write config");
        Proxy::spawn(config_path, &listener_names(toml), &[], &[])
    }

    /// Like `start`, with the config written as `ringway.toml` in `dir`
    /// (relative paths in it resolve there).
    pub fn start_in(dir: &std::path::Path, toml: &str) -> Proxy {
        let config_path = dir.join("ringway.toml");
        std::fs::write(&config_path, toml).expect("write config");
        Proxy::spawn(config_path, &listener_names(toml), &[], &[])
    }

    /// Like `start`, with the environment variables `unset` removed from
    /// the proxy's environment (e.g. `RUST_LOG`, which overrides the
    /// config's log level).
    pub fn start_without_env(toml: &str, unset: &[&str]) -> Proxy {
        let config_path = unique_temp_path("proxy", ".toml");
        std::fs::write(&config_path, toml).expect("write config");
        Proxy::spawn(config_path, &listener_names(toml), &[], unset)
    }

    /// A second instance on this one's config file (as it is now), started
    /// with `--takeover`: it takes this one's listening sockets over.
    pub fn take_over(&self) -> Proxy {
        let toml = std::fs::read_to_string(&self.config_path).expect("read config");
        Proxy::spawn(self.config_path.clone(), &listener_names(&toml), &["--takeover"], &[])
    }

    /// Starts `ringway --config config_path ARGS` (without the environment
    /// variables `unset`) and waits for one listening line per name in
    /// `names`.
    fn spawn(config_path: PathBuf, names: &[String], args: &[&str], unset: &[&str]) -> Proxy {
        assert!(!names.is_empty(), "config has no [[listeners]] name");
        let mut command = Command::new(bin());
        for var in unset {
            command.env_remove(var);
        }
        let mut child = command
            .arg("--config")
            .arg(&config_path)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ringway");
        let lines = line_reader(child.stdout.take().expect("stdout"));
        let stderr = collect(child.stderr.take().expect("stderr"));
        let mut proxy = Proxy {
            child,
            listeners: Vec::new(),
            config_path,
            stderr,
            stdout: Mutex::new(lines),
            admin: Mutex::new(None),
        };
        let deadline = Instant::now() + START_TIMEOUT;
        while !names.iter().all(|n| proxy.listeners.iter().any(|(l, _)| l == n)) {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = proxy.stdout.lock().expect("lock").recv_timeout(left);
            match line {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix("ringway listening name=") {
                        let (name, addr) = rest.split_once(" addr=").expect("listening line format");
                        proxy.listeners.push((name.to_string(), addr.trim().parse().expect("listening addr")));
                    }
                }
                Err(_) => panic!(
                    "proxy did not report listeners {names:?} (got {:?}); stderr:\n{}",
                    proxy.listeners,
                    proxy.stderr()
                ),
            }
        }
        proxy
    }

    pub fn addr(&self, name: &str) -> SocketAddr {
        self.listeners.iter().find(|(n, _)| n == name).map(|(_, a)| *a).unwrap_or_else(|| panic!("no listener {name}"))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().expect("lock")).to_string()
    }

    /// The admin listener's address (`[admin] bind`), read off the
    /// `ringway admin addr=` line (waits for it up to `START_TIMEOUT`).
    pub fn admin_addr(&self) -> SocketAddr {
        let mut admin = self.admin.lock().expect("lock");
        if let Some(a) = *admin {
            return a;
        }
        let lines = self.stdout.lock().expect("lock");
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(a) = line.strip_prefix("ringway admin addr=") {
                        let a = a.trim().parse().expect("admin addr");
                        *admin = Some(a);
                        return a;
                    }
                }
                Err(_) => panic!("proxy did not report an admin address; stderr:\n{}", self.stderr()),
            }
        }
    }

    /// The config file the proxy runs with (re-read on reload).
    pub fn config_path(&self) -> &std::path::Path {
        &self.config_path
    }

    /// Replaces the config file atomically (write aside, then rename), so
    /// a reload never reads half a file.
    pub fn rewrite_config(&self, toml: &str) {
        let mut tmp = self.config_path.clone().into_os_string();
        tmp.push(".new");
        std::fs::write(&tmp, toml).expect("write new config");
        std::fs::rename(&tmp, &self.config_path).expect("rename new config");
    }

    /// Waits (bounded) until the process catches SIGHUP, SIGINT, SIGUSR1
    /// and SIGTERM: it reports its addresses before installing its signal
    /// handlers, and an uncaught SIGHUP would kill it.
    pub fn wait_signal_handlers(&self) {
        let want: u64 = [libc::SIGHUP, libc::SIGINT, libc::SIGUSR1, libc::SIGTERM]
            .iter()
            .fold(0, |m, s| m | 1u64 << (*s as u64 - 1));
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
            let caught = status
                .lines()
                .find_map(|l| l.strip_prefix("SigCgt:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
                .unwrap_or(0);
            if caught & want == want {
                return;
            }
            assert!(Instant::now() < deadline, "the proxy never installed its signal handlers");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Sends `signal` to the proxy (once it handles signals).
    pub fn signal(&self, signal: libc::c_int) {
        self.wait_signal_handlers();
        let pid = libc::pid_t::try_from(self.pid()).expect("pid");
        // SAFETY: kill(2) with our own child's pid and a valid signal number.
        let r = unsafe { libc::kill(pid, signal) };
        assert_eq!(r, 0, "kill({pid}, {signal}) failed: {}", io::Error::last_os_error());
    }

    /// The exit status if the process has exited, without waiting.
    pub fn try_exit(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_exit() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits up to `timeout` until stderr contains `needle`; returns whether
    /// it did.
    pub fn wait_stderr(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.stderr().contains(needle) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Resident memory of the proxy process, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.config_path);
        if std::thread::panicking() {
            // The test failed: what the proxy said may tell why (given a
            // moment to be collected after the kill).
            std::thread::sleep(Duration::from_millis(100));
            eprintln!("stderr of the proxy (pid {}):\n{}", self.child.id(), self.stderr());
        }
    }
}

/// A running `ringway backend --port 0`.
pub struct DemoBackend {
    child: Child,
    addr: SocketAddr,
}

impl DemoBackend {
    pub fn start() -> DemoBackend {
        let mut child = Command::new(bin())
            .args(["backend", "--port", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn ringway backend");
        let lines = line_reader(child.stdout.take().expect("stdout"));
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match lines.recv_timeout(left) {
                Ok(l) => l,
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("demo backend did not report its address");
                }
            };
            if let Some(a) = line.strip_prefix("ringway backend listening on ") {
                let addr = a.trim().parse().expect("backend addr");
                return DemoBackend { child, addr };
            }
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for DemoBackend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------
// Clients.
// ---------------------------------------------------------------------------

/// Writes `bytes` on a new connection, optionally half-closes, and reads
/// until the proxy closes (or the read timeout passes).
pub fn send_raw_opts(addr: SocketAddr, bytes: &[u8], shutdown_write: bool) -> Vec<u8> {
    let mut c = Conn::connect(addr);
    c.write(bytes);
    if shutdown_write {
        let _ = c.stream.shutdown(Shutdown::Write);
    }
    let mut out = Vec::new();
    let mut tmp = [0u8; 64 * 1024];
    let deadline = Instant::now() + IO_TIMEOUT;
    while Instant::now() < deadline {
        match c.stream.read(&mut tmp) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&tmp[..n]),
        }
    }
    out
}

pub fn send_raw(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    send_raw_opts(addr, bytes, false)
}

#[derive(Debug, Clone)]
pub struct Response {
    pub raw_head: String,
    pub status: u16,
    pub fields: Vec<(String, String)>,
    /// Body bytes as on the wire (chunk framing included).
    pub raw_body: Vec<u8>,
    /// Decoded body.
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        field(&self.fields, name)
    }

    pub fn headers_named(&self, name: &str) -> Vec<&str> {
        all_fields(&self.fields, name)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).to_string()
    }

    pub fn is_chunked(&self) -> bool {
        self.header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    }
}

/// A keep-alive client: one connection, one response read per request.
pub struct Client {
    pub conn: Conn,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        Client { conn: Conn::connect(addr) }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.conn.write(bytes);
    }

    /// Reads exactly one final response (1xx heads are skipped);
    /// `head_request`: no body follows whatever the fields say.
    pub fn read_response(&mut self, head_request: bool) -> Response {
        for _ in 0..10 {
            let head = self
                .conn
                .read_until(b"\r\n\r\n", 1 << 20)
                .expect("read response head")
                .expect("connection closed before a response");
            let raw_head = String::from_utf8(head).expect("ascii head");
            let status: u16 = raw_head
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("bad status line in {raw_head:?}"));
            let fields = parse_fields(&raw_head);
            if (100..200).contains(&status) {
                continue;
            }
            let mut resp = Response { raw_head, status, fields, raw_body: Vec::new(), body: Vec::new() };
            if head_request || status == 204 || status == 304 {
                return resp;
            }
            if resp.is_chunked() {
                let (raw, dec) = self.conn.read_chunked().expect("chunked response body");
                resp.raw_body = raw;
                resp.body = dec;
            } else if let Some(len) = resp.header("content-length") {
                let len: usize = len.parse().expect("content-length");
                resp.body = self.conn.read_exact_vec(len).expect("response body");
                resp.raw_body = resp.body.clone();
            } else {
                resp.body = self.conn.read_to_close().expect("close-delimited body");
                resp.raw_body = resp.body.clone();
            }
            return resp;
        }
        panic!("too many informational responses");
    }

    /// Sends a request and reads its response.
    pub fn request(&mut self, bytes: &[u8]) -> Response {
        self.send(bytes);
        let head = bytes.starts_with(b"HEAD ");
        self.read_response(head)
    }

    /// `GET path` with `Host: test` and no body.
    pub fn get(&mut self, path: &str) -> Response {
        self.request(format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes())
    }
}

/// One request on a fresh connection.
pub fn request(addr: SocketAddr, bytes: &[u8]) -> Response {
    Client::connect(addr).request(bytes)
}

/// `GET path` on a fresh connection.
pub fn get(addr: SocketAddr, path: &str) -> Response {
    Client::connect(addr).get(path)
}

/// Status code of a raw response buffer.
pub fn status_of(raw: &[u8]) -> Option<u16> {
    let text = String::from_utf8_lossy(raw);
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

/// The `[runtime]`/`[timeouts]` part every test config starts with.
pub const RUNTIME: &str = r#"
[runtime]
threads = 2
log_level = "warn"

[timeouts]
client_header = "10s"
client_idle = "20s"
upstream_connect = "2s"
upstream_response = "10s"
"#;

/// A proxy with one listener `public` routing `prefix` to one server.
pub fn proxy_with_route(server: SocketAddr, prefix: &str) -> Proxy {
    Proxy::start(&format!(
        r#"{RUNTIME}
[upstreams.x]
servers = ["{server}"]

[[listeners]]
name = "public"
bind = "127.0.0.1:0"
routes = [ {{ prefix = "{prefix}", upstream = "x" }} ]
"#
    ))
}

/// A proxy with one listener `public` sending everything to `b`.
pub fn proxy_to(b: &RecordingBackend) -> Proxy {
    proxy_with_route(b.addr(), "/")
}

// ---------------------------------------------------------------------------
// Raw exchanges and custom configs (HTTP/1.1 hazard tests).
// ---------------------------------------------------------------------------

/// What a client got on one connection: every byte until the proxy closed
/// (`closed`) or `IO_TIMEOUT` passed without a close.
#[derive(Debug, Clone)]
pub struct RawReply {
    pub bytes: Vec<u8>,
    pub closed: bool,
}

impl RawReply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).to_string()
    }

    /// The responses in the bytes (Content-Length / chunked / bodyless
    /// framing), `(status, raw head)` each; stops at bytes that do not
    /// parse as a whole response.
    pub fn responses(&self) -> Vec<(u16, String)> {
        split_responses(&self.bytes).0
    }

    /// Status codes of all responses, in order.
    pub fn statuses(&self) -> Vec<u16> {
        self.responses().iter().map(|(s, _)| *s).collect()
    }

    /// Asserts: exactly one response, its status is one of `allowed`, it
    /// says `Connection: close`, nothing follows it, and the proxy closed.
    pub fn assert_one_and_closed(&self, allowed: &[u16]) {
        let (resps, rest) = split_responses(&self.bytes);
        assert_eq!(resps.len(), 1, "expected exactly one response, got {:?}", self.text());
        assert!(allowed.contains(&resps[0].0), "status {} not in {allowed:?}: {:?}", resps[0].0, self.text());
        assert!(rest.is_empty(), "bytes after the response: {:?}", String::from_utf8_lossy(rest));
        let fields = parse_fields(&resps[0].1);
        assert!(
            field(&fields, "connection").is_some_and(|v| v.eq_ignore_ascii_case("close")),
            "an error answer must say Connection: close: {:?}",
            resps[0].1
        );
        assert!(self.closed, "the proxy did not close the connection: {:?}", self.text());
    }
}

/// Splits raw bytes into complete responses; returns them and the rest.
pub fn split_responses(mut raw: &[u8]) -> (Vec<(u16, String)>, &[u8]) {
    let mut out = Vec::new();
    for _ in 0..1000 {
        let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else { break };
        let head = String::from_utf8_lossy(&raw[..end + 4]).to_string();
        let Some(status) = head.strip_prefix("HTTP/1.").and_then(|r| r.get(2..5)).and_then(|s| s.parse::<u16>().ok())
        else {
            break;
        };
        let fields = parse_fields(&head);
        let mut rest = &raw[end + 4..];
        let bodyless = (100..200).contains(&status) || status == 204 || status == 304;
        if !bodyless {
            if field(&fields, "transfer-encoding").is_some() {
                let Some(n) = chunked_body_len(rest) else { break };
                rest = &rest[n..];
            } else if let Some(len) = field(&fields, "content-length").and_then(|v| v.parse::<usize>().ok()) {
                if rest.len() < len {
                    break;
                }
                rest = &rest[len..];
            } else {
                rest = &[];
            }
        }
        out.push((status, head));
        raw = rest;
    }
    (out, raw)
}

/// Bytes taken by a complete chunked body at the start of `raw` (sizes,
/// data, last chunk, trailers), or None if it is not all there.
pub fn chunked_body_len(raw: &[u8]) -> Option<usize> {
    let line_end = |from: usize| raw[from..].windows(2).position(|w| w == b"\r\n").map(|i| from + i);
    let mut at = 0;
    for _ in 0..1_000_000 {
        let eol = line_end(at)?;
        let text = std::str::from_utf8(&raw[at..eol]).ok()?;
        let size = usize::from_str_radix(text.split(';').next()?.trim(), 16).ok()?;
        at = eol + 2;
        if size == 0 {
            for _ in 0..1000 {
                let eol = line_end(at)?;
                let empty = eol == at;
                at = eol + 2;
                if empty {
                    return Some(at);
                }
            }
            return None;
        }
        at = at.checked_add(size)?.checked_add(2)?;
        if at > raw.len() {
            return None;
        }
    }
    None
}

/// Sends `bytes` on a new connection and reads until the proxy closes it
/// (a reset counts as a close) or `IO_TIMEOUT` passes.
pub fn exchange(addr: SocketAddr, bytes: &[u8]) -> RawReply {
    let mut c = Conn::connect(addr);
    c.write(bytes);
    read_reply(&mut c)
}

/// Reads on `c` until the peer closes or `IO_TIMEOUT` passes.
pub fn read_reply(c: &mut Conn) -> RawReply {
    let mut bytes = c.take_buffered();
    let mut tmp = [0u8; 64 * 1024];
    let deadline = Instant::now() + IO_TIMEOUT;
    while Instant::now() < deadline {
        match c.stream.read(&mut tmp) {
            Ok(0) => return RawReply { bytes, closed: true },
            Ok(n) => bytes.extend_from_slice(&tmp[..n]),
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => break,
            Err(_) => return RawReply { bytes, closed: true },
        }
    }
    RawReply { bytes, closed: false }
}

/// A config header: `[runtime]` with `threads`, `[timeouts]` (the `RUNTIME`
/// values overridden by `timeouts`), and `[limits]` with `limits`.
pub fn runtime_config(threads: usize, timeouts: &[(&str, &str)], limits: &[(&str, &str)]) -> String {
    let mut t: Vec<(String, String)> =
        [("client_header", "10s"), ("client_idle", "20s"), ("upstream_connect", "2s"), ("upstream_response", "10s")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    for (k, v) in timeouts {
        match t.iter_mut().find(|(n, _)| n == k) {
            Some(e) => e.1 = v.to_string(),
            None => t.push((k.to_string(), v.to_string())),
        }
    }
    let mut s = format!("\n[runtime]\nthreads = {threads}\nlog_level = \"warn\"\n\n[timeouts]\n");
    for (k, v) in &t {
        s.push_str(&format!("{k} = \"{v}\"\n"));
    }
    s.push_str("\n[limits]\n");
    for (k, v) in limits {
        s.push_str(&format!("{k} = {v}\n"));
    }
    s
}

/// A proxy with one listener `public`: `header` (see `runtime_config`),
/// upstream `x` = `server`, and `routes` (TOML inline tables, e.g.
/// `{ prefix = "/", upstream = "x" }`).
pub fn proxy_custom(header: &str, server: SocketAddr, routes: &str) -> Proxy {
    Proxy::start(&format!(
        r#"{header}
[upstreams.x]
servers = ["{server}"]

[[listeners]]
name = "public"
bind = "127.0.0.1:0"
routes = [ {routes} ]
"#
    ))
}

/// One worker (so every client connection shares one upstream pool) and
/// everything routed to `b`.
pub fn proxy_one_worker(b: &RecordingBackend) -> Proxy {
    proxy_custom(&runtime_config(1, &[], &[]), b.addr(), r#"{ prefix = "/", upstream = "x" }"#)
}

/// A proxy with `threads` workers, `[timeouts]` overrides, upstream `x`
/// with `servers` (the inside of the TOML array) and `extra` upstream keys,
/// an admin listener, and one listener `public` sending everything to `x`.
pub fn start_proxy(threads: usize, timeouts: &[(&str, &str)], servers: &str, extra: &str) -> Proxy {
    Proxy::start(&format!(
        r#"{header}
[admin]
bind = "127.0.0.1:0"

[upstreams.x]
servers = [{servers}]
{extra}

[[listeners]]
name = "public"
bind = "127.0.0.1:0"
routes = [ {{ prefix = "/", upstream = "x" }} ]
"#,
        header = runtime_config(threads, timeouts, &[]),
    ))
}
