//! Choosing servers and trying again: the attempt loop of a proxied
//! request. It follows the balancer's order, claims each server as it
//! reaches it (health, drain and `max_conns` are checked at that moment),
//! and retries only when replay cannot duplicate a side effect
//! (RFC 9110 §9.2.2): after a failed connect (nothing was sent), or for an
//! idempotent request with a replayable body that failed before any
//! response byte. Every request has a bounded number of tries, an overall
//! deadline, and at most one retry for a stale pooled connection.

use super::error::{ProxyError, Retry};
use super::forward::{connect, outcome};
use super::{Exchange, Next, Session};
use crate::http::BodyKind;
use crate::runtime::clock::coarse_ms;
use crate::upstream::{PoolKey, Server, Upstream};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Request bodies up to this size are buffered before the first attempt so
/// an idempotent request (PUT, DELETE, ...) can be replayed elsewhere.
pub const REPLAY_BODY_MAX: u64 = 64 * 1024;
/// Most requests waiting per upstream when every server is at `max_conns`.
const QUEUE_MAX: usize = 1024;
/// How often a queued request looks for a free server.
const QUEUE_POLL: Duration = Duration::from_millis(2);

/// Why no attempt could start on a pass over the plan.
#[derive(PartialEq, Eq)]
enum Blocked {
    Nothing,
    /// Every candidate was at `max_conns`.
    Full,
    /// Every candidate was down or drained.
    Down,
}

impl Session {
    pub(super) async fn proxy(&mut self, upstream: usize, x: Exchange) -> Result<Next, ProxyError> {
        let config = Rc::clone(&self.config);
        let up = &config.upstreams[upstream];
        if x.replay {
            self.buffer_body(x).await?;
        }
        let mut plan = std::mem::take(&mut self.plan);
        up.plan(x.key_hash, &mut self.worker.rng(), &mut plan);
        let result = self.attempts(up, x, &plan).await;
        self.plan = plan;
        result
    }

    async fn attempts(&mut self, up: &Upstream, x: Exchange, plan: &[usize]) -> Result<Next, ProxyError> {
        // Seconds-long: the coarse clock is precise enough.
        let retry_ms = u64::try_from(up.policy.retry_timeout.as_millis()).unwrap_or(u64::MAX);
        let deadline = coarse_ms().saturating_add(retry_ms);
        let replayable = (x.body == BodyKind::None || x.replay) && x.method.is_idempotent();
        let tries = up.tries();
        let mut attempts = 0;
        let mut last_error = None;
        let mut fail_open = false;
        let mut queued_since: Option<Instant> = None;
        loop {
            let mut blocked = Blocked::Nothing;
            for &index in plan {
                if attempts >= tries || (attempts > 0 && coarse_ms() >= deadline) || self.req.response_started {
                    break;
                }
                let server = &up.servers[index];
                if !server.try_acquire(fail_open) {
                    let full = server.is_full();
                    blocked = match (&blocked, full) {
                        (Blocked::Nothing | Blocked::Full, true) => Blocked::Full,
                        _ => Blocked::Down,
                    };
                    continue;
                }
                if attempts > 0 {
                    self.worker.metrics.borrow_mut().retry();
                }
                attempts += 1;
                let result = self.attempt_on(up, server, x, replayable).await;
                server.state.release();
                match result {
                    Ok(next) => {
                        server.state.record_success();
                        return Ok(next);
                    }
                    Err(e) => {
                        let retry = match e.retry() {
                            Retry::NextServer => true,
                            Retry::IfReplayable => replayable,
                            Retry::IfReplayableOnTimeout => replayable && up.policy.retry_on_timeout,
                            Retry::No => false,
                        };
                        if e.side() == super::Side::Upstream {
                            server.state.record_failure(up.policy.passive);
                        } else {
                            // The client failed: no verdict on the server,
                            // but a probe this request held must be freed
                            // or the server would never be tried again.
                            server.state.end_probe_without_verdict();
                        }
                        if !retry || self.req.response_started {
                            return Err(e);
                        }
                        last_error = Some(e);
                    }
                }
            }
            if attempts > 0 || self.req.response_started {
                return Err(last_error.unwrap_or(ProxyError::NoServer));
            }
            match blocked {
                // Every server looks down. Without active checks nothing
                // would ever bring one back, so try them anyway.
                Blocked::Down if !fail_open && up.policy.health_check.is_none() => fail_open = true,
                Blocked::Full => {
                    let since = *queued_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= up.policy.queue_timeout || !self.wait_for_slot(up).await {
                        return Err(ProxyError::NoServer);
                    }
                }
                _ => return Err(ProxyError::NoServer),
            }
        }
    }

