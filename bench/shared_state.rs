//! The shared per-upstream state under N threads (issue 16, many cores):
//! nanoseconds per operation for what every proxied request touches on
//! state that all workers share, with 1, 2, 4 and 8 threads on one upstream
//! of four servers (round robin).
//!
//! - `generation`: `Control::generation`, the config generation load
//!   (Acquire) a worker makes per request;
//! - `plan`: `Upstream::plan`, which takes the round-robin ticket (a
//!   `fetch_add` on the upstream's counter) and looks at each server's
//!   availability;
//! - `acquire_release`: `Server::try_acquire` and `ServerState::release`
//!   (the server's in-flight count up and down), on the servers in turn;
//! - `record_success`: `ServerState::record_success`;
//! - `request`: all of the above in the order a request makes them;
//! - `request_private`: the same on an upstream of each thread's own (four
//!   other addresses), the cost with nothing shared, for comparison.
//!
//! Each thread is pinned to CPU (thread index mod CPU count); with more
//! threads than CPUs, threads share a CPU in turns (oversubscribed), and
//! only the moments when two threads on different CPUs run at once
//! contend. Times are each thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`)
//! per operation, the median over the threads, then the median over the
//! repetitions.
//!
//! `cargo bench --bench shared_state` (about 30 s on 2 cores);
//! `cargo bench --bench shared_state -- --iters 500000 --threads 1,2 --reps 3`.
//! The binary run directly needs `--bench` for the full run; without it
//! (as under `cargo test`) it makes one short pass.

// A bench has no API to document.
#![allow(missing_docs)]

use ringway::config::Config;
use ringway::runtime::Control;
use ringway::upstream::Upstream;
use std::hint::black_box;
use std::path::Path;
use std::sync::{Arc, Barrier};

/// A config with one round-robin upstream `four` of four servers on
/// ports `first..first + 4`. Server state is per address and per process,
/// so each `first` gives an upstream that shares nothing with the others.
fn config(first: u16) -> Config {
    let servers: Vec<String> = (first..first + 4).map(|p| format!("\"127.0.0.1:{p}\"")).collect();
    let text = format!(
        "[upstreams.four]\nservers = [{}]\n\n[[listeners]]\nname = \"public\"\nbind = \"127.0.0.1:0\"\n\
         routes = [ {{ prefix = \"/\", upstream = \"four\" }} ]\n",
        servers.join(", ")
    );
    Config::parse(Path::new("shared-state-bench.toml"), &text).expect("bench config is valid")
}

