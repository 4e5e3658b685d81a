//! Layer-4 counters: TCP-mode connections (by listener, upstream and how
//! they ended), their bytes each way and duration, and connections refused
//! at their PROXY protocol header.

use super::{esc, histogram};
use hdrhistogram::Histogram;
use std::collections::HashMap;
use std::fmt::Write;
use std::sync::Arc;

/// Longest connection the histogram records, in milliseconds (one day).
const DURATION_MAX_MS: u64 = 86_400_000;
/// Bucket bounds of `ringway_tcp_connection_duration_seconds`.
const BUCKETS: [f64; 8] = [0.001, 0.01, 0.1, 1.0, 10.0, 60.0, 600.0, 3600.0];

/// One worker's layer-4 counters (cloned into a scrape's snapshot).
#[derive(Clone)]
pub struct L4Counts {
    /// `(listener, upstream, end)` → finished TCP-mode connections.
    connections: HashMap<(Arc<str>, Arc<str>, &'static str), u64>,
    /// `listener` → (bytes from clients, bytes to clients).
    bytes: HashMap<Arc<str>, (u64, u64)>,
    /// TCP-mode connection durations, in milliseconds.
    duration: Histogram<u64>,
    /// `(listener, reason)` → connections refused at their PROXY header.
    proxy_refused: HashMap<(Arc<str>, &'static str), u64>,
}

impl Default for L4Counts {
    fn default() -> Self {
        L4Counts {
            connections: HashMap::new(),
            bytes: HashMap::new(),
            // Static bounds that are valid for hdrhistogram: cannot fail.
            duration: Histogram::new_with_bounds(1, DURATION_MAX_MS, 2).expect("valid histogram bounds"),
            proxy_refused: HashMap::new(),
        }
    }
}

/// What one finished TCP-mode connection moved.
pub struct TcpDone<'a> {
    /// The listener that accepted it.
    pub listener: &'a Arc<str>,
    /// The upstream it was balanced over.
    pub upstream: &'a Arc<str>,
    /// How it ended (`tcp_proxy::End::label`).
    pub end: &'static str,
    /// Bytes the client sent.
    pub from_client: u64,
    /// Bytes sent to the client.
    pub to_client: u64,
    /// From accept to close, in milliseconds.
    pub millis: u64,
}

impl L4Counts {
    /// Counts a finished TCP-mode connection.
    pub fn tcp(&mut self, d: &TcpDone<'_>) {
        let key = (Arc::clone(d.listener), Arc::clone(d.upstream), d.end);
        *self.connections.entry(key).or_insert(0) += 1;
        let bytes = self.bytes.entry(Arc::clone(d.listener)).or_insert((0, 0));
        bytes.0 += d.from_client;
        bytes.1 += d.to_client;
        let _ = self.duration.record(d.millis.clamp(1, DURATION_MAX_MS));
    }

    /// Counts a connection refused at its PROXY header.
    pub fn proxy_refused(&mut self, listener: &Arc<str>, reason: &'static str) {
        *self.proxy_refused.entry((Arc::clone(listener), reason)).or_insert(0) += 1;
    }
}

/// Appends the layer-4 families, merged over workers.
pub fn render<'a>(counts: impl Iterator<Item = &'a L4Counts>, out: &mut String) {
    let mut connections: HashMap<(&str, &str, &str), u64> = HashMap::new();
    let mut bytes: HashMap<&str, (u64, u64)> = HashMap::new();
    let mut refused: HashMap<(&str, &str), u64> = HashMap::new();
    let mut duration: Option<Histogram<u64>> = None;
    for c in counts {
        for ((l, u, e), n) in &c.connections {
            *connections.entry((l, u, e)).or_insert(0) += n;
        }
        for (l, (from, to)) in &c.bytes {
            let b = bytes.entry(l).or_insert((0, 0));
            b.0 += from;
            b.1 += to;
        }
        for ((l, r), n) in &c.proxy_refused {
            *refused.entry((l, r)).or_insert(0) += n;
        }
        match &mut duration {
            None => duration = Some(c.duration.clone()),
            Some(m) => {
                let _ = m.add(&c.duration);
            }
        }
    }
    out.push_str("# HELP ringway_tcp_connections_total Finished TCP-mode connections, by how they ended.\n# TYPE ringway_tcp_connections_total counter\n");
    let mut rows: Vec<_> = connections.into_iter().collect();
    rows.sort();
    for ((l, u, e), n) in rows {
        let _ = writeln!(
            out,
            "ringway_tcp_connections_total{{listener=\"{}\",upstream=\"{}\",end=\"{e}\"}} {n}",
            esc(l),
            esc(u)
        );
    }
    out.push_str("# HELP ringway_tcp_bytes_total Bytes relayed by TCP-mode listeners, by direction.\n# TYPE ringway_tcp_bytes_total counter\n");
    let mut rows: Vec<_> = bytes.into_iter().collect();
    rows.sort();
    for (l, (from, to)) in rows {
        let _ = writeln!(out, "ringway_tcp_bytes_total{{listener=\"{}\",direction=\"from_client\"}} {from}", esc(l));
        let _ = writeln!(out, "ringway_tcp_bytes_total{{listener=\"{}\",direction=\"to_client\"}} {to}", esc(l));
    }
    out.push_str("# HELP ringway_tcp_connection_duration_seconds TCP-mode connections from accept to close.\n# TYPE ringway_tcp_connection_duration_seconds histogram\n");
    if let Some(h) = duration {
        histogram(out, "ringway_tcp_connection_duration_seconds", &h, &BUCKETS, 1e3);
    }
    out.push_str("# HELP ringway_proxy_protocol_refused_total Connections closed at their PROXY protocol header, by reason.\n# TYPE ringway_proxy_protocol_refused_total counter\n");
    let mut rows: Vec<_> = refused.into_iter().collect();
    rows.sort();
    for ((l, r), n) in rows {
        let _ = writeln!(out, "ringway_proxy_protocol_refused_total{{listener=\"{}\",reason=\"{r}\"}} {n}", esc(l));
    }
}
