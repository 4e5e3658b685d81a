//! The PROXY protocol (HAProxy's spec, versions 1 and 2): the header an
//! L4 proxy or load balancer puts before a connection's first byte to say
//! whose connection it is. `parse` reads one from the front of a buffer
//! (never panics, never reads past the header); `write_v1` and `write_v2`
//! produce one for an upstream. Only TCP over IPv4 and IPv6 carries an
//! address; `LOCAL` (a health check from the balancer itself) and
//! `UNKNOWN` families carry none, and the socket's own peer stands (but an
//! `UNKNOWN` client's forwarding fields are not believed).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The v2 signature: 12 bytes no HTTP request or TLS record starts with.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// A v1 header is at most 107 bytes, CRLF included (the spec's bound).
pub const V1_MAX_BYTES: usize = 107;
/// Largest v2 header accepted: 16 fixed bytes and up to 512 of addresses
/// and TLVs (HAProxy's own bound for what it accepts is similar; the
/// 216 bytes of a Unix-socket address block fit with room for TLVs).
pub const V2_MAX_BYTES: usize = 16 + 512;

/// Which header to send to an upstream (`send_proxy_protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// The text form.
    V1,
    /// The binary form.
    V2,
}

/// Appends a header of `version` for a connection from `source` to
/// `destination`.
pub fn write(version: Version, source: SocketAddr, destination: SocketAddr, out: &mut Vec<u8>) {
    match version {
        Version::V1 => write_v1(source, destination, out),
        Version::V2 => write_v2(source, destination, out),
    }
}

/// Appends a header that carries no client (v2 `LOCAL`, v1 `UNKNOWN`):
/// what the proxy's own connections, such as health checks, send.
pub fn write_local(version: Version, out: &mut Vec<u8>) {
    match version {
        Version::V1 => out.extend_from_slice(b"PROXY UNKNOWN\r\n"),
        Version::V2 => {
            out.extend_from_slice(&V2_SIGNATURE);
            out.extend_from_slice(&[0x20, 0x00, 0x00, 0x00]);
        }
    }
}

/// What a header says about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyHeader {
    /// A proxied TCP connection from `source` to `destination`.
    Tcp {
        /// The original client.
        source: SocketAddr,
        /// The address the client connected to.
        destination: SocketAddr,
    },
    /// v2 `LOCAL`: the balancer's own connection (a health check), not a
    /// relayed client.
    Local,
    /// A relayed client whose address the header does not carry: v1
    /// `UNKNOWN`, or a v2 family other than TCP over IP (UDP, Unix).
    Unknown,
}

/// Why a header could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyHeaderError {
    /// More bytes are needed (nothing wrong yet).
    Incomplete,
    /// Longer than the version's bound.
    TooLarge,
    /// Not a PROXY header, or a malformed one.
    Invalid(&'static str),
}

/// Parses a header at the front of `buf`; on success, also how many bytes
/// it took (what follows is the connection's own first bytes).
pub fn parse(buf: &[u8]) -> Result<(ProxyHeader, usize), ProxyHeaderError> {
    if buf.is_empty() {
        return Err(ProxyHeaderError::Incomplete);
    }
    if buf[0] == b'P' {
        parse_v1(buf)
    } else if buf[0] == b'\r' {
        parse_v2(buf)
    } else {
        Err(ProxyHeaderError::Invalid("no PROXY protocol signature"))
    }
}

fn parse_v1(buf: &[u8]) -> Result<(ProxyHeader, usize), ProxyHeaderError> {
    const PREFIX: &[u8] = b"PROXY ";
    let n = buf.len().min(PREFIX.len());
    if buf[..n] != PREFIX[..n] {
        return Err(ProxyHeaderError::Invalid("no PROXY protocol signature"));
    }
    let Some(lf) = buf.iter().take(V1_MAX_BYTES).position(|&b| b == b'\n') else {
        return Err(if buf.len() >= V1_MAX_BYTES { ProxyHeaderError::TooLarge } else { ProxyHeaderError::Incomplete });
    };
    if lf == 0 || buf[lf - 1] != b'\r' {
        return Err(ProxyHeaderError::Invalid("v1 header must end with CRLF"));
    }
    let line = std::str::from_utf8(&buf[PREFIX.len()..lf - 1])
        .map_err(|_| ProxyHeaderError::Invalid("v1 header is not ASCII"))?;
    let mut fields = line.split(' ');
    let header = match fields.next() {
        // The rest of an UNKNOWN line is to be ignored (spec §2.1).
        Some("UNKNOWN") => ProxyHeader::Unknown,
        Some(family @ ("TCP4" | "TCP6")) => {
            let parts: Vec<&str> = fields.collect();
            let [src, dst, sport, dport] = parts[..] else {
                return Err(ProxyHeaderError::Invalid("v1 header needs 4 address fields"));
            };
            let ip = |s: &str| -> Result<IpAddr, ProxyHeaderError> {
                let ip: IpAddr = s.parse().map_err(|_| ProxyHeaderError::Invalid("v1 address"))?;
                match (family, ip) {
                    ("TCP4", IpAddr::V4(_)) | ("TCP6", IpAddr::V6(_)) => Ok(ip),
                    _ => Err(ProxyHeaderError::Invalid("v1 address of the wrong family")),
                }
            };
            ProxyHeader::Tcp {
                source: SocketAddr::new(ip(src)?, port(sport)?),
                destination: SocketAddr::new(ip(dst)?, port(dport)?),
            }
        }
        _ => return Err(ProxyHeaderError::Invalid("v1 protocol must be TCP4, TCP6 or UNKNOWN")),
    };
    Ok((header, lf + 1))
}

