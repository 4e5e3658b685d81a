//! The blocking rustls test client: what it offers (versions, ALPN, SNI,
//! a client certificate) and trusts, one connection with a read buffer
//! that reads HTTP/1.1 responses, and the errors it sees when the proxy
//! refuses it.

use super::{AlertDescription, Ca, Issued, TLS12, TLS13};
use crate::support::{parse_fields, Response, IO_TIMEOUT};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme, StreamOwned};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;

/// What the test client offers and checks.
#[derive(Clone)]
pub struct TlsOpts {
    /// The name verified (and sent as SNI unless `sni` is false).
    pub name: String,
    pub sni: bool,
    /// Trust roots; `None`: any certificate is accepted (to see which
    /// one the proxy chose).
    pub roots: Option<Vec<CertificateDer<'static>>>,
    pub versions: Vec<&'static rustls::SupportedProtocolVersion>,
    pub alpn: Vec<Vec<u8>>,
    pub client: Option<(CertificateDer<'static>, Vec<u8>)>,
}

impl TlsOpts {
    /// Verifies the proxy's certificate against `ca` for `name`, sent as SNI.
    pub fn verified(ca: &Ca, name: &str) -> TlsOpts {
        TlsOpts {
            name: name.to_string(),
            sni: true,
            roots: Some(vec![ca.der()]),
            versions: vec![&TLS13, &TLS12],
            alpn: vec![b"http/1.1".to_vec()],
            client: None,
        }
    }

    /// Accepts any certificate; sends `sni` if given.
    pub fn any_cert(sni: Option<&str>) -> TlsOpts {
        TlsOpts {
            name: sni.unwrap_or("no-sni.invalid").to_string(),
            sni: sni.is_some(),
            roots: None,
            versions: vec![&TLS13, &TLS12],
            alpn: vec![b"http/1.1".to_vec()],
            client: None,
        }
    }

    pub fn only(mut self, v: &'static rustls::SupportedProtocolVersion) -> TlsOpts {
        self.versions = vec![v];
        self
    }

    pub fn alpn(mut self, protocols: &[&[u8]]) -> TlsOpts {
        self.alpn = protocols.iter().map(|p| p.to_vec()).collect();
        self
    }

    pub fn client_cert(mut self, c: &Issued) -> TlsOpts {
        self.client = Some((c.der.clone(), c.key_der.clone()));
        self
    }

    fn config(&self) -> ClientConfig {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(&self.versions)
            .expect("versions");
        let builder = match &self.roots {
            Some(roots) => {
                let mut store = rustls::RootCertStore::empty();
                for r in roots {
                    store.add(r.clone()).expect("root");
                }
                builder.with_root_certificates(store)
            }
            None => builder.dangerous().with_custom_certificate_verifier(Arc::new(AnyCert(provider))),
        };
        let mut config = match &self.client {
            Some((cert, key)) => builder
                .with_client_auth_cert(vec![cert.clone()], PrivatePkcs8KeyDer::from(key.clone()).into())
                .expect("client cert"),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = self.alpn.clone();
        config.enable_sni = self.sni;
        config.resumption = rustls::client::Resumption::disabled();
        config
    }
}

/// Accepts any server certificate (signatures are still checked).
#[derive(Debug)]
struct AnyCert(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The first flight of a TLS client (its ClientHello record), as bytes.
pub fn client_hello(name: &str) -> Vec<u8> {
    let opts = TlsOpts::any_cert(Some(name));
    let name = ServerName::try_from(name.to_string()).expect("server name");
    let mut conn = ClientConnection::new(Arc::new(opts.config()), name).expect("client connection");
    let mut out = Vec::new();
    conn.write_tls(&mut out).expect("client hello");
    out
}

/// The rustls error inside an `io::Error` from the client.
pub fn rustls_error(e: &io::Error) -> Option<&rustls::Error> {
    e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>())
}

/// The alert the proxy sent, if that is why `e` happened.
pub fn alert_of(e: &io::Error) -> Option<AlertDescription> {
    match rustls_error(e) {
        Some(rustls::Error::AlertReceived(a)) => Some(*a),
        _ => None,
    }
}

/// How `TlsClient::connect_after` sends its preface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preface {
    /// In a write of its own, 100 ms before the handshake.
    Alone,
    /// In the same write (packet) as the ClientHello.
    WithHello,
}

/// A blocking TLS client connection with a read buffer.
pub struct TlsClient {
    pub stream: StreamOwned<ClientConnection, TcpStream>,
    buf: Vec<u8>,
}

impl TlsClient {
    /// Connects and runs the whole handshake; its failure is the error.
    pub fn connect(addr: SocketAddr, opts: &TlsOpts) -> io::Result<TlsClient> {
        Self::connect_after(addr, b"", Preface::Alone, opts)
    }

