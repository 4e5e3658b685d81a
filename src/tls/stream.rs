//! `TlsStream`: a rustls connection over a monoio TCP stream, our own thin
//! adapter (see `docs/architecture.md`, "TLS"). Why not `monoio-rustls`:
//! its reads are not cancellable (a hot wait cancels its read when its
//! window passes and must get back every byte the read took), it holds two
//! fixed 16 KiB buffers per connection for its whole life, and it cannot
//! split into halves that run at once (a WebSocket tunnel needs that).
//!
//! Ciphertext from the socket goes into `cin` (a `ConnBuf`, so a cancelled
//! read keeps what it got), then into rustls, which decrypts it; plaintext
//! leaves rustls straight into the caller's buffer. Writes encrypt into
//! `cout` and go out whole before `write` returns.

use super::halves::{TlsReadHalf, TlsWriteHalf};
use crate::io_buf::ConnBuf;
use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent, CancelHandle};
use monoio::io::{CancelableAsyncReadRent, Splitable};
use monoio::net::TcpStream;
use rustls::Connection;
use std::cell::RefCell;
use std::io::{self, BufRead, Write};
use std::rc::Rc;

/// Most ciphertext buffered from the socket at once: four full records.
const CIPHER_IN_MAX: usize = 4 * 16_709;
/// First allocation of `cin`: one full TLS record and its header.
const CIPHER_IN_FIRST: usize = 16_709;
/// A ciphertext write buffer larger than this is freed before an idle wait.
const COUT_KEEP_BYTES: usize = 4096;
/// Most bytes a peer may send before its handshake completes (a client
/// certificate chain included). rustls also caps one handshake message at
/// 64 KiB; this caps the whole flight.
pub const HANDSHAKE_MAX_BYTES: usize = 64 * 1024;

/// One TLS connection, client or server side.
pub struct TlsStream {
    /// The socket.
    tcp: TcpStream,
    /// The TLS state: keys, handshake, and rustls's own record buffers.
    session: Connection,
    /// Ciphertext read from the socket that rustls has not taken yet.
    cin: ConnBuf,
    /// Ciphertext rustls produced, while it is being written.
    cout: Vec<u8>,
    /// The subject of the peer's verified certificate, as text for a
    /// header (set after a handshake that asked for one).
    pub peer_subject: Option<Box<[u8]>>,
}

/// Why a read or handshake failed, kept inside the `io::Error` so that
/// callers can count failures by reason (`reason`).
fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// The rustls error inside an `io::Error`, if that is what it carries.
pub fn rustls_error(e: &io::Error) -> Option<&rustls::Error> {
    e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>())
}

impl TlsStream {
    /// Wraps `tcp`; nothing is sent until `handshake`.
    pub fn new(tcp: TcpStream, session: Connection) -> Self {
        TlsStream { tcp, session, cin: ConnBuf::unallocated(CIPHER_IN_MAX), cout: Vec::new(), peer_subject: None }
    }

    /// Wraps `tcp`, whose first bytes were already read into `received`
    /// (what followed a PROXY protocol header).
    pub fn with_received(tcp: TcpStream, session: Connection, received: ConnBuf) -> Self {
        let mut stream = TlsStream::new(tcp, session);
        if !received.is_empty() {
            stream.cin = received;
        }
        stream
    }

    /// The rustls state (negotiated version, cipher suite, SNI, peer
    /// certificates).
    pub fn session(&self) -> &Connection {
        &self.session
    }

    /// The socket underneath (for peeks and socket options).
    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    /// Gives `cin` its first storage: one whole record, so a full record
    /// arrives in one read.
    pub(super) fn equip(cin: &mut ConnBuf) {
        if !cin.has_storage() {
            *cin = ConnBuf::new(CIPHER_IN_FIRST, CIPHER_IN_MAX);
        }
    }

