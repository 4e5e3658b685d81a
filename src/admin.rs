//! The admin listener (`[admin] bind`): Prometheus metrics, status, process
//! health, reload, and draining servers without a reload. It runs on its own
//! thread with its own runtime, never on a worker, and is never reachable
//! through the public listeners.

use crate::config::{HttpPolicy, Limits};
use crate::http::head::HeadScanner;
use crate::http::request;
use crate::metrics::{self, Globals, WorkerSnapshot};
use crate::proxy::buf::{write_out, ConnBuf};
use crate::runtime::{Command, Control};
use monoio::net::{TcpListener, TcpStream};
use std::io::Write;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// How long a scrape waits for all workers to answer.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(2);
/// Admin requests are small; anything larger is refused.
const ADMIN_LIMITS: Limits =
    Limits { max_header_bytes: 8192, max_headers: 64, max_target_bytes: 2048, max_body_bytes: Some(0) };
/// Deadline for reading one admin request head.
const ADMIN_HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves the admin listener's sockets (one, or those a running instance
/// handed over, see `runtime::open_group`) on a new thread.
pub fn start(control: Arc<Control>, sockets: Vec<std::net::TcpListener>) -> std::io::Result<()> {
    std::thread::Builder::new().name("ringway-admin".into()).spawn(move || {
        let config = control.config();
        let mut rt = match crate::runtime::ring::build(config.runtime.driver, &config.runtime.ring) {
            Ok(rt) => rt,
            Err(e) => return log::error!("admin runtime: {e}"),
        };
        rt.block_on(async move {
            let mut loops = Vec::new();
            for socket in sockets {
                match TcpListener::from_std(socket) {
                    Ok(l) => loops.push(monoio::spawn(accept_loop(l, Arc::clone(&control)))),
                    Err(e) => log::error!("admin listener: {e}"),
                }
            }
            for l in loops {
                l.await;
            }
        });
    })?;
    Ok(())
}

async fn accept_loop(listener: TcpListener, control: Arc<Control>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                monoio::spawn(serve(stream, Arc::clone(&control)));
            }
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

fn route(control: &Control, method: &str, path: &str) -> (u16, &'static str, String) {
    const TEXT: &str = "text/plain; charset=utf-8";
    match (method, path) {
        ("GET", "/health") => (200, TEXT, "ok\n".into()),
        ("GET", "/metrics") => (200, "text/plain; version=0.0.4", render_metrics(control)),
        ("GET", "/status") => (200, "application/json", status_json(control)),
        ("POST", "/reload") => match control.reload() {
            Ok(()) => {
                log::info!("config reloaded (admin API)");
                (200, TEXT, "reloaded\n".into())
            }
            Err(e) => {
                log::error!("reload refused, the running config stays: {e}");
                (400, TEXT, format!("reload refused: {e}\n"))
            }
        },
        ("POST", p) if p.starts_with("/upstreams/") => server_action(control, p),
        (_, "/health" | "/metrics" | "/status" | "/reload") => (405, TEXT, "method not allowed\n".into()),
        _ => (404, TEXT, "not found\n".into()),
    }
}

/// `POST /upstreams/NAME/servers/ADDR/drain` and `.../enable`.
fn server_action(control: &Control, path: &str) -> (u16, &'static str, String) {
    const TEXT: &str = "text/plain; charset=utf-8";
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let [_, name, "servers", addr, action] = parts.as_slice() else {
        return (404, TEXT, "not found\n".into());
    };
    let drain = match *action {
        "drain" => true,
        "enable" => false,
        _ => return (404, TEXT, "not found\n".into()),
    };
    let config = control.config();
    let Some(up) = config.upstreams.iter().find(|u| &*u.name == *name) else {
        return (404, TEXT, format!("no upstream {name}\n"));
    };
    let Some(server) = addr.parse().ok().and_then(|a| up.server(a)) else {
        return (404, TEXT, format!("no server {addr} in upstream {name}\n"));
    };
    server.state.set_drained(drain);
    log::info!("upstream {name} server {addr}: {}", if drain { "drained" } else { "enabled" });
    (200, TEXT, format!("{} {addr}\n", if drain { "drained" } else { "enabled" }))
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
        .flat_map(|u| u.servers.iter().map(move |s| (Arc::clone(&u.name), s.addr, s.state.is_healthy())))
        .collect();
    let globals = Globals {
        reloads_ok: control.reloads_ok.load(std::sync::atomic::Ordering::Relaxed),
        reloads_failed: control.reloads_failed.load(std::sync::atomic::Ordering::Relaxed),
        health: &health,
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
                        "healthy": s.state.is_healthy(),
                        "drained": s.state.is_drained(),
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
