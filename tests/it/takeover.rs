//! Ports already served (issue 12): a second ringway on a port another
//! process listens on refuses to start instead of silently sharing it, a
//! reload may not add such a listener, and `--takeover` shares on purpose:
//! a binary upgrade under load that fails no request.

use crate::support::ops::free_port;
use crate::support::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `threads` workers, info logging, upstream `a` = `server`, one listener
/// `public` on `bind`; `admin` adds an `[admin]` table.
fn config(threads: usize, server: SocketAddr, bind: &str, admin: Option<&str>) -> String {
    let admin = admin.map(|a| format!("[admin]\nbind = \"{a}\"\n")).unwrap_or_default();
    format!(
        r#"
[runtime]
threads = {threads}
log_level = "info"

{admin}
[upstreams.a]
servers = ["{server}"]

[[listeners]]
name = "public"
bind = "{bind}"
routes = [ {{ prefix = "/", upstream = "a" }} ]
"#
    )
}

/// Runs `ringway --config` with `toml` to its exit (bounded); returns
/// whether it succeeded, and its stderr.
fn run_to_exit(toml: &str) -> (bool, String) {
    let path = unique_temp_path("takeover", ".toml");
    std::fs::write(&path, toml).expect("write config");
    let mut child = Command::new(bin())
        .arg("--config")
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ringway");
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let _ = std::fs::remove_file(&path);
            panic!("ringway started and ran, where it had to refuse to start");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().expect("output");
    let _ = std::fs::remove_file(&path);
    (out.status.success(), String::from_utf8_lossy(&out.stderr).to_string())
}

#[test]
fn a_second_instance_on_a_served_port_refuses_to_start() {
    let b = RecordingBackend::echo_id("b");
    let port = free_port();
    let bind = format!("127.0.0.1:{port}");
    let first = Proxy::start(&config(2, b.addr(), &bind, None));
    for second_bind in [bind.clone(), format!("0.0.0.0:{port}")] {
        let (ok, stderr) = run_to_exit(&config(2, b.addr(), &second_bind, None));
        assert!(!ok, "a second instance on {second_bind} started");
        let expected = format!("address in use: another process is listening on {second_bind}");
        assert!(stderr.contains(&expected), "expected {expected:?} in:\n{stderr}");
        assert!(stderr.contains("--takeover"), "the refusal says how to share on purpose:\n{stderr}");
    }
    // The admin address too.
    let (ok, stderr) = run_to_exit(&config(1, b.addr(), "127.0.0.1:0", Some(&bind)));
    assert!(!ok && stderr.contains(&format!("another process is listening on {bind}")), "{stderr}");
    // Every request still reaches the first instance.
    for i in 0..20 {
        assert_eq!(get(first.addr("public"), &format!("/{i}")).text(), format!("b /{i}\n"));
    }
}

#[test]
fn two_listeners_on_one_address_refuse_to_start() {
    let port = free_port();
    let toml = format!(
        "[[listeners]]\nname = \"one\"\nbind = \"127.0.0.1:{port}\"\n\n[[listeners]]\nname = \"two\"\nbind = \"127.0.0.1:{port}\"\n"
    );
    let (ok, stderr) = run_to_exit(&toml);
    assert!(!ok, "started with two listeners on one address");
    assert!(
        stderr.contains("listener \"two\" binds") && stderr.contains("as listener \"one\" does (line 3"),
        "{stderr}"
    );
}

#[test]
fn reload_refuses_a_port_another_process_serves_but_not_its_own() {
    let b = RecordingBackend::echo_id("b");
    let p = Proxy::start(&config(1, b.addr(), "127.0.0.1:0", Some("127.0.0.1:0")));
    let own = free_port();
    p.rewrite_config(&config(1, b.addr(), &format!("127.0.0.1:{own}"), Some("127.0.0.1:0")));
    let reload = || request(p.admin_addr(), b"POST /reload HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(reload().status, 200, "a free port");
    // Renamed, same address: this process's own socket does not count.
    let renamed =
        config(1, b.addr(), &format!("127.0.0.1:{own}"), Some("127.0.0.1:0")).replace("\"public\"", "\"renamed\"");
    p.rewrite_config(&renamed);
    assert_eq!(reload().status, 200, "its own address");

    // Another ringway-like socket (SO_REUSEPORT, same user) that a plain
    // bind would have joined.
    let other = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    other.set_reuse_port(true).expect("reuseport");
    other.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into()).expect("bind");
    other.listen(16).expect("listen");
    let taken = other.local_addr().expect("addr").as_socket().expect("inet");
    p.rewrite_config(&format!(
        "{renamed}\n[[listeners]]\nname = \"clash\"\nbind = \"{taken}\"\nroutes = [ {{ prefix = \"/\", status = 204 }} ]\n"
    ));
    let r = reload();
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains(&format!("address in use: another process is listening on {taken}")), "{}", r.text());
}

