//! Upgraded connections (WebSocket and other `101 Switching Protocols`):
//! after the 101, bytes flow both ways unchanged until a side closes or
//! neither side has sent anything for `tunnel_idle`. Either side may be
//! plain or TLS; each splits into halves so both directions run at once.

use crate::conn::Conn;
use crate::io_buf::ConnBuf;
use monoio::io::{AsyncWriteRent, CancelHandle, CancelableAsyncReadRent, Canceller, Splitable};
use monoio::time::timeout;
use std::cell::Cell;
use std::time::{Duration, Instant};

/// Relays between `client` and `upstream`. `cbuf`/`ubuf` may already hold
/// bytes each side sent before the switch; they go first.
pub async fn run(client: Conn, cbuf: ConnBuf, upstream: Conn, ubuf: ConnBuf, idle: Duration) {
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

async fn relay<CR, CW, UR, UW>(client: (CR, CW, ConnBuf), upstream: (UR, UW, ConnBuf), idle: Duration)
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
    monoio::select! {
        _ = async { monoio::join!(to_upstream, to_client) } => {}
        _ = idle_check => {}
    }
}

async fn pump<R: CancelableAsyncReadRent, W: AsyncWriteRent>(
    mut from: R,
    mut to: W,
    mut buf: ConnBuf,
    cancel: CancelHandle,
    last: &Cell<Instant>,
    idle: Duration,
) {
    loop {
        if !buf.is_empty() {
            last.set(Instant::now());
            let n = buf.len();
            match timeout(idle, buf.write_to(&mut to, n)).await {
                Ok(Ok(())) => {}
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
}
