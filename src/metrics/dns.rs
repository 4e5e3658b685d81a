//! DNS discovery counters: resolution rounds by upstream and result. They
//! live in the control plane (`runtime::Control::dns`), not in the
//! workers: only the resolver thread writes them and only a scrape reads
//! them, so the mutex is never on the request path.

use super::esc;
use std::fmt::Write;
use std::sync::{Arc, Mutex};

/// Rounds of resolution per upstream: `(upstream, succeeded, failed)`.
#[derive(Debug, Default)]
pub struct DnsCounts {
    rounds: Mutex<Vec<(Arc<str>, u64, u64)>>,
}

impl DnsCounts {
    /// Counts one round of `upstream`: every name resolved (`ok`), or one
    /// at least did not (its last good servers were kept).
    pub fn count(&self, upstream: &Arc<str>, ok: bool) {
        let mut rounds = self.rounds.lock().unwrap_or_else(|e| e.into_inner());
        let at = match rounds.iter().position(|(u, ..)| u == upstream) {
            Some(i) => i,
            None => {
                rounds.push((Arc::clone(upstream), 0, 0));
                rounds.len() - 1
            }
        };
        let row = &mut rounds[at];
        if ok {
            row.1 += 1;
        } else {
            row.2 += 1;
        }
    }

    /// A copy for a scrape, sorted by upstream.
    pub fn snapshot(&self) -> Vec<(Arc<str>, u64, u64)> {
        let mut rows = self.rounds.lock().unwrap_or_else(|e| e.into_inner()).clone();
        rows.sort();
        rows
    }
}

/// Appends `ringway_dns_resolutions_total` for `rows` (see `DnsCounts`).
pub fn render(rows: &[(Arc<str>, u64, u64)], out: &mut String) {
    out.push_str("# HELP ringway_dns_resolutions_total Rounds of DNS discovery per upstream: success (every name resolved) or failure (one did not; its last servers were kept).\n# TYPE ringway_dns_resolutions_total counter\n");
    for (u, ok, failed) in rows {
        let u = esc(u);
        let _ = writeln!(out, "ringway_dns_resolutions_total{{upstream=\"{u}\",result=\"success\"}} {ok}");
        let _ = writeln!(out, "ringway_dns_resolutions_total{{upstream=\"{u}\",result=\"failure\"}} {failed}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_are_counted_per_upstream_and_result() {
        let counts = DnsCounts::default();
        let (a, b): (Arc<str>, Arc<str>) = ("b-svc".into(), "a-svc".into());
        counts.count(&a, true);
        counts.count(&a, false);
        counts.count(&a, true);
        counts.count(&b, false);
        let mut out = String::new();
        render(&counts.snapshot(), &mut out);
        assert!(out.contains("ringway_dns_resolutions_total{upstream=\"b-svc\",result=\"success\"} 2\n"), "{out}");
        assert!(out.contains("ringway_dns_resolutions_total{upstream=\"b-svc\",result=\"failure\"} 1\n"), "{out}");
        assert!(out.contains("ringway_dns_resolutions_total{upstream=\"a-svc\",result=\"success\"} 0\n"), "{out}");
        assert!(out.find("a-svc") < out.find("b-svc"), "sorted by upstream");
    }
}
