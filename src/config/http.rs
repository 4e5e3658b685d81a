//! The `[http]` table: what the proxy lets through at the edge that it
//! could otherwise only guess about: which `Upgrade` protocols may become
//! a tunnel, what happens to header names with `_`, and whether `;` path
//! parameters are matched or refused. Each default closes a hole that a
//! backend behind the proxy would otherwise open (see `docs/http.md`).

use super::raw::RawHttp;
use super::{Builder, ConfigError};

/// Upgrade protocols tunneled when `[http] upgrades` is not set.
pub const DEFAULT_UPGRADES: [&str; 1] = ["websocket"];

/// Protocols that can never be tunneled: an `h2c` upgrade hands the backend
/// an HTTP/2 connection that skips routing, limits and logs ("h2c
/// smuggling"; RFC 9113 §3.1 deprecates the upgrade).
const NEVER_TUNNELED: [&str; 1] = ["h2c"];

/// What to do with a request header field whose name contains `_`. CGI,
/// WSGI, Rack and PHP map `X_Forwarded_For` and `X-Forwarded-For` to the
/// same variable, so such a field can spoof the proxy's own headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Underscores {
    /// Remove the field before forwarding (nginx's default), and count it.
    Drop,
    /// Forward it as it came.
    Pass,
    /// Answer 400.
    Reject,
}

/// How a path segment's `;` parameters (`/admin;x`, `/admin%3Bx`) are
/// treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathParams {
    /// Routes see a segment as ending at its first `;` (raw or `%3B`), as
    /// Tomcat, Jetty and Spring do; the parameters are forwarded.
    Match,
    /// A path with a `;` anywhere gets 400.
    Refuse,
}

/// What happens to client-sent forwarding fields (`X-Forwarded-For`,
/// `X-Forwarded-Proto`, `X-Real-IP`, `Forwarded`), `[http] forwarded`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forwarding {
    /// From a client outside the listener's `trusted` list they are
    /// removed and replaced with what ringway saw; from a trusted one
    /// `X-Forwarded-For` is appended to and the others pass.
    Replace,
    /// Appended to (and passed) from every client: the behaviour before
    /// `trusted` existed, for a proxy that only ever sits behind another.
    Append,
}

/// `[http]`: what the proxy lets through at the edge.
#[derive(Debug, Clone)]
pub struct HttpPolicy {
    /// Lower-case protocol names whose `Upgrade` is forwarded; any other
    /// offered protocol is removed from the request.
    pub upgrades: Vec<Box<[u8]>>,
    /// What happens to request fields with `_` in their name.
    pub underscores: Underscores,
    /// Whether `;` path parameters are matched around or refused.
    pub path_params: PathParams,
    /// Whose forwarding fields are believed.
    pub forwarded: Forwarding,
}

impl Default for HttpPolicy {
    fn default() -> Self {
        HttpPolicy {
            upgrades: DEFAULT_UPGRADES.iter().map(|p| p.as_bytes().into()).collect(),
            underscores: Underscores::Drop,
            path_params: PathParams::Match,
            forwarded: Forwarding::Replace,
        }
    }
}

impl HttpPolicy {
    /// The defaults, for code that parses heads outside a listener (the
    /// admin API, the demo backend).
    pub fn defaults() -> &'static HttpPolicy {
        static DEFAULTS: std::sync::LazyLock<HttpPolicy> = std::sync::LazyLock::new(HttpPolicy::default);
        &DEFAULTS
    }

    /// Whether the upgrade token `offered` (`name` or `name/version`) names
    /// a protocol that may be tunneled. The name compares case-insensitively.
    pub fn allows_upgrade(&self, offered: &[u8]) -> bool {
        let name = offered.split(|&b| b == b'/').next().unwrap_or_default();
        self.upgrades.iter().any(|p| p.eq_ignore_ascii_case(name))
    }
}

