//! The `ringway` command line: run the proxy, check a config, run the demo,
//! or run one demo backend.

#![deny(unsafe_code)]

use clap::{Parser, Subcommand};
use ringway::config::Config;
use ringway::runtime::handover::{self, Inherited};
use ringway::runtime::Control;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
use signal_hook::iterator::Signals;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

/// The seed configuration, embedded for `ringway demo`.
const SEED_CONFIG: &str = include_str!("../examples/seed.toml");
const DEFAULT_CONFIG: &str = "ringway.toml";

// Each subcommand declares its own `--config`, so its help says what the
// file is for there; `ringway --config FILE check` is refused rather than
// read two ways.
#[derive(Parser)]
#[command(
    name = "ringway",
    version,
    about = "A thread-per-core io_uring HTTP/1.1 load balancer",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    /// Config file to run the proxy with (default: ./ringway.toml).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Start next to the running instance of this config file and take its
    /// listening sockets over (binary upgrade); then stop the old one with
    /// SIGTERM. Also skips the "address in use" check.
    #[arg(long)]
    takeover: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a config file and exit: 0 if good, 1 with the file, line and key otherwise.
    Check {
        /// Config file to validate (default: ./ringway.toml).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Run the proxy with built-in demo backends: the seed config (backends on
    /// 127.0.0.1:2222/3333/4444/5555), or the config given with --config.
    Demo {
        /// Config file to run instead of the seed; a demo backend is started
        /// on each loopback server (127.0.0.1:PORT) it names.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Run one demo backend that answers like the seed's app.
    Backend {
        /// Port to listen on (127.0.0.1 unless --bind is given).
        #[arg(long)]
        port: u16,
        /// Address to bind instead of 127.0.0.1.
        #[arg(long, default_value = "127.0.0.1")]
        bind: std::net::IpAddr,
        /// Worker threads.
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// App ID in the answers (default: the port).
        #[arg(long)]
        app_id: Option<u16>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Check { config }) => check(&config_path(config)),
        Some(Command::Demo { config }) => demo(config),
        Some(Command::Backend { port, bind, threads, app_id }) => {
            ringway::logging::init(None);
            match ringway::demo_backend::start(SocketAddr::new(bind, port), threads, app_id) {
                Ok((addr, handles)) => {
                    println!("ringway backend listening on {addr}");
                    let _ = std::io::stdout().flush();
                    handles.into_iter().for_each(|h| drop(h.join()));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("ringway backend: cannot listen on {bind}:{port}: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        None => {
            let path = config_path(cli.config);
            if !path.exists() {
                eprintln!(
                    "ringway: no config at {}.\n  Try the demo:      ringway demo\n  Run with a config: ringway --config examples/seed.toml\n  Validate a config: ringway check --config FILE",
                    path.display()
                );
                return ExitCode::from(2);
            }
            match Config::load(&path) {
                Ok(config) => run(config, cli.takeover),
                Err(e) => {
                    eprintln!("ringway: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn config_path(given: Option<PathBuf>) -> PathBuf {
    given.unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG))
}

fn check(path: &Path) -> ExitCode {
    match Config::load(path) {
        Ok(c) => {
            for w in &c.warnings {
                eprintln!("warning: {w}");
            }
            println!(
                "{}: ok ({} listeners, {} upstreams, {} servers)",
                path.display(),
                c.listeners.len(),
                c.upstreams.len(),
                c.servers.len()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn run(config: Config, takeover: bool) -> ExitCode {
    ringway::logging::init(config.runtime.log_level.as_deref());
    config.warnings.iter().for_each(|w| log::warn!("{w}"));
    let path = config.source.clone();
    let mut inherited = Inherited::default();
    if takeover {
        match handover::receive(&path) {
            Ok(Some((got, pid))) => {
                log::info!("takeover: pid {pid} handed over its sockets for {:?}", got.left().collect::<Vec<_>>());
                inherited = got;
            }
            Ok(None) => log::warn!(
                "takeover: no running instance of {} answered; sharing its ports through SO_REUSEPORT instead, \
                 so connections still queued at the old process when it closes them are reset",
                path.display()
            ),
            Err(e) => {
                log::error!("takeover from the running instance of {} failed: {e}", path.display());
                return ExitCode::FAILURE;
            }
        }
    }
    let control = Control::new(config, Some(path.clone()));
    serve(control, inherited, !takeover, Some(&path))
}

/// Starts the workers and the admin listener, reports the bound addresses,
/// offers the sockets to a successor when there is a config file, then
/// handles signals until the proxy stops. `check`: refuse addresses another
/// process listens on.
fn serve(control: Control, mut inherited: Inherited, check: bool, config_file: Option<&Path>) -> ExitCode {
    // Installed before the addresses are printed, so a signal sent as soon
    // as the proxy reports ready is handled, not fatal.
    let signals = match Signals::new([SIGHUP, SIGTERM, SIGINT, SIGUSR1]) {
        Ok(s) => s,
        Err(e) => {
            log::error!("cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let config = control.config();
    let auto = config.runtime.driver == ringway::config::Driver::Auto;
    // Bound before the workers start, so that every address is checked
    // before any is announced.
    let admin = match config.admin.map(|bind| open_admin(bind, &mut inherited, check)).transpose() {
        Ok(a) => a,
        Err(e) => {
            log::error!("cannot start: admin listener: {e}");
            return ExitCode::FAILURE;
        }
    };
    let running = match ringway::runtime::start(Arc::new(control), &mut inherited, check) {
        Ok(r) => r,
        Err(e) => {
            log::error!("cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    log::info!("{} workers, driver: {}", running.drivers.len(), running.drivers.first().map_or("?", |d| d.as_str()));
    if auto && running.drivers.iter().any(|d| d == "epoll") {
        log::warn!("io_uring is unavailable here (kernel or seccomp); workers fall back to epoll");
    }
    for (name, addr) in &running.listeners {
        println!("ringway listening name={name} addr={addr}");
    }
    let control = Arc::clone(&running.control);
    if let Some((addr, sockets)) = admin {
        // The configured bind (port 0 stays 0), which a reload compares.
        let bind = config.admin.unwrap_or(addr);
        match control.start_admin(bind, sockets) {
            Ok(addr) => println!("ringway admin addr={addr}"),
            Err(e) => {
                log::error!("admin listener on {addr}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let _ = std::io::stdout().flush();
    if !inherited.is_empty() {
        log::info!(
            "takeover: this config has no listener on {:?}; the old instance serves them until it stops",
            inherited.left().collect::<Vec<_>>()
        );
    }
    let succession = inherited.take_succession();
    drop(inherited);
    if let Some(file) = config_file {
        handover::offer(Arc::clone(&control), file, succession);
    }
    handle_signals(&control, running, signals)
}

/// The admin listener's sockets: taken over, or bound here (after the
/// "address in use" check when `check`).
fn open_admin(
    bind: SocketAddr,
    inherited: &mut Inherited,
    check: bool,
) -> std::io::Result<(SocketAddr, Vec<std::net::TcpListener>)> {
    if check {
        ringway::runtime::check_free(bind)
            .map_err(|e| std::io::Error::new(e.kind(), format!("{e} (admin){}", ringway::runtime::TAKEOVER_HINT)))?;
    }
    ringway::runtime::open_group(bind, 1, inherited)
}

/// SIGHUP reloads; SIGTERM/SIGINT stop gracefully (a second one stops at
/// once); SIGUSR1 reopens the access log.
fn handle_signals(control: &Arc<Control>, running: ringway::runtime::Running, mut signals: Signals) -> ExitCode {
    let (stopped_tx, stopped_rx) = std::sync::mpsc::channel();
    let mut stopped_rx = Some(stopped_rx);
    std::thread::spawn(move || {
        running.wait();
        let _ = stopped_tx.send(());
    });
    for signal in signals.forever() {
        match signal {
            // Settings that wait for a restart or could not be applied were
            // logged as warnings by the reload itself.
            SIGHUP => match control.reload() {
                Ok(_) => log::info!("config reloaded (SIGHUP)"),
                Err(e) => log::error!("reload refused, the running config stays: {e}"),
            },
            SIGUSR1 => ringway::access_log::reopen(),
            _ if control.is_shutting_down() => {
                log::warn!("second stop signal: exiting now");
                return ExitCode::from(1);
            }
            _ => {
                let grace = control.config().runtime.shutdown_timeout;
                log::info!("stopping: no new connections, in-flight requests get up to {grace:?}");
                control.begin_shutdown();
                let stopped_rx = stopped_rx.take();
                std::thread::spawn(move || {
                    let finished = stopped_rx.is_some_and(|rx| rx.recv_timeout(grace).is_ok());
                    if finished {
                        log::info!("stopped");
                    } else {
                        log::warn!("shutdown_timeout passed with requests still in flight; exiting");
                    }
                    ringway::access_log::shutdown();
                    let _ = std::io::stdout().flush();
                    std::process::exit(0);
                });
            }
        }
    }
    ExitCode::SUCCESS
}

/// `ringway demo`: the embedded seed config, or `given`, with a demo
/// backend on every loopback server it names (for the seed, the four on
/// 2222/3333/4444/5555).
fn demo(given: Option<PathBuf>) -> ExitCode {
    let loaded = match &given {
        Some(path) => Config::load(path),
        None => Config::parse(Path::new("examples/seed.toml (embedded)"), SEED_CONFIG),
    };
    let config = match loaded {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ringway demo: {e}");
            return ExitCode::FAILURE;
        }
    };
    ringway::logging::init(config.runtime.log_level.as_deref());
    config.warnings.iter().for_each(|w| log::warn!("{w}"));
    let mut backends = Vec::new();
    for addr in config.servers.iter().map(|s| s.addr).filter(|a| a.ip().is_loopback()) {
        match ringway::demo_backend::start(addr, 1, None) {
            // The backend threads run until the process exits.
            Ok(_) => backends.push(addr),
            Err(e) => {
                log::error!("demo backend on {addr}: {e} (the demo starts one on each loopback server of the config)");
                return ExitCode::FAILURE;
            }
        }
    }
    if backends.is_empty() {
        log::warn!("the config names no loopback server, so no demo backend was started");
    }
    let list = backends.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
    println!("ringway demo: backends on {list}");
    if given.is_none() {
        println!(
            "\nTry:\n  curl http://127.0.0.1:8080/        # hello from a lightweight container. App ID = 2222, then 3333, 4444, 5555\n  curl http://127.0.0.1:8080/app1    # this is app1. App ID = 2222 / 3333\n  curl http://127.0.0.1:8080/app2    # this is app2. App ID = 4444 / 5555\n  curl -i http://127.0.0.1:8080/admin   # 403 Forbidden on the public listener\n  curl http://127.0.0.1:8081/admin   # admin page. App ID = ... (internal listener)\n\nCtrl-C stops the demo.\n"
        );
    }
    serve(Control::new(config, given), Inherited::default(), true, None)
}
