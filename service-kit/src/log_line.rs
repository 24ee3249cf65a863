//! The access log's fast path: a line formatted by hand and written out in batches.
//!
//! The proxy writes one access line per request. Through `tracing`'s formatter that line cost
//! about a third of the proxy's own CPU at 40,000 requests/s (`bench/profile`: every field
//! visited through `dyn Debug`, formatted into a `String`, cut, then one `write(2)` to stderr
//! per line). Here the caller fills a [`Line`] field by field into a reused per-thread buffer,
//! in exactly the shape the subscriber installed by [`crate::telemetry::init`] prints (text, or
//! JSON with `LOG_FORMAT=json`), so a reader or a collector cannot tell the two apart; the
//! finished line is appended to one shared buffer that a background thread writes out every
//! [`FLUSH_EVERY`], or at once when it holds [`FLUSH_AT`] bytes (a blocked stderr then slows
//! requests, as one write per line did, instead of the buffer growing without bound).
//!
//! Every other log event is written straight through, and writes the pending lines before
//! itself ([`Through`]), so lines keep their order and a warning is never held back. What a
//! kill -9 can lose is at most [`FLUSH_EVERY`] of access lines; the proxy's exit paths call
//! [`flush`].

use std::cell::RefCell;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::{Condvar, LazyLock, Mutex, MutexGuard, Once, OnceLock};
use std::time::{Duration, SystemTime};

use crate::telemetry::MAX_FIELD;

/// How long an access line may wait in the buffer.
pub const FLUSH_EVERY: Duration = Duration::from_millis(20);
/// The buffer is written out at once when it holds this much.
const FLUSH_AT: usize = 64 * 1024;

struct Sink {
    pending: Mutex<Vec<u8>>,
    filled: Condvar,
}

static SINK: LazyLock<Sink> = LazyLock::new(|| Sink {
    pending: Mutex::new(Vec::with_capacity(FLUSH_AT)),
    filled: Condvar::new(),
});
static FLUSHER: Once = Once::new();
static JSON: OnceLock<bool> = OnceLock::new();

/// Whether lines are JSON (`LOG_FORMAT=json`), as the subscriber decides.
pub(crate) fn json() -> bool {
    *JSON.get_or_init(|| std::env::var("LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json")))
}

fn pending() -> MutexGuard<'static, Vec<u8>> {
    // A panic while holding the lock leaves whole lines behind it: the buffer is still good.
    SINK.pending.lock().unwrap_or_else(|p| p.into_inner())
}

fn write_out(buf: &mut Vec<u8>) {
    if !buf.is_empty() {
        // Nowhere to report a failed write to stderr; the lines are dropped.
        let _ = std::io::stderr().lock().write_all(buf);
        buf.clear();
    }
}

/// Writes every pending line now (before an exit).
pub fn flush() {
    write_out(&mut pending());
}

fn append(line: &[u8]) {
    FLUSHER.call_once(|| {
        let _ = std::thread::Builder::new()
            .name("banyan-log".into())
            .spawn(|| {
                loop {
                    let mut p = pending();
                    while p.is_empty() {
                        p = SINK.filled.wait(p).unwrap_or_else(|e| e.into_inner());
                    }
                    drop(p);
                    std::thread::sleep(FLUSH_EVERY);
                    flush();
                }
            });
    });
    let mut p = pending();
    let was_empty = p.is_empty();
    p.extend_from_slice(line);
    if p.len() >= FLUSH_AT {
        write_out(&mut p);
    } else if was_empty {
        // Only the first line of a batch wakes the flusher (notifying is a system call).
        SINK.filled.notify_one();
    }
}

/// The writer for every other event: the pending lines first, then the event, so order holds.
pub(crate) struct Through;

