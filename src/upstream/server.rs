//! Process-wide server state. Every distinct backend address gets one
//! `ServerState` for the life of the process, so what must outlive a config
//! reload (its pool slot in each worker, health, the drain everywhere)
//! stays attached to the address, whichever snapshot names it. Every
//! (upstream, address) pair gets one `MemberState`: the drain of that
//! server in that upstream. All fields are atomics written lock-free by
//! whichever thread sees the event: this is the server state the design
//! shares between workers.
//!
//! Health is per address: a dead address is dead in every upstream that
//! lists it, and one probe or failure should not have to be learned once
//! per upstream. A drain is an operator's decision about one pool, so it is
//! per member; draining an address everywhere is a separate switch.

use super::padded::CachePadded;
use crate::runtime::clock::precise_ms;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// The process-wide state of one backend address; see the module doc.
#[derive(Debug)]
pub struct ServerState {
    /// The address it belongs to.
    pub addr: SocketAddr,
    /// Stable index: names this server's pool in every worker.
    pub id: usize,
    /// Taken out of every upstream by the admin API
    /// (`POST /servers/ADDR/drain`; in-flight requests finish).
    drained: AtomicBool,
    /// Requests on this server right now, across all workers. Written
    /// twice per request, so on a cache line of its own: the flags
    /// `is_available` reads for every server on every request stay
    /// cached on every core.
    in_flight: CachePadded<AtomicUsize>,
    /// Passive health: failures counted in the window that began at
    /// `window_start_ms`; `down_until_ms` > 0 while the server is out.
    /// Both are on the precise clock (`clock::precise_ms`); 0 means unset.
    fails: AtomicU32,
    window_start_ms: AtomicU64,
    down_until_ms: AtomicU64,
    /// After `down_until_ms` one request (the probe) decides.
    probing: AtomicBool,
    /// Set by active health checks.
    active_down: AtomicBool,
}

/// Passive health thresholds of the upstream a request went through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PassiveHealth {
    /// Failures within `fail_timeout` that take a server out; 0 disables.
    pub max_fails: u32,
    /// The failure window, and how long a server that reached `max_fails`
    /// stays out.
    pub fail_timeout: Duration,
}

impl ServerState {
    fn new(addr: SocketAddr, id: usize) -> Self {
        ServerState {
            addr,
            id,
            drained: AtomicBool::new(false),
            in_flight: CachePadded(AtomicUsize::new(0)),
            fails: AtomicU32::new(0),
            window_start_ms: AtomicU64::new(0),
            down_until_ms: AtomicU64::new(0),
            probing: AtomicBool::new(false),
            active_down: AtomicBool::new(false),
        }
    }

    /// Whether it is drained everywhere (`POST /servers/ADDR/drain`).
    pub fn is_drained(&self) -> bool {
        self.drained.load(Relaxed)
    }

    /// Drains it in every upstream (`true`) or ends that drain.
    pub fn set_drained(&self, drained: bool) {
        self.drained.store(drained, Relaxed);
    }

