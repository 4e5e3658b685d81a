//! What happens to an accepted connection before its first byte of
//! payload: the listener's settings are read at accept (so a reload applies
//! to the next connection), a PROXY protocol header is read when the
//! listener expects one, TLS is terminated, and the connection becomes an
//! HTTP `Session` or a TCP relay (`tcp_proxy`). A plaintext HTTP listener
//! without PROXY protocol skips all of this (`needs_preamble`), so its
//! connections' tasks stay as small as before.

use super::{handshake, Conn, Session};
use crate::config::{Config, Listener, ListenerMode};
use crate::io_buf::ConnBuf;
use crate::proxy_protocol::{self, ProxyHeader, ProxyHeaderError};
use crate::runtime::Worker;
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

/// Serves one connection of a listener that `needs_preamble`.
pub async fn serve(worker: Rc<Worker>, listener: Arc<str>, tcp: TcpStream, peer: SocketAddr) {
    worker.metrics.borrow_mut().connection_opened(&listener);
    worker.connection_opened();
    let config = worker.config();
    let opened = Instant::now();
    if let Some(l) = config.listeners.iter().find(|l| l.name == listener) {
        // Counted closed by the session or the relay once it runs.
        if Box::pin(preamble_then_serve(&worker, l, &listener, tcp, peer, opened)).await {
            return;
        }
    }
    worker.metrics.borrow_mut().connection_closed(&listener);
    worker.connection_closed();
}

/// False if the connection was closed before it was handed on.
async fn preamble_then_serve(
    worker: &Rc<Worker>,
    l: &Listener,
    name: &Arc<str>,
    mut tcp: TcpStream,
    mut peer: SocketAddr,
    opened: Instant,
) -> bool {
    let config = worker.config();
    let max = config.limits.max_header_bytes.max(config.runtime.read_buffer) + 1;
    let mut received = ConnBuf::unallocated(max);
    if l.proxy_protocol {
        if !l.trusts(peer.ip()) {
            // Before a byte is read: an untrusted peer's header, true or
            // not, must not become the client address.
            worker.metrics.borrow_mut().l4.proxy_refused(name, "untrusted");
            return false;
        }
        super::client::lend_storage(worker, &mut received, config.runtime.read_buffer);
        let deadline = opened + config.timeouts.client_header;
        match read_proxy_header(&mut tcp, &mut received, deadline).await {
            Ok(ProxyHeader::Tcp { source, .. }) => peer = source,
            // The balancer's own connection (a health check): the socket's
            // peer stands.
            Ok(ProxyHeader::Unspecified) => {}
            Err(reason) => {
                log::debug!("PROXY header from {peer} on {name} refused: {reason}");
                worker.metrics.borrow_mut().l4.proxy_refused(name, reason);
                return false;
            }
        }
    }
    let client = match &l.tls {
        None => Conn::Plain(tcp),
        Some(tls) => {
            let taken = std::mem::replace(&mut received, ConnBuf::unallocated(max));
            match handshake::accept(worker, name, tcp, taken, Arc::clone(&tls.server)).await {
                Some(stream) => Conn::Tls(stream),
                None => return false,
            }
        }
    };
    match l.mode {
        ListenerMode::Http => {
            let mut session = Session::counted(Rc::clone(worker), Arc::clone(name), client, peer);
            if !received.is_empty() {
                // The request that followed the PROXY header.
                session.cbuf = received;
            }
            session.run().await;
        }
        ListenerMode::Tcp { upstream } => {
            let first = (!received.is_empty()).then_some(received);
            crate::tcp_proxy::run(Rc::clone(worker), Arc::clone(name), client, first, peer, upstream, opened).await;
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
