//! `Conn`: one side of a proxied exchange (the client, or an upstream), whatever carries it: a plain TCP stream
//! or a TLS stream (`tls::TlsStream`). The request path reads and writes
//! through these trait impls (enum dispatch: a `match`, not a trait object,
//! on every operation), so it is the same code over plaintext and TLS.
//! A TLS operation's future is boxed: it is several times a plain one's,
//! and every connection's task (idle ones included) is as large as the
//! largest future it awaits inline. One small allocation per TLS read or
//! write is cheap next to the record's crypto.

use crate::tls::client::UpstreamTls;
use crate::tls::TlsStream;
use monoio::buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent, CancelHandle, CancelableAsyncReadRent};
use monoio::net::TcpStream;
use monoio::BufResult;
use pin_project_lite::pin_project;
use socket2::SockRef;
use std::future::Future;
use std::io;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// A connection, client or upstream side.
pub enum Conn {
    /// Plaintext HTTP over TCP.
    Plain(TcpStream),
    /// HTTP over TLS (boxed: the rustls state is large, and a plain
    /// connection should not pay for it).
    Tls(Box<TlsStream>),
}

impl Conn {
    /// Connects to `addr`; sends `proxy_header` first if it is not empty
    /// (a PROXY protocol header); on a TLS upstream then shakes hands, with
    /// the server name from `tls` or the host of `name` (the server as
    /// written in the config). The caller bounds it in time.
    pub async fn connect(
        addr: SocketAddr,
        tls: Option<&UpstreamTls>,
        name: &str,
        proxy_header: &[u8],
    ) -> io::Result<Conn> {
        let mut tcp = TcpStream::connect_addr(addr).await?;
        let _ = tcp.set_nodelay(true);
        if !proxy_header.is_empty() {
            let (res, _) = monoio::io::AsyncWriteRentExt::write_all(&mut tcp, proxy_header.to_vec()).await;
            res?;
        }
        let Some(tls) = tls else { return Ok(Conn::Plain(tcp)) };
        let session =
            rustls::ClientConnection::new(Arc::clone(&tls.config), tls.server_name(name)).map_err(io::Error::other)?;
        let mut stream = Box::new(TlsStream::new(tcp, rustls::Connection::Client(session)));
        stream.handshake().await?;
        Ok(Conn::Tls(stream))
    }

    /// Waits until the connection has bytes to read (or is closed), holding
    /// no buffer: how an idle keep-alive connection waits.
    /// Not an `async fn`: the wait is held by every idle and parked
    /// connection, and the enum adds nothing to the plain future's size.
    pub fn readable(&mut self, relaxed: bool) -> impl Future<Output = io::Result<()>> + '_ {
        match self {
            Conn::Plain(s) => Either::Plain { f: s.readable(relaxed) },
            Conn::Tls(s) => Either::Tls { f: Box::pin(s.readable(relaxed)) },
        }
    }

    /// The subject of the client's verified certificate (mTLS listeners).
    pub fn client_subject(&self) -> Option<&[u8]> {
        match self {
            Conn::Plain(_) => None,
            Conn::Tls(s) => s.peer_subject.as_deref(),
        }
    }

    /// The local address of the socket (the address a client connected to).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match self {
            Conn::Plain(s) => s.local_addr(),
            Conn::Tls(s) => s.tcp().local_addr(),
        }
    }

    /// The TLS session, on a TLS connection.
    pub fn tls(&self) -> Option<&rustls::Connection> {
        match self {
            Conn::Plain(_) => None,
            Conn::Tls(s) => Some(s.session()),
        }
    }

    /// Whether the client's next bytes already arrived (one non-blocking
    /// peek; used only during a graceful stop, to serve a request that was
    /// already on its way instead of closing under it).
    pub fn has_bytes_waiting(&mut self) -> bool {
        match self {
            Conn::Plain(s) => peek_one(s),
            Conn::Tls(s) => s.has_buffered() || peek_one(s.tcp()),
        }
    }
}

impl AsyncReadRent for Conn {
    fn read<T: IoBufMut>(&mut self, buf: T) -> impl Future<Output = BufResult<usize, T>> {
        match self {
            Conn::Plain(s) => Either::Plain { f: s.read(buf) },
            Conn::Tls(s) => Either::Tls { f: Box::pin(s.read(buf)) },
        }
    }

    fn readv<T: IoVecBufMut>(&mut self, buf: T) -> impl Future<Output = BufResult<usize, T>> {
        match self {
            Conn::Plain(s) => Either::Plain { f: s.readv(buf) },
            Conn::Tls(s) => Either::Tls { f: Box::pin(s.readv(buf)) },
        }
    }
}

impl CancelableAsyncReadRent for Conn {
    fn cancelable_read<T: IoBufMut>(&mut self, buf: T, c: CancelHandle) -> impl Future<Output = BufResult<usize, T>> {
        match self {
            Conn::Plain(s) => Either::Plain { f: s.cancelable_read(buf, c) },
            Conn::Tls(s) => Either::Tls { f: Box::pin(s.cancelable_read(buf, c)) },
        }
    }

    fn cancelable_readv<T: IoVecBufMut>(
        &mut self,
        buf: T,
        c: CancelHandle,
    ) -> impl Future<Output = BufResult<usize, T>> {
        match self {
            Conn::Plain(s) => Either::Plain { f: s.cancelable_readv(buf, c) },
            Conn::Tls(s) => Either::Tls { f: Box::pin(s.cancelable_readv(buf, c)) },
        }
    }
}

impl AsyncWriteRent for Conn {
    fn write<T: IoBuf>(&mut self, buf: T) -> impl Future<Output = BufResult<usize, T>> {
        match self {
            Conn::Plain(s) => Either::Plain { f: s.write(buf) },
            Conn::Tls(s) => Either::Tls { f: Box::pin(s.write(buf)) },
        }
    }

    fn writev<T: IoVecBuf>(&mut self, buf_vec: T) -> impl Future<Output = BufResult<usize, T>> {
        match self {
            Conn::Plain(s) => Either::Plain { f: s.writev(buf_vec) },
            Conn::Tls(s) => Either::Tls { f: Box::pin(s.writev(buf_vec)) },
        }
    }

    fn flush(&mut self) -> impl Future<Output = io::Result<()>> {
        match self {
            Conn::Plain(s) => Either::Plain { f: s.flush() },
            Conn::Tls(s) => Either::Tls { f: Box::pin(s.flush()) },
        }
    }

    fn shutdown(&mut self) -> impl Future<Output = io::Result<()>> {
        match self {
            Conn::Plain(s) => Either::Plain { f: s.shutdown() },
            Conn::Tls(s) => Either::Tls { f: Box::pin(s.shutdown()) },
        }
    }
}

pin_project! {
    /// The future of one operation on either variant, without an `async`
    /// wrapper (which would store the operation's arguments a second time
    /// in every connection's task).
    #[project = EitherProj]
    enum Either<P, T> {
        /// A plain socket operation, inline.
        Plain { #[pin] f: P },
        /// A TLS operation, boxed.
        Tls { #[pin] f: T },
    }
}

impl<P: Future, T: Future<Output = P::Output>> Future for Either<P, T> {
    type Output = P::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<P::Output> {
        match self.project() {
            EitherProj::Plain { f } => f.poll(cx),
            EitherProj::Tls { f } => f.poll(cx),
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
