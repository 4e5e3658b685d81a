//! Building `[[listeners]]`: the address, the mode (HTTP routes or a TCP
//! upstream), TLS, the PROXY protocol and the `trusted` peers.

use super::raw::RawListener;
use super::{Builder, ConfigError, ListenerTls, Route, RouteAction};
use crate::metrics::RouteLabels;
use crate::router::Router;
use ipnet::IpNet;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use toml::Spanned;

/// A `[[listeners]]` entry: an address and the routes served on it.
#[derive(Debug, Clone)]
pub struct Listener {
    /// Unique; names the listener in metrics, logs and across reloads.
    pub name: Arc<str>,
    /// The configured address (port 0 until bound).
    pub bind: SocketAddr,
    /// The route prefixes, compiled into a trie.
    pub routes: Router<Route>,
    /// Labels for requests no route matched (answered 404).
    pub no_route: Arc<RouteLabels>,
    /// Terminate TLS (the `tls` table); absent: plaintext.
    pub tls: Option<ListenerTls>,
    /// HTTP (routes) or TCP (one upstream, bytes relayed).
    pub mode: ListenerMode,
    /// Read a PROXY protocol header (v1 or v2) first, from `trusted` peers.
    pub proxy_protocol: bool,
    /// Peers whose PROXY headers and forwarding fields are believed.
    pub trusted: Vec<IpNet>,
}

/// What a listener does with a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerMode {
    /// HTTP/1.1 over the listener's routes.
    Http,
    /// Layer 4: each connection to a server of one upstream, bytes relayed.
    Tcp {
        /// Index in `Config::upstreams`.
        upstream: usize,
    },
}

impl Listener {
    /// Whether `ip` is in the `trusted` list (an IPv4-mapped IPv6 address
    /// counts as its IPv4 address).
    pub fn trusts(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.trusted.iter().any(|net| net.contains(&ip))
    }
}

impl Builder<'_> {
    pub(super) fn listener(
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
            if let Some(to) = &r.redirect {
                if r.upstream.is_some() || r.status.is_some() || to.get_ref() != "https" {
                    return Err(self.err(
                        to,
                        "listeners.routes.redirect",
                        "`redirect = \"https\"` is the only redirect, and it stands alone (no `upstream` or `status`)",
                    ));
                }
            } else if let Some(p) = &r.redirect_port {
                return Err(self.err(p, "listeners.routes.redirect_port", "only with `redirect = \"https\"`"));
            }
            let action = match (&r.upstream, &r.status) {
                _ if r.redirect.is_some() => {
                    RouteAction::RedirectHttps { port: r.redirect_port.as_ref().map(|p| *p.get_ref()) }
                }
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
                        "a route needs exactly one of `upstream`, `status` or `redirect`",
                    ))
                }
            };
            let upstream_label = match &action {
                RouteAction::Proxy { upstream, .. } => Arc::clone(&upstream_names[*upstream]),
                RouteAction::Status(_) | RouteAction::RedirectHttps { .. } => Arc::clone(&dash),
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
        let tls = l.tls.as_ref().map(|t| self.listener_tls(t)).transpose()?;
        let mode = self.listener_mode(l, upstreams)?;
        let trusted = self.trusted(l)?;
        if l.proxy_protocol && trusted.is_empty() {
            return Err(self.err(
                &l.name,
                "listeners.proxy_protocol",
                "needs `trusted`: the peers allowed to send a PROXY header (a header from anyone else could claim any address)",
            ));
        }
        Ok(Listener { name, bind, routes, no_route, tls, mode, proxy_protocol: l.proxy_protocol, trusted })
    }

    fn listener_mode(&self, l: &RawListener, upstreams: &HashMap<String, usize>) -> Result<ListenerMode, ConfigError> {
        match l.mode.as_ref().map(|m| (m, m.get_ref().as_str())) {
            None | Some((_, "http")) => match &l.upstream {
                Some(u) => Err(self.err(
                    u,
                    "listeners.upstream",
                    "only a `mode = \"tcp\"` listener names one upstream; an HTTP listener routes",
                )),
                None => Ok(ListenerMode::Http),
            },
            Some((m, "tcp")) => {
                if let Some(r) = l.routes.first() {
                    return Err(self.err(
                        r,
                        "listeners.routes",
                        "a `mode = \"tcp\"` listener has no routes (it relays bytes to its `upstream`)",
                    ));
                }
                let Some(u) = &l.upstream else {
                    return Err(self.err(m, "listeners.upstream", "a `mode = \"tcp\"` listener needs `upstream`"));
                };
                match upstreams.get(u.get_ref()) {
                    Some(&upstream) => Ok(ListenerMode::Tcp { upstream }),
                    None => Err(self.err(u, "listeners.upstream", format!("unknown upstream `{}`", u.get_ref()))),
                }
            }
            Some((m, _)) => Err(self.err(m, "listeners.mode", "expected \"http\" or \"tcp\"")),
        }
    }

    /// `trusted`: CIDRs (`10.0.0.0/8`) or single addresses (`127.0.0.1`).
    fn trusted(&self, l: &RawListener) -> Result<Vec<IpNet>, ConfigError> {
        let Some(list) = &l.trusted else { return Ok(Vec::new()) };
        list.get_ref()
            .iter()
            .map(|s: &Spanned<String>| {
                let text = s.get_ref().trim();
                text.parse::<IpNet>().or_else(|_| text.parse::<IpAddr>().map(IpNet::from)).map(|n| n.trunc()).map_err(
                    |_| self.err(s, "listeners.trusted", "expected an address or a CIDR such as \"10.0.0.0/8\""),
                )
            })
            .collect()
    }
}
