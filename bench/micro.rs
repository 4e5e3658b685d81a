//! Micro-benchmarks of the per-request hot paths, so a regression shows up
//! without a full load test: head scanning, request parsing and upstream
//! head writing, chunked decoding, path normalization, route lookup, the
//! balancer's pick and metrics recording.
//!
//! `cargo bench --bench micro` runs them all (about two minutes);
//! `cargo bench --bench micro -- route` runs those whose name contains
//! "route". Criterion keeps the last run in `target/criterion` and prints the
//! change against it. Wall time on a shared machine is noisy: compare runs
//! taken back to back, and see docs/benchmarking.md ("Where the time goes")
//! for instruction counts of the whole request path.

// A bench has no API to document; `criterion_group!` defines a `pub fn`
// that cannot take a doc comment.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ringway::config::{Config, HttpPolicy, Route, MAX_HEADERS_CEILING};
use ringway::http::chunked::{ChunkStep, ChunkedDecoder};
use ringway::http::head::HeadScanner;
use ringway::http::path::normalize_path;
use ringway::http::request;
use ringway::metrics::{RouteLabels, WorkerMetrics};
use ringway::router::Router;
use std::hint::black_box;
use std::mem::MaybeUninit;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// What `curl` and `wrk` send.
const CURL_HEAD: &[u8] =
    b"GET /app1/index.html HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n";

/// A browser navigation with cookies: 651 bytes, 11 fields.
const BROWSER_HEAD: &[u8] = b"GET /app2/catalog/items?page=2&sort=price HTTP/1.1\r\n\
Host: shop.example.com\r\n\
Connection: keep-alive\r\n\
Upgrade-Insecure-Requests: 1\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36\r\n\
Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8\r\n\
Referer: https://shop.example.com/app2/catalog/items?page=1\r\n\
Accept-Encoding: gzip, deflate, br\r\n\
Accept-Language: en-US,en;q=0.9,de;q=0.8\r\n\
Cookie: session=9f86d081884c7d659a2feaa0c55ad015; cart=a3f2c1e4b5d6; theme=dark; _ga=GA1.2.1234567890.1700000000\r\n\
X-Forwarded-For: 203.0.113.7\r\n\
Cache-Control: max-age=0\r\n\r\n";

/// The seed routes (examples/seed.toml) with one upstream per balance mode
/// appended, so the same snapshot serves router and balancer benchmarks.
fn seed_config() -> Config {
    let mut text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/seed.toml"))
        .expect("examples/seed.toml is readable");
    let servers = r#"["127.0.0.1:2222", "127.0.0.1:3333", "127.0.0.1:4444", "127.0.0.1:5555"]"#;
    for mode in ["round_robin", "least_conn", "random_two"] {
        text.push_str(&format!("\n[upstreams.{mode}]\nservers = {servers}\nbalance = \"{mode}\"\n"));
    }
    text.push_str(
        "\n[upstreams.weighted_round_robin]\nbalance = \"weighted_round_robin\"\nservers = [\n  \
         { addr = \"127.0.0.1:2222\", weight = 5 }, { addr = \"127.0.0.1:3333\", weight = 2 },\n  \
         { addr = \"127.0.0.1:4444\" }, { addr = \"127.0.0.1:5555\" },\n]\n",
    );
    text.push_str(&format!("\n[upstreams.hash]\nservers = {servers}\nbalance = \"hash\"\nhash_key = \"client_ip\"\n"));
    Config::parse(Path::new("bench-seed.toml"), &text).expect("bench seed config is valid")
}

/// 50 routes the shape an API gateway has: versions, resources, static
/// trees, a few deep prefixes.
fn fifty_route_router() -> Router<usize> {
    let mut prefixes = vec!["/".to_string()];
    for v in 1..=3 {
        for res in ["users", "orders", "items", "carts", "payments", "search", "reviews", "stock", "auth", "events"] {
            prefixes.push(format!("/api/v{v}/{res}"));
        }
    }
    for p in [
        "/static",
        "/static/js",
        "/static/css",
        "/static/img",
        "/assets",
        "/media",
        "/app1",
        "/app2",
        "/admin",
        "/admin/users",
        "/health",
        "/metrics",
        "/login",
        "/logout",
        "/account",
        "/account/orders",
        "/docs",
        "/blog",
        "/api/v1/users/me",
    ] {
        prefixes.push(p.to_string());
    }
    assert_eq!(prefixes.len(), 50);
    let mut r = Router::new();
    for (i, p) in prefixes.iter().enumerate() {
        r.insert(p, i).expect("distinct valid prefix");
    }
    r
}

