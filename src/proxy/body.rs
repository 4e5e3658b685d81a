//! Streaming a message body from one socket to the other with bounded
//! memory: at most one read buffer and one output buffer per direction, and
//! every read waits on the previous write, so a slow reader slows the
//! writer instead of filling the proxy. Chunked bodies are decoded and
//! re-encoded canonically; length-delimited bytes go out straight from the
//! read buffer. Bytes already waiting in `out` (the response head) are sent
//! together with the first buffered body bytes when those are small, so a
//! small response costs one write, not two; `out` is always flushed before
//! the relay waits on a read, so nothing sits unsent while the source is slow.

use crate::http::chunked::{
    write_chunk_header, ChunkError, ChunkStep, ChunkedDecoder, LAST_CHUNK, MAX_CHUNK_EXTENSION_BYTES, MAX_TRAILER_BYTES,
};
use crate::http::BodyKind;
use crate::io_buf::{write_out, ConnBuf};
use crate::runtime::Watch;
use monoio::io::{AsyncReadRent, AsyncWriteRent};
use std::time::Duration;

/// Bytes of re-encoded output gathered before a write.
const OUT_FLUSH_BYTES: usize = 32 * 1024;
/// Largest buffered body slice copied behind a pending head so both leave in
/// one write; a bigger one costs more to copy than a second write does.
const COALESCE_MAX_BYTES: usize = 16 * 1024;

/// How the body leaves the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encode {
    /// Bytes as decoded (Content-Length or close-delimited output).
    Raw,
    /// Canonical chunks: no extensions, no trailers, one last-chunk.
    Chunked,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayError {
    SrcIo,
    SrcTimeout,
    /// The sender closed before the body's declared end.
    SrcEof,
    SrcFraming(ChunkError),
    DstIo,
    DstTimeout,
    TooLarge,
}

/// One body's way from `src` to `dst` (sockets, or the halves of a split
/// socket when the other direction is watched meanwhile).
pub struct Relay<'a, R, W> {
    pub src: &'a mut R,
    pub srcbuf: &'a mut ConnBuf,
    pub dst: &'a mut W,
    pub out: &'a mut Vec<u8>,
    /// Times each read and write (the request's watchdog slot).
    pub watch: Watch<'a>,
    pub read_timeout: Duration,
    pub write_timeout: Duration,
    pub max_bytes: Option<u64>,
}

impl<R: AsyncReadRent, W: AsyncWriteRent> Relay<'_, R, W> {
    async fn read(&mut self) -> Result<usize, RelayError> {
        match self.watch.limit(self.read_timeout, self.srcbuf.fill(self.src)).await {
            Err(_) => Err(RelayError::SrcTimeout),
            Ok(Err(_)) => Err(RelayError::SrcIo),
            Ok(Ok(n)) => Ok(n),
        }
    }

    async fn flush(&mut self) -> Result<(), RelayError> {
        if self.out.is_empty() {
            return Ok(());
        }
        match self.watch.limit(self.write_timeout, write_out(self.dst, self.out)).await {
            Err(_) => Err(RelayError::DstTimeout),
            Ok(Err(_)) => Err(RelayError::DstIo),
            Ok(Ok(())) => Ok(()),
        }
    }

    /// Sends the first `n` buffered bytes on as they are.
    async fn pass(&mut self, n: usize) -> Result<(), RelayError> {
        match self.watch.limit(self.write_timeout, self.srcbuf.write_to(self.dst, n)).await {
            Err(_) => Err(RelayError::DstTimeout),
            Ok(Err(_)) => Err(RelayError::DstIo),
            Ok(Ok(())) => Ok(()),
        }
    }

    fn encode(&mut self, n: usize, enc: Encode) {
        let data = &self.srcbuf.data()[..n];
        if enc == Encode::Chunked {
            write_chunk_header(n, self.out);
            self.out.extend_from_slice(data);
            self.out.extend_from_slice(b"\r\n");
        } else {
            self.out.extend_from_slice(data);
        }
        self.srcbuf.consume(n);
    }

    /// Relays one body; returns the payload bytes moved.
    pub async fn run(&mut self, from: BodyKind, enc: Encode) -> Result<u64, RelayError> {
        match from {
            BodyKind::None => self.flush().await.map(|()| 0),
            BodyKind::Length(n) => self.length(n, enc).await,
            BodyKind::UntilClose => self.until_close(enc).await,
            BodyKind::Chunked => self.chunked(enc).await,
        }
    }

    async fn length(&mut self, total: u64, enc: Encode) -> Result<u64, RelayError> {
        let mut left = total;
        while left > 0 {
            if self.srcbuf.is_empty() {
                self.flush().await?;
                if self.read().await? == 0 {
                    return Err(RelayError::SrcEof);
                }
            }
            let k = usize::try_from(left).unwrap_or(usize::MAX).min(self.srcbuf.len());
            self.forward(k, enc).await?;
            left -= k as u64;
        }
        self.finish(enc).await?;
        Ok(total)
    }

    async fn until_close(&mut self, enc: Encode) -> Result<u64, RelayError> {
        let mut moved = 0u64;
        loop {
            if self.srcbuf.is_empty() {
                self.flush().await?;
                if self.read().await? == 0 {
                    break;
                }
            }
            let k = self.srcbuf.len();
            moved += k as u64;
            self.forward(k, enc).await?;
        }
        self.finish(enc).await?;
        Ok(moved)
    }

    /// Moves `n` buffered bytes on: straight from the read buffer when
    /// nothing is pending in `out`, else copied behind it if small.
    async fn forward(&mut self, n: usize, enc: Encode) -> Result<(), RelayError> {
        if enc == Encode::Raw && (self.out.is_empty() || n > COALESCE_MAX_BYTES) {
            self.flush().await?;
            self.pass(n).await
        } else {
            self.encode(n, enc);
            Ok(())
        }
    }

    /// Ends the body (the last chunk when re-chunking) and flushes.
    async fn finish(&mut self, enc: Encode) -> Result<(), RelayError> {
        if enc == Encode::Chunked {
            self.out.extend_from_slice(LAST_CHUNK);
        }
        self.flush().await
    }

    async fn chunked(&mut self, enc: Encode) -> Result<u64, RelayError> {
        let mut dec = ChunkedDecoder::new(MAX_CHUNK_EXTENSION_BYTES, MAX_TRAILER_BYTES);
        loop {
            let step = dec.decode(self.srcbuf.data()).map_err(RelayError::SrcFraming)?;
            match step {
                ChunkStep::NeedMore { consumed } => {
                    self.srcbuf.consume(consumed);
                    self.flush().await?;
                    if self.read().await? == 0 {
                        return Err(RelayError::SrcEof);
                    }
                }
                ChunkStep::Data { start, end } => {
                    if self.max_bytes.is_some_and(|m| dec.payload_bytes() > m) {
                        return Err(RelayError::TooLarge);
                    }
                    self.srcbuf.consume(start);
                    if end > start {
                        self.encode(end - start, enc);
                    }
                    if self.out.len() >= OUT_FLUSH_BYTES {
                        self.flush().await?;
                    }
                }
                ChunkStep::Done { consumed } => {
                    self.srcbuf.consume(consumed);
                    if enc == Encode::Chunked {
                        self.out.extend_from_slice(LAST_CHUNK);
                    }
                    self.flush().await?;
                    return Ok(dec.payload_bytes());
                }
            }
        }
    }
}
