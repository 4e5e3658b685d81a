//! The two halves of a split `TlsStream`, for a tunnel's two directions
//! at once. They share the rustls session through a `RefCell` that is never
//! held across a wait: each half borrows it only between socket operations.

use super::stream::{closed_without_notify, fill, plain_bytes, read_step, ReadStep};
use crate::io_buf::ConnBuf;
use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent, CancelHandle, CancelableAsyncReadRent, OwnedReadHalf, OwnedWriteHalf};
use monoio::net::TcpStream;
use rustls::Connection;
use std::cell::RefCell;
use std::io::{self, Write};
use std::rc::Rc;

/// The reading half of a split `TlsStream`.
pub struct TlsReadHalf {
    tcp: OwnedReadHalf<TcpStream>,
    session: Rc<RefCell<Connection>>,
    cin: ConnBuf,
}

/// The writing half of a split `TlsStream`.
pub struct TlsWriteHalf {
    tcp: OwnedWriteHalf<TcpStream>,
    session: Rc<RefCell<Connection>>,
    cout: Vec<u8>,
}

impl TlsReadHalf {
    pub(super) fn new(tcp: OwnedReadHalf<TcpStream>, session: Rc<RefCell<Connection>>, cin: ConnBuf) -> Self {
        TlsReadHalf { tcp, session, cin }
    }

    /// Reads plaintext like `TlsStream`'s read. Anything rustls must send
    /// in answer (a key update) goes out with the write half's next write.
    async fn read_into<T: IoBufMut>(
        &mut self,
        mut buf: T,
        cancel: Option<CancelHandle>,
    ) -> monoio::BufResult<usize, T> {
        loop {
            // The session is borrowed only for the synchronous step, never
            // across the socket read. What rustls owes the peer goes out
            // with the write half's next write.
            let step = read_step(&mut self.session.borrow_mut(), &mut self.cin, &mut buf);
            match step {
                ReadStep::Done(r) => return (r, buf),
                ReadStep::Again => {}
                ReadStep::NeedBytes => match fill(&mut self.cin, &mut self.tcp, &cancel).await {
                    Ok(0) => return (closed_without_notify(&self.session.borrow()), buf),
                    Ok(_) => {}
                    Err(e) => return (Err(e), buf),
                },
            }
        }
    }
}

impl AsyncReadRent for TlsReadHalf {
    async fn read<T: IoBufMut>(&mut self, buf: T) -> monoio::BufResult<usize, T> {
        self.read_into(buf, None).await
    }

    async fn readv<T: monoio::buf::IoVecBufMut>(&mut self, buf: T) -> monoio::BufResult<usize, T> {
        (Err(io::ErrorKind::Unsupported.into()), buf)
    }
}

impl CancelableAsyncReadRent for TlsReadHalf {
    async fn cancelable_read<T: IoBufMut>(&mut self, buf: T, c: CancelHandle) -> monoio::BufResult<usize, T> {
        self.read_into(buf, Some(c)).await
    }

    async fn cancelable_readv<T: monoio::buf::IoVecBufMut>(
        &mut self,
        buf: T,
        _c: CancelHandle,
    ) -> monoio::BufResult<usize, T> {
        (Err(io::ErrorKind::Unsupported.into()), buf)
    }
}

impl AsyncWriteRent for TlsWriteHalf {
    async fn write<T: IoBuf>(&mut self, buf: T) -> monoio::BufResult<usize, T> {
        let res = match self.session.borrow_mut().writer().write(plain_bytes(&buf)) {
            Ok(n) => Ok(n),
            Err(e) => return (Err(e), buf),
        };
        match self.flush_pending().await {
            Ok(()) => (res, buf),
            Err(e) => (Err(e), buf),
        }
    }

    async fn writev<T: monoio::buf::IoVecBuf>(&mut self, buf: T) -> monoio::BufResult<usize, T> {
        (Err(io::ErrorKind::Unsupported.into()), buf)
    }

    async fn flush(&mut self) -> io::Result<()> {
        self.flush_pending().await
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        self.session.borrow_mut().send_close_notify();
        self.flush_pending().await?;
        self.tcp.shutdown().await
    }
}

impl TlsWriteHalf {
    pub(super) fn new(tcp: OwnedWriteHalf<TcpStream>, session: Rc<RefCell<Connection>>, cout: Vec<u8>) -> Self {
        TlsWriteHalf { tcp, session, cout }
    }

    /// Writes out whatever rustls has pending, without holding the session
    /// across the socket write.
    async fn flush_pending(&mut self) -> io::Result<()> {
        loop {
            self.cout.clear();
            {
                let mut session = self.session.borrow_mut();
                if !session.wants_write() {
                    return Ok(());
                }
                session.write_tls(&mut self.cout)?;
            }
            crate::io_buf::write_out(&mut self.tcp, &mut self.cout).await?;
        }
    }
}
