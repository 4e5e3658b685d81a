//! Typed configuration. The TOML file is parsed once (`raw`), checked
//! completely, and turned into values the workers use without further
//! parsing: socket addresses, durations, compiled route tries. Each table
//! is built in its own file (`runtime.rs` also builds `[access_log]`,
//! `limits.rs` also `[timeouts]`), and its numeric and duration defaults
//! are named constants (`DEFAULT_*`) there. Choices and switches (driver,
//! balance, log format, `pin_cpus` and the like) default where they are
//! read. All defaults are listed in `docs/configuration.md`.

mod addr;
mod binds;
mod discovery;
mod error;
mod http;
mod limits;
mod listener;
mod raw;
mod runtime;
mod tls;
mod upstream;
mod wording;

pub use binds::overlaps;
pub use discovery::{DEFAULT_RESOLVE_MAX, DEFAULT_RESOLVE_MIN};
pub use error::ConfigError;
pub use http::{Forwarding, HttpPolicy, PathParams, Underscores, DEFAULT_UPGRADES};
pub use limits::{
    Limits, Timeouts, DEFAULT_CLIENT_BODY_TIMEOUT, DEFAULT_CLIENT_HEADER_TIMEOUT, DEFAULT_CLIENT_IDLE_TIMEOUT,
    DEFAULT_CLIENT_SEND_TIMEOUT, DEFAULT_MAX_HEADERS, DEFAULT_MAX_HEADER_BYTES, DEFAULT_MAX_TARGET_BYTES,
    DEFAULT_TCP_IDLE_TIMEOUT, DEFAULT_TLS_HANDSHAKE_TIMEOUT, DEFAULT_TUNNEL_IDLE_TIMEOUT,
    DEFAULT_UPSTREAM_CONNECT_TIMEOUT, DEFAULT_UPSTREAM_RESPONSE_TIMEOUT, DEFAULT_UPSTREAM_SEND_TIMEOUT,
    MAX_HEADERS_CEILING,
};
pub use listener::{Listener, ListenerMode};
pub use runtime::{
    AccessLogConfig, Driver, LogFormat, LogTarget, RingConfig, RuntimeConfig, DEFAULT_READ_BUFFER_BYTES,
    DEFAULT_RING_ENTRIES, DEFAULT_SHUTDOWN_TIMEOUT,
};
pub use tls::ListenerTls;
pub use upstream::DEFAULT_KEEPALIVE;

use crate::dns::{DnsConfig, Lookups};
use crate::metrics::RouteLabels;

use crate::upstream::{ServerState, Upstream};
use raw::RawConfig;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use toml::Spanned;

/// A route: what it does, and the labels its requests are counted under.
#[derive(Debug, Clone)]
pub struct Route {
    /// Proxy, or answer with a status.
    pub action: RouteAction,
    /// Its metrics labels, shared so that counting a request copies nothing.
    pub labels: Arc<RouteLabels>,
}

/// What a matched route does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteAction {
    /// Proxy to `upstreams[upstream]`.
    Proxy {
        /// Index in `Config::upstreams`.
        upstream: usize,
        /// Remove the matched prefix from the path sent upstream.
        strip_prefix: bool,
    },
    /// Answer locally with this status.
    Status(u16),
    /// Answer 308 to the same host and target over HTTPS (`redirect =
    /// "https"`), on this port (absent: the default, 443).
    RedirectHttps {
        /// The port written into `Location` (omitted when 443).
        port: Option<u16>,
    },
}

