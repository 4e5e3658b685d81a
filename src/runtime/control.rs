//! The control plane shared by all threads: the current config snapshot
//! (swapped atomically on reload), the shutdown flag, a command channel to
//! each worker, and the admin listener (which a reload may move). Workers
//! check for a new snapshot once per request through a generation number,
//! so the request path touches one atomic load: an `Acquire` load, which on
//! x86-64 is the same plain load as a relaxed one (see
//! `Control::generation` for why it must not be relaxed).

use super::handover::Offered;
use super::listener::{bind_group, check_free};
use super::reload::Reloaded;
use crate::admin::AdminListener;
use crate::config::{overlaps, Config, ConfigError, RuntimeConfig};
use crate::metrics::DnsCounts;
use arc_swap::ArcSwap;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};

/// A message to one worker, handled on its housekeeping tick.
pub enum Command {
    /// Start accepting on this (already bound) socket for listener `name`.
    Listen {
        /// The listener's name.
        name: Arc<str>,
        /// This worker's socket of the listener's `SO_REUSEPORT` group.
        socket: std::net::TcpListener,
    },
    /// Stop accepting for listener `name`; its connections carry on (a
    /// request on one whose listener left the config is answered 503).
    Unlisten {
        /// The listener's name.
        name: Arc<str>,
    },
    /// Reply with a copy of the worker's counters.
    Scrape(Sender<crate::metrics::WorkerSnapshot>),
}

/// Why a reload was refused; the running config stays.
#[derive(Debug)]
pub enum ReloadError {
    /// The new file is not a valid config.
    Config(ConfigError),
    /// A new listener could not be bound.
    Bind(io::Error),
    /// Reload needs a config file; the embedded demo config has none.
    NoFile,
}

impl std::fmt::Display for ReloadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReloadError::Config(e) => write!(f, "{e}"),
            ReloadError::Bind(e) => write!(f, "{e}"),
            ReloadError::NoFile => write!(f, "this process runs an embedded config; there is no file to re-read"),
        }
    }
}

/// The control plane; see the module doc.
pub struct Control {
    config: ArcSwap<Config>,
    generation: AtomicU64,
    shutdown: AtomicBool,
    /// The file to re-read on reload (None for the embedded demo config).
    path: Option<PathBuf>,
    workers: Mutex<Vec<Sender<Command>>>,
    /// Serializes reloads (SIGHUP and the admin API may race) and the
    /// resolver thread's swaps.
    pub(super) reloading: Mutex<()>,
    /// The `[runtime]` settings the workers were started with, which a
    /// reload cannot change.
    started_runtime: RuntimeConfig,
    /// The admin listener, which a reload may move (see `reload.rs`).
    pub(super) admin: Mutex<Option<AdminListener>>,
    /// Reloads applied (`ringway_config_reloads_total{result="ok"}`).
    pub reloads_ok: AtomicU64,
    /// Reloads refused (`ringway_config_reloads_total{result="failed"}`).
    pub reloads_failed: AtomicU64,
    /// The listening sockets a new instance may take over (`handover`).
    pub offered: Offered,
    /// The resolver thread, once started (`resolver.rs`).
    pub(super) resolver: Mutex<Option<std::thread::Thread>>,
    /// DNS discovery rounds (`ringway_dns_resolutions_total`).
    pub dns: DnsCounts,
}

impl Control {
    /// The control plane of a process started with `config`, read from
    /// `path` (`None`: the embedded demo config, which cannot be reloaded).
    pub fn new(config: Config, path: Option<PathBuf>) -> Self {
        Control {
            started_runtime: config.runtime.clone(),
            admin: Mutex::new(None),
            config: ArcSwap::from_pointee(config),
            generation: AtomicU64::new(0),
            shutdown: AtomicBool::new(false),
            path,
            workers: Mutex::new(Vec::new()),
            reloading: Mutex::new(()),
            reloads_ok: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
            offered: Offered::default(),
            resolver: Mutex::new(None),
            dns: DnsCounts::default(),
        }
    }

    pub(super) fn set_workers(&self, senders: Vec<Sender<Command>>) {
        *self.workers.lock().unwrap_or_else(|e| e.into_inner()) = senders;
    }

    /// The current snapshot (not for the request path: workers cache it).
    pub fn config(&self) -> Arc<Config> {
        self.config.load_full()
    }

    /// The `[runtime]` settings the process runs with (a reload may have
    /// read others that wait for a restart).
    pub fn started_runtime(&self) -> &RuntimeConfig {
        &self.started_runtime
    }

    /// Serves the admin listener for `bind` on `sockets` (bound, or taken
    /// over from a running instance) and offers them to a successor; its
    /// address.
    pub fn start_admin(
        self: &Arc<Self>,
        bind: SocketAddr,
        sockets: Vec<std::net::TcpListener>,
    ) -> io::Result<SocketAddr> {
        let addr = sockets.first().map_or(Ok(bind), |s| s.local_addr())?;
        self.offered.add(None, addr, &sockets);
        let admin = crate::admin::start(Arc::clone(self), bind, sockets)?;
        *self.admin.lock().unwrap_or_else(|e| e.into_inner()) = Some(admin);
        Ok(addr)
    }

