//! Layer 4 (`mode = "tcp"` listeners, issue 15): each connection is
//! relayed to a server of the listener's upstream, balanced (round robin,
//! least_conn, hash on the client's address) with connect retries, active
//! connect health checks, half-closes passed on, `tcp_idle`, counters and
//! one access log line per connection; and `examples/tcp.toml` (the nginx
//! stream block of the article) under `ringway check` and `ringway demo`.
//! The backends are raw TCP (`support::tcp::TcpBackend`: greeting, echo,
//! a bye at EOF).

use crate::support::ops::{free_port, wait_log_lines, TempFile};
use crate::support::tcp::*;
use crate::support::*;
use std::io::{Read, Write};
use std::net::Shutdown;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A config with an admin listener, upstream `pool` over `servers` (with
/// `upstream_extra` keys) and TCP listener `l4` (with `listener_extra`
/// keys, then `more` tables).
fn l4_config(servers: &[String], upstream_extra: &str, timeouts: &[(&str, &str)], more: &str) -> String {
    let list = servers.iter().map(|s| format!("\"{s}\"")).collect::<Vec<_>>().join(", ");
    format!(
        r#"{header}
[admin]
bind = "127.0.0.1:0"

[upstreams.pool]
servers = [{list}]
{upstream_extra}

[[listeners]]
name = "l4"
bind = "127.0.0.1:0"
mode = "tcp"
upstream = "pool"
{more}"#,
        header = runtime_config(2, timeouts, &[]),
    )
}

fn addrs(bs: &[&TcpBackend]) -> Vec<String> {
    bs.iter().map(|b| b.addr().to_string()).collect()
}

fn health(server: std::net::SocketAddr) -> String {
    format!("ringway_upstream_health{{upstream=\"pool\",server=\"{server}\"}}")
}

#[test]
fn round_robin_alternates_between_two_tcp_backends() {
    let (a, b) = (TcpBackend::start("a"), TcpBackend::start("b"));
    let p = Proxy::start(&l4_config(&addrs(&[&a, &b]), "", &[], ""));
    let ids: Vec<String> = (0..8).map(|_| one_exchange(None, p.addr("l4"))).collect();
    assert!(ids.windows(2).all(|w| w[0] != w[1]), "not an exact rotation: {ids:?}");
    assert_eq!((a.accepted(), b.accepted()), (4, 4));
    wait_series(&p, &tcp_connections("l4", "pool", "closed"), 8.0);
}

#[test]
fn a_refused_connect_is_retried_on_another_server() {
    let (a, b) = (TcpBackend::start("a"), TcpBackend::start("b"));
    let dead = dead_addr();
    let servers = [a.addr().to_string(), dead.addr.to_string(), b.addr().to_string()];
    let p = Proxy::start(&l4_config(&servers, "fail_timeout = \"60s\"", &[], ""));
    let ids: Vec<String> = (0..12).map(|_| one_exchange(None, p.addr("l4"))).collect();
    assert!(ids.iter().all(|id| id == "a" || id == "b"), "{ids:?}");
    assert!(a.accepted() > 0 && b.accepted() > 0, "both live servers serve: {ids:?}");
    assert_eq!(a.accepted() + b.accepted(), 12, "every connection reached a live server once");
    let text = metrics(&p);
    let refused = series(&text, &upstream_outcome("pool", dead.addr, "connect_error"));
    assert!(refused >= 1.0, "the dead server's refused connect is counted:\n{text}");
    wait_series(&p, &tcp_connections("l4", "pool", "closed"), 12.0);
    assert_eq!(series(&metrics(&p), &tcp_connections("l4", "pool", "no_server")), 0.0);
}

#[test]
fn least_conn_sends_new_connections_past_a_busy_server() {
    let (a, b) = (TcpBackend::start("a"), TcpBackend::start("b"));
    let p = Proxy::start(&l4_config(&addrs(&[&a, &b]), "balance = \"least_conn\"", &[], ""));
    let mut held = connect_from(None, p.addr("l4"));
    let busy = read_line(&mut held).expect("greeting of the held connection");
    for i in 0..4 {
        let id = one_exchange(None, p.addr("l4"));
        assert_ne!(id, busy, "connection {i} went to the server with a connection open");
        // Until that connection has been released.
        wait_series(&p, &tcp_connections("l4", "pool", "closed"), f64::from(i + 1));
    }
    held.write_all(b"still here").expect("write");
    held.shutdown(Shutdown::Write).expect("half-close");
    let rest = String::from_utf8(read_all(&mut held).expect("echo")).expect("ascii");
    assert_eq!(rest, format!("still here{busy} bye 10\n"));
}

#[test]
fn hash_on_the_client_address_keeps_each_client_on_one_server() {
    let (a, b) = (TcpBackend::start("a"), TcpBackend::start("b"));
    let p = Proxy::start(&l4_config(&addrs(&[&a, &b]), "balance = \"hash\"\nhash_key = \"client_ip\"", &[], ""));
    let mut chosen = Vec::new();
    for last in 2..=13u8 {
        let ip = [127, 0, 0, last];
        let ids: Vec<String> = (0..3).map(|_| one_exchange(Some(ip), p.addr("l4"))).collect();
        assert!(ids.iter().all(|id| *id == ids[0]), "127.0.0.{last} moved between servers: {ids:?}");
        chosen.push(ids[0].clone());
    }
    assert!(chosen.contains(&"a".to_string()) && chosen.contains(&"b".to_string()), "{chosen:?}");
}

#[test]
fn a_half_close_reaches_the_backend_which_still_answers() {
    let a = TcpBackend::start("a");
    let p = Proxy::start(&l4_config(&addrs(&[&a]), "", &[], ""));
    let mut s = connect_from(None, p.addr("l4"));
    assert_eq!(read_line(&mut s).expect("greeting"), "a");
    s.write_all(b"question").expect("write");
    s.shutdown(Shutdown::Write).expect("half-close");
    // The backend answers only once it has read the EOF.
    let rest = read_all(&mut s).expect("the answer after the half-close, then the close");
    assert_eq!(String::from_utf8_lossy(&rest), "questiona bye 8\n");
    assert_eq!(a.eofs(), 1);
    wait_series(&p, &tcp_connections("l4", "pool", "closed"), 1.0);
}

#[test]
fn tcp_idle_closes_a_silent_connection_both_ways_but_not_a_talking_one() {
    let a = TcpBackend::start("a");
    let p = Proxy::start(&l4_config(&addrs(&[&a]), "", &[("tcp_idle", "300ms")], ""));
    let mut talking = connect_from(None, p.addr("l4"));
    assert_eq!(read_line(&mut talking).expect("greeting"), "a");
    // One byte every 100 ms for 1.2 s: never 300 ms without traffic.
    let talker = std::thread::spawn(move || {
        for i in 0..12u8 {
            std::thread::sleep(Duration::from_millis(100));
            talking.write_all(&[b'a' + i]).expect("write on the talking connection");
            let mut got = [0u8; 1];
            talking.read_exact(&mut got).expect("the echo on the talking connection");
            assert_eq!(got[0], b'a' + i);
        }
        talking.shutdown(Shutdown::Write).expect("half-close");
        String::from_utf8_lossy(&read_all(&mut talking).expect("bye")).to_string()
    });
    let mut silent = connect_from(None, p.addr("l4"));
    assert_eq!(read_line(&mut silent).expect("greeting"), "a");
    let quiet_since = Instant::now();
    let mut buf = [0u8; 64];
    let n = silent.read(&mut buf).unwrap_or(0);
    let quiet = quiet_since.elapsed();
    assert_eq!(n, 0, "the silent connection was closed, with nothing sent to it");
    assert!(quiet >= Duration::from_millis(250) && quiet < Duration::from_secs(5), "closed after {quiet:?}");
    assert!(a.wait_eofs(1, Duration::from_secs(2)), "the backend's side was closed too");
    wait_series(&p, &tcp_connections("l4", "pool", "idle_timeout"), 1.0);
    assert_eq!(talker.join().expect("talker"), "a bye 12\n", "the talking connection was never cut");
    wait_series(&p, &tcp_connections("l4", "pool", "closed"), 1.0);
    assert_eq!(series(&metrics(&p), &tcp_connections("l4", "pool", "idle_timeout")), 1.0);
}

#[test]
fn a_mebibyte_each_way_is_counted_in_metrics_and_the_access_log() {
    let a = TcpBackend::start("a");
    let log = TempFile::new("l4-access");
    let more = format!("\n[access_log]\npath = \"{}\"\nformat = \"combined\"\n", log.0.display());
    let p = Proxy::start(&l4_config(&addrs(&[&a]), "", &[], &more));
    const MIB: usize = 1 << 20;
    let data: Vec<u8> = pattern().into_iter().cycle().take(MIB).collect();
    let mut s = connect_from(None, p.addr("l4"));
    let mut w = s.try_clone().expect("clone");
    let sent = data.clone();
    let writer = std::thread::spawn(move || {
        w.write_all(&sent).expect("write 1 MiB");
        w.shutdown(Shutdown::Write).expect("half-close");
    });
    let got = read_all(&mut s).expect("greeting, echo, bye");
    writer.join().expect("writer");
    let (greeting, bye) = ("a\n".as_bytes(), format!("a bye {MIB}\n"));
    assert_eq!(got.len(), greeting.len() + MIB + bye.len());
    assert!(got[..2] == *greeting && got[2..2 + MIB] == data[..], "the echo is the bytes sent");
    assert_eq!(&got[2 + MIB..], bye.as_bytes());
    let to_client = got.len() as f64;

    wait_series(&p, &tcp_connections("l4", "pool", "closed"), 1.0);
    let text = metrics(&p);
    let bytes = |d: &str| series(&text, &format!("ringway_tcp_bytes_total{{listener=\"l4\",direction=\"{d}\"}}"));
    assert_eq!((bytes("from_client"), bytes("to_client")), (MIB as f64, to_client), "{text}");
    assert_eq!(series(&text, "ringway_tcp_connection_duration_seconds_count"), 1.0, "{text}");

    let lines = wait_log_lines(&log.0, 1);
    // `CLIENT - - [TIME] "TCP LISTENER" END TO_CLIENT FROM_CLIENT MS SERVER "UPSTREAM"`.
    let f: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(f.len(), 13, "{}", lines[0]);
    assert_eq!((f[0], f[1], f[2], f[5], f[6]), ("127.0.0.1", "-", "-", "\"TCP", "l4\""), "{}", lines[0]);
    assert!(f[3].starts_with('[') && f[4] == "+0000]", "{}", lines[0]);
    assert_eq!(f[7], "closed");
    assert_eq!(f[8].parse::<f64>().ok(), Some(to_client), "{}", lines[0]);
    assert_eq!(f[9].parse::<usize>().ok(), Some(MIB), "{}", lines[0]);
    assert!(f[10].parse::<f64>().is_ok_and(|ms| ms > 0.0 && ms < 60_000.0), "{}", lines[0]);
    assert_eq!((f[11], f[12]), (a.addr().to_string().as_str(), "\"pool\""), "{}", lines[0]);
}

#[test]
fn a_connect_health_check_takes_a_stopped_backend_out_and_no_server_when_all_are() {
    let (a, b) = (TcpBackend::start("a"), TcpBackend::start("b"));
    let hc = "health_check = { interval = \"100ms\" }\nmax_fails = 100";
    let p = Proxy::start(&l4_config(&addrs(&[&a, &b]), hc, &[], ""));
    wait_series(&p, &health(a.addr()), 1.0);
    wait_series(&p, &health(b.addr()), 1.0);
    b.stop();
    wait_series(&p, &health(b.addr()), 0.0);
    let before = series(&metrics(&p), &upstream_outcome("pool", b.addr(), "connect_error"));
    for _ in 0..6 {
        assert_eq!(one_exchange(None, p.addr("l4")), "a", "a server found down is out of rotation");
    }
    let after = series(&metrics(&p), &upstream_outcome("pool", b.addr(), "connect_error"));
    assert_eq!(after, before, "the down server was not even tried");

    a.stop();
    wait_series(&p, &health(a.addr()), 0.0);
    let mut s = connect_from(None, p.addr("l4"));
    let got = read_all(&mut s).unwrap_or_default();
    assert!(got.is_empty(), "nothing to relay from: {got:?}");
    wait_series(&p, &tcp_connections("l4", "pool", "no_server"), 1.0);
}

/// `examples/tcp.toml`.
fn example() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/tcp.toml")
}

