//! Socket I/O shared by the proxy, the admin listener and the demo
//! backend. `ConnBuf`: a connection's read buffer. Bytes live in `buf[start..]`;
//! reads append into the spare capacity (monoio reads write from the start
//! of the buffer they are given, so we hand them `slice_mut(len..cap)`), and
//! consumed bytes advance `start`, so pipelined bytes stay where they are.

use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRentExt, CancelHandle, CancelableAsyncReadRent};
use std::io;

/// A connection's read buffer: unread bytes at the front, room to read into
/// at the back; see the module doc.
#[derive(Debug, Default)]
pub struct ConnBuf {
    buf: Vec<u8>,
    start: usize,
    /// Growth stops here; a head that does not fit is refused by its limit.
    max: usize,
}

impl ConnBuf {
    /// Empty, with `capacity` bytes allocated; it grows up to `max`.
    pub fn new(capacity: usize, max: usize) -> Self {
        ConnBuf { buf: Vec::with_capacity(capacity), start: 0, max: max.max(capacity) }
    }

    /// The bytes read and not yet consumed.
    pub fn data(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// How many bytes `data` holds.
    pub fn len(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Whether every byte read was consumed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops the first `n` unread bytes (all of them if fewer); once
    /// none are left the buffer starts over at its front.
    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.buf.len());
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
    }

    /// Makes room for at least one more byte: compacts, then grows up to `max`.
    fn reserve(&mut self) -> io::Result<()> {
        if self.buf.len() < self.buf.capacity() {
            return Ok(());
        }
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
            return Ok(());
        }
        let cap = self.buf.capacity();
        if cap >= self.max {
            return Err(io::Error::new(io::ErrorKind::OutOfMemory, "connection buffer full"));
        }
        self.buf.reserve_exact((cap.max(1024) * 2).min(self.max) - cap);
        Ok(())
    }

    /// Reads once from `stream`, appending. `Ok(0)` is end of stream.
    pub async fn fill<S: AsyncReadRent>(&mut self, stream: &mut S) -> io::Result<usize> {
        self.reserve()?;
        let buf = std::mem::take(&mut self.buf);
        let (len, cap) = (buf.len(), buf.capacity());
        let (res, slice) = stream.read(buf.slice_mut(len..cap)).await;
        self.buf = slice.into_inner();
        res
    }

    /// Like `fill`, but ends early with an error when `cancel` fires; the
    /// buffer (and any bytes the read did get) always comes back.
    pub async fn fill_cancelable<S: CancelableAsyncReadRent>(
        &mut self,
        stream: &mut S,
        cancel: CancelHandle,
    ) -> io::Result<usize> {
        self.reserve()?;
        let buf = std::mem::take(&mut self.buf);
        let (len, cap) = (buf.len(), buf.capacity());
        let (res, slice) = stream.cancelable_read(buf.slice_mut(len..cap), cancel).await;
        self.buf = slice.into_inner();
        res
    }

    /// Writes the first `n` buffered bytes to `stream` and consumes them.
    pub async fn write_to<S: AsyncWriteRentExt>(&mut self, stream: &mut S, n: usize) -> io::Result<()> {
        let n = n.min(self.len());
        let buf = std::mem::take(&mut self.buf);
        let (res, slice) = stream.write_all(buf.slice(self.start..self.start + n)).await;
        self.buf = slice.into_inner();
        res?;
        self.consume(n);
        Ok(())
    }

    /// A buffer with no memory yet (see `switch_to`).
    pub fn unallocated(max: usize) -> Self {
        ConnBuf { buf: Vec::new(), start: 0, max }
    }

    /// Whether the buffer has storage to read into.
    pub fn has_storage(&self) -> bool {
        self.buf.capacity() > 0
    }

    /// Takes the storage out (only when no bytes are buffered), leaving the
    /// buffer without memory: an idle connection keeps none.
    pub fn release(&mut self) -> Option<Vec<u8>> {
        if !self.is_empty() || self.buf.capacity() == 0 {
            return None;
        }
        self.start = 0;
        let mut v = std::mem::take(&mut self.buf);
        v.clear();
        Some(v)
    }

    /// Moves the buffered bytes into `storage` and uses it from now on;
    /// returns the old storage, emptied.
    pub fn switch_to(&mut self, mut storage: Vec<u8>) -> Vec<u8> {
        storage.clear();
        storage.extend_from_slice(self.data());
        self.start = 0;
        let mut old = std::mem::replace(&mut self.buf, storage);
        old.clear();
        old
    }

    /// Drops all buffered bytes.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.start = 0;
    }
}

/// Writes all of `out` (a reused buffer) to `stream` and clears it.
pub async fn write_out<S: AsyncWriteRentExt>(stream: &mut S, out: &mut Vec<u8>) -> io::Result<()> {
    let buf = std::mem::take(out);
    let (res, mut buf) = stream.write_all(buf).await;
    buf.clear();
    *out = buf;
    res.map(drop)
}