    /// Runs the handshake to its end. Bounded in bytes (`HANDSHAKE_MAX_BYTES`);
    /// the caller bounds it in time.
    pub async fn handshake(&mut self) -> io::Result<()> {
        let mut received = self.cin.len();
        loop {
            // Bytes already here (read with a PROXY header, or behind the
            // last record) go to rustls before the socket is read again.
            if !self.cin.is_empty() {
                if let Err(e) = feed(&mut self.session, &mut self.cin) {
                    // rustls queued an alert saying why; send it if we can.
                    let _ = self.flush_out().await;
                    return Err(e);
                }
            }
            if self.session.wants_write() {
                self.flush_out().await?;
            }
            if !self.session.is_handshaking() {
                return Ok(());
            }
            if received > HANDSHAKE_MAX_BYTES {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "handshake too large"));
            }
            TlsStream::equip(&mut self.cin);
            match self.cin.fill(&mut self.tcp).await? {
                0 => return Err(io::ErrorKind::UnexpectedEof.into()),
                n => received += n,
            }
        }
    }

    /// Whether a read would return without touching the socket: plaintext
    /// or ciphertext is already buffered.
    pub fn has_buffered(&mut self) -> bool {
        !self.cin.is_empty() || has_plaintext(&mut self.session)
    }

    /// Waits until there is something to read, holding no read buffer
    /// (the idle wait): an empty `cin` gives its storage back first.
    pub async fn readable(&mut self, relaxed: bool) -> io::Result<()> {
        if self.has_buffered() {
            return Ok(());
        }
        self.cin = ConnBuf::unallocated(CIPHER_IN_MAX);
        // The write buffer keeps the size of the largest response written;
        // an idle connection gives a large one back.
        if self.cout.capacity() > COUT_KEEP_BYTES {
            self.cout = Vec::new();
        }
        self.tcp.readable(relaxed).await
    }

    /// Takes in ciphertext that already arrived without waiting (a pooled
    /// upstream connection's session tickets). False if the connection is
    /// no longer usable: it closed, failed, or sent plaintext nobody asked for.
    pub fn absorb(&mut self, bytes: &[u8]) -> bool {
        let mut rest = bytes;
        while !rest.is_empty() {
            match self.session.read_tls(&mut rest) {
                Ok(n) if n > 0 => {}
                _ => return false,
            }
            match self.session.process_new_packets() {
                Ok(state) if state.plaintext_bytes_to_read() == 0 && !state.peer_has_closed() => {}
                _ => return false,
            }
        }
        true
    }

    /// Reads plaintext into `buf` (appending at its write position).
    /// `Ok(0)` is the end of the stream (a close_notify, or a plain close).
    /// With `cancel`, the socket read ends early when it fires (`ECANCELED`),
    /// and any ciphertext it got stays buffered.
    async fn read_into<T: IoBufMut>(
        &mut self,
        mut buf: T,
        cancel: Option<CancelHandle>,
    ) -> monoio::BufResult<usize, T> {
        loop {
            match read_step(&mut self.session, &mut self.cin, &mut buf) {
                ReadStep::Done(r) => {
                    if r.is_err() && self.session.wants_write() {
                        // rustls queued an alert saying why; send it if we can.
                        let _ = Box::pin(self.flush_out()).await;
                    }
                    return (r, buf);
                }
                ReadStep::Again => {
                    // Writes during a read are rare (a key update's
                    // answer): boxed, so every read's future stays small.
                    if self.session.wants_write() {
                        if let Err(e) = Box::pin(self.flush_out()).await {
                            return (Err(e), buf);
                        }
                    }
                }
                ReadStep::NeedBytes => match fill(&mut self.cin, &mut self.tcp, &cancel).await {
                    Ok(0) => return (closed_without_notify(&self.session), buf),
                    Ok(_) => {}
                    Err(e) => return (Err(e), buf),
                },
            }
        }
    }

    /// Writes what rustls has encrypted to the socket, all of it.
    async fn flush_out(&mut self) -> io::Result<()> {
        write_pending(&mut self.session, &mut self.cout, &mut self.tcp).await
    }

    /// Encrypts and sends `plain` (some prefix of it); returns how much.
    async fn write_plain(&mut self, plain: &[u8]) -> io::Result<usize> {
        if self.session.wants_write() {
            self.flush_out().await?;
        }
        let n = self.session.writer().write(plain)?;
        self.flush_out().await?;
        Ok(n)
    }

    /// Splits into halves that can run at once (a tunnel's two directions).
    /// Neither half holds the session across a wait, so they share it
    /// through a `RefCell` without ever finding it borrowed.
    pub fn into_split(self) -> (TlsReadHalf, TlsWriteHalf) {
        let (r, w) = self.tcp.into_split();
        let session = Rc::new(RefCell::new(self.session));
        (TlsReadHalf::new(r, Rc::clone(&session), self.cin), TlsWriteHalf::new(w, session, self.cout))
    }
}

