//! A TCP relay between a service and one of its dependencies, which a test can cut and restore
//! to see what the service does when the dependency goes away and comes back.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub struct Relay {
    /// Where the service should connect instead of the dependency.
    pub addr: SocketAddr,
    target: String,
    cut: Arc<watch::Sender<bool>>,
    accept: Option<JoinHandle<()>>,
}

impl Relay {
    /// Listens on a free loopback port and forwards every connection to `target` (`host:port`).
    pub async fn start(target: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (cut, _) = watch::channel(false);
        let mut relay = Relay {
            addr,
            target: target.to_owned(),
            cut: Arc::new(cut),
            accept: None,
        };
        relay.accept = Some(relay.spawn_accept(listener));
        relay
    }

    fn spawn_accept(&self, listener: TcpListener) -> JoinHandle<()> {
        let target = self.target.clone();
        let cut = self.cut.clone();
        tokio::spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else {
                    return;
                };
                let target = target.clone();
                let mut cut_rx = cut.subscribe();
                tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(&target).await else {
                        return;
                    };
                    let (mut a, mut b) = (inbound, outbound);
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut a, &mut b) => {}
                        _ = cut_rx.wait_for(|c| *c) => {}
                    }
                });
            }
        })
    }

    /// Drops every relayed connection and stops listening: the dependency is gone.
    pub fn cut(&mut self) {
        if let Some(a) = self.accept.take() {
            a.abort();
        }
        self.cut.send_replace(true);
    }

    /// Listens again on the same port: the dependency is back.
    pub async fn restore(&mut self) {
        self.cut.send_replace(false);
        let listener = TcpListener::bind(self.addr)
            .await
            .expect("rebinding the relay port");
        self.accept = Some(self.spawn_accept(listener));
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.cut();
    }
}
