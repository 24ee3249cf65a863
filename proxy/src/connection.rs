//! Client connections between requests: an idle keep-alive connection waits in a small future.
//!
//! Pingora runs each client connection as one task and, left to itself, waits for the next
//! request of a kept-alive connection inside the request-handling future: one boxed state
//! machine sized for the whole proxy path (upstream connection, both directions of the body,
//! every filter phase), plus the request-head buffer, all held while the client says nothing.
//! With 10,000 idle clients that was 26 KiB of RSS per connection (bench/RESULTS.md, idle-10k).
//!
//! [`Connections`] takes over the HTTP/1.1 keep-alive loop Pingora's blanket `ServerApp` runs for
//! an [`HttpServerApp`]: between requests it holds only the socket, a bare tokio stream (not
//! Pingora's `Stream` around it: with it, its socket digest and what came with them an idle
//! connection took 2.8 KiB, without them 1.6; bench/RESULTS.md, idle-10k), and waits for the first
//! bytes of the next request (or the keep-alive timeout, or shutdown). Those bytes go to the fast
//! path ([`crate::fast_path`]), which answers the request itself when it qualifies; otherwise the
//! socket is wrapped in Pingora's `Stream`, the bytes are put back in front of it (`rewind`),
//! Pingora's request-handling future parses the request from its first byte, and once the answer is
//! written the socket is taken back as a bare stream (a duplicated descriptor, as
//! [`crate::balance::register_here`] does) and Pingora's stream and future are freed. The wait
//! reads into a per-thread scratch buffer and copies out only what arrived, so an idle connection
//! holds no buffer and a request costs one read.
//!
//! Each connection first moves to the worker thread serving the fewest connections
//! ([`crate::balance`]; Pingora's own placement is random), and its socket is registered with
//! that thread's event loop rather than the accepting thread's.
//!
//! Every request's head is read whole, within the `[proxy]` bounds, by [`crate::edge::head`],
//! and inspected by [`crate::edge::request`] before either pipeline sees it: what the edge
//! refuses is answered here, the same whichever pipeline would have served it. A small
//! `Content-Length` body (at most 16 KiB) that did not come with the head is read here too,
//! within the head's deadline (else 408), so both pipelines get the request whole and the fast
//! path can take writes from clients that send head and body in two writes. Pipelined
//! requests are answered in order: bytes read past a request (a bodiless one, or one whose
//! whole body came with it) are kept here as the beginning of the next, and Pingora is handed
//! only the bytes that are its request's. At shutdown an idle connection that answered within
//! the last second waits that long for a request that may be on its way and answers it (with
//! `Connection: close`), so closing never leaves a request sent on a kept-alive connection
//! without an answer.
//!
//! What the loop keeps from Pingora's: keep-alive on for 60 s unless shutting down, the server
//! options' `keepalive_request_limit`, and the per-connection settings Pingora carries from one
//! request to the next. Banyan serves cleartext HTTP/1.1 only (no TLS, no h2c), so the other
//! branches of Pingora's loop do not apply. Pingora's own pipelining stays off: it only ever
//! gets one request's bytes, and should a client send the next request before the answer to one
//! Pingora's pipeline is serving (after a chunked or large body, which RFC 9112 §9.3.2 asks
//! clients not to pipeline behind), Pingora ends the exchange and the connection closes; the
//! client then sends what was not answered again, as §9.3.2 expects of it. It is logged as
//! `client_gone` and never counted against the upstream ([`crate::forward`]'s error mapping).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora_core::apps::{HttpServerApp, ServerApp};
use pingora_core::protocols::Stream;
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::l4::stream::Stream as TcpClient;
use pingora_core::server::ShutdownWatch;
use tokio::net::TcpStream;

use crate::balance::{Live, Workers};
use crate::edge::failure::Failure;
use crate::edge::head::{self, Head, HeadLimits, Rest};
use crate::edge::headers;
use crate::edge::record::{Pipeline, Record};
use crate::edge::reply::write_error;
use crate::edge::request::{self, Body};
use crate::fast_path::{self, Exchange, FastPath};
use crate::lifecycle::Lifecycle;

