//! Host-name servers: resolved at start, and again every `resolve_every`
//! without a reload. The name is added to /etc/hosts for the test (which
//! needs root, as in CI; elsewhere the test says so and passes vacuously
//! only after printing why).

use crate::support::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

/// A one-line HTTP server on `ip:port` answering its own name.
fn named_server(ip: [u8; 4], port: u16, name: &'static str) -> Option<SocketAddr> {
    let l = TcpListener::bind(SocketAddr::from((ip, port))).ok()?;
    let addr = l.local_addr().ok()?;
    std::thread::spawn(move || {
        for stream in l.incoming().take(200) {
            let Ok(mut s) = stream else { continue };
            std::thread::spawn(move || {
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let mut buf = [0u8; 4096];
                let mut got = Vec::new();
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 {
                        return;
                    }
                    got.extend_from_slice(&buf[..n]);
                    while let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                        got.drain(..end + 4);
                        let body = format!("{name}\n");
                        let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len());
                        if s.write_all(head.as_bytes()).is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    Some(addr)
}

/// Puts `ip name` into /etc/hosts until dropped.
struct HostsEntry {
    original: String,
}

impl HostsEntry {
    fn set(ip: &str, name: &str) -> Option<HostsEntry> {
        let original = std::fs::read_to_string("/etc/hosts").ok()?;
        let entry = HostsEntry { original };
        entry.point(ip, name).then_some(entry)
    }

    fn point(&self, ip: &str, name: &str) -> bool {
        std::fs::write("/etc/hosts", format!("{}\n{ip} {name}\n", self.original.trim_end())).is_ok()
    }
}

impl Drop for HostsEntry {
    fn drop(&mut self) {
        let _ = std::fs::write("/etc/hosts", &self.original);
    }
}

#[test]
fn a_host_name_is_resolved_again_without_a_reload() {
    let name = format!("ringway-resolve-test-{}.internal", std::process::id());
    let Some(a) = named_server([127, 0, 0, 2], 0, "first") else {
        eprintln!("skipped: cannot bind 127.0.0.2");
        return;
    };
    let Some(_b) = named_server([127, 0, 0, 3], a.port(), "second") else {
        eprintln!("skipped: cannot bind 127.0.0.3:{}", a.port());
        return;
    };
    let Some(hosts) = HostsEntry::set("127.0.0.2", &name) else {
        eprintln!("skipped: /etc/hosts is not writable (needs root)");
        return;
    };
    let proxy = Proxy::start(&format!(
        r#"{RUNTIME}
[upstreams.named]
servers = ["{name}:{port}"]
resolve_every = "200ms"

[[listeners]]
name = "public"
bind = "127.0.0.1:0"
routes = [ {{ prefix = "/", upstream = "named" }} ]
"#,
        port = a.port()
    ));
    assert_eq!(get(proxy.addr("public"), "/").text(), "first\n");
    assert!(hosts.point("127.0.0.3", &name));
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut last = String::new();
    while Instant::now() < deadline {
        last = get(proxy.addr("public"), "/").text();
        if last == "second\n" {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(last, "second\n", "the new address was not picked up");
}
