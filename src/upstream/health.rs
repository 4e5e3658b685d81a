//! Active health checks: one task per upstream that has `health_check`,
//! run by a single worker (worker 0) so backends see one probe per interval,
//! not one per worker. Verdicts land in the shared `ServerState`, which
//! every worker reads when it picks a server. Verdicts are per address: a
//! server found down is down in every upstream that lists it.

use super::{HealthCheck, Server, Upstream};
use crate::conn::Conn;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::time::timeout;
use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;

/// Checks `up`'s servers every interval until `token` no longer equals
/// `generation` (a reload or shutdown replaced this checker).
pub async fn run(up: Arc<Upstream>, hc: HealthCheck, token: Rc<Cell<u64>>, generation: u64) {
    // Consecutive passes and failures per server.
    let mut streak: Vec<(u32, u32)> = vec![(0, 0); up.servers.len()];
    while token.get() == generation {
        for (server, (passes, fails)) in up.servers.iter().zip(streak.iter_mut()) {
            if probe(server, &up, &hc).await {
                *passes += 1;
                *fails = 0;
                if *passes >= hc.rise && server.state.set_active_down(false) {
                    log::info!("health check (upstream {}): server {} is up", up.name, server.addr);
                }
            } else {
                *fails += 1;
                *passes = 0;
                if *fails >= hc.fall && server.state.set_active_down(true) {
                    log::warn!("health check (upstream {}): server {} is down in every upstream", up.name, server.addr);
                }
            }
        }
        monoio::time::sleep(hc.interval).await;
    }
}

/// One check: `GET path` answered with a 2xx or 3xx status within the
/// timeout (over TLS on a TLS upstream, the handshake included); without
/// a path, the connect (and handshake) alone.
/// A server that expects a PROXY header gets one that names no client.
async fn probe(server: &Server, up: &Upstream, hc: &HealthCheck) -> bool {
    let addr = server.addr;
    let mut header = Vec::new();
    if let Some(version) = up.send_proxy {
        crate::proxy_protocol::write_local(version, &mut header);
    }
    let attempt = async {
        let mut stream = Conn::connect(addr, up.tls.as_deref(), &server.name, &header).await.ok()?;
        let Some(path) = &hc.path else { return Some(true) };
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: ringway-health-check\r\nConnection: close\r\n\r\n"
        );
        let (res, _) = stream.write_all(request.into_bytes()).await;
        res.ok()?;
        let mut head = Vec::with_capacity(64);
        while head.len() < 12 {
            let (res, buf) = stream.read(Vec::with_capacity(256)).await;
            if res.ok()? == 0 {
                break;
            }
            head.extend_from_slice(&buf);
        }
        Some(status_ok(&head))
    };
    matches!(timeout(hc.timeout, attempt).await, Ok(Some(true)))
}

/// Whether a response starts with `HTTP/1.x 2xx` or `3xx`.
fn status_ok(head: &[u8]) -> bool {
    head.len() >= 12
        && head.starts_with(b"HTTP/1.")
        && head[8] == b' '
        && matches!(head[9], b'2' | b'3')
        && head[10].is_ascii_digit()
        && head[11].is_ascii_digit()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        assert!(status_ok(b"HTTP/1.1 200 OK\r\n"));
        assert!(status_ok(b"HTTP/1.0 302 Found\r\n"));
        assert!(!status_ok(b"HTTP/1.1 500 Oops\r\n"));
        assert!(!status_ok(b"HTTP/1.1 404 Nope\r\n"));
        assert!(!status_ok(b"SSH-2.0-OpenSSH"));
        assert!(!status_ok(b"HTTP/1.1 2"));
    }
}
