//! The reference for Banyan's own cost: a Pingora proxy with nothing on top (one upstream, no
//! route table, no metrics, no headers added), on the same Pingora version and settings Banyan
//! uses. `compare` runs it beside Banyan, so the difference between the two rows is what
//! Banyan's features cost, and the difference to nginx is what the framework costs.

use async_trait::async_trait;
use clap::Parser;
use pingora_core::Result;
use pingora_core::listeners::{L4BufferSettings, ListenerConfig};
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::{RunArgs, Server};
use pingora_core::upstreams::peer::HttpPeer;
use pingora_proxy::{ProxyHttp, Session};

#[derive(Parser)]
struct Args {
    #[arg(long)]
    listen: String,
    #[arg(long)]
    backend: std::net::SocketAddr,
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Pingora's `work_stealing` (one multi-thread runtime) instead of one runtime per thread
    #[arg(long)]
    steal: bool,
    /// Pingora's default 64 KiB read buffer on client sockets (Banyan turns it off)
    #[arg(long)]
    read_buffer: bool,
}

struct Bare(std::net::SocketAddr);

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();
    fn new_ctx(&self) {}
    async fn upstream_peer(&self, _: &mut Session, _: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.0, false, String::new())))
    }
}

fn main() {
    let args = Args::parse();
    let conf = ServerConf {
        threads: args.threads,
        work_stealing: args.steal,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut proxy = pingora_proxy::http_proxy_service(&server.configuration, Bare(args.backend));
    // Banyan's client socket buffering (see `client_buffers` in proxy/src/server.rs).
    let buffers = L4BufferSettings::default().read(if args.read_buffer { 64 * 1024 } else { 0 });
    proxy.add_listener(ListenerConfig::tcp(args.listen.clone()).l4_buffer(buffers));
    server.add_service(proxy);
    server.run(RunArgs::default());
}
