//! Workers: one thread per core, pinned, each with its own monoio runtime
//! and its own `SO_REUSEPORT` socket per listener. Nothing on the request
//! path crosses threads except the atomics the design names.

mod listener;
pub mod ring;

pub use listener::{bind_group, bind_reuseport};

use crate::config::Config;
use crate::proxy::{Session, Worker};
use crate::upstream::UpstreamPools;
use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long an idle pooled upstream connection is kept.
pub const DEFAULT_POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause after an accept error (e.g. out of file descriptors) so a worker
/// does not spin.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(20);

/// A started proxy: its bound addresses and worker threads.
pub struct Running {
    /// `(listener name, bound address)`, in config order.
    pub listeners: Vec<(String, SocketAddr)>,
    /// The driver each worker runs, for the log.
    pub drivers: Vec<String>,
    handles: Vec<JoinHandle<()>>,
}

impl Running {
    /// Blocks until every worker has stopped.
    pub fn wait(self) {
        for h in self.handles {
            let _ = h.join();
        }
    }
}

/// Binds every listener once per worker and starts the workers; returns
/// once all of them run, or with the first error.
pub fn start(config: Arc<Config>) -> io::Result<Running> {
    let threads = config.runtime.threads.get();
    let mut per_worker: Vec<Vec<(usize, std::net::TcpListener)>> = (0..threads).map(|_| Vec::new()).collect();
    let mut listeners = Vec::new();
    for (i, l) in config.listeners.iter().enumerate() {
        let (addr, sockets) = bind_group(l.bind, threads)
            .map_err(|e| io::Error::new(e.kind(), format!("listener {} on {}: {e}", l.name, l.bind)))?;
        listeners.push((l.name.clone(), addr));
        for (w, s) in sockets.into_iter().enumerate() {
            per_worker[w].push((i, s));
        }
    }
    let cores = if config.runtime.pin_cpus { core_affinity::get_core_ids().unwrap_or_default() } else { Vec::new() };
    let (ready_tx, ready_rx) = mpsc::channel();
    let mut handles = Vec::new();
    for (w, sockets) in per_worker.into_iter().enumerate() {
        let config = Arc::clone(&config);
        let core = (!cores.is_empty()).then(|| cores[w % cores.len()]);
        let ready = ready_tx.clone();
        let handle = std::thread::Builder::new()
            .name(format!("ringway-w{w}"))
            .spawn(move || run_worker(config, sockets, core, ready))?;
        handles.push(handle);
    }
    drop(ready_tx);
    let mut drivers = Vec::new();
    for _ in 0..threads {
        match ready_rx.recv() {
            Ok(Ok(d)) => drivers.push(d),
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(io::Error::other("a worker exited during start")),
        }
    }
    Ok(Running { listeners, drivers, handles })
}

fn run_worker(
    config: Arc<Config>,
    sockets: Vec<(usize, std::net::TcpListener)>,
    core: Option<core_affinity::CoreId>,
    ready: mpsc::Sender<io::Result<String>>,
) {
    if let Some(core) = core {
        core_affinity::set_for_current(core);
    }
    let mut rt = match ring::build(config.runtime.driver, &config.runtime.ring) {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(io::Error::new(e.kind(), format!("cannot build the worker runtime: {e}"))));
            return;
        }
    };
    let driver = rt.describe();
    let worker = Rc::new(Worker {
        pools: RefCell::new(UpstreamPools::new(config.servers.len(), DEFAULT_POOL_IDLE_TIMEOUT)),
        config,
    });
    rt.block_on(async move {
        let mut listeners = Vec::new();
        for (index, socket) in sockets {
            match monoio::net::TcpListener::from_std(socket) {
                Ok(l) => listeners.push((index, l)),
                Err(e) => {
                    let _ = ready.send(Err(e));
                    return;
                }
            }
        }
        let _ = ready.send(Ok(driver));
        let mut tasks = Vec::new();
        for (index, listener) in listeners {
            tasks.push(monoio::spawn(accept_loop(Rc::clone(&worker), index, listener)));
        }
        for t in tasks {
            t.await;
        }
    });
}

async fn accept_loop(worker: Rc<Worker>, index: usize, listener: monoio::net::TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                monoio::spawn(Session::new(Rc::clone(&worker), index, stream, peer).run());
            }
            Err(e) => {
                log::warn!("accept failed: {e}");
                monoio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
            }
        }
    }
}
