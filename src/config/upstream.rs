//! Building `[upstreams.NAME]`: balancing, retries, health checks and
//! pooling, with their defaults. Its servers (`servers` or `srv`) are
//! built in `discovery.rs`.

use super::raw::{RawHealthCheck, RawUpstream};
use super::{Builder, ConfigError};
use crate::dns::Lookups;
use crate::upstream::{Balance, HashKey, HealthCheck, PassiveHealth, Policy, Upstream};
use std::time::Duration;
use toml::Spanned;

/// Idle pooled connections kept per backend per worker.
pub const DEFAULT_KEEPALIVE: usize = 32;
/// Attempts per request (capped by the number of servers).
pub const DEFAULT_TRIES: usize = 3;
/// No new attempt for a request starts after this long.
pub const DEFAULT_RETRY_TIMEOUT: Duration = Duration::from_secs(10);
/// Failures within `fail_timeout` that take a server out of rotation.
pub const DEFAULT_MAX_FAILS: u32 = 1;
/// The failure window, and how long a failed server stays out.
pub const DEFAULT_FAIL_TIMEOUT: Duration = Duration::from_secs(10);
/// Idle pooled connections are closed after this long; keep it below the
/// backends' own keep-alive timeout.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a request waits when every server is at `max_conns`.
pub const DEFAULT_QUEUE_TIMEOUT: Duration = Duration::from_secs(1);
/// Time between two active health checks of a server.
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(2);
/// How long one active check may take before it counts as failed.
pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(1);
/// Consecutive passed checks that bring a server back.
pub const DEFAULT_HEALTH_RISE: u32 = 2;
/// Consecutive failed checks that take a server out.
pub const DEFAULT_HEALTH_FALL: u32 = 2;

impl Builder<'_> {
    pub(super) fn upstream(
        &self,
        name: &Spanned<String>,
        raw: &Spanned<RawUpstream>,
        lookups: &Lookups,
    ) -> Result<Upstream, ConfigError> {
        let key = format!("upstreams.{}", name.get_ref());
        let up = raw.get_ref();
        let refresh = self.refresh(up, &key)?;
        let sources = self.sources(name, raw, refresh, lookups)?;
        let duration = |v: &Option<Spanned<String>>, k: &str, default: Duration| match v {
            Some(s) => self.duration(s, &format!("{key}.{k}")),
            None => Ok(default),
        };
        let balance = self.balance(up, &key)?;
        let health_check = up.health_check.as_ref().map(|h| self.health_check(h.get_ref(), &key)).transpose()?;
        let policy = Policy {
            balance,
            tries: match &up.tries {
                Some(t) if *t.get_ref() == 0 => return Err(self.err(t, &format!("{key}.tries"), "must be at least 1")),
                Some(t) => *t.get_ref(),
                None => DEFAULT_TRIES,
            },
            retry_timeout: duration(&up.retry_timeout, "retry_timeout", DEFAULT_RETRY_TIMEOUT)?,
            retry_on_timeout: up.retry_on_timeout.unwrap_or(false),
            passive: PassiveHealth {
                max_fails: up.max_fails.unwrap_or(DEFAULT_MAX_FAILS),
                fail_timeout: duration(&up.fail_timeout, "fail_timeout", DEFAULT_FAIL_TIMEOUT)?,
            },
            health_check,
            idle_timeout: duration(&up.idle_timeout, "idle_timeout", DEFAULT_IDLE_TIMEOUT)?,
            queue_timeout: duration(&up.queue_timeout, "queue_timeout", DEFAULT_QUEUE_TIMEOUT)?,
            refresh,
        };
        let keepalive = up.keepalive.as_ref().map_or(DEFAULT_KEEPALIVE, |k| *k.get_ref());
        let tls = up.tls.as_ref().map(|t| self.upstream_tls(t, &key)).transpose()?;
        let mut built = Upstream::from_sources(name.get_ref().as_str().into(), sources, keepalive, policy, tls);
        built.send_proxy = match up.send_proxy_protocol.as_ref().map(|v| (v, v.get_ref().as_str())) {
            None => None,
            Some((_, "v1")) => Some(crate::proxy_protocol::Version::V1),
            Some((_, "v2")) => Some(crate::proxy_protocol::Version::V2),
            Some((v, _)) => {
                return Err(self.err(v, &format!("{key}.send_proxy_protocol"), "expected \"v1\" or \"v2\""))
            }
        };
        Ok(built)
    }

    fn balance(&self, up: &RawUpstream, key: &str) -> Result<Balance, ConfigError> {
        let Some(b) = &up.balance else {
            if let Some(h) = &up.hash_key {
                return Err(self.err(h, &format!("{key}.hash_key"), "only used with balance = \"hash\""));
            }
            return Ok(Balance::RoundRobin);
        };
        Ok(match b.get_ref().as_str() {
            "round_robin" => Balance::RoundRobin,
            "weighted_round_robin" => Balance::WeightedRoundRobin,
            "least_conn" => Balance::LeastConn,
            "random_two" => Balance::RandomTwo,
            "hash" => {
                let k = up.hash_key.as_ref().ok_or_else(|| {
                    self.err(
                        b,
                        &format!("{key}.hash_key"),
                        "balance = \"hash\" needs hash_key (\"client_ip\", \"header:NAME\" or \"cookie:NAME\")",
                    )
                })?;
                let v = k.get_ref();
                Balance::Hash(match v.split_once(':') {
                    None if v == "client_ip" => HashKey::ClientIp,
                    Some(("header", n)) if !n.is_empty() => HashKey::Header(n.to_owned()),
                    Some(("cookie", n)) if !n.is_empty() => HashKey::Cookie(n.to_owned()),
                    _ => {
                        return Err(self.err(
                            k,
                            &format!("{key}.hash_key"),
                            "expected \"client_ip\", \"header:NAME\" or \"cookie:NAME\"",
                        ))
                    }
                })
            }
            _ => {
                return Err(self.err(
                    b,
                    &format!("{key}.balance"),
                    "expected round_robin, weighted_round_robin, least_conn, random_two or hash",
                ))
            }
        })
    }

    fn health_check(&self, h: &RawHealthCheck, key: &str) -> Result<HealthCheck, ConfigError> {
        let k = format!("{key}.health_check");
        if let Some(path) = h.path.as_ref().filter(|p| !p.get_ref().starts_with('/')) {
            return Err(self.err(path, &k, "path must start with '/'"));
        }
        let d = |v: &Option<Spanned<String>>, default| v.as_ref().map_or(Ok(default), |s| self.duration(s, &k));
        let n = |v: &Option<Spanned<u32>>, default| match v {
            Some(x) if *x.get_ref() == 0 => Err(self.err(x, &k, "rise and fall must be at least 1")),
            Some(x) => Ok(*x.get_ref()),
            None => Ok(default),
        };
        Ok(HealthCheck {
            path: h.path.as_ref().map(|p| p.get_ref().clone()),
            interval: d(&h.interval, DEFAULT_HEALTH_INTERVAL)?,
            timeout: d(&h.timeout, DEFAULT_HEALTH_TIMEOUT)?,
            rise: n(&h.rise, DEFAULT_HEALTH_RISE)?,
            fall: n(&h.fall, DEFAULT_HEALTH_FALL)?,
        })
    }
}
