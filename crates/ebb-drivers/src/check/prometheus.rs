//! The `prometheus` check: a PromQL instant query (Prometheus' HTTP API,
//! `/api/v1/query`) whose every value must stay within `max` and/or `min`. The query is a
//! template (`{member}`, `{address}`, `{lb_name}`, `{var.NAME}`), so one check judges
//! each member by its own series. An empty result fails unless `empty = "ok"`: a query
//! that matches nothing usually has a wrong label, and a check that cannot fail is no
//! check.

use async_trait::async_trait;
use ebb_config::{Context, Key, Kind};
use ebb_engine::interfaces::{Check, CheckContext, Transport};
use ebb_engine::placeholder::{render, Quote};
use ebb_engine::plan::Member;
use std::collections::BTreeMap;
use std::time::Duration;

/// A PromQL query compared with a bound.
#[derive(Debug, Clone)]
pub struct PrometheusCheck {
    /// The Prometheus server (`http://prometheus:9090`), a template.
    pub url: String,
    /// The PromQL expression, a template.
    pub query: String,
    /// Every value must be at most this.
    pub max: Option<f64>,
    /// Every value must be at least this.
    pub min: Option<f64>,
    /// Whether a result without any series passes.
    pub empty_ok: bool,
}

/// `prometheus = { url = "...", query = "...", max = N }`.
pub const KIND: super::Descriptor<PrometheusCheck> = super::Descriptor {
    name: "prometheus",
    value: Kind::Table,
    description: "a PromQL query whose values must stay within max and/or min",
    example: "prometheus = { url = \"...\", query = \"...\", max = N }",
    keys: KEYS,
    read,
};

const KEYS: &[Key] = &[
    Key::required(
        "url",
        Kind::String,
        "the Prometheus server, e.g. \"http://prometheus:9090\"",
    ),
    Key::required(
        "query",
        Kind::String,
        "the PromQL expression ({member}, {address}, {lb_name}, {var.NAME} allowed)",
    ),
    Key::new("max", Kind::Number, "every value must be at most this"),
    Key::new("min", Kind::Number, "every value must be at least this"),
    Key::new(
        "empty",
        Kind::OneOf(&["fail", "ok"]),
        "whether a result without any series fails (default \"fail\")",
    ),
];

fn read(cx: &mut Context, key: &str, value: &toml::Value) -> Option<PrometheusCheck> {
    let mut t = super::table(cx, key, value, KEYS)?;
    let url = t.req_str(
        cx,
        "url",
        "the Prometheus server, e.g. url = \"http://prometheus:9090\"",
    );
    let query = t.req_str(
        cx,
        "query",
        "the PromQL expression, e.g. query = \"rate(errors_total{instance=\\\"{address}\\\"}[1m])\"",
    );
    let max = t.number(cx, "max");
    let min = t.number(cx, "min");
    let empty_ok = t.choice(cx, "empty", &[("fail", false), ("ok", true)], false);
    t.finish(cx);
    if max.is_none() && min.is_none() && !t.has("max") && !t.has("min") {
        cx.err(key, "give a bound: max = N and/or min = N");
    }
    if let (Some(lo), Some(hi)) = (min, max) {
        if lo > hi {
            t.error(cx, "min", format!("{lo} is more than max = {hi}"));
        }
    }
    if let Some(u) = &url {
        if !u.starts_with("http://") && !u.starts_with("https://") {
            t.error(
                cx,
                "url",
                format!("expected an http:// or https:// URL, found \"{u}\""),
            );
        }
    }
    Some(PrometheusCheck {
        url: url?,
        query: query?,
        max,
        min,
        empty_ok,
    })
}

/// One series of a result: its labels (for messages) and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// `{instance="10.0.0.1:8080", job="app"}`, or empty for a scalar.
    pub labels: String,
    /// The value (`NaN` when Prometheus says so).
    pub value: f64,
}

/// The samples of an `/api/v1/query` answer (a vector or a scalar), or what went wrong.
pub fn parse_answer(body: &str) -> Result<Vec<Sample>, String> {
    let v: serde_json::Value =
        serde_json::from_str(body).map_err(|e| format!("the answer is not JSON ({e})"))?;
    if v["status"] != "success" {
        return Err(format!(
            "Prometheus answered {}: {}",
            v["errorType"].as_str().unwrap_or("an error"),
            v["error"].as_str().unwrap_or("(no message)")
        ));
    }
    let data = &v["data"];
    let value_of = |pair: &serde_json::Value| -> Result<f64, String> {
        let text = pair[1]
            .as_str()
            .ok_or_else(|| format!("a sample without a value: {pair}"))?;
        // Prometheus writes special values as "NaN", "+Inf" and "-Inf".
        match text {
            "+Inf" => Ok(f64::INFINITY),
            "-Inf" => Ok(f64::NEG_INFINITY),
            t => t
                .parse()
                .map_err(|_| format!("a sample value that is not a number: \"{t}\"")),
        }
    };
    match data["resultType"].as_str() {
        Some("vector") => {
            let series = data["result"].as_array().cloned().unwrap_or_default();
            series
                .iter()
                .map(|s| {
                    let labels = s["metric"]
                        .as_object()
                        .map(|m| {
                            let parts: Vec<String> = m
                                .iter()
                                .map(|(k, v)| format!("{k}={}", v))
                                .collect();
                            format!("{{{}}}", parts.join(", "))
                        })
                        .unwrap_or_default();
                    Ok(Sample {
                        labels,
                        value: value_of(&s["value"])?,
                    })
                })
                .collect()
        }
        Some("scalar") => Ok(vec![Sample {
            labels: String::new(),
            value: value_of(&data["result"])?,
        }]),
        Some(other) => Err(format!(
            "the query returns a {other}; give an instant vector or a scalar (e.g. wrap a range in rate(...))"
        )),
        None => Err("the answer has no data.resultType".into()),
    }
}

