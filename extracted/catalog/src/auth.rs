//! Who is calling, from the shared session store. The catalog has no login of its own: the
//! `sid` cookie set by the monolith (or the auth service) is resolved here the same way.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use service_kit::ErrorResponse;
use service_kit::session::{self, Session};

use crate::app::ApiContext;
use crate::error::{Error, Result};

/// An admin's session; 401 without a session, 403 for anybody else.
pub struct AdminUser(pub Session);

impl FromRequestParts<ApiContext> for AdminUser {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, ctx: &ApiContext) -> Result<Self> {
        let session = match session::sid_from_headers(&parts.headers) {
            Some(sid) => ctx.sessions.get(sid).await?,
            None => None,
        };
        match session {
            None => Err(ErrorResponse::unauthorized().into()),
            Some(s) if s.is_admin() => Ok(AdminUser(s)),
            Some(_) => Err(ErrorResponse::forbidden().into()),
        }
    }
}
