//! The TLS phase of a connection on a TLS listener (called by `accept`):
//! the handshake, under `[timeouts] tls_handshake`. A failed handshake
//! costs its connection and a counter
//! (`ringway_tls_handshake_failures_total`), never the worker.

use crate::io_buf::ConnBuf;
use crate::runtime::Worker;
use crate::tls::{failure_reason, version_name, TlsStream};
use monoio::net::TcpStream;
use rustls::{Connection, ServerConfig, ServerConnection};
use std::sync::Arc;
use std::time::Instant;

/// Shakes hands with a client of a TLS listener; `None` (counted) if the
/// handshake failed. `received`: bytes already read from the socket (what
/// followed a PROXY header), the start of the handshake.
pub(super) async fn accept(
    worker: &Worker,
    listener: &Arc<str>,
    tcp: TcpStream,
    received: ConnBuf,
    tls: Arc<ServerConfig>,
) -> Option<Box<TlsStream>> {
    let started = Instant::now();
    let limit = worker.config().timeouts.tls_handshake;
    let done = match ServerConnection::new(tls) {
        Ok(session) => {
            let mut stream = Box::new(TlsStream::with_received(tcp, Connection::Server(session), received));
            // Boxed: the handshake's future is large and lives only this long.
            match monoio::time::timeout(limit, Box::pin(stream.handshake())).await {
                Ok(Ok(())) => Ok(stream),
                Ok(Err(e)) => Err(failure_reason(&e)),
                Err(_) => Err("timeout"),
            }
        }
        Err(_) => Err("other"),
    };
    match done {
        Ok(mut stream) => {
            stream.peer_subject = client_subject(stream.session());
            let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            let version = version_name(stream.session().protocol_version());
            let resumed = stream.session().handshake_kind() == Some(rustls::HandshakeKind::Resumed);
            worker.metrics.borrow_mut().tls.handshake(listener, version, resumed, micros);
            Some(stream)
        }
        Err(reason) => {
            log::debug!("TLS handshake on {listener} failed: {reason}");
            worker.metrics.borrow_mut().tls.failure(listener, reason);
            None
        }
    }
}

/// The subject of a client's verified certificate, as text safe for a
/// header value (RFC 4514 style, e.g. `CN=alice,O=Example`).
fn client_subject(tls: &Connection) -> Option<Box<[u8]>> {
    let leaf = tls.peer_certificates()?.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf).ok()?;
    let text = cert.subject().to_string();
    // Control bytes can never reach a header, whatever the certificate says.
    Some(text.bytes().filter(|b| (0x20..0x7f).contains(b)).collect())
}
