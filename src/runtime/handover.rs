//! Listening sockets handed from a running ringway to a new one, for a
//! binary upgrade that drops no connection (`ringway --takeover`).
//!
//! Sharing a port through `SO_REUSEPORT` alone is not enough: each process
//! has sockets of its own, and when the old one closes its sockets the
//! kernel resets the connections still queued on them. So the new process
//! takes the old one's very sockets instead (`SCM_RIGHTS`): both accept from
//! the same queues, and when the old one stops accepting and closes its
//! copies, the sockets and their queues live on in the new process.
//!
//! Every process started from a config file offers its sockets on an
//! abstract unix socket named after that file (`socket_name`), to processes
//! of its own user only (the kernel would let that user join the ports with
//! `SO_REUSEPORT` anyway). The new process checks the same of the old one.
//! That unix socket is handed over too, and the old process stops offering
//! at once: the name never goes unanswered, so the next upgrade can follow
//! as soon as this one is done.

use super::fd_passing::{own_uid, peer_cred, recv_with_fds, send_with_fds, FDS_PER_MESSAGE};
use super::Control;
use socket2::{Domain, SockAddr, Socket, Type};
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// First message of a handover: the protocol and its version, then the
/// sender's pid (`SO_PEERCRED` names the process that first listened on the
/// name, which after a handover is an older one).
const HELLO: &str = "ringway-handover 1 ";
/// Last message of a handover.
const END: &[u8] = b"end";
/// Prefix of a message carrying sockets bound to the address that follows.
const GROUP: &str = "listen ";
/// A message carrying the handover socket itself.
const SUCCESSION: &[u8] = b"handover";
/// How long either side waits for the other before giving up.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the offering thread looks at the shutdown flag, and retries a
/// name still held by the instance it took over from.
const OFFER_POLL: Duration = Duration::from_millis(250);

/// The listening sockets this process offers, by owner (a listener's name,
/// or `None` for the admin listener). These are duplicates: removing a
/// group closes only them, so a listener the workers stopped accepting on
/// is not kept open here.
#[derive(Default)]
pub struct Offered {
    groups: Mutex<Vec<OfferedGroup>>,
}

/// The sockets of one listener (`None`: the admin listener), on `addr`.
type OfferedGroup = (Option<Arc<str>>, SocketAddr, Vec<OwnedFd>);

impl Offered {
    /// Offers copies of a listener's sockets (`owner` `None`: the admin
    /// listener's) to a successor.
    pub fn add(&self, owner: Option<&Arc<str>>, addr: SocketAddr, sockets: &[TcpListener]) {
        let fds: io::Result<Vec<OwnedFd>> = sockets.iter().map(|s| s.as_fd().try_clone_to_owned()).collect();
        match fds {
            Ok(fds) => self.lock().push((owner.cloned(), addr, fds)),
            Err(e) => log::warn!("{addr} cannot be handed over to a new instance: {e}"),
        }
    }

    /// Forgets a listener's sockets (its workers stop accepting on them).
    pub fn remove(&self, owner: &str) {
        self.lock().retain(|(o, _, _)| o.as_deref() != Some(owner));
    }

    /// Forgets the admin listener's sockets (a reload moved or closed it).
    pub fn remove_admin(&self) {
        self.lock().retain(|(o, _, _)| o.is_some());
    }

