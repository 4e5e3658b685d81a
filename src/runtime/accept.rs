//! A worker's accept loop for one listener: each accepted connection is
//! spawned as its own task on this worker, as an HTTP `Session` directly
//! or through the accept phase (`proxy::serve`: PROXY header, TLS, TCP
//! mode), by the listener's settings at that moment.

use super::Worker;
use crate::proxy::{serve, Conn, Session};
use monoio::io::CancelHandle;
use monoio::net::TcpListener;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

/// Pause after an accept error (e.g. out of file descriptors) so a worker
/// does not spin.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(20);

/// Accepts on `listener` until `cancel` fires (the listener left the
/// config, or a graceful stop began).
pub(super) async fn accept_loop(worker: Rc<Worker>, name: Arc<str>, listener: TcpListener, cancel: CancelHandle) {
    // This worker's own copy: sessions clone it per connection, and the
    // count of a shared `Arc` would be a cache line every worker writes.
    let name: Arc<str> = Arc::from(&*name);
    loop {
        match listener.cancelable_accept(cancel.clone()).await {
            Ok((stream, peer)) => {
                // TCP_NODELAY comes from the listening socket (Linux copies
                // it to accepted ones), saving a syscall per connection.
                // The listener's current settings (TLS certificates, PROXY
                // protocol, mode), so a reload applies to the next connection.
                if crate::proxy::needs_preamble(&worker.config(), &name) {
                    // Boxed: rare next to plain HTTP, and larger.
                    monoio::spawn(Box::pin(serve(Rc::clone(&worker), Arc::clone(&name), stream, peer)));
                } else {
                    monoio::spawn(Session::new(Rc::clone(&worker), Arc::clone(&name), Conn::Plain(stream), peer).run());
                }
            }
            Err(e) if e.raw_os_error() == Some(libc::ECANCELED) => return,
            Err(e) => {
                log::warn!("listener {name}: accept failed: {e}");
                monoio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
            }
        }
    }
}