/// What a read does next (see `read_step`).
pub(super) enum ReadStep {
    /// Return this: plaintext delivered (`Ok(n)`), the end (`Ok(0)`), or
    /// a failure.
    Done(io::Result<usize>),
    /// Progress was made without plaintext for the caller; look again
    /// (after sending what rustls owes the peer, where one can).
    Again,
    /// Read more ciphertext from the socket first.
    NeedBytes,
}

/// The synchronous part of a read, shared by `TlsStream` and its read
/// half: deliver plaintext if there is some, else decrypt what is
/// buffered, else ask for bytes.
pub(super) fn read_step<T: IoBufMut>(session: &mut Connection, cin: &mut ConnBuf, buf: &mut T) -> ReadStep {
    match take_plaintext(session, buf) {
        Ok(Some(n)) => return ReadStep::Done(Ok(n)),
        Ok(None) => {}
        Err(e) => return ReadStep::Done(Err(e)),
    }
    if cin.is_empty() {
        return ReadStep::NeedBytes;
    }
    if let Err(e) = feed(session, cin) {
        return ReadStep::Done(Err(e));
    }
    if has_plaintext(session) || session.wants_write() || cin.is_empty() {
        ReadStep::Again
    } else {
        // A partial record: its rest is still on the way.
        ReadStep::NeedBytes
    }
}

/// The socket closed with no `close_notify` seen (one would have ended
/// the read before the socket was read again). From a client, the same as
/// a TCP close: a request's framing says whether anything was cut short.
/// From an upstream it is an error: a response delimited by the close
/// could otherwise be truncated by anyone on the path.
pub(super) fn closed_without_notify(session: &Connection) -> io::Result<usize> {
    match session {
        Connection::Server(_) => Ok(0),
        Connection::Client(_) => Err(io::ErrorKind::UnexpectedEof.into()),
    }
}

/// One socket read into `cin` (given storage first). `Ok(0)`: the peer
/// closed the socket, which the caller reports as the end of the stream
/// (a close without `close_notify` is a TCP close, as for plaintext).
pub(super) async fn fill<R: CancelableAsyncReadRent>(
    cin: &mut ConnBuf,
    tcp: &mut R,
    cancel: &Option<CancelHandle>,
) -> io::Result<usize> {
    TlsStream::equip(cin);
    match cancel {
        Some(c) => cin.fill_cancelable(tcp, c.clone()).await,
        None => cin.fill(tcp).await,
    }
}

/// Hands buffered ciphertext to rustls and decrypts it, until `cin` is
/// empty or rustls holds as much plaintext as it will.
pub(super) fn feed(session: &mut Connection, cin: &mut ConnBuf) -> io::Result<()> {
    while !cin.is_empty() {
        let mut data = cin.data();
        let n = match session.read_tls(&mut data) {
            Ok(n) => n,
            // Its plaintext buffer is full: the caller reads some first.
            Err(e) if e.kind() == io::ErrorKind::Other => return Ok(()),
            Err(e) => return Err(e),
        };
        cin.consume(n);
        session.process_new_packets().map_err(tls_error)?;
        if n == 0 {
            break;
        }
    }
    Ok(())
}

