//! An upstream that speaks HTTP/1.1 byte by byte as a test scripts it, for the framings and
//! misbehaviours a well-behaved server library never produces: chunked bodies written in
//! pieces, close-delimited bodies, malformed or conflicting heads, connections closed the
//! moment a kept-alive one is reused.
//!
//! Each connection reads request heads (and `Content-Length` bodies) one after another and asks
//! the script what to do with each, given the request head and its index on that connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// What the origin does with one request.
pub enum Reply {
    /// Writes these pieces one by one (each flushed, so they can arrive apart) and then waits
    /// for the next request on the connection.
    Pieces(Vec<Vec<u8>>),
    /// Writes the pieces and closes the connection.
    PiecesThenClose(Vec<Vec<u8>>),
    /// Closes the connection without answering.
    Close,
}

impl Reply {
    /// A complete response in one write.
    pub fn raw(bytes: &str) -> Self {
        Reply::Pieces(vec![bytes.as_bytes().to_vec()])
    }
}

/// One request as the origin read it.
pub struct Seen {
    /// The request head, as text (request line and headers).
    pub head: String,
    /// Its index on its connection, from 0.
    pub on_connection: usize,
    /// Its body (`Content-Length` framed).
    pub body: Vec<u8>,
}

impl Seen {
    /// The request target (`/path?query`).
    pub fn target(&self) -> &str {
        self.head.split(' ').nth(1).unwrap_or("")
    }

    pub fn method(&self) -> &str {
        self.head.split(' ').next().unwrap_or("")
    }
}

type Script = dyn Fn(&Seen) -> Reply + Send + Sync;

pub struct RawOrigin {
    pub addr: SocketAddr,
    /// Connections accepted.
    pub connections: Arc<AtomicU64>,
    /// Requests read (answered or not).
    pub requests: Arc<AtomicU64>,
    accept: JoinHandle<()>,
}

impl RawOrigin {
    /// Starts on a free loopback port, answering by `script`.
    pub async fn start(script: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicU64::new(0));
        let requests = Arc::new(AtomicU64::new(0));
        let script: Arc<Script> = Arc::new(script);
        let (c, r) = (connections.clone(), requests.clone());
        let accept = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                c.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(stream, script.clone(), r.clone()));
            }
        });
        RawOrigin {
            addr,
            connections,
            requests,
            accept,
        }
    }

    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::SeqCst)
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for RawOrigin {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn serve(mut stream: TcpStream, script: Arc<Script>, requests: Arc<AtomicU64>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let mut index = 0;
    loop {
        let end = loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            match stream.read(&mut chunk).await {
                Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                _ => return,
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        let length: usize = head
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().ok())
                    .flatten()
            })
            .unwrap_or(0);
        while buf.len() < end + length {
            match stream.read(&mut chunk).await {
                Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                _ => return,
            }
        }
        let body = buf[end..end + length].to_vec();
        buf.drain(..end + length);
        requests.fetch_add(1, Ordering::SeqCst);
        let seen = Seen {
            head,
            on_connection: index,
            body,
        };
        index += 1;
        let (pieces, close) = match script(&seen) {
            Reply::Pieces(p) => (p, false),
            Reply::PiecesThenClose(p) => (p, true),
            Reply::Close => return,
        };
        for piece in pieces {
            if stream.write_all(&piece).await.is_err() || stream.flush().await.is_err() {
                return;
            }
            // Let each piece leave on its own.
            tokio::task::yield_now().await;
        }
        if close {
            return;
        }
    }
}
