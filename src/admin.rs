//! The admin listener (`[admin] bind`): Prometheus metrics, status, process
//! health, reload, and draining servers without a reload. It runs on its own
//! thread with its own runtime, never on a worker, and is never reachable
//! through the public listeners.

use crate::config::{HttpPolicy, Limits};
use crate::http::head::HeadScanner;
use crate::http::request;
use crate::io_buf::{write_out, ConnBuf};
use crate::metrics::{self, Globals, WorkerSnapshot};
use crate::runtime::{Command, Control};
use monoio::io::{CancelHandle, Canceller};
use monoio::net::{TcpListener, TcpStream};
use std::cell::Cell;
use std::io::Write;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// How long a scrape waits for all workers to answer.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(2);
/// Admin requests are small; anything larger is refused.
const ADMIN_LIMITS: Limits =
    Limits { max_header_bytes: 8192, max_headers: 64, max_target_bytes: 2048, max_body_bytes: Some(0) };
/// Deadline for reading one admin request head.
const ADMIN_HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// How often a running admin listener looks whether it was told to stop.
const STOP_POLL: Duration = Duration::from_millis(20);

/// A running admin listener. A reload that changes `[admin] bind` starts a
/// new one and stops the old.
pub struct AdminListener {
    /// Where it listens (the configured address, with port 0 resolved).
    pub addr: SocketAddr,
    /// The `[admin] bind` it was started for.
    pub bind: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl AdminListener {
    /// Closes the listening socket within `STOP_POLL`; requests already
    /// accepted (the `POST /reload` that moved it, say) still get answers.
    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Serves the admin listener's sockets (one bound for `bind`, or those a
/// running instance handed over, see `runtime::open_group`) on a new
/// thread; returns once it serves, or with the error that keeps it from
/// serving.
pub fn start(
    control: Arc<Control>,
    bind: SocketAddr,
    sockets: Vec<std::net::TcpListener>,
) -> std::io::Result<AdminListener> {
    let addr = match sockets.first() {
        Some(s) => s.local_addr()?,
        None => return Err(std::io::Error::other("no admin socket to serve")),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = Arc::clone(&stop);
    let (ready_tx, ready_rx) = mpsc::channel();
    std::thread::Builder::new().name("ringway-admin".into()).spawn(move || {
        // The driver and ring the process started with: a reload does not
        // change them (see `runtime::reload`).
        let runtime = control.started_runtime();
        let mut rt = match crate::runtime::ring::build(runtime.driver, &runtime.ring) {
            Ok(rt) => rt,
            Err(e) => return drop(ready_tx.send(Err(e))),
        };
        let _ = ready_tx.send(Ok(()));
        rt.block_on(accept_until_stopped(sockets, control, stopped));
    })?;
    match ready_rx.recv() {
        Ok(Ok(())) => Ok(AdminListener { addr, bind, stop }),
        Ok(Err(e)) => Err(std::io::Error::new(e.kind(), format!("admin runtime: {e}"))),
        Err(_) => Err(std::io::Error::other("the admin thread exited during start")),
    }
}

async fn accept_until_stopped(sockets: Vec<std::net::TcpListener>, control: Arc<Control>, stop: Arc<AtomicBool>) {
    let canceller = Canceller::new();
    let in_flight = Rc::new(Cell::new(0usize));
    let mut loops = Vec::new();
    for socket in sockets {
        match TcpListener::from_std(socket) {
            Ok(l) => loops.push(monoio::spawn(accept_loop(
                l,
                Arc::clone(&control),
                canceller.handle(),
                Rc::clone(&in_flight),
            ))),
            Err(e) => log::error!("admin listener: {e}"),
        }
    }
    while !stop.load(Ordering::Relaxed) {
        monoio::time::sleep(STOP_POLL).await;
    }
    canceller.cancel();
    // Each loop drops its socket as it ends: new connections are refused
    // from here on.
    for l in loops {
        l.await;
    }
    let deadline = Instant::now() + ADMIN_HEAD_TIMEOUT;
    while in_flight.get() > 0 && Instant::now() < deadline {
        monoio::time::sleep(STOP_POLL).await;
    }
}

/// Accepts on one socket until `cancel` fires; counts requests in flight.
async fn accept_loop(listener: TcpListener, control: Arc<Control>, cancel: CancelHandle, in_flight: Rc<Cell<usize>>) {
    loop {
        match listener.cancelable_accept(cancel.clone()).await {
            Ok((stream, _)) => {
                in_flight.set(in_flight.get() + 1);
                let (control, in_flight) = (Arc::clone(&control), Rc::clone(&in_flight));
                monoio::spawn(async move {
                    serve(stream, control).await;
                    in_flight.set(in_flight.get() - 1);
                });
            }
            Err(e) if e.raw_os_error() == Some(libc::ECANCELED) => break,
            Err(_) => monoio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// One admin request per connection.
async fn serve(mut stream: TcpStream, control: Arc<Control>) {
    let mut buf = ConnBuf::new(4096, ADMIN_LIMITS.max_header_bytes + 1);
    let mut scanner = HeadScanner::default();
    let deadline = Instant::now() + ADMIN_HEAD_TIMEOUT;
    let head_len = loop {
        match scanner.scan(buf.data(), ADMIN_LIMITS.max_header_bytes) {
            Ok(Some(n)) => break n,
            Ok(None) => {}
            Err(_) => return reply(&mut stream, 400, "text/plain", "bad request\n").await,
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match monoio::time::timeout(left, buf.fill(&mut stream)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return,
        }
    };
    let (method, path) = {
        let mut slots = [const { MaybeUninit::uninit() }; 64];
        match request::parse(&buf.data()[..head_len], &mut slots, &ADMIN_LIMITS, HttpPolicy::defaults()) {
            Ok(r) => (r.method_token.to_owned(), String::from_utf8_lossy(r.path).into_owned()),
            Err(e) => return reply(&mut stream, e.status(), "text/plain", "bad request\n").await,
        }
    };
    let (status, kind, body) = route(&control, &method, &path);
    reply(&mut stream, status, kind, &body).await;
}

const TEXT: &str = "text/plain; charset=utf-8";

fn route(control: &Arc<Control>, method: &str, path: &str) -> (u16, &'static str, String) {
    match (method, path) {
        // A graceful stop has begun: the load balancer in front should
        // stop sending new connections here while in-flight ones finish.
        ("GET", "/health") if control.is_shutting_down() => (503, TEXT, "stopping\n".into()),
        ("GET", "/health") => (200, TEXT, "ok\n".into()),
        ("GET", "/metrics") => (200, "text/plain; version=0.0.4", render_metrics(control)),
        ("GET", "/status") => (200, "application/json", status_json(control)),
        ("POST", "/reload") => {
            let (status, doc) = match control.reload() {
                Ok(done) => {
                    log::info!("config reloaded (admin API)");
                    let admin = done.admin.map(|a| a.to_string());
                    let doc = serde_json::json!({
                        "reloaded": true,
                        "generation": control.generation(),
                        "restart_required": done.restart_required,
                        "warnings": done.warnings,
                        "admin": admin,
                    });
                    (200, doc)
                }
                Err(e) => {
                    log::error!("reload refused, the running config stays: {e}");
                    (400, serde_json::json!({ "reloaded": false, "error": e.to_string() }))
                }
            };
            (status, "application/json", format!("{doc}\n"))
        }
        ("POST", p) if p.starts_with("/upstreams/") => member_action(control, p),
        ("POST", p) if p.starts_with("/servers/") => address_action(control, p),
        (_, "/health" | "/metrics" | "/status" | "/reload") => (405, TEXT, "method not allowed\n".into()),
        _ => (404, TEXT, "not found\n".into()),
    }
}

/// `drain` or `enable`: whether to drain.
fn drain_action(action: &str) -> Option<bool> {
    match action {
        "drain" => Some(true),
        "enable" => Some(false),
        _ => None,
    }
}

fn drained_word(drain: bool) -> &'static str {
    if drain {
        "drained"
    } else {
        "enabled"
    }
}

/// `POST /upstreams/NAME/servers/ADDR/drain` and `.../enable`: the server
/// in that upstream only; other upstreams that list the address keep it.
fn member_action(control: &Control, path: &str) -> (u16, &'static str, String) {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let ["upstreams", name, "servers", addr, action] = parts.as_slice() else {
        return (404, TEXT, "not found\n".into());
    };
    let Some(drain) = drain_action(action) else { return (404, TEXT, "not found\n".into()) };
    control.with_config(|config| {
        let Some(up) = config.upstreams.iter().find(|u| &*u.name == *name) else {
            return (404, TEXT, format!("no upstream {name}\n"));
        };
        let Some(server) = addr.parse().ok().and_then(|a| up.server(a)) else {
            return (404, TEXT, format!("no server {addr} in upstream {name}\n"));
        };
        server.member.set_drained(drain);
        log::info!("upstream {name} server {addr}: {}", drained_word(drain));
        let mut body = format!("{} {addr} in upstream {name}\n", drained_word(drain));
        if !drain && server.state.is_drained() {
            body.push_str(&format!("still drained everywhere: POST /servers/{addr}/enable\n"));
        }
        (200, TEXT, body)
    })
}

/// `POST /servers/ADDR/drain` and `.../enable`: the address in every
/// upstream that lists it, including upstreams a reload adds it to, for as
/// long as one lists it. Independent of the drains per upstream.
fn address_action(control: &Control, path: &str) -> (u16, &'static str, String) {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let ["servers", addr, action] = parts.as_slice() else {
        return (404, TEXT, "not found\n".into());
    };
    let Some(drain) = drain_action(action) else { return (404, TEXT, "not found\n".into()) };
    control.with_config(|config| {
        let Some(state) = addr.parse().ok().and_then(|a: SocketAddr| config.servers.iter().find(|s| s.addr == a))
        else {
            return (404, TEXT, format!("no upstream lists server {addr}\n"));
        };
        state.set_drained(drain);
        let members: Vec<&crate::upstream::Server> =
            config.upstreams.iter().filter_map(|u| u.server(state.addr)).collect();
        let names: Vec<&str> = members.iter().map(|m| &*m.member.upstream).collect();
        log::info!("server {addr}: {} in every upstream ({})", drained_word(drain), names.join(", "));
        let mut body = format!("{} {addr} in every upstream ({})\n", drained_word(drain), names.join(", "));
        for m in members.iter().filter(|m| !drain && m.member.is_drained()) {
            body.push_str(&format!(
                "still drained in upstream {}: POST /upstreams/{}/servers/{addr}/enable\n",
                m.member.upstream, m.member.upstream
            ));
        }
        (200, TEXT, body)
    })
}

/// Asks every worker for a copy of its counters.
fn scrape(control: &Control) -> Vec<WorkerSnapshot> {
    let (tx, rx) = mpsc::channel();
    let asked = control.broadcast(|_| Command::Scrape(tx.clone()));
    drop(tx);
    let deadline = Instant::now() + SCRAPE_TIMEOUT;
    let mut snaps = Vec::with_capacity(asked);
    while snaps.len() < asked {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(s) => snaps.push(s),
            Err(_) => break,
        }
    }
    snaps
}

fn render_metrics(control: &Control) -> String {
    let snaps = scrape(control);
    let config = control.config();
    let health: Vec<_> = config
        .upstreams
        .iter()
        .flat_map(|u| u.servers.iter().map(move |s| (Arc::clone(&u.name), s.addr, s.in_rotation())))
        .collect();
    let dns = control.dns.snapshot();
    let globals = Globals {
        reloads_ok: control.reloads_ok.load(Ordering::Relaxed),
        reloads_failed: control.reloads_failed.load(Ordering::Relaxed),
        health: &health,
        dns: &dns,
    };
    metrics::render(&snaps, &globals)
}

fn status_json(control: &Control) -> String {
    let snaps = scrape(control);
    let config = control.config();
    let pool = |addr: SocketAddr| {
        snaps
            .iter()
            .flat_map(|s| s.pools.iter())
            .filter(|p| p.addr == addr)
            .fold((0, 0), |(i, a), p| (i + p.idle, a + p.active))
    };
    let upstreams: Vec<_> = config
        .upstreams
        .iter()
        .map(|u| {
            let servers: Vec<_> = u
                .servers
                .iter()
                .map(|s| {
                    let (idle, active) = pool(s.addr);
                    serde_json::json!({
                        "addr": s.addr.to_string(),
                        "healthy": s.in_rotation(),
                        "drained": s.is_drained(),
                        "drained_in_upstream": s.member.is_drained(),
                        "drained_everywhere": s.state.is_drained(),
                        "in_flight": active,
                        "idle_connections": idle,
                    })
                })
                .collect();
            serde_json::json!({ "name": &*u.name, "balance": u.policy.balance.label(), "keepalive": u.keepalive, "servers": servers })
        })
        .collect();
    let listeners: Vec<_> =
        config.listeners.iter().map(|l| serde_json::json!({ "name": &*l.name, "bind": l.bind.to_string() })).collect();
    let doc = serde_json::json!({
        "config": config.source.display().to_string(),
        "generation": control.generation(),
        "workers": snaps.len(),
        "listeners": listeners,
        "upstreams": upstreams,
    });
    let mut text = serde_json::to_string_pretty(&doc).unwrap_or_default();
    text.push('\n');
    text
}

async fn reply(stream: &mut TcpStream, status: u16, kind: &str, body: &str) {
    let mut out = Vec::with_capacity(128 + body.len());
    let _ = write!(
        out,
        "HTTP/1.1 {status} {}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        crate::proxy::reason(status),
        body.len()
    );
    let _ = monoio::time::timeout(ADMIN_HEAD_TIMEOUT, write_out(stream, &mut out)).await;
}
