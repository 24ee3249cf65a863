//! A client that speaks HTTP/1.1 over a raw TCP socket, for tests that must see exactly what a
//! connection does: when it closes, whether an answer came for a request already sent, what a
//! trickled or oversized head gets.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One response, as read off the wire.
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    /// Header lines, names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The server said it closes the connection after this response.
    pub fn closes(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// Why no complete response was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoResponse {
    /// The connection closed (or was reset) before any byte of a response.
    Closed,
    /// It closed in the middle of a response.
    Truncated,
    /// Nothing complete within the time allowed.
    TimedOut,
}

/// Reads one response (a `content-length` body, or none) from `s`, keeping bytes past it in
/// `rest`.
pub async fn read_response(
    s: &mut TcpStream,
    rest: &mut Vec<u8>,
    timeout: Duration,
) -> Result<RawResponse, NoResponse> {
    tokio::time::timeout(timeout, read_inner(s, rest))
        .await
        .unwrap_or(Err(NoResponse::TimedOut))
}

async fn read_inner(s: &mut TcpStream, rest: &mut Vec<u8>) -> Result<RawResponse, NoResponse> {
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(end) = rest.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&rest[..end]).into_owned();
            let mut lines = head.split("\r\n");
            let status: u16 = lines
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|s| s.parse().ok())
                .ok_or(NoResponse::Truncated)?;
            let headers: Vec<(String, String)> = lines
                .filter_map(|l| l.split_once(':'))
                .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
                .collect();
            let length: usize = headers
                .iter()
                .find(|(n, _)| n == "content-length")
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or(0);
            while rest.len() < end + 4 + length {
                match s.read(&mut chunk).await {
                    Ok(n) if n > 0 => rest.extend_from_slice(&chunk[..n]),
                    _ => return Err(NoResponse::Truncated),
                }
            }
            let body = rest[end + 4..end + 4 + length].to_vec();
            rest.drain(..end + 4 + length);
            return Ok(RawResponse {
                status,
                headers,
                body,
            });
        }
        match s.read(&mut chunk).await {
            Ok(n) if n > 0 => rest.extend_from_slice(&chunk[..n]),
            _ if rest.is_empty() => return Err(NoResponse::Closed),
            _ => return Err(NoResponse::Truncated),
        }
    }
}

/// Sends `request` on `s` and reads its response.
pub async fn exchange(
    s: &mut TcpStream,
    rest: &mut Vec<u8>,
    request: &[u8],
    timeout: Duration,
) -> Result<RawResponse, NoResponse> {
    if s.write_all(request).await.is_err() {
        return Err(NoResponse::Closed);
    }
    read_response(s, rest, timeout).await
}
