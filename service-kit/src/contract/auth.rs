//! Users and sessions: `/api/auth/*`.
//!
//! The monolith and the auth service validate registrations and logins with these functions and
//! answer with these messages, so their answers match byte for byte. Passwords are hashed as
//! argon2 PHC strings ([`crate::password`]), which either side verifies: a user registered
//! through one logs in through the other.

use serde::{Deserialize, Serialize};

use crate::error::ErrorResponse;
use crate::extract::JsonObject;

/// A user as the API shows it (never with the password hash).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct User {
    pub id: i64,
    pub email: String,
    pub name: String,
    pub role: String,
    pub created_at: String,
}

/// A valid registration: the email lower-cased, the password still in clear (hash it next).
#[derive(Debug)]
pub struct Registration {
    pub email: String,
    pub password: String,
    pub name: String,
}

impl Registration {
    pub fn parse(body: &JsonObject) -> Result<Self, ErrorResponse> {
        let mut f = body.fields();
        f.reject_unknown(&["email", "password", "name"], &[]);
        let email = f.string("email", 3..=254).map(|e| e.to_lowercase());
        if let Some(problem) = email.as_deref().and_then(email_problem) {
            f.fail("email", problem);
        }
        let password = f.string("password", 8..=128);
        let name = f.string("name", 1..=100);
        f.finish()?;
        Ok(Self {
            email: email.unwrap_or_default(),
            password: password.unwrap_or_default(),
            name: name.unwrap_or_default(),
        })
    }
}

/// A well-formed login (whether it is right is the store's business).
#[derive(Debug)]
pub struct Login {
    pub email: String,
    pub password: String,
}

impl Login {
    pub fn parse(body: &JsonObject) -> Result<Self, ErrorResponse> {
        let mut f = body.fields();
        f.reject_unknown(&["email", "password"], &[]);
        let email = f.string("email", 1..=254).map(|e| e.to_lowercase());
        let password = f.string("password", 1..=1024);
        f.finish()?;
        Ok(Self {
            email: email.unwrap_or_default(),
            password: password.unwrap_or_default(),
        })
    }
}

/// The 409 for an email that is taken.
pub fn email_taken() -> ErrorResponse {
    ErrorResponse::conflict("email is already registered")
}

/// The 401 for a failed login: the same for an unknown email and a wrong password.
pub fn bad_credentials() -> ErrorResponse {
    ErrorResponse::unauthorized_with("invalid email or password")
}

/// Checks the shape of an email address: one `@`, a non-empty local part, a dotted domain,
/// no whitespace. Deliverability is not our business.
pub fn email_problem(email: &str) -> Option<&'static str> {
    if email.len() > 254 {
        return Some("must be at most 254 characters long");
    }
    // The document's pattern, exactly: `local@domain`, the local part of RFC 5322's atext and
    // dots, the domain of at least two labels of letters, digits and hyphens.
    let Some((local, domain)) = email.split_once('@') else {
        return Some("must be an email address");
    };
    let local_ok = !local.is_empty()
        && local
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+/=?^_`{|}~.-".contains(&b));
    let labels: Vec<&str> = domain.split('.').collect();
    let domain_ok = labels.len() >= 2
        && labels
            .iter()
            .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    (!(local_ok && domain_ok)).then_some("must be an email address")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_shapes() {
        assert_eq!(email_problem("a@b.co"), None);
        assert!(email_problem("ab.co").is_some());
        assert!(email_problem("@b.co").is_some());
        assert!(email_problem("a@bco").is_some());
        assert!(email_problem("a@b@c.co").is_some());
        assert!(email_problem("a b@c.co").is_some());
        assert!(email_problem("a@b..co").is_some());
        assert!(email_problem("v^w@host.example*").is_some());
        assert!(
            email_problem("caf\u{e9}@b.co").is_some(),
            "ASCII only, as the document says"
        );
        assert_eq!(email_problem("o'brien+x@mail.example-1.com"), None);
    }
}
