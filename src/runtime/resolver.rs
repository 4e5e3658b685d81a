//! The resolver thread: it resolves the names of discovered upstreams
//! again on their schedule (host names every `resolve_every`, SRV records
//! when their TTL ends, within `resolve_min` and `resolve_max`) and swaps
//! in a new snapshot when an upstream's servers changed. After start it is
//! the only thread that waits on DNS; workers never do. Between rounds it
//! sleeps (parked) until the next upstream is due; a reload and a graceful
//! stop wake it.
//!
//! A swap touches only the upstreams whose servers changed; everything else
//! in the snapshot is shared with the one it replaces (`Config::with_upstreams`).
//! Workers pick it up like a reload's: requests in flight finish on the
//! servers they have, addresses that stay keep their pools and health
//! (`upstream::server_state` is per address), and the idle connections of
//! addresses that left are closed.

use super::control::Control;
use crate::config::Config;
use crate::dns::Lookups;
use crate::upstream::{Resolved, Upstream};
use std::sync::Arc;
use std::thread;
use std::time::Instant;

impl Control {
    /// Starts the resolver thread if the running config has a discovered
    /// upstream and the thread is not running yet; wakes it otherwise, so
    /// that it reads the config again (after a reload).
    pub fn start_resolver(self: &Arc<Self>) {
        let mut slot = self.resolver.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(running) = slot.as_ref() {
            running.unpark();
            return;
        }
        if !self.config().upstreams.iter().any(|u| u.is_discovered()) {
            return;
        }
        let control = Arc::clone(self);
        match thread::Builder::new().name("ringway-resolver".into()).spawn(move || run(&control)) {
            Ok(handle) => *slot = Some(handle.thread().clone()),
            Err(e) => log::error!("cannot start the resolver thread, names will not be resolved again: {e}"),
        }
    }

    /// Wakes the resolver thread, if there is one (a graceful stop).
    pub(super) fn wake_resolver(&self) {
        if let Some(t) = self.resolver.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            t.unpark();
        }
    }

    /// Swaps in `from` with the `changed` upstreams, unless a reload
    /// replaced `from` while the names were resolved (the reload resolved
    /// them too). Returns the new snapshot.
    fn apply_resolved(&self, from: &Arc<Config>, changed: Vec<(usize, Upstream)>) -> Option<Arc<Config>> {
        let _one_at_a_time = self.reloading.lock().unwrap_or_else(|e| e.into_inner());
        if !Arc::ptr_eq(&self.config(), from) {
            return None;
        }
        Some(self.swap(from.with_upstreams(changed)))
    }
}

/// Per upstream of the snapshot being followed (by index).
#[derive(Clone, Copy)]
struct Schedule {
    /// When to resolve its names again; `None`: never (not discovered).
    due: Option<Instant>,
    /// Whether its last round failed (failures are logged once, then at
    /// debug level until it resolves again).
    failing: bool,
}

fn run(control: &Control) {
    let mut seen: Option<Arc<Config>> = None;
    let mut schedule: Vec<Schedule> = Vec::new();
    loop {
        if control.is_shutting_down() {
            return;
        }
        let config = control.config();
        let now = Instant::now();
        if !seen.as_ref().is_some_and(|s| Arc::ptr_eq(s, &config)) {
            // The first look, or a reload, which has just resolved every name.
            schedule = config.upstreams.iter().map(|u| Schedule { due: first_due(u, now), failing: false }).collect();
            seen = Some(Arc::clone(&config));
        }
        match schedule.iter().filter_map(|s| s.due).min() {
            None => {
                thread::park();
                continue;
            }
            Some(at) if at > now => {
                thread::park_timeout(at - now);
                continue;
            }
            Some(_) => {}
        }
        let lookups = Lookups::new(&config.dns);
        let mut changed = Vec::new();
        for (i, up) in config.upstreams.iter().enumerate() {
            let (Some(at), Some(refresh)) = (schedule[i].due, up.policy.refresh) else { continue };
            if at > now {
                continue;
            }
            let resolved = up.resolve_again(&lookups);
            let ok = resolved.failures.is_empty();
            control.dns.count(&up.name, ok);
            report(up, &resolved, schedule[i].failing);
            schedule[i] = Schedule { due: Some(Instant::now() + refresh.next_in(ok, resolved.ttl)), failing: !ok };
            if let Some(new) = resolved.changed {
                changed.push((i, new));
            }
        }
        if !changed.is_empty() {
            // None: a reload came in between; the next turn starts over.
            if let Some(new) = control.apply_resolved(&config, changed) {
                seen = Some(new);
            }
        }
    }
}

/// When a discovered upstream of a snapshot just loaded is due: its names
/// resolved at load, so after one period (after the shorter wait for a
/// failure when one of them has never resolved).
fn first_due(up: &Upstream, now: Instant) -> Option<Instant> {
    let refresh = up.policy.refresh.filter(|_| up.is_discovered())?;
    let names = || up.sources.iter().filter(|s| s.is_name());
    let ok = names().all(|s| s.found.is_some());
    let ttl = names().filter_map(|s| s.ttl).min();
    Some(now + refresh.next_in(ok, ttl))
}

/// Logs a round: names that stopped resolving (once), names that resolve
/// again, and servers that joined or left.
fn report(up: &Upstream, r: &Resolved, was_failing: bool) {
    for (name, why) in &r.failures {
        if was_failing {
            log::debug!("upstream {}: still cannot resolve {name} ({why})", up.name);
        } else {
            log::warn!("upstream {}: cannot resolve {name} ({why}); keeping the servers it last resolved to", up.name);
        }
    }
    if was_failing && r.failures.is_empty() {
        log::info!("upstream {}: its names resolve again", up.name);
    }
    if let Some(new) = &r.changed {
        let list = |from: &Upstream, to: &Upstream| {
            let v: Vec<String> =
                from.servers.iter().filter(|s| to.server(s.addr).is_none()).map(|s| s.addr.to_string()).collect();
            if v.is_empty() {
                "none".to_owned()
            } else {
                v.join(", ")
            }
        };
        log::info!(
            "upstream {}: DNS changed its servers: added {}; removed {} (after their requests in flight); {} now",
            up.name,
            list(new, up),
            list(up, new),
            new.servers.len()
        );
    }
}
