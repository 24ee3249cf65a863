//! The admin API served on a Pingora listener, so that an upgrade hands its listening socket
//! to the new process together with the client listener's (a separately bound admin socket
//! made a second process fail with "address already in use").
//!
//! Each accepted connection is served by hyper with the axum router; when the process starts
//! closing, open connections finish their current request and close.

use std::sync::Arc;

use async_trait::async_trait;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use pingora_core::apps::ServerApp;
use pingora_core::protocols::Stream;
use pingora_core::server::ShutdownWatch;

pub(crate) struct AdminApp {
    pub router: axum::Router,
}

#[async_trait]
impl ServerApp for AdminApp {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let service = TowerToHyperService::new(self.router.clone());
        let conn = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(stream), service);
        tokio::pin!(conn);
        let mut shutdown = shutdown.clone();
        if *shutdown.borrow() {
            conn.as_mut().graceful_shutdown();
        }
        tokio::select! {
            done = conn.as_mut() => {
                if let Err(e) = done {
                    tracing::debug!(error = %e, "admin connection ended with an error");
                }
                return None;
            }
            _ = shutdown.changed() => conn.as_mut().graceful_shutdown(),
        }
        let _ = conn.await;
        None
    }
}
