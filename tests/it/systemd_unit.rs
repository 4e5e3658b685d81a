//! The systemd files in `examples/` (issue 12): the unit verifies with
//! `systemd-analyze`, its user and directories are created by something,
//! `RUST_LOG` does not override the config, and log rotation signals the
//! main process only.

use std::path::Path;
use std::process::Command;

fn example(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `key=value` lines of a unit file, comments skipped.
fn settings(unit: &str) -> Vec<(String, String)> {
    unit.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.starts_with(';'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn setting<'a>(s: &'a [(String, String)], key: &str) -> Vec<&'a str> {
    s.iter().filter(|(k, _)| k == key).map(|(_, v)| v.as_str()).collect()
}

#[test]
fn the_unit_creates_what_it_needs_and_leaves_the_log_level_to_the_config() {
    let unit = example("ringway.service");
    let s = settings(&unit);
    assert!(setting(&s, "Environment").iter().all(|v| !v.contains("RUST_LOG")), "RUST_LOG would override log_level");
    assert_eq!(setting(&s, "LogsDirectory"), ["ringway"], "nothing else creates /var/log/ringway");
    assert!(setting(&s, "ReadWritePaths").is_empty(), "a path the unit does not create fails at start");
    // The user the unit names is the one the sysusers snippet creates.
    let user = setting(&s, "User");
    assert_eq!(user, ["ringway"]);
    let sysusers = example("ringway.sysusers");
    let created: Vec<&str> =
        sysusers.lines().filter(|l| l.starts_with("u ")).filter_map(|l| l.split_whitespace().nth(1)).collect();
    assert_eq!(created, user, "examples/ringway.sysusers must create the unit's user");
}

#[test]
fn log_rotation_signals_the_main_process_only() {
    let rotate = example("ringway.logrotate");
    assert!(!rotate.contains("pidof") && !rotate.contains("killall"), "{rotate}");
    assert!(rotate.contains("systemctl kill -s USR1 --kill-whom=main ringway.service"), "{rotate}");
    let ops = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/operations.md")).expect("docs");
    assert!(!ops.contains("$(pidof ringway)"), "docs/operations.md still signals every ringway");
}

#[test]
fn systemd_analyze_verifies_the_unit_with_the_binary_installed() {
    let unit = example("ringway.service").replace("/usr/local/bin/ringway", env!("CARGO_BIN_EXE_ringway"));
    let dir = std::env::temp_dir().join(format!("ringway-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("ringway.service");
    std::fs::write(&path, unit).expect("write unit");
    let out = match Command::new("systemd-analyze").arg("verify").arg(&path).output() {
        Ok(out) => out,
        Err(e) => {
            // Debian's systemd package has it; say so rather than pass quietly.
            let _ = std::fs::remove_dir_all(&dir);
            panic!("systemd-analyze not runnable ({e}): install systemd to verify the unit");
        }
    };
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify failed:\n{stderr}");
    let ours: Vec<&str> = stderr.lines().filter(|l| l.contains("ringway.service")).collect();
    assert!(ours.is_empty(), "systemd-analyze warns about the unit:\n{}", ours.join("\n"));
}
