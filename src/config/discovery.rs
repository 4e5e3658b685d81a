//! Building what discovery needs: the `[dns]` table, how often an upstream
//! resolves its names again (`resolve_every`; `srv` with `resolve_min` and
//! `resolve_max`), and its sources (each `servers` entry, or the `srv`
//! name), resolved now.
//!
//! A name that does not resolve is an error, unless the upstream resolves
//! its names again: then it is a warning (`check` prints it, start and
//! reload log it), and the name stands for what the running config last
//! resolved it to (on a reload) or for no server until it resolves.

use super::raw::{RawDns, RawServer, RawUpstream};
use super::{Builder, ConfigError};
use crate::dns::{DnsConfig, Lookups, DEFAULT_DNS_TIMEOUT};
use crate::upstream::{Lookup, Refresh, Source, MAX_WEIGHT};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use toml::Spanned;

/// `srv` records are not resolved again sooner than this after an answer
/// (whatever its TTL), nor after a failure.
pub const DEFAULT_RESOLVE_MIN: Duration = Duration::from_secs(1);
/// `srv` records are resolved again at least this often.
pub const DEFAULT_RESOLVE_MAX: Duration = Duration::from_secs(300);

impl Builder<'_> {
    /// `[dns]`.
    pub(super) fn dns(&self, raw: Option<&Spanned<RawDns>>) -> Result<DnsConfig, ConfigError> {
        let Some(raw) = raw.map(Spanned::get_ref) else { return Ok(DnsConfig::default()) };
        let mut nameservers = Vec::new();
        if let Some(list) = &raw.nameservers {
            if list.get_ref().is_empty() {
                return Err(self.err(
                    list,
                    "dns.nameservers",
                    "needs at least one \"ip:port\"; leave it out to use those of /etc/resolv.conf",
                ));
            }
            for s in list.get_ref() {
                let text = s.get_ref();
                let addr = text.parse::<SocketAddr>().or_else(|_| text.parse::<IpAddr>().map(|ip| (ip, 53).into()));
                nameservers.push(addr.map_err(|_| {
                    self.err(s, "dns.nameservers", format!("expected \"ip:port\" or \"ip\" (port 53), got {text:?}"))
                })?);
            }
        }
        let timeout = match &raw.timeout {
            Some(t) => self.positive(t, "dns.timeout")?,
            None => DEFAULT_DNS_TIMEOUT,
        };
        Ok(DnsConfig { nameservers, timeout })
    }

    /// A duration that must not be zero.
    fn positive(&self, s: &Spanned<String>, key: &str) -> Result<Duration, ConfigError> {
        match self.duration(s, key)? {
            Duration::ZERO => Err(self.err(s, key, "must be more than 0")),
            d => Ok(d),
        }
    }

    /// How often `up`'s names are resolved again: `resolve_every`, or for
    /// `srv` the records' TTL within `resolve_min` and `resolve_max`.
    pub(super) fn refresh(&self, up: &RawUpstream, key: &str) -> Result<Option<Refresh>, ConfigError> {
        let k = |name: &str| format!("{key}.{name}");
        if up.srv.is_none() {
            if let Some(s) = up.resolve_min.as_ref().or(up.resolve_max.as_ref()) {
                let which = if up.resolve_min.is_some() { "resolve_min" } else { "resolve_max" };
                return Err(self.err(
                    s,
                    &k(which),
                    "only with `srv`; host names in `servers` are resolved again every `resolve_every`",
                ));
            }
            return up
                .resolve_every
                .as_ref()
                .map(|r| Ok(Refresh::Every(self.positive(r, &k("resolve_every"))?)))
                .transpose();
        }
        if let Some(r) = &up.resolve_every {
            return Err(self.err(
                r,
                &k("resolve_every"),
                "not with `srv`: SRV records are resolved again when their TTL ends, within `resolve_min` and `resolve_max`",
            ));
        }
        let bound = |v: &Option<Spanned<String>>, name: &str, default| match v {
            Some(s) => self.positive(s, &k(name)),
            None => Ok(default),
        };
        let min = bound(&up.resolve_min, "resolve_min", DEFAULT_RESOLVE_MIN)?;
        let max = bound(&up.resolve_max, "resolve_max", DEFAULT_RESOLVE_MAX)?;
        // One of them at least was given: the defaults are in order.
        let given = [(&up.resolve_min, "resolve_min"), (&up.resolve_max, "resolve_max")];
        if let Some((Some(at), name)) = given.into_iter().find(|(v, _)| v.is_some()).filter(|_| min > max) {
            return Err(self.err(at, &k(name), format!("resolve_min ({min:?}) is more than resolve_max ({max:?})")));
        }
        Ok(Some(Refresh::Ttl { min, max }))
    }

    /// The sources of upstream `name`: its `servers` entries, or its `srv`
    /// name, each resolved now (see the module doc for names that fail).
    pub(super) fn sources(
        &self,
        name: &Spanned<String>,
        up: &Spanned<RawUpstream>,
        refresh: Option<Refresh>,
        lookups: &Lookups,
    ) -> Result<Vec<Source>, ConfigError> {
        let key = format!("upstreams.{}", name.get_ref());
        let owner = format!("upstream {}", name.get_ref());
        let raw = up.get_ref();
        let servers = match (&raw.servers, &raw.srv) {
            (Some(_), Some(srv)) => {
                return Err(self.err(srv, &format!("{key}.srv"), "give either `servers` or `srv`, not both"))
            }
            (None, None) => {
                return Err(self.err(
                    up,
                    &key,
                    "missing required key `servers` (a list of \"host:port\"), or `srv` (the name of SRV records)",
                ))
            }
            (None, Some(srv)) => {
                let key = format!("{key}.srv");
                if srv.get_ref().trim().is_empty() {
                    return Err(self.err(srv, &key, "must name SRV records, e.g. \"_http._tcp.backend.example.com\""));
                }
                let text = srv.get_ref().trim();
                let mut source = Source {
                    written: text.into(),
                    lookup: Lookup::Srv(text.into()),
                    weight: 1,
                    backup: false,
                    max_conns: None,
                    found: None,
                    ttl: None,
                };
                self.resolve(&mut source, srv, &key, &owner, refresh, lookups)?;
                return Ok(vec![source]);
            }
            (Some(servers), None) => servers,
        };
        let key = format!("{key}.servers");
        if servers.get_ref().is_empty() {
            return Err(self.err(servers, &key, "needs at least one server"));
        }
        let mut sources: Vec<Source> = Vec::new();
        for s in servers.get_ref() {
            let mut source = self.entry(s, &key)?;
            if sources.iter().any(|o| o.lookup == source.lookup) {
                return Err(self.err(s, &key, format!("server {} listed twice", source.written)));
            }
            self.resolve(&mut source, s, &key, &owner, refresh, lookups)?;
            sources.push(source);
        }
        if sources.iter().all(|s| s.backup) {
            return Err(self.err(servers, &key, "needs at least one server that is not a backup"));
        }
        Ok(sources)
    }

    /// One `servers` entry, checked but not resolved.
    fn entry(&self, s: &Spanned<RawServer>, key: &str) -> Result<Source, ConfigError> {
        let (text, weight, backup, max_conns) = match s.get_ref() {
            RawServer::Addr(a) => (a.as_str(), 1, false, None),
            RawServer::Table(t) => (t.addr.as_str(), t.weight.unwrap_or(1), t.backup.unwrap_or(false), t.max_conns),
        };
        if !(1..=MAX_WEIGHT).contains(&weight) {
            return Err(self.err(s, key, format!("weight must be from 1 to {MAX_WEIGHT}")));
        }
        if max_conns == Some(0) {
            return Err(self.err(s, key, "max_conns must be at least 1"));
        }
        let lookup = match text.parse::<SocketAddr>() {
            Ok(a) => Lookup::Addr(a),
            Err(_) => {
                let (host, port) = self.host_port(&Spanned::new(s.span(), text.to_owned()), key)?;
                Lookup::Host { host: host.into(), port }
            }
        };
        Ok(Source { written: text.into(), lookup, weight, backup, max_conns, found: None, ttl: None })
    }

    /// Resolves `source` now. A failure is an error without `refresh`;
    /// with it, a warning, and the source keeps what the running config
    /// found for the same name, if anything.
    fn resolve<T>(
        &self,
        source: &mut Source,
        at: &Spanned<T>,
        key: &str,
        owner: &str,
        refresh: Option<Refresh>,
        lookups: &Lookups,
    ) -> Result<(), ConfigError> {
        let why = match source.resolve(lookups) {
            Ok((found, ttl)) => {
                source.found = Some(found);
                source.ttl = ttl;
                return Ok(());
            }
            Err(why) => why,
        };
        let what = match &source.lookup {
            Lookup::Host { host, .. } => format!("host {host:?}"),
            Lookup::Srv(name) => format!("SRV name {name:?}"),
            Lookup::Addr(a) => format!("address {a}"),
        };
        let Some(refresh) = refresh else {
            return Err(self.err(at, key, format!("{owner}: cannot resolve {what} ({why})")));
        };
        let known = self.known.into_iter().flat_map(|c| c.upstreams.iter()).flat_map(|u| u.sources.iter());
        let last = known.filter(|k| k.lookup == source.lookup).find(|k| k.found.is_some());
        let then = match last {
            Some(k) => {
                source.found.clone_from(&k.found);
                source.ttl = k.ttl;
                format!("keeping the {} server(s) it last resolved to", source.members().len())
            }
            None => format!("no server from {:?} until it resolves", &*source.written),
        };
        let again = match refresh {
            Refresh::Every(d) => format!("every {}", humantime::format_duration(d)),
            Refresh::Ttl { min, .. } => format!("after {}", humantime::format_duration(min)),
        };
        self.warnings
            .borrow_mut()
            .push(format!("{key}: {owner}: cannot resolve {what} ({why}); {then} (tried again {again})"));
        Ok(())
    }
}

#[cfg(test)]
mod tests;
