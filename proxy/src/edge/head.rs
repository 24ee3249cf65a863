//! Reading a request head whole, within bounds, before any pipeline parses it.
//!
//! A client that sends its head slowly, or sends a huge one, holds memory and a task for as long
//! as the proxy lets it. Left to Pingora's parser, a head could grow to about 1 MiB, with a
//! timeout per read rather than per head: 40 connections each trickling an 880 KB head took the
//! proxy from 41 to 102 MB of RSS. So the connection loop reads the head itself, the same way
//! for both pipelines:
//! - at most `max_request_head` bytes (default 32 KiB, as nginx's default), else 431;
//! - at most `max_request_headers` header lines (default 100), else 431;
//! - all of it within `request_head_timeout` (default 10 s) of its first byte, else 408.
//!
//! The buffer grows in small steps and never past the limit, so a trickling client costs what
//! it has sent, and at most the limit. The complete head (and whatever followed it in the same
//! reads) is then parsed by the fast path or rewound into the socket for Pingora, which finds
//! it whole and never waits on the client for more of it.
//!
//! A small body the edge wants whole before choosing a pipeline
//! ([`super::request::Inspected::body_still_coming`]) is read by [`read_rest`] within the same
//! deadline: `request_head_timeout` from the head's first byte covers the head and that body
//! together, else 408, on both pipelines.

use std::time::Duration;

use tokio::time::Instant;

use tokio::io::{AsyncRead, AsyncReadExt};

use crate::fast_path::wire::head_end;

/// How much the buffer grows at a time while a head is incomplete.
const STEP: usize = 4096;

/// The bounds of a request head (`[proxy]` settings, live).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HeadLimits {
    pub max_bytes: usize,
    pub max_headers: usize,
    pub timeout: Duration,
}

impl Default for HeadLimits {
    fn default() -> Self {
        Self {
            max_bytes: 32 * 1024,
            max_headers: 100,
            timeout: Duration::from_secs(10),
        }
    }
}

/// What reading a head came to.
#[derive(Debug)]
pub(crate) enum Head {
    /// The head is complete: `buf[..end]` is the head, the rest came after it.
    Complete { buf: Vec<u8>, end: usize },
    /// More than `max_bytes` before the head ended (431).
    TooLarge,
    /// More than `max_headers` header lines (431).
    TooManyHeaders,
    /// The head did not arrive within `timeout` (408).
    TimedOut,
    /// The client closed or reset the connection mid-head: nothing to answer.
    Closed,
}

/// Reads until `buf` (the request's first bytes) holds a whole head, within `limits`.
pub(crate) async fn read<S: AsyncRead + Unpin>(
    stream: &mut S,
    mut buf: Vec<u8>,
    limits: &HeadLimits,
) -> Head {
    // One timer for the whole head, not one per read: a trickling client costs a wakeup and a
    // read per piece, nothing more.
    let deadline = tokio::time::sleep(limits.timeout);
    tokio::pin!(deadline);
    let mut searched = 0;
    loop {
        if let Some(end) = head_end(&buf, &mut searched) {
            if end > limits.max_bytes {
                return Head::TooLarge;
            }
            if header_lines(&buf[..end]) > limits.max_headers {
                return Head::TooManyHeaders;
            }
            return Head::Complete { buf, end };
        }
        if buf.len() >= limits.max_bytes {
            return Head::TooLarge;
        }
        if buf.len() == buf.capacity() {
            // Exact steps, capped at the limit: the buffer is never much larger than what the
            // client sent.
            buf.reserve_exact(STEP.min(limits.max_bytes - buf.len()).max(1));
        }
        tokio::select! {
            read = stream.read_buf(&mut buf) => match read {
                Ok(n) if n > 0 => {}
                _ => return Head::Closed,
            },
            () = &mut deadline => return Head::TimedOut,
        }
    }
}

/// What reading the rest of a request came to.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Rest {
    /// `buf` holds at least the bytes asked for.
    Complete,
    /// The deadline passed first (408).
    TimedOut,
    /// The client closed or reset the connection: nothing to answer.
    Closed,
}

