//! Monitoring maintenance: Prometheus Alertmanager silences and webhooks, as paired steps,
//! and the `[pool.gate]` that keeps the next member waiting while matching alerts fire.
//!
//! Alertmanager (API v2): a silence is created when the step runs and expired when the
//! member returns. Its id is the step's detail in the journal, and its comment carries a key
//! naming the run, member and step, so that a begin repeated after a crash reuses the
//! silence it already made, and an end whose id was never recorded still finds it.

use crate::http::{request_tls, Response, TlsOptions};
use async_trait::async_trait;
use ebb_engine::interfaces::{DriverError, DriverResult, Maintenance};
use ebb_engine::placeholder::{render, Quote};
use ebb_engine::plan::{GateSpec, MaintenanceSpec, Member, WebhookBody};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

/// Bound on each request to a monitoring system.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// The maintenance driver of every ebb: Alertmanager and webhooks.
pub struct MonitoringMaintenance;

#[async_trait]
impl Maintenance for MonitoringMaintenance {
    async fn begin(
        &self,
        spec: &MaintenanceSpec,
        member: &Member,
        key: &str,
    ) -> DriverResult<String> {
        match spec {
            MaintenanceSpec::Alertmanager {
                url,
                matchers,
                duration,
                comment,
            } => {
                let am = Alertmanager::new(url);
                let matchers = render_map(matchers, member);
                let comment = format!(
                    "{} [{key}]",
                    comment
                        .as_ref()
                        .map(|c| render(c, member, Quote::None, &BTreeMap::new()))
                        .unwrap_or_else(|| format!("ebb: rolling maintenance of {}", member.name))
                );
                if let Some(id) = am.find_silences(key).await?.into_iter().next() {
                    return Ok(format!("silence {id}"));
                }
                let id = am.create_silence(&matchers, *duration, &comment).await?;
                Ok(format!("silence {id}"))
            }
            MaintenanceSpec::Webhook {
                url,
                method,
                body,
                headers,
                ..
            } => webhook(member, method, url, body.as_ref(), headers).await,
        }
    }

    async fn end(
        &self,
        spec: &MaintenanceSpec,
        member: &Member,
        key: &str,
        token: &str,
    ) -> DriverResult<String> {
        match spec {
            MaintenanceSpec::Alertmanager { url, .. } => {
                let am = Alertmanager::new(url);
                let mut ids: Vec<String> = token
                    .strip_prefix("silence ")
                    .map(|id| vec![id.trim().to_string()])
                    .unwrap_or_default();
                for id in am.find_silences(key).await? {
                    if !ids.contains(&id) {
                        ids.push(id);
                    }
                }
                for id in &ids {
                    am.expire_silence(id).await?;
                }
                Ok(if ids.is_empty() {
                    "no silence to expire".into()
                } else {
                    format!("expired silence {}", ids.join(", "))
                })
            }
            MaintenanceSpec::Webhook {
                url,
                method,
                undo_url,
                undo_body,
                headers,
                ..
            } => {
                if undo_url.is_none() && undo_body.is_none() {
                    return Ok("nothing to undo".into());
                }
                let url = undo_url.as_ref().unwrap_or(url);
                webhook(member, method, url, undo_body.as_ref(), headers).await
            }
        }
    }

    async fn gate_alerts(&self, gate: &GateSpec) -> DriverResult<Vec<String>> {
        Alertmanager::new(&gate.alertmanager)
            .firing(&gate.matchers)
            .await
    }
}

/// One Alertmanager, through its v2 API.
pub struct Alertmanager {
    base: String,
}

impl Alertmanager {
    /// The Alertmanager at `url` (`http://host:9093`).
    pub fn new(url: &str) -> Self {
        Alertmanager {
            base: url.trim_end_matches('/').to_string(),
        }
    }

    async fn call(&self, method: &str, path: &str, body: Option<&str>) -> DriverResult<Response> {
        let url = format!("{}{path}", self.base);
        request_tls(
            method,
            &url,
            body,
            &[("accept", "application/json".to_string())],
            REQUEST_TIMEOUT,
            &TlsOptions::default(),
        )
        .await
        .map_err(|e| DriverError::new(format!("Alertmanager: {e}")))
    }

