//! Counters and latency, kept per worker with no sharing on the request path
//! (plain fields behind the worker's `RefCell`), copied out on request by the
//! admin thread and merged into Prometheus text at scrape time.

use hdrhistogram::Histogram;
use std::collections::HashMap;
use std::fmt::Write;
use std::sync::Arc;

/// Labels of a route, shared by every request that matched it.
#[derive(Debug)]
pub struct RouteLabels {
    /// The listener name.
    pub listener: Arc<str>,
    /// The route prefix, or "-" when no route matched.
    pub route: Arc<str>,
    /// The upstream name, or "-" for a local answer.
    pub upstream: Arc<str>,
}

/// How one attempt on an upstream server ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The server did its part: its response was relayed (or the client failed).
    Success,
    /// The connection could not be made.
    ConnectError,
    /// `upstream_response` or `upstream_send` passed.
    Timeout,
    /// The server closed or reset the connection before the response ended.
    Reset,
    /// The server sent an invalid response head or body.
    BadResponse,
}

impl Outcome {
    /// The `outcome` label value.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::ConnectError => "connect_error",
            Outcome::Timeout => "timeout",
            Outcome::Reset => "reset",
            Outcome::BadResponse => "bad_response",
        }
    }
}

/// Latency is recorded in microseconds, 1 µs to 1 hour, 3 significant digits.
const LATENCY_MAX_US: u64 = 3_600_000_000;
/// Prometheus bucket bounds in seconds.
const BUCKETS: [f64; 14] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// (upstream name address, server id, outcome).
type UpstreamKey = (usize, usize, Outcome);

/// A hasher for small integer keys (addresses, ids, status codes): the keys
/// are not attacker-chosen, so SipHash's cost buys nothing here.
#[derive(Default, Clone, Copy)]
pub struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }

    fn write_u16(&mut self, n: u16) {
        self.write_u64(u64::from(n));
    }
}

type IdMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<IdHasher>>;

/// One worker's counters. The keys use the address of the shared label
/// objects, so counting a request hashes two integers and allocates nothing.
pub struct WorkerMetrics {
    requests: IdMap<(usize, u16), (Arc<RouteLabels>, u64)>,
    latency: Histogram<u64>,
    upstream: IdMap<UpstreamKey, (Arc<str>, std::net::SocketAddr, u64)>,
    connects: IdMap<usize, (std::net::SocketAddr, u64)>,
    /// Open connections by listener, keyed by the address of the accept
    /// loop's name (several keys can share a name after a reload).
    connections: IdMap<usize, (Arc<str>, i64)>,
    /// Idle client connections parked outside a session (`proxy/parked.rs`),
    /// so an operator can tell the small idle ones from the rest.
    pub parked: i64,
    retries: u64,
    /// What the edge rules did to requests (see `EdgeCounts`).
    pub edge: EdgeCounts,
    /// TLS handshakes on listeners.
    pub tls: TlsCounts,
    /// TCP-mode connections and PROXY header refusals.
    pub l4: L4Counts,
}

/// Counters for requests the edge rules changed or refused, so an operator
/// sees the attack (or the misbehaving client) and not just its status.
#[derive(Debug, Default, Clone, Copy)]
pub struct EdgeCounts {
    /// Request fields dropped for a `_` in their name.
    pub underscored_dropped: u64,
    /// `Upgrade` offers removed because `[http] upgrades` does not list them.
    pub upgrades_stripped: u64,
    /// Responses that came before the request body was sent (RFC 9112 §9.5).
    pub early_responses: u64,
    /// Connections refused at their first bytes (not an HTTP request line).
    pub request_lines_refused: u64,
}

impl EdgeCounts {
    fn add(&mut self, o: &EdgeCounts) {
        self.underscored_dropped += o.underscored_dropped;
        self.upgrades_stripped += o.upgrades_stripped;
        self.early_responses += o.early_responses;
        self.request_lines_refused += o.request_lines_refused;
    }
}

impl Default for WorkerMetrics {
    fn default() -> Self {
        WorkerMetrics {
            requests: IdMap::default(),
            // Static bounds that are valid for hdrhistogram: cannot fail.
            latency: Histogram::new_with_bounds(1, LATENCY_MAX_US, 3).expect("valid histogram bounds"),
            upstream: IdMap::default(),
            connects: IdMap::default(),
            connections: IdMap::default(),
            parked: 0,
            retries: 0,
            edge: EdgeCounts::default(),
            tls: TlsCounts::default(),
            l4: L4Counts::default(),
        }
    }
}

