//! One worker thread's state and housekeeping. Everything here is owned by
//! the worker (`Rc`, `Cell`, `RefCell`); other threads reach it only through
//! the command channel, answered on a short tick.

use super::accept::accept_loop;
use super::clock::coarse_ms;
use super::control::{Command, Control};
use super::idle::ConnectionWaits;
use super::spare::SparePool;
use super::watchdog::{WatchSlot, Watchdog};
use super::worker_log::WorkerLog;
use crate::access_log;
use crate::config::Config;
use crate::metrics::{PoolGauge, WorkerMetrics};

use crate::upstream::UpstreamPools;
use monoio::io::Canceller;
use monoio::net::TcpListener;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often a worker looks at its command channel and the shutdown flag,
/// and fires its wheels and its watchdog.
const TICK: Duration = Duration::from_millis(20);
/// After in-flight requests finish, how long a stopping worker waits for
/// its remaining (idle or half-sent) connections to close.
const SHUTDOWN_LINGER: Duration = Duration::from_secs(1);
/// Spare connection buffers kept per worker (enough for the connections
/// that are mid-request at once; idle ones hold none).
const SPARE_BUFS: usize = 512;
/// Freeing less than this leaves the allocator alone (a `malloc_trim`
/// walks the whole arena).
const TRIM_MIN_BYTES: usize = 1024 * 1024;
/// How often spare buffers unused since the last trim are freed: a burst's
/// buffers go back within half a second of its end, while a steady load
/// keeps what it uses (a trim frees only what sat unused all interval).
const SPARE_TRIM_MS: u64 = 250;
/// How often idle upstream connections past `idle_timeout` are closed.
const POOL_SWEEP_MS: u64 = 1000;

/// A worker's handle on a config snapshot. Sessions clone the `Rc` (a
/// plain increment) rather than the shared `Arc`, whose count lives on a
/// cache line every worker would otherwise write per request.
pub struct Snapshot(Arc<Config>);

impl std::ops::Deref for Snapshot {
    type Target = Config;
    fn deref(&self) -> &Config {
        &self.0
    }
}

/// One worker thread's state, shared by its tasks through an `Rc`.
pub struct Worker {
    /// Worker number; worker 0 also runs the active health checks.
    pub index: usize,
    /// The control plane shared by all threads.
    pub control: Arc<Control>,
    config: RefCell<Rc<Snapshot>>,
    seen_generation: Cell<u64>,
    /// This worker's idle upstream connections.
    pub pools: RefCell<UpstreamPools>,
    /// This worker's counters.
    pub metrics: RefCell<WorkerMetrics>,
    /// Requests between a complete head and the end of their answer.
    active: Cell<usize>,
    /// Open client connections (idle ones included).
    open: Cell<usize>,
    /// Waits for a next request: idle and hot wheels, the hot-wait budget.
    pub waits: ConnectionWaits,
    /// The I/O timeouts of requests in flight.
    pub watchdog: Watchdog,
    /// Upstream connections in use, by server id.
    upstream_in_use: RefCell<Vec<usize>>,
    /// Spare connection buffers: sessions borrow one per side while a
    /// request runs and give it back when they go idle.
    spare_bufs: SparePool,
    /// Spare small scratch buffers (heads, paths) for the same purpose.
    spare_scratch: SparePool,
    /// Per-worker random state (random_two balancing).
    rng: RefCell<u64>,
    /// Access log lines waiting for the writer thread.
    access_log: WorkerLog,
    /// When the pools are next swept for expired connections (coarse ms).
    next_pool_sweep: Cell<u64>,
    /// When the spare buffers are next trimmed (coarse ms).
    next_spare_trim: Cell<u64>,
}

impl Worker {
    /// Worker number `index`, on the current snapshot of `control`.
    pub fn new(index: usize, control: Arc<Control>) -> Self {
        let config = control.config();
        Worker {
            index,
            seen_generation: Cell::new(control.generation()),
            config: RefCell::new(Rc::new(Snapshot(Arc::clone(&config)))),
            control,
            pools: RefCell::new(UpstreamPools::new()),
            metrics: RefCell::new(WorkerMetrics::default()),
            active: Cell::new(0),
            open: Cell::new(0),
            waits: ConnectionWaits::default(),
            watchdog: Watchdog::default(),
            upstream_in_use: RefCell::new(Vec::new()),
            rng: RefCell::new(seed()),
            spare_bufs: SparePool::new(SPARE_BUFS),
            spare_scratch: SparePool::new(SPARE_BUFS * 4),
            access_log: WorkerLog::new(&config),
            next_pool_sweep: Cell::new(0),
            next_spare_trim: Cell::new(0),
        }
    }

    /// A connection buffer of `read_buffer` bytes, reused when possible.
    pub fn take_buf(&self, capacity: usize) -> Vec<u8> {
        self.spare_bufs.take(capacity)
    }

