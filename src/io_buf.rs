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
        let (buf, start) = self.lend();
        let (len, cap) = (buf.len(), buf.capacity());
        let (res, slice) = stream.read(buf.slice_mut(len..cap)).await;
        self.give_back(slice.into_inner(), start);
        res
    }

    /// Takes the storage out for an operation that owns it while it runs.
    /// The buffer is left empty and consistent (`start` 0): if the
    /// operation is dropped mid-flight, its bytes leave with it and the
    /// buffer stays usable (an early response drops the request relay so).
    fn lend(&mut self) -> (Vec<u8>, usize) {
        (std::mem::take(&mut self.buf), std::mem::take(&mut self.start))
    }

    /// Puts back what `lend` took once the operation finished.
    fn give_back(&mut self, buf: Vec<u8>, start: usize) {
        self.buf = buf;
        self.start = start;
    }

    /// Like `fill`, but ends early with an error when `cancel` fires; the
    /// buffer (and any bytes the read did get) always comes back.
    pub async fn fill_cancelable<S: CancelableAsyncReadRent>(
        &mut self,
        stream: &mut S,
        cancel: CancelHandle,
    ) -> io::Result<usize> {
        self.reserve()?;
        let (buf, start) = self.lend();
        let (len, cap) = (buf.len(), buf.capacity());
        let (res, slice) = stream.cancelable_read(buf.slice_mut(len..cap), cancel).await;
        self.give_back(slice.into_inner(), start);
        res
    }

    /// Writes the first `n` buffered bytes to `stream` and consumes them.
    pub async fn write_to<S: AsyncWriteRentExt>(&mut self, stream: &mut S, n: usize) -> io::Result<()> {
        let n = n.min(self.len());
        let (buf, start) = self.lend();
        let (res, slice) = stream.write_all(buf.slice(start..start + n)).await;
        self.give_back(slice.into_inner(), start);
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Waker};

    /// A reader that never finishes, so its operation can be dropped
    /// mid-flight, holding the buffer.
    struct Stalled;

    impl AsyncReadRent for Stalled {
        async fn read<T: monoio::buf::IoBufMut>(&mut self, buf: T) -> monoio::BufResult<usize, T> {
            std::future::pending::<()>().await;
            (Ok(0), buf)
        }

        async fn readv<T: monoio::buf::IoVecBufMut>(&mut self, buf: T) -> monoio::BufResult<usize, T> {
            std::future::pending::<()>().await;
            (Ok(0), buf)
        }
    }

    /// Found by the early-response test: dropping a read after some bytes
    /// were consumed left `start` past the (taken, empty) storage, and the
    /// next `len()` underflowed, killing the worker.
    #[test]
    fn a_dropped_operation_leaves_an_empty_usable_buffer() {
        let mut b = ConnBuf::new(64, 64);
        b.buf.extend_from_slice(b"0123456789");
        b.consume(4);
        let mut stalled = Stalled;
        {
            let mut read = pin!(b.fill(&mut stalled));
            let mut cx = Context::from_waker(Waker::noop());
            assert!(read.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!((b.len(), b.data()), (0, &b""[..]));
        assert!(b.is_empty());
        b.consume(3);
        assert!(b.release().is_none(), "no storage left to release");
        let old = b.switch_to(Vec::with_capacity(32));
        assert!(old.is_empty());
        assert_eq!(b.len(), 0);
    }
}
