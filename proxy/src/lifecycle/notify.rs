//! systemd's readiness protocol (`sd_notify`): when the process runs under a `Type=notify`
//! unit, `NOTIFY_SOCKET` names a datagram socket, and the process says `READY=1` once it
//! serves, with `MAINPID=` (so after an upgrade, systemd follows the new process), and
//! `STOPPING=1` when a stop begins. Without `NOTIFY_SOCKET` nothing is sent.

use std::os::unix::net::UnixDatagram;

fn send(message: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(socket) = UnixDatagram::unbound() else {
        return;
    };
    let bytes = path.as_encoded_bytes();
    let sent = if let Some(name) = bytes.strip_prefix(b"@") {
        // An abstract socket (Linux): the name after '@'.
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(name)
            .and_then(|addr| socket.send_to_addr(message.as_bytes(), &addr))
    } else {
        socket.send_to(message.as_bytes(), &path)
    };
    if let Err(e) = sent {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

/// The process serves (after an upgrade: it is now the service's main process).
pub(crate) fn ready() {
    send(&format!("READY=1\nMAINPID={}\n", std::process::id()));
}

/// A stop or an upgrade has begun.
pub(crate) fn stopping() {
    send("STOPPING=1\n");
}
