//! Listening sockets. Every worker gets its own socket per listener, all
//! bound to the same address with `SO_REUSEPORT`, so the kernel spreads
//! connections over workers with no accept thread and no hand-off.

use super::handover::Inherited;
use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::SocketAddr;

/// Accept queue length per socket.
pub const LISTEN_BACKLOG: i32 = 4096;

/// One `SO_REUSEPORT` socket bound to `addr`.
pub fn bind_reuseport(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    dual_stack(&socket, addr)?;
    socket.set_nonblocking(true)?;
    // Accepted sockets inherit it, so workers need not set it per connection.
    socket.set_nodelay(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
}

/// An IPv6 socket takes IPv4 connections too, whatever the system default
/// (`net.ipv6.bindv6only`): the config's overlap check (`config::overlaps`)
/// counts `[::]:P` as covering IPv4, and must be right on every host.
fn dual_stack(socket: &Socket, addr: SocketAddr) -> io::Result<()> {
    if addr.is_ipv6() {
        socket.set_only_v6(false)?;
    }
    Ok(())
}

/// Refuses an address another process listens on. Our own sockets would
/// join its port through `SO_REUSEPORT` (the kernel allows that to the same
/// user) and quietly take part of its traffic. So first bind a probe
/// socket without `SO_REUSEPORT` (but with `SO_REUSEADDR`, so connections
/// in TIME_WAIT do not count): that fails only while a socket listens on an
/// overlapping address. Port 0 needs no check: it gets a free port.
pub fn check_free(addr: SocketAddr) -> io::Result<()> {
    if addr.port() == 0 {
        return Ok(());
    }
    let probe = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    probe.set_reuse_address(true)?;
    dual_stack(&probe, addr)?;
    match probe.bind(&addr.into()) {
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("address in use: another process is listening on {addr}"),
        )),
        // Anything else is for the real bind to report.
        _ => Ok(()),
    }
}

/// The sockets of one listener, at least `count`: those the running
/// instance handed over for `addr` (`--takeover`), joined by new ones if
/// there are fewer than `count`; otherwise `count` new ones.
pub fn open_group(
    addr: SocketAddr,
    count: usize,
    inherited: &mut Inherited,
) -> io::Result<(SocketAddr, Vec<std::net::TcpListener>)> {
    match inherited.take(addr) {
        Some(mut sockets) => {
            while sockets.len() < count {
                sockets.push(bind_reuseport(addr)?);
            }
            Ok((addr, sockets))
        }
        None => bind_group(addr, count),
    }
}

/// `count` sockets for one listener. Port 0 is resolved by the first bind,
/// and the rest join that port.
pub fn bind_group(addr: SocketAddr, count: usize) -> io::Result<(SocketAddr, Vec<std::net::TcpListener>)> {
    let first = bind_reuseport(addr)?;
    let actual = first.local_addr()?;
    let mut sockets = vec![first];
    for _ in 1..count {
        sockets.push(bind_reuseport(actual)?);
    }
    Ok((actual, sockets))
}

#[cfg(test)]
mod tests {
    use super::*;
    use socket2::SockRef;

    #[test]
    fn group_shares_one_ephemeral_port() {
        let (addr, socks) = bind_group("127.0.0.1:0".parse().expect("addr"), 3).expect("bind");
        assert_ne!(addr.port(), 0);
        assert_eq!(socks.len(), 3);
        for s in &socks {
            assert_eq!(s.local_addr().expect("local"), addr);
        }
    }

    #[test]
    fn an_address_another_socket_listens_on_is_not_free() {
        // Another ringway's socket: SO_REUSEPORT, like ours.
        let other = bind_reuseport("127.0.0.1:0".parse().expect("addr")).expect("bind");
        let addr = other.local_addr().expect("addr");
        let e = check_free(addr).expect_err("taken");
        assert_eq!(e.to_string(), format!("address in use: another process is listening on {addr}"));
        let wildcard = SocketAddr::from(([0, 0, 0, 0], addr.port()));
        assert!(check_free(wildcard).is_err(), "a wildcard overlaps the listening address");
        assert!(bind_reuseport(addr).is_ok(), "what the check is for: SO_REUSEPORT alone would join");
        drop(other);
        check_free(addr).expect("free once closed");
        check_free("127.0.0.1:0".parse().expect("addr")).expect("port 0 is always free");
    }

    #[test]
    fn ipv6_listeners_take_ipv4_too() {
        // Skipped where the host has no IPv6 at all.
        let Ok(l) = bind_reuseport("[::]:0".parse().expect("addr")) else { return };
        assert!(!SockRef::from(&l).only_v6().expect("only_v6"), "config::overlaps relies on this");
        let port = l.local_addr().expect("addr").port();
        std::net::TcpStream::connect(("127.0.0.1", port)).expect("IPv4 reaches [::]");
    }

    #[test]
    fn accepted_connections_inherit_nodelay() {
        let l = bind_reuseport("127.0.0.1:0".parse().expect("addr")).expect("bind");
        l.set_nonblocking(false).expect("blocking");
        let _client = std::net::TcpStream::connect(l.local_addr().expect("local")).expect("connect");
        let (accepted, _) = l.accept().expect("accept");
        assert!(accepted.nodelay().expect("nodelay"), "the accept loop relies on this");
    }
}
