//! HTTP/1.1 message handling: finding where a head ends, parsing and
//! validating request and response heads (on top of `httparse`, which
//! tokenizes but does not validate), path normalization, chunked coding, and
//! re-serializing heads canonically for the other side.

pub mod chunked;
pub mod head;
pub mod headers;
pub mod path;
pub mod request;
pub mod request_line;
pub mod response;

/// How a message body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// No body at all.
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the sender closes (responses only).
    UntilClose,
}