    /// `connect`, with `preface` (e.g. a PROXY protocol header) written in
    /// plaintext first: alone (the handshake starts a moment later), or in
    /// one write with the ClientHello.
    pub fn connect_after(addr: SocketAddr, preface: &[u8], how: Preface, opts: &TlsOpts) -> io::Result<TlsClient> {
        let mut tcp = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
        tcp.set_read_timeout(Some(IO_TIMEOUT))?;
        tcp.set_write_timeout(Some(IO_TIMEOUT))?;
        let _ = tcp.set_nodelay(true);
        let name = ServerName::try_from(opts.name.clone()).expect("server name");
        let mut conn = ClientConnection::new(Arc::new(opts.config()), name).expect("client connection");
        if !preface.is_empty() {
            let mut first = preface.to_vec();
            match how {
                Preface::Alone => {
                    tcp.write_all(&first)?;
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                Preface::WithHello => {
                    conn.write_tls(&mut first)?;
                    tcp.write_all(&first)?;
                }
            }
        }
        let mut stream = StreamOwned::new(conn, tcp);
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock)?;
        }
        Ok(TlsClient { stream, buf: Vec::new() })
    }

    pub fn session(&self) -> &ClientConnection {
        &self.stream.conn
    }

    /// The leaf certificate the proxy presented.
    pub fn peer_cert(&self) -> CertificateDer<'static> {
        self.session().peer_certificates().expect("a server certificate")[0].clone().into_owned()
    }

    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// Reads more plaintext; `Ok(0)` when the proxy closed (with or
    /// without a close_notify).
    fn fill(&mut self) -> io::Result<usize> {
        let mut tmp = [0u8; 32 * 1024];
        match self.stream.read(&mut tmp) {
            Ok(n) => {
                self.buf.extend_from_slice(&tmp[..n]);
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
            Err(e) => Err(e),
        }
    }

    pub fn read_until(&mut self, delim: &[u8]) -> io::Result<Vec<u8>> {
        loop {
            if let Some(i) = self.buf.windows(delim.len()).position(|w| w == delim) {
                return Ok(self.buf.drain(..i + delim.len()).collect());
            }
            if self.fill()? == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed before the delimiter"));
            }
        }
    }

    pub fn read_exact_vec(&mut self, n: usize) -> io::Result<Vec<u8>> {
        while self.buf.len() < n {
            if self.fill()? == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed inside a body"));
            }
        }
        Ok(self.buf.drain(..n).collect())
    }

    /// Everything until the proxy closes.
    pub fn read_to_close(&mut self) -> io::Result<Vec<u8>> {
        while self.fill()? > 0 {}
        Ok(std::mem::take(&mut self.buf))
    }

    /// One response (Content-Length or close-delimited body).
    pub fn read_response(&mut self) -> io::Result<Response> {
        let head = String::from_utf8_lossy(&self.read_until(b"\r\n\r\n")?).to_string();
        let status: u16 = head.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("status line");
        let fields = parse_fields(&head);
        let mut r = Response { raw_head: head, status, fields, raw_body: Vec::new(), body: Vec::new() };
        if (100..200).contains(&status) || status == 204 || status == 304 {
            return Ok(r);
        }
        r.body = match r.header("content-length") {
            Some(n) => self.read_exact_vec(n.parse().expect("content-length"))?,
            None => self.read_to_close()?,
        };
        r.raw_body = r.body.clone();
        Ok(r)
    }

    pub fn request(&mut self, bytes: &[u8]) -> io::Result<Response> {
        self.send(bytes)?;
        self.read_response()
    }

    /// `GET path` with `Host: test`.
    pub fn get(&mut self, path: &str) -> Response {
        self.request(format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes()).expect("response over TLS")
    }
}

/// Connects with `opts` and tries one request; the error that stopped it,
/// at the handshake or at the first read (TLS 1.3 clients learn that their
/// certificate was refused only then). Panics if a response came back.
pub fn refused(addr: SocketAddr, opts: &TlsOpts) -> io::Error {
    let mut c = match TlsClient::connect(addr, opts) {
        Ok(c) => c,
        Err(e) => return e,
    };
    if let Err(e) = c.send(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n") {
        return e;
    }
    match c.read_response() {
        Ok(r) => panic!("the proxy answered a client it should have refused: {}", r.raw_head),
        Err(e) => e,
    }
}
