//! The units `routes.toml` writes values in: durations (`500ms`, `2s`, `1m`, `1h`), sizes
//! (`512B`, `64KiB`, `1MiB`) and addresses (`host:port`, resolved at load), each checked
//! against its range with a located error.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use toml::Spanned;

use super::error::Checker;

/// `500ms`, `2s`, `1m`, `1h`.
pub(crate) fn parse_duration(s: &str) -> Option<Duration> {
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().ok()?;
    match unit {
        "ms" => Some(Duration::from_millis(n)),
        "s" => Some(Duration::from_secs(n)),
        "m" => n.checked_mul(60).map(Duration::from_secs),
        "h" => n.checked_mul(3600).map(Duration::from_secs),
        _ => None,
    }
}

/// `512B`, `64KiB`, `1MiB` (binary units; `KB`/`MB` are refused as ambiguous).
pub(crate) fn parse_size(s: &str) -> Option<usize> {
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = s.split_at(split);
    let n: usize = n.parse().ok()?;
    match unit {
        "B" => Some(n),
        "KiB" => n.checked_mul(1024),
        "MiB" => n.checked_mul(1024 * 1024),
        _ => None,
    }
}

impl Checker<'_> {
    pub(super) fn duration(
        &mut self,
        v: &Option<Spanned<String>>,
        default: Duration,
        range: (Duration, Duration),
        what: &str,
    ) -> Duration {
        let Some(v) = v else { return default };
        match parse_duration(v.get_ref()) {
            Some(d) if d >= range.0 && d <= range.1 => d,
            Some(_) => {
                self.at(
                    v.span(),
                    format!("{what} must be between {:?} and {:?}", range.0, range.1),
                );
                default
            }
            None => {
                self.at(v.span(), format!("invalid duration {:?}: expected a number and a unit, such as 500ms, 2s or 1m", v.get_ref()));
                default
            }
        }
    }

    /// A whole number from 1 to `max` (`default` when absent, or after reporting one outside).
    pub(super) fn count(
        &mut self,
        v: &Option<Spanned<i64>>,
        default: usize,
        max: i64,
        what: &str,
    ) -> usize {
        match v {
            Some(n) if (1..=max).contains(n.get_ref()) => *n.get_ref() as usize,
            Some(n) => {
                self.at(n.span(), format!("{what} must be between 1 and {max}"));
                default
            }
            None => default,
        }
    }

    pub(super) fn size(
        &mut self,
        v: &Option<Spanned<String>>,
        default: usize,
        what: &str,
    ) -> usize {
        let Some(v) = v else { return default };
        match parse_size(v.get_ref()) {
            Some(n) if n <= 64 * 1024 * 1024 => n,
            Some(_) => {
                self.at(v.span(), format!("{what} must be at most 64MiB"));
                default
            }
            None => {
                self.at(
                    v.span(),
                    format!(
                        "invalid size {:?}: expected a number and a unit, such as 512B, 64KiB or 1MiB",
                        v.get_ref()
                    ),
                );
                default
            }
        }
    }

    pub(super) fn address(&mut self, v: &Spanned<String>) -> Option<SocketAddr> {
        let s = v.get_ref();
        if let Ok(a) = s.parse::<SocketAddr>() {
            return Some(a);
        }
        let Some((host, port)) = s.rsplit_once(':') else {
            self.at(
                v.span(),
                format!("invalid address {s:?}: expected host:port"),
            );
            return None;
        };
        if host.is_empty() || port.parse::<u16>().is_err() {
            self.at(
                v.span(),
                format!("invalid address {s:?}: expected host:port"),
            );
            return None;
        }
        match s.to_socket_addrs().map(|mut a| a.next()) {
            Ok(Some(a)) => Some(a),
            _ => {
                self.at(v.span(), format!("address {s:?} does not resolve"));
                None
            }
        }
    }
}
