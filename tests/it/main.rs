//! The integration tests, as one test crate: `support` (the recording
//! backend, the proxy process, raw clients, fault backends and admin helpers)
//! compiles once, and each module below is one area of behaviour. Every test
//! starts its own proxy and backends on ephemeral loopback ports, so the tests
//! run in parallel threads of this one binary. Run one area with
//! `cargo test --test it routing::` (a module path filter).

mod support;

mod access_log_refusals;
mod balancing;
mod bodies;
mod cli;
mod dns_discovery;
mod drain;
mod edge_attacks;
mod forwarding;
mod fuzz_regressions;
mod graceful_stop;
mod http_chunked;
mod http_headers;
mod http_limits_timeouts;
mod http_request_framing;
mod http_response_framing;
mod http_upgrade;
mod layer4;
mod operations;
mod parking;
mod proxy_protocol;
mod reload_settings;
mod resilience;
mod resolve;
mod routing;
mod systemd_unit;
mod takeover;
mod tls;
mod tls_upstream;
mod topology;