#[test]
fn the_tcp_example_passes_check() {
    let out = Command::new(bin())
        .args(["check", "--config", example().to_str().expect("utf-8 path")])
        .stdin(Stdio::null())
        .output()
        .expect("ringway check");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{said}");
}

#[test]
fn demo_serves_the_tcp_example_over_four_demo_backends_in_turn() {
    // The example as written, on ports no other test takes: the listener
    // on an ephemeral port and the four servers on free ones.
    let text = std::fs::read_to_string(example()).expect("read the example");
    let mut text = text.replace("127.0.0.1:9080", "127.0.0.1:0");
    let mut ports = Vec::new();
    for fixed in ["2222", "3333", "4444", "5555"] {
        let port = free_port();
        let (from, to) = (format!("127.0.0.1:{fixed}\""), format!("127.0.0.1:{port}\""));
        assert!(text.contains(&from), "the example names server {from}");
        text = text.replace(&from, &to);
        ports.push(port);
    }
    let cfg = TempFile(unique_temp_path("tcp-example", ".toml"));
    std::fs::write(&cfg.0, text).expect("write config");
    let demo = crate::support::ops::Demo::start(&cfg.0, "stream");
    let addr = demo.addr;
    let answered: Vec<u16> = (0..8)
        .map(|_| {
            let r = get(addr, "/");
            assert_eq!(r.status, 200, "{}", r.raw_head);
            let text = r.text();
            let id = text.strip_prefix("hello from a lightweight container. App ID = ").expect("a demo answer");
            id.trim().parse().expect("App ID")
        })
        .collect();
    let start = ports.iter().position(|p| *p == answered[0]).expect("a demo backend answered");
    let want: Vec<u16> = (0..8).map(|i| ports[(start + i) % 4]).collect();
    assert_eq!(answered, want, "the four servers in turn, at layer 4");
}

