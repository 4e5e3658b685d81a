//! Typed configuration. The TOML file is parsed once (`raw`), checked
//! completely, and turned into values the workers use without further
//! parsing: socket addresses, durations, compiled route tries. Every default
//! is a named constant here and is listed in `docs/configuration.md`.

mod addr;
mod binds;
mod error;
mod http;
mod raw;
mod upstream;
mod wording;

pub use binds::overlaps;
pub use error::ConfigError;
pub use http::{HttpPolicy, PathParams, Underscores, DEFAULT_UPGRADES};

use crate::metrics::RouteLabels;
use crate::router::Router;
use crate::upstream::{ServerState, Upstream};
use raw::{RawConfig, RawListener};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use toml::Spanned;

/// Idle pooled connections kept per backend per worker.
pub const DEFAULT_KEEPALIVE: usize = 32;
/// io_uring submission queue entries per worker ring.
pub const DEFAULT_RING_ENTRIES: u32 = 1024;
/// Bytes of the per-connection read buffer (also the largest single read).
pub const DEFAULT_READ_BUFFER_BYTES: usize = 16 * 1024;
/// Largest request or response head, in bytes (431 / 502 beyond).
pub const DEFAULT_MAX_HEADER_BYTES: usize = 16 * 1024;
/// Most header fields in one head (431 beyond).
pub const DEFAULT_MAX_HEADERS: usize = 100;
/// Hard ceiling for `max_headers`: the parser's field array lives on the stack.
pub const MAX_HEADERS_CEILING: usize = 256;
/// Longest request target, in bytes (414 beyond).
pub const DEFAULT_MAX_TARGET_BYTES: usize = 8 * 1024;
pub const DEFAULT_CLIENT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_CLIENT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_CLIENT_BODY_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_CLIENT_SEND_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
pub const DEFAULT_UPSTREAM_RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_UPSTREAM_SEND_TIMEOUT: Duration = Duration::from_secs(60);
/// An upgraded (e.g. WebSocket) connection with no bytes either way is closed.
pub const DEFAULT_TUNNEL_IDLE_TIMEOUT: Duration = Duration::from_secs(600);

/// Longest graceful stop: in-flight requests get this long to finish.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the access log goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogTarget {
    Stdout,
    File(PathBuf),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// The Apache/nginx "combined" line, plus duration, upstream and route.
    Combined,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLogConfig {
    pub target: LogTarget,
    pub format: LogFormat,
}

/// Which io driver each worker runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    /// io_uring when the kernel allows it, else epoll.
    Auto,
    IoUring,
    Epoll,
}

/// io_uring setup knobs; ignored by the epoll driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingConfig {
    pub entries: u32,
    pub coop_taskrun: bool,
    pub defer_taskrun: bool,
    pub sqpoll_idle: Option<Duration>,
}

#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    pub threads: NonZeroUsize,
    pub driver: Driver,
    pub ring: RingConfig,
    pub pin_cpus: bool,
    pub read_buffer: usize,
    pub log_level: Option<String>,
    pub shutdown_timeout: Duration,
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub max_target_bytes: usize,
    pub max_body_bytes: Option<u64>,
}

#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub client_header: Duration,
    pub client_idle: Duration,
    pub client_body: Duration,
    pub client_send: Duration,
    pub upstream_connect: Duration,
    pub upstream_response: Duration,
    pub upstream_send: Duration,
    pub tunnel_idle: Duration,
}

/// A route: what it does, and the labels its requests are counted under.
#[derive(Debug, Clone)]
pub struct Route {
    pub action: RouteAction,
    pub labels: Arc<RouteLabels>,
}

/// What a matched route does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteAction {
    /// Proxy to `upstreams[index]`.
    Proxy { upstream: usize, strip_prefix: bool },
    /// Answer locally with this status.
    Status(u16),
}

#[derive(Debug)]
pub struct Listener {
    pub name: Arc<str>,
    pub bind: SocketAddr,
    pub routes: Router<Route>,
    /// Labels for requests no route matched (answered 404).
    pub no_route: Arc<RouteLabels>,
}

/// One complete, validated configuration snapshot.
#[derive(Debug)]
pub struct Config {
    pub source: PathBuf,
    /// The text this snapshot was built from (host names are resolved again
    /// from it, see `runtime::Control::resolve_again`).
    pub text: String,
    pub runtime: RuntimeConfig,
    pub limits: Limits,
    pub timeouts: Timeouts,
    /// `[http]`: upgrades, underscores in names, path parameters.
    pub http: HttpPolicy,
    pub upstreams: Vec<Arc<Upstream>>,
    pub listeners: Vec<Listener>,
    /// Every distinct backend this snapshot names.
    pub servers: Vec<Arc<ServerState>>,
    /// The admin listener (`[admin] bind`), off when absent.
    pub admin: Option<SocketAddr>,
    pub access_log: Option<AccessLogConfig>,
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::io(path, format!("cannot read: {e}")))?;
        Config::parse(path, &text)
    }

    /// Validates config text; `source` names the file in errors.
    pub fn parse(source: &Path, text: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let at = e.span().map(|s| s.start);
            let key = at.and_then(|o| error::key_at(text, o));
            ConfigError::at(source, text, at, key.as_deref(), wording::plain(e.message()))
        })?;
        Builder { source, text }.build(raw)
    }
}

