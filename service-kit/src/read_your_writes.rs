//! Read-your-writes across the cut, for writes the monolith takes and reads a service serves.
//!
//! While reads of a path have moved to a service and its writes still go to the monolith, a
//! user who writes (an admin creating a product, a customer whose order takes stock) and reads
//! right after reaches a copy that follows the monolith's change outbox every 200 ms: the
//! write is not there yet. (The other direction, a service's write needed by the monolith, is
//! settled before the write is answered: [`crate::write_back`].)
//!
//! So the monolith tells the client how far its change streams reached with the write: a
//! short-lived cookie, `banyan_after=p<product_changes seq>.u<user_changes seq>` (10 s,
//! `HttpOnly`), set on every successful write. The proxy passes cookies through untouched, so
//! the user's next request brings it to whichever side serves it. A service that follows a
//! stream answers a request carrying the cookie once its copy has applied the stream up to
//! that position ([`Progress::caught_up_to`]): it asks its follower for a round at once rather
//! than at the next tick, and waits at most [`WAIT`], after which it answers from what it has.
//! Only the user who wrote waits, only on the side that is behind, and usually for one round.
//! A forged or stale cookie can only make its sender's own requests wait, at most [`WAIT`].

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::http::header::COOKIE as COOKIE_HEADER;
use axum::middleware::Next;
use axum::response::Response;
use tokio::sync::{Notify, watch};

/// The cookie's name.
pub const COOKIE: &str = "banyan_after";
/// How long the cookie lives: far longer than a follower's lag, short enough to be gone soon.
pub const MAX_AGE_SECS: u64 = 10;
/// The longest a request waits for its follower to catch up.
pub const WAIT: Duration = Duration::from_secs(1);

/// Positions in the monolith's change streams (0: none).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct After {
    /// `product_changes` (followed by the catalog and search services).
    pub products: i64,
    /// `user_changes` (followed by the auth service).
    pub users: i64,
}

/// One of the monolith's change streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Products,
    Users,
}

impl After {
    /// Parses a cookie value (`p123.u45`, either part optional); anything malformed is none.
    pub fn parse(value: &str) -> After {
        let mut after = After::default();
        for part in value.split('.') {
            let (kind, n) = part.split_at(part.len().min(1));
            let Ok(n) = n.parse::<i64>() else { continue };
            match kind {
                "p" if n > 0 => after.products = n,
                "u" if n > 0 => after.users = n,
                _ => {}
            }
        }
        after
    }

    /// The position the request's `banyan_after` cookie names, if any.
    pub fn from_headers(headers: &HeaderMap) -> After {
        headers
            .get_all(COOKIE_HEADER)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|c| c.trim().split_once('='))
            .filter(|(name, _)| *name == COOKIE)
            .map(|(_, v)| After::parse(v))
            .fold(After::default(), After::max)
    }

    pub fn max(self, other: After) -> After {
        After {
            products: self.products.max(other.products),
            users: self.users.max(other.users),
        }
    }

    pub fn of(&self, stream: Stream) -> i64 {
        match stream {
            Stream::Products => self.products,
            Stream::Users => self.users,
        }
    }

    /// The `Set-Cookie` value that carries this position.
    pub fn set_cookie(&self) -> String {
        format!(
            "{COOKIE}=p{}.u{}; Max-Age={MAX_AGE_SECS}; Path=/; HttpOnly; SameSite=Lax",
            self.products, self.users
        )
    }
}

/// How far a follower has applied its stream, for requests to wait on.
pub struct Progress {
    stream: Stream,
    applied: watch::Sender<i64>,
    nudge: Notify,
}

impl Progress {
    pub fn new(stream: Stream) -> Arc<Self> {
        Arc::new(Self {
            stream,
            applied: watch::Sender::new(0),
            nudge: Notify::new(),
        })
    }

    /// The follower has applied everything up to `position` (its checkpoint).
    pub fn applied(&self, position: i64) {
        self.applied.send_if_modified(|p| {
            let moved = position > *p;
            *p = (*p).max(position);
            moved
        });
    }

    /// Waits for the follower's next round: the next tick, or sooner when a request asks.
    pub async fn next_round(&self, tick: &mut tokio::time::Interval) {
        tokio::select! {
            _ = tick.tick() => {}
            () = self.nudge.notified() => {}
        }
    }

    /// Returns once the follower has applied `after`'s position in its stream (true), or after
    /// [`WAIT`] (false).
    pub async fn caught_up_to(&self, after: &After) -> bool {
        let wanted = after.of(self.stream);
        if wanted == 0 || *self.applied.borrow() >= wanted {
            return true;
        }
        self.nudge.notify_one();
        let mut rx = self.applied.subscribe();
        tokio::time::timeout(WAIT, rx.wait_for(|p| *p >= wanted))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

/// Middleware for a service that follows a stream: a request carrying the cookie is served
/// once the follower has caught up with it (at most [`WAIT`] later).
pub async fn wait_for_own_writes(
    State(progress): State<Arc<Progress>>,
    request: Request,
    next: Next,
) -> Response {
    let after = After::from_headers(request.headers());
    if after != After::default() && !progress.caught_up_to(&after).await {
        tracing::warn!(
            stream = ?progress.stream,
            wanted = after.of(progress.stream),
            applied = *progress.applied.borrow(),
            "answered before this copy caught up with the client's own write"
        );
    }
    next.run(request).await
}

/// `router` with [`wait_for_own_writes`] in front, when the service follows a stream.
pub fn waiting_on(router: axum::Router, progress: Option<Arc<Progress>>) -> axum::Router {
    match progress {
        Some(p) => router.layer(axum::middleware::from_fn_with_state(p, wait_for_own_writes)),
        None => router,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_round_trip_and_garbage_is_none() {
        let a = After {
            products: 123,
            users: 45,
        };
        let cookie = a.set_cookie();
        let value = cookie.split(';').next().unwrap().split_once('=').unwrap().1;
        assert_eq!(After::parse(value), a);
        assert_eq!(
            After::parse("p7"),
            After {
                products: 7,
                users: 0
            }
        );
        for bad in ["", "x", "p", "p-3", "pabc.u", "..", "p99999999999999999999"] {
            assert_eq!(After::parse(bad), After::default(), "{bad}");
        }
        let mut h = HeaderMap::new();
        h.append(
            COOKIE_HEADER,
            "sid=abc; banyan_after=p5.u1".parse().unwrap(),
        );
        h.append(COOKIE_HEADER, "banyan_after=p3.u9".parse().unwrap());
        assert_eq!(
            After::from_headers(&h),
            After {
                products: 5,
                users: 9
            }
        );
    }

    #[tokio::test]
    async fn a_request_waits_until_its_position_is_applied() {
        let p = Progress::new(Stream::Products);
        p.applied(10);
        assert!(
            p.caught_up_to(&After {
                products: 10,
                users: 99
            })
            .await,
            "users are not this stream"
        );
        let waiter = {
            let p = p.clone();
            tokio::spawn(async move {
                p.caught_up_to(&After {
                    products: 12,
                    users: 0,
                })
                .await
            })
        };
        // The waiter asks for a round; the follower runs one and gets there.
        let mut tick = tokio::time::interval(Duration::from_secs(3600));
        tick.tick().await;
        p.next_round(&mut tick).await;
        p.applied(12);
        assert!(waiter.await.unwrap());
    }

    #[tokio::test]
    async fn the_wait_is_bounded() {
        let p = Progress::new(Stream::Users);
        assert!(
            !p.caught_up_to(&After {
                products: 0,
                users: 3
            })
            .await
        );
    }
}