// ---------------------------------------------------------------------------
// A binary upgrade under load.
// ---------------------------------------------------------------------------

/// How one request went.
enum Outcome {
    /// A response came; `true` if it said `Connection: close`.
    Answered(u16, bool),
    /// The connection ended (EOF or reset) before any byte of a response.
    NoResponse(String),
    /// Anything else: a cut response, a refused connect, a timeout.
    Failed(String),
}

/// Sends one GET on `stream` and reads its response (Content-Length only).
fn exchange_on(stream: &mut TcpStream, path: &str) -> Outcome {
    if let Err(e) = stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes()) {
        return Outcome::NoResponse(format!("write: {e}"));
    }
    let mut got = Vec::new();
    let mut tmp = [0u8; 4096];
    loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
            let status = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if got.len() >= end + 4 + len {
                return Outcome::Answered(status, head.contains("connection: close"));
            }
        }
        match stream.read(&mut tmp) {
            Ok(0) if got.is_empty() => return Outcome::NoResponse("EOF".into()),
            Err(e) if got.is_empty() => return Outcome::NoResponse(e.to_string()),
            Ok(0) => return Outcome::Failed(format!("EOF inside a response: {:?}", String::from_utf8_lossy(&got))),
            Err(e) => return Outcome::Failed(format!("{e} inside a response")),
            Ok(n) => got.extend_from_slice(&tmp[..n]),
        }
    }
}

fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    s.set_nodelay(true)?;
    Ok(s)
}

#[derive(Default)]
struct Load {
    stop: AtomicBool,
    answered: AtomicUsize,
    /// Keep-alive requests sent again after their connection, idle at the
    /// old instance's stop, was closed before answering: what every HTTP
    /// client does (RFC 9112 §9.3.1), and what any idle close can cause.
    resent: AtomicUsize,
    failures: Mutex<Vec<String>>,
}

impl Load {
    fn fail(&self, what: String) {
        self.failures.lock().expect("lock").push(what);
    }