impl WorkerMetrics {
    /// Counts a finished request under its route and status, and records
    /// its latency.
    pub fn request(&mut self, labels: &Arc<RouteLabels>, code: u16, micros: u64) {
        let key = (Arc::as_ptr(labels) as usize, code);
        self.requests.entry(key).or_insert_with(|| (Arc::clone(labels), 0)).1 += 1;
        let _ = self.latency.record(micros.clamp(1, LATENCY_MAX_US));
    }

    /// Counts one attempt on a server of `upstream` by how it ended.
    pub fn upstream(&mut self, upstream: &Arc<str>, server_id: usize, addr: std::net::SocketAddr, outcome: Outcome) {
        let key = (Arc::as_ptr(upstream) as *const u8 as usize, server_id, outcome);
        self.upstream.entry(key).or_insert_with(|| (Arc::clone(upstream), addr, 0)).2 += 1;
    }

    /// Counts a new connection to a server (one not taken from the pool).
    pub fn connect(&mut self, server_id: usize, addr: std::net::SocketAddr) {
        self.connects.entry(server_id).or_insert((addr, 0)).1 += 1;
    }

    /// One more open client connection on `listener`.
    pub fn connection_opened(&mut self, listener: &Arc<str>) {
        *self.open_connections(listener) += 1;
    }

    /// One fewer open client connection on `listener`.
    pub fn connection_closed(&mut self, listener: &Arc<str>) {
        *self.open_connections(listener) -= 1;
    }

    fn open_connections(&mut self, listener: &Arc<str>) -> &mut i64 {
        let key = Arc::as_ptr(listener) as *const u8 as usize;
        &mut self.connections.entry(key).or_insert_with(|| (Arc::clone(listener), 0)).1
    }

    /// Counts an attempt after the first one of a request.
    pub fn retry(&mut self) {
        self.retries += 1;
    }

    /// A copy of the counters, with the worker's pool gauges, for a scrape.
    pub fn snapshot(&self, pools: Vec<PoolGauge>) -> WorkerSnapshot {
        WorkerSnapshot {
            requests: self.requests.iter().map(|(&(_, code), (l, n))| (Arc::clone(l), code, *n)).collect(),
            latency: self.latency.clone(),
            upstream: self.upstream.iter().map(|(k, (u, a, n))| (Arc::clone(u), *a, k.2, *n)).collect(),
            connects: self.connects.values().copied().collect(),
            connections: self.connections.values().map(|(l, n)| (Arc::clone(l), *n)).collect(),
            parked: self.parked,
            retries: self.retries,
            edge: self.edge,
            tls: self.tls.clone(),
            l4: self.l4.clone(),
            pools,
        }
    }
}

/// Idle and active upstream connections of one worker to one server.
#[derive(Debug, Clone, Copy)]
pub struct PoolGauge {
    /// The server.
    pub addr: std::net::SocketAddr,
    /// Idle connections in the pool.
    pub idle: usize,
    /// Connections carrying a request.
    pub active: usize,
}

/// A copy of one worker's counters, sent to the admin thread.
pub struct WorkerSnapshot {
    /// Requests by route and status.
    pub requests: Vec<(Arc<RouteLabels>, u16, u64)>,
    /// Request latency in microseconds.
    pub latency: Histogram<u64>,
    /// Attempts by upstream, server and outcome.
    pub upstream: Vec<(Arc<str>, std::net::SocketAddr, Outcome, u64)>,
    /// New upstream connections by server.
    pub connects: Vec<(std::net::SocketAddr, u64)>,
    /// Open client connections by listener.
    pub connections: Vec<(Arc<str>, i64)>,
    /// Parked idle client connections.
    pub parked: i64,
    /// Attempts after the first.
    pub retries: u64,
    /// What the edge checks refused or changed.
    pub edge: EdgeCounts,
    /// TLS handshakes.
    pub tls: TlsCounts,
    /// Layer-4 counters.
    pub l4: L4Counts,
    /// Pooled connections by server.
    pub pools: Vec<PoolGauge>,
}

