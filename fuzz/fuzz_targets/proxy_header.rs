#![no_main]

use libfuzzer_sys::fuzz_target;

// The property checks live in one file shared with tests/it/fuzz_regressions.rs.
#[allow(dead_code)]
mod props {
    include!("../props.rs");
}

fuzz_target!(|data: &[u8]| props::check_proxy_header(data));
