//! ringway: a thread-per-core io_uring HTTP/1.1 load balancer and reverse
//! proxy. `runtime` starts the workers; each accepted connection becomes a
//! `proxy::Session`, which parses with `http`, routes with `router`, and
//! forwards over `upstream` pools. `config` turns the TOML file into the
//! typed snapshot all of them read; `dns` resolves the names of servers
//! given by name or by SRV records, never on a worker.

// Denied here rather than in Cargo.toml's [lints] (see there). The few
// items that need `unsafe` allow it, each saying why.
#![deny(unsafe_code)]

pub mod access_log;
pub mod admin;
pub mod config;
pub mod conn;
pub mod demo_backend;
pub mod dns;
pub mod http;
pub mod io_buf;
pub mod logging;
pub mod metrics;
pub mod proxy;
pub mod proxy_protocol;
pub mod router;
pub mod runtime;
pub mod tcp_proxy;
pub mod tls;
pub mod upstream;
