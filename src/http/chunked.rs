//! Strict incremental decoder for the HTTP/1.1 chunked transfer coding (RFC 9112 §7.1),
//! plus the canonical encoder pieces (`write_chunk_header`, `LAST_CHUNK`).
//!
//! This module owns chunk framing: size lines, chunk extensions, the CRLF after chunk
//! data, and the trailer section. It is deliberately stricter than common proxies:
//! any framing a downstream parser could read differently (empty or signed sizes,
//! bare LF line endings, CTLs in extensions, missing CRLF after data, malformed
//! trailers) is an error, because disagreement about where a body ends is what
//! request smuggling exploits. Extensions and trailers are validated, then discarded.
//!
//! Once decoding ends, the decoder is sticky: after `Done` every call returns
//! `Done { consumed: 0 }`, and after an error every call returns that same error.

use std::fmt;

/// Digits (including leading zeros) allowed in one size line; beyond this the
/// line is garbage rather than a number, so it is `BadSize`, not `SizeOverflow`.
const MAX_SIZE_DIGITS: usize = 64;

/// Cap on chunk-extension bytes per chunk-size line (the proxy's and the
/// demo backend's decoders).
pub const MAX_CHUNK_EXTENSION_BYTES: usize = 4096;
/// Cap on the trailer section, which is read and dropped.
pub const MAX_TRAILER_BYTES: usize = 16 * 1024;

/// Why a chunked body was refused (400 from a client, 502 from an upstream).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkError {
    /// The size line is not hex digits (or has too many).
    BadSize,
    /// The chunk size does not fit in a u64.
    SizeOverflow,
    /// A chunk extension is not `;name[=value]`.
    BadExtension,
    /// A size line's extensions are longer than the decoder allows.
    ExtensionTooLong,
    /// A chunk's data is not followed by CRLF.
    MissingCrlf,
    /// A trailer line is not a valid header field.
    BadTrailer,
    /// The trailer section is longer than the decoder allows.
    TrailersTooLong,
}

impl fmt::Display for ChunkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let msg = match self {
            Self::BadSize => "invalid chunk size line",
            Self::SizeOverflow => "chunk size overflows u64",
            Self::BadExtension => "invalid chunk extension",
            Self::ExtensionTooLong => "chunk extension too long",
            Self::MissingCrlf => "missing CRLF after chunk data",
            Self::BadTrailer => "invalid trailer field",
            Self::TrailersTooLong => "trailer section too long",
        };
        f.write_str(msg)
    }
}

impl std::error::Error for ChunkError {}

/// One step of decoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkStep {
    /// Need more input.
    NeedMore {
        /// Bytes of the input used (may be > 0: e.g. a size line was completed).
        consumed: usize,
    },
    /// Payload bytes `input[start..end]` belong to the body; everything up
    /// to `end` is used.
    Data {
        /// First payload byte.
        start: usize,
        /// One past the last payload byte.
        end: usize,
    },
    /// The last chunk and trailer section (trailers discarded, never
    /// surfaced) ended.
    Done {
        /// Bytes of the input used; the bytes after them are the next message.
        consumed: usize,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Size {
        digits: usize,
        value: u64,
    },
    /// `len` counts extension bytes so far, starting with the `;`.
    Ext {
        len: usize,
        value: u64,
    },
    SizeLf {
        in_ext: bool,
        value: u64,
    },
    Data {
        remaining: u64,
    },
    DataCr,
    DataLf,
    Trailer {
        line_len: usize,
        colon: bool,
    },
    TrailerLf {
        empty: bool,
    },
    Done,
    Failed(ChunkError),
}

const SIZE_START: State = State::Size { digits: 0, value: 0 };

/// Incremental chunked-body decoder; holds no input, only framing state.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    max_ext: usize,
    max_trailer: usize,
    trailer_bytes: usize,
    payload: u64,
}

impl ChunkedDecoder {
    /// `max_extension_bytes` caps extensions per size line (counting the `;`);
    /// `max_trailer_bytes` caps the trailer field lines including their CRLFs
    /// (the final empty line is not counted, so 0 means "no trailers allowed").
    pub fn new(max_extension_bytes: usize, max_trailer_bytes: usize) -> Self {
        Self {
            state: SIZE_START,
            max_ext: max_extension_bytes,
            max_trailer: max_trailer_bytes,
            trailer_bytes: 0,
            payload: 0,
        }
    }

    /// Decodes from `input` (fresh bytes not consumed by earlier calls). Call repeatedly,
    /// advancing by the consumed count, until it returns NeedMore (read more) or Done.
    /// Works for any split of the stream across calls.
    pub fn decode(&mut self, input: &[u8]) -> Result<ChunkStep, ChunkError> {
        match self.state {
            State::Done => return Ok(ChunkStep::Done { consumed: 0 }),
            State::Failed(e) => return Err(e),
            _ => {}
        }
        let mut pos = 0;
        loop {
            // Data is handed out as a slice so payload is never copied byte by byte.
            if let State::Data { remaining } = self.state {
                let avail = input.len() - pos;
                if avail == 0 {
                    return Ok(ChunkStep::NeedMore { consumed: pos });
                }
                let n = avail.min(usize::try_from(remaining).unwrap_or(usize::MAX));
                let left = remaining - n as u64;
                self.state = if left == 0 { State::DataCr } else { State::Data { remaining: left } };
                self.payload = self.payload.saturating_add(n as u64);
                return Ok(ChunkStep::Data { start: pos, end: pos + n });
            }
            let Some(&b) = input.get(pos) else {
                return Ok(ChunkStep::NeedMore { consumed: pos });
            };
            pos += 1;
            match self.step(b) {
                Ok(()) if self.state == State::Done => {
                    return Ok(ChunkStep::Done { consumed: pos });
                }
                Ok(()) => {}
                Err(e) => {
                    self.state = State::Failed(e);
                    return Err(e);
                }
            }
        }
    }

