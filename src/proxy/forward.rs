//! The upstream half of an exchange: pick a server, get a pooled or new
//! connection, send the request, relay the response, and return the
//! connection to the pool only when the exchange ended cleanly.

use super::body::{Encode, Relay};
use super::error::ProxyError;
use super::send::Sent;
use super::{Exchange, Session};
use crate::config::MAX_HEADERS_CEILING;
use crate::conn::Conn;
use crate::http::head::HeadError;
use crate::http::headers::list_items;
use crate::http::request::Method;
use crate::http::response::{self, client_framing, ClientFraming};
use crate::http::BodyKind;
use crate::io_buf::write_out;
use crate::metrics::Outcome;
use crate::tls::client::UpstreamTls;
use monoio::time::timeout;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

/// The metrics outcome of one attempt.
pub(super) fn outcome(result: &Result<Done, ProxyError>) -> Outcome {
    match result {
        Ok(_) => Outcome::Success,
        Err(ProxyError::UpstreamTimeout | ProxyError::UpstreamSendTimeout) => Outcome::Timeout,
        Err(ProxyError::UpstreamGone { .. }) => Outcome::Reset,
        Err(ProxyError::BadResponse(_) | ProxyError::UpstreamBody(_)) => Outcome::BadResponse,
        Err(ProxyError::Connect) => Outcome::ConnectError,
        // The client side failed; the server did its part.
        Err(_) => Outcome::Success,
    }
}

/// How one attempt on one upstream connection ended.
pub(super) struct Done {
    pub(super) upstream_reusable: bool,
    pub(super) client_keep_alive: bool,
    /// A 101 went to the client: the connection now carries another protocol.
    pub(super) upgraded: bool,
}

/// A new connection to `addr`, and on a TLS upstream its handshake, all
/// within `limit`. `name`: the server as written in the config (its host
/// is the TLS server name unless the upstream sets `sni`).
pub(super) async fn connect(
    addr: SocketAddr,
    limit: Duration,
    tls: Option<&UpstreamTls>,
    name: &str,
    proxy_header: &[u8],
) -> Result<Conn, ProxyError> {
    // Boxed: monoio's timer entry is 128-byte aligned, and inline it would
    // make every request's exchange future an aligned allocation.
    match Box::pin(timeout(limit, Conn::connect(addr, tls, name, proxy_header))).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => {
            log::debug!("connect to {addr}: {e}");
            Err(ProxyError::Connect)
        }
        Err(_) => Err(ProxyError::Connect),
    }
}

impl Session {
    /// One attempt: request out, response back. `conn` holds the upstream
    /// connection before and after (to be pooled, tunneled or dropped); it
    /// is taken out while the request is sent, which may split it.
    pub(super) async fn forward(
        &mut self,
        conn: &mut Option<Conn>,
        x: Exchange,
        reused: bool,
    ) -> Result<Done, ProxyError> {
        super::client::lend_storage(&self.worker, &mut self.ubuf, self.config.runtime.read_buffer);
        let sent = self.send_request(conn, x, reused).await?;
        let Some(up) = conn.as_mut() else {
            return Err(ProxyError::UpstreamGone { reused, answered: false });
        };
        self.receive(up, x, reused, sent).await
    }

    /// The response to a request sent whole or answered early.
    async fn receive(&mut self, up: &mut Conn, x: Exchange, reused: bool, sent: Sent) -> Result<Done, ProxyError> {
        let worker = Rc::clone(&self.worker);
        let watch = worker.watchdog.watch(self.req.watch);
        let x = match sent {
            Sent::Whole | Sent::Overlapped => x,
            Sent::Early => {
                // The rest of the request body is never read: the client
                // connection closes after this response, and lingers first
                // so the unread bytes do not reset the answer away.
                self.worker.metrics.borrow_mut().edge.early_responses += 1;
                self.req.body_unread = true;
                Exchange { keep_alive: false, ..x }
            }
        };
        let ResponseHead { body, framing, upstream_close, keep_alive } = self.read_response_head(up, x, reused).await?;
        // The head waits in `out` for the relay, which sends it with the
        // first body bytes: committed from here on, no error page can follow.
        self.req.response_started = true;
        if framing == ClientFraming::Switch {
            self.send_out().await?;
            return Ok(Done { upstream_reusable: false, client_keep_alive: false, upgraded: true });
        }

        let enc = if framing == ClientFraming::Chunked { Encode::Chunked } else { Encode::Raw };
        let mut relay = Relay {
            src: up,
            srcbuf: &mut self.ubuf,
            dst: &mut self.client,
            out: &mut self.out,
            watch,
            read_timeout: self.config.timeouts.upstream_response,
            write_timeout: self.config.timeouts.client_send,
            max_bytes: None,
        };
        self.req.bytes_sent = 0;
        let relayed = relay.run(body, enc).await;
        if relayed.is_err() && !self.out.is_empty() {
            // The upstream failed with the head (and maybe some body) still
            // unsent: send it, so the client sees a truncated response as it
            // would had the bytes left earlier.
            let _ = self.send_out().await;
        }
        let relayed = relayed.map_err(|e| ProxyError::from_response_relay(e, reused))?;
        self.req.bytes_sent = relayed;
        let upstream_reusable = sent == Sent::Whole && !upstream_close && self.ubuf.is_empty();
        self.ubuf.clear();
        Ok(Done { upstream_reusable, client_keep_alive: keep_alive, upgraded: false })
    }