#[cfg(test)]
mod allocations;

/// How long a kept-alive client connection may stay idle between requests (Pingora's default).
pub(crate) const KEEPALIVE: Duration = Duration::from_secs(60);

/// The most a request's first read takes (the rest of a longer head is read by
/// [`crate::edge::head`]).
const FIRST_READ: usize = 16 * 1024;

/// Serves client connections, one request at a time, idle in between without the
/// request-handling state (see the module docs): each request on [`FastPath`] when it
/// qualifies, otherwise on `A` (Pingora's proxy pipeline).
pub(crate) struct Connections<A> {
    pub app: Arc<A>,
    pub fast: FastPath,
    /// Where new connections go: the worker thread with the fewest.
    pub workers: Arc<Workers>,
    /// Told when the listener is closed, for the drain at shutdown.
    pub lifecycle: Arc<Lifecycle>,
}

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
        let (this, shutdown) = (self.clone(), shutdown.clone());
        self.workers
            .place(move |live| this.serve(stream, shutdown, live));
        None
    }

    /// Called once the listener has stopped accepting and is closed (at shutdown).
    async fn cleanup(&self) {
        self.lifecycle.listener_closed();
        self.app.http_cleanup().await;
    }
}

impl<A> Connections<A>
where
    A: HttpServerApp + Send + Sync + 'static,
{
    /// One client connection, request after request, until it closes (see the module docs);
    /// `live` counts it on its thread until then.
    async fn serve(self: Arc<Self>, stream: Stream, shutdown: ShutdownWatch, live: Live) {
        // Served on the thread its events arrive at, as a bare socket (see `register_here`).
        // Banyan's listeners are plain TCP; a socket that cannot be taken over (no descriptor
        // left for its duplicate) is closed, as an accept would have failed a moment earlier.
        let bare = match stream.into_any().downcast::<TcpClient>() {
            Ok(tcp) => crate::balance::register_here(&*tcp),
            Err(_) => None,
        };
        if let Some(tcp) = bare {
            let client_ip = tcp.peer_addr().ok().map(|a| a.ip());
            self.requests(tcp, client_ip, &shutdown).await;
        }
        drop(live);
    }

    /// The connection's requests; `None` when it is over (the `Option` is for `?`).
    async fn requests(
        &self,
        mut tcp: TcpStream,
        client_ip: Option<IpAddr>,
        shutdown: &ShutdownWatch,
    ) -> Option<()> {
        let app = &self.app;
        let mut settings: Option<pingora_core::apps::HttpPersistentSettings> = None;
        let mut first = true;
        // When the last answer left: a request may be on its way for a moment after it.
        let mut answered = Instant::now();
        // Bytes already read past the last request: the beginning of the next (pipelined).
        let mut pending: Option<Vec<u8>> = None;
        loop {
            let begun = match pending.take() {
                Some(bytes) => bytes,
                None => next_request_begins(&mut tcp, shutdown, answered).await?,
            };
            let started = Instant::now();
            let limits = self.fast.live.current().config.proxy.head;
            // The head's read is smaller than the idle wait, so it shares that room in this
            // loop's future; refusing is rare, and boxed rather than sized in.
            let (buf, end) = match head::read(&mut tcp, begun, &limits).await {
                Head::Complete { buf, end } => (buf, end),
                Head::Closed => return None,
                refused => {
                    Box::pin(self.refuse_head(&mut tcp, &refused, &limits, started)).await;
                    return None;
                }
            };
            let (mut buf, mut end) = (buf, end);
            let dispatched = loop {
                // Boxed: the exchange's state (parsed header arrays, buffers, the upstream
                // connection) is several KiB, and held inline it would size this loop's future,
                // which every idle connection keeps. Allocated per request, freed with it.
                match Box::pin(self.dispatch(&mut tcp, &buf, end, client_ip, started)).await {
                    // An absolute-form target: the same request again, as origin-form (which
                    // it then is, so this comes once).
                    Dispatch::Rewritten { head } => {
                        let mut rewritten = head;
                        let head_end = rewritten.len();
                        rewritten.extend_from_slice(&buf[end..]);
                        crate::buffers::give(std::mem::replace(&mut buf, rewritten));
                        end = head_end;
                    }
                    // A small body still coming: read within the head's deadline, then the
                    // same request again, whole (which it then is, so this comes once).
                    Dispatch::BodyComing { upto } => {
                        let deadline = tokio::time::Instant::from_std(started + limits.timeout);
                        match Box::pin(head::read_rest(&mut tcp, &mut buf, upto, deadline)).await {
                            Rest::Complete => {}
                            Rest::Closed => return None,
                            Rest::TimedOut => {
                                let failure = Failure::BodyTimeout(limits.timeout);
                                let request_id = service_kit::telemetry::new_request_id();
                                Box::pin(self.refuse(
                                    &mut tcp,
                                    "-",
                                    &failure,
                                    &request_id,
                                    started,
                                ))
                                .await;
                                return None;
                            }
                        }
                    }
                    dispatched => break dispatched,
                }
            };
            let upto = match dispatched {
                Dispatch::Served {
                    keep_alive: true,
                    upto,
                } => {
                    answered = Instant::now();
                    pending = (buf.len() > upto).then(|| kept(&buf[upto..]));
                    crate::buffers::give(buf);
                    continue;
                }
                Dispatch::Served {
                    keep_alive: false, ..
                }
                | Dispatch::Closed => return None,
                Dispatch::Rewritten { .. } | Dispatch::BodyComing { .. } => {
                    unreachable!("dispatched again above")
                }
                Dispatch::HandOver { upto } => upto,
            };
            // Pingora's parser reads the request (its head complete, and as much of its body as
            // came) from its first byte; a request pipelined behind it waits here for its turn.
            // The session is built and handed over in a block of its own: a local that lived on
            // beside the await (moved out or not) would keep its space in this loop's future,
            // which every idle connection holds.
            let handled = {
                let mut wrapped = crate::balance::for_pingora(tcp);
                wrapped.rewind(&buf[..upto]);
                pending = (buf.len() > upto).then(|| kept(&buf[upto..]));
                crate::buffers::give(buf);
                let mut session = ServerSession::new_http1(Box::new(wrapped));
                match settings.take() {
                    Some(settings) => settings.apply_to_session(&mut session),
                    None if first => {
                        session.set_keepalive((!*shutdown.borrow()).then_some(KEEPALIVE.as_secs()));
                        session.set_keepalive_reuses_remaining(
                            app.server_options().and_then(|o| o.keepalive_request_limit),
                        );
                    }
                    None => session.set_keepalive(Some(KEEPALIVE.as_secs())),
                }
                app.process_new_http(session, shutdown)
            };
            first = false;
            let (next, kept_settings) = handled.await?.consume();
            answered = Instant::now();
            settings = kept_settings;
            // Back to a bare socket for the wait (Pingora's stream is dropped: its descriptor
            // closes, the duplicate carries on).
            tcp = {
                let wrapped = next.into_any().downcast::<TcpClient>().ok()?;
                crate::balance::register_here(&*wrapped)?
            };
        }
    }

    /// The edge's look at a complete request head (`buf[..end]`): refused here (400) when
    /// [`request::inspect`] says so, else answered by the fast path when it takes it, else
    /// handed to Pingora's pipeline with the bytes that are this request's.
    async fn dispatch(
        &self,
        tcp: &mut TcpStream,
        buf: &[u8],
        end: usize,
        client_ip: Option<IpAddr>,
        started: Instant,
    ) -> Dispatch {
        let table = self.fast.live.current();
        // On the heap, sized by the bound the head reader enforced: held inline, the array
        // would be part of this future, which is moved into its box on every request (measured:
        // a memcpy of several KiB a request). Kept per thread for the next request.
        let mut slots = crate::buffers::slots(table.config.proxy.head.max_headers + 1);
        let dispatched = self
            .dispatch_parsed(tcp, buf, end, &mut slots, table, client_ip, started)
            .await;
        crate::buffers::give_slots(slots);
        dispatched
    }

    /// [`Self::dispatch`] with the slots the head is parsed into.
    #[allow(clippy::too_many_arguments)]
    async fn dispatch_parsed<'b>(
        &self,
        tcp: &mut TcpStream,
        buf: &'b [u8],
        end: usize,
        slots: &mut [httparse::Header<'b>],
        table: Arc<crate::route_table::RouteTable>,
        client_ip: Option<IpAddr>,
        started: Instant,
    ) -> Dispatch {
        let mut req = httparse::Request::new(slots);
        let parsed = req.parse(&buf[..end]);
        let inspected = match parsed {
            Ok(httparse::Status::Complete(_)) => request::inspect(&req),
            _ => Err(Failure::BadRequest("malformed request head".into())),
        };
        let inspected = match inspected {
            Ok(i) => i,
            Err(failure) => {
                let request_id = headers::request_id(req.headers);
                self.refuse(
                    tcp,
                    req.method.unwrap_or("-"),
                    &failure,
                    &request_id,
                    started,
                )
                .await;
                return Dispatch::Served {
                    keep_alive: false,
                    upto: end,
                };
            }
        };
        if inspected.host_from_target {
            return Dispatch::Rewritten {
                head: request::origin_form(&req, &inspected),
            };
        }
        if let Some(upto) = inspected.body_still_coming(end, buf.len() - end) {
            return Dispatch::BodyComing { upto };
        }
        if let Some(taken) = fast_path::takes(&table, &req, &inspected, buf.len() - end) {
            let upto = end + taken.body;
            return match self
                .fast
                .serve(
                    tcp,
                    table,
                    &req,
                    &inspected,
                    taken.method,
                    &buf[end..upto],
                    client_ip,
                    started,
                )
                .await
            {
                Exchange::Served { keep_alive } => Dispatch::Served { keep_alive, upto },
                Exchange::Closed => Dispatch::Closed,
            };
        }
        let upto = match inspected.body {
            Body::None => end,
            Body::Length(n) if (buf.len() - end) as u64 >= n => end + n as usize,
            // The body is still coming (or chunked): all that came is this request's.
            _ => buf.len(),
        };
        Dispatch::HandOver { upto }
    }

    /// Answers a request the edge refuses itself, counts and logs it.
    async fn refuse(
        &self,
        tcp: &mut TcpStream,
        method: &str,
        failure: &Failure,
        request_id: &str,
        started: Instant,
    ) {
        let mut status = 0;
        if let Some(answer) = failure.answer("")
            && write_error(
                tcp,
                &answer,
                request_id,
                method == "HEAD",
                failure.retry_after(),
            )
            .await
        {
            status = answer.status.as_u16();
        }
        Record {
            pipeline: Pipeline::Edge,
            started,
            method,
            path: "-",
            status,
            route: "-",
            upstream: "-",
            backend: None,
            attempts: 0,
            request_id,
            failure: Some(failure),
        }
        .finish(&self.fast.metrics);
    }

    /// Answers a head over its bounds (431, or 408 when it came too slowly), counts and logs it.
    async fn refuse_head(
        &self,
        tcp: &mut TcpStream,
        refused: &Head,
        limits: &HeadLimits,
        started: Instant,
    ) {
        let failure = match refused {
            Head::TimedOut => Failure::HeadTimeout(limits.timeout),
            Head::TooManyHeaders => Failure::TooManyHeaders(limits.max_headers),
            _ => Failure::HeadTooLarge(limits.max_bytes),
        };
        let request_id = service_kit::telemetry::new_request_id();
        self.refuse(tcp, "-", &failure, &request_id, started).await;
    }
}