    /// Whether the last chunk and the trailer section have ended.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Total payload bytes decoded so far (so the caller can enforce a body size limit).
    pub fn payload_bytes(&self) -> u64 {
        self.payload
    }

    /// Advances the framing state by one non-payload byte.
    fn step(&mut self, b: u8) -> Result<(), ChunkError> {
        use ChunkError::*;
        self.state = match self.state {
            State::Size { digits, value } => match b {
                b';' | b'\r' if digits == 0 => return Err(BadSize),
                b';' => self.ext(1, value)?,
                b'\r' => State::SizeLf { in_ext: false, value },
                _ => {
                    let d = hex_val(b).ok_or(BadSize)?;
                    if digits >= MAX_SIZE_DIGITS {
                        return Err(BadSize);
                    }
                    // Leading zeros keep value at 0, so only significant digits count:
                    // the 17th one is exactly when value * 16 overflows u64.
                    let value = value.checked_mul(16).and_then(|v| v.checked_add(d)).ok_or(SizeOverflow)?;
                    State::Size { digits: digits + 1, value }
                }
            },
            State::Ext { len, value } => match b {
                b'\r' => State::SizeLf { in_ext: true, value },
                // We don't parse the ext grammar (it is discarded), but a CTL or
                // bare LF here is how parsers get desynchronised, so refuse them.
                b'\t' | b' '..=b'~' | 0x80..=0xff => self.ext(len.saturating_add(1), value)?,
                _ => return Err(BadExtension),
            },
            State::SizeLf { in_ext, value } => match b {
                b'\n' if value == 0 => State::Trailer { line_len: 0, colon: false },
                b'\n' => State::Data { remaining: value },
                _ if in_ext => return Err(BadExtension),
                _ => return Err(BadSize),
            },
            State::DataCr if b == b'\r' => State::DataLf,
            State::DataLf if b == b'\n' => SIZE_START,
            State::DataCr | State::DataLf => return Err(MissingCrlf),
            State::Trailer { line_len, colon } => {
                if b == b'\r' {
                    if line_len > 0 {
                        if !colon {
                            return Err(BadTrailer);
                        }
                        self.count_trailer()?;
                    }
                    State::TrailerLf { empty: line_len == 0 }
                } else {
                    self.count_trailer()?;
                    // A name must be a non-empty token right up to ':' (no whitespace,
                    // no obs-fold); the value may hold anything but CTLs other than HTAB.
                    let ok = if colon {
                        matches!(b, b'\t' | b' '..=b'~' | 0x80..=0xff)
                    } else if b == b':' {
                        line_len > 0
                    } else {
                        is_tchar(b)
                    };
                    if !ok {
                        return Err(BadTrailer);
                    }
                    State::Trailer { line_len: line_len.saturating_add(1), colon: colon || b == b':' }
                }
            }
            State::TrailerLf { empty } => match b {
                b'\n' if empty => State::Done,
                b'\n' => {
                    self.count_trailer()?;
                    State::Trailer { line_len: 0, colon: false }
                }
                _ => return Err(BadTrailer),
            },
            // decode() never calls step in these states; leaving them unchanged is the safe no-op.
            other @ (State::Data { .. } | State::Done | State::Failed(_)) => other,
        };
        Ok(())
    }

    fn ext(&self, len: usize, value: u64) -> Result<State, ChunkError> {
        if len > self.max_ext {
            return Err(ChunkError::ExtensionTooLong);
        }
        Ok(State::Ext { len, value })
    }

    fn count_trailer(&mut self) -> Result<(), ChunkError> {
        self.trailer_bytes = self.trailer_bytes.saturating_add(1);
        if self.trailer_bytes > self.max_trailer {
            return Err(ChunkError::TrailersTooLong);
        }
        Ok(())
    }
}

fn hex_val(b: u8) -> Option<u64> {
    match b {
        b'0'..=b'9' => Some(u64::from(b - b'0')),
        b'a'..=b'f' => Some(u64::from(b - b'a' + 10)),
        b'A'..=b'F' => Some(u64::from(b - b'A' + 10)),
        _ => None,
    }
}

/// RFC 9110 §5.6.2 tchar.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Writes the canonical chunk-size line for a data chunk of `len` bytes ("{len:X}\r\n")
/// into `out`. `len == 0` writes "0\r\n", which *starts the last chunk*: callers must
/// not emit empty data chunks mid-body or they terminate it early.
pub fn write_chunk_header(len: usize, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut buf = [0u8; 2 * size_of::<usize>()];
    let mut i = buf.len();
    let mut n = len;
    loop {
        i -= 1;
        buf[i] = HEX[n & 0xf];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
    out.extend_from_slice(b"\r\n");
}

/// The canonical terminator: last chunk with no extensions and no trailers.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

#[cfg(test)]
mod tests;