/// A v1 port: decimal, no sign, no leading zero, at most 65535.
fn port(s: &str) -> Result<u16, ProxyHeaderError> {
    let bad = ProxyHeaderError::Invalid("v1 port");
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0')) {
        return Err(bad);
    }
    s.parse().map_err(|_| bad)
}

fn parse_v2(buf: &[u8]) -> Result<(ProxyHeader, usize), ProxyHeaderError> {
    let n = buf.len().min(V2_SIGNATURE.len());
    if buf[..n] != V2_SIGNATURE[..n] {
        return Err(ProxyHeaderError::Invalid("no PROXY protocol signature"));
    }
    if buf.len() < 16 {
        return Err(ProxyHeaderError::Incomplete);
    }
    let (version, command) = (buf[12] >> 4, buf[12] & 0x0f);
    if version != 2 {
        return Err(ProxyHeaderError::Invalid("v2 header of another version"));
    }
    let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    let total = 16 + len;
    if total > V2_MAX_BYTES {
        return Err(ProxyHeaderError::TooLarge);
    }
    if buf.len() < total {
        return Err(ProxyHeaderError::Incomplete);
    }
    let body = &buf[16..total];
    let header = match command {
        0 => ProxyHeader::Local,
        1 => match buf[13] {
            // TCP over IPv4: 4 + 4 + 2 + 2 bytes (TLVs may follow).
            0x11 if body.len() >= 12 => {
                ProxyHeader::Tcp { source: v4(&body[0..4], &body[8..10]), destination: v4(&body[4..8], &body[10..12]) }
            }
            // TCP over IPv6: 16 + 16 + 2 + 2 bytes.
            0x21 if body.len() >= 36 => ProxyHeader::Tcp {
                source: v6(&body[0..16], &body[32..34]),
                destination: v6(&body[16..32], &body[34..36]),
            },
            0x11 | 0x21 => return Err(ProxyHeaderError::Invalid("v2 address block too short")),
            // UNSPEC, UDP, Unix sockets: no TCP client address to use.
            _ => ProxyHeader::Unknown,
        },
        _ => return Err(ProxyHeaderError::Invalid("v2 command must be LOCAL or PROXY")),
    };
    Ok((header, total))
}

fn v4(ip: &[u8], port: &[u8]) -> SocketAddr {
    let ip = Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3]);
    SocketAddr::new(IpAddr::V4(ip), u16::from_be_bytes([port[0], port[1]]))
}

fn v6(ip: &[u8], port: &[u8]) -> SocketAddr {
    let mut octets = [0u8; 16];
    octets.copy_from_slice(ip);
    SocketAddr::new(IpAddr::V6(Ipv6Addr::from(octets)), u16::from_be_bytes([port[0], port[1]]))
}

/// Appends a v1 header for a connection from `source` to `destination`.
/// Mixed families (an IPv4 client on an IPv6 socket) are written as TCP6
/// with the IPv4 address mapped.
pub fn write_v1(source: SocketAddr, destination: SocketAddr, out: &mut Vec<u8>) {
    use std::io::Write;
    let (s, d) = same_family(source, destination);
    let family = if s.is_ipv4() { "TCP4" } else { "TCP6" };
    let _ = write!(out, "PROXY {family} {} {} {} {}\r\n", s.ip(), d.ip(), s.port(), d.port());
}

/// Appends a v2 `PROXY` header (no TLVs) for a connection from `source`
/// to `destination`.
pub fn write_v2(source: SocketAddr, destination: SocketAddr, out: &mut Vec<u8>) {
    let (s, d) = same_family(source, destination);
    out.extend_from_slice(&V2_SIGNATURE);
    out.push(0x21);
    match (s.ip(), d.ip()) {
        (IpAddr::V4(si), IpAddr::V4(di)) => {
            out.push(0x11);
            out.extend_from_slice(&12u16.to_be_bytes());
            out.extend_from_slice(&si.octets());
            out.extend_from_slice(&di.octets());
        }
        (si, di) => {
            out.push(0x21);
            out.extend_from_slice(&36u16.to_be_bytes());
            out.extend_from_slice(&to_v6(si).octets());
            out.extend_from_slice(&to_v6(di).octets());
        }
    }
    out.extend_from_slice(&s.port().to_be_bytes());
    out.extend_from_slice(&d.port().to_be_bytes());
}

fn to_v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(a) => a.to_ipv6_mapped(),
        IpAddr::V6(a) => a,
    }
}

/// Both addresses in one family: IPv6 if either is (mapping the other).
fn same_family(s: SocketAddr, d: SocketAddr) -> (SocketAddr, SocketAddr) {
    if s.is_ipv4() == d.is_ipv4() {
        return (s, d);
    }
    (SocketAddr::new(IpAddr::V6(to_v6(s.ip())), s.port()), SocketAddr::new(IpAddr::V6(to_v6(d.ip())), d.port()))
}

#[cfg(test)]
mod tests;
