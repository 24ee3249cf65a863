//! Password hashing, shared so that every process that stores users writes and reads the same
//! format: argon2id PHC strings (`$argon2id$v=19$...`), which carry their own salt and cost.
//!
//! Hashing takes tens of milliseconds by design, so it runs on the blocking pool and never
//! stalls the async workers. A login for an unknown email verifies against a decoy hash, so it
//! costs as much as a wrong password and timing does not tell which emails are registered.

use std::sync::OnceLock;

use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("password hashing failed: {0}")]
    Hashing(String),
    #[error("password hashing task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Hashes `password` with a fresh salt.
pub async fn hash(password: String) -> Result<String, PasswordError> {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| PasswordError::Hashing(e.to_string()))
    })
    .await?
}

/// True when `password` matches `hash`.
pub async fn verify(password: String, hash: String) -> Result<bool, PasswordError> {
    tokio::task::spawn_blocking(move || {
        let parsed = PasswordHash::new(&hash).map_err(|e| PasswordError::Hashing(e.to_string()))?;
        Ok(Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok())
    })
    .await?
}

/// Spends the work of one verification on a hash nobody's password matches (for logins with an
/// unknown email).
pub async fn verify_decoy(password: String) -> Result<(), PasswordError> {
    static DECOY: OnceLock<String> = OnceLock::new();
    let decoy = match DECOY.get() {
        Some(h) => h.clone(),
        None => {
            let h = hash(random_password()).await?;
            DECOY.get_or_init(|| h).clone()
        }
    };
    verify(password, decoy).await?;
    Ok(())
}

/// 24 random characters, for generated credentials.
pub fn random_password() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::rngs::OsRng;
    (0..24)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verify_and_differ() {
        let a = hash("correct horse".into()).await.unwrap();
        let b = hash("correct horse".into()).await.unwrap();
        assert_ne!(a, b, "salted");
        assert!(a.starts_with("$argon2id$"));
        assert!(verify("correct horse".into(), a.clone()).await.unwrap());
        assert!(!verify("wrong horse".into(), a).await.unwrap());
        verify_decoy("anything".into()).await.unwrap();
        assert_eq!(random_password().len(), 24);
        assert_ne!(random_password(), random_password());
    }
}
