//! Closing the client listener without resetting connections already queued on it.
//!
//! A listening socket's accept queue holds connections the kernel has completed and the
//! process has not accepted yet. Closing the socket resets them, and by then their clients have
//! usually sent a request: under a steady load of keep-alive clients told to reconnect, a
//! SIGTERM cost a few requests each time this way. So on a stop, before the listener closes,
//! the kernel is told to drop new connection attempts (a socket filter on the listener: a
//! client's SYN goes unanswered and is retried a second later, by when the listener is gone and
//! the retry is refused; no request was sent), and the accept loop
//! gets a moment to take what is already queued. The filter drops only a connection's opening
//! SYN: a handshake already under way completes, and data flows on every connection.
//!
//! Not on an upgrade: the new process accepts on the same socket, and must go on doing so.
//!
//! This is one of the two places with `unsafe` (the other is `crate::balance`): socket options
//! the standard library and nix do not offer, each call's safety argued beside it.
#![allow(unsafe_code)]

use std::net::SocketAddr;
use std::os::fd::RawFd;

/// A filter program that drops a connection's opening SYN and lets everything else through.
/// On a TCP socket the filter sees the packet from its TCP header, whose byte 13 holds the
/// flags: a packet without ACK (0x10) is a new connection's SYN. Handshakes already under way
/// (their final ACK) and data on connections queued for accept pass, so they complete and are
/// accepted; connections accepted later inherit the filter, and pass too (all their packets
/// carry ACK).
const DROP_SYN: [libc::sock_filter; 4] = [
    // ldb [13]
    libc::sock_filter {
        code: (libc::BPF_LD | libc::BPF_B | libc::BPF_ABS) as u16,
        jt: 0,
        jf: 0,
        k: 13,
    },
    // jset #0x10: ACK set -> accept (2 ahead), else drop (next)
    libc::sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16,
        jt: 1,
        jf: 0,
        k: 0x10,
    },
    // ret #0: drop
    libc::sock_filter {
        code: (libc::BPF_RET | libc::BPF_K) as u16,
        jt: 0,
        jf: 0,
        k: 0,
    },
    // ret #-1: the whole packet
    libc::sock_filter {
        code: (libc::BPF_RET | libc::BPF_K) as u16,
        jt: 0,
        jf: 0,
        k: u32::MAX,
    },
];

/// Makes the listening socket(s) bound to `listen` drop new connection attempts. Returns how
/// many listening sockets it found.
pub(crate) fn stop_new_connections(listen: SocketAddr) -> usize {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return 0;
    };
    let mut found = 0;
    for entry in entries.flatten() {
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<RawFd>().ok())
        else {
            continue;
        };
        if is_listener_on(fd, listen) && attach(fd, &DROP_SYN) {
            found += 1;
        }
    }
    found
}

fn is_listener_on(fd: RawFd, listen: SocketAddr) -> bool {
    let mut accepting: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    let mut addr: libc::sockaddr_storage =
        // SAFETY: sockaddr_storage is plain data; all zeroes is a valid (empty) value.
            unsafe { std::mem::zeroed() };
    let mut addr_len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: getsockopt and getsockname write at most `len`/`addr_len` bytes into the buffers
    // passed with those lengths; `fd` may be any number (the calls fail on a descriptor that is
    // not an open socket, and are read-only on one that is).
    let (opt, name) = unsafe {
        (
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_ACCEPTCONN,
                (&mut accepting as *mut libc::c_int).cast(),
                &mut len,
            ),
            libc::getsockname(
                fd,
                (&mut addr as *mut libc::sockaddr_storage).cast(),
                &mut addr_len,
            ),
        )
    };
    if opt != 0 || accepting != 1 || name != 0 {
        return false;
    }
    to_socket_addr(&addr) == Some(listen)
}

fn to_socket_addr(addr: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match addr.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let v4 =
                unsafe { &*(addr as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::from((
                u32::from_be(v4.sin_addr.s_addr).to_be_bytes(),
                u16::from_be(v4.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let v6 =
                unsafe { &*(addr as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            Some(SocketAddr::from((
                v6.sin6_addr.s6_addr,
                u16::from_be(v6.sin6_port),
            )))
        }
        _ => None,
    }
}

fn attach(fd: RawFd, program: &[libc::sock_filter]) -> bool {
    let prog = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_ptr().cast_mut(),
    };
    // SAFETY: the kernel copies the program during the call; `prog` and `program` outlive it.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            (&prog as *const libc::sock_fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    r == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stopped_listener_takes_no_new_connection_but_keeps_its_queue() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let queued = std::net::TcpStream::connect(addr).unwrap();
        assert_eq!(stop_new_connections(addr), 1);
        // Already queued: still accepted, and its bytes still arrive.
        let (mut accepted, _) = listener.accept().unwrap();
        use std::io::{Read, Write};
        (&queued).write_all(b"x").unwrap();
        let mut b = [0u8; 1];
        accepted.read_exact(&mut b).unwrap();
        // A new attempt gets no answer to its SYN.
        let late =
            std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_millis(300));
        assert!(late.is_err(), "a new connection got through");
    }
}