impl Builder<'_> {
    pub(super) fn http(&self, raw: Option<&RawHttp>) -> Result<HttpPolicy, ConfigError> {
        let mut policy = HttpPolicy::default();
        let Some(raw) = raw else { return Ok(policy) };
        if let Some(list) = &raw.upgrades {
            policy.upgrades.clear();
            for p in list.get_ref() {
                let name = p.get_ref().trim();
                let valid = !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
                if !valid {
                    return Err(self.err(p, "http.upgrades", "expected a protocol name such as \"websocket\""));
                }
                if NEVER_TUNNELED.iter().any(|n| n.eq_ignore_ascii_case(name)) {
                    return Err(self.err(
                        p,
                        "http.upgrades",
                        format!(
                            "\"{name}\" cannot be tunneled: an h2c upgrade would hand the backend an HTTP/2 \
                             connection that skips routing, limits and logs"
                        ),
                    ));
                }
                policy.upgrades.push(name.to_ascii_lowercase().into_bytes().into());
            }
        }
        if let Some(u) = &raw.underscores_in_headers {
            policy.underscores = match u.get_ref().as_str() {
                "drop" => Underscores::Drop,
                "pass" => Underscores::Pass,
                "reject" => Underscores::Reject,
                _ => {
                    return Err(self.err(u, "http.underscores_in_headers", "expected \"drop\", \"pass\" or \"reject\""))
                }
            };
        }
        if let Some(p) = &raw.path_params {
            policy.path_params = match p.get_ref().as_str() {
                "match" => PathParams::Match,
                "refuse" => PathParams::Refuse,
                _ => return Err(self.err(p, "http.path_params", "expected \"match\" or \"refuse\"")),
            };
        }
        if let Some(f) = &raw.forwarded {
            policy.forwarded = match f.get_ref().as_str() {
                "replace" => Forwarding::Replace,
                "append" => Forwarding::Append,
                _ => return Err(self.err(f, "http.forwarded", "expected \"replace\" or \"append\"")),
            };
        }
        Ok(policy)
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, PathParams, Underscores};
    use std::path::Path;

    const BASE: &str = "[upstreams.a]\nservers = [\"127.0.0.1:1\"]\n[[listeners]]\nname = \"p\"\nbind = \"127.0.0.1:0\"\nroutes = [ { prefix = \"/\", upstream = \"a\" } ]\n";

    fn parse(http: &str) -> Result<Config, crate::config::ConfigError> {
        Config::parse(Path::new("t.toml"), &format!("{BASE}{http}"))
    }

    #[test]
    fn defaults_close_the_holes() {
        let c = parse("").expect("valid");
        assert!(c.http.allows_upgrade(b"websocket") && c.http.allows_upgrade(b"WebSocket/13"));
        assert!(!c.http.allows_upgrade(b"h2c") && !c.http.allows_upgrade(b"websocketx"));
        assert_eq!(c.http.underscores, Underscores::Drop);
        assert_eq!(c.http.path_params, PathParams::Match);
    }

    #[test]
    fn keys_are_read() {
        let c = parse("[http]\nupgrades = [\"WebSocket\", \"my-proto\"]\nunderscores_in_headers = \"reject\"\npath_params = \"refuse\"\n")
            .expect("valid");
        assert!(c.http.allows_upgrade(b"websocket") && c.http.allows_upgrade(b"MY-PROTO"));
        assert_eq!(c.http.underscores, Underscores::Reject);
        assert_eq!(c.http.path_params, PathParams::Refuse);
        let none = parse("[http]\nupgrades = []\n").expect("valid");
        assert!(!none.http.allows_upgrade(b"websocket"));
    }

    #[test]
    fn h2c_is_refused_with_a_reason() {
        let e = parse("[http]\nupgrades = [\"websocket\", \"H2C\"]\n").expect_err("h2c");
        assert_eq!(e.key.as_deref(), Some("http.upgrades"));
        assert!(e.message.contains("cannot be tunneled"), "{e}");
        assert_eq!(e.line.map(|l| l.0), Some(8));
    }

    #[test]
    fn bad_values_name_their_key() {
        for (text, key) in [
            ("[http]\nunderscores_in_headers = \"keep\"\n", "http.underscores_in_headers"),
            ("[http]\npath_params = \"strip\"\n", "http.path_params"),
            ("[http]\nupgrades = [\"web socket\"]\n", "http.upgrades"),
        ] {
            let e = parse(text).expect_err(text);
            assert_eq!(e.key.as_deref(), Some(key), "{e}");
        }
    }
}
