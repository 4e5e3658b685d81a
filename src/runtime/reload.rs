//! What a reload does beyond swapping the snapshot: it applies the settings
//! that live outside it (the admin listener, the access log's file, the log
//! level) and names those that only a restart applies.

use super::control::Control;
use crate::config::{Config, Driver, RuntimeConfig};
use std::net::SocketAddr;
use std::sync::Arc;

/// The outcome of a reload that was accepted.
#[derive(Debug, Default)]
pub struct Reloaded {
    /// Keys whose value in the file differs from what the process runs with
    /// and that apply only at the next start, e.g. `runtime.threads`.
    pub restart_required: Vec<&'static str>,
    /// Settings that could not be applied (their old value stays), in words.
    pub warnings: Vec<String>,
    /// Where the admin API listens now (`None`: off).
    pub admin: Option<SocketAddr>,
}

/// One `[runtime]` setting as text.
type RuntimeValue = fn(&RuntimeConfig) -> String;

/// The `[runtime]` keys whose value in `new` differs from `running` (the
/// values the process started with), each with both values for the log.
/// Threads, rings and pinning are set up once, when the workers start;
/// `read_buffer`, `log_level` and `shutdown_timeout` are read afresh and are
/// not listed.
pub(super) fn restart_required(running: &RuntimeConfig, new: &RuntimeConfig) -> Vec<(&'static str, String, String)> {
    fn driver(d: Driver) -> String {
        match d {
            Driver::Auto => "auto",
            Driver::IoUring => "io_uring",
            Driver::Epoll => "epoll",
        }
        .to_owned()
    }
    let values: [(&'static str, RuntimeValue); 7] = [
        ("runtime.threads", |c| c.threads.to_string()),
        ("runtime.driver", |c| driver(c.driver)),
        ("runtime.ring_entries", |c| c.ring.entries.to_string()),
        ("runtime.coop_taskrun", |c| c.ring.coop_taskrun.to_string()),
        ("runtime.defer_taskrun", |c| c.ring.defer_taskrun.to_string()),
        ("runtime.sqpoll_idle", |c| c.ring.sqpoll_idle.map_or("off".to_owned(), |d| format!("{d:?}"))),
        ("runtime.pin_cpus", |c| c.pin_cpus.to_string()),
    ];
    values
        .into_iter()
        .filter_map(|(key, value)| {
            let (was, now) = (value(running), value(new));
            (was != now).then_some((key, was, now))
        })
        .collect()
}

impl Control {
    /// Applies what lives outside the snapshot; nothing here refuses the
    /// reload (a setting that cannot be applied keeps its old value and
    /// becomes a warning).
    pub(super) fn apply_outside_snapshot(self: &Arc<Self>, new: &Config) -> Reloaded {
        let mut done = Reloaded::default();
        for (key, was, now) in restart_required(self.started_runtime(), &new.runtime) {
            log::warn!("reload: {key} = {now} applies at the next start; running with {was}");
            done.restart_required.push(key);
        }
        crate::logging::set_level(new.runtime.log_level.as_deref());
        if let Err(e) = crate::access_log::retarget(new.access_log.as_ref()) {
            let warning = format!("access_log.path: {e}");
            log::warn!("reload: {warning}");
            done.warnings.push(warning);
        }
        done.admin = self.move_admin(new.admin, &mut done.warnings);
        done
    }

    /// Moves the admin listener to `wanted` (or stops or starts it). A bind
    /// that fails keeps the old listener.
    fn move_admin(self: &Arc<Self>, wanted: Option<SocketAddr>, warnings: &mut Vec<String>) -> Option<SocketAddr> {
        let mut admin = self.admin.lock().unwrap_or_else(|e| e.into_inner());
        if admin.as_ref().map(|a| a.bind) == wanted {
            return admin.as_ref().map(|a| a.addr);
        }
        let Some(bind) = wanted else {
            if let Some(old) = admin.take() {
                log::info!("reload: admin API on {} closed", old.addr);
                self.offered.remove_admin();
                old.stop();
            }
            return None;
        };
        // The address the old listener already has (its port 0 resolved):
        // keep that socket rather than open a second one beside it.
        if let Some(running) = admin.as_mut().filter(|a| a.addr == bind) {
            running.bind = bind;
            return Some(running.addr);
        }
        // Another process's port is refused, as at start.
        let opened = super::listener::check_free(bind).and_then(|()| super::bind_reuseport(bind)).and_then(|socket| {
            // What a successor is offered; the admin thread owns `socket`.
            let copy = socket.try_clone()?;
            crate::admin::start(Arc::clone(self), bind, vec![socket]).map(|a| (a, copy))
        });
        match opened {
            Ok((started, copy)) => {
                let addr = started.addr;
                log::info!("reload: admin API now on {addr}");
                self.offered.remove_admin();
                self.offered.add(None, addr, &[copy]);
                if let Some(old) = admin.replace(started) {
                    log::info!("reload: admin API on {} closed", old.addr);
                    old.stop();
                }
                Some(addr)
            }
            Err(e) => {
                let kept = admin
                    .as_ref()
                    .map_or("the admin API stays off".to_owned(), |a| format!("the admin API stays on {}", a.addr));
                let warning = format!("admin.bind: cannot listen on {bind} ({e}); {kept}");
                log::warn!("reload: {warning}");
                warnings.push(warning);
                admin.as_ref().map(|a| a.addr)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn runtime(lines: &str) -> RuntimeConfig {
        let text = format!("[runtime]\n{lines}\n[[listeners]]\nname = \"p\"\nbind = \"127.0.0.1:0\"\n");
        Config::parse(Path::new("t.toml"), &text).expect("valid").runtime
    }

    #[test]
    fn each_setting_made_at_start_is_named_and_the_others_are_not() {
        let running = runtime("threads = 2");
        let cases = [
            ("threads = 3", Some("runtime.threads")),
            ("threads = 2\ndriver = \"epoll\"", Some("runtime.driver")),
            ("threads = 2\nring_entries = 64", Some("runtime.ring_entries")),
            ("threads = 2\ncoop_taskrun = false", Some("runtime.coop_taskrun")),
            ("threads = 2\ndefer_taskrun = false", Some("runtime.defer_taskrun")),
            ("threads = 2\nsqpoll_idle = \"2ms\"", Some("runtime.sqpoll_idle")),
            ("threads = 2\npin_cpus = false", Some("runtime.pin_cpus")),
            ("threads = 2\nread_buffer = 65536", None),
            ("threads = 2\nlog_level = \"debug\"", None),
            ("threads = 2\nshutdown_timeout = \"1s\"", None),
        ];
        for (lines, key) in cases {
            let keys: Vec<_> = restart_required(&running, &runtime(lines)).into_iter().map(|(k, ..)| k).collect();
            assert_eq!(keys, key.into_iter().collect::<Vec<_>>(), "{lines}");
        }
        let changed = restart_required(&running, &runtime("threads = 4\nsqpoll_idle = \"2ms\""));
        assert_eq!(
            changed,
            [("runtime.threads", "2".into(), "4".into()), ("runtime.sqpoll_idle", "off".into(), "2ms".into())]
        );
    }
}
