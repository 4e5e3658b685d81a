//! Listener addresses that would collide. Two sockets of one process on
//! overlapping addresses both get bound (`SO_REUSEPORT`, or a wildcard next
//! to a specific address), and the kernel then splits connections between
//! route tables that were meant to be separate. So the config refuses them,
//! in `ringway check` and at start, pointing at both places.

use super::raw::RawListener;
use super::{Builder, ConfigError, Listener};
use std::net::{IpAddr, SocketAddr};
use toml::Spanned;

/// Whether a connection to one of `a` and `b` could be taken by a socket
/// bound to the other. Port 0 never overlaps: each such bind gets a port of
/// its own. A wildcard (`0.0.0.0`, `[::]`) overlaps every address of its
/// family on its port; `[::]` also overlaps every IPv4 address, because
/// ringway binds IPv6 sockets dual-stack (`IPV6_V6ONLY` off, see
/// `runtime::bind_reuseport`) whatever `net.ipv6.bindv6only` says. An
/// IPv4-mapped IPv6 address (`[::ffff:127.0.0.1]`) is its IPv4 address.
pub fn overlaps(a: SocketAddr, b: SocketAddr) -> bool {
    if a.port() == 0 || a.port() != b.port() {
        return false;
    }
    let (a, b) = (a.ip().to_canonical(), b.ip().to_canonical());
    a == b || covers(a, b) || covers(b, a)
}

/// Whether wildcard `w` takes connections to `ip`.
fn covers(w: IpAddr, ip: IpAddr) -> bool {
    match w {
        IpAddr::V4(w) => w.is_unspecified() && ip.is_ipv4(),
        IpAddr::V6(w) => w.is_unspecified(),
    }
}

impl Builder<'_> {
    /// Refuses the first listener whose address overlaps an earlier one's;
    /// the error points at its `bind` and names the earlier listener and
    /// where it is. `raw` and `built` are the same listeners, in order.
    pub(super) fn check_listener_binds(
        &self,
        raw: &[Spanned<RawListener>],
        built: &[Listener],
    ) -> Result<(), ConfigError> {
        for (i, (raw_l, l)) in raw.iter().zip(built).enumerate() {
            let Some((first_raw, first)) = raw.iter().zip(built).take(i).find(|(_, o)| overlaps(o.bind, l.bind)) else {
                continue;
            };
            let at = self.place(&first_raw.get_ref().bind);
            let msg = if first.bind == l.bind {
                format!(
                    "listener {:?} binds {}, as listener {:?} does ({at}); the kernel would split the \
                     connections between their routes",
                    l.name, l.bind, first.name
                )
            } else {
                format!(
                    "listener {:?} binds {}, which overlaps {} of listener {:?} ({at}); the kernel would \
                     split the connections between their routes",
                    l.name, l.bind, first.bind, first.name
                )
            };
            return Err(self.err(&raw_l.get_ref().bind, "listeners.bind", msg));
        }
        Ok(())
    }

    /// `[admin] bind`, refused if it overlaps a public listener: the admin
    /// API (reload, drain) must never answer on a public address.
    pub(super) fn admin_bind(
        &self,
        bind: &Spanned<String>,
        raw: &[Spanned<RawListener>],
        built: &[Listener],
    ) -> Result<SocketAddr, ConfigError> {
        let addr = self.socket_addr(bind, "admin.bind", "admin")?;
        if let Some((raw_l, l)) = raw.iter().zip(built).find(|(_, l)| overlaps(l.bind, addr)) {
            let at = self.place(&raw_l.get_ref().bind);
            let msg = format!(
                "the admin listener {addr} overlaps {} of listener {:?} ({at}); the admin API cannot share \
                 a public listener's address",
                l.bind, l.name
            );
            return Err(self.err(bind, "admin.bind", msg));
        }
        Ok(addr)
    }

    /// "line L, column C" of a value, for messages that name a second place.
    fn place<T>(&self, at: &Spanned<T>) -> String {
        let (line, column) = super::error::line_col(self.text, at.span().start);
        format!("line {line}, column {column}")
    }
}