    /// Returns a buffer for reuse; one smaller than a read buffer, or
    /// beyond `SPARE_BUFS`, is freed.
    pub fn put_buf(&self, v: Vec<u8>) {
        self.spare_bufs.put(v, self.config.borrow().runtime.read_buffer);
    }

    /// A small scratch buffer (request head, path), reused when possible.
    pub fn take_scratch(&self) -> Vec<u8> {
        self.spare_scratch.take(0)
    }

    /// Returns a scratch buffer for reuse (beyond a bound, it is freed).
    pub fn put_scratch(&self, v: Vec<u8>) {
        self.spare_scratch.put(v, 0);
    }

    /// This worker's random state (`upstream::next_random`).
    pub fn rng(&self) -> std::cell::RefMut<'_, u64> {
        self.rng.borrow_mut()
    }

    /// Whether requests are logged (as of this worker's latest snapshot).
    pub fn logs_access(&self) -> bool {
        self.access_log.is_on()
    }

    /// Appends one access log line; full buffers go to the writer thread.
    pub fn log_access(&self, entry: &access_log::Entry<'_>) {
        self.access_log.log(entry);
    }

    /// Appends one TCP-mode connection's access log line.
    pub fn log_tcp(&self, entry: &access_log::TcpEntry<'_>) {
        self.access_log.log_tcp(entry);
    }

    /// The current snapshot. After a reload the next call picks up the new
    /// one; callers keep theirs for the rest of their request.
    pub fn config(&self) -> Rc<Snapshot> {
        let generation = self.control.generation();
        if generation != self.seen_generation.get() {
            let new = self.control.config();
            // Pools for servers the new config no longer names are drained.
            self.pools.borrow_mut().retain(|id| new.servers.iter().any(|s| s.id == id));
            self.access_log.follow(&new);
            *self.config.borrow_mut() = Rc::new(Snapshot(new));
            self.seen_generation.set(generation);
        }
        Rc::clone(&self.config.borrow())
    }

    /// Whether a connection to server `id`, used by a request that runs on
    /// snapshot `used`, may go back to the pool: the current snapshot still
    /// lists the server (a reload, or DNS, may have removed it while the
    /// request ran). One pointer comparison unless the snapshot changed.
    pub fn still_lists(&self, used: &Rc<Snapshot>, id: usize) -> bool {
        let current = self.config();
        Rc::ptr_eq(used, &current) || current.servers.iter().any(|s| s.id == id)
    }

    /// Whether a graceful stop has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.control.is_shutting_down()
    }

    /// Counts an accepted client connection (a stop waits for them to close).
    pub fn connection_opened(&self) {
        self.open.set(self.open.get() + 1);
    }

    /// Counts a client connection that ended.
    pub fn connection_closed(&self) {
        self.open.set(self.open.get().saturating_sub(1));
    }

    /// Ends the idle and hot waits that are due (all of them when `all`),
    /// and the timed operations of requests whose deadline passed.
    fn fire_timers(&self, all: bool) {
        let coarse = coarse_ms();
        self.watchdog.tick(coarse);
        self.waits.fire(coarse, all);
    }

    /// Counts a request as in flight; returns its watchdog slot.
    pub fn request_started(&self) -> WatchSlot {
        self.active.set(self.active.get() + 1);
        self.watchdog.enter()
    }

    /// Counts a layer-4 relay as in flight: a graceful stop lets it finish
    /// (bounded by `shutdown_timeout`) as it lets requests finish.
    pub fn relay_started(&self) {
        self.active.set(self.active.get() + 1);
    }

    /// Ends what `relay_started` began.
    pub fn relay_finished(&self) {
        self.active.set(self.active.get().saturating_sub(1));
    }

    /// Ends what `request_started` began; the slot goes back.
    pub fn request_finished(&self, watch: WatchSlot) {
        self.active.set(self.active.get().saturating_sub(1));
        self.watchdog.leave(watch);
    }

    /// Counts one more upstream connection to server `id` in use (the
    /// pool gauge's `active`).
    pub fn upstream_acquired(&self, id: usize) {
        let mut v = self.upstream_in_use.borrow_mut();
        if v.len() <= id {
            v.resize(id + 1, 0);
        }
        v[id] += 1;
    }

    /// Counts one upstream connection to server `id` no longer in use.
    pub fn upstream_released(&self, id: usize) {
        if let Some(n) = self.upstream_in_use.borrow_mut().get_mut(id) {
            *n = n.saturating_sub(1);
        }
    }

    fn snapshot(&self) -> crate::metrics::WorkerSnapshot {
        let config = self.config();
        let pools = self.pools.borrow();
        let in_use = self.upstream_in_use.borrow();
        let gauges = config
            .servers
            .iter()
            .map(|s| PoolGauge {
                addr: s.addr,
                idle: pools.idle_count(s.id),
                active: in_use.get(s.id).copied().unwrap_or(0),
            })
            .collect();
        self.metrics.borrow().snapshot(gauges)
    }

    /// The worker's main task: accept on the given sockets, then tick until
    /// shutdown has let every in-flight request finish.
    pub async fn run(self: Rc<Self>, sockets: Vec<(Arc<str>, std::net::TcpListener)>, commands: Receiver<Command>) {
        let mut accepting: HashMap<Arc<str>, Canceller> = HashMap::new();
        for (name, socket) in sockets {
            self.listen(name, socket, &mut accepting);
        }
        // Health checkers run while this token holds their generation.
        let checkers = Rc::new(Cell::new(u64::MAX));
        let mut idle_since: Option<Instant> = None;
        loop {
            if self.index == 0 && checkers.get() != self.control.generation() && !self.is_shutting_down() {
                self.start_health_checks(&checkers);
            }
            monoio::time::sleep(TICK).await;
            while let Ok(cmd) = commands.try_recv() {
                match cmd {
                    Command::Listen { name, socket } => self.listen(name, socket, &mut accepting),
                    Command::Unlisten { name } => {
                        if let Some(c) = accepting.remove(&name) {
                            c.cancel();
                        }
                    }
                    Command::Scrape(reply) => {
                        let _ = reply.send(self.snapshot());
                    }
                }
            }
            self.access_log.flush();
            // Idle upstream connections past their `idle_timeout` close now,
            // not when the pool is next used: a quiet proxy holds no stale
            // connections (and descriptors) to its backends. A sweep is a
            // walk over at most `keepalive` entries per server, once a second.
            let now = coarse_ms();
            if now >= self.next_pool_sweep.get() {
                self.next_pool_sweep.set(now + POOL_SWEEP_MS);
                self.pools.borrow_mut().expire(now);
            }
            if now >= self.next_spare_trim.get() {
                self.next_spare_trim.set(now + SPARE_TRIM_MS);
                self.trim_spares();
            }
            let stopping = self.is_shutting_down();
            // At a stop every wait for a next request ends at once, on
            // every tick (sessions still mid-request may start one later):
            // idle connections close while requests in flight finish.
            self.fire_timers(stopping);
            if stopping {
                checkers.set(u64::MAX - 1);
                // Accept loops see the cancel on their next poll and drop
                // (close) their listening sockets.
                for (_, c) in accepting.drain() {
                    c.cancel();
                }
                if self.active.get() == 0 {
                    // Give cancelled sessions a moment to close cleanly; a
                    // client still sending a head does not hold the stop.
                    // Never in the tick that cancelled: the accept loops and
                    // sessions need one turn to run.
                    let Some(since) = idle_since else {
                        idle_since = Some(Instant::now());
                        continue;
                    };
                    if self.open.get() == 0 || since.elapsed() >= SHUTDOWN_LINGER {
                        return;
                    }
                }
            }
        }
    }

    /// Frees the spare buffers a burst left behind (see `SparePool`), and
    /// hands the freed memory back to the system: glibc keeps freed small
    /// blocks in the thread's arena otherwise, and RSS stays at the peak.
    #[allow(unsafe_code)]
    fn trim_spares(&self) {
        let freed = self.spare_bufs.trim() + self.spare_scratch.trim();
        if freed >= TRIM_MIN_BYTES {
            #[cfg(target_env = "gnu")]
            // SAFETY: `malloc_trim` only returns free memory to the system;
            // it touches no live allocation.
            unsafe {
                libc::malloc_trim(0);
            }
        }
    }

    /// (Re)starts one checker per upstream with `health_check`; checkers of
    /// an older generation stop at their next round.
    fn start_health_checks(&self, token: &Rc<Cell<u64>>) {
        let generation = self.control.generation();
        token.set(generation);
        let config = self.control.config();
        for up in &config.upstreams {
            if let Some(hc) = up.policy.health_check.clone() {
                monoio::spawn(crate::upstream::health::run(Arc::clone(up), hc, Rc::clone(token), generation));
            }
        }
    }

    fn listen(
        self: &Rc<Self>,
        name: Arc<str>,
        socket: std::net::TcpListener,
        accepting: &mut HashMap<Arc<str>, Canceller>,
    ) {
        match TcpListener::from_std(socket) {
            Ok(listener) => {
                // One canceller per listener, for all its sockets here (more
                // than one when more were taken over than there are
                // workers). A listener whose bind changed in a reload was
                // removed (`Unlisten`) before.
                let canceller = accepting.entry(Arc::clone(&name)).or_default();
                monoio::spawn(accept_loop(Rc::clone(self), name, listener, canceller.handle()));
            }
            Err(e) => log::error!("listener {name}: {e}"),
        }
    }
}

/// A distinct, non-zero seed per worker.
fn seed() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::thread::current().id()) | 1
}