/// What the edge made of one request.
enum Dispatch {
    /// Answered (by the edge or the fast path); `keep_alive`: the connection carries on, and
    /// what came after `buf[..upto]` (the request's head and body) is the next request's.
    Served { keep_alive: bool, upto: usize },
    /// The client went away.
    Closed,
    /// An absolute-form target: this head (origin-form, the authority as `Host`) replaces the
    /// one read, and the request is dispatched again.
    Rewritten { head: Vec<u8> },
    /// A small body is still coming ([`request::Inspected::body_still_coming`]): once `buf`
    /// holds `buf[..upto]`, the request is dispatched again.
    BodyComing { upto: usize },
    /// For Pingora's pipeline: `buf[..upto]` is this request's (its head and what came of its
    /// body); anything after it is the next request's.
    HandOver { upto: usize },
}

/// Waits, holding only the socket, for the client's next request and returns its first bytes.
/// `None` when the client closed the connection, stayed idle past [`KEEPALIVE`], or the server
/// is shutting down and no request came within [`LINGER`] of the last answer.
///
/// The wait holds no buffer: each poll reads into this thread's scratch buffer and only bytes
/// that arrived are copied out, so an idle connection costs its socket and this small future,
/// and a request costs one read (where a peek and then a read cost two).
///
/// This future is what an idle connection is, so it is kept small: one timer and the shutdown
/// watch; the wait at shutdown ([`linger`], a timer of its own) is boxed when it comes.
async fn next_request_begins(
    stream: &mut TcpStream,
    shutdown: &ShutdownWatch,
    answered: Instant,
) -> Option<Vec<u8>> {
    let mut read = std::future::poll_fn(|cx| poll_first_bytes(stream, cx));
    if !*shutdown.borrow() {
        let mut shutdown = shutdown.clone();
        tokio::select! {
            read = tokio::time::timeout(KEEPALIVE, &mut read) => return match read {
                Ok(Ok(bytes)) if !bytes.is_empty() => Some(bytes),
                // Closed, reset, or idle too long.
                _ => None,
            },
            _ = shutdown.changed() => {}
        }
    }
    Box::pin(linger(read, answered)).await
}

