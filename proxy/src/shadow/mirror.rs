//! Mirroring: the copy of a sampled request that goes to the candidate, off the client's path.
//!
//! This file is the client's side (the capture); the shadow thread is [`super::thread`], the
//! exchange with the candidate [`super::exchange`], the samples kept for the report
//! [`super::sample`].
//!
//! How a request is shadowed, phase by phase ([`crate::forward`] calls in):
//! 1. routing ([`Mirror::begin`]): the route has a shadow and the request is served by the old
//!    side. Writes stop here unless the route opted in (counted as `writes_not_mirrored`); then
//!    the sample is drawn; a declared body over the cap stops it (`too_large`); and a slot of the
//!    route's in-flight bound is *tried*, never waited for: when none is free the shadow is
//!    dropped and counted (`dropped_in_flight`).
//! 2. request body ([`Mirror::request_body`]): chunks are kept (reference-counted `Bytes`, no
//!    byte copy) while they stream to the primary; past the cap the shadow is abandoned.
//! 3. the primary's answer ([`Mirror::response_header`], [`Mirror::response_body`]): kept the
//!    same way, up to the cap, as it streams to the client.
//! 4. the end of the request ([`Mirror::finish`]): one message to the shadow thread with the
//!    request copy and the primary's answer. Nothing else crosses over.
//!
//! Everything else happens on the shadow thread ([`super::thread`]): the candidate (and, for noise
//! learning, the second primary) get the copy, concurrently, with the route's timeout; the
//! answers are compared; the outcome is recorded. The client's side never takes a lock the
//! shadow side holds, never waits on it and never wakes it: the shadow thread collects messages
//! on a short tick. Events counted on the client's side (drops, caps, writes not mirrored) travel
//! the same way. The inbox is bounded: when the shadow thread is that far behind, a job is shed
//! (counted as `dropped_in_flight`) and an event goes to the route's backlog
//! ([`super::bounds`]), so a starved shadow thread never costs memory.
//!
//! The copy carries the client's headers (minus hop-by-hop ones), the same `X-Forwarded-*`,
//! `X-Request-Id` and `Via` the primary gets, and [`MARKER`], so the candidate knows it is
//! shadow traffic. A client cannot send the marker itself: the primary never receives it.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use tokio::sync::OwnedSemaphorePermit;

use super::answer::Answer;
use super::bounds::Backlog;
use super::endpoint;
use super::results::Event;
use crate::config::ShadowSpec;
use crate::edge::headers::{self, Disposition, EdgeRequest, Headers, Nominated};
use crate::route_table::RouteTable;

use super::exchange::Replica;
use super::thread::{Job, Message, Shadower};

/// Marks a request as shadow traffic. Its value says which copy: `candidate` or
/// `second-primary`.
pub(crate) const MARKER: &str = crate::edge::headers::SHADOW_MARKER;

pub(crate) fn is_write(method: &Method) -> bool {
    matches!(
        *method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    )
}

/// Bodies are *copied* as they pass, not kept by reference: a reference would pin the whole
/// read buffer it was cut from (kilobytes for a 70-byte answer) and stop Pingora from reusing it.
enum State {
    /// Keeping the request body.
    Request { body: BytesMut },
    /// The request body is complete; keeping the primary's answer.
    Answer {
        request_body: Bytes,
        status: u16,
        headers: HeaderMap,
        body: BytesMut,
    },
    /// Abandoned (counted) or handed over.
    Done,
}

/// A shadowed request's state in the client's request context.
pub(crate) struct Mirror {
    shadower: Arc<Shadower>,
    table: Arc<RouteTable>,
    route: usize,
    endpoint: String,
    method: Method,
    target: String,
    headers: HeaderMap,
    permit: Option<OwnedSemaphorePermit>,
    state: State,
}

impl Mirror {
    fn spec(&self) -> &ShadowSpec {
        self.table
            .route(self.route)
            .shadow
            .as_ref()
            .expect("a shadowed route")
    }

    fn abandon(&mut self, event: Event) {
        self.state = State::Done;
        self.permit = None;
        self.shadower.event(
            &self.table.route(self.route).id,
            &self.endpoint,
            event,
            self.backlog(),
        );
    }

    fn backlog(&self) -> &Backlog {
        &self
            .table
            .shadow_bound(self.route)
            .expect("a shadowed route")
            .backlog
    }

