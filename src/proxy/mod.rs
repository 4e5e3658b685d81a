//! The per-connection loop: read a request head, route it, answer locally
//! or forward it over a pooled upstream connection, relay both bodies, and
//! decide whether both connections stay open. One `Session` per accepted
//! client connection, on the worker that accepted it.

mod body;
pub mod buf;
mod error;
mod local;
mod tunnel;
mod upstream;

pub use error::{ProxyError, Retry, Side};

use crate::config::{Config, RouteAction, MAX_HEADERS_CEILING};
use crate::http::head::{leading_empty_lines, HeadError, HeadScanner};
use crate::http::path::normalize_path;
use crate::http::request::{self, Method, RequestError};
use crate::http::BodyKind;
use crate::upstream::UpstreamPools;
use buf::{write_out, ConnBuf};
use monoio::io::AsyncWriteRent;
use monoio::net::TcpStream;
use monoio::time::timeout;
use std::cell::RefCell;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Largest body we read and discard to keep a connection open after a
/// local answer; a larger declared body closes the connection instead.
const DRAIN_MAX_BYTES: u64 = 64 * 1024;
/// How long a closing connection keeps reading unread client bytes, so the
/// kernel does not answer them with a reset that destroys our response.
const LINGER: Duration = Duration::from_millis(500);

/// State one worker thread owns; shared by its sessions through `Rc`.
pub struct Worker {
    pub config: Arc<Config>,
    pub pools: RefCell<UpstreamPools>,
}

/// What the rest of an exchange needs from the request head, copied out so
/// the borrow of the read buffer can end.
#[derive(Debug, Clone, Copy)]
struct Exchange {
    method: Method,
    http10: bool,
    body: BodyKind,
    keep_alive: bool,
    expect_continue: bool,
    upgrade: bool,
    action: Action,
}

#[derive(Debug, Clone, Copy)]
enum Action {
    Local(u16),
    Proxy(usize),
}

/// How an exchange left the client connection.
enum Next {
    KeepAlive,
    Close,
    /// The upstream switched protocols: relay bytes over this connection.
    Upgrade(TcpStream),
}

pub struct Session {
    worker: Rc<Worker>,
    listener: usize,
    client: TcpStream,
    peer: SocketAddr,
    cbuf: ConnBuf,
    ubuf: ConnBuf,
    /// Head for the upstream, kept until the exchange ends so a safe retry
    /// can send it again.
    uhead: Vec<u8>,
    /// Everything else written: response heads, re-encoded chunks.
    out: Vec<u8>,
    path: Vec<u8>,
    scanner: HeadScanner,
    response_started: bool,
}

impl Session {
    pub fn new(worker: Rc<Worker>, listener: usize, client: TcpStream, peer: SocketAddr) -> Self {
        let cfg = &worker.config;
        let (rb, max_head) = (cfg.runtime.read_buffer, cfg.limits.max_header_bytes + 1);
        Session {
            listener,
            client,
            peer,
            cbuf: ConnBuf::new(rb.min(max_head.max(1024)), max_head.max(rb)),
            ubuf: ConnBuf::new(rb, max_head.max(rb)),
            uhead: Vec::new(),
            out: Vec::new(),
            path: Vec::new(),
            scanner: HeadScanner::default(),
            response_started: false,
            worker,
        }
    }