    /// At a stop: the sockets close with the workers' copies, so connections
    /// stop queueing on them, unless a new instance holds them.
    pub fn clear(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<OfferedGroup>> {
        self.groups.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Sockets taken over from the running instance, by address.
#[derive(Default)]
pub struct Inherited {
    groups: Vec<(SocketAddr, Vec<TcpListener>)>,
    /// The old instance's handover socket, for this one to offer on.
    succession: Option<Socket>,
}

impl Inherited {
    /// The sockets bound to exactly `addr` (never for port 0: such a
    /// listener gets a new port).
    pub fn take(&mut self, addr: SocketAddr) -> Option<Vec<TcpListener>> {
        let i = self.groups.iter().position(|(a, _)| *a == addr && addr.port() != 0)?;
        Some(self.groups.swap_remove(i).1)
    }

    /// Addresses handed over but not taken (this config has no listener
    /// there); dropping `self` closes our copies of them.
    pub fn left(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.groups.iter().map(|(a, _)| *a)
    }

    /// Whether every socket handed over was taken.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// The handover socket to offer this process's sockets on (`offer`).
    pub fn take_succession(&mut self) -> Option<Socket> {
        self.succession.take()
    }
}

/// The abstract unix socket name of the instance running `config`, for
/// this user. Abstract names live as long as their socket (no file is left
/// behind) and per network namespace, as the ports they hand over do.
pub fn socket_name(config: &Path) -> io::Result<SockAddr> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::fs::canonicalize(config)?;
    let path = path.as_os_str().as_bytes();
    let mut name = format!("\0ringway-handover/{}/", own_uid()).into_bytes();
    // sun_path holds 108 bytes; a longer path is named by a stable hash
    // (the old and the new binary must agree on it).
    if name.len() + path.len() <= 107 {
        name.extend_from_slice(path);
    } else {
        name.extend_from_slice(format!("{:016x}", fnv1a(path)).as_bytes());
    }
    SockAddr::unix(std::ffi::OsStr::from_bytes(&name))
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// Asks the instance running `config` for its listening sockets. `None`
/// when no instance offers any on this name.
pub fn receive(config: &Path) -> io::Result<Option<(Inherited, u32)>> {
    let name = socket_name(config)?;
    let socket = Socket::new(Domain::UNIX, Type::SEQPACKET, None)?;
    match socket.connect(&name) {
        Ok(()) => {}
        Err(e) if matches!(e.raw_os_error(), Some(libc::ECONNREFUSED | libc::ENOENT)) => return Ok(None),
        Err(e) => return Err(e),
    }
    socket.set_read_timeout(Some(EXCHANGE_TIMEOUT))?;
    let (uid, _) = peer_cred(&socket)?;
    if uid != own_uid() {
        return Err(io::Error::other(format!("the handover socket is held by user {uid}, not by this user")));
    }
    let mut buf = [0u8; 256];
    let (n, _) = recv_with_fds(&socket, &mut buf)?;
    let pid = std::str::from_utf8(&buf[..n]).ok().and_then(|t| t.strip_prefix(HELLO)).and_then(|p| p.parse().ok());
    let Some(pid) = pid else {
        return Err(io::Error::other("the handover socket does not speak this ringway's protocol"));
    };
    let mut inherited = Inherited::default();
    loop {
        let (n, fds) = recv_with_fds(&socket, &mut buf)?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the running instance stopped mid-handover"));
        }
        let text = std::str::from_utf8(&buf[..n]).unwrap_or("");
        if text.as_bytes() == END {
            return Ok(Some((inherited, pid)));
        }
        if text.as_bytes() == SUCCESSION {
            inherited.succession = fds
                .into_iter()
                .map(Socket::from)
                .find(|s| s.r#type().ok() == Some(Type::SEQPACKET) && s.is_listener().unwrap_or(false));
            continue;
        }
        let Some(addr) = text.strip_prefix(GROUP).and_then(|a| a.parse::<SocketAddr>().ok()) else {
            return Err(io::Error::other(format!("unexpected handover message {text:?}")));
        };
        let sockets = fds.into_iter().filter_map(|fd| listening_on(fd, addr)).collect::<Vec<_>>();
        match inherited.groups.iter_mut().find(|(a, _)| *a == addr) {
            Some((_, group)) => group.extend(sockets),
            None => inherited.groups.push((addr, sockets)),
        }
    }
}

/// `fd` as a TCP listener, if it is one listening on `addr`.
fn listening_on(fd: OwnedFd, addr: SocketAddr) -> Option<TcpListener> {
    let socket = Socket::from(fd);
    let ok = socket.r#type().ok() == Some(Type::STREAM)
        && socket.is_listener().unwrap_or(false)
        && socket.local_addr().ok().and_then(|a| a.as_socket()) == Some(addr);
    if !ok {
        log::warn!("takeover: a socket handed over for {addr} is not listening there; ignored");
    }
    ok.then(|| socket.into())
}

/// Offers this process's listening sockets to a new instance started with
/// `--takeover`, on a thread of its own, until the process stops or has
/// handed them over. `succession`: the handover socket this process got
/// from the instance it took over from; otherwise it binds the name (and
/// waits while another process holds it).
pub fn offer(control: Arc<Control>, config: &Path, succession: Option<Socket>) {
    let name = match socket_name(config) {
        Ok(n) => n,
        Err(e) => return log::warn!("no handover socket ({e}); --takeover cannot take over from this process"),
    };
    let spawned = std::thread::Builder::new().name("ringway-handover".into()).spawn(move || {
        let mut listener = succession;
        loop {
            let Some(socket) = listener.take().or_else(|| bind_offer(&control, &name)) else { return };
            if !serve_offer(&control, socket) {
                return;
            }
            // Handed over: the new instance answers on the name now. Should
            // it exit, the name comes free and this process offers again.
        }
    });
    if let Err(e) = spawned {
        log::warn!("cannot start the handover thread: {e}");
    }
}

/// Answers on `listener` until a handover succeeds (`true`) or the process
/// stops (`false`, and the name is released with the socket).
fn serve_offer(control: &Control, listener: Socket) -> bool {
    // accept() honours it: the loop looks at the shutdown flag.
    if let Err(e) = listener.set_read_timeout(Some(OFFER_POLL)) {
        log::warn!("handover socket: {e}");
    }
    while !control.is_shutting_down() {
        match listener.accept() {
            Ok((peer, _)) => match hand_over(control, &peer, &listener) {
                Ok(()) => return true,
                Err(e) => log::warn!("handover to a new instance failed: {e}"),
            },
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {}
            Err(e) => {
                log::warn!("handover socket: {e}");
                std::thread::sleep(OFFER_POLL);
            }
        }
    }
    false
}

/// The listening handover socket; `None` at a stop or on an error.
fn bind_offer(control: &Control, name: &SockAddr) -> Option<Socket> {
    let mut waiting = false;
    loop {
        if control.is_shutting_down() {
            return None;
        }
        let bound = Socket::new(Domain::UNIX, Type::SEQPACKET, None).and_then(|s| {
            s.bind(name)?;
            s.listen(4)?;
            Ok(s)
        });
        match bound {
            Ok(s) => return Some(s),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                if !std::mem::replace(&mut waiting, true) {
                    log::info!("the handover socket is held by another instance; offering again if it exits");
                }
                std::thread::sleep(OFFER_POLL);
            }
            Err(e) => {
                log::warn!("no handover socket ({e}); --takeover cannot take over from this process");
                return None;
            }
        }
    }
}

fn hand_over(control: &Control, peer: &Socket, listener: &Socket) -> io::Result<()> {
    peer.set_write_timeout(Some(EXCHANGE_TIMEOUT))?;
    let (uid, pid) = peer_cred(peer)?;
    if uid != own_uid() {
        return Err(io::Error::other(format!("refused: the asking process runs as user {uid}")));
    }
    send_with_fds(peer, format!("{HELLO}{}", std::process::id()).as_bytes(), &[])?;
    // Held while sending, so that a stop or a reload cannot close a socket
    // between being listed and being sent.
    let groups = control.offered.lock();
    let mut count = 0;
    for (_, addr, fds) in groups.iter() {
        for chunk in fds.chunks(FDS_PER_MESSAGE) {
            let fds: Vec<_> = chunk.iter().map(|f| f.as_fd()).collect();
            send_with_fds(peer, format!("{GROUP}{addr}").as_bytes(), &fds)?;
            count += fds.len();
        }
    }
    send_with_fds(peer, SUCCESSION, &[listener.as_fd()])?;
    send_with_fds(peer, END, &[])?;
    log::info!("handed {count} listening sockets over to a new instance (pid {pid})");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_name_is_the_same_for_every_binary_and_fits_sun_path() {
        // FNV-1a's published test vectors: an old and a new binary, maybe
        // built by different compilers, must name a long path alike.
        assert_eq!((fnv1a(b""), fnv1a(b"a")), (0xcbf2_9ce4_8422_2325, 0xaf63_dc4c_8601_ec8c));
        let dir = std::env::temp_dir().join("ringway-handover-test-".to_string() + &"x".repeat(120));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let long = dir.join("ringway.toml");
        std::fs::write(&long, "").expect("write");
        let name = socket_name(&long).expect("name");
        let _ = std::fs::remove_dir_all(&dir);
        let bytes = name.as_abstract_namespace().expect("abstract");
        assert!(bytes.len() <= 107, "{} bytes", bytes.len());
        assert!(bytes.starts_with(format!("ringway-handover/{}/", own_uid()).as_bytes()));
    }

    #[test]
    fn an_offered_group_is_a_copy_that_removing_closes() {
        let offered = Offered::default();
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        offered.add(Some(&Arc::from("public")), addr, &[l]);
        // The workers' copy is gone; the offered one still listens.
        std::net::TcpStream::connect(addr).expect("still listening");
        offered.remove("public");
        assert!(std::net::TcpStream::connect(addr).is_err(), "removing the group closed the last copy");
    }
}
