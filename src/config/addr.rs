//! `host:port` values: listener and admin binds (an IP address, or a host
//! name resolved once when the config is loaded, to its first address),
//! and the host and port of upstream servers (resolved to every address,
//! see `discovery.rs`).

use super::{Builder, ConfigError};
use std::net::{SocketAddr, ToSocketAddrs};
use toml::Spanned;

impl Builder<'_> {
    /// `host:port` for `owner` (`listener public`, `admin`), which a
    /// resolution error names along with the host.
    pub(super) fn socket_addr(&self, s: &Spanned<String>, key: &str, owner: &str) -> Result<SocketAddr, ConfigError> {
        let text = s.get_ref();
        if let Ok(a) = text.parse::<SocketAddr>() {
            return Ok(a);
        }
        let (host, _) = self.host_port(s, key)?;
        // Host names are resolved once, at load time (blocking is fine here:
        // this runs before workers start or on the reload path, never a worker).
        match text.to_socket_addrs() {
            Ok(mut it) => {
                it.next().ok_or_else(|| self.err(s, key, format!("{owner}: host {host:?} resolved to no address")))
            }
            Err(e) => {
                // The resolver's own reason (no such name, or no DNS at
                // all) without the standard library's preamble.
                let e = e.to_string();
                let why = e.strip_prefix("failed to lookup address information: ").unwrap_or(&e);
                Err(self.err(s, key, format!("{owner}: cannot resolve host {host:?} ({why})")))
            }
        }
    }

    /// The host (without IPv6 brackets) and port of a `host:port` that is
    /// not an IP address and port.
    pub(super) fn host_port(&self, s: &Spanned<String>, key: &str) -> Result<(String, u16), ConfigError> {
        let text = s.get_ref();
        let Some((host, port)) = text.rsplit_once(':').filter(|(h, _)| !h.is_empty()) else {
            return Err(self.err(s, key, format!("expected host:port, e.g. \"127.0.0.1:8080\", got {text:?}")));
        };
        let Ok(port) = port.parse::<u16>() else {
            return Err(self.err(s, key, format!("port {port:?} in {text:?} is not a number from 0 to 65535")));
        };
        Ok((host.trim_start_matches('[').trim_end_matches(']').to_owned(), port))
    }
}
