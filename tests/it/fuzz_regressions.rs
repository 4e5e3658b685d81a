//! Fuzz regressions: replays the hand-written fuzz seeds (fuzz/seeds/<target>/)
//! and every minimized input the fuzzers found (fuzz/regressions/<target>/)
//! through the same property checks the fuzz targets run. The checks live in
//! fuzz/props.rs, shared with the targets; they call pure functions only (no
//! network), so this whole file runs in well under a second. See
//! docs/fuzzing.md.

use std::fs;
use std::panic;
use std::path::{Path, PathBuf};

mod props {
    include!("../../fuzz/props.rs");
}

/// fuzz/ of the main crate (also when this file is built by fuzz/Cargo.toml).
fn fuzz_dir() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    if root.join("fuzz/props.rs").is_file() {
        root.join("fuzz")
    } else {
        root.to_path_buf()
    }
}

/// Runs the checks of `target` on every file in `fuzz/<kind>/<target>/`;
/// fails listing every file that violates a property. Returns the count.
fn replay(kind: &str, target: &str) -> usize {
    let dir = fuzz_dir().join(kind).join(target);
    let mut files: Vec<PathBuf> = match fs::read_dir(&dir) {
        Ok(entries) => entries.map(|e| e.expect("directory entry").path()).filter(|p| p.is_file()).collect(),
        Err(_) => Vec::new(),
    };
    files.sort();
    let mut failed = Vec::new();
    for file in &files {
        let data = fs::read(file).expect("readable input");
        if panic::catch_unwind(|| props::check(target, &data)).is_err() {
            failed.push(file.display().to_string());
        }
    }
    assert!(failed.is_empty(), "{target}: property violated by {failed:#?} (see docs/fuzzing.md, Findings)");
    files.len()
}

fn run(target: &str) {
    assert!(replay("seeds", target) > 0, "no seeds for {target}");
    replay("regressions", target);
}

#[test]
fn request_head() {
    run("request_head");
}

#[test]
fn chunked() {
    run("chunked");
}

#[test]
fn path() {
    run("path");
}

#[test]
fn response_head() {
    run("response_head");
}

#[test]
fn proxy_header() {
    run("proxy_header");
}

#[test]
fn every_target_has_a_test() {
    assert_eq!(props::TARGETS, ["request_head", "chunked", "path", "response_head", "proxy_header"]);
    for target in props::TARGETS {
        assert!(fuzz_dir().join("seeds").join(target).is_dir(), "fuzz/seeds/{target}/ missing");
    }
}
