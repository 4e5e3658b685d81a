//! Layer-4 load tools for `bench/run.sh --tcp` (std only; Linux).
//!
//! Servers (one blocking thread per connection; `echo` keeps a pool of
//! threads in `accept` so that no thread is spawned per connection):
//!
//!   l4bench echo --port P [--proxy-protocol] [--threads N]
//!       echoes every byte back until the peer half-closes, then closes.
//!       With --proxy-protocol each connection must start with a PROXY
//!       header (v1 text or v2 binary, detected); it is checked and
//!       stripped, and a connection without a valid one is closed unanswered.
//!   l4bench stream-server --port P
//!       the first 9 bytes are an op (`D` or `U`) and a big-endian u64 N.
//!       `D`: sends N bytes (sendfile from an in-memory file: no copy in
//!       user space), then closes. `U`: receives N bytes (recv with
//!       MSG_TRUNC: discarded in the kernel, no copy), then answers N as
//!       8 bytes and closes.
//!
//! Clients (print one line `L4JSON {...}`):
//!
//!   l4bench stream --port P --bytes N --dir down|up
//!       one connection; `down` reads N bytes with MSG_TRUNC, `up` sends
//!       N bytes with sendfile and waits for the count. Seconds from the
//!       op's send to the last byte (down) or the count (up).
//!   l4bench conns --port P --threads N --secs S [--size 100]
//!       closed loop: each thread connects, sends SIZE bytes, reads them
//!       back, closes, and again. Completed exchanges, errors, latency.
//!   l4bench http --port P --conns N --secs S [--proxy v1|v2] [--path /]
//!       N keep-alive connections, one thread each, `GET PATH` in a closed
//!       loop; with --proxy each connection starts with a PROXY header.
use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

extern "C" {
    fn listen(fd: i32, backlog: i32) -> i32;
    fn recv(fd: i32, buf: *mut u8, len: usize, flags: i32) -> isize;
    fn sendfile(out_fd: i32, in_fd: i32, offset: *mut i64, count: usize) -> isize;
    fn memfd_create(name: *const u8, flags: u32) -> i32;
}
const MSG_TRUNC: i32 = 0x20;
/// Size of the in-memory file that `sendfile` sends from, over and over.
const FILE_BYTES: usize = 16 << 20;
const V2_SIG: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

fn die(msg: &str) -> ! {
    eprintln!("l4bench: {msg}");
    std::process::exit(2)
}

struct Args(BTreeMap<String, String>);

impl Args {
    fn parse(it: impl Iterator<Item = String>) -> Args {
        let mut m = BTreeMap::new();
        let mut it = it.peekable();
        while let Some(k) = it.next() {
            let Some(k) = k.strip_prefix("--") else { die(&format!("unexpected argument {k}")) };
            let v = match it.peek() {
                Some(v) if !v.starts_with("--") => it.next().unwrap(),
                _ => String::from("1"),
            };
            m.insert(k.to_string(), v);
        }
        Args(m)
    }
    fn get<T: std::str::FromStr>(&self, k: &str, default: Option<T>) -> T {
        match self.0.get(k) {
            Some(v) => v.parse().unwrap_or_else(|_| die(&format!("bad --{k} {v}"))),
            None => default.unwrap_or_else(|| die(&format!("--{k} is required"))),
        }
    }
    fn has(&self, k: &str) -> bool {
        self.0.contains_key(k)
    }
    fn str(&self, k: &str, default: &str) -> String {
        self.0.get(k).cloned().unwrap_or_else(|| default.to_string())
    }
}

fn bind(port: u16) -> TcpListener {
    let l = TcpListener::bind(("127.0.0.1", port)).unwrap_or_else(|e| die(&format!("cannot listen on {port}: {e}")));
    // std listens with a backlog of 128; raise it (capped by somaxconn).
    // SAFETY: plain syscall on a socket we own.
    unsafe { listen(l.as_raw_fd(), 4096) };
    println!("l4bench listening on 127.0.0.1:{port}");
    let _ = io::stdout().flush();
    l
}

/// An in-memory file of FILE_BYTES bytes, for sendfile.
fn mem_file() -> std::fs::File {
    // SAFETY: a NUL-terminated name; the fd returned is ours.
    let fd = unsafe { memfd_create(b"l4bench\0".as_ptr(), 0) };
    if fd < 0 {
        die(&format!("memfd_create: {}", io::Error::last_os_error()));
    }
    // SAFETY: fd is a new descriptor owned by nobody else.
    let mut f = unsafe { std::fs::File::from_raw_fd(fd) };
    let block = vec![b'x'; 1 << 20];
    for _ in 0..FILE_BYTES / block.len() {
        f.write_all(&block).unwrap_or_else(|e| die(&format!("memfd write: {e}")));
    }
    f
}

