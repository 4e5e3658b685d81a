//! A reload applies the settings that live outside the config snapshot
//! (issue 12): the access log's file and format, the admin listener's
//! address and the log level; and it names the `[runtime]` settings that
//! wait for a restart, in the log and in the `POST /reload` answer. Each
//! against a real `ringway` process.

use crate::support::ops::*;
use crate::support::*;
use std::net::SocketAddr;
use std::path::Path;

/// A config: `[runtime]` with two workers at `log_level` plus
/// `runtime_extra`, the admin API on `admin`, upstream `a` = `server`,
/// listener `public` routing `/` to it (or answering 403 with `forbid`),
/// and `more` appended.
struct Settings<'a> {
    log_level: &'a str,
    runtime_extra: &'a str,
    admin: String,
    server: SocketAddr,
    forbid: bool,
    more: String,
}

impl Settings<'_> {
    fn new(server: SocketAddr) -> Settings<'static> {
        Settings {
            log_level: "info",
            runtime_extra: "",
            admin: "127.0.0.1:0".into(),
            server,
            forbid: false,
            more: String::new(),
        }
    }

    fn toml(&self) -> String {
        let route =
            if self.forbid { r#"{ prefix = "/", status = 403 }"# } else { r#"{ prefix = "/", upstream = "a" }"# };
        format!(
            "[runtime]\nthreads = 2\nlog_level = \"{}\"\n{}\n\n[admin]\nbind = \"{}\"\n\n[upstreams.a]\nservers = [\"{}\"]\n\n[[listeners]]\nname = \"public\"\nbind = \"127.0.0.1:0\"\nroutes = [ {route} ]\n{}",
            self.log_level, self.runtime_extra, self.admin, self.server, self.more
        )
    }
}

fn access_log(path: &Path, format: &str) -> String {
    format!("\n[access_log]\npath = \"{}\"\nformat = \"{format}\"\n", path.display())
}

/// `POST /reload` on the admin listener at `admin`: the JSON answer of an
/// accepted reload.
fn reload_at(admin: SocketAddr) -> serde_json::Value {
    let r = admin_post_to(admin, "/reload");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    let doc: serde_json::Value = serde_json::from_slice(&r.body).expect("/reload answers JSON");
    assert_eq!(doc["reloaded"], true, "{doc}");
    doc
}

fn reload(p: &Proxy) -> serde_json::Value {
    reload_at(p.admin_addr())
}

#[test]
fn reload_turns_the_access_log_on_moves_it_and_turns_it_off() {
    let b = RecordingBackend::echo_id("a");
    let (first, second) = (TempFile::new("reload-first"), TempFile::new("reload-second"));
    let mut s = Settings::new(b.addr());
    let p = Proxy::start(&s.toml());
    let public = p.addr("public");
    assert_eq!(get(public, "/before").status, 200);

    // Off at start, on after the reload: the writer starts then.
    s.more = access_log(&first.0, "combined");
    p.rewrite_config(&s.toml());
    let doc = reload(&p);
    assert_eq!((&doc["restart_required"], &doc["warnings"]), (&serde_json::json!([]), &serde_json::json!([])));
    assert_eq!(get(public, "/one").status, 200);
    let lines = wait_log_lines(&first.0, 1);
    assert!(lines[0].contains("\"GET /one HTTP/1.1\" 200"), "{lines:?}");

    // A new path: new lines go there, the old file keeps what it had.
    s.more = access_log(&second.0, "combined");
    p.rewrite_config(&s.toml());
    reload(&p);
    assert_eq!(get(public, "/two").status, 200);
    let lines = wait_log_lines(&second.0, 1);
    assert!(lines[0].contains("\"GET /two HTTP/1.1\" 200"), "{lines:?}");
    assert_eq!(read_lines(&first.0).len(), 1, "the old file got a line after the move");
    assert!(p.stderr().contains(&format!("access log now goes to \"{}\"", second.0.display())), "{}", p.stderr());

    // Off again.
    s.more = String::new();
    p.rewrite_config(&s.toml());
    reload(&p);
    assert_eq!(get(public, "/three").status, 200);
    wait_log_lines(&second.0, 1);
    assert_eq!(read_lines(&first.0).len(), 1);
}

#[test]
fn reload_changes_the_access_log_format() {
    let b = RecordingBackend::echo_id("a");
    let log = TempFile::new("reload-format");
    let mut s = Settings::new(b.addr());
    s.more = access_log(&log.0, "combined");
    let p = Proxy::start(&s.toml());
    let mut c = Client::connect(p.addr("public"));
    assert_eq!(c.get("/combined").status, 200);
    wait_log_lines(&log.0, 1);

    s.more = access_log(&log.0, "json");
    p.rewrite_config(&s.toml());
    reload(&p);
    // The same keep-alive connection: its next request is logged the new way.
    assert_eq!(c.get("/json").status, 200);
    let lines = wait_log_lines(&log.0, 2);
    assert!(lines[0].starts_with("127.0.0.1 - - [") && lines[0].contains("\"GET /combined HTTP/1.1\""), "{lines:?}");
    let v: serde_json::Value = serde_json::from_str(&lines[1]).unwrap_or_else(|e| panic!("{e}: {}", lines[1]));
    assert_eq!((&v["method"], &v["target"], &v["status"]), (&"GET".into(), &"/json".into(), &200.into()));
}