    /// Decides whether this request is shadowed (see the module docs, step 1). `served_by` is the
    /// pool the client's request goes to; `edge` gives the headers the primary gets on top of the
    /// client's (`X-Forwarded-*`, `X-Request-Id`, `Via`).
    ///
    /// `client_headers` are either pipeline's (Pingora's map, the fast path's parsed head): the
    /// copy's map is built from them directly, with only the headers it keeps.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn begin<H: Headers + ?Sized>(
        shadower: &Arc<Shadower>,
        table: &Arc<RouteTable>,
        route: usize,
        served_by: &str,
        method: &Method,
        target: &str,
        client_headers: &H,
        edge: &EdgeRequest<'_>,
    ) -> Option<Mirror> {
        let r = table.route(route);
        let spec = r.shadow.as_ref()?;
        let bound = table.shadow_bound(route)?;
        if served_by == spec.to {
            return None;
        }
        let path = target.split('?').next().unwrap_or(target);
        if is_write(method) && !spec.writes {
            let ep = endpoint::template(method.as_str(), path);
            shadower.event(&r.id, &ep, Event::WriteNotMirrored, &bound.backlog);
            return None;
        }
        if spec.basis_points < 10_000 && rand::random::<u32>() % 10_000 >= spec.basis_points {
            return None;
        }
        let ep = endpoint::template(method.as_str(), path);
        let declared = client_headers
            .values("content-length")
            .next()
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|n| n > spec.max_request_body) {
            shadower.event(&r.id, &ep, Event::TooLarge, &bound.backlog);
            return None;
        }
        let Ok(permit) = bound.slots.clone().try_acquire_owned() else {
            shadower.event(&r.id, &ep, Event::DroppedInFlight, &bound.backlog);
            return None;
        };
        // The edge's rules, as for the primary; the copy's body is framed anew, so the
        // framing headers go too. A header a map cannot hold (the fast path's parser is more
        // lenient than `http`'s) means no copy.
        let nominated = Nominated::of(client_headers);
        let mut headers = HeaderMap::with_capacity(client_headers.count() + 6);
        if !client_headers.copy_into(&mut headers, |name| {
            headers::request_header(name, &nominated) == Disposition::Keep
        }) {
            return None;
        }
        for (name, value) in headers::request_additions(edge) {
            if let Ok(value) = HeaderValue::from_bytes(&value) {
                headers.insert(HeaderName::from_static(name), value);
            }
        }
        Some(Mirror {
            shadower: shadower.clone(),
            table: table.clone(),
            route,
            endpoint: ep,
            method: method.clone(),
            target: target.to_owned(),
            headers,
            permit: Some(permit),
            state: State::Request {
                body: BytesMut::with_capacity(declared.unwrap_or(0)),
            },
        })
    }

    /// The primary request is being retried on another backend: Pingora replays the body.
    pub(crate) fn retrying(&mut self) {
        if let State::Request { body } = &mut self.state {
            body.clear();
        }
    }

    /// A chunk of the client's request body (or its end).
    pub(crate) fn request_body(&mut self, chunk: Option<&[u8]>, end: bool) {
        let max = self.spec().max_request_body;
        let State::Request { body } = &mut self.state else {
            return;
        };
        if let Some(c) = chunk.filter(|c| !c.is_empty()) {
            if body.len() + c.len() > max {
                return self.abandon(Event::TooLarge);
            }
            body.extend_from_slice(c);
        }
        if end {
            let request_body = std::mem::take(body).freeze();
            self.state = State::Answer {
                request_body,
                status: 0,
                headers: HeaderMap::new(),
                body: BytesMut::new(),
            };
        }
    }

    /// The primary's response header, as the upstream sent it (the map is kept as given: the
    /// fast path builds one for the mirror alone, Pingora's pipeline hands over a copy).
    pub(crate) fn response_header(&mut self, status: u16, h: HeaderMap) {
        if let State::Answer {
            status: s, headers, ..
        } = &mut self.state
        {
            *s = status;
            *headers = h;
        }
    }

    /// A chunk of the primary's response body.
    pub(crate) fn response_body(&mut self, chunk: Option<&[u8]>) {
        let max = self.spec().max_response_body;
        if let State::Answer { body, .. } = &mut self.state
            && let Some(c) = chunk.filter(|c| !c.is_empty())
        {
            if body.len() + c.len() > max {
                return self.abandon(Event::TooLarge);
            }
            body.extend_from_slice(c);
        }
    }

    /// The client's request is over; `ok` when the primary's answer arrived whole. Hands the
    /// shadow over to the shadow thread.
    pub(crate) fn finish(mut self, ok: bool) {
        match std::mem::replace(&mut self.state, State::Done) {
            State::Answer {
                request_body,
                status,
                headers,
                body,
            } if ok && status > 0 => {
                let Some(permit) = self.permit.take() else {
                    return;
                };
                let job = Job {
                    table: self.table.clone(),
                    route: self.route,
                    endpoint: std::mem::take(&mut self.endpoint),
                    copy: Replica {
                        method: self.method.clone(),
                        target: std::mem::take(&mut self.target),
                        headers: std::mem::take(&mut self.headers),
                        body: request_body,
                    },
                    primary: Answer {
                        status,
                        headers,
                        body: body.freeze(),
                    },
                    _permit: permit,
                };
                let sent = self.shadower.inbox.try_send(Message::Job(Box::new(job)));
                if let Err(std::sync::mpsc::TrySendError::Full(dropped)) = sent {
                    // The shadow thread is that far behind: shed this one (its slot with it).
                    drop(dropped);
                    self.backlog().add(Event::DroppedInFlight);
                }
            }
            State::Done => {}
            // The primary failed or the client went away: nothing to compare with.
            _ => self.abandon(Event::PrimaryFailed),
        }
    }
}
