//! Listening sockets. Every worker gets its own socket per listener, all
//! bound to the same address with `SO_REUSEPORT`, so the kernel spreads
//! connections over workers with no accept thread and no hand-off.

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
    fn accepted_connections_inherit_nodelay() {
        let l = bind_reuseport("127.0.0.1:0".parse().expect("addr")).expect("bind");
        l.set_nonblocking(false).expect("blocking");
        let _client = std::net::TcpStream::connect(l.local_addr().expect("local")).expect("connect");
        let (accepted, _) = l.accept().expect("accept");
        assert!(accepted.nodelay().expect("nodelay"), "the accept loop relies on this");
    }
}
