//! Field-by-field validation that reports every problem at once.
//!
//! A client that sends three bad fields should learn about all three in one 422, each under its
//! own name, instead of fixing them one round-trip at a time. [`Fields`] walks a JSON object,
//! [`Params`] a decoded query string; both collect problems and [`finish`](Fields::finish) turns
//! them into one [`ErrorResponse::validation`].

use std::collections::HashMap;
use std::ops::RangeInclusive;

use serde_json::{Map, Value};

use crate::error::{ErrorResponse, FieldErrors};

/// Validates the fields of a JSON object body.
pub struct Fields<'a> {
    obj: &'a Map<String, Value>,
    errors: FieldErrors,
}

impl<'a> Fields<'a> {
    pub fn new(obj: &'a Map<String, Value>) -> Self {
        Self {
            obj,
            errors: FieldErrors::new(),
        }
    }

    /// Records a problem with `field` (the first problem per field wins).
    pub fn fail(&mut self, field: &str, problem: impl Into<String>) {
        self.errors
            .entry(field.to_owned())
            .or_insert_with(|| problem.into());
    }

    pub fn has_errors(&self) -> bool {
        !self.errors.is_empty()
    }

    pub fn is_present(&self, field: &str) -> bool {
        self.obj.contains_key(field)
    }

    /// Rejects fields that are neither `allowed` nor `ignored` (read-only fields a client may
    /// echo back from a GET, such as `id`, are listed as ignored).
    pub fn reject_unknown(&mut self, allowed: &[&str], ignored: &[&str]) {
        let unknown: Vec<String> = self
            .obj
            .keys()
            .filter(|k| !allowed.contains(&k.as_str()) && !ignored.contains(&k.as_str()))
            .cloned()
            .collect();
        for key in unknown {
            self.fail(&key, "unknown field");
        }
    }

    /// A required string of `len` characters that is not blank.
    pub fn string(&mut self, field: &str, len: RangeInclusive<usize>) -> Option<String> {
        match self.obj.get(field) {
            None | Some(Value::Null) => {
                self.fail(field, "is required");
                None
            }
            Some(v) => self.check_string(field, v, len),
        }
    }

    /// An optional string: `None` when absent (or invalid, which is recorded).
    pub fn opt_string(&mut self, field: &str, len: RangeInclusive<usize>) -> Option<String> {
        let v = self.obj.get(field)?;
        if v.is_null() {
            self.fail(field, "must not be null");
            return None;
        }
        self.check_string(field, v, len)
    }

    fn check_string(
        &mut self,
        field: &str,
        v: &Value,
        len: RangeInclusive<usize>,
    ) -> Option<String> {
        let Some(s) = v.as_str() else {
            self.fail(field, "must be a string");
            return None;
        };
        if let Some(problem) = control_problem(s) {
            self.fail(field, problem);
            return None;
        }
        let n = s.chars().count();
        if *len.start() > 0 && s.trim().is_empty() {
            self.fail(field, "must not be blank");
            return None;
        }
        if !len.contains(&n) {
            self.fail(
                field,
                format!("must be {} to {} characters long", len.start(), len.end()),
            );
            return None;
        }
        Some(s.to_owned())
    }

    /// A required integer within `range`.
    pub fn int(&mut self, field: &str, range: RangeInclusive<i64>) -> Option<i64> {
        match self.obj.get(field) {
            None | Some(Value::Null) => {
                self.fail(field, "is required");
                None
            }
            Some(v) => self.check_int(field, v, range),
        }
    }

    /// An optional integer: `None` when absent (or invalid, which is recorded).
    pub fn opt_int(&mut self, field: &str, range: RangeInclusive<i64>) -> Option<i64> {
        let v = self.obj.get(field)?;
        if v.is_null() {
            self.fail(field, "must not be null");
            return None;
        }
        self.check_int(field, v, range)
    }

    fn check_int(&mut self, field: &str, v: &Value, range: RangeInclusive<i64>) -> Option<i64> {
        // JSON has one number type: `961.0` is the integer 961, as JSON Schema counts it.
        let whole = v.as_f64().filter(|f| f.fract() == 0.0);
        match (v.as_i64(), whole) {
            (Some(n), _) if range.contains(&n) => Some(n),
            (None, Some(f)) if f.abs() < 9.0e15 && range.contains(&(f as i64)) => Some(f as i64),
            (Some(n), _) if n > *range.end() => {
                self.fail(field, format!("must be at most {}", range.end()));
                None
            }
            (None, Some(f)) if f > 0.0 => {
                self.fail(field, format!("must be at most {}", range.end()));
                None
            }
            (Some(_), _) | (None, Some(_)) => {
                self.fail(field, range_problem(&range));
                None
            }
            (None, None) => {
                self.fail(field, "must be an integer");
                None
            }
        }
    }

    /// The raw value of a field, for shapes the helpers above do not cover (arrays).
    pub fn raw(&self, field: &str) -> Option<&'a Value> {
        self.obj.get(field)
    }

    /// 422 naming every bad field, or `Ok` when there was none.
    pub fn finish(self) -> Result<(), ErrorResponse> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ErrorResponse::validation(self.errors))
        }
    }
}

/// Text fields may hold no control character but tab, line feed and carriage return: a NUL, for
/// one, is accepted by MySQL and SQLite but not by PostgreSQL, so a product named with one would
/// stop every copy of the catalog that lives there (the OpenAPI document states the same rule as
/// a `pattern` on every text field).
pub fn control_problem(s: &str) -> Option<&'static str> {
    s.chars()
        .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
        .then_some("must not contain control characters (other than tab and line breaks)")
}

