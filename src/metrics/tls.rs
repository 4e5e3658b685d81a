//! TLS handshake counters: completed handshakes by listener and version,
//! failures by listener and reason (`tls::failure_reason`, a fixed set),
//! and handshake latency.

use super::{esc, histogram};
use hdrhistogram::Histogram;
use std::collections::HashMap;
use std::fmt::Write;
use std::sync::Arc;

/// Longest handshake the histogram records, in microseconds (one minute).
const HANDSHAKE_MAX_US: u64 = 60_000_000;
/// Bucket bounds of `ringway_tls_handshake_duration_seconds`.
const BUCKETS: [f64; 8] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1.0];

/// One worker's TLS counters (cloned into a scrape's snapshot).
#[derive(Clone)]
pub struct TlsCounts {
    /// `(listener, version)` → completed handshakes.
    handshakes: HashMap<(Arc<str>, &'static str), u64>,
    /// `listener` → completed handshakes that resumed a session.
    resumed: HashMap<Arc<str>, u64>,
    /// `(listener, reason)` → failed handshakes.
    failures: HashMap<(Arc<str>, &'static str), u64>,
    /// Completed handshakes' durations, in microseconds.
    latency: Histogram<u64>,
}

impl Default for TlsCounts {
    fn default() -> Self {
        TlsCounts {
            handshakes: HashMap::new(),
            resumed: HashMap::new(),
            failures: HashMap::new(),
            // Static bounds that are valid for hdrhistogram: cannot fail.
            latency: Histogram::new_with_bounds(1, HANDSHAKE_MAX_US, 2).expect("valid histogram bounds"),
        }
    }
}

impl TlsCounts {
    /// A handshake on `listener` completed with `version` in `micros`;
    /// `resumed`: it resumed an earlier session (a ticket).
    pub fn handshake(&mut self, listener: &Arc<str>, version: &'static str, resumed: bool, micros: u64) {
        *self.handshakes.entry((Arc::clone(listener), version)).or_insert(0) += 1;
        if resumed {
            *self.resumed.entry(Arc::clone(listener)).or_insert(0) += 1;
        }
        let _ = self.latency.record(micros.clamp(1, HANDSHAKE_MAX_US));
    }

    /// A handshake on `listener` failed for `reason`.
    pub fn failure(&mut self, listener: &Arc<str>, reason: &'static str) {
        *self.failures.entry((Arc::clone(listener), reason)).or_insert(0) += 1;
    }
}

/// Appends the TLS families, merged over workers.
pub fn render<'a>(counts: impl Iterator<Item = &'a TlsCounts>, out: &mut String) {
    let mut handshakes: HashMap<(&str, &str), u64> = HashMap::new();
    let mut failures: HashMap<(&str, &str), u64> = HashMap::new();
    let mut resumed: HashMap<&str, u64> = HashMap::new();
    let mut latency: Option<Histogram<u64>> = None;
    for c in counts {
        for ((l, v), n) in &c.handshakes {
            *handshakes.entry((l, v)).or_insert(0) += n;
        }
        for (l, n) in &c.resumed {
            *resumed.entry(l).or_insert(0) += n;
        }
        for ((l, r), n) in &c.failures {
            *failures.entry((l, r)).or_insert(0) += n;
        }
        match &mut latency {
            None => latency = Some(c.latency.clone()),
            Some(m) => {
                let _ = m.add(&c.latency);
            }
        }
    }
    out.push_str("# HELP ringway_tls_handshakes_total Completed TLS handshakes on listeners, by version.\n# TYPE ringway_tls_handshakes_total counter\n");
    let mut rows: Vec<_> = handshakes.into_iter().collect();
    rows.sort();
    for ((l, v), n) in rows {
        let _ = writeln!(out, "ringway_tls_handshakes_total{{listener=\"{}\",version=\"{v}\"}} {n}", esc(l));
    }
    out.push_str("# HELP ringway_tls_resumed_handshakes_total Completed TLS handshakes on listeners that resumed a session.\n# TYPE ringway_tls_resumed_handshakes_total counter\n");
    let mut rows: Vec<_> = resumed.into_iter().collect();
    rows.sort();
    for (l, n) in rows {
        let _ = writeln!(out, "ringway_tls_resumed_handshakes_total{{listener=\"{}\"}} {n}", esc(l));
    }
    out.push_str("# HELP ringway_tls_handshake_failures_total Failed TLS handshakes on listeners, by reason.\n# TYPE ringway_tls_handshake_failures_total counter\n");
    let mut rows: Vec<_> = failures.into_iter().collect();
    rows.sort();
    for ((l, r), n) in rows {
        let _ = writeln!(out, "ringway_tls_handshake_failures_total{{listener=\"{}\",reason=\"{r}\"}} {n}", esc(l));
    }
    out.push_str("# HELP ringway_tls_handshake_duration_seconds Time from accept to a completed TLS handshake.\n# TYPE ringway_tls_handshake_duration_seconds histogram\n");
    if let Some(h) = latency {
        histogram(out, "ringway_tls_handshake_duration_seconds", &h, &BUCKETS, 1e6);
    }
}
