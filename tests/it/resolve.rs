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

/// Maps a name to an address in /etc/hosts until dropped. The file is
/// shared with every other process on the machine, other checkouts running
/// this same test included, so an edit never writes back a snapshot: it
/// rewrites only this name's line in the file as it is now, under a lock
/// file that every copy of this helper takes.
struct HostsEntry {
    name: String,
}

const HOSTS: &str = "/etc/hosts";

impl HostsEntry {
    fn set(ip: &str, name: &str) -> Option<HostsEntry> {
        let entry = HostsEntry { name: name.to_string() };
        entry.point(ip).then_some(entry)
    }

    /// Points the name at `ip`; a no-op when the file already says so.
    fn point(&self, ip: &str) -> bool {
        edit_hosts(&self.name, Some(ip))
    }
}

impl Drop for HostsEntry {
    fn drop(&mut self) {
        edit_hosts(&self.name, None);
    }
}

/// Replaces the /etc/hosts line for `name` by `ip name` (none: removes it).
fn edit_hosts(name: &str, ip: Option<&str>) -> bool {
    let Ok(lock) = std::fs::File::create(std::env::temp_dir().join("ringway-test-etc-hosts.lock")) else {
        return false;
    };
    if lock.lock().is_err() {
        return false;
    }
    let Ok(current) = std::fs::read_to_string(HOSTS) else {
        return false;
    };
    let mut lines: Vec<String> =
        current.lines().filter(|l| !l.split_whitespace().skip(1).any(|n| n == name)).map(str::to_string).collect();
    lines.extend(ip.map(|ip| format!("{ip} {name}")));
    let text = lines.join("\n") + "\n";
    text == current || std::fs::write(HOSTS, text).is_ok()
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
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut last = String::new();
    while Instant::now() < deadline {
        // Again on every round: another process that restored an older copy
        // of /etc/hosts (an older copy of this test) may have undone it.
        assert!(hosts.point("127.0.0.3"));
        last = get(proxy.addr("public"), "/").text();
        if last == "second\n" {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(last, "second\n", "the new address was not picked up");
}
