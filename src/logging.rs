//! The operational log: `env_logger` on stderr. Its level is `[runtime]
//! log_level`, which a reload changes, unless `RUST_LOG` is set: then
//! `RUST_LOG` decides, at start and after every reload.

use log::LevelFilter;
use std::sync::atomic::{AtomicBool, Ordering};

/// Whether the level comes from the config (no `RUST_LOG`), so a reload
/// may change it.
static LEVEL_FROM_CONFIG: AtomicBool = AtomicBool::new(false);

/// Installs the logger (once per process; later calls do nothing).
pub fn init(level: Option<&str>) {
    let mut builder = env_logger::Builder::new();
    let from_config = match std::env::var("RUST_LOG") {
        Ok(spec) => {
            builder.filter_level(parse(level));
            builder.parse_filters(&spec);
            false
        }
        // env_logger lets everything through; `log::set_max_level` decides,
        // and that a reload can change.
        Err(_) => {
            builder.filter_level(LevelFilter::Trace);
            true
        }
    };
    if builder.try_init().is_ok() {
        LEVEL_FROM_CONFIG.store(from_config, Ordering::Relaxed);
        set_level(level);
    }
}

/// Applies `[runtime] log_level` (at start and on reload); does nothing
/// when `RUST_LOG` rules or the logger is not ours.
pub fn set_level(level: Option<&str>) {
    if LEVEL_FROM_CONFIG.load(Ordering::Relaxed) {
        log::set_max_level(parse(level));
    }
}

/// The config's level (already validated), `info` when absent.
fn parse(level: Option<&str>) -> LevelFilter {
    level.and_then(|l| l.parse().ok()).unwrap_or(LevelFilter::Info)
}
