//! Per-worker keep-alive pools, one per backend server. Each worker owns its
//! pools outright (no sharing, no locks). Idle connections live in a `slab`
//! so that an entry can be dropped by key; checkout is most-recent-first,
//! because the most recently used connection is the least likely to have
//! been closed by the backend's own idle timeout. A TLS connection is
//! checked the same way, except that bytes waiting on it are first handed
//! to its TLS session: TLS 1.3 servers send session tickets after the
//! handshake, and those are not a response nobody asked for.

use crate::conn::Conn;
use crate::runtime::clock::coarse_slack_ms;
use crate::tls::client::UpstreamTls;
use monoio::net::TcpStream;
use slab::Slab;
use socket2::SockRef;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::Arc;
use std::time::Duration;

struct PooledConn {
    stream: Conn,
    /// The TLS settings it was opened with (`None`: plaintext). Two
    /// upstreams may list one address with different CAs or client
    /// certificates: a connection is only handed to requests of the
    /// settings that verified it. Held, not just compared by address, so
    /// a reload's new settings can never share an old one's address.
    tls: Option<Arc<UpstreamTls>>,
    /// The client it carries requests for, on an upstream that sends a
    /// PROXY header (which names one client per connection); else `None`.
    client: Option<std::net::SocketAddr>,
    /// On the coarse clock (`clock::coarse_ms`), no slack added: the slack
    /// is added to the reading at checkout.
    expires: u64,
}

#[derive(Default)]
struct ServerPool {
    idle: Slab<PooledConn>,
    /// Slab keys, least recently used first.
    order: Vec<usize>,
}

/// Which pooled connections a request may use, beyond the server: those
/// opened with the same TLS settings, and on an upstream that sends a
/// PROXY header, only those opened for the same client.
#[derive(Clone, Copy, Default)]
pub struct PoolKey<'a> {
    /// The upstream's TLS settings (`None`: plaintext).
    pub tls: Option<&'a Arc<UpstreamTls>>,
    /// The client, when the connection's PROXY header names it.
    pub client: Option<std::net::SocketAddr>,
}

impl PoolKey<'_> {
    fn fits(&self, c: &PooledConn) -> bool {
        let tls = match (&c.tls, self.tls) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        };
        tls && c.client == self.client
    }
}

/// All of one worker's pools, indexed by `Server::id`.
#[derive(Default)]
pub struct UpstreamPools {
    pools: Vec<ServerPool>,
}

/// Whether an idle connection can still carry a request: the backend has not
/// closed it and has sent nothing unsolicited. One non-blocking peek.
// `unsafe`: borrowing the raw fd, as monoio streams do not implement `AsFd`.
#[allow(unsafe_code)]
fn still_usable(conn: &mut Conn) -> bool {
    let tls = match conn {
        Conn::Plain(stream) => return nothing_waiting(stream),
        Conn::Tls(tls) => tls,
    };
    if tls.has_buffered() {
        return false;
    }
    // SAFETY: as in `nothing_waiting`.
    let fd = unsafe { BorrowedFd::borrow_raw(tls.tcp().as_raw_fd()) };
    let mut waiting = [MaybeUninit::<u8>::uninit(); 4096];
    loop {
        match SockRef::from(&fd).recv_with_flags(&mut waiting, libc::MSG_DONTWAIT) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
            Ok(n) if n > 0 => {
                // SAFETY: `recv` initialized the first `n` bytes.
                let got = unsafe { std::slice::from_raw_parts(waiting.as_ptr().cast::<u8>(), n) };
                if !tls.absorb(got) {
                    return false;
                }
            }
            // Closed, or failed.
            _ => return false,
        }
    }
}

