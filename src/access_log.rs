//! Access logging off the request path: each worker formats lines into its
//! own buffer and hands full buffers (and whatever is left on every tick) to
//! one writer thread over a channel, so a worker never makes a blocking write
//! per request. SIGUSR1 makes the writer reopen its file for log rotation; a
//! reload can point it at another file, or turn it off or on.

use crate::config::{AccessLogConfig, LogFormat, LogTarget};
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::sync::mpsc::{self, Sender};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A worker hands its buffer over once it holds this many bytes.
pub const FLUSH_BYTES: usize = 32 * 1024;
/// The writer's own buffer in front of the file.
const WRITE_BUFFER_BYTES: usize = 64 * 1024;

type Output = io::BufWriter<Box<dyn Write + Send>>;

enum Message {
    Lines(Vec<u8>),
    Reopen,
    Flush(Sender<()>),
    /// From now on write to this output (already open), or to nothing.
    Switch(Option<(Output, LogTarget)>),
}

/// The writer thread as the rest of the process sees it.
struct Writer {
    tx: Sender<Message>,
    /// Where it writes now (`None`: logging was turned off by a reload).
    target: Option<LogTarget>,
}

fn writer() -> &'static Mutex<Option<Writer>> {
    static WRITER: OnceLock<Mutex<Option<Writer>>> = OnceLock::new();
    WRITER.get_or_init(|| Mutex::new(None))
}

fn open(target: &LogTarget) -> io::Result<Output> {
    let out: Box<dyn Write + Send> = match target {
        LogTarget::Stdout => Box::new(io::stdout()),
        LogTarget::File(path) => Box::new(OpenOptions::new().create(true).append(true).open(path)?),
    };
    Ok(io::BufWriter::with_capacity(WRITE_BUFFER_BYTES, out))
}

fn describe(target: &LogTarget) -> String {
    match target {
        LogTarget::Stdout => "stdout".to_owned(),
        LogTarget::File(path) => format!("{:?}", path.display().to_string()),
    }
}

/// Starts the writer thread (once per process). Fails if the file cannot be
/// opened, so a bad path is reported at start.
pub fn start(config: &AccessLogConfig) -> io::Result<()> {
    let mut slot = writer().lock().unwrap_or_else(|e| e.into_inner());
    if slot.is_none() {
        *slot = Some(spawn(open(&config.target)?, config.target.clone())?);
    }
    Ok(())
}

/// Points the access log at `config`'s target after a reload (the format is
/// each worker's business, see `runtime::worker`). The new file is opened
/// here, on the reloading thread, so a failure can be reported: the writer
/// then keeps its old target. Lines a worker still buffers (at most one
/// 20 ms tick's worth) may land in the new file.
pub fn retarget(config: Option<&AccessLogConfig>) -> Result<(), String> {
    let mut slot = writer().lock().unwrap_or_else(|e| e.into_inner());
    let running = slot.as_ref().and_then(|w| w.target.clone());
    let wanted = config.map(|c| c.target.clone());
    if running == wanted {
        return Ok(());
    }
    let Some(target) = wanted else {
        if let Some(w) = slot.as_mut() {
            let _ = w.tx.send(Message::Switch(None));
            w.target = None;
        }
        log::info!("reload: access log off");
        return Ok(());
    };
    let kept = match &running {
        Some(t) => format!("the access log stays on {}", describe(t)),
        None => "the access log stays off".to_owned(),
    };
    let out = open(&target).map_err(|e| format!("cannot open {} ({e}); {kept}", describe(&target)))?;
    match slot.as_mut() {
        Some(w) => {
            let _ = w.tx.send(Message::Switch(Some((out, target.clone()))));
            w.target = Some(target.clone());
        }
        None => *slot = Some(spawn(out, target.clone()).map_err(|e| format!("cannot start its writer ({e}); {kept}"))?),
    }
    log::info!("reload: access log now goes to {}", describe(&target));
    Ok(())
}

fn spawn(out: Output, target: LogTarget) -> io::Result<Writer> {
    let (tx, rx) = mpsc::channel::<Message>();
    let running = Some(target.clone());
    std::thread::Builder::new().name("ringway-log".into()).spawn(move || write_lines(rx, out, target))?;
    Ok(Writer { tx, target: running })
}

