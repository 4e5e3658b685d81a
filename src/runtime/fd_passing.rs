//! Open file descriptors sent to another process over a unix socket
//! (`SCM_RIGHTS`), and the peer's user id (`SO_PEERCRED`). The only use is
//! the listener handover (`runtime::handover`); neither std nor socket2
//! wraps these calls, so this file holds the `unsafe` they need.

#![allow(unsafe_code)]

use socket2::Socket;
use std::io;
use std::mem::{size_of, MaybeUninit};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// Most descriptors sent in one message: the kernel refuses more than
/// `SCM_MAX_FD` (253) at once.
pub const FDS_PER_MESSAGE: usize = 200;

/// Room for the control message carrying `n` descriptors.
fn control_space(n: usize) -> usize {
    let bytes = u32::try_from(n * size_of::<RawFd>()).unwrap_or(u32::MAX);
    // SAFETY: CMSG_SPACE only computes a size.
    unsafe { libc::CMSG_SPACE(bytes) as usize }
}

/// Sends `data` as one message (the socket is `SOCK_SEQPACKET`) with copies
/// of `fds` (at most `FDS_PER_MESSAGE`) attached.
pub fn send_with_fds(socket: &Socket, data: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    if fds.len() > FDS_PER_MESSAGE {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "too many descriptors for one message"));
    }
    // u64 words keep the buffer aligned for `cmsghdr`.
    let mut control = vec![0u64; control_space(fds.len()).div_ceil(8)];
    let mut iov = libc::iovec { iov_base: data.as_ptr() as *mut libc::c_void, iov_len: data.len() };
    // SAFETY: an all-zero msghdr is a valid empty message.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = control_space(fds.len());
        // SAFETY: `msg_control` points at `control`, which has room for one
        // header and `fds.len()` descriptors (CMSG_SPACE above), and is
        // aligned for `cmsghdr`; CMSG_FIRSTHDR is therefore non-null.
        unsafe {
            let header = libc::CMSG_FIRSTHDR(&msg);
            (*header).cmsg_level = libc::SOL_SOCKET;
            (*header).cmsg_type = libc::SCM_RIGHTS;
            (*header).cmsg_len = libc::CMSG_LEN((fds.len() * size_of::<RawFd>()) as u32) as usize;
            let out = libc::CMSG_DATA(header).cast::<RawFd>();
            for (i, fd) in fds.iter().enumerate() {
                out.add(i).write_unaligned(fd.as_raw_fd());
            }
        }
    }
    // SAFETY: `msg` points at live buffers for the whole call.
    let sent = unsafe { libc::sendmsg(socket.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
    match sent {
        n if n < 0 => Err(io::Error::last_os_error()),
        n if n as usize != data.len() => Err(io::Error::new(io::ErrorKind::WriteZero, "message cut short")),
        _ => Ok(()),
    }
}

/// Receives one message into `buf`: its length (0 at end of stream) and the
/// descriptors it carried, close-on-exec. A message whose data or
/// descriptors did not fit is an error (its descriptors are closed).
pub fn recv_with_fds(socket: &Socket, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    let mut control = vec![0u64; control_space(FDS_PER_MESSAGE).div_ceil(8)];
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    // SAFETY: an all-zero msghdr is a valid empty message.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = control.len() * 8;
    // SAFETY: `msg` points at live buffers for the whole call.
    let n = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut fds = Vec::new();
    // SAFETY: the kernel filled `msg_control` with well-formed headers up
    // to `msg_controllen`; CMSG_NXTHDR stays within it. Each SCM_RIGHTS
    // descriptor is new in this process and owned by nobody else yet.
    unsafe {
        let mut header = libc::CMSG_FIRSTHDR(&msg);
        while !header.is_null() {
            if (*header).cmsg_level == libc::SOL_SOCKET && (*header).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(header);
                let bytes = (*header).cmsg_len - (data as usize - header as usize);
                let src = data.cast::<RawFd>();
                for i in 0..bytes / size_of::<RawFd>() {
                    fds.push(OwnedFd::from_raw_fd(src.add(i).read_unaligned()));
                }
            }
            header = libc::CMSG_NXTHDR(&msg, header);
        }
    }
    if msg.msg_flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC) != 0 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "handover message cut short"));
    }
    Ok((n as usize, fds))
}

/// The user id and process id of the process at the other end of `socket`
/// (as they were when it connected).
pub fn peer_cred(socket: &Socket) -> io::Result<(u32, i32)> {
    let mut cred = MaybeUninit::<libc::ucred>::zeroed();
    let mut len = size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: SO_PEERCRED writes one `ucred` into a buffer of that size.
    let rc = unsafe {
        libc::getsockopt(socket.as_raw_fd(), libc::SOL_SOCKET, libc::SO_PEERCRED, cred.as_mut_ptr().cast(), &mut len)
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: getsockopt succeeded, so the struct is filled (it was zeroed
    // before, so it is initialized either way).
    let cred = unsafe { cred.assume_init() };
    Ok((cred.uid, cred.pid))
}

/// This process's effective user id.
pub fn own_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use socket2::{Domain, Type};

    #[test]
    fn listening_sockets_cross_a_socket_pair_and_keep_accepting() {
        let (a, b) = Socket::pair(Domain::UNIX, Type::SEQPACKET, None).expect("pair");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        send_with_fds(&a, b"one", &[std::os::fd::AsFd::as_fd(&listener)]).expect("send");
        let mut buf = [0u8; 16];
        let (n, fds) = recv_with_fds(&b, &mut buf).expect("recv");
        assert_eq!((&buf[..n], fds.len()), (&b"one"[..], 1));
        drop(listener);
        let received = std::net::TcpListener::from(fds.into_iter().next().expect("one fd"));
        assert_eq!(received.local_addr().expect("addr"), addr);
        let _client = std::net::TcpStream::connect(addr).expect("the socket still listens here");
        received.accept().expect("accept");
        assert_eq!(peer_cred(&a).expect("peer"), (own_uid(), std::process::id() as i32));
    }
}
