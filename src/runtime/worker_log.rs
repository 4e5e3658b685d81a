//! A worker's side of the access log: the lines it formatted and has not
//! handed to the writer thread yet, and whether (and in which format) it
//! logs. That follows the config snapshot, so a reload can turn logging on
//! or off and change the format; the request path reads one `Cell`.

use crate::access_log::{self, LogSender};
use crate::config::{Config, LogFormat};
use std::cell::{Cell, RefCell};
use std::time::SystemTime;

pub struct WorkerLog {
    /// The writer thread; `None` while there is none (logging off since
    /// the start).
    sender: RefCell<Option<LogSender>>,
    /// `None`: requests are not logged.
    format: Cell<Option<LogFormat>>,
    /// Lines waiting for the writer thread.
    lines: RefCell<Vec<u8>>,
}

impl WorkerLog {
    pub fn new(config: &Config) -> Self {
        let log = WorkerLog { sender: RefCell::new(None), format: Cell::new(None), lines: RefCell::new(Vec::new()) };
        log.follow(config);
        log
    }

    /// Takes the access log settings of a new snapshot (once per reload,
    /// not per request).
    pub fn follow(&self, config: &Config) {
        let format = config.access_log.as_ref().map(|c| c.format);
        let mut sender = self.sender.borrow_mut();
        if format.is_some() && sender.is_none() {
            // A reload starts the writer before it publishes a snapshot
            // that logs, so it is there to be found.
            *sender = access_log::sender();
        }
        self.format.set(format.filter(|_| sender.is_some()));
    }

    pub fn is_on(&self) -> bool {
        self.format.get().is_some()
    }

    /// Appends one request's line; a full buffer goes to the writer thread.
    pub fn log(&self, entry: &access_log::Entry<'_>) {
        self.append(|out, format, now| access_log::format(out, format, entry, now));
    }

    /// Appends one TCP-mode connection's line.
    pub fn log_tcp(&self, entry: &access_log::TcpEntry<'_>) {
        self.append(|out, format, now| access_log::format_tcp(out, format, entry, now));
    }

    fn append(&self, write: impl FnOnce(&mut Vec<u8>, crate::config::LogFormat, SystemTime)) {
        let (Some(format), Some(tx)) = (self.format.get(), &*self.sender.borrow()) else { return };
        let mut lines = self.lines.borrow_mut();
        if lines.capacity() == 0 {
            lines.reserve(access_log::FLUSH_BYTES);
        }
        write(&mut lines, format, SystemTime::now());
        if lines.len() >= access_log::FLUSH_BYTES {
            tx.send(std::mem::replace(&mut *lines, Vec::with_capacity(access_log::FLUSH_BYTES)));
        }
    }

    /// Hands over whatever is buffered (on every tick).
    pub fn flush(&self) {
        let mut lines = self.lines.borrow_mut();
        if let (false, Some(tx)) = (lines.is_empty(), &*self.sender.borrow()) {
            tx.send(std::mem::take(&mut *lines));
        }
    }
}
