//! Building `[runtime]` (how the workers run: threads, io driver, ring
//! flags, buffers, log level, graceful stop) and `[access_log]`, with their
//! defaults. Most of `[runtime]` waits for a restart (`runtime::reload`).

use super::raw::{RawAccessLog, RawRuntime};
use super::{Builder, ConfigError};
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

/// io_uring submission queue entries per worker ring.
pub const DEFAULT_RING_ENTRIES: u32 = 1024;
/// Bytes of the per-connection read buffer (also the largest single read).
pub const DEFAULT_READ_BUFFER_BYTES: usize = 16 * 1024;
/// Longest graceful stop: in-flight requests get this long to finish.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the access log goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogTarget {
    /// `path = "stdout"`: the process's standard output.
    Stdout,
    /// Appended to this file, reopened on SIGUSR1 (log rotation).
    File(PathBuf),
}

/// The access log's line format (`[access_log] format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// The Apache/nginx "combined" line, plus duration, upstream and route.
    Combined,
    /// One JSON object per line.
    Json,
}

/// `[access_log]`: one line per request; off when the table is absent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLogConfig {
    /// Where lines go.
    pub target: LogTarget,
    /// How each line is written.
    pub format: LogFormat,
}

/// Which io driver each worker runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    /// io_uring when the kernel allows it, else epoll.
    Auto,
    /// io_uring, or the proxy does not start.
    IoUring,
    /// epoll (monoio's legacy driver), even where io_uring works.
    Epoll,
}

/// io_uring setup knobs; ignored by the epoll driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingConfig {
    /// Submission queue entries (a power of two).
    pub entries: u32,
    /// `IORING_SETUP_COOP_TASKRUN`: no inter-processor interrupt per completion.
    pub coop_taskrun: bool,
    /// `IORING_SETUP_SINGLE_ISSUER | DEFER_TASKRUN`: completions are
    /// processed when the worker waits, in batches.
    pub defer_taskrun: bool,
    /// `IORING_SETUP_SQPOLL` with this idle time; off when `None`.
    pub sqpoll_idle: Option<Duration>,
}

/// `[runtime]`: how the process runs its workers.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Worker threads (default: one per available core).
    pub threads: NonZeroUsize,
    /// The io driver each worker runs.
    pub driver: Driver,
    /// io_uring setup.
    pub ring: RingConfig,
    /// Pin worker n to core n (mod the core count).
    pub pin_cpus: bool,
    /// Bytes of each connection side's read buffer.
    pub read_buffer: usize,
    /// The operational log's level (`RUST_LOG` overrides); `info` when `None`.
    pub log_level: Option<String>,
    /// How long in-flight requests get at a graceful stop.
    pub shutdown_timeout: Duration,
}

impl Builder<'_> {
    pub(super) fn access_log(&self, a: &RawAccessLog) -> Result<AccessLogConfig, ConfigError> {
        let target = match a.path.get_ref().as_str() {
            "stdout" => LogTarget::Stdout,
            "" => return Err(self.err(&a.path, "access_log.path", "empty path")),
            p => LogTarget::File(PathBuf::from(p)),
        };
        let format = match a.format.as_ref() {
            None => LogFormat::Combined,
            Some(f) => match f.get_ref().as_str() {
                "combined" => LogFormat::Combined,
                "json" => LogFormat::Json,
                _ => return Err(self.err(f, "access_log.format", "expected \"combined\" or \"json\"")),
            },
        };
        Ok(AccessLogConfig { target, format })
    }

    pub(super) fn runtime(&self, r: &RawRuntime) -> Result<RuntimeConfig, ConfigError> {
        let threads = match &r.threads {
            Some(t) => {
                NonZeroUsize::new(*t.get_ref()).ok_or_else(|| self.err(t, "runtime.threads", "must be at least 1"))?
            }
            None => std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN),
        };
        let driver = match &r.driver {
            None => Driver::Auto,
            Some(d) => match d.get_ref().as_str() {
                "auto" => Driver::Auto,
                "io_uring" => Driver::IoUring,
                "epoll" => Driver::Epoll,
                _ => return Err(self.err(d, "runtime.driver", "expected \"auto\", \"io_uring\" or \"epoll\"")),
            },
        };
        let entries = match &r.ring_entries {
            Some(e) if !e.get_ref().is_power_of_two() || *e.get_ref() < 8 || *e.get_ref() > 32768 => {
                return Err(self.err(e, "runtime.ring_entries", "must be a power of two from 8 to 32768"))
            }
            Some(e) => *e.get_ref(),
            None => DEFAULT_RING_ENTRIES,
        };
        let sqpoll_idle = r.sqpoll_idle.as_ref().map(|s| self.duration(s, "runtime.sqpoll_idle")).transpose()?;
        let read_buffer = match &r.read_buffer {
            Some(b) if !(1024..=1 << 20).contains(b.get_ref()) => {
                return Err(self.err(b, "runtime.read_buffer", "must be from 1024 to 1048576 bytes"))
            }
            Some(b) => *b.get_ref(),
            None => DEFAULT_READ_BUFFER_BYTES,
        };
        let log_level = match &r.log_level {
            Some(l) if l.get_ref().parse::<log::LevelFilter>().is_err() => {
                return Err(self.err(l, "runtime.log_level", "expected off, error, warn, info, debug or trace"))
            }
            other => other.as_ref().map(|l| l.get_ref().clone()),
        };
        Ok(RuntimeConfig {
            threads,
            driver,
            ring: RingConfig {
                entries,
                coop_taskrun: r.coop_taskrun.unwrap_or(true),
                defer_taskrun: r.defer_taskrun.unwrap_or(true),
                sqpoll_idle,
            },
            pin_cpus: r.pin_cpus.unwrap_or(true),
            read_buffer,
            log_level,
            shutdown_timeout: match &r.shutdown_timeout {
                Some(s) => self.duration(s, "runtime.shutdown_timeout")?,
                None => DEFAULT_SHUTDOWN_TIMEOUT,
            },
        })
    }
}