    /// Requests on it right now, across all workers.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Relaxed)
    }

    /// Whether the server is in rotation (not drained everywhere, not down).
    pub fn is_healthy(&self) -> bool {
        !self.is_drained() && !self.active_down.load(Relaxed) && self.down_until_ms.load(Relaxed) == 0
    }

    /// Whether `try_acquire(false, max_conns)` would take the server now:
    /// the balancer's view, which claims nothing. A server whose down
    /// period ended counts until a request has taken its probe.
    pub fn is_available(&self, max_conns: Option<usize>) -> bool {
        if self.is_drained() || self.active_down.load(Relaxed) {
            return false;
        }
        let down_until = self.down_until_ms.load(Relaxed);
        if down_until != 0 && (self.probing.load(Relaxed) || precise_ms() < down_until) {
            return false;
        }
        !self.is_full(max_conns)
    }

    /// Claims a request slot. `ignore_health` is the fail-open pass (every
    /// server looked down and no active check can bring one back). Returns
    /// false when the server is drained everywhere, down, at `max_conns`, or when its
    /// down period ended and another request already took the probe.
    pub fn try_acquire(&self, ignore_health: bool, max_conns: Option<usize>) -> bool {
        if self.is_drained() {
            return false;
        }
        if !ignore_health {
            if self.active_down.load(Relaxed) {
                return false;
            }
            let down_until = self.down_until_ms.load(Relaxed);
            if down_until != 0
                && (precise_ms() < down_until || self.probing.compare_exchange(false, true, Relaxed, Relaxed).is_err())
            {
                return false;
            }
        }
        let before = self.in_flight.fetch_add(1, Relaxed);
        if max_conns.is_some_and(|m| before >= m) {
            self.in_flight.fetch_sub(1, Relaxed);
            self.probing.store(false, Relaxed);
            return false;
        }
        true
    }

    /// Ends a request slot taken by `try_acquire`.
    pub fn release(&self) {
        self.in_flight.fetch_sub(1, Relaxed);
    }

    /// Whether `try_acquire` failed only because of `max_conns`.
    pub fn is_full(&self, max_conns: Option<usize>) -> bool {
        max_conns.is_some_and(|m| self.in_flight() >= m)
    }

    /// A request it served: its failures are forgotten and, if passive
    /// health had taken it out, it is back in rotation.
    pub fn record_success(&self) {
        if self.fails.load(Relaxed) != 0 || self.down_until_ms.load(Relaxed) != 0 {
            let was_down = self.down_until_ms.swap(0, Relaxed) != 0;
            self.fails.store(0, Relaxed);
            if was_down {
                log::info!("server {} is back in rotation", self.addr);
            }
        }
        self.end_probe();
    }

    /// A request that ended with no verdict on the server (its client
    /// failed): the probe, if it held it, goes to the next request.
    pub fn end_probe_without_verdict(&self) {
        self.end_probe();
    }

    /// Frees the probe if a request holds it. Looks first and writes only
    /// when it is taken: on the usual path (a server in rotation) the end
    /// of a request then writes nothing here, and the line stays cached on
    /// every core that reads these flags.
    fn end_probe(&self) {
        if self.probing.load(Relaxed) {
            self.probing.store(false, Relaxed);
        }
    }

    /// A request it failed: counts towards `p.max_fails` within
    /// `p.fail_timeout`, and takes it out for `fail_timeout` once reached.
    pub fn record_failure(&self, p: PassiveHealth) {
        self.end_probe();
        if p.max_fails == 0 {
            return;
        }
        let now = precise_ms();
        let window = u64::try_from(p.fail_timeout.as_millis()).unwrap_or(u64::MAX);
        let start = self.window_start_ms.load(Relaxed);
        let fails = if now.saturating_sub(start) > window || start == 0 {
            self.window_start_ms.store(now.max(1), Relaxed);
            self.fails.store(1, Relaxed);
            1
        } else {
            self.fails.fetch_add(1, Relaxed) + 1
        };
        if fails >= p.max_fails {
            let was_up = self.down_until_ms.swap(now.saturating_add(window).max(1), Relaxed) == 0;
            if was_up {
                log::warn!("server {} out of rotation for {:?} after {fails} failure(s)", self.addr, p.fail_timeout);
            }
        }
    }

    /// Back to the state of a new server: up, no failures counted.
    fn forget_health(&self) {
        self.active_down.store(false, Relaxed);
        self.down_until_ms.store(0, Relaxed);
        self.window_start_ms.store(0, Relaxed);
        self.fails.store(0, Relaxed);
        self.probing.store(false, Relaxed);
    }

    /// Applies an active health check verdict; returns true if it changed.
    pub fn set_active_down(&self, down: bool) -> bool {
        let changed = self.active_down.swap(down, Relaxed) != down;
        if changed && !down {
            // A check that passes also clears passive state.
            self.down_until_ms.store(0, Relaxed);
            self.fails.store(0, Relaxed);
        }
        changed
    }
}