    /// How many snapshots replaced the first one. Acquire pairs with the
    /// Release increment in `swap`, which follows the snapshot's store: a
    /// worker that sees a new generation then loads that snapshot (or a
    /// newer one). Relaxed would let it load the old snapshot after seeing
    /// the new number, and keep the old one until the next reload.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Whether a graceful stop has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.shutdown.load(Ordering::Relaxed)
    }

    /// Begins a graceful stop: workers stop accepting, finish their requests
    /// and close idle connections.
    pub fn begin_shutdown(&self) {
        // First, so that no handover starts with sockets about to close.
        self.offered.clear();
        self.shutdown.store(true, Ordering::Relaxed);
        self.wake_resolver();
    }

    /// Sends `make(worker index)` to every worker; returns how many got it.
    pub fn broadcast(&self, mut make: impl FnMut(usize) -> Command) -> usize {
        let workers = self.workers.lock().unwrap_or_else(|e| e.into_inner());
        workers.iter().enumerate().filter(|(i, tx)| tx.send(make(*i)).is_ok()).count()
    }

    /// Re-reads the config file, validates it completely, opens and closes
    /// listeners, applies what lives outside the snapshot (admin listener,
    /// access log file, log level), then swaps the snapshot for every
    /// worker at once. On any error the running config stays.
    pub fn reload(self: &Arc<Self>) -> Result<Reloaded, ReloadError> {
        let _one_at_a_time = self.reloading.lock().unwrap_or_else(|e| e.into_inner());
        let result = self.try_reload();
        match &result {
            Ok(_) => self.reloads_ok.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.reloads_failed.fetch_add(1, Ordering::Relaxed),
        };
        result
    }

    fn try_reload(self: &Arc<Self>) -> Result<Reloaded, ReloadError> {
        let path = self.path.as_ref().ok_or(ReloadError::NoFile)?;
        let old = self.config.load_full();
        let new = Config::load_after(path, &old).map_err(ReloadError::Config)?;
        new.warnings.iter().for_each(|w| log::warn!("reload: {w}"));
        let threads = self.workers.lock().unwrap_or_else(|e| e.into_inner()).len();
        // Bind every new listener before changing anything, so a bind error
        // leaves the running config whole.
        let mut opened = Vec::new();
        for l in &new.listeners {
            let same = old.listeners.iter().any(|o| o.name == l.name && o.bind == l.bind);
            if !same {
                let context = |e: io::Error| {
                    ReloadError::Bind(io::Error::new(e.kind(), format!("listener {} on {}: {e}", l.name, l.bind)))
                };
                // Our own sockets would fail the check: it is only for
                // addresses this process does not serve yet.
                let ours = old.listeners.iter().any(|o| overlaps(o.bind, l.bind))
                    || old.admin.is_some_and(|a| overlaps(a, l.bind));
                if !ours {
                    check_free(l.bind).map_err(context)?;
                }
                let (addr, sockets) = bind_group(l.bind, threads).map_err(context)?;
                opened.push((Arc::clone(&l.name), addr, sockets));
            }
        }
        // From here on the reload is accepted. The access log's writer is
        // retargeted before workers can see a snapshot that logs.
        let done = self.apply_outside_snapshot(&new);
        for o in &old.listeners {
            let kept = new.listeners.iter().any(|l| l.name == o.name && l.bind == o.bind);
            if !kept {
                log::info!("reload: closing listener {} on {}", o.name, o.bind);
                self.offered.remove(&o.name);
                self.broadcast(|_| Command::Unlisten { name: Arc::clone(&o.name) });
            }
        }
        for (name, addr, sockets) in opened {
            log::info!("reload: opening listener {name} on {addr}");
            self.offered.add(Some(&name), addr, &sockets);
            let mut sockets = sockets.into_iter().map(Some).collect::<Vec<_>>();
            self.broadcast(|i| Command::Listen {
                name: Arc::clone(&name),
                // bind_group made one socket per worker.
                socket: sockets[i].take().expect("one socket per worker"),
            });
        }
        self.swap(new);
        self.start_resolver();
        Ok(done)
    }

    /// Makes `new` the running snapshot (a reload, or names resolved to
    /// other servers) and returns it.
    pub(super) fn swap(&self, new: Config) -> Arc<Config> {
        let new = Arc::new(new);
        self.config.store(Arc::clone(&new));
        self.generation.fetch_add(1, Ordering::Release);
        crate::upstream::forget_drains_outside(&new.upstreams);
        new
    }

    /// Runs `change` on the running snapshot with reloads held off, so a
    /// drain set through the admin API never lands on a snapshot that a
    /// reload is replacing (and forgetting the drains of removed servers).
    pub fn with_config<R>(&self, change: impl FnOnce(&Config) -> R) -> R {
        let _no_reload = self.reloading.lock().unwrap_or_else(|e| e.into_inner());
        change(&self.config.load())
    }
}
