//! Port 0: the proxy picks its own free ports, and holds them until Pingora listens on them.
//!
//! Pingora binds its listeners itself, from address strings, and never says which port a
//! `:0` got; the upgrade hand-over also keys the sockets by those strings. So a port 0 is
//! resolved here, before Pingora starts: a socket is bound to port 0 without listening, with
//! `SO_REUSEADDR`, which gives a concrete port that no other socket can be given (the kernel's
//! choice of a free port skips every port bound, reuse or not) while Pingora's own listener,
//! also `SO_REUSEADDR`, may still bind it (Linux refuses a shared port only when one of the
//! sockets listens). The held socket is dropped once the proxy accepts connections.
//!
//! Before, tests picked a "free" port by binding and closing one, and passed it on: another
//! process could take it in between, and once one did, a test's requests went to a stranger.

use std::net::SocketAddr;

/// A concrete address for `wanted`, and what holds its port until the listener is up (`None`
/// when the address named its port).
pub(crate) fn resolve(wanted: SocketAddr) -> std::io::Result<(SocketAddr, Option<Held>)> {
    if wanted.port() != 0 {
        return Ok((wanted, None));
    }
    let socket = match wanted {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(wanted)?;
    let addr = socket.local_addr()?;
    Ok((addr, Some(Held(socket))))
}

/// A bound, not listening socket that keeps a chosen port from being handed to anyone else.
pub(crate) struct Held(#[allow(dead_code)] tokio::net::TcpSocket);

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Held")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_named_port_is_kept_as_it_is() {
        let wanted: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let (addr, held) = resolve(wanted).unwrap();
        assert_eq!(addr, wanted);
        assert!(held.is_none());
    }

    #[test]
    fn port_zero_gets_a_port_that_a_listener_can_still_take() {
        let (addr, held) = resolve("127.0.0.1:0".parse().unwrap()).unwrap();
        assert_ne!(addr.port(), 0);
        assert!(held.is_some());
        // Nobody else is handed the port while it is held...
        for _ in 0..200 {
            let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            assert_ne!(other.local_addr().unwrap(), addr);
        }
        // ...but a listener that asks for it with SO_REUSEADDR, as Pingora's does, gets it.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_reuseaddr(true).unwrap();
        socket.bind(addr).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = socket.listen(16).unwrap();
            drop(held);
            let connect = tokio::net::TcpStream::connect(addr);
            let (accepted, connected) = tokio::join!(listener.accept(), connect);
            accepted.unwrap();
            connected.unwrap();
        });
    }
}
