//! Sending the request upstream: the head, then the body, and noticing a
//! response that comes before the body is all sent (RFC 9112 §9.5: a
//! server may answer 413, 401, 415 or a redirect early and close). While a
//! streamed body is relayed the upstream is read too; a complete final
//! response head stops the sending, and that response goes to the client,
//! which is then closed (the rest of its body is never read). A write that
//! fails because the server closed after answering is not a failure either:
//! the answer is read back and relayed. An early response counts as the
//! server's success, so it neither retries nor marks the server down.

use super::body::{Encode, Relay, RelayError};
use super::error::ProxyError;
use super::{Exchange, Session};
use crate::conn::Conn;
use crate::http::head::HeadScanner;
use crate::http::BodyKind;
use crate::io_buf::ConnBuf;
use crate::runtime::Watch;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt, CancelHandle, Canceller, OwnedReadHalf, OwnedWriteHalf, Splitable};
use monoio::net::TcpStream;
use std::rc::Rc;
use std::time::Duration;

/// A buffered (replayable) request body up to this size is sent in the same
/// write as the request head.
const COALESCE_BODY_BYTES: usize = 16 * 1024;

/// How much of the request reached the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Sent {
    /// Head and body: the connection can be reused after the response.
    Whole,
    /// Head and body, but the response began while the body was still
    /// going out: the server may have answered without reading the body,
    /// so its connection is not reused. The client's can be.
    Overlapped,
    /// The upstream answered (or began to) before the body was all sent;
    /// its bytes wait in `ubuf`. Neither connection can be reused.
    Early,
}

/// What watching the upstream during a body saw.
enum Seen {
    /// A complete final (non-1xx) response head, or a malformed one.
    FinalHead,
    /// The upstream closed its side, or the read failed.
    Closed,
    /// The watch was called off: the body was sent.
    CalledOff,
}

/// Writes all of `buf` and gives it back unchanged, since a retry may send
/// the same bytes again. On a timeout the bytes are lost with the write,
/// which is why `UpstreamSendTimeout` never retries.
async fn send_kept(
    up: &mut Conn,
    buf: &mut Vec<u8>,
    watch: Watch<'_>,
    limit: Duration,
    gone: ProxyError,
) -> Result<(), ProxyError> {
    let (res, back) = match watch.limit(limit, up.write_all(std::mem::take(buf))).await {
        Ok(r) => r,
        Err(_) => return Err(ProxyError::UpstreamSendTimeout),
    };
    *buf = back;
    res.map(drop).map_err(|_| gone)
}

/// Whether `data` holds a complete final response head (after any 1xx
/// heads), or bytes that can never become one.
fn final_head_buffered(mut data: &[u8], max: usize) -> bool {
    loop {
        match HeadScanner::default().scan(data, max) {
            Ok(Some(n)) if data.starts_with(b"HTTP/1.") && data.get(9) == Some(&b'1') => data = &data[n..],
            Ok(Some(_)) | Err(_) => return true,
            Ok(None) => return false,
        }
    }
}

/// Reads the upstream until a final response head is buffered, it closes,
/// or `cancel` calls the watch off. Cancelled rather than dropped, so a
/// byte the read already took is never lost.
async fn watch_for_head(
    buf: &mut ConnBuf,
    up: &mut OwnedReadHalf<TcpStream>,
    cancel: CancelHandle,
    max: usize,
) -> Seen {
    loop {
        match buf.fill_cancelable(up, cancel.clone()).await {
            Ok(n) if n > 0 => {
                if final_head_buffered(buf.data(), max) {
                    return Seen::FinalHead;
                }
            }
            Err(e) if e.raw_os_error() == Some(libc::ECANCELED) => return Seen::CalledOff,
            Ok(_) | Err(_) => return Seen::Closed,
        }
    }
}

