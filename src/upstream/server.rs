//! Process-wide server identities. Every distinct backend address gets one
//! `ServerState` for the life of the process, so state that must outlive a
//! config reload (its pool slot in each worker, the admin drain flag) stays
//! attached to the address, whichever snapshot names it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

#[derive(Debug)]
pub struct ServerState {
    pub addr: SocketAddr,
    /// Stable index: names this server's pool in every worker.
    pub id: usize,
    /// Taken out of rotation by the admin API (in-flight requests finish).
    drained: AtomicBool,
}

impl ServerState {
    pub fn is_drained(&self) -> bool {
        self.drained.load(Ordering::Relaxed)
    }

    pub fn set_drained(&self, drained: bool) {
        self.drained.store(drained, Ordering::Relaxed);
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
    let state = Arc::new(ServerState { addr, id: all.len(), drained: AtomicBool::new(false) });
    all.push(Arc::clone(&state));
    state
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_state_per_address() {
        let a = server_state("127.0.0.1:40001".parse().expect("addr"));
        let b = server_state("127.0.0.1:40002".parse().expect("addr"));
        let a2 = server_state("127.0.0.1:40001".parse().expect("addr"));
        assert!(Arc::ptr_eq(&a, &a2));
        assert_ne!(a.id, b.id);
        a.set_drained(true);
        assert!(a2.is_drained());
    }
}