/// The writer thread: writes what workers hand over, in order, to its
/// current output.
fn write_lines(rx: mpsc::Receiver<Message>, out: Output, target: LogTarget) {
    let mut current = Some((out, target));
    while let Ok(msg) = rx.recv() {
        match msg {
            // Batches arrive at most once per worker tick, so flushing each
            // keeps the file current at little cost.
            Message::Lines(lines) => {
                if let Some((out, _)) = current.as_mut() {
                    if let Err(e) = out.write_all(&lines).and_then(|()| out.flush()) {
                        log::error!("access log write failed: {e}");
                    }
                }
            }
            Message::Reopen => {
                if let Some((out, target)) = current.as_mut() {
                    let _ = out.flush();
                    match open(target) {
                        Ok(f) => *out = f,
                        Err(e) => log::error!("access log reopen failed, keeping the old file: {e}"),
                    }
                }
            }
            Message::Flush(done) => {
                if let Some((out, _)) = current.as_mut() {
                    let _ = out.flush();
                }
                let _ = done.send(());
            }
            Message::Switch(next) => {
                if let Some((out, _)) = current.as_mut() {
                    let _ = out.flush();
                }
                current = next;
            }
        }
    }
    if let Some((out, _)) = current.as_mut() {
        let _ = out.flush();
    }
}

/// A worker's handle on the writer thread.
pub struct LogSender(Sender<Message>);

impl LogSender {
    /// Hands a buffer of complete lines to the writer (no syscall here).
    pub fn send(&self, lines: Vec<u8>) {
        let _ = self.0.send(Message::Lines(lines));
    }
}

/// A handle on the writer, for a worker; None until a writer was started.
pub fn sender() -> Option<LogSender> {
    writer().lock().unwrap_or_else(|e| e.into_inner()).as_ref().map(|w| LogSender(w.tx.clone()))
}

/// Asks the writer to reopen its file (SIGUSR1).
pub fn reopen() {
    if let Some(w) = writer().lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
        let _ = w.tx.send(Message::Reopen);
    }
}

/// Flushes what the writer holds (at exit).
pub fn shutdown() {
    let tx = writer().lock().unwrap_or_else(|e| e.into_inner()).as_ref().map(|w| w.tx.clone());
    if let Some(tx) = tx {
        let (done_tx, done_rx) = mpsc::channel();
        if tx.send(Message::Flush(done_tx)).is_ok() {
            let _ = done_rx.recv_timeout(Duration::from_secs(2));
        }
    }
}

/// What one request contributes to its log line.
pub struct Entry<'a> {
    /// The client's address.
    pub client: SocketAddr,
    /// Empty when not known: a request refused before its method (or
    /// target) was complete. Logged as `-` (combined) or `null` (JSON).
    pub method: &'a [u8],
    /// The request target as sent (path and query); empty when not known.
    pub target: &'a [u8],
    /// An HTTP/1.0 request (else HTTP/1.1).
    pub http10: bool,
    /// The status sent, or 499 when the client left before one was.
    pub status: u16,
    /// Response body bytes sent to the client.
    pub bytes: u64,
    /// From the request's first byte to the end of its answer.
    pub duration: Duration,
    /// The server that answered; `None` for a local answer.
    pub upstream: Option<SocketAddr>,
    /// The route prefix that matched, or `-`.
    pub route: &'a str,
    /// The `Referer` field; empty when absent.
    pub referer: &'a [u8],
    /// The `User-Agent` field; empty when absent.
    pub user_agent: &'a [u8],
    /// The TLS session, on a TLS listener.
    pub tls: Option<TlsFields<'a>>,
}

/// What the access log records of a TLS session (nginx's `$ssl_protocol`,
/// `$ssl_cipher`, `$ssl_server_name`).
#[derive(Debug, Clone, Copy)]
pub struct TlsFields<'a> {
    /// `TLSv1.3` or `TLSv1.2`.
    pub version: &'static str,
    /// The IANA name of the cipher suite.
    pub cipher: &'static str,
    /// The SNI name the client sent; empty without one.
    pub sni: &'a str,
}