impl Session {
    /// Sends the request head and body. `conn` holds the connection before
    /// and after, whatever happened (for the response or to be dropped);
    /// it is taken out only while a watched body splits it. It is never
    /// moved into this future, which stays small.
    pub(super) async fn send_request(
        &mut self,
        conn: &mut Option<Conn>,
        x: Exchange,
        reused: bool,
    ) -> Result<Sent, ProxyError> {
        let streamed = x.body != BodyKind::None && !x.replay;
        // A body already buffered whole goes out in one write that cannot
        // wait on the client: no need to watch the upstream meanwhile.
        let buffered = matches!(x.body, BodyKind::Length(n) if n <= self.cbuf.len() as u64);
        // A TLS upstream is not watched while the body goes out (its read
        // and write share one TLS session): an early answer is read once
        // the body is sent, or when a write fails.
        if streamed && !buffered && matches!(conn, Some(Conn::Plain(_))) {
            let Some(Conn::Plain(tcp)) = conn.take() else { unreachable!("matched just above") };
            let (mut r, mut w) = tcp.into_split();
            // Boxed: the watched relay is large, and only bodies need it.
            let sent = Box::pin(self.send_watched(&mut r, &mut w, x, reused)).await;
            let tcp = r.reunite(w).unwrap_or_else(|_| unreachable!("the halves of one split always reunite"));
            *conn = Some(Conn::Plain(tcp));
            return sent;
        }
        let Some(up) = conn.as_mut() else {
            return Err(ProxyError::UpstreamGone { reused, answered: false });
        };
        let sent = if streamed {
            // Boxed for the same reason: the relay's state is large.
            Box::pin(self.send_buffered_body(up, x, reused)).await
        } else {
            self.send_head(up, x, reused).await
        };
        match sent {
            Err(e @ ProxyError::UpstreamGone { reused: false, .. }) if x.body != BodyKind::None => {
                Box::pin(self.answered_anyway(up, e)).await
            }
            other => other,
        }
    }

    /// Sends the head and a body that is already buffered whole.
    async fn send_buffered_body(&mut self, up: &mut Conn, x: Exchange, reused: bool) -> Result<Sent, ProxyError> {
        let worker = Rc::clone(&self.worker);
        self.out.extend_from_slice(&self.uhead);
        let mut relay = Relay {
            src: &mut self.client,
            srcbuf: &mut self.cbuf,
            dst: up,
            out: &mut self.out,
            watch: worker.watchdog.watch(self.req.watch),
            read_timeout: self.config.timeouts.client_body,
            write_timeout: self.config.timeouts.upstream_send,
            max_bytes: self.config.limits.max_body_bytes,
        };
        relay.run(x.body, Encode::Raw).await.map_err(|e| ProxyError::from_request_relay(e, reused))?;
        Ok(Sent::Whole)
    }

    /// Sends the head, and a replayable body if there is one.
    async fn send_head(&mut self, up: &mut Conn, x: Exchange, reused: bool) -> Result<Sent, ProxyError> {
        let worker = Rc::clone(&self.worker);
        let watch = worker.watchdog.watch(self.req.watch);
        let gone = ProxyError::UpstreamGone { reused, answered: false };
        let send_limit = self.config.timeouts.upstream_send;
        // A small replayable body rides in the head's write.
        let head_len = self.uhead.len();
        let coalesce = x.replay && self.replay.len() <= COALESCE_BODY_BYTES;
        if coalesce {
            self.uhead.extend_from_slice(&self.replay);
        }
        let sent = send_kept(up, &mut self.uhead, watch, send_limit, gone).await;
        self.uhead.truncate(head_len);
        sent?;
        if x.replay && !coalesce {
            // Rare (a replayable body over 16 KiB): boxed, off the common
            // path's future.
            Box::pin(send_kept(up, &mut self.replay, watch, send_limit, gone)).await?;
        }
        Ok(Sent::Whole)
    }