pub(crate) struct Builder<'a> {
    source: &'a Path,
    text: &'a str,
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
        let mut servers: Vec<Arc<ServerState>> = Vec::new();
        let mut by_name = HashMap::new();
        let mut upstreams = Vec::new();
        for (name, up) in &raw.upstreams {
            let built = self.upstream(name, up, &mut servers)?;
            by_name.insert(name.get_ref().clone(), upstreams.len());
            upstreams.push(Arc::new(built));
        }
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
            upstreams,
            listeners,
            servers,
            admin,
            access_log,
        })
    }

    fn access_log(&self, a: &raw::RawAccessLog) -> Result<AccessLogConfig, ConfigError> {
        let target = match a.path.get_ref().as_str() {
            "stdout" => LogTarget::Stdout,
            "" => return Err(self.err(&a.path, "access_log.path", "empty path")),
            p => LogTarget::File(PathBuf::from(p)),
        };
        let format = match a.format.as_ref() {
            None => LogFormat::Combined,
            Some(f) => match f.get_ref().as_str() {
                "combined" => LogFormat::Combined,
                "json" => LogFormat::Json,
                _ => return Err(self.err(f, "access_log.format", "expected \"combined\" or \"json\"")),
            },
        };
        Ok(AccessLogConfig { target, format })
    }

    fn runtime(&self, r: &raw::RawRuntime) -> Result<RuntimeConfig, ConfigError> {
        let threads = match &r.threads {
            Some(t) => {
                NonZeroUsize::new(*t.get_ref()).ok_or_else(|| self.err(t, "runtime.threads", "must be at least 1"))?
            }
            None => std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN),
        };
        let driver = match &r.driver {
            None => Driver::Auto,
            Some(d) => match d.get_ref().as_str() {
                "auto" => Driver::Auto,
                "io_uring" => Driver::IoUring,
                "epoll" => Driver::Epoll,
                _ => return Err(self.err(d, "runtime.driver", "expected \"auto\", \"io_uring\" or \"epoll\"")),
            },
        };
        let entries = match &r.ring_entries {
            Some(e) if !e.get_ref().is_power_of_two() || *e.get_ref() < 8 || *e.get_ref() > 32768 => {
                return Err(self.err(e, "runtime.ring_entries", "must be a power of two from 8 to 32768"))
            }
            Some(e) => *e.get_ref(),
            None => DEFAULT_RING_ENTRIES,
        };
        let sqpoll_idle = r.sqpoll_idle.as_ref().map(|s| self.duration(s, "runtime.sqpoll_idle")).transpose()?;
        let read_buffer = match &r.read_buffer {
            Some(b) if !(1024..=1 << 20).contains(b.get_ref()) => {
                return Err(self.err(b, "runtime.read_buffer", "must be from 1024 to 1048576 bytes"))
            }
            Some(b) => *b.get_ref(),
            None => DEFAULT_READ_BUFFER_BYTES,
        };
        let log_level = match &r.log_level {
            Some(l) if l.get_ref().parse::<log::LevelFilter>().is_err() => {
                return Err(self.err(l, "runtime.log_level", "expected off, error, warn, info, debug or trace"))
            }
            other => other.as_ref().map(|l| l.get_ref().clone()),
        };
        Ok(RuntimeConfig {
            threads,
            driver,
            ring: RingConfig {
                entries,
                coop_taskrun: r.coop_taskrun.unwrap_or(true),
                defer_taskrun: r.defer_taskrun.unwrap_or(true),
                sqpoll_idle,
            },
            pin_cpus: r.pin_cpus.unwrap_or(true),
            read_buffer,
            log_level,
            shutdown_timeout: match &r.shutdown_timeout {
                Some(s) => self.duration(s, "runtime.shutdown_timeout")?,
                None => DEFAULT_SHUTDOWN_TIMEOUT,
            },
        })
    }

    fn limits(&self, l: &raw::RawLimits) -> Result<Limits, ConfigError> {
        let bounded = |v: &Option<Spanned<usize>>, key: &str, min: usize, max: usize, default: usize| match v {
            Some(s) if !(min..=max).contains(s.get_ref()) => {
                Err(self.err(s, key, format!("must be from {min} to {max}")))
            }
            Some(s) => Ok(*s.get_ref()),
            None => Ok(default),
        };
        Ok(Limits {
            max_header_bytes: bounded(
                &l.max_header_bytes,
                "limits.max_header_bytes",
                1024,
                1 << 20,
                DEFAULT_MAX_HEADER_BYTES,
            )?,
            max_headers: bounded(&l.max_headers, "limits.max_headers", 1, MAX_HEADERS_CEILING, DEFAULT_MAX_HEADERS)?,
            max_target_bytes: bounded(
                &l.max_target_bytes,
                "limits.max_target_bytes",
                16,
                1 << 20,
                DEFAULT_MAX_TARGET_BYTES,
            )?,
            max_body_bytes: l.max_body_bytes.as_ref().map(|b| *b.get_ref()),
        })
    }

    pub(super) fn duration(&self, s: &Spanned<String>, key: &str) -> Result<Duration, ConfigError> {
        humantime::parse_duration(s.get_ref())
            .map_err(|e| self.err(s, key, format!("invalid duration ({e}); write e.g. \"10s\" or \"250ms\"")))
    }

    fn timeouts(&self, t: &raw::RawTimeouts) -> Result<Timeouts, ConfigError> {
        let get = |v: &Option<Spanned<String>>, key: &str, default: Duration| match v {
            Some(s) => match self.duration(s, key)? {
                d if d.is_zero() => Err(self.err(s, key, "must be greater than zero")),
                d => Ok(d),
            },
            None => Ok(default),
        };
        Ok(Timeouts {
            client_header: get(&t.client_header, "timeouts.client_header", DEFAULT_CLIENT_HEADER_TIMEOUT)?,
            client_idle: get(&t.client_idle, "timeouts.client_idle", DEFAULT_CLIENT_IDLE_TIMEOUT)?,
            client_body: get(&t.client_body, "timeouts.client_body", DEFAULT_CLIENT_BODY_TIMEOUT)?,
            client_send: get(&t.client_send, "timeouts.client_send", DEFAULT_CLIENT_SEND_TIMEOUT)?,
            upstream_connect: get(&t.upstream_connect, "timeouts.upstream_connect", DEFAULT_UPSTREAM_CONNECT_TIMEOUT)?,
            upstream_response: get(
                &t.upstream_response,
                "timeouts.upstream_response",
                DEFAULT_UPSTREAM_RESPONSE_TIMEOUT,
            )?,
            upstream_send: get(&t.upstream_send, "timeouts.upstream_send", DEFAULT_UPSTREAM_SEND_TIMEOUT)?,
            tunnel_idle: get(&t.tunnel_idle, "timeouts.tunnel_idle", DEFAULT_TUNNEL_IDLE_TIMEOUT)?,
        })
    }

    fn listener(
        &self,
        l: &Spanned<RawListener>,
        upstreams: &HashMap<String, usize>,
        upstream_names: &[Arc<str>],
    ) -> Result<Listener, ConfigError> {
        let l = l.get_ref();
        let name: Arc<str> = l.name.get_ref().as_str().into();
        let bind = self.socket_addr(&l.bind, "listeners.bind", &format!("listener {name}"))?;
        let dash: Arc<str> = "-".into();
        let mut routes = Router::new();
        for r in &l.routes {
            let r = r.get_ref();
            let action = match (&r.upstream, &r.status) {
                (Some(u), None) => match upstreams.get(u.get_ref()) {
                    Some(&i) => RouteAction::Proxy { upstream: i, strip_prefix: r.strip_prefix },
                    None => {
                        return Err(self.err(
                            u,
                            "listeners.routes.upstream",
                            format!("unknown upstream `{}`", u.get_ref()),
                        ))
                    }
                },
                (None, Some(s)) if (200..=599).contains(s.get_ref()) => RouteAction::Status(*s.get_ref()),
                (None, Some(s)) => return Err(self.err(s, "listeners.routes.status", "must be from 200 to 599")),
                _ => {
                    return Err(self.err(
                        &r.prefix,
                        "listeners.routes",
                        "a route needs exactly one of `upstream` or `status`",
                    ))
                }
            };
            let upstream_label = match &action {
                RouteAction::Proxy { upstream, .. } => Arc::clone(&upstream_names[*upstream]),
                RouteAction::Status(_) => Arc::clone(&dash),
            };
            let labels = Arc::new(RouteLabels {
                listener: Arc::clone(&name),
                route: r.prefix.get_ref().as_str().into(),
                upstream: upstream_label,
            });
            routes
                .insert(r.prefix.get_ref(), Route { action, labels })
                .map_err(|e| self.route_error(e, &l.routes, &r.prefix))?;
        }
        let no_route = Arc::new(RouteLabels { listener: Arc::clone(&name), route: Arc::clone(&dash), upstream: dash });
        Ok(Listener { name, bind, routes, no_route })
    }
}

#[cfg(test)]
mod tests;