fn registry() -> &'static Mutex<Vec<Arc<ServerState>>> {
    static REGISTRY: OnceLock<Mutex<Vec<Arc<ServerState>>>> = OnceLock::new();
    REGISTRY.get_or_init(|| Mutex::new(Vec::new()))
}

/// The state for `addr`, created on first use. Called while building a
/// config (start and reload), never on the request path.
pub fn server_state(addr: SocketAddr) -> Arc<ServerState> {
    // A poisoned lock only means another thread panicked mid-push; the Vec
    // itself is still valid.
    let mut all = registry().lock().unwrap_or_else(|e| e.into_inner());
    if let Some(s) = all.iter().find(|s| s.addr == addr) {
        return Arc::clone(s);
    }
    let state = Arc::new(ServerState::new(addr, all.len()));
    all.push(Arc::clone(&state));
    state
}

/// One server in one upstream, for the life of the process while the
/// upstream lists it: the operator's drain of that member
/// (`POST /upstreams/NAME/servers/ADDR/drain`). Keyed by upstream name and
/// address, so the drain outlives reloads that keep the pair.
#[derive(Debug)]
pub struct MemberState {
    /// The upstream name.
    pub upstream: Arc<str>,
    /// The server address.
    pub addr: SocketAddr,
    drained: AtomicBool,
}

impl MemberState {
    /// Whether it is drained in this upstream.
    pub fn is_drained(&self) -> bool {
        self.drained.load(Relaxed)
    }

    /// Drains it in this upstream (`true`) or ends that drain.
    pub fn set_drained(&self, drained: bool) {
        self.drained.store(drained, Relaxed);
    }
}

fn members() -> &'static Mutex<Vec<Arc<MemberState>>> {
    static MEMBERS: OnceLock<Mutex<Vec<Arc<MemberState>>>> = OnceLock::new();
    MEMBERS.get_or_init(|| Mutex::new(Vec::new()))
}

/// The state of `addr` in upstream `upstream`, created on first use. Called
/// while building a config, never on the request path.
pub fn member_state(upstream: &str, addr: SocketAddr) -> Arc<MemberState> {
    let mut all = members().lock().unwrap_or_else(|e| e.into_inner());
    if let Some(m) = all.iter().find(|m| *m.upstream == *upstream && m.addr == addr) {
        return Arc::clone(m);
    }
    let member = Arc::new(MemberState { upstream: upstream.into(), addr, drained: AtomicBool::new(false) });
    all.push(Arc::clone(&member));
    member
}

/// Drops the members `gone` says no config lists any more (their drains
/// with them), so the registry holds only what the running config names.
pub(super) fn forget_members(gone: impl Fn(&MemberState) -> bool) {
    let mut all = members().lock().unwrap_or_else(|e| e.into_inner());
    all.retain(|m| {
        let forget = gone(m);
        if forget && m.is_drained() {
            log::info!("upstream {} no longer lists server {}: its drain is forgotten", m.upstream, m.addr);
        }
        !forget
    });
}

/// Forgets what the addresses `gone` says no upstream lists any more had:
/// the drain everywhere, and health, so that an address that comes back
/// (a reload, or DNS giving it again) starts in rotation. Their
/// `ServerState` stays: its id names pools in the workers.
pub(super) fn forget_address_state(gone: impl Fn(SocketAddr) -> bool) {
    let all = registry().lock().unwrap_or_else(|e| e.into_inner());
    for s in all.iter().filter(|s| gone(s.addr)) {
        if s.is_drained() {
            s.set_drained(false);
            log::info!("no upstream lists server {} any more: its drain everywhere is forgotten", s.addr);
        }
        s.forget_health();
    }
}

#[cfg(test)]
mod tests;
