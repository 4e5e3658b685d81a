//! The access log line of a TCP-mode connection: one per connection,
//! written when it closes.

use super::{civil, clf_escape, json_string};
use crate::config::LogFormat;
use std::io::Write;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What the access log records of a TCP-mode connection.
pub struct TcpEntry<'a> {
    /// The client's address (from a PROXY header, if one came).
    pub client: SocketAddr,
    /// The listener that accepted it.
    pub listener: &'a str,
    /// The upstream it was balanced over.
    pub upstream: &'a str,
    /// The server it was relayed to; `None` if no connect succeeded.
    pub server: Option<SocketAddr>,
    /// Bytes the client sent.
    pub from_client: u64,
    /// Bytes sent to the client.
    pub to_client: u64,
    /// From accept to close.
    pub duration: Duration,
    /// How it ended: `closed`, `idle_timeout`, `no_server`, `error`.
    pub end: &'static str,
}

/// Appends one line in `format` to `out`. Combined: `CLIENT - - [TIME]
/// "TCP LISTENER" END TO_CLIENT FROM_CLIENT MS SERVER "UPSTREAM"`.
pub fn format_tcp(out: &mut Vec<u8>, format: LogFormat, e: &TcpEntry<'_>, now: SystemTime) {
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (y, mo, d, h, mi, s) = civil(secs);
    let ms = e.duration.as_secs_f64() * 1000.0;
    match format {
        LogFormat::Combined => {
            const MONTHS: [&str; 12] =
                ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
            let _ =
                write!(out, "{} - - [{d:02}/{}/{y}:{h:02}:{mi:02}:{s:02} +0000] \"TCP ", e.client.ip(), MONTHS[mo - 1]);
            clf_escape(out, e.listener.as_bytes());
            let _ = write!(out, "\" {} {} {} {ms:.3} ", e.end, e.to_client, e.from_client);
            match e.server {
                Some(a) => {
                    let _ = write!(out, "{a}");
                }
                None => out.push(b'-'),
            }
            out.extend_from_slice(b" \"");
            clf_escape(out, e.upstream.as_bytes());
            out.extend_from_slice(b"\"\n");
        }
        LogFormat::Json => {
            let _ = write!(
                out,
                "{{\"time\":\"{y}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z\",\"client\":\"{}\",\"mode\":\"tcp\",\"listener\":",
                e.client
            );
            json_string(out, e.listener.as_bytes());
            out.extend_from_slice(b",\"upstream\":");
            json_string(out, e.upstream.as_bytes());
            match e.server {
                Some(a) => {
                    let _ = write!(out, ",\"server\":\"{a}\"");
                }
                None => out.extend_from_slice(b",\"server\":null"),
            }
            let _ = writeln!(
                out,
                ",\"bytes_sent\":{},\"bytes_received\":{},\"duration_ms\":{ms:.3},\"end\":\"{}\"}}",
                e.to_client, e.from_client, e.end
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> TcpEntry<'static> {
        TcpEntry {
            client: "10.0.0.7:5555".parse().expect("addr"),
            listener: "pg",
            upstream: "pgpool",
            server: Some("127.0.0.1:5432".parse().expect("addr")),
            from_client: 100,
            to_client: 2000,
            duration: Duration::from_millis(1500),
            end: "closed",
        }
    }

    #[test]
    fn combined_and_json_lines() {
        let mut out = Vec::new();
        format_tcp(&mut out, LogFormat::Combined, &entry(), UNIX_EPOCH + Duration::from_secs(1_795_624_945));
        assert_eq!(
            String::from_utf8(out).expect("ascii"),
            "10.0.0.7 - - [25/Nov/2026:16:42:25 +0000] \"TCP pg\" closed 2000 100 1500.000 127.0.0.1:5432 \"pgpool\"\n"
        );
        let mut out = Vec::new();
        let mut e = entry();
        e.server = None;
        e.end = "no_server";
        format_tcp(&mut out, LogFormat::Json, &e, UNIX_EPOCH);
        let v: serde_json::Value = serde_json::from_slice(&out).expect("valid JSON");
        assert_eq!(
            (&v["server"], &v["end"], &v["bytes_sent"]),
            (&serde_json::Value::Null, &serde_json::json!("no_server"), &serde_json::json!(2000))
        );
    }
}