#[test]
fn reload_moves_the_admin_listener() {
    let b = RecordingBackend::echo_id("a");
    let mut s = Settings::new(b.addr());
    let p = Proxy::start(&s.toml());
    let old = p.admin_addr();
    let moved = SocketAddr::from(([127, 0, 0, 1], free_port()));
    s.admin = moved.to_string();
    p.rewrite_config(&s.toml());

    // Asked on the old address; the answer still comes back on it.
    let doc = reload_at(old);
    assert_eq!(doc["admin"], moved.to_string(), "{doc}");
    assert_eq!(doc["warnings"], serde_json::json!([]), "{doc}");
    let h = request(moved, b"GET /health HTTP/1.1\r\nHost: admin\r\n\r\n");
    assert_eq!((h.status, h.text().as_str()), (200, "ok\n"));
    assert!(refused_within(old, SETTLE), "the old admin address still accepts connections");
    assert!(p.stderr().contains(&format!("admin API now on {moved}")), "{}", p.stderr());
}

#[test]
fn an_admin_bind_that_fails_keeps_the_old_listener_and_says_why() {
    let b = RecordingBackend::echo_id("a");
    let mut s = Settings::new(b.addr());
    let p = Proxy::start(&s.toml());
    let old = p.admin_addr();
    // Freed below: on a port that no other test can be given meanwhile.
    let taken = fixed_port_listener();
    let wanted = taken.local_addr().expect("addr");
    s.admin = wanted.to_string();
    s.forbid = true;
    p.rewrite_config(&s.toml());

    let doc = reload_at(old);
    assert_eq!(doc["admin"], old.to_string(), "{doc}");
    let warnings = doc["warnings"].as_array().expect("warnings");
    assert_eq!(warnings.len(), 1, "{doc}");
    let warning = warnings[0].as_str().expect("text");
    assert!(warning.starts_with(&format!("admin.bind: cannot listen on {wanted} (")), "{warning}");
    assert!(warning.ends_with(&format!("; the admin API stays on {old}")), "{warning}");
    assert!(p.wait_stderr(warning, SETTLE), "the log lacks {warning:?}:\n{}", p.stderr());
    assert_eq!(admin_get(&p, "/health").status, 200, "the old admin listener keeps answering");
    assert_eq!(get(p.addr("public"), "/x").status, 403, "the rest of the reload applied");

    // Once the address is free, the next reload of the same file moves it.
    drop(taken);
    let doc = reload_at(old);
    assert_eq!((&doc["admin"], &doc["warnings"]), (&wanted.to_string().into(), &serde_json::json!([])));
    assert_eq!(request(wanted, b"GET /health HTTP/1.1\r\nHost: admin\r\n\r\n").status, 200);
    assert!(refused_within(old, SETTLE));
}

#[test]
fn reload_names_the_runtime_settings_that_need_a_restart() {
    let b = RecordingBackend::echo_id("a");
    let mut s = Settings::new(b.addr());
    let p = Proxy::start(&s.toml());
    s.runtime_extra = "threads = 3\nring_entries = 512\nread_buffer = 32768\nshutdown_timeout = \"5s\"";
    // `threads = 3` after `threads = 2` would be a duplicate key.
    let text = s.toml().replacen("threads = 2\n", "", 1);
    p.rewrite_config(&text);
    let doc = reload(&p);
    // read_buffer and shutdown_timeout apply on reload: not listed.
    assert_eq!(doc["restart_required"], serde_json::json!(["runtime.threads", "runtime.ring_entries"]), "{doc}");
    for needle in [
        "reload: runtime.threads = 3 applies at the next start; running with 2",
        "reload: runtime.ring_entries = 512 applies at the next start; running with 1024",
    ] {
        assert!(p.wait_stderr(needle, SETTLE), "the log lacks {needle:?}:\n{}", p.stderr());
    }
    let workers =
        serde_json::from_slice::<serde_json::Value>(&admin_get(&p, "/status").body).expect("JSON")["workers"].clone();
    assert_eq!(workers, 2, "still two workers");

    // Still not applied, so a SIGHUP reload says so again.
    p.rewrite_config(&text.replace("threads = 3", "threads = 4"));
    p.signal(libc::SIGHUP);
    let needle = "reload: runtime.threads = 4 applies at the next start; running with 2";
    assert!(p.wait_stderr(needle, SETTLE), "the log lacks {needle:?}:\n{}", p.stderr());
}

#[test]
fn reload_changes_the_log_level() {
    let b = RecordingBackend::echo_id("a");
    let mut s = Settings::new(b.addr());
    s.log_level = "warn";
    // RUST_LOG, when set, overrides log_level at start and on reload.
    let p = Proxy::start_without_env(&s.toml(), &["RUST_LOG"]);
    reload(&p);
    assert!(!p.stderr().contains("config reloaded"), "info lines at warn level:\n{}", p.stderr());
    s.log_level = "info";
    p.rewrite_config(&s.toml());
    reload(&p);
    assert!(p.wait_stderr("config reloaded (admin API)", SETTLE), "the new level did not apply:\n{}", p.stderr());
}