fn head_scan(c: &mut Criterion) {
    let mut g = c.benchmark_group("head_scan");
    for (name, head) in [("curl", CURL_HEAD), ("browser", BROWSER_HEAD)] {
        g.throughput(Throughput::Bytes(head.len() as u64));
        g.bench_function(name, |b| {
            let mut s = HeadScanner::default();
            b.iter(|| s.scan(black_box(head), 16 * 1024))
        });
    }
    // The same head arriving in 64-byte reads, scanned once per read.
    g.throughput(Throughput::Bytes(BROWSER_HEAD.len() as u64));
    g.bench_function("browser_in_64b_reads", |b| {
        let mut s = HeadScanner::default();
        b.iter(|| {
            s.reset();
            let mut end = 0;
            loop {
                end = (end + 64).min(BROWSER_HEAD.len());
                if let Ok(Some(n)) = s.scan(black_box(&BROWSER_HEAD[..end]), 16 * 1024) {
                    break n;
                }
            }
        })
    });
    g.finish();
}

fn request_parse(c: &mut Criterion) {
    let config = seed_config();
    let limits = config.limits;
    let client = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)).to_string();
    let mut g = c.benchmark_group("request");
    for (name, head) in [("curl", CURL_HEAD), ("browser", BROWSER_HEAD)] {
        g.throughput(Throughput::Bytes(head.len() as u64));
        g.bench_function(BenchmarkId::new("parse", name), |b| {
            let mut slots = [const { MaybeUninit::uninit() }; MAX_HEADERS_CEILING];
            b.iter(|| request::parse(black_box(head), &mut slots, &limits, HttpPolicy::defaults()).map(|r| r.head_len))
        });
        g.bench_function(BenchmarkId::new("parse_and_write_upstream_head", name), |b| {
            let mut slots = [const { MaybeUninit::uninit() }; MAX_HEADERS_CEILING];
            let mut out = Vec::with_capacity(1024);
            b.iter(|| {
                let req =
                    request::parse(black_box(head), &mut slots, &limits, HttpPolicy::defaults()).expect("valid head");
                request::write_upstream_head(
                    &req,
                    req.path,
                    &request::Forwarded::plain(client.as_bytes()),
                    HttpPolicy::defaults(),
                    &mut out,
                );
                out.len()
            })
        });
    }
    g.finish();
}

/// `payload` bytes in chunks of `chunk` bytes, then the last chunk.
fn chunked_body(payload: usize, chunk: usize) -> Vec<u8> {
    let mut body = Vec::with_capacity(payload + payload / chunk * 16 + 8);
    let mut left = payload;
    while left > 0 {
        let n = left.min(chunk);
        body.extend_from_slice(format!("{n:x}\r\n").as_bytes());
        body.extend(std::iter::repeat_n(b'x', n));
        body.extend_from_slice(b"\r\n");
        left -= n;
    }
    body.extend_from_slice(b"0\r\n\r\n");
    body
}

/// Decodes `body` handed over in reads of `read` bytes; returns the payload.
fn decode_all(body: &[u8], read: usize) -> u64 {
    let mut d = ChunkedDecoder::new(4096, 0);
    let mut pos = 0;
    let mut end = 0;
    loop {
        end = (end + read).min(body.len());
        loop {
            match d.decode(&body[pos..end]).expect("valid chunked body") {
                ChunkStep::NeedMore { consumed } => {
                    pos += consumed;
                    break;
                }
                ChunkStep::Data { end: e, .. } => {
                    black_box(&body[pos..pos + e]);
                    pos += e;
                }
                ChunkStep::Done { .. } => return d.payload_bytes(),
            }
        }
    }
}

