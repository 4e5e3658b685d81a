//! Upgraded connections (WebSocket and other `101 Switching Protocols`):
//! after the 101, bytes flow both ways unchanged until a side closes or
//! neither side has sent anything for `tunnel_idle`.

use super::conn::ClientConn;
use crate::io_buf::ConnBuf;
use monoio::io::{AsyncWriteRent, CancelHandle, Canceller, OwnedReadHalf, OwnedWriteHalf, Splitable};
use monoio::net::TcpStream;
use monoio::time::timeout;
use std::cell::Cell;
use std::time::{Duration, Instant};

/// Relays between `client` and `upstream`. `cbuf`/`ubuf` may already hold
/// bytes each side sent before the switch; they go first.
pub async fn run(client: ClientConn, cbuf: ConnBuf, upstream: TcpStream, ubuf: ConnBuf, idle: Duration) {
    // Each variant splits its own way (a TLS stream will need its own halves).
    let (cr, cw) = match client {
        ClientConn::Plain(s) => s.into_split(),
    };
    let (ur, uw) = upstream.into_split();
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

async fn pump(
    mut from: OwnedReadHalf<TcpStream>,
    mut to: OwnedWriteHalf<TcpStream>,
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