fn range_problem(range: &RangeInclusive<i64>) -> String {
    match (*range.start(), *range.end()) {
        (lo, i64::MAX) => format!("must be at least {lo}"),
        (lo, hi) => format!("must be between {lo} and {hi}"),
    }
}

/// Validates decoded query parameters. Unknown parameters are ignored, as HTTP APIs
/// conventionally do; a parameter given twice was already refused by the extractor.
pub struct Params {
    values: HashMap<String, String>,
    errors: FieldErrors,
}

impl Params {
    pub fn new(values: HashMap<String, String>) -> Self {
        Self {
            values,
            errors: FieldErrors::new(),
        }
    }

    pub fn fail(&mut self, param: &str, problem: impl Into<String>) {
        self.errors
            .entry(param.to_owned())
            .or_insert_with(|| problem.into());
    }

    /// An integer within `range`; `default` when absent or empty.
    pub fn int(&mut self, param: &str, range: RangeInclusive<i64>, default: i64) -> i64 {
        self.opt_int(param, range).unwrap_or(default)
    }

    /// An optional integer within `range`.
    pub fn opt_int(&mut self, param: &str, range: RangeInclusive<i64>) -> Option<i64> {
        let raw = self.values.get(param).filter(|v| !v.is_empty())?;
        match raw.parse::<i64>() {
            Ok(n) if range.contains(&n) => Some(n),
            Ok(_) => {
                self.fail(param, range_problem(&range));
                None
            }
            Err(_) => {
                self.fail(param, "must be an integer");
                None
            }
        }
    }

    /// An optional string of at most `max_len` characters; empty counts as absent.
    pub fn opt_string(&mut self, param: &str, max_len: usize) -> Option<String> {
        let raw = self.values.get(param).filter(|v| !v.is_empty())?;
        if let Some(problem) = control_problem(raw) {
            self.fail(param, problem);
            return None;
        }
        if raw.chars().count() > max_len {
            self.fail(param, format!("must be at most {max_len} characters long"));
            return None;
        }
        Some(raw.clone())
    }

    /// One of `allowed`; `default` when absent.
    pub fn one_of(
        &mut self,
        param: &str,
        allowed: &[&'static str],
        default: &'static str,
    ) -> &'static str {
        let Some(raw) = self.values.get(param).filter(|v| !v.is_empty()) else {
            return default;
        };
        match allowed.iter().find(|a| **a == raw.as_str()) {
            Some(a) => a,
            None => {
                self.fail(param, format!("must be one of {}", allowed.join(", ")));
                default
            }
        }
    }

    pub fn finish(self) -> Result<(), ErrorResponse> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ErrorResponse::validation(self.errors))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn control_characters_are_refused_but_tabs_and_line_breaks_pass() {
        for bad in ["a\u{0}b", "\u{7}", "x\u{7f}", "\u{85}"] {
            assert!(control_problem(bad).is_some(), "{bad:?}");
        }
        for good in [
            "plain",
            "two\nlines",
            "tab\there",
            "crlf\r\n",
            "é ünïcödé ☕",
        ] {
            assert!(control_problem(good).is_none(), "{good:?}");
        }
    }

    #[test]
    fn reports_every_bad_field_at_once() {
        let body = json!({"name": "", "price_cents": -1, "stock": "many", "colour": "red"});
        let obj = body.as_object().unwrap();
        let mut f = Fields::new(obj);
        f.reject_unknown(&["name", "price_cents", "stock", "sku"], &["id"]);
        assert!(f.string("name", 1..=10).is_none());
        assert!(f.int("price_cents", 0..=i64::MAX).is_none());
        assert!(f.int("stock", 0..=10).is_none());
        assert!(f.string("sku", 1..=10).is_none());
        let err = f.finish().unwrap_err();
        let fields = err.fields.unwrap();
        assert_eq!(fields["name"], "must not be blank");
        assert_eq!(fields["price_cents"], "must be at least 0");
        assert_eq!(fields["stock"], "must be an integer");
        assert_eq!(fields["sku"], "is required");
        assert_eq!(fields["colour"], "unknown field");
    }

    #[test]
    fn optional_fields_are_none_when_absent_and_errors_when_null() {
        let body = json!({"name": null});
        let mut f = Fields::new(body.as_object().unwrap());
        assert_eq!(f.opt_int("stock", 0..=5), None);
        assert_eq!(f.opt_string("name", 1..=5), None);
        assert_eq!(
            f.finish().unwrap_err().fields.unwrap()["name"],
            "must not be null"
        );
    }

    #[test]
    fn params_parse_ranges_and_enums() {
        let mut p = Params::new(HashMap::from([
            ("page".to_owned(), "0".to_owned()),
            ("per_page".to_owned(), "x".to_owned()),
            ("sort".to_owned(), "-price".to_owned()),
        ]));
        assert_eq!(p.int("page", 1..=10, 1), 1);
        assert_eq!(p.int("per_page", 1..=100, 20), 20);
        assert_eq!(p.one_of("sort", &["price", "-price"], "price"), "-price");
        let fields = p.finish().unwrap_err().fields.unwrap();
        assert_eq!(fields["page"], "must be between 1 and 10");
        assert_eq!(fields["per_page"], "must be an integer");
    }
}
