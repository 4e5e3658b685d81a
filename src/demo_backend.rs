//! The built-in demo backend (`ringway backend --port N`, and one per
//! loopback server under `ringway demo`): answers like the seed's app (`/`,
//! `/app1`, `/app2`, `/admin`, each with its App ID), keeps connections
//! alive, reads and drops request bodies, and answers pipelined requests in
//! one write. Responses are prebuilt at start, so the backend costs little
//! next to the proxy in benchmarks.

use crate::config::{
    HttpPolicy, Limits, DEFAULT_MAX_HEADERS, DEFAULT_MAX_HEADER_BYTES, DEFAULT_MAX_TARGET_BYTES,
    DEFAULT_READ_BUFFER_BYTES,
};
use crate::http::chunked::{ChunkStep, ChunkedDecoder, MAX_CHUNK_EXTENSION_BYTES, MAX_TRAILER_BYTES};
use crate::http::head::{leading_empty_lines, HeadScanner};
use crate::http::request::{self, Method};
use crate::http::BodyKind;
use crate::io_buf::{write_out, ConnBuf};
use crate::router::Router;
use monoio::net::{TcpListener, TcpStream};
use std::mem::MaybeUninit;
use std::rc::Rc;

/// The proxy's default limits: the demo backend accepts what a default
/// proxy forwards.
const LIMITS: Limits = Limits {
    max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
    max_headers: DEFAULT_MAX_HEADERS,
    max_target_bytes: DEFAULT_MAX_TARGET_BYTES,
    max_body_bytes: None,
};

/// Largest the read buffer grows, with room for pipelined requests after a
/// head of up to `LIMITS.max_header_bytes`.
const READ_BUFFER_MAX_BYTES: usize = 64 * 1024;

/// Prebuilt answers for one App ID.
pub struct DemoApp {
    routes: Router<usize>,
    /// Full responses (head and body), and their head-only length for HEAD.
    responses: Vec<(Vec<u8>, usize)>,
    bad_request: Vec<u8>,
}

impl DemoApp {
    /// Builds every answer once, naming `app_id` in each body.
    pub fn new(app_id: u16) -> Self {
        let texts = ["hello from a lightweight container", "this is app1", "this is app2", "admin page"];
        let mut routes = Router::new();
        for (i, prefix) in ["/", "/app1", "/app2", "/admin"].iter().enumerate() {
            // Static, distinct, valid prefixes: a failure here is a bug.
            routes.insert(prefix, i).expect("demo routes are valid");
        }
        let responses = texts
            .iter()
            .map(|t| {
                let body = format!("{t}. App ID = {app_id}\n");
                let head =
                    format!("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n", body.len());
                let head_len = head.len();
                ((head + &body).into_bytes(), head_len)
            })
            .collect();
        let bad_request = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec();
        DemoApp { routes, responses, bad_request }
    }

    /// The prebuilt response for a path (its head only for HEAD); a path
    /// no route matches gets the `/` answer.
    fn answer(&self, path: &[u8], head_only: bool) -> &[u8] {
        let path = path.split(|&b| b == b'?').next().unwrap_or(b"/");
        let i = self.routes.lookup(path).map_or(0, |(i, _)| *i);
        let (full, head_len) = &self.responses[i];
        if head_only {
            &full[..*head_len]
        } else {
            full
        }
    }
}

/// Serves the demo app on an already bound listener until the runtime stops.
pub async fn serve(listener: TcpListener, app: Rc<DemoApp>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                monoio::spawn(serve_conn(stream, Rc::clone(&app)));
            }
            Err(_) => monoio::time::sleep(std::time::Duration::from_millis(10)).await,
        }
    }
}

