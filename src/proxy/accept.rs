//! What happens to an accepted connection before its first byte of
//! payload: the listener's settings are read at accept (so a reload applies
//! to the next connection), a PROXY protocol header is read when the
//! listener expects one, TLS is terminated, and the connection becomes an
//! HTTP `Session` or a TCP relay (`tcp_proxy`). A plaintext HTTP listener
//! without PROXY protocol skips all of this (`needs_preamble`), so its
//! connections' tasks stay as small as before.

use super::{handshake, Conn, Session};
use crate::config::{Config, ListenerMode};
use crate::io_buf::ConnBuf;
use crate::proxy_protocol::{self, ProxyHeader, ProxyHeaderError};
use crate::runtime::Worker;
use crate::upstream::Upstream;
use monoio::net::TcpStream;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

/// Whether connections of `listener` need `serve` (PROXY header, TLS or
/// TCP mode) rather than going straight to an HTTP `Session`.
pub fn needs_preamble(config: &Config, listener: &str) -> bool {
    config
        .listeners
        .iter()
        .find(|l| &*l.name == listener)
        .is_some_and(|l| l.proxy_protocol || l.tls.is_some() || l.mode != ListenerMode::Http)
}

/// What `serve` needs of its listener, copied out at accept so that the
/// connection does not keep that config snapshot alive for its whole life.
struct Preamble {
    /// Read a PROXY header first (the peer was checked against `trusted`).
    proxy_protocol: bool,
    /// The listener's TLS settings as of the accept.
    tls: Option<Arc<rustls::ServerConfig>>,
    /// For `mode = "tcp"`: the upstream, from the same snapshot as the
    /// listener (an index would name another upstream after a reload).
    tcp_upstream: Option<Arc<Upstream>>,
}

/// Serves one connection of a listener that `needs_preamble`.
pub async fn serve(worker: Rc<Worker>, listener: Arc<str>, tcp: TcpStream, peer: SocketAddr) {
    worker.metrics.borrow_mut().connection_opened(&listener);
    worker.connection_opened();
    let opened = Instant::now();
    let preamble = {
        let config = worker.config();
        config.listeners.iter().find(|l| l.name == listener).map(|l| {
            if l.proxy_protocol && !l.trusts(peer.ip()) {
                // Before a byte is read: an untrusted peer's header, true
                // or not, must not become the client address.
                return Err(());
            }
            Ok(Preamble {
                proxy_protocol: l.proxy_protocol,
                tls: l.tls.as_ref().map(|t| Arc::clone(&t.server)),
                tcp_upstream: match l.mode {
                    ListenerMode::Http => None,
                    ListenerMode::Tcp { upstream } => Some(Arc::clone(&config.upstreams[upstream])),
                },
            })
        })
    };
    let handed_on = match preamble {
        // Counted closed by the session or the relay once it runs.
        Some(Ok(p)) => Box::pin(preamble_then_serve(&worker, p, &listener, tcp, peer, opened)).await,
        Some(Err(())) => {
            worker.metrics.borrow_mut().l4.proxy_refused(&listener, "untrusted");
            false
        }
        None => false,
    };
    if handed_on {
        return;
    }
    worker.metrics.borrow_mut().connection_closed(&listener);
    worker.connection_closed();
}

/// False if the connection was closed before it was handed on.
async fn preamble_then_serve(
    worker: &Rc<Worker>,
    p: Preamble,
    name: &Arc<str>,
    mut tcp: TcpStream,
    mut peer: SocketAddr,
    opened: Instant,
) -> bool {
    let (max, read_buffer, header_limit) = {
        let config = worker.config();
        let rb = config.runtime.read_buffer;
        (config.limits.max_header_bytes.max(rb) + 1, rb, config.timeouts.client_header)
    };
    let mut received = ConnBuf::unallocated(max);
    // Where the client connected to, when a PROXY header says.
    let mut destination = None;
    // A relayed client whose address the header did not carry: its own
    // forwarding fields must not pass as if it were the trusted balancer.
    let mut anonymous = false;
    if p.proxy_protocol {
        super::client::lend_storage(worker, &mut received, read_buffer);
        match read_proxy_header(&mut tcp, &mut received, opened + header_limit).await {
            Ok(ProxyHeader::Tcp { source, destination: d }) => (peer, destination) = (source, Some(d)),
            // The balancer's own connection (a health check): the socket's
            // peer stands.
            Ok(ProxyHeader::Local) => {}
            Ok(ProxyHeader::Unknown) => anonymous = true,
            Err(reason) => {
                log::debug!("PROXY header from {peer} on {name} refused: {reason}");
                worker.metrics.borrow_mut().l4.proxy_refused(name, reason);
                return false;
            }
        }
    }
    let client = match p.tls {
        None => Conn::Plain(tcp),
        Some(tls) => {
            let taken = std::mem::replace(&mut received, ConnBuf::unallocated(max));
            match handshake::accept(worker, name, tcp, taken, tls).await {
                Some(stream) => Conn::Tls(stream),
                None => return false,
            }
        }
    };
    match p.tcp_upstream {
        None => {
            let mut session = Session::counted(Rc::clone(worker), Arc::clone(name), client, peer);
            if anonymous {
                session.believe_forwarded = false;
            }
            if !received.is_empty() {
                // The request that followed the PROXY header.
                session.cbuf = received;
            }
            session.run().await;
        }
        Some(upstream) => {
            let first = (!received.is_empty()).then_some(received);
            let ends = crate::tcp_proxy::Ends { client: peer, destination, opened };
            crate::tcp_proxy::run(Rc::clone(worker), Arc::clone(name), client, first, upstream, ends).await;
        }
    }
    true
}

/// Reads a PROXY header into `buf` (the bytes after it stay there) by
/// `deadline`; `Err` is the refusal's metrics reason.
async fn read_proxy_header(
    tcp: &mut TcpStream,
    buf: &mut ConnBuf,
    deadline: Instant,
) -> Result<ProxyHeader, &'static str> {
    loop {
        match proxy_protocol::parse(buf.data()) {
            Ok((header, n)) => {
                buf.consume(n);
                return Ok(header);
            }
            Err(ProxyHeaderError::Incomplete) => {}
            Err(ProxyHeaderError::TooLarge) => return Err("too_large"),
            Err(ProxyHeaderError::Invalid(_)) => return Err("malformed"),
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match monoio::time::timeout(left, buf.fill(tcp)).await {
            Ok(Ok(n)) if n > 0 => {}
            Ok(_) => return Err("closed"),
            Err(_) => return Err("timeout"),
        }
    }
}
