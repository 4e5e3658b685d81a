//! Workers: one thread per core, pinned, each with its own monoio runtime
//! and its own `SO_REUSEPORT` socket per listener. Nothing on the request
//! path crosses threads except the atomics the design names: round-robin
//! counters, server state, and the config generation.

mod accept;
pub mod clock;
mod control;
mod fd_passing;
pub mod handover;
mod idle;
mod listener;
mod reload;
mod resolver;
pub mod ring;
mod spare;
mod watchdog;
mod worker;
mod worker_log;

pub use control::{Command, Control, ReloadError};
pub use idle::{IdleExpiry, HOT_WINDOW_MS};
pub use listener::{bind_group, bind_reuseport, check_free, open_group};
pub use reload::Reloaded;
pub use watchdog::{Elapsed, Watch, WatchSlot, Watchdog};
pub use worker::{Snapshot, Worker};

use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

/// Follows an "address in use" refusal at start.
pub const TAKEOVER_HINT: &str = "; to replace a running ringway without dropping connections, start with --takeover";

/// A started proxy: its bound addresses and worker threads.
pub struct Running {
    /// The control plane the workers share.
    pub control: Arc<Control>,
    /// `(listener name, bound address)`, in config order.
    pub listeners: Vec<(Arc<str>, SocketAddr)>,
    /// The driver each worker runs, for the log.
    pub drivers: Vec<String>,
    handles: Vec<JoinHandle<()>>,
}

impl Running {
    /// Blocks until every worker has stopped (after a shutdown).
    pub fn wait(self) {
        for h in self.handles {
            let _ = h.join();
        }
    }
}

/// Binds every listener once per worker (or takes the sockets handed over
/// in `inherited`) and starts the workers; returns once all of them run, or
/// with the first error. `check_free`: refuse an address another process
/// listens on (off for `--takeover`, which means to share them).
pub fn start(control: Arc<Control>, inherited: &mut handover::Inherited, check: bool) -> io::Result<Running> {
    raise_open_files_limit();
    let config = control.config();
    if let Some(log) = &config.access_log {
        crate::access_log::start(log).map_err(|e| io::Error::new(e.kind(), format!("access log: {e}")))?;
    }
    let threads = config.runtime.threads.get();
    let mut per_worker: Vec<Vec<(Arc<str>, std::net::TcpListener)>> = (0..threads).map(|_| Vec::new()).collect();
    let mut listeners = Vec::new();
    for l in &config.listeners {
        if check {
            check_free(l.bind)
                .map_err(|e| io::Error::new(e.kind(), format!("{e} (listener {}){TAKEOVER_HINT}", l.name)))?;
        }
        let (addr, sockets) = open_group(l.bind, threads, inherited)
            .map_err(|e| io::Error::new(e.kind(), format!("listener {} on {}: {e}", l.name, l.bind)))?;
        listeners.push((Arc::clone(&l.name), addr));
        control.offered.add(Some(&l.name), addr, &sockets);
        // Sockets taken over may outnumber the workers: some accept on two.
        for (i, s) in sockets.into_iter().enumerate() {
            per_worker[i % threads].push((Arc::clone(&l.name), s));
        }
    }
    let cores = if config.runtime.pin_cpus { core_affinity::get_core_ids().unwrap_or_default() } else { Vec::new() };
    let (ready_tx, ready_rx) = mpsc::channel();
    let mut handles = Vec::new();
    let mut senders = Vec::new();
    for (w, sockets) in per_worker.into_iter().enumerate() {
        let control = Arc::clone(&control);
        let core = (!cores.is_empty()).then(|| cores[w % cores.len()]);
        let ready = ready_tx.clone();
        let (cmd_tx, cmd_rx) = mpsc::channel();
        senders.push(cmd_tx);
        let handle = std::thread::Builder::new()
            .name(format!("ringway-w{w}"))
            .spawn(move || run_worker(w, control, sockets, cmd_rx, core, ready))?;
        handles.push(handle);
    }
    control.set_workers(senders);
    drop(ready_tx);
    let mut drivers = Vec::new();
    for _ in 0..threads {
        match ready_rx.recv() {
            Ok(Ok(d)) => drivers.push(d),
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(io::Error::other("a worker exited during start")),
        }
    }
    control.start_resolver();
    Ok(Running { control, listeners, drivers, handles })
}

/// Raises the soft limit on open files to the hard limit: every client
/// and upstream connection is a file descriptor, and containers and login
/// shells often start at a soft 1024 under a far higher hard limit (Go
/// programs do the same at start). Failure changes nothing.
#[allow(unsafe_code)]
fn raise_open_files_limit() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `limit` is a valid, writable rlimit for the call to fill.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 || limit.rlim_cur >= limit.rlim_max {
        return;
    }
    let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
    // SAFETY: `raised` is a valid rlimit; raising the soft limit up to the
    // hard one needs no privilege.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
        log::info!("open files limit raised from {} to {}", limit.rlim_cur, limit.rlim_max);
    }
}

fn run_worker(
    index: usize,
    control: Arc<Control>,
    sockets: Vec<(Arc<str>, std::net::TcpListener)>,
    commands: mpsc::Receiver<Command>,
    core: Option<core_affinity::CoreId>,
    ready: mpsc::Sender<io::Result<String>>,
) {
    if let Some(core) = core {
        core_affinity::set_for_current(core);
    }
    let config = control.config();
    let mut rt = match ring::build(config.runtime.driver, &config.runtime.ring) {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(io::Error::new(e.kind(), format!("cannot build the worker runtime: {e}"))));
            return;
        }
    };
    let _ = ready.send(Ok(rt.describe()));
    let worker = Rc::new(Worker::new(index, control));
    rt.block_on(worker.run(sockets, commands));
}