async fn serve_conn(mut stream: TcpStream, app: Rc<DemoApp>) {
    let mut buf = ConnBuf::new(DEFAULT_READ_BUFFER_BYTES, READ_BUFFER_MAX_BYTES);
    let mut out = Vec::with_capacity(4096);
    let mut scanner = HeadScanner::default();
    loop {
        // Answer every complete request already buffered, then write once.
        let mut close = false;
        loop {
            let skip = leading_empty_lines(buf.data());
            if skip > 0 {
                buf.consume(skip);
                scanner.reset();
            }
            let head_len = match scanner.scan(buf.data(), LIMITS.max_header_bytes) {
                Ok(Some(n)) => n,
                Ok(None) => break,
                Err(_) => {
                    out.extend_from_slice(&app.bad_request);
                    close = true;
                    break;
                }
            };
            let mut slots = [const { MaybeUninit::uninit() }; LIMITS.max_headers];
            let parsed = request::parse(&buf.data()[..head_len], &mut slots, &LIMITS, HttpPolicy::defaults())
                .map(|r| (r.body, r.keep_alive, app.answer(r.path, r.method == Method::Head)));
            match parsed {
                Ok((body, keep_alive, answer)) => {
                    out.extend_from_slice(answer);
                    buf.consume(head_len);
                    if !skip_body(&mut stream, &mut buf, &mut out, body).await {
                        return;
                    }
                    if !keep_alive {
                        close = true;
                        break;
                    }
                }
                Err(_) => {
                    out.extend_from_slice(&app.bad_request);
                    close = true;
                    break;
                }
            }
        }
        if !out.is_empty() && write_out(&mut stream, &mut out).await.is_err() {
            return;
        }
        if close {
            return;
        }
        match buf.fill(&mut stream).await {
            Ok(n) if n > 0 => {}
            _ => return,
        }
    }
}

/// Reads and drops a request body; false if the connection must end.
async fn skip_body(stream: &mut TcpStream, buf: &mut ConnBuf, out: &mut Vec<u8>, body: BodyKind) -> bool {
    match body {
        BodyKind::None | BodyKind::UntilClose => true,
        BodyKind::Length(mut left) => {
            while left > 0 {
                if buf.is_empty() {
                    // Answers queued so far go out before we wait for more.
                    if !out.is_empty() && write_out(stream, out).await.is_err() {
                        return false;
                    }
                    if !matches!(buf.fill(stream).await, Ok(n) if n > 0) {
                        return false;
                    }
                }
                let k = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                buf.consume(k);
                left -= k as u64;
            }
            true
        }
        BodyKind::Chunked => {
            let mut dec = ChunkedDecoder::new(MAX_CHUNK_EXTENSION_BYTES, MAX_TRAILER_BYTES);
            loop {
                match dec.decode(buf.data()) {
                    Ok(ChunkStep::Data { end, .. }) => buf.consume(end),
                    Ok(ChunkStep::Done { consumed }) => {
                        buf.consume(consumed);
                        return true;
                    }
                    Ok(ChunkStep::NeedMore { consumed }) => {
                        buf.consume(consumed);
                        if !out.is_empty() && write_out(stream, out).await.is_err() {
                            return false;
                        }
                        if !matches!(buf.fill(stream).await, Ok(n) if n > 0) {
                            return false;
                        }
                    }
                    Err(_) => return false,
                }
            }
        }
    }
}

/// Starts the demo backend on `threads` worker threads (one `SO_REUSEPORT`
/// socket each) and returns the bound address and the threads.
pub fn start(
    addr: std::net::SocketAddr,
    threads: usize,
    app_id: Option<u16>,
) -> std::io::Result<(std::net::SocketAddr, Vec<std::thread::JoinHandle<()>>)> {
    use crate::config::{Driver, RingConfig, DEFAULT_RING_ENTRIES};
    let (bound, sockets) = crate::runtime::bind_group(addr, threads.max(1))?;
    let app_id = app_id.unwrap_or(bound.port());
    let mut handles = Vec::new();
    for (i, socket) in sockets.into_iter().enumerate() {
        let handle = std::thread::Builder::new().name(format!("backend-{}-{i}", bound.port())).spawn(move || {
            let ring = RingConfig {
                entries: DEFAULT_RING_ENTRIES,
                coop_taskrun: true,
                defer_taskrun: true,
                sqpoll_idle: None,
            };
            let mut rt = match crate::runtime::ring::build(Driver::Auto, &ring) {
                Ok(rt) => rt,
                Err(e) => {
                    log::error!("backend runtime: {e}");
                    return;
                }
            };
            rt.block_on(async move {
                match TcpListener::from_std(socket) {
                    Ok(l) => serve(l, Rc::new(DemoApp::new(app_id))).await,
                    Err(e) => log::error!("backend listener: {e}"),
                }
            });
        })?;
        handles.push(handle);
    }
    Ok((bound, handles))
}
