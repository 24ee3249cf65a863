//! The fixed backend: every request gets the same small JSON answer, after an optional delay,
//! with a configurable status, once its body (if any) has been read.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

/// The answer: 70 bytes, the size of a small catalog API response.
pub const BODY: &[u8] =
    br#"{"id":42,"name":"Copper Kettle","price_cents":2599,"stock":7,"ok":true}"#;

#[derive(Debug, Clone)]
pub struct Behaviour {
    pub delay: Duration,
    pub status: u16,
    /// `None`: [`BODY`]; `Some(n)`: `n` bytes of `x` (large-response scenarios).
    pub size: Option<usize>,
}

impl Default for Behaviour {
    fn default() -> Self {
        Self {
            delay: Duration::ZERO,
            status: 200,
            size: None,
        }
    }
}

/// Starts the backend on a free loopback port; it runs until the process exits.
pub async fn start(behaviour: Behaviour) -> SocketAddr {
    start_on("127.0.0.1:0".parse().expect("loopback"), behaviour).await
}

/// [`start`] on `addr` (a backend restarted on the port it had, as after a crash).
pub async fn start_on(addr: SocketAddr, behaviour: Behaviour) -> SocketAddr {
    // A production-sized accept queue (tokio's default is 1,024): 1,000 connections opened at
    // once by a proxy must not overflow it while this single thread is busy.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_reuseaddr(true).expect("SO_REUSEADDR");
    socket.bind(addr).expect("bind");
    let listener = socket.listen(4096).expect("listen");
    let addr = listener.local_addr().expect("addr");
    let body = match behaviour.size {
        Some(n) => Bytes::from(vec![b'x'; n]),
        None => Bytes::from_static(BODY),
    };
    let (delay, status) = (behaviour.delay, behaviour.status);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let body = body.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let body = body.clone();
                    async move {
                        // The request's body is read before the answer, as a real service reads
                        // what it was sent: answered unread, a body still on its way (a client
                        // that writes head and body apart, a proxy that streams the body after
                        // the head) makes hyper close the connection instead of keeping it.
                        let _ = req.into_body().collect().await;
                        if !delay.is_zero() {
                            tokio::time::sleep(delay).await;
                        }
                        Ok::<_, Infallible>(
                            Response::builder()
                                .status(status)
                                .header("content-type", "application/json")
                                .body(Full::new(body))
                                .expect("response"),
                        )
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}
