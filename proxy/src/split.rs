//! The traffic split: which side of a `split = {to, percent, sticky}` a request lands on.
//!
//! The sticky key (a cookie, a header, or the client address) is hashed with a fixed-key
//! SipHash together with the target upstream's name into a bucket in 0..10_000; the request goes
//! to the new side when `bucket < basis_points`. So:
//! - the same key always lands on the same side for a given percent (no state to share between
//!   proxy instances or across restarts: every instance computes the same bucket);
//! - raising the percent only moves keys from the old side to the new one, and lowering it only
//!   moves them back (the buckets below the threshold are a superset);
//! - salting with the target's name keeps one user's reads and writes of the same service on the
//!   same side, while canaries of different services are independent.
//!
//! Requests without the key are split on their own, at random, in the same proportion.

use std::hash::Hasher;
use std::net::IpAddr;

use siphasher::sip::SipHasher13;

use crate::config::{SplitSpec, StickyKey};

/// Fixed key: buckets must agree across instances and releases. Changing it reshuffles users.
const BUCKET_KEY: (u64, u64) = (0x6261_6e79_616e_2d73, 0x706c_6974_2d76_3031);

/// The bucket (0..10_000) of `key` for a split towards `target`.
pub(crate) fn bucket(target: &str, key: &[u8]) -> u32 {
    let mut h = SipHasher13::new_with_keys(BUCKET_KEY.0, BUCKET_KEY.1);
    h.write(target.as_bytes());
    h.write_u8(0xff);
    h.write(key);
    (h.finish() % 10_000) as u32
}

pub(crate) use crate::edge::headers::Headers;

/// The sticky key of a request, if it has one.
pub(crate) fn sticky_key<'a, H: Headers + ?Sized>(
    sticky: &StickyKey,
    headers: &'a H,
    client: Option<IpAddr>,
) -> Option<std::borrow::Cow<'a, [u8]>> {
    match sticky {
        StickyKey::Cookie(name) => {
            cookie(headers, name).map(|v| std::borrow::Cow::Borrowed(v.as_bytes()))
        }
        StickyKey::Header(name) => headers
            .values(name.as_str())
            .next()
            .filter(|v| !v.is_empty())
            .map(std::borrow::Cow::Borrowed),
        StickyKey::ClientAddr => {
            client.map(|ip| std::borrow::Cow::Owned(ip.to_string().into_bytes()))
        }
        StickyKey::PerRequest => None,
    }
}

/// The value of cookie `name` in the request's `Cookie` headers (those that are visible ASCII,
/// as `HeaderValue::to_str` takes them).
pub(crate) fn cookie<'a, H: Headers + ?Sized>(headers: &'a H, name: &str) -> Option<&'a str> {
    headers
        .values("cookie")
        .filter(|v| crate::edge::headers::is_header_string(v))
        .filter_map(|v| std::str::from_utf8(v).ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty())
}

/// True when the request goes to the split's new side, which takes `basis_points` of keys
/// (the split's own, or a rollout's current step).
pub(crate) fn goes_to_new_side<H: Headers + ?Sized>(
    split: &SplitSpec,
    basis_points: u32,
    headers: &H,
    client: Option<IpAddr>,
) -> bool {
    if basis_points == 0 {
        return false;
    }
    if basis_points >= 10_000 {
        return true;
    }
    match sticky_key(&split.sticky, headers, client) {
        Some(key) => bucket(&split.to, &key) < basis_points,
        None => rand::random::<u32>() % 10_000 < basis_points,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderMap;

    #[test]
    fn buckets_are_stable_and_uniform() {
        assert_eq!(bucket("catalog", b"abc"), bucket("catalog", b"abc"));
        let n = 20_000;
        let under_30 = (0..n)
            .filter(|i| bucket("catalog", format!("user-{i}").as_bytes()) < 3000)
            .count();
        let share = under_30 as f64 / n as f64;
        assert!((0.28..0.32).contains(&share), "{share}");
    }

    #[test]
    fn raising_the_percent_only_moves_keys_to_the_new_side() {
        let split = |bp| SplitSpec {
            to: "catalog".into(),
            basis_points: bp,
            sticky: StickyKey::Cookie("sid".into()),
        };
        for i in 0..2_000 {
            let mut h = HeaderMap::new();
            h.insert("cookie", format!("sid=s{i}").parse().unwrap());
            let at30 = goes_to_new_side(&split(3000), 3000, &h, None);
            let at60 = goes_to_new_side(&split(6000), 6000, &h, None);
            assert!(
                !at30 || at60,
                "key s{i} left the new side when the percent rose"
            );
        }
    }

    #[test]
    fn keys() {
        let mut h = HeaderMap::new();
        h.insert("cookie", "a=1; sid=xyz".parse().unwrap());
        h.insert("x-user", "42".parse().unwrap());
        assert_eq!(cookie(&h, "sid"), Some("xyz"));
        assert_eq!(cookie(&h, "id"), None);
        let hk = sticky_key(&StickyKey::Header("x-user".parse().unwrap()), &h, None).unwrap();
        assert_eq!(&*hk, b"42");
        assert!(sticky_key(&StickyKey::ClientAddr, &h, None).is_none());
    }

    #[test]
    fn the_parsed_head_and_the_header_map_give_the_same_keys() {
        let parsed = [
            httparse::Header {
                name: "Cookie",
                value: b"theme=dark",
            },
            httparse::Header {
                name: "X-User",
                value: b"42",
            },
            httparse::Header {
                name: "COOKIE",
                value: b"a=1; sid=s-9; b=2",
            },
            httparse::Header {
                name: "cookie",
                value: b"sid=\xffbad",
            },
        ];
        let mut map = HeaderMap::new();
        for h in &parsed {
            map.append(
                http::HeaderName::from_bytes(h.name.as_bytes()).unwrap(),
                http::HeaderValue::from_bytes(h.value).unwrap(),
            );
        }
        for sticky in [
            StickyKey::Cookie("sid".into()),
            StickyKey::Cookie("theme".into()),
            StickyKey::Cookie("none".into()),
            StickyKey::Header("x-user".parse().unwrap()),
            StickyKey::Header("x-none".parse().unwrap()),
        ] {
            assert_eq!(
                sticky_key(&sticky, &parsed[..], None),
                sticky_key(&sticky, &map, None),
                "{sticky:?}"
            );
        }
        assert_eq!(cookie(&parsed[..], "sid"), Some("s-9"));
    }
}