    pub async fn run(mut self) {
        loop {
            self.response_started = false;
            let next = match self.read_head().await {
                Ok(None) => Ok(Next::Close),
                Ok(Some(head_len)) => match self.prepare(head_len) {
                    Ok(x) => {
                        self.cbuf.consume(head_len);
                        self.exchange(x).await
                    }
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            };
            match next {
                Ok(Next::KeepAlive) => continue,
                Ok(Next::Close) => break,
                Ok(Next::Upgrade(upstream)) => {
                    let Session { client, cbuf, ubuf, worker, .. } = self;
                    let idle = worker.config.timeouts.tunnel_idle;
                    return tunnel::run(client, cbuf, upstream, ubuf, idle).await;
                }
                Err(e) => {
                    log::debug!("{} side failed for {}: {e:?}", side_name(e.side()), self.peer);
                    if let (false, Some(status)) = (self.response_started, e.status()) {
                        local::write_status(status, false, false, &mut self.out);
                        let send = self.worker.config.timeouts.client_send;
                        let _ = timeout(send, write_out(&mut self.client, &mut self.out)).await;
                    }
                    break;
                }
            }
        }
        self.close().await;
    }

    /// Half-closes, then reads briefly so unread request bytes do not turn
    /// the close into a reset that could destroy the last response.
    async fn close(&mut self) {
        let _ = self.client.shutdown().await;
        if !self.cbuf.is_empty() {
            self.cbuf.clear();
            let until = Instant::now() + LINGER;
            while let Some(left) = until.checked_duration_since(Instant::now()) {
                match timeout(left, self.cbuf.fill(&mut self.client)).await {
                    Ok(Ok(n)) if n > 0 => self.cbuf.clear(),
                    _ => break,
                }
            }
        }
    }

    /// Reads until a complete head is buffered. `Ok(None)`: the client
    /// closed or idled out between requests, which needs no answer.
    async fn read_head(&mut self) -> Result<Option<usize>, ProxyError> {
        let t = self.worker.config.timeouts;
        let max = self.worker.config.limits.max_header_bytes;
        self.scanner.reset();
        let mut deadline: Option<Instant> = None;
        loop {
            let skip = leading_empty_lines(self.cbuf.data());
            self.cbuf.consume(skip);
            if !self.cbuf.is_empty() {
                deadline.get_or_insert_with(|| Instant::now() + t.client_header);
                match self.scanner.scan(self.cbuf.data(), max) {
                    Ok(Some(n)) => return Ok(Some(n)),
                    Ok(None) => {}
                    Err(HeadError::BareLf) => return Err(ProxyError::Request(RequestError::BadRequest("bare LF"))),
                    Err(HeadError::TooLarge) => return Err(ProxyError::Request(RequestError::HeadTooLarge)),
                }
            }
            let wait = match deadline {
                Some(d) => d.saturating_duration_since(Instant::now()),
                None => t.client_idle,
            };
            match timeout(wait, self.cbuf.fill(&mut self.client)).await {
                Err(_) if deadline.is_none() => return Ok(None),
                Err(_) => return Err(ProxyError::ClientHeaderTimeout),
                Ok(Ok(0)) | Ok(Err(_)) if self.cbuf.is_empty() => return Ok(None),
                Ok(Ok(0)) | Ok(Err(_)) => return Err(ProxyError::ClientGone),
                Ok(Ok(_)) => {}
            }
        }
    }

    /// Validates and routes the buffered head; for a proxied request also
    /// writes the upstream head into `uhead`.
    fn prepare(&mut self, head_len: usize) -> Result<Exchange, ProxyError> {
        let worker = Rc::clone(&self.worker);
        let config = &worker.config;
        let mut slots = [const { MaybeUninit::uninit() }; MAX_HEADERS_CEILING];
        let req =
            request::parse(&self.cbuf.data()[..head_len], &mut slots, &config.limits).map_err(ProxyError::Request)?;
        let asterisk = req.path == b"*";
        if asterisk {
            self.path.clear();
            self.path.push(b'/');
        } else {
            normalize_path(req.path, &mut self.path)
                .map_err(|_| ProxyError::Request(RequestError::BadRequest("path cannot be normalized")))?;
        }
        let routes = &config.listeners[self.listener].routes;
        let action = match routes.lookup(&self.path) {
            None => Action::Local(404),
            Some((RouteAction::Status(s), _)) => Action::Local(*s),
            Some((RouteAction::Proxy { upstream, strip_prefix }, matched)) => {
                let path: &[u8] = match (asterisk, strip_prefix) {
                    (true, _) => b"*",
                    (false, true) if self.path.len() > matched => &self.path[matched..],
                    (false, true) => b"/",
                    (false, false) => &self.path,
                };
                request::write_upstream_head(&req, path, self.peer.ip(), &mut self.uhead);
                Action::Proxy(*upstream)
            }
        };
        Ok(Exchange {
            method: req.method,
            http10: req.http10,
            body: req.body,
            keep_alive: req.keep_alive,
            expect_continue: req.expect_continue,
            upgrade: req.upgrade.is_some(),
            action,
        })
    }

    async fn exchange(&mut self, x: Exchange) -> Result<Next, ProxyError> {
        match x.action {
            Action::Local(status) => self.answer_locally(status, x).await,
            Action::Proxy(upstream) => self.proxy(upstream, x).await,
        }
    }

    /// Answers with a status of our own. The request body must not be
    /// parsed as the next request: it is read and dropped when small,
    /// otherwise the connection closes after the answer.
    async fn answer_locally(&mut self, status: u16, x: Exchange) -> Result<Next, ProxyError> {
        let mut keep = x.keep_alive;
        match x.body {
            BodyKind::None => {}
            BodyKind::Length(n) if n <= DRAIN_MAX_BYTES && !x.expect_continue => {
                keep &= self.drain(n).await.is_ok();
            }
            _ => keep = false,
        }
        local::write_status(status, keep, x.method == Method::Head, &mut self.out);
        self.response_started = true;
        let send = self.worker.config.timeouts.client_send;
        match timeout(send, write_out(&mut self.client, &mut self.out)).await {
            Ok(Ok(())) if keep => Ok(Next::KeepAlive),
            Ok(Ok(())) => Ok(Next::Close),
            _ => Err(ProxyError::ClientGone),
        }
    }

    async fn drain(&mut self, mut left: u64) -> Result<(), ProxyError> {
        let idle = self.worker.config.timeouts.client_body;
        while left > 0 {
            if self.cbuf.is_empty() {
                match timeout(idle, self.cbuf.fill(&mut self.client)).await {
                    Ok(Ok(n)) if n > 0 => {}
                    _ => return Err(ProxyError::ClientGone),
                }
            }
            let k = usize::try_from(left).unwrap_or(usize::MAX).min(self.cbuf.len());
            self.cbuf.consume(k);
            left -= k as u64;
        }
        Ok(())
    }
}

fn side_name(side: Side) -> &'static str {
    match side {
        Side::Client => "client",
        Side::Upstream => "upstream",
    }
}