impl PrometheusCheck {
    /// `max 0.01`, `min 5`, `min 5 and max 10`.
    fn bound(&self) -> String {
        match (self.min, self.max) {
            (Some(lo), Some(hi)) => format!("min {lo} and max {hi}"),
            (Some(lo), None) => format!("min {lo}"),
            (None, Some(hi)) => format!("max {hi}"),
            (None, None) => "no bound".into(),
        }
    }

    /// Whether `samples` pass, and a line saying why.
    pub fn judge(&self, query: &str, samples: &[Sample]) -> Result<String, String> {
        if samples.is_empty() {
            return if self.empty_ok {
                Ok(format!("{query}: no series (empty = \"ok\")"))
            } else {
                Err(format!(
                    "{query}: no series (an empty result fails; is a label wrong? empty = \"ok\" accepts it)"
                ))
            };
        }
        let bound = self.bound();
        let outside: Vec<String> = samples
            .iter()
            .filter(|s| {
                s.value.is_nan()
                    || self.max.is_some_and(|hi| s.value > hi)
                    || self.min.is_some_and(|lo| s.value < lo)
            })
            .map(|s| format!("{}{}", s.value, s.labels))
            .collect();
        if outside.is_empty() {
            let values: Vec<String> = samples.iter().map(|s| s.value.to_string()).collect();
            Ok(format!("{query} = {} (within {bound})", values.join(", ")))
        } else {
            Err(format!(
                "{query} = {} (outside {bound})",
                super::cut(&outside.join(", "), 300)
            ))
        }
    }
}

/// `application/x-www-form-urlencoded` for one value.
fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[async_trait]
impl Check for PrometheusCheck {
    async fn run(
        &self,
        member: &Member,
        _: &dyn Transport,
        _: &CheckContext,
        timeout: Duration,
    ) -> Result<String, String> {
        let none = BTreeMap::new();
        let base = render(&self.url, member, Quote::None, &none);
        let query = render(&self.query, member, Quote::None, &none);
        let url = format!("{}/api/v1/query", base.trim_end_matches('/'));
        let body = format!("query={}", form_encode(&query));
        let headers = [(
            "Content-Type",
            "application/x-www-form-urlencoded".to_string(),
        )];
        let resp = crate::http::request("POST", &url, Some(&body), &headers, timeout).await?;
        // Prometheus answers a bad query with 400 and a JSON error: say its words.
        let samples = parse_answer(&resp.body)
            .map_err(|e| format!("POST {url} ({query}) answered {}: {e}", resp.status))?;
        self.judge(&query, &samples)
    }
    fn templates(&self) -> Vec<(String, String)> {
        vec![
            ("prometheus.url".into(), self.url.clone()),
            ("prometheus.query".into(), self.query.clone()),
        ]
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(max: Option<f64>, min: Option<f64>, empty_ok: bool) -> PrometheusCheck {
        PrometheusCheck {
            url: "http://p".into(),
            query: "q".into(),
            max,
            min,
            empty_ok,
        }
    }

    #[test]
    fn answers_are_read_and_judged() {
        let vector = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"instance":"a:1"},"value":[1700000000.1,"0.25"]}]}}"#;
        let s = parse_answer(vector).unwrap();
        assert_eq!(s[0].value, 0.25);
        assert!(check(Some(0.5), None, false).judge("q", &s).is_ok());
        let e = check(Some(0.1), None, false).judge("q", &s).unwrap_err();
        assert!(
            e.contains("0.25") && e.contains("max 0.1") && e.contains("q ="),
            "{e}"
        );
        assert!(check(None, Some(1.0), false).judge("q", &s).is_err());
        let scalar = r#"{"status":"success","data":{"resultType":"scalar","result":[1,"NaN"]}}"#;
        let s = parse_answer(scalar).unwrap();
        assert!(check(Some(1.0), None, false).judge("q", &s).is_err());
        assert!(check(Some(1.0), None, false).judge("q", &[]).is_err());
        assert!(check(Some(1.0), None, true).judge("q", &[]).is_ok());
        let bad = r#"{"status":"error","errorType":"bad_data","error":"parse error at char 3"}"#;
        assert!(parse_answer(bad)
            .unwrap_err()
            .contains("parse error at char 3"));
        assert_eq!(form_encode("a{b=\"c d\"}"), "a%7Bb%3D%22c%20d%22%7D");
    }
}