    /// Relays a streamed body from the client while reading the upstream.
    async fn send_watched(
        &mut self,
        r: &mut OwnedReadHalf<TcpStream>,
        w: &mut OwnedWriteHalf<TcpStream>,
        x: Exchange,
        reused: bool,
    ) -> Result<Sent, ProxyError> {
        self.send_continue(x).await?;
        // The head leaves with the first body bytes (the relay flushes
        // before it waits on the client); `uhead` stays intact.
        self.out.extend_from_slice(&self.uhead);
        let worker = Rc::clone(&self.worker);
        let config = Rc::clone(&self.config);
        let enc = if x.body == BodyKind::Chunked { Encode::Chunked } else { Encode::Raw };
        let mut relay = Relay {
            src: &mut self.client,
            srcbuf: &mut self.cbuf,
            dst: w,
            out: &mut self.out,
            watch: worker.watchdog.watch(self.req.watch),
            read_timeout: config.timeouts.client_body,
            write_timeout: config.timeouts.upstream_send,
            max_bytes: config.limits.max_body_bytes,
        };
        let sent = {
            let canceller = Canceller::new();
            let mut sending = std::pin::pin!(relay.run(x.body, enc));
            let max_head = config.limits.max_header_bytes;
            let mut watching = std::pin::pin!(watch_for_head(&mut self.ubuf, r, canceller.handle(), max_head));
            monoio::select! {
                sent = &mut sending => {
                    let _ = canceller.cancel();
                    let _ = watching.await;
                    sent
                }
                seen = &mut watching => match seen {
                    // Dropping the relay stops the sending; its operations
                    // are cancelled, and the client connection closes after
                    // the answer, so the body bytes it held do not matter.
                    Seen::FinalHead => return Ok(Sent::Early),
                    Seen::Closed | Seen::CalledOff => sending.await,
                }
            }
        };
        match sent {
            // Bytes that came while the body was still going out may mean
            // the server answered without reading it all.
            Ok(_) if !self.ubuf.is_empty() => Ok(Sent::Overlapped),
            Ok(_) => Ok(Sent::Whole),
            // The server closed, maybe right after answering: what it said
            // is in `ubuf`, or one read away.
            Err(RelayError::DstIo) if !reused => {
                self.answered_anyway(r, ProxyError::from_request_relay(RelayError::DstIo, reused)).await
            }
            Err(e) => Err(ProxyError::from_request_relay(e, reused)),
        }
    }

    /// After a failed write of a request with a body on a new connection:
    /// `Early` when the upstream has answered (bytes are buffered or come
    /// in one read of the dead connection), else `e`. Not on a pooled
    /// connection: bytes there may be what a server said as it closed the
    /// idle connection (a 408), not an answer to this request; such a
    /// failure keeps its retry on a new connection.
    async fn answered_anyway<S: AsyncReadRent>(&mut self, up: &mut S, e: ProxyError) -> Result<Sent, ProxyError> {
        if self.ubuf.is_empty() {
            let worker = Rc::clone(&self.worker);
            let watch = worker.watchdog.watch(self.req.watch);
            match watch.limit(self.config.timeouts.upstream_response, self.ubuf.fill(up)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => return Err(e),
            }
        }
        Ok(Sent::Early)
    }
}

#[cfg(test)]
mod tests {
    use super::final_head_buffered;

    #[test]
    fn only_a_final_head_stops_the_body() {
        assert!(!final_head_buffered(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\n", 1024));
        assert!(final_head_buffered(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\n\r\n", 1024));
        assert!(!final_head_buffered(b"HTTP/1.1 100 Continue\r\n\r\n", 1024));
        assert!(!final_head_buffered(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n", 1024));
        assert!(final_head_buffered(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 401 No\r\n\r\n", 1024));
        // Garbage stops it too: the response reader reports it as a 502.
        assert!(final_head_buffered(b"garbage\n", 1024));
        assert!(final_head_buffered(&[b'x'; 2000], 1024));
    }
}