impl std::io::Write for Through {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.write_all(buf)?;
        Ok(buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        let mut p = pending();
        write_out(&mut p);
        std::io::stderr().lock().write_all(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

thread_local! {
    static BUF: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(512));
    /// The timestamp's text up to the seconds, for the second it was made in.
    static SECOND: RefCell<(u64, [u8; 19])> = const { RefCell::new((u64::MAX, [0; 19])) };
}

/// Writes one INFO line with `message` and the fields `fill` adds.
pub fn info(message: &str, fill: impl FnOnce(&mut Line<'_>)) {
    BUF.with_borrow_mut(|buf| {
        buf.clear();
        let json = json();
        let mut line = Line { buf, json };
        line.start(message);
        fill(&mut line);
        if json {
            line.buf.push(b'}');
        }
        line.buf.push(b'\n');
        append(line.buf);
    });
}

/// One line being written: fields in the order they are added.
pub struct Line<'a> {
    buf: &'a mut Vec<u8>,
    json: bool,
}

impl Line<'_> {
    fn start(&mut self, message: &str) {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        if self.json {
            self.buf.extend_from_slice(b"{\"timestamp\":\"");
            timestamp(self.buf, now);
            self.buf
                .extend_from_slice(b"\",\"level\":\"INFO\",\"message\":");
            json_str(self.buf, message);
        } else {
            timestamp(self.buf, now);
            self.buf.extend_from_slice(b"  INFO ");
            self.buf.extend_from_slice(cut(message).as_bytes());
        }
    }

    fn key(&mut self, key: &str) {
        if self.json {
            self.buf.extend_from_slice(b",\"");
            self.buf.extend_from_slice(key.as_bytes());
            self.buf.extend_from_slice(b"\":");
        } else {
            self.buf.push(b' ');
            self.buf.extend_from_slice(key.as_bytes());
            self.buf.push(b'=');
        }
    }

    /// A string field: quoted and escaped (`key="v"` as `Debug` prints it, or a JSON string),
    /// cut at the field limit every log line has.
    pub fn str(&mut self, key: &str, value: &str) -> &mut Self {
        self.key(key);
        let value = cut(value);
        if self.json {
            json_str(self.buf, &value);
        } else if value
            .bytes()
            .all(|b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\')
        {
            self.buf.push(b'"');
            self.buf.extend_from_slice(value.as_bytes());
            self.buf.push(b'"');
        } else {
            let mut s = String::new();
            let _ = write!(s, "{value:?}");
            self.buf.extend_from_slice(s.as_bytes());
        }
        self
    }

    /// A string field only when there is one (an absent field is left out, as `tracing` does).
    pub fn opt_str(&mut self, key: &str, value: Option<&str>) -> &mut Self {
        if let Some(v) = value {
            self.str(key, v);
        }
        self
    }

    /// An unsigned number, unquoted in both formats.
    pub fn num(&mut self, key: &str, value: u64) -> &mut Self {
        self.key(key);
        decimal(self.buf, value);
        self
    }

    /// A socket address (or `-`): bare in text, a string in JSON (as `%addr` prints).
    pub fn addr(&mut self, key: &str, value: Option<SocketAddr>) -> &mut Self {
        self.key(key);
        if self.json {
            self.buf.push(b'"');
        }
        match value {
            Some(SocketAddr::V4(a)) => {
                for (i, o) in a.ip().octets().into_iter().enumerate() {
                    if i > 0 {
                        self.buf.push(b'.');
                    }
                    decimal(self.buf, u64::from(o));
                }
                self.buf.push(b':');
                decimal(self.buf, u64::from(a.port()));
            }
            Some(a) => self.buf.extend_from_slice(a.to_string().as_bytes()),
            None => self.buf.push(b'-'),
        }
        if self.json {
            self.buf.push(b'"');
        }
        self
    }

    /// A duration in milliseconds with two decimals (`0.42`): bare in text, a string in JSON
    /// (as `format_args!("{:.2}")` prints).
    pub fn millis(&mut self, key: &str, value: Duration) -> &mut Self {
        self.key(key);
        if self.json {
            self.buf.push(b'"');
        }
        // Hundredths of a millisecond, rounded half up.
        let hundredths = (value.as_nanos() + 5_000) / 10_000;
        let hundredths = u64::try_from(hundredths).unwrap_or(u64::MAX);
        decimal(self.buf, hundredths / 100);
        self.buf.push(b'.');
        let frac = hundredths % 100;
        self.buf.push(b'0' + (frac / 10) as u8);
        self.buf.push(b'0' + (frac % 10) as u8);
        if self.json {
            self.buf.push(b'"');
        }
        self
    }
}

/// The field limit of every log line (see [`crate::telemetry`]).
fn cut(s: &str) -> std::borrow::Cow<'_, str> {
    // Byte length bounds the character count: most values are far below the limit.
    if s.len() <= MAX_FIELD {
        return std::borrow::Cow::Borrowed(s);
    }
    crate::telemetry::cut(s)
}

fn json_str(buf: &mut Vec<u8>, s: &str) {
    if s.bytes()
        .all(|b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\')
    {
        buf.push(b'"');
        buf.extend_from_slice(s.as_bytes());
        buf.push(b'"');
    } else {
        // serde_json escapes as the JSON subscriber does.
        let _ = serde_json::to_writer(&mut *buf, s);
    }
}

fn decimal(buf: &mut Vec<u8>, mut v: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    buf.extend_from_slice(&digits[i..]);
}

/// RFC 3339 in UTC with microseconds, as the subscriber prints: `2026-12-02T21:39:44.318529Z`.
fn timestamp(buf: &mut Vec<u8>, since_epoch: Duration) {
    let secs = since_epoch.as_secs();
    SECOND.with_borrow_mut(|(at, text)| {
        if *at != secs {
            *at = secs;
            let mut s = String::with_capacity(19);
            let (y, m, d) = civil(secs / 86_400);
            let t = secs % 86_400;
            let _ = write!(
                s,
                "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
                t / 3600,
                t / 60 % 60,
                t % 60
            );
            text.copy_from_slice(&s.as_bytes()[..19]);
        }
        buf.extend_from_slice(text);
    });
    buf.push(b'.');
    let micros = since_epoch.subsec_micros();
    let mut digits = [b'0'; 6];
    let mut v = micros;
    for d in digits.iter_mut().rev() {
        *d = b'0' + (v % 10) as u8;
        v /= 10;
    }
    buf.extend_from_slice(&digits);
    buf.push(b'Z');
}

/// The proleptic Gregorian date of a day counted from 1970-01-01 (Howard Hinnant's
/// days-to-civil algorithm).
fn civil(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(fill: impl FnOnce(&mut Line<'_>)) -> String {
        let mut buf = Vec::new();
        let mut line = Line {
            buf: &mut buf,
            json: false,
        };
        fill(&mut line);
        String::from_utf8(buf).unwrap()
    }

    fn json(fill: impl FnOnce(&mut Line<'_>)) -> serde_json::Value {
        let mut buf = b"{\"x\":0".to_vec();
        let mut line = Line {
            buf: &mut buf,
            json: true,
        };
        fill(&mut line);
        buf.push(b'}');
        serde_json::from_slice(&buf).unwrap()
    }

    #[test]
    fn fields_print_as_the_subscriber_prints_them() {
        let addr: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let v6: SocketAddr = "[::1]:80".parse().unwrap();
        let line = text(|l| {
            l.str("method", "GET")
                .str("path", "/a\"b\\c\u{1}é")
                .num("status", 200)
                .addr("backend", Some(addr))
                .addr("v6", Some(v6))
                .addr("none", None)
                .millis("elapsed_ms", Duration::from_micros(1_235))
                .millis("zero", Duration::ZERO)
                .opt_str("error", None);
        });
        let expected = format!(
            " method=\"GET\" path={:?} status=200 backend=127.0.0.1:8080 v6=[::1]:80 none=- elapsed_ms={:.2} zero=0.00",
            "/a\"b\\c\u{1}é", 1.235_f64
        );
        assert_eq!(line, expected);
        let j = json(|l| {
            l.str("path", "/a\"b\u{1}é")
                .num("status", 503)
                .addr("backend", Some(addr))
                .millis("elapsed_ms", Duration::from_micros(999_996))
                .opt_str("error", Some("timeout"));
        });
        assert_eq!(j["path"], "/a\"b\u{1}é");
        assert_eq!(j["status"], 503);
        assert_eq!(j["backend"], "127.0.0.1:8080");
        assert_eq!(j["elapsed_ms"], "1000.00");
        assert_eq!(j["error"], "timeout");
    }

    #[test]
    fn long_values_are_cut_as_every_field_is() {
        let long = "a".repeat(MAX_FIELD + 5);
        let line = text(|l| {
            l.str("path", &long);
        });
        assert!(line.ends_with("… [5 bytes cut]\""), "{line}");
    }

    #[test]
    fn timestamps_are_rfc3339_utc_with_microseconds() {
        let mut buf = Vec::new();
        // 2026-12-02T21:39:44.318529Z and a leap day.
        timestamp(&mut buf, Duration::new(1_796_247_584, 318_529_999));
        buf.push(b' ');
        timestamp(&mut buf, Duration::new(951_782_400, 0));
        assert_eq!(
            String::from_utf8(buf).unwrap(),
            "2026-12-02T21:39:44.318529Z 2000-02-29T00:00:00.000000Z"
        );
    }
}