/// Reads until `buf` holds at least `upto` bytes (the request's head and its small body), by
/// `deadline`. The buffer grows once, to what is missing and one step more: bytes that follow
/// the body in the same reads (a request pipelined behind it) are read with it, as the head's
/// reads do, and stay the next request's.
pub(crate) async fn read_rest<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
    upto: usize,
    deadline: Instant,
) -> Rest {
    let missing = upto.saturating_sub(buf.len());
    if buf.capacity() - buf.len() < missing + STEP {
        buf.reserve_exact(missing + STEP);
    }
    while buf.len() < upto {
        match tokio::time::timeout_at(deadline, stream.read_buf(buf)).await {
            Ok(Ok(n)) if n > 0 => {}
            Ok(_) => return Rest::Closed,
            Err(_) => return Rest::TimedOut,
        }
    }
    Rest::Complete
}

/// Header lines of a complete head: its lines minus the request line and the empty last one.
fn header_lines(head: &[u8]) -> usize {
    let lines = head.iter().filter(|b| **b == b'\n').count();
    lines.saturating_sub(2)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> HeadLimits {
        HeadLimits {
            max_bytes: 64,
            max_headers: 2,
            timeout: Duration::from_millis(200),
        }
    }

    async fn read_all(input: &[u8]) -> Head {
        let (mut client, mut server) = tokio::io::duplex(1024);
        tokio::io::AsyncWriteExt::write_all(&mut client, input)
            .await
            .unwrap();
        read(&mut server, Vec::new(), &limits()).await
    }

    #[tokio::test]
    async fn a_complete_head_is_returned_with_what_followed() {
        match read_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nrest").await {
            Head::Complete { buf, end } => {
                assert_eq!(&buf[end..], b"rest");
                assert_eq!(end, 27);
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn bounds_are_enforced() {
        assert!(matches!(
            read_all(b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n").await,
            Head::TooManyHeaders
        ));
        let long = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(80));
        assert!(matches!(read_all(long.as_bytes()).await, Head::TooLarge));
        let unfinished = format!("GET /{}", "a".repeat(80));
        assert!(matches!(
            read_all(unfinished.as_bytes()).await,
            Head::TooLarge
        ));
        // Still within bounds, but never finished: the deadline answers.
        assert!(matches!(
            read_all(b"GET / HTTP/1.1\r\n").await,
            Head::TimedOut
        ));
    }

    #[tokio::test]
    async fn a_trickled_head_over_the_limit_is_refused() {
        let (mut client, mut server) = tokio::io::duplex(16);
        let writer = tokio::spawn(async move {
            for _ in 0..100 {
                if tokio::io::AsyncWriteExt::write_all(&mut client, b"a")
                    .await
                    .is_err()
                {
                    break;
                }
            }
        });
        let limits = HeadLimits {
            max_bytes: 50,
            ..limits()
        };
        assert!(matches!(
            read(&mut server, vec![b'G'], &limits).await,
            Head::TooLarge
        ));
        writer.abort();
    }

    #[tokio::test]
    async fn the_rest_of_a_request_is_read_up_to_its_end_by_the_deadline() {
        let (mut client, mut server) = tokio::io::duplex(1024);
        let deadline = || Instant::now() + Duration::from_secs(10);
        let mut buf = b"HEAD".to_vec();
        let writer = tokio::spawn(async move {
            for piece in [&b"bo"[..], b"dy", b"NEXT"] {
                tokio::io::AsyncWriteExt::write_all(&mut client, piece)
                    .await
                    .unwrap();
                tokio::task::yield_now().await;
            }
            client
        });
        assert_eq!(
            read_rest(&mut server, &mut buf, 8, deadline()).await,
            Rest::Complete
        );
        assert!(buf.starts_with(b"HEADbody"), "{buf:?}");
        let client = writer.await.unwrap();
        // What follows the body is kept after it (read with it, or still in the stream).
        while buf.len() < b"HEADbodyNEXT".len() {
            server.read_buf(&mut buf).await.unwrap();
        }
        assert_eq!(buf, b"HEADbodyNEXT");
        // Nothing more comes: the deadline answers; the client goes: closed.
        let mut buf = b"HEAD".to_vec();
        let soon = Instant::now() + Duration::from_millis(100);
        assert_eq!(
            read_rest(&mut server, &mut buf, 100, soon).await,
            Rest::TimedOut
        );
        drop(client);
        assert_eq!(
            read_rest(&mut server, &mut buf, 100, deadline()).await,
            Rest::Closed
        );
    }
}