fn four(config: &Config) -> Arc<Upstream> {
    Arc::clone(config.upstreams.iter().find(|u| &*u.name == "four").expect("upstream four"))
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Op {
    Generation,
    Plan,
    AcquireRelease,
    RecordSuccess,
    Request,
    RequestPrivate,
}

const OPS: [(Op, &str); 6] = [
    (Op::Generation, "generation"),
    (Op::Plan, "plan"),
    (Op::AcquireRelease, "acquire_release"),
    (Op::RecordSuccess, "record_success"),
    (Op::Request, "request"),
    (Op::RequestPrivate, "request_private"),
];

/// This thread's CPU time in nanoseconds.
#[allow(unsafe_code)]
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec for the whole call, and
    // CLOCK_THREAD_CPUTIME_ID is supported by every Linux ringway runs on.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

/// One request's shared-state operations, as `proxy::retry` makes them
/// for a request that succeeds on its first server.
fn request(control: &Control, up: &Upstream, rng: &mut u64, plan: &mut Vec<usize>) -> usize {
    black_box(control.generation());
    up.plan(0, rng, plan);
    let server = &up.servers[plan[0]];
    if server.try_acquire(false) {
        server.state.release();
        server.state.record_success();
    }
    plan[0]
}

/// Runs `iters` operations `op` on `threads` threads at once; CPU ns per
/// operation of each thread.
fn run(
    op: Op,
    threads: usize,
    iters: u64,
    control: &Arc<Control>,
    shared: &Arc<Upstream>,
    private: &[Arc<Upstream>],
) -> Vec<f64> {
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let start = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let core = (!cores.is_empty()).then(|| cores[t % cores.len()]);
            let (control, start) = (Arc::clone(control), Arc::clone(&start));
            let up = if op == Op::RequestPrivate { Arc::clone(&private[t]) } else { Arc::clone(shared) };
            std::thread::spawn(move || {
                if let Some(core) = core {
                    core_affinity::set_for_current(core);
                }
                let mut rng = 0x9E37_79B9_7F4A_7C15u64 ^ t as u64;
                let mut plan = Vec::with_capacity(16);
                let n = up.servers.len();
                // Each thread starts on another server, as requests spread
                // by the rotation would.
                let mut k = t;
                start.wait();
                let t0 = thread_cpu_ns();
                for _ in 0..iters {
                    match op {
                        Op::Generation => {
                            black_box(control.generation());
                        }
                        Op::Plan => {
                            up.plan(0, &mut rng, &mut plan);
                            black_box(plan[0]);
                        }
                        Op::AcquireRelease => {
                            let s = &up.servers[k % n];
                            if s.try_acquire(false) {
                                s.state.release();
                            }
                        }
                        Op::RecordSuccess => up.servers[k % n].state.record_success(),
                        Op::Request | Op::RequestPrivate => {
                            black_box(request(&control, &up, &mut rng, &mut plan));
                        }
                    }
                    k = k.wrapping_add(1);
                }
                (thread_cpu_ns() - t0) as f64 / iters as f64
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().expect("bench thread")).collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

struct Args {
    iters: u64,
    threads: Vec<usize>,
    reps: usize,
}

fn args() -> Args {
    // As criterion does: `cargo bench` passes --bench; without it (`cargo
    // test --benches`, `--all-targets`) one short pass checks that it runs.
    let bench = std::env::args().any(|a| a == "--bench");
    let mut a = if bench {
        Args { iters: 2_000_000, threads: vec![1, 2, 4, 8], reps: 5 }
    } else {
        Args { iters: 1000, threads: vec![1, 2], reps: 1 }
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--iters" => a.iters = it.next().and_then(|v| v.parse().ok()).expect("--iters N"),
            "--reps" => a.reps = it.next().and_then(|v| v.parse().ok()).expect("--reps N"),
            "--threads" => {
                a.threads = it
                    .next()
                    .map(|v| v.split(',').map(|t| t.parse().expect("--threads 1,2,4")).collect())
                    .expect("--threads 1,2,4")
            }
            // --bench, and whatever else cargo passes
            _ => {}
        }
    }
    a
}

fn main() {
    let a = args();
    let control = Arc::new(Control::new(config(40_000), None));
    let shared = four(&control.config());
    let most = a.threads.iter().copied().max().unwrap_or(1);
    let private_configs: Vec<Config> = (0..most).map(|t| config(41_000 + 10 * t as u16)).collect();
    let private: Vec<Arc<Upstream>> = private_configs.iter().map(four).collect();
    let cpus = core_affinity::get_core_ids().map_or(0, |c| c.len());
    println!(
        "shared per-upstream state: one round-robin upstream of 4 servers; {} CPUs here{}",
        cpus,
        if a.threads.iter().any(|&t| t > cpus) { " (more threads than CPUs: oversubscribed)" } else { "" }
    );
    println!("CPU ns per operation, median of {} repetitions of {} operations per thread\n", a.reps, a.iters);
    let header: Vec<String> =
        a.threads.iter().map(|t| format!("{t} thread{}", if *t == 1 { "" } else { "s" })).collect();
    println!("| operation | {} |", header.join(" | "));
    println!("|---|{}", "---:|".repeat(a.threads.len()));
    for (op, name) in OPS {
        let cells: Vec<String> = a
            .threads
            .iter()
            .map(|&t| {
                let per_rep: Vec<f64> =
                    (0..a.reps).map(|_| median(run(op, t, a.iters, &control, &shared, &private))).collect();
                format!("{:.1}", median(per_rep))
            })
            .collect();
        println!("| `{name}` | {} |", cells.join(" | "));
    }
}
