//! The command line: `ringway check` verdicts and messages, the hint
//! printed when `ringway` finds no config, each subcommand's help, and
//! `ringway demo --config`.

use crate::support::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Runs the binary to completion, killing it if it runs longer than 20 s.
fn run(args: &[&str], cwd: &Path) -> Output {
    let mut child = Command::new(bin())
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ringway");
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("ringway {args:?} did not exit within 20 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

struct TempConfig(PathBuf);

impl TempConfig {
    fn new(text: &str) -> TempConfig {
        let p = unique_temp_path("cli", ".toml");
        std::fs::write(&p, text).expect("write config");
        TempConfig(p)
    }
}

impl Drop for TempConfig {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `ringway check --config FILE`; returns (exit code, stdout, stderr).
fn check(path: &Path) -> (Option<i32>, String, String) {
    let out = run(&["check", "--config", path.to_str().expect("utf-8 path")], &std::env::temp_dir());
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// 1-based number of the first line containing `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l.contains(needle)).expect("needle in config") + 1
}

const GOOD: &str = r#"[upstreams.web]
servers = ["127.0.0.1:9"]

[[listeners]]
name = "public"
bind = "127.0.0.1:0"
routes = [
  { prefix = "/", upstream = "web" },
  { prefix = "/api", upstream = "MARK" },
]
"#;

#[test]
fn check_accepts_the_seed_config() {
    let seed = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/seed.toml");
    let (code, stdout, stderr) = check(&seed);
    assert_eq!(code, Some(0), "stdout: {stdout}\nstderr: {stderr}");
    assert_eq!(stdout.lines().count(), 1, "one line on stdout: {stdout:?}");
    assert!(stdout.contains("seed.toml"), "{stdout}");
}

/// `examples/tls.toml`, with the certificate its header tells how to make
/// next to it, passes `check`; without the files, `check` names the
/// missing one.
#[test]
fn check_accepts_the_tls_example_and_names_a_missing_certificate() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/tls.toml");
    let dir = unique_temp_path("tls-example", "d");
    std::fs::create_dir_all(&dir).expect("dir");
    let copy = dir.join("tls.toml");
    std::fs::copy(&example, &copy).expect("copy the example");
    let (code, _, stderr) = check(&copy);
    assert_eq!(code, Some(1), "no certificate yet: {stderr}");
    assert!(stderr.contains(&format!("{}", dir.join("site.pem").display())), "names the file: {stderr}");
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("certificate");
    std::fs::write(dir.join("site.pem"), ck.cert.pem()).expect("cert");
    std::fs::write(dir.join("site.key"), ck.key_pair.serialize_pem()).expect("key");
    let (code, stdout, stderr) = check(&copy);
    assert_eq!(code, Some(0), "stdout: {stdout}\nstderr: {stderr}");
    // A key that belongs to another certificate is refused, naming the key.
    let other = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("certificate");
    std::fs::write(dir.join("site.key"), other.key_pair.serialize_pem()).expect("key");
    let (code, _, stderr) = check(&copy);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("site.key") && stderr.contains("does not match"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn check_accepts_a_good_config() {
    let cfg = TempConfig::new(&GOOD.replace("MARK", "web"));
    let (code, stdout, stderr) = check(&cfg.0);
    assert_eq!(code, Some(0), "stdout: {stdout}\nstderr: {stderr}");
}

#[test]
fn check_names_file_line_and_key_of_an_unknown_upstream() {
    let text = GOOD.replace("MARK", "nosuchupstream");
    let cfg = TempConfig::new(&text);
    let (code, stdout, stderr) = check(&cfg.0);
    assert_eq!(code, Some(1), "stdout: {stdout}\nstderr: {stderr}");
    let line = line_of(&text, "nosuchupstream");
    let prefix = format!("{}:{line}:", cfg.0.display());
    assert!(stderr.starts_with(&prefix), "expected {prefix:?} at the start of {stderr:?}");
    assert!(stderr.contains("upstream"), "{stderr}");
    assert!(stderr.contains("nosuchupstream"), "{stderr}");
}

#[test]
fn check_names_an_unknown_key_and_its_line() {
    let text = "[upstreams.web]\nservers = [\"127.0.0.1:9\"]\nkeepalivee = 3\n\n[[listeners]]\nname = \"p\"\nbind = \"127.0.0.1:0\"\nroutes = [ { prefix = \"/\", upstream = \"web\" } ]\n";
    let cfg = TempConfig::new(text);
    let (code, stdout, stderr) = check(&cfg.0);
    assert_eq!(code, Some(1), "stdout: {stdout}\nstderr: {stderr}");
    let prefix = format!("{}:3:", cfg.0.display());
    assert!(stderr.starts_with(&prefix), "expected {prefix:?} at the start of {stderr:?}");
    assert!(stderr.contains("keepalivee"), "{stderr}");
}

#[test]
fn check_names_the_line_of_a_toml_syntax_error() {
    let text = "[runtime]\nthreads = 2\n\n[upstreams.web\nservers = [\"127.0.0.1:9\"]\n";
    let cfg = TempConfig::new(text);
    let (code, stdout, stderr) = check(&cfg.0);
    assert_eq!(code, Some(1), "stdout: {stdout}\nstderr: {stderr}");
    let prefix = format!("{}:4:", cfg.0.display());
    assert!(stderr.starts_with(&prefix), "expected {prefix:?} at the start of {stderr:?}");
}

#[test]
fn check_names_the_table_of_a_broken_header_not_the_one_above() {
    let text = "[timeouts]\nclient_header = \"5s\"\n[limits\nmax_headers = 10\n";
    let cfg = TempConfig::new(text);
    let (code, stdout, stderr) = check(&cfg.0);
    assert_eq!(code, Some(1), "stdout: {stdout}\nstderr: {stderr}");
    let prefix = format!("{}:3:8: key `limits`: invalid table header", cfg.0.display());
    assert!(stderr.starts_with(&prefix), "expected {prefix:?} at the start of {stderr:?}");
    assert!(!stderr.contains("timeouts"), "{stderr}");
}

#[test]
fn check_explains_a_duplicate_route_prefix_with_both_places() {
    // Duplicates once case and a trailing '/' are folded.
    let text = GOOD.replace("MARK", "web").replace("\"/\"", "\"/app1\"").replace("\"/api\"", "\"/App1/\"");
    let cfg = TempConfig::new(&text);
    let (code, stdout, stderr) = check(&cfg.0);
    assert_eq!(code, Some(1), "stdout: {stdout}\nstderr: {stderr}");
    let (first, second) = (line_of(&text, "\"/app1\""), line_of(&text, "\"/App1/\""));
    let expected = format!(
        "{}:{second}:14: key `listeners.routes.prefix`: route prefix \"/App1/\" duplicates \"/app1\" (line {first}, column 14)",
        cfg.0.display()
    );
    assert!(stderr.starts_with(&expected), "expected {expected:?} at the start of {stderr:?}");
    assert!(!stderr.contains("Duplicate("), "{stderr}");
}

#[test]
fn check_describes_a_wrong_type_in_toml_words() {
    let text = format!("[runtime]\nthreads = \"lots\"\n\n{}", GOOD.replace("MARK", "web"));
    let cfg = TempConfig::new(&text);
    let (code, stdout, stderr) = check(&cfg.0);
    assert_eq!(code, Some(1), "stdout: {stdout}\nstderr: {stderr}");
    let expected = format!("{}:2:11: key `runtime.threads`: expected a whole number, got \"lots\"\n", cfg.0.display());
    assert_eq!(stderr, expected);

    // A server table's own mistake, not "did not match any variant".
    let text = GOOD.replace("MARK", "web").replace("[\"127.0.0.1:9\"]", "[{ addr = \"127.0.0.1:9\", weight = \"x\" }]");
    let cfg = TempConfig::new(&text);
    let (code, _, stderr) = check(&cfg.0);
    assert_eq!(code, Some(1), "{stderr}");
    let expected =
        format!("{}:2:45: key `upstreams.web.servers.weight`: expected a whole number, got \"x\"\n", cfg.0.display());
    assert_eq!(stderr, expected);
}

#[test]
fn no_config_in_an_empty_directory_explains_how_to_start() {
    let dir = unique_temp_path("cli-empty", "");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let out = run(&[], &dir);
    let _ = std::fs::remove_dir_all(&dir);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "must fail without a config: {text}");
    assert!(text.contains("ringway demo"), "must say how to start: {text}");
    assert!(text.contains("--config"), "{text}");
}

/// `ringway ARGS --help` on stdout.
fn help(args: &[&str]) -> String {
    let mut all = args.to_vec();
    all.push("--help");
    let out = run(&all, &std::env::temp_dir());
    assert!(out.status.success(), "{all:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// The option line of `--config` in a help text.
fn config_help(text: &str) -> Option<String> {
    text.lines().find(|l| l.trim_start().starts_with("-c, --config")).map(str::to_string)
}

#[test]
fn each_subcommand_describes_its_own_config_flag() {
    let run_line = config_help(&help(&[])).expect("ringway --help lists --config");
    assert!(run_line.contains("run the proxy with"), "{run_line}");
    let check_line = config_help(&help(&["check"])).expect("check --help lists --config");
    assert!(check_line.contains("validate"), "{check_line}");
    assert!(!check_line.contains("run"), "check does not run anything: {check_line}");
    let demo_line = config_help(&help(&["demo"])).expect("demo --help lists --config");
    assert!(demo_line.contains("instead of the seed") && demo_line.contains("demo backend"), "{demo_line}");
    assert_eq!(config_help(&help(&["backend"])), None, "backend reads no config");

    // A flag before the subcommand would be read two ways: refused.
    let out = run(&["--config", "x.toml", "check"], &std::env::temp_dir());
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn demo_runs_the_given_config_with_backends_on_its_loopback_servers() {
    let port = crate::support::ops::free_port();
    let text = format!(
        "[runtime]\nthreads = 1\n\n[upstreams.web]\nservers = [\"127.0.0.1:{port}\"]\n\n[[listeners]]\nname = \"mine\"\nbind = \"127.0.0.1:0\"\nroutes = [ {{ prefix = \"/\", upstream = \"web\" }} ]\n"
    );
    let cfg = TempConfig::new(&text);
    let demo = crate::support::ops::Demo::start(&cfg.0, "mine");
    let addr = demo.addr;
    let r = get(addr, "/app1");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), format!("this is app1. App ID = {port}\n"), "answered by the demo backend on {port}");
}

#[test]
fn check_refuses_two_listeners_on_overlapping_addresses_naming_both() {
    let text = "[[listeners]]\nname = \"public\"\nbind = \"0.0.0.0:8080\"\n\n[[listeners]]\nname = \"internal\"\nbind = \"127.0.0.1:8080\"\nroutes = [ { prefix = \"/\", status = 204 } ]\n";
    let cfg = TempConfig::new(text);
    let (code, stdout, stderr) = check(&cfg.0);
    assert_eq!(code, Some(1), "stdout: {stdout}\nstderr: {stderr}");
    let expected = format!(
        "{}:7:8: key `listeners.bind`: listener \"internal\" binds 127.0.0.1:8080, which overlaps 0.0.0.0:8080 of listener \"public\" (line 3, column 8)",
        cfg.0.display()
    );
    assert!(stderr.starts_with(&expected), "expected {expected:?} at the start of {stderr:?}");

    let same = TempConfig::new(&text.replace("0.0.0.0:8080", "127.0.0.1:8080"));
    let (code, _, stderr) = check(&same.0);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("listener \"internal\" binds 127.0.0.1:8080, as listener \"public\" does (line 3, column 8)"),
        "{stderr}"
    );
}