/// No byte waits on `stream` and it is not closed: one non-blocking peek.
#[allow(unsafe_code)]
fn nothing_waiting(stream: &TcpStream) -> bool {
    // SAFETY: the fd belongs to `stream`, which outlives this borrow; monoio
    // streams do not implement `AsFd`, so we borrow the raw fd for the call.
    let fd = unsafe { BorrowedFd::borrow_raw(stream.as_raw_fd()) };
    let mut byte = [MaybeUninit::<u8>::uninit()];
    let peek = SockRef::from(&fd).recv_with_flags(&mut byte, libc::MSG_PEEK | libc::MSG_DONTWAIT);
    matches!(peek, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

impl UpstreamPools {
    /// No pools yet; each is made when a connection to its server is checked in.
    pub fn new() -> Self {
        UpstreamPools { pools: Vec::new() }
    }

    /// Closes every idle connection to servers not in `keep` (after a reload
    /// removed them).
    pub fn retain(&mut self, keep: impl Fn(usize) -> bool) {
        for (id, pool) in self.pools.iter_mut().enumerate() {
            if !keep(id) {
                pool.idle.clear();
                pool.order.clear();
            }
        }
    }

    /// An idle connection to server `id`, most recent first. Connections the
    /// backend closed, or that carry unsolicited bytes, or that sat idle past
    /// the timeout are dropped on the way. `coarse_now_ms` is a reading of
    /// the coarse clock; its resolution counts against the connection, so
    /// that one is never reused past `idle_timeout`, which users set just
    /// below the backend's own keep-alive timeout.
    /// Only connections that fit `key` qualify.
    pub fn checkout(&mut self, id: usize, key: PoolKey<'_>, coarse_now_ms: u64) -> Option<Conn> {
        let pool = self.pools.get_mut(id)?;
        let now_plus_slack = coarse_now_ms.saturating_add(coarse_slack_ms());
        while let Some(at) = pool.order.iter().rposition(|&k| key.fits(&pool.idle[k])) {
            let slot = pool.order.remove(at);
            let mut conn = pool.idle.remove(slot);
            if now_plus_slack < conn.expires && still_usable(&mut conn.stream) {
                return Some(conn.stream);
            }
        }
        None
    }

    /// Returns a connection whose last exchange ended cleanly. Beyond
    /// `keepalive` idle connections the oldest is closed. `coarse_now_ms`:
    /// a reading of the coarse clock, from which it expires.
    pub fn checkin(
        &mut self,
        id: usize,
        stream: Conn,
        key: PoolKey<'_>,
        keepalive: usize,
        idle_timeout: Duration,
        coarse_now_ms: u64,
    ) {
        if keepalive == 0 {
            return;
        }
        if self.pools.len() <= id {
            // Server ids are process-wide; a reload may name a new one.
            self.pools.resize_with(id + 1, ServerPool::default);
        }
        let pool = &mut self.pools[id];
        if pool.order.len() >= keepalive {
            let oldest = pool.order.remove(0);
            pool.idle.remove(oldest);
        }
        let idle_ms = u64::try_from(idle_timeout.as_millis()).unwrap_or(u64::MAX);
        let conn = PooledConn {
            stream,
            tls: key.tls.cloned(),
            client: key.client,
            expires: coarse_now_ms.saturating_add(idle_ms),
        };
        let slot = pool.idle.insert(conn);
        pool.order.push(slot);
    }

    /// Closes every idle connection whose `idle_timeout` has passed at
    /// `coarse_now_ms` (with the clock's slack, as at checkout).
    pub fn expire(&mut self, coarse_now_ms: u64) {
        let now_plus_slack = coarse_now_ms.saturating_add(coarse_slack_ms());
        for pool in &mut self.pools {
            let idle = &mut pool.idle;
            pool.order.retain(|&slot| {
                let live = now_plus_slack < idle[slot].expires;
                if !live {
                    idle.remove(slot);
                }
                live
            });
        }
    }

    /// Idle connections to server `id` (for the pool gauges).
    pub fn idle_count(&self, id: usize) -> usize {
        self.pools.get(id).map_or(0, |p| p.order.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::SocketAddr;

    const LONG: Duration = Duration::from_secs(60);
    /// The coarse clock's reading in these tests.
    const T: u64 = 1_000;

    /// A connected pair: our monoio stream and the backend's std end.
    async fn pair(listener: &std::net::TcpListener) -> (Conn, std::net::TcpStream) {
        let ours = TcpStream::connect_addr(listener.local_addr().expect("addr")).await.expect("connect");
        let (theirs, _) = listener.accept().expect("accept");
        (Conn::Plain(ours), theirs)
    }

    fn local(c: &Conn) -> SocketAddr {
        match c {
            Conn::Plain(s) => s.local_addr().expect("local addr"),
            Conn::Tls(s) => s.tcp().local_addr().expect("local addr"),
        }
    }

    #[monoio::test(timer_enabled = true)]
    async fn most_recent_first_and_capped() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let mut pools = UpstreamPools::new();
        let mut keep = Vec::new();
        let mut addrs = Vec::new();
        for _ in 0..3 {
            let (ours, theirs) = pair(&l).await;
            addrs.push(local(&ours));
            keep.push(theirs);
            pools.checkin(7, ours, PoolKey::default(), 2, LONG, T);
        }
        assert_eq!(pools.idle_count(7), 2, "the oldest was closed at the cap");
        assert_eq!(pools.checkout(7, PoolKey::default(), T).map(|s| local(&s)), Some(addrs[2]));
        assert_eq!(pools.checkout(7, PoolKey::default(), T).map(|s| local(&s)), Some(addrs[1]));
        assert!(pools.checkout(7, PoolKey::default(), T).is_none());
        assert!(pools.checkout(99, PoolKey::default(), T).is_none(), "unknown server");
    }

    #[monoio::test(timer_enabled = true)]
    async fn closed_dirty_or_expired_connections_are_never_handed_out() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let mut pools = UpstreamPools::new();

        let (ours, theirs) = pair(&l).await;
        pools.checkin(1, ours, PoolKey::default(), 8, LONG, T);
        drop(theirs);
        monoio::time::sleep(Duration::from_millis(20)).await;
        assert!(pools.checkout(1, PoolKey::default(), T).is_none(), "closed by the backend");

        let (ours, mut theirs) = pair(&l).await;
        pools.checkin(1, ours, PoolKey::default(), 8, LONG, T);
        theirs.write_all(b"HTTP/1.1 200 OK\r\n").expect("write");
        monoio::time::sleep(Duration::from_millis(20)).await;
        assert!(pools.checkout(1, PoolKey::default(), T).is_none(), "unsolicited bytes");

        let (ours, _theirs) = pair(&l).await;
        pools.checkin(1, ours, PoolKey::default(), 8, Duration::ZERO, T);
        assert!(pools.checkout(1, PoolKey::default(), T).is_none(), "expired");

        let (ours, _theirs2) = pair(&l).await;
        let addr = local(&ours);
        pools.checkin(1, ours, PoolKey::default(), 8, LONG, T);
        assert_eq!(pools.checkout(1, PoolKey::default(), T).map(|s| local(&s)), Some(addr), "a clean one is reused");
    }

    #[monoio::test(timer_enabled = true)]
    async fn expired_connections_close_without_a_checkout() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let mut pools = UpstreamPools::new();
        let (short, mut theirs_short) = pair(&l).await;
        let (long, _theirs_long) = pair(&l).await;
        pools.checkin(4, short, PoolKey::default(), 8, Duration::from_millis(500), T);
        pools.checkin(4, long, PoolKey::default(), 8, LONG, T);
        pools.expire(T + 100);
        assert_eq!(pools.idle_count(4), 2, "neither is due yet");
        pools.expire(T + 500);
        assert_eq!(pools.idle_count(4), 1, "the short one expired");
        // Closed, not just forgotten: the backend sees the FIN (monoio
        // closes on the runtime, so let it run first).
        monoio::time::sleep(Duration::from_millis(20)).await;
        theirs_short.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
        let mut byte = [0u8; 1];
        assert_eq!(std::io::Read::read(&mut theirs_short, &mut byte).expect("EOF"), 0);
    }

    #[monoio::test(timer_enabled = true)]
    async fn keepalive_zero_and_retain() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let mut pools = UpstreamPools::new();
        let (a, _ta) = pair(&l).await;
        pools.checkin(2, a, PoolKey::default(), 0, LONG, T);
        assert_eq!(pools.idle_count(2), 0, "keepalive 0 pools nothing");
        let (b, _tb) = pair(&l).await;
        let (c, _tc) = pair(&l).await;
        pools.checkin(2, b, PoolKey::default(), 4, LONG, T);
        pools.checkin(3, c, PoolKey::default(), 4, LONG, T);
        pools.retain(|id| id == 3);
        assert_eq!((pools.idle_count(2), pools.idle_count(3)), (0, 1), "removed servers are drained");
    }
}
