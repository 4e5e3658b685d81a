//! The process's two clocks, both monotonic and in milliseconds. They have
//! different epochs, so a deadline must be compared only with readings of
//! the clock it was computed on; each deadline's doc names its clock.
//!
//! - `precise_ms`: `Instant` (`CLOCK_MONOTONIC`), milliseconds since the
//!   first reading in this process; tens of nanoseconds per read here.
//!   Used for passive health (the failure window, the time a server stays
//!   out), the idle wheel's seconds and the client's hot-window measurement.
//! - `coarse_ms`: `CLOCK_MONOTONIC_COARSE`, milliseconds since boot, for
//!   deadlines of seconds read on every request (request timeouts,
//!   pooled-connection expiry, the retry budget, the hot-wait window). The
//!   kernel updates it on its scheduler tick and the vDSO reads it without
//!   the TSC, so a read costs a few nanoseconds, against tens for
//!   `Instant::now()` on this VM. It lags the precise clock by up to about
//!   two kernel ticks (7.8 ms measured with 4 ms ticks, right after the
//!   thread slept). `coarse_slack_ms` (three ticks) covers that: the
//!   watchdog adds it to its deadlines so they never end early, the pool
//!   to its reading so a connection is never reused late.

use std::sync::OnceLock;
use std::time::Instant;

/// Milliseconds on the precise clock: since this process first read it.
pub fn precise_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    u64::try_from(START.get_or_init(Instant::now).elapsed().as_millis()).unwrap_or(u64::MAX)
}

// `unsafe`: libc's clock calls; std reads only CLOCK_MONOTONIC (`Instant`).
#[allow(unsafe_code)]
fn read(clock: libc::clockid_t, get: unsafe extern "C" fn(libc::clockid_t, *mut libc::timespec) -> libc::c_int) -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec for the whole call; the
    // clock id is a constant the kernel has supported since 2.6.32.
    let rc = unsafe { get(clock, &mut ts) };
    if rc != 0 {
        return 0;
    }
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
    secs.saturating_mul(1000).saturating_add(nanos.div_ceil(1_000_000))
}

/// Milliseconds on the coarse clock (`CLOCK_MONOTONIC_COARSE`, since boot).
pub fn coarse_ms() -> u64 {
    read(libc::CLOCK_MONOTONIC_COARSE, libc::clock_gettime)
}

/// Three of the coarse clock's ticks, plus a millisecond for rounding:
/// added to a deadline read on this clock, it keeps the deadline from
/// ending early when the reading was stale.
pub fn coarse_slack_ms() -> u64 {
    static SLACK: OnceLock<u64> = OnceLock::new();
    *SLACK.get_or_init(|| 3 * read(libc::CLOCK_MONOTONIC_COARSE, libc::clock_getres).max(1) + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn the_precise_clock_counts_milliseconds() {
        // Instants around the two readings bound the time between them.
        let (s0, a) = (Instant::now(), precise_ms());
        std::thread::sleep(Duration::from_millis(20));
        let (b, s1) = (precise_ms(), Instant::now());
        let longest = u64::try_from((s1 - s0).as_millis()).expect("ms");
        assert!(b - a + 1 >= 20 && b - a <= longest + 1, "precise {} ms against at most {longest} ms", b - a);
    }

    #[test]
    fn the_coarse_clock_follows_the_monotonic_one() {
        // Precise readings on both sides of each coarse one, so a thread
        // descheduled between two reads cannot fail the test.
        let (a0, c0, b0) = (Instant::now(), coarse_ms(), Instant::now());
        std::thread::sleep(Duration::from_millis(50));
        let (a1, c1, b1) = (Instant::now(), coarse_ms(), Instant::now());
        let ms = |d: Duration| u64::try_from(d.as_millis()).expect("ms");
        let (shortest, longest) = (ms(a1 - b0), ms(b1 - a0) + 1);
        let coarse = c1 - c0;
        let slack = coarse_slack_ms();
        assert!(c0 > 0 && (4..=31).contains(&slack), "clock {c0}, slack {slack}");
        assert!(
            coarse + slack >= shortest && coarse <= longest + slack,
            "coarse {coarse} ms against {shortest}-{longest} ms"
        );
    }
}