/// How long after its last answer a connection still waits for a request once the proxy is
/// closing: the answer promised keep-alive, and the client may have sent its next request
/// before it learnt of the close. Such a request is answered (with `Connection: close`) rather
/// than left without an answer.
const LINGER: Duration = Duration::from_secs(1);

/// At shutdown: the next request's first bytes if they come within [`LINGER`] of the last
/// answer (at once if they are already there), else `None` (the connection closes).
async fn linger(
    read: impl std::future::Future<Output = std::io::Result<Vec<u8>>>,
    answered: Instant,
) -> Option<Vec<u8>> {
    let until = tokio::time::Instant::from_std(answered + LINGER);
    match tokio::time::timeout_at(until, read).await {
        Ok(Ok(bytes)) if !bytes.is_empty() => Some(bytes),
        _ => None,
    }
}

thread_local! {
    /// Where a waiting connection's read lands before its bytes are copied out.
    static SCRATCH: std::cell::RefCell<Vec<u8>> =
        std::cell::RefCell::new(vec![0; FIRST_READ]);
}

fn poll_first_bytes(
    stream: &mut TcpStream,
    cx: &mut std::task::Context<'_>,
) -> std::task::Poll<std::io::Result<Vec<u8>>> {
    use tokio::io::AsyncRead;
    SCRATCH.with(|scratch| {
        let mut scratch = scratch.borrow_mut();
        let mut buf = tokio::io::ReadBuf::new(&mut scratch);
        std::pin::Pin::new(&mut *stream)
            .poll_read(cx, &mut buf)
            .map_ok(|()| kept(buf.filled()))
    })
}

/// `bytes` in a buffer of this thread's ([`crate::buffers`]), with room for the rest of a
/// usual head.
fn kept(bytes: &[u8]) -> Vec<u8> {
    let mut buf = crate::buffers::take(bytes.len().max(1024));
    buf.extend_from_slice(bytes);
    buf
}