fn chunked(c: &mut Criterion) {
    let mut g = c.benchmark_group("chunked_decode");
    for (name, chunk, read) in
        [("64KiB_4KiB_chunks_16KiB_reads", 4096, 16 * 1024), ("64KiB_64B_chunks_16KiB_reads", 64, 16 * 1024)]
    {
        let body = chunked_body(64 * 1024, chunk);
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_function(name, |b| b.iter(|| decode_all(black_box(&body), read)));
    }
    g.finish();
}

fn path(c: &mut Criterion) {
    let mut g = c.benchmark_group("normalize_path");
    for (name, p) in [
        ("root", &b"/"[..]),
        ("plain", b"/app1/static/js/main.3f2a1c.js"),
        ("dot_segments", b"/app1/./static/../static//js/./main.js"),
        ("escapes", b"/app2/caf%C3%A9/na%c3%afve%20menu/%7Euser/file%2Etxt"),
    ] {
        g.bench_function(name, |b| {
            let mut out = Vec::with_capacity(256);
            b.iter(|| normalize_path(black_box(p), &mut out).map(|()| out.len()))
        });
    }
    g.finish();
}

fn route(c: &mut Criterion) {
    let config = seed_config();
    let seed: &Router<Route> = &config.listeners[0].routes;
    let fifty = fifty_route_router();
    let mut g = c.benchmark_group("route_lookup");
    for (name, p) in [("root", &b"/"[..]), ("app1_deep", b"/app1/static/js/main.js"), ("miss_to_root", b"/favicon.ico")]
    {
        g.bench_function(BenchmarkId::new("seed", name), |b| b.iter(|| seed.lookup(black_box(p)).map(|(_, n)| n)));
    }
    for (name, p) in [
        ("root", &b"/"[..]),
        ("api_v2_orders_id", b"/api/v2/orders/12345"),
        ("api_v1_users_me_deep", b"/api/v1/users/me/settings/profile"),
        ("static_img", b"/static/img/logo.png"),
        ("miss_to_root", b"/favicon.ico"),
    ] {
        g.bench_function(BenchmarkId::new("fifty", name), |b| b.iter(|| fifty.lookup(black_box(p)).map(|(_, n)| n)));
    }
    g.finish();
}

fn balance(c: &mut Criterion) {
    let config = seed_config();
    let mut g = c.benchmark_group("balancer_plan");
    let modes = ["round_robin", "weighted_round_robin", "least_conn", "random_two", "hash"];
    // Then the two rotations again with one server drained: the path that
    // spreads its share over the others.
    for (mode, one_out) in
        modes.iter().map(|&m| (m, false)).chain([("round_robin", true), ("weighted_round_robin", true)])
    {
        let up = config.upstreams.iter().find(|u| &*u.name == mode).expect("bench upstream exists");
        up.servers[1].member.set_drained(one_out);
        let name = if one_out { format!("{mode}/one_out") } else { mode.to_string() };
        g.bench_function(name, |b| {
            let mut rng = 0x9E37_79B9_7F4A_7C15u64;
            let mut plan = Vec::with_capacity(16);
            let mut key = 0u64;
            b.iter(|| {
                key = key.wrapping_add(0x9E37_79B9_7F4A_7C15);
                up.plan(black_box(key), &mut rng, &mut plan);
                plan[0]
            })
        });
    }
    g.finish();
}

fn metrics(c: &mut Criterion) {
    let labels: Vec<Arc<RouteLabels>> = (0..4)
        .map(|i| {
            Arc::new(RouteLabels {
                listener: Arc::from("public"),
                route: Arc::from(format!("/r{i}")),
                upstream: Arc::from("allbackend"),
            })
        })
        .collect();
    let mut m = WorkerMetrics::default();
    let mut i = 0usize;
    c.bench_function("metrics_request", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            // Latencies spread over 100 µs - 6.5 ms so the histogram index varies.
            m.request(&labels[i % 4], 200, black_box(100 + (i as u64 * 37) % 6400));
        })
    });
}

fn config() -> Criterion {
    Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = micro;
    config = config();
    targets = head_scan, request_parse, chunked, path, route, balance, metrics
}
criterion_main!(micro);
