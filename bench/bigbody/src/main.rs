//! Benchmark backend for bench/run.sh (std only, one thread per connection).
//!
//!   bigbody --port P [--bind 127.0.0.1]
//!
//! * `GET|HEAD /bytes/N`  answers N bytes (Content-Length) from a static buffer
//! * `POST|PUT /sink`     reads the body (Content-Length or chunked), answers its length
//! * anything else        answers `ok\n`
//!
//! Keep-alive unless the client sends `Connection: close` (or speaks HTTP/1.0).
//! `Expect: 100-continue` gets an interim `100 Continue`.
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};

const CHUNK: usize = 1 << 20;
static ZEROS: [u8; CHUNK] = [b'x'; CHUNK];

struct Conn {
    s: TcpStream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl Conn {
    fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }
    fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }
    /// Reads more bytes; Ok(false) on EOF.
    fn fill(&mut self) -> io::Result<bool> {
        if self.start > 0 && self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "head too large"));
        }
        let n = self.s.read(&mut self.buf[self.end..])?;
        self.end += n;
        Ok(n > 0)
    }
    /// Returns the bytes of one CRLF-terminated line (without CRLF), consumed.
    fn line(&mut self) -> io::Result<Option<Vec<u8>>> {
        loop {
            if let Some(i) = self.data().windows(2).position(|w| w == b"\r\n") {
                let l = self.data()[..i].to_vec();
                self.consume(i + 2);
                return Ok(Some(l));
            }
            if !self.fill()? {
                return Ok(None);
            }
        }
    }
    /// Reads and drops exactly n body bytes.
    fn skip(&mut self, mut n: u64) -> io::Result<bool> {
        while n > 0 {
            if self.start == self.end && !self.fill()? {
                return Ok(false);
            }
            let k = (self.end - self.start).min(usize::try_from(n).unwrap_or(usize::MAX));
            self.consume(k);
            n -= k as u64;
        }
        Ok(true)
    }
}

fn find_head_end(d: &[u8]) -> Option<usize> {
    d.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

fn serve(s: TcpStream) -> io::Result<()> {
    let _ = s.set_nodelay(true);
    let mut c = Conn { s, buf: vec![0; 64 * 1024], start: 0, end: 0 };
    let mut out: Vec<u8> = Vec::with_capacity(CHUNK + 256);
    loop {
        let head_len = loop {
            if let Some(n) = find_head_end(c.data()) {
                break n;
            }
            if !c.fill()? {
                return Ok(());
            }
        };
        let head = String::from_utf8_lossy(&c.data()[..head_len]).into_owned();
        c.consume(head_len);
        let mut lines = head.split("\r\n");
        let reqline = lines.next().unwrap_or("");
        let mut parts = reqline.split(' ');
        let method = parts.next().unwrap_or("").to_string();
        let target = parts.next().unwrap_or("/").to_string();
        let version = parts.next().unwrap_or("HTTP/1.1");
        let mut close = version == "HTTP/1.0";
        let mut length: Option<u64> = None;
        let mut chunked = false;
        let mut expect = false;
        for l in lines {
            let Some((k, v)) = l.split_once(':') else { continue };
            let v = v.trim();
            match k.trim().to_ascii_lowercase().as_str() {
                "content-length" => length = v.parse().ok(),
                "transfer-encoding" => chunked = v.to_ascii_lowercase().contains("chunked"),
                "connection" => {
                    let v = v.to_ascii_lowercase();
                    if v.contains("close") {
                        close = true;
                    } else if v.contains("keep-alive") {
                        close = false;
                    }
                }
                "expect" => expect = v.eq_ignore_ascii_case("100-continue"),
                _ => {}
            }
        }
        let path = target.split('?').next().unwrap_or("/");
        let conn_hdr = if close { "Connection: close\r\n" } else { "" };
        out.clear();
        if (method == "POST" || method == "PUT") && path == "/sink" {
            if expect {
                c.s.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
            }
            let mut total: u64 = 0;
            if chunked {
                loop {
                    let Some(l) = c.line()? else { return Ok(()) };
                    let hex = String::from_utf8_lossy(&l);
                    let hex = hex.split(';').next().unwrap_or("").trim();
                    let n = u64::from_str_radix(hex, 16).map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "chunk size"))?;
                    if n == 0 {
                        // trailers until the empty line
                        loop {
                            match c.line()? {
                                Some(t) if t.is_empty() => break,
                                Some(_) => {}
                                None => return Ok(()),
                            }
                        }
                        break;
                    }
                    if !c.skip(n)? {
                        return Ok(());
                    }
                    total += n;
                    let _ = c.line()?; // CRLF after the chunk
                }
            } else if let Some(n) = length {
                if !c.skip(n)? {
                    return Ok(());
                }
                total = n;
            }
            let body = format!("{total}\n");
            write!(out, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{conn_hdr}\r\n{body}", body.len())?;
            c.s.write_all(&out)?;
        } else {
            // Any other request body is read and dropped.
            if let Some(n) = length {
                if !c.skip(n)? {
                    return Ok(());
                }
            }
            let n: Option<u64> = path.strip_prefix("/bytes/").and_then(|n| n.parse().ok());
            match n {
                Some(n) => {
                    write!(out, "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {n}\r\n{conn_hdr}\r\n")?;
                    if method != "HEAD" {
                        let first = usize::try_from(n).unwrap_or(CHUNK).min(CHUNK);
                        out.extend_from_slice(&ZEROS[..first]);
                        c.s.write_all(&out)?;
                        let mut left = n - first as u64;
                        while left > 0 {
                            let k = usize::try_from(left).unwrap_or(CHUNK).min(CHUNK);
                            c.s.write_all(&ZEROS[..k])?;
                            left -= k as u64;
                        }
                    } else {
                        c.s.write_all(&out)?;
                    }
                }
                None => {
                    write!(out, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n{conn_hdr}\r\nok\n")?;
                    c.s.write_all(&out)?;
                }
            }
        }
        if close {
            return Ok(());
        }
    }
}

fn main() {
    let mut port: u16 = 0;
    let mut bind = String::from("127.0.0.1");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--port" => port = args.next().and_then(|p| p.parse().ok()).expect("--port N"),
            "--bind" => bind = args.next().expect("--bind ADDR"),
            _ => {
                eprintln!("usage: bigbody --port P [--bind ADDR]");
                std::process::exit(2);
            }
        }
    }
    let l = TcpListener::bind((bind.as_str(), port)).unwrap_or_else(|e| {
        eprintln!("bigbody: cannot listen on {bind}:{port}: {e}");
        std::process::exit(1);
    });
    // std listens with a backlog of 128; 1000 clients connecting at once
    // through a proxy would overflow it (SYN retries, seconds of latency).
    // A second listen() on the bound socket raises it (capped by somaxconn).
    {
        use std::os::fd::AsRawFd;
        extern "C" {
            fn listen(fd: i32, backlog: i32) -> i32;
        }
        // SAFETY: plain syscall on a socket we own.
        if unsafe { listen(l.as_raw_fd(), 4096) } != 0 {
            eprintln!("bigbody: could not raise the listen backlog");
        }
    }
    println!("bigbody listening on {}", l.local_addr().map(|a| a.to_string()).unwrap_or_default());
    let _ = io::stdout().flush();
    for s in l.incoming() {
        match s {
            Ok(s) => {
                let _ = std::thread::Builder::new().stack_size(128 * 1024).spawn(move || {
                    let _ = serve(s);
                });
            }
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(5)),
        }
    }
}
