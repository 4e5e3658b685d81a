//! Upgraded connections (WebSocket and other `101 Switching Protocols`):
//! after the 101, bytes flow both ways unchanged until a side closes or
//! neither side has sent anything for `tunnel_idle`. Either side may be
//! plain or TLS; each splits into halves so both directions run at once.
//! TCP-mode listeners (`tcp_proxy`) relay their connections with the same
//! code, under `tcp_idle`.

use crate::conn::Conn;
use crate::io_buf::ConnBuf;
use monoio::io::{AsyncWriteRent, CancelHandle, CancelableAsyncReadRent, Canceller, Splitable};
use monoio::time::timeout;
use std::cell::Cell;
use std::time::{Duration, Instant};

/// What a relay moved, and how it ended.
#[derive(Debug, Clone, Copy, Default)]
pub struct Relayed {
    /// Bytes written to the upstream (buffered ones included).
    pub to_upstream: u64,
    /// Bytes written to the client.
    pub to_client: u64,
    /// Ended because neither side sent anything for `idle`.
    pub idled_out: bool,
}

/// Relays between `client` and `upstream`. `cbuf`/`ubuf` may already hold
/// bytes each side sent before the switch; they go first.
pub async fn run(client: Conn, cbuf: ConnBuf, upstream: Conn, ubuf: ConnBuf, idle: Duration) -> Relayed {
    // One monomorphic relay per pair of variants.
    match (client, upstream) {
        (Conn::Plain(c), Conn::Plain(u)) => {
            let ((cr, cw), (ur, uw)) = (c.into_split(), u.into_split());
            relay((cr, cw, cbuf), (ur, uw, ubuf), idle).await
        }
        (Conn::Plain(c), Conn::Tls(u)) => {
            let ((cr, cw), (ur, uw)) = (c.into_split(), u.into_split());
            relay((cr, cw, cbuf), (ur, uw, ubuf), idle).await
        }
        (Conn::Tls(c), Conn::Plain(u)) => {
            let ((cr, cw), (ur, uw)) = (c.into_split(), u.into_split());
            relay((cr, cw, cbuf), (ur, uw, ubuf), idle).await
        }
        (Conn::Tls(c), Conn::Tls(u)) => {
            let ((cr, cw), (ur, uw)) = (c.into_split(), u.into_split());
            relay((cr, cw, cbuf), (ur, uw, ubuf), idle).await
        }
    }
}

async fn relay<CR, CW, UR, UW>(client: (CR, CW, ConnBuf), upstream: (UR, UW, ConnBuf), idle: Duration) -> Relayed
where
    CR: CancelableAsyncReadRent,
    CW: AsyncWriteRent,
    UR: CancelableAsyncReadRent,
    UW: AsyncWriteRent,
{
    let (cr, cw, cbuf) = client;
    let (ur, uw, ubuf) = upstream;
    let last = Cell::new(Instant::now());
    let canceller = Canceller::new();
    let to_upstream = pump(cr, uw, cbuf, canceller.handle(), &last, idle);
    let to_client = pump(ur, cw, ubuf, canceller.handle(), &last, idle);
    let idle_check = async {
        // Reads are cancelled, never dropped mid-flight, so no byte that a
        // read already took from the kernel is lost.
        loop {
            let due = last.get() + idle;
            match due.checked_duration_since(Instant::now()) {
                Some(wait) if !wait.is_zero() => monoio::time::sleep(wait).await,
                _ => {
                    let _ = canceller.cancel();
                    return;
                }
            }
        }
    };
    // Both pumps always finish: an idle timeout cancels their reads.
    let (up, down, idled_out) = {
        let both = async { monoio::join!(to_upstream, to_client) };
        let mut both = std::pin::pin!(both);
        monoio::select! {
            (up, down) = &mut both => (up, down, false),
            _ = idle_check => {
                let (up, down) = both.await;
                (up, down, true)
            }
        }
    };
    Relayed { to_upstream: up, to_client: down, idled_out }
}

async fn pump<R: CancelableAsyncReadRent, W: AsyncWriteRent>(
    mut from: R,
    mut to: W,
    mut buf: ConnBuf,
    cancel: CancelHandle,
    last: &Cell<Instant>,
    idle: Duration,
) -> u64 {
    let mut moved = 0;
    loop {
        if !buf.is_empty() {
            last.set(Instant::now());
            let n = buf.len();
            match timeout(idle, buf.write_to(&mut to, n)).await {
                Ok(Ok(())) => moved += n as u64,
                _ => break,
            }
        }
        match buf.fill_cancelable(&mut from, cancel.clone()).await {
            Ok(n) if n > 0 => {}
            _ => break,
        }
    }
    // Pass the half-close on: the other direction may still have bytes.
    let _ = to.shutdown().await;
    moved
}
