//! Samples: what the results store keeps of a compared request for the report (redacted,
//! bodies cut to a size), and the example of a difference read from each side.

use http::HeaderMap;
use serde_json::Value;

use super::answer::{self, Answer};
use super::compare::Difference;
use super::exchange::Replica;
use super::redact;
use super::results::{self, Example, Sample, SampleAnswer, SampleDifference, SampleRequest};

fn body_for_sample(a: &Answer) -> Value {
    match answer::json_of(&a.body) {
        Some(mut v) => {
            redact::redact_json(&mut v);
            let text = v.to_string();
            if text.len() > results::SAMPLE_BODY {
                Value::String(format!("{}… (cut)", truncate(&text, results::SAMPLE_BODY)))
            } else {
                v
            }
        }
        None => {
            let text = String::from_utf8_lossy(&a.body);
            Value::String(truncate(&text, results::SAMPLE_BODY).to_owned())
        }
    }
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn headers_for_sample(h: &HeaderMap) -> Vec<(String, String)> {
    redact::redact_headers(
        h.iter()
            .map(|(k, v)| (k.as_str(), v.to_str().unwrap_or("(binary)"))),
    )
}

pub(super) fn sample(
    copy: &Replica,
    primary: &Answer,
    candidate: &Answer,
    findings: &[Difference],
    noise: &[Difference],
    ep: &str,
) -> Sample {
    let secrets = redact::secrets_of(
        &copy.target,
        copy.headers
            .iter()
            .filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?))),
    );
    let answer = |a: &Answer| {
        let mut body = body_for_sample(a);
        redact::scrub(&mut body, &secrets);
        let mut headers = headers_for_sample(&a.headers);
        for (_, v) in &mut headers {
            redact::scrub_text(v, &secrets);
        }
        SampleAnswer {
            status: a.status,
            headers,
            body,
        }
    };
    let differences = findings
        .iter()
        .map(|d| (d, false))
        .chain(noise.iter().map(|d| (d, true)))
        .take(50)
        .map(|(d, noise)| SampleDifference {
            path: d.path.clone(),
            candidate_path: d.candidate_path.clone(),
            kind: results::describe_kind(d.kind),
            noise,
        })
        .collect();
    Sample {
        at: service_kit::clock::rfc3339(service_kit::clock::now_ms()),
        endpoint: ep.to_owned(),
        request: SampleRequest {
            method: copy.method.to_string(),
            target: redact::redact_target(&copy.target),
            headers: headers_for_sample(&copy.headers),
        },
        primary: answer(primary),
        candidate: answer(candidate),
        differences,
    }
}

/// The value at a difference's path in a (redacted) sample answer, shortened for a report.
fn value_at(a: &SampleAnswer, path: &str) -> String {
    let text = if path == "status" {
        a.status.to_string()
    } else if let Some(h) = path.strip_prefix("header:") {
        a.headers
            .iter()
            .find(|(k, _)| k == h)
            .map_or_else(|| "(absent)".to_owned(), |(_, v)| v.clone())
    } else if path == "body" {
        match &a.body {
            Value::String(s) => s.clone(),
            v => v.to_string(),
        }
    } else {
        let pointer = if path == "/" { "" } else { path };
        a.body
            .pointer(pointer)
            .map_or_else(|| "(absent)".to_owned(), Value::to_string)
    };
    let short = truncate(&text, 200);
    if short.len() < text.len() {
        format!("{short}…")
    } else {
        text
    }
}

pub(super) fn example(s: &Sample, d: &Difference) -> Example {
    Example {
        request: format!("{} {}", s.request.method, s.request.target),
        path: d.path.clone(),
        candidate_path: d.candidate_path.clone(),
        kind: results::describe_kind(d.kind),
        primary: value_at(&s.primary, &d.path),
        candidate: value_at(&s.candidate, d.candidate_path.as_deref().unwrap_or(&d.path)),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::shadow::compare::{PathPattern, Rules, compare};

    fn answer(body: Value) -> SampleAnswer {
        SampleAnswer {
            status: 200,
            headers: Vec::new(),
            body,
        }
    }

    #[test]
    fn an_example_reads_each_side_where_its_element_is() {
        // The candidate returns the same two hits in the other order, one price changed.
        let primary = json!({"hits": [{"id": 10, "price": 17671}, {"id": 30, "price": 17615}]});
        let candidate = json!({"hits": [{"id": 30, "price": 17616}, {"id": 10, "price": 17671}]});
        let rules = Rules {
            unordered: vec![PathPattern::parse("/hits").unwrap()],
            ..Rules::default()
        };
        let d = compare(&primary, &candidate, &rules);
        assert_eq!(d.len(), 1, "{d:?}");
        let s = Sample {
            at: String::new(),
            endpoint: "GET /api/search".into(),
            request: SampleRequest {
                method: "GET".into(),
                target: "/api/search?q=basket".into(),
                headers: Vec::new(),
            },
            primary: answer(primary),
            candidate: answer(candidate),
            differences: Vec::new(),
        };
        let ex = example(&s, &d[0]);
        assert_eq!(ex.path, "/hits/1/price");
        assert_eq!(ex.candidate_path.as_deref(), Some("/hits/0/price"));
        assert_eq!(
            (ex.primary.as_str(), ex.candidate.as_str()),
            ("17615", "17616")
        );
    }
}
