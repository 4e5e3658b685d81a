//! The configuration file as written: serde structures that mirror the TOML
//! one to one, with spans kept where a later check must point at a line.
//! Nothing here is validated beyond TOML types; `Config::load` (through `Config::parse`) does that.

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use toml::Spanned;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub runtime: RawRuntime,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub timeouts: RawTimeouts,
    #[serde(default)]
    pub upstreams: BTreeMap<Spanned<String>, Spanned<RawUpstream>>,
    #[serde(default)]
    pub listeners: Vec<Spanned<RawListener>>,
    pub admin: Option<Spanned<RawAdmin>>,
    pub access_log: Option<Spanned<RawAccessLog>>,
    pub http: Option<RawHttp>,
    pub dns: Option<Spanned<RawDns>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDns {
    pub nameservers: Option<Spanned<Vec<Spanned<String>>>>,
    pub timeout: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttp {
    pub upgrades: Option<Spanned<Vec<Spanned<String>>>>,
    pub underscores_in_headers: Option<Spanned<String>>,
    pub path_params: Option<Spanned<String>>,
    pub forwarded: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub bind: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAccessLog {
    pub path: Spanned<String>,
    pub format: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRuntime {
    pub threads: Option<Spanned<usize>>,
    pub driver: Option<Spanned<String>>,
    pub ring_entries: Option<Spanned<u32>>,
    pub coop_taskrun: Option<bool>,
    pub defer_taskrun: Option<bool>,
    pub sqpoll_idle: Option<Spanned<String>>,
    pub pin_cpus: Option<bool>,
    pub read_buffer: Option<Spanned<usize>>,
    pub log_level: Option<Spanned<String>>,
    pub shutdown_timeout: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub max_header_bytes: Option<Spanned<usize>>,
    pub max_headers: Option<Spanned<usize>>,
    pub max_target_bytes: Option<Spanned<usize>>,
    pub max_body_bytes: Option<Spanned<u64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTimeouts {
    pub client_header: Option<Spanned<String>>,
    pub client_idle: Option<Spanned<String>>,
    pub client_body: Option<Spanned<String>>,
    pub client_send: Option<Spanned<String>>,
    pub upstream_connect: Option<Spanned<String>>,
    pub upstream_response: Option<Spanned<String>>,
    pub upstream_send: Option<Spanned<String>>,
    pub tunnel_idle: Option<Spanned<String>>,
    pub tls_handshake: Option<Spanned<String>>,
    pub tcp_idle: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    pub servers: Option<Spanned<Vec<Spanned<RawServer>>>>,
    pub srv: Option<Spanned<String>>,
    pub keepalive: Option<Spanned<usize>>,
    pub balance: Option<Spanned<String>>,
    pub hash_key: Option<Spanned<String>>,
    pub tries: Option<Spanned<usize>>,
    pub retry_timeout: Option<Spanned<String>>,
    pub retry_on_timeout: Option<bool>,
    pub max_fails: Option<u32>,
    pub fail_timeout: Option<Spanned<String>>,
    pub health_check: Option<Spanned<RawHealthCheck>>,
    pub idle_timeout: Option<Spanned<String>>,
    pub queue_timeout: Option<Spanned<String>>,
    pub resolve_every: Option<Spanned<String>>,
    pub resolve_min: Option<Spanned<String>>,
    pub resolve_max: Option<Spanned<String>>,
    pub tls: Option<Spanned<RawUpstreamTls>>,
    pub send_proxy_protocol: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstreamTls {
    pub sni: Option<Spanned<String>>,
    pub ca: Option<Spanned<String>>,
    pub verify: Option<bool>,
    pub cert: Option<Spanned<String>>,
    pub key: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListenerTls {
    pub certificates: Spanned<Vec<Spanned<RawCertificate>>>,
    pub min_version: Option<Spanned<String>>,
    #[serde(default)]
    pub sni_strict: bool,
    pub client_ca: Option<Spanned<String>>,
    pub client_subject_header: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCertificate {
    pub cert: Spanned<String>,
    pub key: Spanned<String>,
}

/// A server as a plain `"host:port"` string or a table.
#[derive(Debug)]
pub enum RawServer {
    Addr(String),
    Table(RawServerTable),
}

/// By hand rather than `#[serde(untagged)]`: an untagged enum hides why a
/// table did not fit (`data did not match any variant`), where this passes
/// on the table's own error (an unknown key, a weight that is not a number).
impl<'de> Deserialize<'de> for RawServer {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ServerVisitor;
        impl<'de> Visitor<'de> for ServerVisitor {
            type Value = RawServer;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"host:port\" or a table { addr = \"host:port\", weight = 1 }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawServer, E> {
                Ok(RawServer::Addr(v.to_owned()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawServer, A::Error> {
                RawServerTable::deserialize(de::value::MapAccessDeserializer::new(map)).map(RawServer::Table)
            }
        }
        d.deserialize_any(ServerVisitor)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServerTable {
    pub addr: String,
    pub weight: Option<u32>,
    pub backup: Option<bool>,
    pub max_conns: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealthCheck {
    pub path: Option<Spanned<String>>,
    pub interval: Option<Spanned<String>>,
    pub timeout: Option<Spanned<String>>,
    pub rise: Option<Spanned<u32>>,
    pub fall: Option<Spanned<u32>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    pub name: Spanned<String>,
    pub bind: Spanned<String>,
    #[serde(default)]
    pub routes: Vec<Spanned<RawRoute>>,
    pub tls: Option<Spanned<RawListenerTls>>,
    pub mode: Option<Spanned<String>>,
    pub upstream: Option<Spanned<String>>,
    #[serde(default)]
    pub proxy_protocol: bool,
    pub trusted: Option<Spanned<Vec<Spanned<String>>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub prefix: Spanned<String>,
    pub upstream: Option<Spanned<String>>,
    pub status: Option<Spanned<u16>>,
    pub redirect: Option<Spanned<String>>,
    pub redirect_port: Option<Spanned<u16>>,
    #[serde(default)]
    pub strip_prefix: bool,
}
