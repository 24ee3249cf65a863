//! Client connections between requests: an idle keep-alive connection waits in a small future.
//!
//! Pingora runs each client connection as one task and, left to itself, waits for the next
//! request of a kept-alive connection inside the request-handling future: one boxed state
//! machine sized for the whole proxy path (upstream connection, both directions of the body,
//! every filter phase), plus the request-head buffer, all held while the client says nothing.
//! With 10,000 idle clients that was 26 KiB of RSS per connection (bench/RESULTS.md, idle-10k).
//!
//! [`Connections`] takes over the HTTP/1.1 keep-alive loop Pingora's blanket `ServerApp` runs
//! for an [`HttpServerApp`]: between requests it holds only the socket and waits for the first
//! byte of the next request (or the keep-alive timeout, or shutdown); only then does it start
//! the request-handling future, which is freed again when the answer is written. The price is
//! one extra one-byte read per reused request (Pingora's `try_peek`, which puts the byte back).
//!
//! What the loop keeps from Pingora's: keep-alive on for 60 s unless shutting down, the server
//! options' `keepalive_request_limit`, and the per-connection settings Pingora carries from one
//! request to the next. Banyan serves cleartext HTTP/1.1 only (no TLS, no h2c) and never turns
//! on request pipelining, so the other branches of Pingora's loop do not apply; with pipelining
//! off Pingora refuses to reuse a connection that sent bytes past its request, so no request can
//! be waiting unseen in a buffer while this waits on the socket.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::apps::{HttpServerApp, ServerApp};
use pingora_core::protocols::Stream;
use pingora_core::protocols::http::ServerSession;
use pingora_core::server::ShutdownWatch;

/// How long a kept-alive client connection may stay idle between requests (Pingora's default).
pub const KEEPALIVE: Duration = Duration::from_secs(60);

/// Serves client connections with `A`, one request at a time, idle in between without the
/// request-handling state (see the module docs).
pub struct Connections<A>(pub Arc<A>);

#[async_trait]
impl<A> ServerApp for Connections<A>
where
    A: HttpServerApp + Send + Sync + 'static,
{
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let app = &self.0;
        let mut session = ServerSession::new_http1(stream);
        session.set_keepalive((!*shutdown.borrow()).then_some(KEEPALIVE.as_secs()));
        session.set_keepalive_reuses_remaining(
            app.server_options().and_then(|o| o.keepalive_request_limit),
        );
        loop {
            let (mut stream, settings) = app.process_new_http(session, shutdown).await?.consume();
            if !next_request_arrives(&mut stream, shutdown).await {
                return None;
            }
            session = ServerSession::new_http1(stream);
            match settings {
                Some(settings) => settings.apply_to_session(&mut session),
                None => session.set_keepalive(Some(KEEPALIVE.as_secs())),
            }
        }
    }

    async fn cleanup(&self) {
        self.0.http_cleanup().await;
    }
}

/// Waits, holding only the socket, for the first byte of the client's next request. False when
/// the client closed the connection, stayed idle past [`KEEPALIVE`], or the server is shutting
/// down (an idle connection is closed then rather than kept until the grace period ends).
async fn next_request_arrives(stream: &mut Stream, shutdown: &ShutdownWatch) -> bool {
    if *shutdown.borrow() {
        return false;
    }
    let mut shutdown = shutdown.clone();
    let mut first = [0u8; 1];
    tokio::select! {
        peeked = tokio::time::timeout(KEEPALIVE, stream.try_peek(&mut first)) => match peeked {
            // The byte is put back for the request parser.
            Ok(Ok(true)) => true,
            // A stream that cannot peek: let the request parser wait instead.
            Ok(Ok(false)) => true,
            // Closed, reset, or idle too long.
            Ok(Err(_)) | Err(_) => false,
        },
        _ = shutdown.changed() => false,
    }
}