    pub(super) async fn send_out(&mut self) -> Result<(), ProxyError> {
        let worker = Rc::clone(&self.worker);
        let watch = worker.watchdog.watch(self.req.watch);
        match watch.limit(self.config.timeouts.client_send, write_out(&mut self.client, &mut self.out)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(ProxyError::ClientGone),
            Err(_) => Err(ProxyError::ClientSendTimeout),
        }
    }

    /// Reads the final response head (relaying 1xx to HTTP/1.1 clients) and
    /// writes the client's version of it into `out`.
    async fn read_response_head(
        &mut self,
        up: &mut Conn,
        x: Exchange,
        reused: bool,
    ) -> Result<ResponseHead, ProxyError> {
        let wait = self.config.timeouts.upstream_response;
        let max = self.config.limits.max_header_bytes;
        let worker = Rc::clone(&self.worker);
        let watch = worker.watchdog.watch(self.req.watch);
        self.scanner.reset();
        loop {
            let head_len = loop {
                if !self.ubuf.is_empty() {
                    match self.scanner.scan(self.ubuf.data(), max) {
                        Ok(Some(n)) => break n,
                        Ok(None) => {}
                        Err(HeadError::BareLf) => return Err(ProxyError::BadResponse("bare LF in head")),
                        Err(HeadError::TooLarge) => return Err(ProxyError::BadResponse("head too large")),
                    }
                }
                match watch.limit(wait, self.ubuf.fill(up)).await {
                    Err(_) => return Err(ProxyError::UpstreamTimeout),
                    Ok(Ok(n)) if n > 0 => {}
                    Ok(_) => {
                        return Err(ProxyError::UpstreamGone { reused, answered: !self.ubuf.is_empty() });
                    }
                }
            };
            match self.take_response_head(head_len, x)? {
                None => {
                    if !self.out.is_empty() {
                        self.send_out().await?;
                    }
                    self.scanner.reset();
                }
                Some(head) => return Ok(head),
            }
        }
    }

    /// Parses the buffered response head, writes the client's version into
    /// `out`, and consumes it. `None` for a 1xx to relay (or drop, for an
    /// HTTP/1.0 client) before the final head. Kept synchronous so the
    /// header array never lives in the connection's future across an await.
    fn take_response_head(&mut self, head_len: usize, x: Exchange) -> Result<Option<ResponseHead>, ProxyError> {
        let mut slots = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS_CEILING];
        let resp = response::parse(&self.ubuf.data()[..head_len], &mut slots, x.method == Method::Head)
            .map_err(|e| ProxyError::BadResponse(e.0))?;
        let head = if resp.status == 101 {
            if !x.upgrade {
                return Err(ProxyError::BadResponse("101 to a request that did not upgrade"));
            }
            // RFC 9110 §7.8: the server may only switch to protocols the
            // client offered.
            let offered = |p: &[u8]| list_items(&self.upgrade_offer).any(|o| o.eq_ignore_ascii_case(p));
            if !resp.upgrade.is_some_and(|u| list_items(u).all(offered)) {
                return Err(ProxyError::BadResponse("101 to a protocol the client did not offer"));
            }
            response::write_client_head(&resp, ClientFraming::None, false, true, &mut self.out);
            self.req.status = 101;
            Some(ResponseHead {
                body: BodyKind::None,
                framing: ClientFraming::Switch,
                upstream_close: true,
                keep_alive: false,
            })
        } else if resp.is_informational() {
            self.out.clear();
            if !x.http10 {
                response::write_client_head(&resp, ClientFraming::None, false, true, &mut self.out);
            }
            None
        } else {
            self.req.status = resp.status;
            let framing = client_framing(resp.body, x.http10);
            // Checked now, not at the request head: a stop that began while
            // this request ran makes this the connection's last response.
            let keep_alive = x.keep_alive && framing != ClientFraming::UntilClose && !self.worker.is_shutting_down();
            response::write_client_head(&resp, framing, x.http10, keep_alive, &mut self.out);
            Some(ResponseHead { body: resp.body, framing, upstream_close: resp.upstream_close, keep_alive })
        };
        self.ubuf.consume(head_len);
        Ok(head)
    }
}

/// What the final response head decided.
struct ResponseHead {
    /// How the upstream delimits the body.
    body: BodyKind,
    /// How the client receives it (re-chunked, close-delimited, switched).
    framing: ClientFraming,
    /// The upstream connection cannot be reused after this response.
    upstream_close: bool,
    /// The client connection stays open after it.
    keep_alive: bool,
}