/// A graceful stop lets an open TCP relay finish, as it lets an HTTP
/// request finish: the listener closes at once, the relay keeps working
/// past the stop's linger (1 s), and the process exits once it ends.
#[test]
fn a_graceful_stop_lets_an_open_relay_finish() {
    let a = TcpBackend::start("a");
    let mut p = Proxy::start(&l4_config(&addrs(&[&a]), "", &[], ""));
    let l4 = p.addr("l4");
    let mut s = connect_from(None, l4);
    assert_eq!(read_line(&mut s).expect("greeting"), "a");
    p.signal(libc::SIGTERM);
    assert!(crate::support::ops::refused_within(l4, Duration::from_secs(2)), "the listener still accepts");
    std::thread::sleep(Duration::from_millis(1500));
    assert!(p.try_exit().is_none(), "the proxy exited under an open relay");
    s.write_all(b"still here").expect("write after the stop");
    let mut echo = [0u8; 10];
    s.read_exact(&mut echo).expect("the echo after the stop");
    assert_eq!(&echo, b"still here");
    s.shutdown(Shutdown::Write).expect("half-close");
    let rest = read_all(&mut s).expect("bye");
    assert_eq!(String::from_utf8_lossy(&rest), "a bye 10\n");
    let status = p.wait_exit(Duration::from_secs(5)).expect("the proxy exits once the relay ended");
    assert!(status.success(), "{status:?}");
}
