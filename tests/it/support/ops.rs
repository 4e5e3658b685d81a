//! Helpers for the operations tests: the admin API, access log files, and
//! listening sockets that come and go.

use super::{request, unique_temp_path, Proxy, Response};
use std::hash::BuildHasher;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long to poll for something the proxy does on its 20 ms tick.
pub const SETTLE: Duration = Duration::from_secs(2);

pub fn admin_get(p: &Proxy, path: &str) -> Response {
    request(p.admin_addr(), format!("GET {path} HTTP/1.1\r\nHost: admin\r\n\r\n").as_bytes())
}

pub fn admin_post(p: &Proxy, path: &str) -> Response {
    admin_post_to(p.admin_addr(), path)
}

/// A POST to an admin listener at `addr` (one that moved in a reload).
pub fn admin_post_to(addr: SocketAddr, path: &str) -> Response {
    request(addr, format!("POST {path} HTTP/1.1\r\nHost: admin\r\nContent-Length: 0\r\n\r\n").as_bytes())
}

/// Polls until connecting to `addr` is refused; returns whether it was
/// within `wait`.
pub fn refused_within(addr: SocketAddr, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    loop {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return true,
            _ if Instant::now() >= deadline => return false,
            _ => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// A listener on 127.0.0.1 on a port the kernel never picks by itself: one
/// below the ephemeral range, where every bind to port 0 and every outgoing
/// connection gets its port. When a test frees such a port for the proxy to
/// bind, no other test (binding port 0, or connecting) can take it in
/// between. The port is picked at random, so test runs that overlap rarely
/// try the same one, and one that is in use is skipped.
pub fn fixed_port_listener() -> TcpListener {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    if ephemeral_low < 4096 {
        // No room below the range: fall back to a port the kernel picks.
        return TcpListener::bind("127.0.0.1:0").expect("bind");
    }
    let (from, span) = (ephemeral_low / 2, ephemeral_low - ephemeral_low / 2);
    let random = std::hash::RandomState::new();
    for attempt in 0..1000u32 {
        let port = from + (random.hash_one(attempt) % u64::from(span)) as u16;
        if let Ok(l) = TcpListener::bind(("127.0.0.1", port)) {
            return l;
        }
    }
    panic!("no free port in {from}..{ephemeral_low}");
}

/// A port that was free a moment ago (bound, then released), one that no
/// other test can be given meanwhile: see `fixed_port_listener`.
pub fn free_port() -> u16 {
    fixed_port_listener().local_addr().expect("addr").port()
}

pub fn read_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap_or_default().lines().map(str::to_string).collect()
}

/// Polls `path` until it has `n` lines, then checks (after a few more
/// worker ticks) that no more arrive. Returns the lines.
pub fn wait_log_lines(path: &Path, n: usize) -> Vec<String> {
    let deadline = Instant::now() + SETTLE;
    while read_lines(path).len() < n && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(100));
    let lines = read_lines(path);
    assert_eq!(lines.len(), n, "expected exactly {n} access log lines: {lines:#?}");
    lines
}

/// A temp file removed on drop (with `path.1`, the rotated name).
pub struct TempFile(pub PathBuf);

impl TempFile {
    pub fn new(stem: &str) -> TempFile {
        TempFile(unique_temp_path(stem, ".log"))
    }

    pub fn rotated(&self) -> PathBuf {
        let mut p = self.0.clone().into_os_string();
        p.push(".1");
        PathBuf::from(p)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
        let _ = std::fs::remove_file(self.rotated());
    }
}

/// A running `ringway demo --config FILE`, killed on drop.
pub struct Demo {
    child: std::process::Child,
    /// The address its listener `name` reported.
    pub addr: SocketAddr,
}

impl Demo {
    /// Starts the demo on `config` and waits for listener `name` to report
    /// its address (panics if another listener name comes first, i.e. the
    /// seed config ran instead).
    pub fn start(config: &Path, name: &str) -> Demo {
        let mut child = std::process::Command::new(super::bin())
            .args(["demo", "--config", config.to_str().expect("utf-8 path")])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn ringway demo");
        let lines = super::line_reader(child.stdout.take().expect("stdout"));
        let mut demo = Demo { child, addr: SocketAddr::from(([0, 0, 0, 0], 0)) };
        let deadline = std::time::Instant::now() + super::START_TIMEOUT;
        let prefix = format!("ringway listening name={name} addr=");
        demo.addr = loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = lines.recv_timeout(left).expect("demo did not report its listener");
            if let Some(addr) = line.strip_prefix(&prefix) {
                break addr.trim().parse().expect("listening address");
            }
            assert!(!line.contains("name=public"), "the seed config ran instead: {line}");
        };
        demo
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