/// Sends n bytes of `file` to `sock` with sendfile(2).
fn send_n(sock: RawFd, file: RawFd, mut n: u64) -> io::Result<()> {
    let mut off: i64 = 0;
    while n > 0 {
        if off as usize >= FILE_BYTES {
            off = 0;
        }
        let k = (FILE_BYTES - off as usize).min(usize::try_from(n).unwrap_or(usize::MAX));
        // SAFETY: valid descriptors and a pointer to our offset.
        let r = unsafe { sendfile(sock, file, &mut off, k) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if r == 0 {
            return Err(io::Error::new(io::ErrorKind::WriteZero, "sendfile wrote nothing"));
        }
        n -= r as u64;
    }
    Ok(())
}

/// Receives and discards up to n bytes (MSG_TRUNC: no copy); returns how many came before EOF.
fn drain_n(sock: RawFd, n: u64) -> io::Result<u64> {
    let mut buf = vec![0u8; 1 << 20];
    let mut got = 0;
    while got < n {
        let k = buf.len().min(usize::try_from(n - got).unwrap_or(usize::MAX));
        // SAFETY: buf is valid for k bytes (the kernel writes nothing with MSG_TRUNC on TCP).
        let r = unsafe { recv(sock, buf.as_mut_ptr(), k, MSG_TRUNC) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if r == 0 {
            break;
        }
        got += r as u64;
    }
    Ok(got)
}

// ------------------------------------------------------------- servers

/// Reads and checks a PROXY header; returns the bytes that came after it.
fn read_proxy_header(s: &mut TcpStream) -> io::Result<Vec<u8>> {
    let bad = |m: &str| io::Error::new(io::ErrorKind::InvalidData, m.to_string());
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 256];
    loop {
        if buf.first() == Some(&b'P') {
            if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
                if !buf.starts_with(b"PROXY ") {
                    return Err(bad("not a PROXY v1 header"));
                }
                return Ok(buf[i + 2..].to_vec());
            }
            if buf.len() > 107 {
                return Err(bad("v1 header too long"));
            }
        } else if buf.len() >= 16 {
            if &buf[..12] != V2_SIG || buf[12] >> 4 != 2 {
                return Err(bad("not a PROXY header"));
            }
            let end = 16 + u16::from_be_bytes([buf[14], buf[15]]) as usize;
            if buf.len() >= end {
                return Ok(buf[end..].to_vec());
            }
        } else if !buf.is_empty() && buf[0] != b'\r' {
            return Err(bad("not a PROXY header"));
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(bad("closed inside the header"));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn echo_one(mut s: TcpStream, proxy: bool, buf: &mut [u8]) -> io::Result<()> {
    let _ = s.set_nodelay(true);
    if proxy {
        let rest = read_proxy_header(&mut s)?;
        s.write_all(&rest)?;
    }
    loop {
        let n = s.read(buf)?;
        if n == 0 {
            return Ok(());
        }
        s.write_all(&buf[..n])?;
    }
}

fn echo(a: &Args) {
    let l = Arc::new(bind(a.get("port", None)));
    let proxy = a.has("proxy-protocol");
    let threads: usize = a.get("threads", Some(256));
    let mut hs = Vec::new();
    for _ in 0..threads {
        let l = Arc::clone(&l);
        hs.push(
            std::thread::Builder::new()
                .stack_size(64 * 1024)
                .spawn(move || {
                    let mut buf = vec![0u8; 16 * 1024];
                    loop {
                        match l.accept() {
                            Ok((s, _)) => {
                                let _ = echo_one(s, proxy, &mut buf);
                            }
                            Err(_) => std::thread::sleep(Duration::from_millis(5)),
                        }
                    }
                })
                .expect("thread"),
        );
    }
    for h in hs {
        let _ = h.join();
    }
}

fn stream_one(mut s: TcpStream, file: RawFd) -> io::Result<()> {
    let mut op = [0u8; 9];
    s.read_exact(&mut op)?;
    let n = u64::from_be_bytes(op[1..].try_into().unwrap());
    match op[0] {
        b'D' => {
            send_n(s.as_raw_fd(), file, n)?;
            s.shutdown(Shutdown::Write)?;
            let _ = drain_n(s.as_raw_fd(), u64::MAX);
        }
        b'U' => {
            let got = drain_n(s.as_raw_fd(), n)?;
            s.write_all(&got.to_be_bytes())?;
            s.shutdown(Shutdown::Write)?;
            let _ = drain_n(s.as_raw_fd(), u64::MAX);
        }
        _ => return Err(io::Error::new(io::ErrorKind::InvalidData, "bad op")),
    }
    Ok(())
}

fn stream_server(a: &Args) {
    let l = bind(a.get("port", None));
    let file = Arc::new(mem_file());
    for s in l.incoming() {
        match s {
            Ok(s) => {
                let file = Arc::clone(&file);
                let _ = std::thread::Builder::new().stack_size(256 * 1024).spawn(move || {
                    let _ = stream_one(s, file.as_raw_fd());
                });
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

// ------------------------------------------------------------- clients

fn addr(a: &Args) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], a.get::<u16>("port", None)))
}

fn stream(a: &Args) {
    let n: u64 = a.get("bytes", None);
    let dir = a.str("dir", "down");
    let (ok, secs, err) = match stream_run(addr(a), n, &dir) {
        Ok((got, secs)) => (got == n, secs, if got == n { String::new() } else { format!("got {got} of {n}") }),
        Err(e) => (false, 0.0, e.to_string()),
    };
    println!(
        "L4JSON {{\"ok\": {}, \"bytes\": {n}, \"secs\": {secs:.6}, \"error\": \"{}\"}}",
        ok as u8,
        err.replace('"', "'")
    );
}

fn stream_run(to: SocketAddr, n: u64, dir: &str) -> io::Result<(u64, f64)> {
    let file = if dir == "up" { Some(mem_file()) } else { None };
    let mut s = TcpStream::connect(to)?;
    let mut op = [0u8; 9];
    op[0] = if dir == "up" { b'U' } else { b'D' };
    op[1..].copy_from_slice(&n.to_be_bytes());
    let t = Instant::now();
    s.write_all(&op)?;
    let got = if let Some(f) = &file {
        send_n(s.as_raw_fd(), f.as_raw_fd(), n)?;
        let mut c = [0u8; 8];
        s.read_exact(&mut c)?;
        u64::from_be_bytes(c)
    } else {
        drain_n(s.as_raw_fd(), n)?
    };
    let secs = t.elapsed().as_secs_f64();
    Ok((got, secs))
}

#[derive(Default)]
struct Tally {
    ok: u64,
    err: u64,
    why: BTreeMap<String, u64>,
    lat_us: Vec<u32>,
}

impl Tally {
    fn fail(&mut self, e: &io::Error) {
        self.err += 1;
        *self.why.entry(format!("{:?}", e.kind())).or_default() += 1;
    }
    fn merge(&mut self, o: Tally) {
        self.ok += o.ok;
        self.err += o.err;
        for (k, v) in o.why {
            *self.why.entry(k).or_default() += v;
        }
        self.lat_us.extend(o.lat_us);
    }
    fn print(mut self, secs: f64) {
        self.lat_us.sort_unstable();
        let pct = |p: f64| -> f64 {
            if self.lat_us.is_empty() {
                return 0.0;
            }
            let i = ((self.lat_us.len() as f64 * p) as usize).min(self.lat_us.len() - 1);
            self.lat_us[i] as f64 / 1000.0
        };
        let why: Vec<String> = self.why.iter().map(|(k, v)| format!("\"{k}\": {v}")).collect();
        println!(
            "L4JSON {{\"ok\": {}, \"err\": {}, \"secs\": {secs:.4}, \"p50_ms\": {:.3}, \"p99_ms\": {:.3}, \"p999_ms\": {:.3}, \"why\": {{{}}}}}",
            self.ok,
            self.err,
            pct(0.5),
            pct(0.99),
            pct(0.999),
            why.join(", ")
        );
    }
}

/// Runs `body` on `threads` threads until `secs` pass; merges their tallies.
fn closed_loop(threads: usize, secs: f64, body: impl Fn(usize, Instant, &mut Tally) + Send + Sync + 'static) {
    let body = Arc::new(body);
    let total = Arc::new(Mutex::new(Tally::default()));
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs_f64(secs);
    let hs: Vec<_> = (0..threads)
        .map(|i| {
            let (body, total) = (Arc::clone(&body), Arc::clone(&total));
            std::thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || {
                    let mut t = Tally::default();
                    body(i, deadline, &mut t);
                    total.lock().unwrap().merge(t);
                })
                .expect("thread")
        })
        .collect();
    for h in hs {
        let _ = h.join();
    }
    let secs = t0.elapsed().as_secs_f64();
    let t = std::mem::take(&mut *total.lock().unwrap());
    t.print(secs);
}

fn conns(a: &Args) {
    let to = addr(a);
    let size: usize = a.get("size", Some(100));
    closed_loop(a.get("threads", Some(32)), a.get("secs", None), move |i, deadline, t| {
        let msg: Vec<u8> = (0..size).map(|k| b'a' + ((i + k) % 26) as u8).collect();
        let mut back = vec![0u8; size];
        while Instant::now() < deadline {
            let start = Instant::now();
            let r = (|| -> io::Result<()> {
                let mut s = TcpStream::connect(to)?;
                s.set_nodelay(true)?;
                s.write_all(&msg)?;
                s.read_exact(&mut back)?;
                if back != msg {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "wrong bytes back"));
                }
                Ok(())
            })();
            match r {
                Ok(()) => {
                    t.ok += 1;
                    t.lat_us.push(start.elapsed().as_micros().min(u32::MAX as u128) as u32);
                }
                Err(e) => {
                    t.fail(&e);
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        }
    });
}

fn proxy_header(version: &str, src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let (SocketAddr::V4(s), SocketAddr::V4(d)) = (src, dst) else { die("IPv4 only") };
    match version {
        "v1" => format!("PROXY TCP4 {} {} {} {}\r\n", s.ip(), d.ip(), s.port(), d.port()).into_bytes(),
        "v2" => {
            let mut h = V2_SIG.to_vec();
            h.extend_from_slice(&[0x21, 0x11, 0, 12]);
            h.extend_from_slice(&s.ip().octets());
            h.extend_from_slice(&d.ip().octets());
            h.extend_from_slice(&s.port().to_be_bytes());
            h.extend_from_slice(&d.port().to_be_bytes());
            h
        }
        _ => die("--proxy v1|v2"),
    }
}

/// Reads one HTTP response (head + Content-Length body) into `buf`; true if 200.
fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<bool> {
    buf.clear();
    let mut chunk = [0u8; 8192];
    let mut need: Option<usize> = None;
    loop {
        if need.is_none() {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..i]).to_ascii_lowercase();
                let clen = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap_or(0)))
                    .unwrap_or(0);
                need = Some(i + 4 + clen);
            }
        }
        if let Some(n) = need {
            if buf.len() >= n {
                return Ok(buf.starts_with(b"HTTP/1.1 200"));
            }
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed mid-response"));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn http(a: &Args) {
    let to = addr(a);
    let proxy = a.0.get("proxy").cloned();
    let req = format!("GET {} HTTP/1.1\r\nHost: bench\r\n\r\n", a.str("path", "/")).into_bytes();
    closed_loop(a.get("conns", Some(50)), a.get("secs", None), move |_, deadline, t| {
        let mut buf = Vec::with_capacity(8192);
        while Instant::now() < deadline {
            let r = (|| -> io::Result<()> {
                let mut s = TcpStream::connect(to)?;
                s.set_nodelay(true)?;
                // The PROXY header leaves in the same write as the first request.
                let mut first = match &proxy {
                    // A made-up client address, as a balancer in front would send.
                    Some(v) => proxy_header(v, SocketAddr::from(([10, 1, 2, 3], s.local_addr()?.port())), to),
                    None => Vec::new(),
                };
                first.extend_from_slice(&req);
                let mut out = &first;
                loop {
                    let start = Instant::now();
                    s.write_all(out)?;
                    out = &req;
                    if !read_response(&mut s, &mut buf)? {
                        return Err(io::Error::new(io::ErrorKind::InvalidData, "status not 200"));
                    }
                    t.ok += 1;
                    t.lat_us.push(start.elapsed().as_micros().min(u32::MAX as u128) as u32);
                    if Instant::now() >= deadline {
                        return Ok(());
                    }
                }
            })();
            if let Err(e) = r {
                t.fail(&e);
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    });
}

fn main() {
    let mut it = std::env::args().skip(1);
    let cmd = it.next().unwrap_or_default();
    let a = Args::parse(it);
    match cmd.as_str() {
        "echo" => echo(&a),
        "stream-server" => stream_server(&a),
        "stream" => stream(&a),
        "conns" => conns(&a),
        "http" => http(&a),
        _ => die("usage: l4bench echo|stream-server|stream|conns|http --port P ... (see the source's header)"),
    }
}
