//! `ClientConn`: the client side of a session, whatever carries it. Today a
//! plain TCP stream; a TLS stream becomes a second variant without touching
//! the request path, which reads and writes through these trait impls (enum
//! dispatch: a `match`, not a trait object, on every operation).

use monoio::buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent, CancelHandle, CancelableAsyncReadRent};
use monoio::net::TcpStream;
use monoio::BufResult;
use socket2::SockRef;
use std::future::Future;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd};

/// A client connection.
pub enum ClientConn {
    /// Plaintext HTTP over TCP.
    Plain(TcpStream),
}

impl ClientConn {
    /// Waits until the connection has bytes to read (or is closed), holding
    /// no buffer: how an idle keep-alive connection waits.
    pub async fn readable(&self, relaxed: bool) -> io::Result<()> {
        match self {
            ClientConn::Plain(s) => s.readable(relaxed).await,
        }
    }

    /// Whether the client's next bytes already arrived (one non-blocking
    /// peek; used only during a graceful stop, to serve a request that was
    /// already on its way instead of closing under it).
    pub fn has_bytes_waiting(&self) -> bool {
        match self {
            ClientConn::Plain(s) => peek_one(s),
        }
    }
}

impl AsyncReadRent for ClientConn {
    fn read<T: IoBufMut>(&mut self, buf: T) -> impl Future<Output = BufResult<usize, T>> {
        match self {
            ClientConn::Plain(s) => s.read(buf),
        }
    }

    fn readv<T: IoVecBufMut>(&mut self, buf: T) -> impl Future<Output = BufResult<usize, T>> {
        match self {
            ClientConn::Plain(s) => s.readv(buf),
        }
    }
}

impl CancelableAsyncReadRent for ClientConn {
    fn cancelable_read<T: IoBufMut>(&mut self, buf: T, c: CancelHandle) -> impl Future<Output = BufResult<usize, T>> {
        match self {
            ClientConn::Plain(s) => s.cancelable_read(buf, c),
        }
    }

    fn cancelable_readv<T: IoVecBufMut>(
        &mut self,
        buf: T,
        c: CancelHandle,
    ) -> impl Future<Output = BufResult<usize, T>> {
        match self {
            ClientConn::Plain(s) => s.cancelable_readv(buf, c),
        }
    }
}

impl AsyncWriteRent for ClientConn {
    fn write<T: IoBuf>(&mut self, buf: T) -> impl Future<Output = BufResult<usize, T>> {
        match self {
            ClientConn::Plain(s) => s.write(buf),
        }
    }

    fn writev<T: IoVecBuf>(&mut self, buf_vec: T) -> impl Future<Output = BufResult<usize, T>> {
        match self {
            ClientConn::Plain(s) => s.writev(buf_vec),
        }
    }

    fn flush(&mut self) -> impl Future<Output = io::Result<()>> {
        match self {
            ClientConn::Plain(s) => s.flush(),
        }
    }

    fn shutdown(&mut self) -> impl Future<Output = io::Result<()>> {
        match self {
            ClientConn::Plain(s) => s.shutdown(),
        }
    }
}

// `proxy::conn` borrows the client socket's raw fd for a non-blocking peek
// (monoio streams do not implement `AsFd`).
#[allow(unsafe_code)]
fn peek_one(stream: &TcpStream) -> bool {
    // SAFETY: the fd belongs to `stream`, which outlives this borrow; monoio
    // streams do not implement `AsFd`, so we borrow the raw fd for the call.
    let fd = unsafe { BorrowedFd::borrow_raw(stream.as_raw_fd()) };
    let mut byte = [MaybeUninit::<u8>::uninit()];
    let peek = SockRef::from(&fd).recv_with_flags(&mut byte, libc::MSG_PEEK | libc::MSG_DONTWAIT);
    matches!(peek, Ok(n) if n > 0)
}