/// Process-wide figures that are not per worker.
pub struct Globals<'a> {
    /// Reloads applied.
    pub reloads_ok: u64,
    /// Reloads refused.
    pub reloads_failed: u64,
    /// `(upstream, server, healthy)` for every server of the running config.
    pub health: &'a [(Arc<str>, std::net::SocketAddr, bool)],
    /// DNS discovery rounds: `(upstream, succeeded, failed)`.
    pub dns: &'a [(Arc<str>, u64, u64)],
}

/// Merges worker snapshots into the Prometheus text exposition format.
pub fn render(snaps: &[WorkerSnapshot], g: &Globals<'_>) -> String {
    let mut out = String::with_capacity(4096);
    let mut requests: HashMap<(&str, &str, &str, u16), u64> = HashMap::new();
    for s in snaps {
        for (l, code, n) in &s.requests {
            *requests.entry((&l.listener, &l.route, &l.upstream, *code)).or_insert(0) += n;
        }
    }
    out.push_str("# HELP ringway_requests_total Requests answered, by listener, route, upstream and status.\n# TYPE ringway_requests_total counter\n");
    let mut rows: Vec<_> = requests.into_iter().collect();
    rows.sort();
    for ((listener, route, upstream, code), n) in rows {
        let _ = writeln!(
            out,
            "ringway_requests_total{{listener=\"{}\",route=\"{}\",upstream=\"{}\",code=\"{code}\"}} {n}",
            esc(listener),
            esc(route),
            esc(upstream)
        );
    }

    let mut merged: Option<Histogram<u64>> = None;
    for s in snaps {
        match &mut merged {
            None => merged = Some(s.latency.clone()),
            Some(m) => {
                let _ = m.add(&s.latency);
            }
        }
    }
    out.push_str("# HELP ringway_request_duration_seconds Time from a complete request head to the end of the response.\n# TYPE ringway_request_duration_seconds histogram\n");
    if let Some(h) = merged {
        histogram(&mut out, "ringway_request_duration_seconds", &h, &BUCKETS, 1e6);
    }

    let mut upstream: HashMap<(&str, std::net::SocketAddr, &str), u64> = HashMap::new();
    for s in snaps {
        for (u, a, o, n) in &s.upstream {
            *upstream.entry((u, *a, o.label())).or_insert(0) += n;
        }
    }
    out.push_str("# HELP ringway_upstream_requests_total Attempts on upstream servers, by outcome.\n# TYPE ringway_upstream_requests_total counter\n");
    let mut rows: Vec<_> = upstream.into_iter().collect();
    rows.sort();
    for ((u, a, o), n) in rows {
        let _ = writeln!(
            out,
            "ringway_upstream_requests_total{{upstream=\"{}\",server=\"{a}\",outcome=\"{o}\"}} {n}",
            esc(u)
        );
    }

    out.push_str("# HELP ringway_upstream_health 1 when the server is in rotation, 0 when it is out (down or drained).\n# TYPE ringway_upstream_health gauge\n");
    for (u, a, up) in g.health {
        let _ = writeln!(out, "ringway_upstream_health{{upstream=\"{}\",server=\"{a}\"}} {}", esc(u), u8::from(*up));
    }

    let mut pools: HashMap<std::net::SocketAddr, (usize, usize)> = HashMap::new();
    let mut connects: HashMap<std::net::SocketAddr, u64> = HashMap::new();
    for s in snaps {
        for p in &s.pools {
            let e = pools.entry(p.addr).or_insert((0, 0));
            e.0 += p.idle;
            e.1 += p.active;
        }
        for (a, n) in &s.connects {
            *connects.entry(*a).or_insert(0) += n;
        }
    }
    out.push_str("# HELP ringway_upstream_connections Upstream connections per server, idle in the pools or active.\n# TYPE ringway_upstream_connections gauge\n");
    for (u, a, _) in g.health {
        let (idle, active) = pools.get(a).copied().unwrap_or((0, 0));
        let _ = writeln!(
            out,
            "ringway_upstream_connections{{upstream=\"{}\",server=\"{a}\",state=\"idle\"}} {idle}",
            esc(u)
        );
        let _ = writeln!(
            out,
            "ringway_upstream_connections{{upstream=\"{}\",server=\"{a}\",state=\"active\"}} {active}",
            esc(u)
        );
    }
    out.push_str("# HELP ringway_upstream_connects_total New upstream connections made (reuse = 1 - connects / upstream requests).\n# TYPE ringway_upstream_connects_total counter\n");
    let mut rows: Vec<_> = connects.into_iter().collect();
    rows.sort();
    for (a, n) in rows {
        let _ = writeln!(out, "ringway_upstream_connects_total{{server=\"{a}\"}} {n}");
    }

    let mut conns: HashMap<&str, i64> = HashMap::new();
    for s in snaps {
        for (l, n) in &s.connections {
            *conns.entry(l).or_insert(0) += n;
        }
    }
    out.push_str(
        "# HELP ringway_connections Open client connections per listener.\n# TYPE ringway_connections gauge\n",
    );
    let mut rows: Vec<_> = conns.into_iter().collect();
    rows.sort();
    for (l, n) in rows {
        let _ = writeln!(out, "ringway_connections{{listener=\"{}\"}} {n}", esc(l));
    }
    let parked: i64 = snaps.iter().map(|s| s.parked).sum();
    let _ = writeln!(out, "# HELP ringway_connections_parked Idle client connections parked in a small task (idle for 40 ms or more; counted in ringway_connections too).\n# TYPE ringway_connections_parked gauge\nringway_connections_parked {parked}");
    let retries: u64 = snaps.iter().map(|s| s.retries).sum();
    let _ = writeln!(out, "# HELP ringway_retries_total Requests sent again after a failed attempt.\n# TYPE ringway_retries_total counter\nringway_retries_total {retries}");
    let mut edge = EdgeCounts::default();
    snaps.iter().for_each(|s| edge.add(&s.edge));
    let _ = writeln!(out, "# HELP ringway_header_fields_dropped_total Request header fields removed before forwarding.\n# TYPE ringway_header_fields_dropped_total counter\nringway_header_fields_dropped_total{{reason=\"underscore\"}} {}", edge.underscored_dropped);
    let _ = writeln!(out, "# HELP ringway_upgrades_stripped_total Upgrade offers removed because [http] upgrades does not list them.\n# TYPE ringway_upgrades_stripped_total counter\nringway_upgrades_stripped_total {}", edge.upgrades_stripped);
    let _ = writeln!(out, "# HELP ringway_early_responses_total Responses relayed before the request body was sent.\n# TYPE ringway_early_responses_total counter\nringway_early_responses_total {}", edge.early_responses);
    let _ = writeln!(out, "# HELP ringway_request_lines_refused_total Connections refused at their first bytes (not an HTTP request line).\n# TYPE ringway_request_lines_refused_total counter\nringway_request_lines_refused_total {}", edge.request_lines_refused);
    tls::render(snaps.iter().map(|s| &s.tls), &mut out);
    l4::render(snaps.iter().map(|s| &s.l4), &mut out);
    let _ = writeln!(out, "# HELP ringway_config_reloads_total Config reloads by result.\n# TYPE ringway_config_reloads_total counter\nringway_config_reloads_total{{result=\"success\"}} {}\nringway_config_reloads_total{{result=\"failure\"}} {}", g.reloads_ok, g.reloads_failed);
    dns::render(g.dns, &mut out);
    out
}

/// Writes the bucket, sum and count lines of a histogram in seconds whose
/// values were recorded in units of `1 / per_second` (1e6: microseconds).
fn histogram(out: &mut String, name: &str, h: &Histogram<u64>, buckets: &[f64], per_second: f64) {
    for le in buckets {
        let n = if h.is_empty() { 0 } else { h.count_between(0, (le * per_second) as u64) };
        let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {n}");
    }
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", h.len());
    let sum: f64 =
        h.iter_recorded().map(|v| v.value_iterated_to() as f64 * v.count_at_value() as f64).sum::<f64>() / per_second;
    let _ = writeln!(out, "{name}_sum {sum}");
    let _ = writeln!(out, "{name}_count {}", h.len());
}

/// Escapes a label value (backslash, quote, newline).
fn esc(v: &str) -> std::borrow::Cow<'_, str> {
    if v.contains(['\\', '"', '\n']) {
        v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n").into()
    } else {
        v.into()
    }
}

mod dns;
mod l4;
mod tls;
pub use dns::DnsCounts;
pub use l4::{L4Counts, TcpDone};
pub use tls::TlsCounts;

#[cfg(test)]
mod tests;
