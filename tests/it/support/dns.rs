//! A small authoritative DNS server for the discovery tests, on a loopback
//! UDP port: it answers A, AAAA and SRV queries from a table that the test
//! changes while the proxy runs, and can be told to stop answering (queries
//! are then read and dropped, as with a name server that is down).
//! Messages are decoded and encoded with hickory-proto, which ringway
//! depends on through hickory-resolver.

use hickory_resolver::proto::op::{Message, ResponseCode};
use hickory_resolver::proto::rr::rdata::{A, AAAA, SRV};
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// TTL of every record, in seconds: short, so that refreshes follow the
/// test's changes.
pub const TTL: u32 = 1;

#[derive(Default)]
struct Table {
    /// By name (lower case, without the final dot).
    records: HashMap<String, Vec<RData>>,
    /// Read queries and answer none.
    silent: bool,
}

/// The DNS server; it stops when dropped.
pub struct DnsServer {
    addr: SocketAddr,
    table: Arc<Mutex<Table>>,
    stop: Arc<AtomicBool>,
}

fn key(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

impl DnsServer {
    /// Starts it on 127.0.0.1 and an ephemeral port, with no record.
    pub fn start() -> DnsServer {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind the DNS server");
        socket.set_read_timeout(Some(Duration::from_millis(50))).expect("read timeout");
        let server = DnsServer {
            addr: socket.local_addr().expect("DNS server address"),
            table: Arc::default(),
            stop: Arc::default(),
        };
        let (table, stop) = (Arc::clone(&server.table), Arc::clone(&server.stop));
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !stop.load(Ordering::SeqCst) {
                let Ok((n, from)) = socket.recv_from(&mut buf) else { continue };
                let Ok(query) = Message::from_vec(&buf[..n]) else { continue };
                if let Some(reply) = answer(&table.lock().expect("lock"), &query) {
                    let _ = socket.send_to(&reply, from);
                }
            }
        });
        server
    }

    /// A `[dns]` table that sends ringway's queries here, with a short
    /// timeout so that a silent server fails fast.
    pub fn config(&self) -> String {
        format!("[dns]\nnameservers = [\"{}\"]\ntimeout = \"200ms\"\n", self.addr)
    }

    /// Replaces the A and AAAA records of `name` by `ips` (none: the name
    /// is gone, queries get NXDOMAIN).
    pub fn set_addrs(&self, name: &str, ips: &[&str]) {
        let data = ips.iter().map(|ip| match ip.parse::<IpAddr>().expect("an IP address") {
            IpAddr::V4(v4) => RData::A(A(v4)),
            IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
        });
        self.set(name, &[RecordType::A, RecordType::AAAA], data.collect());
    }

    /// Replaces the SRV records of `name` by `(priority, weight, port,
    /// target)` each.
    pub fn set_srv(&self, name: &str, targets: &[(u16, u16, u16, &str)]) {
        let data = targets.iter().map(|&(priority, weight, port, target)| {
            let target = Name::from_ascii(format!("{}.", key(target))).expect("a target name");
            RData::SRV(SRV::new(priority, weight, port, target))
        });
        self.set(name, &[RecordType::SRV], data.collect());
    }

    fn set(&self, name: &str, types: &[RecordType], data: Vec<RData>) {
        let mut table = self.table.lock().expect("lock");
        let records = table.records.entry(key(name)).or_default();
        records.retain(|r| !types.contains(&r.record_type()));
        records.extend(data);
        if records.is_empty() {
            table.records.remove(&key(name));
        }
    }

    /// Stops answering (`true`) or answers again.
    pub fn set_silent(&self, silent: bool) {
        self.table.lock().expect("lock").silent = silent;
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// The reply to `query` from `table`, encoded; `None` while silent.
fn answer(table: &Table, query: &Message) -> Option<Vec<u8>> {
    if table.silent {
        return None;
    }
    let mut reply = Message::response(query.metadata.id, query.metadata.op_code);
    reply.metadata.authoritative = true;
    reply.metadata.recursion_desired = query.metadata.recursion_desired;
    reply.add_queries(query.queries.iter().cloned());
    if let Some(q) = query.queries.first() {
        match table.records.get(&key(&q.name.to_ascii())) {
            None => reply.metadata.response_code = ResponseCode::NXDomain,
            Some(records) => {
                for data in records.iter().filter(|d| d.record_type() == q.query_type) {
                    reply.add_answer(Record::from_rdata(q.name.clone(), TTL, data.clone()));
                }
            }
        }
    }
    reply.to_vec().ok()
}