    fn json(resp: &Response, what: &str) -> DriverResult<Value> {
        if !(200..300).contains(&resp.status) {
            return Err(DriverError::new(format!(
                "Alertmanager: {what} answered {}: {}",
                resp.status,
                resp.body.trim()
            )));
        }
        serde_json::from_str(&resp.body).map_err(|e| {
            DriverError::new(format!(
                "Alertmanager: {what} answered something that is not JSON ({e})"
            ))
        })
    }

    /// Creates a silence; returns its id.
    pub async fn create_silence(
        &self,
        matchers: &BTreeMap<String, String>,
        duration: Duration,
        comment: &str,
    ) -> DriverResult<String> {
        let now = SystemTime::now();
        let body = json!({
            "matchers": matchers.iter().map(|(k, v)| matcher_json(k, v)).collect::<Vec<_>>(),
            "startsAt": rfc3339(now),
            "endsAt": rfc3339(now + duration),
            "createdBy": "ebb",
            "comment": comment,
        });
        let resp = self
            .call("POST", "/api/v2/silences", Some(&body.to_string()))
            .await?;
        let v = Self::json(&resp, "POST /api/v2/silences")?;
        v.get("silenceID")
            .and_then(Value::as_str)
            .map(String::from)
            .ok_or_else(|| DriverError::new("Alertmanager: the new silence has no silenceID"))
    }

    /// Ids of the active or pending silences whose comment carries `[key]`.
    pub async fn find_silences(&self, key: &str) -> DriverResult<Vec<String>> {
        let resp = self.call("GET", "/api/v2/silences", None).await?;
        let v = Self::json(&resp, "GET /api/v2/silences")?;
        let tag = format!("[{key}]");
        Ok(v.as_array()
            .into_iter()
            .flatten()
            .filter(|s| {
                let state = s["status"]["state"].as_str().unwrap_or("");
                (state == "active" || state == "pending")
                    && s["comment"].as_str().is_some_and(|c| c.contains(&tag))
            })
            .filter_map(|s| s["id"].as_str().map(String::from))
            .collect())
    }

    /// The state of silence `id` (`active`, `pending`, `expired`).
    pub async fn silence_state(&self, id: &str) -> DriverResult<String> {
        let resp = self
            .call("GET", &format!("/api/v2/silence/{id}"), None)
            .await?;
        let v = Self::json(&resp, &format!("GET /api/v2/silence/{id}"))?;
        Ok(v["status"]["state"].as_str().unwrap_or("").to_string())
    }

    /// Expires silence `id`; one already expired (or gone) is fine.
    pub async fn expire_silence(&self, id: &str) -> DriverResult<()> {
        let resp = self
            .call("DELETE", &format!("/api/v2/silence/{id}"), None)
            .await?;
        if (200..300).contains(&resp.status) || resp.status == 404 {
            return Ok(());
        }
        match self.silence_state(id).await {
            Ok(s) if s == "expired" => Ok(()),
            _ => Err(DriverError::new(format!(
                "Alertmanager: expiring silence {id} answered {}: {}",
                resp.status,
                resp.body.trim()
            ))),
        }
    }

    /// Alerts firing now (not silenced, not inhibited) that match every matcher, one line
    /// each.
    pub async fn firing(&self, matchers: &BTreeMap<String, String>) -> DriverResult<Vec<String>> {
        let resp = self
            .call(
                "GET",
                "/api/v2/alerts?active=true&silenced=false&inhibited=false",
                None,
            )
            .await?;
        let v = Self::json(&resp, "GET /api/v2/alerts")?;
        let mut compiled = Vec::new();
        for (k, want) in matchers {
            let m = match want.strip_prefix('~') {
                Some(r) => Match::Regex(
                    regex::Regex::new(&format!("^(?:{r})$"))
                        .map_err(|e| DriverError::new(format!("matcher {k} = \"{want}\": {e}")))?,
                ),
                None => Match::Equal(want.clone()),
            };
            compiled.push((k.clone(), m));
        }
        let mut out = Vec::new();
        for a in v.as_array().into_iter().flatten() {
            let labels = &a["labels"];
            let all = compiled.iter().all(|(k, m)| {
                let got = labels[k.as_str()].as_str().unwrap_or("");
                match m {
                    Match::Equal(w) => got == w,
                    Match::Regex(r) => r.is_match(got),
                }
            });
            if all {
                let name = labels["alertname"].as_str().unwrap_or("?");
                let rest: Vec<String> = labels
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter(|(k, _)| k.as_str() != "alertname")
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                    .collect();
                out.push(format!("{name}{{{}}}", rest.join(",")));
            }
        }
        Ok(out)
    }
}