/// Appends one line in `format` to `out`.
pub fn format(out: &mut Vec<u8>, format: LogFormat, e: &Entry<'_>, now: SystemTime) {
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let version = if e.http10 { "HTTP/1.0" } else { "HTTP/1.1" };
    let ms = e.duration.as_secs_f64() * 1000.0;
    match format {
        LogFormat::Combined => {
            let (y, mo, d, h, mi, s) = civil(secs);
            const MONTHS: [&str; 12] =
                ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
            let _ = write!(out, "{} - - [{d:02}/{}/{y}:{h:02}:{mi:02}:{s:02} +0000] \"", e.client.ip(), MONTHS[mo - 1]);
            // Empty: a refused request whose line did not say (see `Entry`).
            clf_escape(out, if e.method.is_empty() { b"-" } else { e.method });
            out.push(b' ');
            clf_escape(out, if e.target.is_empty() { b"-" } else { e.target });
            let _ = write!(out, " {version}\" {} {} \"", e.status, e.bytes);
            clf_escape(out, if e.referer.is_empty() { b"-" } else { e.referer });
            out.extend_from_slice(b"\" \"");
            clf_escape(out, if e.user_agent.is_empty() { b"-" } else { e.user_agent });
            let _ = write!(out, "\" {ms:.3} ");
            match e.upstream {
                Some(a) => {
                    let _ = write!(out, "{a}");
                }
                None => out.push(b'-'),
            }
            out.extend_from_slice(b" \"");
            clf_escape(out, e.route.as_bytes());
            out.push(b'"');
            // TLS listeners only: version, cipher suite, "SNI".
            if let Some(t) = &e.tls {
                let _ = write!(out, " {} {} \"", t.version, t.cipher);
                clf_escape(out, if t.sni.is_empty() { b"-" } else { t.sni.as_bytes() });
                out.push(b'"');
            }
            out.push(b'\n');
        }
        LogFormat::Json => {
            let (y, mo, d, h, mi, s) = civil(secs);
            let _ = write!(
                out,
                "{{\"time\":\"{y}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z\",\"client\":\"{}\",\"method\":",
                e.client
            );
            json_or_null(out, e.method);
            out.extend_from_slice(b",\"target\":");
            json_or_null(out, e.target);
            let _ = write!(
                out,
                ",\"protocol\":\"{version}\",\"status\":{},\"bytes\":{},\"duration_ms\":{ms:.3},\"upstream\":",
                e.status, e.bytes
            );
            match e.upstream {
                Some(a) => {
                    let _ = write!(out, "\"{a}\"");
                }
                None => out.extend_from_slice(b"null"),
            }
            out.extend_from_slice(b",\"route\":");
            json_string(out, e.route.as_bytes());
            out.extend_from_slice(b",\"referer\":");
            json_string(out, e.referer);
            out.extend_from_slice(b",\"user_agent\":");
            json_string(out, e.user_agent);
            // Present on TLS listeners only.
            if let Some(t) = &e.tls {
                let _ = write!(out, ",\"tls_version\":\"{}\",\"tls_cipher\":\"{}\",\"tls_sni\":", t.version, t.cipher);
                json_or_null(out, t.sni.as_bytes());
            }
            out.extend_from_slice(b"}\n");
        }
    }
}

/// Bytes as nginx logs them: printable ASCII as is, the rest as `\xHH`.
fn clf_escape(out: &mut Vec<u8>, v: &[u8]) {
    for &b in v {
        if (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\' {
            out.push(b);
        } else {
            let _ = write!(out, "\\x{b:02X}");
        }
    }
}

/// A JSON string; bytes outside ASCII are taken as Latin-1 (header values
/// are bytes, not UTF-8), so the output is always valid JSON.
fn json_string(out: &mut Vec<u8>, v: &[u8]) {
    out.push(b'"');
    for &b in v {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0x20..=0x7e => out.push(b),
            _ => {
                let _ = write!(out, "\\u{:04x}", b);
            }
        }
    }
    out.push(b'"');
}

/// A JSON string, or `null` for a field the request did not say.
fn json_or_null(out: &mut Vec<u8>, v: &[u8]) {
    if v.is_empty() {
        out.extend_from_slice(b"null");
    } else {
        json_string(out, v);
    }
}

/// UTC calendar fields from Unix seconds (Howard Hinnant's civil_from_days).
fn civil(secs: u64) -> (i64, usize, u64, u64, u64, u64) {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u64;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as usize;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, rem / 3600, rem % 3600 / 60, rem % 60)
}

mod tcp;
pub use tcp::{format_tcp, TcpEntry};

#[cfg(test)]
mod tests;