    /// One server: a pooled connection (most recent first) or a new one,
    /// and one more try on a fresh connection if a pooled one turns out to
    /// have been closed by the backend.
    async fn attempt_on(
        &mut self,
        up: &Upstream,
        server: &Server,
        x: Exchange,
        replayable: bool,
    ) -> Result<Next, ProxyError> {
        let worker = Rc::clone(&self.worker);
        let mut fresh_only = false;
        // A PROXY header names one client: such connections serve only it.
        let key = PoolKey { tls: up.tls.as_ref(), client: up.send_proxy.map(|_| self.peer) };
        loop {
            let pooled =
                if fresh_only { None } else { worker.pools.borrow_mut().checkout(server.id, key, coarse_ms()) };
            let reused = pooled.is_some();
            let conn = match pooled {
                Some(c) => c,
                None => {
                    let header = self.proxy_header(up);
                    let limit = self.config.timeouts.upstream_connect;
                    match connect(server.addr, limit, up.tls.as_deref(), &server.name, &header).await {
                        Ok(c) => {
                            worker.metrics.borrow_mut().connect(server.id, server.addr);
                            c
                        }
                        Err(e) => {
                            log::warn!("upstream {} server {}: connect failed", up.name, server.addr);
                            worker.metrics.borrow_mut().upstream(&up.name, server.id, server.addr, outcome(&Err(e)));
                            return Err(e);
                        }
                    }
                }
            };
            worker.upstream_acquired(server.id);
            self.req.upstream_addr = Some(server.addr);
            // Boxed apart from the exchange so that each box stays within
            // glibc's per-thread cache (see the size tests in `proxy`).
            let mut slot = Some(conn);
            let result = Box::pin(self.forward(&mut slot, x, reused)).await;
            worker.upstream_released(server.id);
            worker.metrics.borrow_mut().upstream(&up.name, server.id, server.addr, outcome(&result));
            match result {
                Ok(done) if done.upgraded => match slot {
                    Some(conn) => return Ok(Next::Upgrade(conn)),
                    None => return Err(ProxyError::UpstreamGone { reused, answered: true }),
                },
                Ok(done) => {
                    let listed = done.upstream_reusable && worker.still_lists(&self.config, server.id);
                    if let (true, Some(conn)) = (listed, slot) {
                        worker.pools.borrow_mut().checkin(
                            server.id,
                            conn,
                            key,
                            up.keepalive,
                            up.policy.idle_timeout,
                            coarse_ms(),
                        );
                    }
                    return Ok(if done.client_keep_alive { Next::KeepAlive } else { Next::Close });
                }
                Err(e @ ProxyError::UpstreamGone { reused: true, .. })
                    if e.retry() == Retry::IfReplayable && replayable && !fresh_only && !self.req.response_started =>
                {
                    // The backend closed an idle connection as we reused it:
                    // not a server failure, and safe to send once more.
                    fresh_only = true;
                    self.ubuf.clear();
                    worker.metrics.borrow_mut().retry();
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The PROXY header a new connection to `up` starts with (empty if it
    /// sends none): this client, and the address it connected to.
    fn proxy_header(&self, up: &Upstream) -> Vec<u8> {
        let mut header = Vec::new();
        if let Some(version) = up.send_proxy {
            let local = self.client.local_addr().unwrap_or(self.peer);
            crate::proxy_protocol::write(version, self.peer, local, &mut header);
        }
        header
    }

    /// Waits briefly for a server under `max_conns`; false if the queue is
    /// full.
    async fn wait_for_slot(&mut self, up: &Upstream) -> bool {
        if up.waiting.fetch_add(1, Ordering::Relaxed) >= QUEUE_MAX {
            up.waiting.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        // Boxed for the reason `connect` boxes its timer.
        Box::pin(monoio::time::sleep(QUEUE_POLL)).await;
        up.waiting.fetch_sub(1, Ordering::Relaxed);
        true
    }

    /// Reads a small request body whole, so it can be sent again.
    async fn buffer_body(&mut self, x: Exchange) -> Result<(), ProxyError> {
        let BodyKind::Length(n) = x.body else { return Ok(()) };
        let n = usize::try_from(n).unwrap_or(usize::MAX);
        self.send_continue(x).await?;
        self.replay.clear();
        while self.replay.len() < n {
            if self.cbuf.is_empty() {
                self.read_body_bytes().await?;
            }
            let k = (n - self.replay.len()).min(self.cbuf.len());
            self.replay.extend_from_slice(&self.cbuf.data()[..k]);
            self.cbuf.consume(k);
        }
        Ok(())
    }
}
