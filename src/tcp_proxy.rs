//! Layer 4 (`mode = "tcp"` listeners): each accepted connection is
//! connected to a server of the listener's upstream, chosen by the same
//! balancer, health, drain and `max_conns` rules as HTTP requests, with
//! connect retries across servers; then bytes are relayed both ways (the
//! tunnel's relay: half-closes passed on, `tcp_idle` in both directions)
//! until both sides close. One access log line and one set of counters per
//! connection when it ends.

use crate::access_log::TcpEntry;
use crate::conn::Conn;
use crate::io_buf::ConnBuf;
use crate::metrics::{Outcome, TcpDone};
use crate::proxy::tunnel;
use crate::runtime::Worker;
use crate::upstream::{hash_bytes, Balance, Server, Upstream};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Relay buffer per direction: large reads and writes move bulk data with
/// fewer system calls.
const RELAY_BUFFER: usize = 64 * 1024;

/// How a TCP-mode connection ended (the `end` label and log field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Both directions closed (or failed) after the relay began.
    Closed,
    /// Neither side sent anything for `tcp_idle`.
    IdleTimeout,
    /// No server could be connected to.
    NoServer,
}

impl End {
    /// The metrics label and access log word.
    pub fn label(self) -> &'static str {
        match self {
            End::Closed => "closed",
            End::IdleTimeout => "idle_timeout",
            End::NoServer => "no_server",
        }
    }
}

/// Where a TCP-mode connection comes from and goes to.
pub struct Ends {
    /// The client (from a PROXY header, if one came).
    pub client: SocketAddr,
    /// The address the client connected to, when a PROXY header said
    /// (otherwise our own listening address is used where one is needed).
    pub destination: Option<SocketAddr>,
    /// When the connection was accepted.
    pub opened: Instant,
}

/// Relays `client` (accepted by `listener`) to a server of `up`. `first`:
/// bytes already read from the client (after a PROXY header). The
/// connection was counted open by the caller; it is counted closed here.
pub async fn run(
    worker: Rc<Worker>,
    listener: Arc<str>,
    client: Conn,
    first: Option<ConnBuf>,
    up: Arc<Upstream>,
    ends: Ends,
) {
    let peer = ends.client;
    let connect_limit = worker.config().timeouts.upstream_connect;
    // The address the client connected to matters only to a PROXY header
    // (a `getsockname` per connection otherwise saved).
    let local = match (up.send_proxy, ends.destination) {
        (Some(_), Some(d)) => d,
        (Some(_), None) => client.local_addr().unwrap_or(peer),
        (None, _) => peer,
    };
    let connected = connect_some(&worker, &up, peer, local, connect_limit).await;
    let (end, server, relayed) = match connected {
        None => (End::NoServer, None, tunnel::Relayed::default()),
        Some((server, conn)) => {
            worker.upstream_acquired(server.id);
            worker.relay_started();
            let idle = worker.config().timeouts.tcp_idle;
            let cbuf = first.unwrap_or_else(buffer);
            let relayed = tunnel::run(client, cbuf, conn, buffer(), idle).await;
            worker.relay_finished();
            worker.upstream_released(server.id);
            server.state.release();
            let end = if relayed.idled_out { End::IdleTimeout } else { End::Closed };
            (end, Some(server.addr), relayed)
        }
    };
    let duration = ends.opened.elapsed();
    let done = TcpDone {
        listener: &listener,
        upstream: &up.name,
        end: end.label(),
        from_client: relayed.to_upstream,
        to_client: relayed.to_client,
        millis: u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
    };
    worker.metrics.borrow_mut().l4.tcp(&done);
    if worker.logs_access() {
        worker.log_tcp(&TcpEntry {
            client: peer,
            listener: &listener,
            upstream: &up.name,
            server,
            from_client: relayed.to_upstream,
            to_client: relayed.to_client,
            duration,
            end: end.label(),
        });
    }
    worker.metrics.borrow_mut().connection_closed(&listener);
    worker.connection_closed();
}

/// A relay buffer of 64 KiB. Not from the worker's pool of 16 KiB request
/// buffers: a relay holds its two for the connection's whole life.
fn buffer() -> ConnBuf {
    ConnBuf::new(RELAY_BUFFER, RELAY_BUFFER)
}

/// Connects to the first server of the balancer's order that takes the
/// connection, trying up to the upstream's `tries` servers. The server
/// returned holds one of its `max_conns` slots (`state.release` gives it
/// back). A failed connect counts against the server's passive health.
async fn connect_some<'a>(
    worker: &Worker,
    up: &'a Upstream,
    peer: SocketAddr,
    local: SocketAddr,
    limit: Duration,
) -> Option<(&'a Server, Conn)> {
    // Hash balancing hashes the client's address whatever `hash_key` says:
    // a TCP connection has no headers or cookies.
    let key = match &up.policy.balance {
        Balance::Hash(_) => match peer.ip() {
            std::net::IpAddr::V4(a) => hash_bytes(&a.octets()),
            std::net::IpAddr::V6(a) => hash_bytes(&a.octets()),
        },
        _ => 0,
    };
    let mut plan = Vec::new();
    up.plan(key, &mut worker.rng(), &mut plan);
    let mut header = Vec::new();
    if let Some(version) = up.send_proxy {
        crate::proxy_protocol::write(version, peer, local, &mut header);
    }
    let mut attempts = 0;
    // Every server down and no active check to bring one back: try them
    // anyway on a second pass (as HTTP requests do).
    for fail_open in [false, true] {
        for &index in &plan {
            if attempts >= up.tries() {
                return None;
            }
            let server = &up.servers[index];
            if !server.try_acquire(fail_open) {
                continue;
            }
            attempts += 1;
            if attempts > 1 {
                worker.metrics.borrow_mut().retry();
            }
            let connecting = Conn::connect(server.addr, up.tls.as_deref(), &server.name, &header);
            match monoio::time::timeout(limit, connecting).await {
                Ok(Ok(conn)) => {
                    server.state.record_success();
                    worker.metrics.borrow_mut().connect(server.id, server.addr);
                    worker.metrics.borrow_mut().upstream(&up.name, server.id, server.addr, Outcome::Success);
                    return Some((server, conn));
                }
                _ => {
                    log::warn!("upstream {} server {}: connect failed (tcp)", up.name, server.addr);
                    server.state.release();
                    server.state.record_failure(up.policy.passive);
                    worker.metrics.borrow_mut().upstream(&up.name, server.id, server.addr, Outcome::ConnectError);
                }
            }
        }
        if attempts > 0 || up.policy.health_check.is_some() {
            break;
        }
    }
    None
}