enum Match {
    Equal(String),
    Regex(regex::Regex),
}

/// A matcher value starting with `~` is a regular expression.
fn matcher_json(name: &str, value: &str) -> Value {
    match value.strip_prefix('~') {
        Some(r) => json!({"name": name, "value": r, "isRegex": true, "isEqual": true}),
        None => json!({"name": name, "value": value, "isRegex": false, "isEqual": true}),
    }
}

fn render_map(m: &BTreeMap<String, String>, member: &Member) -> BTreeMap<String, String> {
    m.iter()
        .map(|(k, v)| (k.clone(), render(v, member, Quote::None, &BTreeMap::new())))
        .collect()
}

/// `member` with every value JSON-escaped, so a body template stays valid JSON whatever
/// the names hold.
fn json_escaped(member: &Member) -> Member {
    let esc = |s: &str| {
        let q = serde_json::to_string(s).unwrap_or_default();
        q.get(1..q.len().saturating_sub(1))
            .unwrap_or("")
            .to_string()
    };
    let mut m = member.clone();
    m.name = esc(&m.name);
    m.address = esc(&m.address);
    m.lb_name = esc(&m.lb_name);
    m.group = m.group.as_deref().map(esc);
    for v in m.vars.values_mut() {
        *v = esc(v);
    }
    m
}

async fn webhook(
    member: &Member,
    method: &str,
    url: &str,
    body: Option<&WebhookBody>,
    headers: &BTreeMap<String, String>,
) -> DriverResult<String> {
    let none = BTreeMap::new();
    let url = render(url, member, Quote::None, &none);
    let body = body.map(|b| match b {
        WebhookBody::Text(t) => render(t, &json_escaped(member), Quote::None, &none),
        WebhookBody::Json(v) => to_json(v, member).to_string(),
    });
    let hs: Vec<(&str, String)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), render(v, member, Quote::None, &none)))
        .collect();
    let resp = request_tls(
        method,
        &url,
        body.as_deref(),
        &hs,
        REQUEST_TIMEOUT,
        &TlsOptions::default(),
    )
    .await
    .map_err(|e| DriverError::new(format!("webhook: {e}")))?;
    if (200..300).contains(&resp.status) {
        Ok(format!("{method} {url} → {}", resp.status))
    } else {
        Err(DriverError::new(format!(
            "webhook {method} {url} answered {}: {}",
            resp.status,
            resp.body.trim()
        )))
    }
}

/// A TOML value as JSON, placeholders in its strings substituted.
fn to_json(v: &toml::Value, member: &Member) -> Value {
    match v {
        toml::Value::String(s) => Value::String(render(s, member, Quote::None, &BTreeMap::new())),
        toml::Value::Integer(i) => json!(i),
        toml::Value::Float(f) => json!(f),
        toml::Value::Boolean(b) => json!(b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(a) => Value::Array(a.iter().map(|x| to_json(x, member)).collect()),
        toml::Value::Table(t) => Value::Object(
            t.iter()
                .map(|(k, x)| (k.clone(), to_json(x, member)))
                .collect(),
        ),
    }
}

/// `SystemTime` as RFC 3339 in UTC (`2026-11-25T12:00:00.000Z`).
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, dd) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{dd:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Days since 1970-01-01 → (year, month, day) (Howard Hinnant's algorithm).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// (year, month, day) → days since 1970-01-01.
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip() {
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_000_000_123);
        assert_eq!(rfc3339(t), "2026-11-18T11:06:40.123Z");
        for days in [-1000, 0, 59, 60, 365, 11_000, 20_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }
}
