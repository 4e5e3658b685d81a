//! The adapter (`TlsStream` and its halves) over real loopback sockets with
//! real handshakes: bytes both ways, a cancelled read that loses nothing,
//! halves that run at once, session tickets that a pooled connection must
//! not mistake for a response, and garbage that fails without a panic.

use super::TlsStream;
use crate::io_buf::ConnBuf;
use monoio::io::{AsyncWriteRent, AsyncWriteRentExt, Canceller};
use monoio::net::{TcpListener, TcpStream};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, Connection, RootCertStore, ServerConfig, ServerConnection};
use std::sync::Arc;
use std::time::Duration;

/// A server and a client config that trust each other (a self-signed
/// certificate for `localhost`).
fn configs(tls13_only: bool) -> (Arc<ServerConfig>, Arc<ClientConfig>) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("certificate");
    let cert = CertificateDer::from(ck.cert.der().to_vec());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.key_pair.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions = if tls13_only { super::TLS13_ONLY } else { rustls::ALL_VERSIONS };
    let server = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(versions)
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .expect("server config");
    let mut roots = RootCertStore::empty();
    roots.add(cert).expect("root");
    let client = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    (Arc::new(server), Arc::new(client))
}

/// A handshaken pair over loopback: (server side, client side).
async fn pair() -> (TlsStream, TlsStream) {
    let (server, client) = configs(true);
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let connect = async {
        let tcp = TcpStream::connect_addr(addr).await.expect("connect");
        let name = ServerName::try_from("localhost").expect("name");
        let mut s = TlsStream::new(tcp, Connection::Client(ClientConnection::new(client, name).expect("client")));
        s.handshake().await.expect("client handshake");
        s
    };
    let accept = async {
        let (tcp, _) = listener.accept().await.expect("accept");
        let mut s = TlsStream::new(tcp, Connection::Server(ServerConnection::new(server).expect("server")));
        s.handshake().await.expect("server handshake");
        s
    };
    let (c, s) = monoio::join!(connect, accept);
    (s, c)
}

async fn read_some(s: &mut TlsStream) -> Vec<u8> {
    let mut buf = ConnBuf::new(1024, 1024);
    let n = monoio::time::timeout(Duration::from_secs(5), buf.fill(s)).await.expect("in time").expect("read");
    buf.data()[..n].to_vec()
}

#[monoio::test(timer_enabled = true)]
async fn bytes_go_both_ways_and_a_close_notify_ends_the_stream() {
    let (mut server, mut client) = pair().await;
    let (r, _) = client.write_all(b"GET / HTTP/1.1\r\n\r\n".to_vec()).await;
    r.expect("client write");
    assert_eq!(read_some(&mut server).await, b"GET / HTTP/1.1\r\n\r\n");
    // Larger than one record (16 KiB) and than the first buffer.
    let big: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let (r, _) = server.write_all(big.clone()).await;
    r.expect("server write");
    let mut got = ConnBuf::new(4096, 200_000);
    while got.len() < big.len() {
        let n = got.fill(&mut client).await.expect("read");
        assert!(n > 0, "early end after {} bytes", got.len());
    }
    assert_eq!(got.data(), &big[..]);
    server.shutdown().await.expect("close_notify");
    let mut end = ConnBuf::new(64, 64);
    assert_eq!(end.fill(&mut client).await.expect("clean end"), 0);
}

#[monoio::test(timer_enabled = true)]
async fn a_cancelled_read_loses_nothing() {
    let (mut server, mut client) = pair().await;
    let canceller = Canceller::new();
    let mut buf = ConnBuf::new(1024, 1024);
    // Nothing was sent: the read waits, and is cancelled like a hot wait
    // whose window passed.
    let read = buf.fill_cancelable(&mut server, canceller.handle());
    let cancel = async {
        monoio::time::sleep(Duration::from_millis(20)).await;
        canceller.cancel();
    };
    let (res, ()) = monoio::join!(read, cancel);
    assert_eq!(res.expect_err("cancelled").raw_os_error(), Some(libc::ECANCELED));
    assert!(!server.has_buffered());
    let (r, _) = client.write_all(b"after the cancel".to_vec()).await;
    r.expect("write");
    assert_eq!(read_some(&mut server).await, b"after the cancel");
}