pub(super) fn has_plaintext(session: &mut Connection) -> bool {
    matches!(session.reader().fill_buf(), Ok(b) if !b.is_empty())
}

/// Moves decrypted bytes into `buf`. `Some(0)`: the peer closed.
/// `None`: none yet.
pub(super) fn take_plaintext<T: IoBufMut>(session: &mut Connection, buf: &mut T) -> io::Result<Option<usize>> {
    let room = buf.bytes_total();
    let from_client = matches!(session, Connection::Server(_));
    let mut reader = session.reader();
    let n = match reader.fill_buf() {
        Ok(chunk) => {
            let n = chunk.len().min(room);
            copy_into(buf, &chunk[..n]);
            n
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
        // Closed without a close_notify. From a client, the same as a TCP
        // close (a request's framing says whether anything was cut short).
        // From an upstream it is an error: a response delimited by the
        // close could otherwise be truncated by anyone on the path.
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && from_client => return Ok(Some(0)),
        Err(e) => return Err(e),
    };
    reader.consume(n);
    Ok(Some(n))
}

/// Copies `bytes` (at most `buf.bytes_total()`) to the start of `buf`'s
/// writable area and marks them initialized.
#[allow(unsafe_code)]
fn copy_into<T: IoBufMut>(buf: &mut T, bytes: &[u8]) {
    assert!(bytes.len() <= buf.bytes_total());
    // SAFETY: `write_ptr` points at `bytes_total()` writable bytes (the
    // `IoBufMut` contract), and we copy no more than that (asserted above)
    // from a slice that cannot overlap a buffer we hold `&mut` to.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), buf.write_ptr(), bytes.len());
        buf.set_init(bytes.len());
    }
}

/// Writes all of rustls's pending ciphertext to `tcp`, through `cout`.
async fn write_pending<W: AsyncWriteRent>(session: &mut Connection, cout: &mut Vec<u8>, tcp: &mut W) -> io::Result<()> {
    while session.wants_write() {
        cout.clear();
        session.write_tls(cout)?;
        crate::io_buf::write_out(tcp, cout).await?;
    }
    Ok(())
}

/// The plaintext bytes of an `IoBuf`.
#[allow(unsafe_code)]
pub(super) fn plain_bytes<T: IoBuf>(buf: &T) -> &[u8] {
    // SAFETY: `read_ptr` points at `bytes_init()` initialized bytes that
    // live as long as `buf` (the `IoBuf` contract).
    unsafe { std::slice::from_raw_parts(buf.read_ptr(), buf.bytes_init()) }
}

impl AsyncReadRent for TlsStream {
    async fn read<T: IoBufMut>(&mut self, buf: T) -> monoio::BufResult<usize, T> {
        self.read_into(buf, None).await
    }

    async fn readv<T: monoio::buf::IoVecBufMut>(&mut self, buf: T) -> monoio::BufResult<usize, T> {
        // Nothing reads a client or upstream connection vectored.
        (Err(io::ErrorKind::Unsupported.into()), buf)
    }
}

impl CancelableAsyncReadRent for TlsStream {
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

impl AsyncWriteRent for TlsStream {
    async fn write<T: IoBuf>(&mut self, buf: T) -> monoio::BufResult<usize, T> {
        let res = self.write_plain(plain_bytes(&buf)).await;
        (res, buf)
    }

    async fn writev<T: monoio::buf::IoVecBuf>(&mut self, buf: T) -> monoio::BufResult<usize, T> {
        // Nothing writes a client or upstream connection vectored.
        (Err(io::ErrorKind::Unsupported.into()), buf)
    }

    async fn flush(&mut self) -> io::Result<()> {
        self.flush_out().await
    }

    /// Sends a close_notify, then half-closes the socket.
    async fn shutdown(&mut self) -> io::Result<()> {
        self.session.send_close_notify();
        self.flush_out().await?;
        self.tcp.shutdown().await
    }
}