    /// Waits (bounded) until `n` more requests were answered.
    fn wait_more(&self, n: usize) {
        let target = self.answered.load(Ordering::SeqCst) + n;
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.answered.load(Ordering::SeqCst) < target {
            assert!(Instant::now() < deadline, "the load stalled: {:?}", self.failures.lock().expect("lock"));
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// A new connection per request; no request is ever sent twice.
fn new_connection_client(addr: SocketAddr, load: &Load) {
    while !load.stop.load(Ordering::SeqCst) {
        match connect(addr).map(|mut s| exchange_on(&mut s, "/new")) {
            Ok(Outcome::Answered(200, _)) => drop(load.answered.fetch_add(1, Ordering::SeqCst)),
            Ok(Outcome::Answered(s, _)) => load.fail(format!("new connection: status {s}")),
            Ok(Outcome::NoResponse(e) | Outcome::Failed(e)) => load.fail(format!("new connection: {e}")),
            Err(e) => load.fail(format!("connect: {e}")),
        }
    }
}

/// One keep-alive connection at a time, reconnecting after `Connection:
/// close`; a request that got no byte back on a reused connection is sent
/// again once on a new one.
fn keep_alive_client(addr: SocketAddr, load: &Load) {
    let mut conn: Option<TcpStream> = None;
    while !load.stop.load(Ordering::SeqCst) {
        let reused = conn.is_some();
        let mut stream = match conn.take().map_or_else(|| connect(addr), Ok) {
            Ok(s) => s,
            Err(e) => return load.fail(format!("connect: {e}")),
        };
        match exchange_on(&mut stream, "/ka") {
            Outcome::Answered(200, close) => {
                load.answered.fetch_add(1, Ordering::SeqCst);
                conn = (!close).then_some(stream);
            }
            Outcome::Answered(s, _) => return load.fail(format!("keep-alive: status {s}")),
            Outcome::NoResponse(e) if reused => {
                load.resent.fetch_add(1, Ordering::SeqCst);
                match connect(addr).map(|mut s| (exchange_on(&mut s, "/ka"), s)) {
                    Ok((Outcome::Answered(200, close), s)) => {
                        load.answered.fetch_add(1, Ordering::SeqCst);
                        conn = (!close).then_some(s);
                    }
                    Ok(_) => return load.fail(format!("keep-alive: no answer on a new connection either ({e})")),
                    Err(e) => return load.fail(format!("connect: {e}")),
                }
            }
            Outcome::NoResponse(e) | Outcome::Failed(e) => return load.fail(format!("keep-alive: {e}")),
        }
    }
}

#[test]
fn takeover_under_load_fails_no_request_and_the_new_instance_serves_alone() {
    const NEW_CONNECTION_CLIENTS: usize = 3;
    const KEEP_ALIVE_CLIENTS: usize = 3;
    let b = RecordingBackend::start(|_| ok("ok"));
    let (port, admin) = (free_port(), format!("127.0.0.1:{}", free_port()));
    let mut old = Proxy::start(&config(2, b.addr(), &format!("127.0.0.1:{port}"), Some(&admin)));
    let addr = old.addr("public");
    assert_eq!(addr.port(), port);

    let load = Arc::new(Load::default());
    let clients: Vec<_> = (0..NEW_CONNECTION_CLIENTS + KEEP_ALIVE_CLIENTS)
        .map(|i| {
            let load = Arc::clone(&load);
            std::thread::spawn(move || {
                if i < NEW_CONNECTION_CLIENTS {
                    new_connection_client(addr, &load)
                } else {
                    keep_alive_client(addr, &load)
                }
            })
        })
        .collect();
    load.wait_more(200);

    // One worker where the old one has two: it accepts on both sockets.
    old.rewrite_config(&config(1, b.addr(), &format!("127.0.0.1:{port}"), Some(&admin)));
    let mut new = old.take_over();
    assert_eq!((new.addr("public"), new.admin_addr().to_string()), (addr, admin.clone()));
    // Two workers' sockets and the admin listener's.
    assert!(old.wait_stderr("handed 3 listening sockets over", Duration::from_secs(5)), "{}", old.stderr());
    load.wait_more(200);

    let at_signal = load.answered.load(Ordering::SeqCst);
    old.signal(libc::SIGTERM);
    let status = old.wait_exit(Duration::from_secs(10)).expect("the old instance did not exit");
    assert!(status.success(), "{status:?}:\n{}", old.stderr());
    let at_exit = load.answered.load(Ordering::SeqCst);
    load.wait_more(300);

    load.stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.join().expect("client thread");
    }
    let failures = load.failures.lock().expect("lock");
    let (answered, resent) = (load.answered.load(Ordering::SeqCst), load.resent.load(Ordering::SeqCst));
    println!(
        "{answered} requests answered: {} before SIGTERM, {} during the old instance's stop, {} after; \
         {resent} keep-alive requests sent again",
        at_signal,
        at_exit - at_signal,
        answered - at_exit
    );
    assert!(failures.is_empty(), "{} requests failed, first: {:?}", failures.len(), &failures[..failures.len().min(5)]);
    assert!(resent <= KEEP_ALIVE_CLIENTS, "{resent} resent: more than one per keep-alive connection open at the stop");
    assert_eq!(get(addr, "/after").text(), "ok", "the new instance serves alone");
    let admin = admin.parse().expect("admin addr");
    assert_eq!(get(admin, "/health").text(), "ok\n", "and its admin API");
    assert!(new.try_exit().is_none(), "{}", new.stderr());

    // Now the new instance offers its sockets (the name was the old one's).
    let next = new.take_over();
    assert!(new.wait_stderr("handed 3 listening sockets over", Duration::from_secs(5)), "{}", new.stderr());
    assert_eq!(get(next.addr("public"), "/next").text(), "ok");
}