#[monoio::test(timer_enabled = true)]
async fn the_halves_run_at_once() {
    let (server, mut client) = pair().await;
    let (mut r, mut w) = server.into_split();
    // The read half waits while the write half sends: the session is never
    // borrowed across a wait.
    let reading = async {
        let mut buf = ConnBuf::new(1024, 1024);
        let n = buf.fill_cancelable(&mut r, Canceller::new().handle()).await.expect("read");
        buf.data()[..n].to_vec()
    };
    let writing = async {
        let (res, _) = w.write_all(b"from the write half".to_vec()).await;
        res.expect("write half");
        assert_eq!(read_some(&mut client).await, b"from the write half");
        let (res, _) = client.write_all(b"to the read half".to_vec()).await;
        res.expect("client write");
    };
    let (got, ()) = monoio::join!(reading, writing);
    assert_eq!(got, b"to the read half");
    w.shutdown().await.expect("shutdown");
    let mut end = ConnBuf::new(64, 64);
    assert_eq!(end.fill(&mut client).await.expect("clean end"), 0);
}

#[monoio::test(timer_enabled = true)]
async fn session_tickets_are_absorbed_but_a_response_is_not() {
    let (mut server, mut client) = pair().await;
    // rustls servers send TLS 1.3 tickets after the handshake; they are
    // on the client's socket, or about to be.
    let mut raw = vec![0u8; 8192];
    assert!(arrived(&client, &mut raw).await, "the server sent its tickets");
    let got = recv(&client, &mut raw);
    assert!(client.absorb(&raw[..got]), "tickets leave the connection usable");
    let (r, _) = server.write_all(b"HTTP/1.1 200 OK\r\n".to_vec()).await;
    r.expect("write");
    assert!(arrived(&client, &mut raw).await, "the response arrived");
    let got = recv(&client, &mut raw);
    assert!(!client.absorb(&raw[..got]), "application data is a response nobody asked for");
}

/// Waits (up to 5 s, letting the runtime run) until bytes wait on the
/// client's socket.
async fn arrived(client: &TlsStream, raw: &mut [u8]) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        if peek(client, raw) > 0 {
            return true;
        }
        monoio::time::sleep(Duration::from_millis(5)).await;
    }
    false
}

#[monoio::test(timer_enabled = true)]
async fn garbage_fails_the_handshake_without_a_panic() {
    let (server, _) = configs(false);
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    for garbage in
        [&b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..], &[0x16, 0x03, 0x01, 0xff, 0xff, 0x01][..], &[0u8; 64][..]]
    {
        let send = async {
            let mut tcp = TcpStream::connect_addr(addr).await.expect("connect");
            let (r, _) = tcp.write_all(garbage.to_vec()).await;
            r.expect("write");
            let _ = tcp.shutdown().await;
            tcp
        };
        let accept = async {
            let (tcp, _) = listener.accept().await.expect("accept");
            let mut s =
                TlsStream::new(tcp, Connection::Server(ServerConnection::new(Arc::clone(&server)).expect("server")));
            monoio::time::timeout(Duration::from_secs(5), s.handshake()).await.expect("ends in time")
        };
        let (_tcp, res) = monoio::join!(send, accept);
        assert!(res.is_err(), "{garbage:?} is not a handshake");
    }
}

/// Non-blocking receive on the client's socket (`MSG_PEEK` if `peek`).
#[allow(unsafe_code)]
fn recv_flags(s: &TlsStream, buf: &mut [u8], flags: libc::c_int) -> usize {
    use std::os::fd::{AsRawFd, BorrowedFd};
    // SAFETY: the fd belongs to `s`, which outlives this borrow.
    let fd = unsafe { BorrowedFd::borrow_raw(s.tcp().as_raw_fd()) };
    let sock = socket2::SockRef::from(&fd);
    // SAFETY: `u8` and `MaybeUninit<u8>` have the same layout; recv only writes.
    let uninit = unsafe { &mut *(buf as *mut [u8] as *mut [std::mem::MaybeUninit<u8>]) };
    sock.recv_with_flags(uninit, flags | libc::MSG_DONTWAIT).unwrap_or(0)
}

fn peek(s: &TlsStream, buf: &mut [u8]) -> usize {
    recv_flags(s, buf, libc::MSG_PEEK)
}

fn recv(s: &TlsStream, buf: &mut [u8]) -> usize {
    recv_flags(s, buf, 0)
}
