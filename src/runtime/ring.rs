//! Building a worker's monoio runtime: io_uring with the cheapest setup
//! flags the kernel accepts, falling back step by step, or epoll.

use crate::config::{Driver, RingConfig};
use monoio::time::TimeDriver;
use monoio::{IoUringDriver, LegacyDriver, Runtime, RuntimeBuilder};
use std::future::Future;
use std::io;

/// A built runtime of either driver.
pub enum WorkerRuntime {
    /// io_uring, with the setup flags it got.
    Uring(Runtime<TimeDriver<IoUringDriver>>, &'static str),
    /// epoll.
    Epoll(Runtime<TimeDriver<LegacyDriver>>),
}

impl WorkerRuntime {
    /// Which driver and ring flags this runtime uses, for the log.
    pub fn describe(&self) -> String {
        match self {
            WorkerRuntime::Uring(_, flags) => format!("io_uring ({flags})"),
            WorkerRuntime::Epoll(_) => "epoll".to_owned(),
        }
    }

    /// Runs `fut` to completion on this thread.
    pub fn block_on<F: Future>(&mut self, fut: F) -> F::Output {
        match self {
            WorkerRuntime::Uring(rt, _) => rt.block_on(fut),
            WorkerRuntime::Epoll(rt) => rt.block_on(fut),
        }
    }
}

/// The ring setups to try, best first.
fn uring_attempts(ring: &RingConfig) -> Vec<(io_uring::Builder, &'static str)> {
    let mut attempts = Vec::new();
    if let Some(idle) = ring.sqpoll_idle {
        let mut b = io_uring::IoUring::builder();
        b.setup_sqpoll(u32::try_from(idle.as_millis()).unwrap_or(u32::MAX));
        attempts.push((b, "sqpoll"));
    }
    if ring.coop_taskrun && ring.defer_taskrun {
        let mut b = io_uring::IoUring::builder();
        b.setup_coop_taskrun().setup_single_issuer().setup_defer_taskrun();
        attempts.push((b, "coop_taskrun+single_issuer+defer_taskrun"));
    }
    if ring.coop_taskrun {
        let mut b = io_uring::IoUring::builder();
        b.setup_coop_taskrun();
        attempts.push((b, "coop_taskrun"));
    }
    if ring.defer_taskrun && !ring.coop_taskrun {
        let mut b = io_uring::IoUring::builder();
        b.setup_single_issuer().setup_defer_taskrun();
        attempts.push((b, "single_issuer+defer_taskrun"));
    }
    attempts.push((io_uring::IoUring::builder(), "default flags"));
    attempts
}

fn build_uring(ring: &RingConfig) -> io::Result<WorkerRuntime> {
    let mut last = io::Error::new(io::ErrorKind::Unsupported, "io_uring unavailable");
    for (builder, flags) in uring_attempts(ring) {
        let built = RuntimeBuilder::<IoUringDriver>::new()
            .with_entries(ring.entries)
            .uring_builder(builder)
            .enable_timer()
            .build();
        match built {
            Ok(rt) => return Ok(WorkerRuntime::Uring(rt, flags)),
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn build_epoll() -> io::Result<WorkerRuntime> {
    Ok(WorkerRuntime::Epoll(RuntimeBuilder::<LegacyDriver>::new().enable_timer().build()?))
}

/// Builds the runtime for `driver`; `auto` falls back to epoll.
pub fn build(driver: Driver, ring: &RingConfig) -> io::Result<WorkerRuntime> {
    match driver {
        Driver::Epoll => build_epoll(),
        Driver::IoUring => build_uring(ring),
        Driver::Auto if !monoio::utils::detect_uring() => build_epoll(),
        Driver::Auto => build_uring(ring).or_else(|_| build_epoll()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::time::Duration;

    /// The vendored monoio closes a dropped socket with a detached
    /// `IORING_OP_CLOSE` (docs/architecture.md, "The monoio patch"). More
    /// closes in one turn than the ring has entries must still close every
    /// socket: the peer of each sees EOF, none is left open or reset.
    #[test]
    fn more_closes_in_one_turn_than_ring_entries_close_every_socket() {
        let ring = RingConfig { entries: 8, coop_taskrun: true, defer_taskrun: true, sqpoll_idle: None };
        let Ok(mut rt) = build(Driver::IoUring, &ring) else {
            eprintln!("no io_uring here: skipped");
            return;
        };
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = std_listener.local_addr().expect("addr");
        const N: usize = 100;
        let clients: Vec<std::net::TcpStream> = (0..N)
            .map(|_| {
                let c = std::net::TcpStream::connect(addr).expect("connect");
                c.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
                c
            })
            .collect();
        rt.block_on(async move {
            let listener = monoio::net::TcpListener::from_std(std_listener).expect("listener");
            let mut accepted = Vec::with_capacity(N);
            for _ in 0..N {
                accepted.push(listener.accept().await.expect("accept").0);
            }
            // All dropped in one turn: 100 close SQEs into an 8-entry ring.
            drop(accepted);
            monoio::time::sleep(Duration::from_millis(10)).await;
        });
        for (i, mut c) in clients.into_iter().enumerate() {
            let mut byte = [0u8; 1];
            assert_eq!(c.read(&mut byte).expect("a clean close, not a reset or a timeout"), 0, "client {i}");
        }
    }
}