/// One complete, validated configuration snapshot.
#[derive(Debug)]
pub struct Config {
    /// The file it was read from (what a reload reads again).
    pub source: PathBuf,
    /// The text this snapshot was built from.
    pub text: String,
    /// `[runtime]`.
    pub runtime: RuntimeConfig,
    /// `[limits]`.
    pub limits: Limits,
    /// `[timeouts]`.
    pub timeouts: Timeouts,
    /// `[http]`: upgrades, underscores in names, path parameters.
    pub http: HttpPolicy,
    /// `[dns]`: the name servers discovery asks.
    pub dns: DnsConfig,
    /// `[upstreams.NAME]`, in name order; routes refer to them by index.
    pub upstreams: Vec<Arc<Upstream>>,
    /// `[[listeners]]`, in file order.
    pub listeners: Vec<Listener>,
    /// Every distinct backend this snapshot names (host names and SRV
    /// records as resolved for this snapshot).
    pub servers: Vec<Arc<ServerState>>,
    /// The admin listener (`[admin] bind`), off when absent.
    pub admin: Option<SocketAddr>,
    /// `[access_log]`, off when absent.
    pub access_log: Option<AccessLogConfig>,
    /// Settings that are valid but unsafe or surprising (`verify = false`):
    /// logged at start and on each reload, printed by `check`.
    pub warnings: Vec<String>,
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::io(path, format!("cannot read: {e}")))?;
        Config::parse(path, &text)
    }

    /// Validates config text; `source` names the file in errors.
    pub fn parse(source: &Path, text: &str) -> Result<Config, ConfigError> {
        Config::parse_after(source, text, None)
    }

    /// Reads and validates a config file to replace `running`: a name of a
    /// discovered upstream that does not resolve now keeps what `running`
    /// last resolved it to.
    pub fn load_after(path: &Path, running: &Config) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::io(path, format!("cannot read: {e}")))?;
        Config::parse_after(path, &text, Some(running))
    }

    fn parse_after(source: &Path, text: &str, known: Option<&Config>) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let at = e.span().map(|s| s.start);
            let key = at.and_then(|o| error::key_at(text, o));
            ConfigError::at(source, text, at, key.as_deref(), wording::plain(e.message()))
        })?;
        Builder { source, text, known, warnings: Default::default() }.build(raw)
    }

    /// This snapshot with some upstreams replaced (`(index, upstream)`,
    /// after their names resolved to other servers); everything else is
    /// shared or copied, listeners' TLS settings (and so their session
    /// ticket keys) included.
    pub fn with_upstreams(&self, changed: Vec<(usize, Upstream)>) -> Config {
        let mut upstreams = self.upstreams.clone();
        for (i, u) in changed {
            if let Some(slot) = upstreams.get_mut(i) {
                *slot = Arc::new(u);
            }
        }
        Config {
            source: self.source.clone(),
            text: self.text.clone(),
            runtime: self.runtime.clone(),
            limits: self.limits,
            timeouts: self.timeouts,
            http: self.http.clone(),
            dns: self.dns.clone(),
            servers: distinct_servers(&upstreams),
            upstreams,
            listeners: self.listeners.clone(),
            admin: self.admin,
            access_log: self.access_log.clone(),
            warnings: self.warnings.clone(),
        }
    }
}

/// Every distinct server state the upstreams name, in order.
fn distinct_servers(upstreams: &[Arc<Upstream>]) -> Vec<Arc<ServerState>> {
    let mut servers: Vec<Arc<ServerState>> = Vec::new();
    for s in upstreams.iter().flat_map(|u| u.servers.iter()) {
        if !servers.iter().any(|m| m.addr == s.addr) {
            servers.push(Arc::clone(&s.state));
        }
    }
    servers
}

pub(crate) struct Builder<'a> {
    source: &'a Path,
    text: &'a str,
    /// The running config a reload replaces: what its names last resolved to.
    known: Option<&'a Config>,
    /// Collected while building (see `Config::warnings`).
    warnings: std::cell::RefCell<Vec<String>>,
}

impl Builder<'_> {
    pub(super) fn err<T>(&self, at: &Spanned<T>, key: &str, msg: impl Into<String>) -> ConfigError {
        ConfigError::at(self.source, self.text, Some(at.span().start), Some(key), msg)
    }

    fn build(&self, raw: RawConfig) -> Result<Config, ConfigError> {
        let runtime = self.runtime(&raw.runtime)?;
        let limits = self.limits(&raw.limits)?;
        let timeouts = self.timeouts(&raw.timeouts)?;
        let http = self.http(raw.http.as_ref())?;
        let dns = self.dns(raw.dns.as_ref())?;
        let lookups = Lookups::new(&dns);
        let mut by_name = HashMap::new();
        let mut upstreams = Vec::new();
        for (name, up) in &raw.upstreams {
            let built = self.upstream(name, up, &lookups)?;
            by_name.insert(name.get_ref().clone(), upstreams.len());
            upstreams.push(Arc::new(built));
        }
        let servers = distinct_servers(&upstreams);
        let mut listeners: Vec<Listener> = Vec::new();
        for l in &raw.listeners {
            let names: Vec<Arc<str>> = upstreams.iter().map(|u: &Arc<Upstream>| Arc::clone(&u.name)).collect();
            let built = self.listener(l, &by_name, &names)?;
            if listeners.iter().any(|o: &Listener| o.name == built.name) {
                return Err(self.err(&l.get_ref().name, "listeners.name", "duplicate listener name"));
            }
            listeners.push(built);
        }
        if listeners.is_empty() {
            return Err(ConfigError::at(
                self.source,
                self.text,
                None,
                Some("listeners"),
                "at least one [[listeners]] entry is required",
            ));
        }
        self.check_listener_binds(&raw.listeners, &listeners)?;
        let admin =
            raw.admin.as_ref().map(|a| self.admin_bind(&a.get_ref().bind, &raw.listeners, &listeners)).transpose()?;
        let access_log = raw.access_log.as_ref().map(|a| self.access_log(a.get_ref())).transpose()?;
        Ok(Config {
            source: self.source.to_path_buf(),
            text: self.text.to_owned(),
            runtime,
            limits,
            timeouts,
            http,
            dns,
            upstreams,
            listeners,
            servers,
            admin,
            access_log,
            warnings: self.warnings.take(),
        })
    }

    pub(super) fn duration(&self, s: &Spanned<String>, key: &str) -> Result<Duration, ConfigError> {
        humantime::parse_duration(s.get_ref())
            .map_err(|e| self.err(s, key, format!("invalid duration ({e}); write e.g. \"10s\" or \"250ms\"")))
    }
}

#[cfg(test)]
mod tests;
