//! The `alertmanager` maintenance kind and the `[pool.gate]`, through Prometheus
//! Alertmanager's API v2.
//!
//! A silence is created when the step runs and expired when the member returns. Its id is
//! the step's detail in the journal, and its comment carries a key naming the run, member
//! and step, so that a begin repeated after a crash reuses the silence it already made,
//! and an end whose id was never recorded still finds it.

use super::REQUEST_TIMEOUT;
use crate::http::{request_tls, Response};
use crate::tls::TlsOptions;
use async_trait::async_trait;
use ebb_config::{ConfigErrors, Context, Key, Kind, Section};
use ebb_engine::interfaces::{AlertGate, DriverError, DriverResult, MaintenanceStep};
use ebb_engine::placeholder::{render, Quote};
use ebb_engine::plan::{GateSpec, MaintenanceSpec, Member, Plan};
use ebb_engine::registry::MaintenanceKind;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// The keys of `alertmanager = { ... }` in a step.
pub const KEYS: &[Key] = &[
    Key::required("url", Kind::String, "the Alertmanager"),
    Key::required(
        "matchers",
        Kind::StringMap,
        "label matchers of the silence (templates)",
    ),
    Key::new(
        "duration",
        Kind::Duration,
        "how long the silence lasts if ebb never expires it (default \"2h\")",
    ),
    Key::new(
        "comment",
        Kind::String,
        "comment on the silence (a template)",
    ),
];

/// The descriptor of `alertmanager = { ... }`.
pub struct AlertmanagerKind;

impl MaintenanceKind for AlertmanagerKind {
    fn name(&self) -> &'static str {
        "alertmanager"
    }

    fn description(&self) -> &'static str {
        "a maintenance step: an Alertmanager silence while the member is out"
    }

    fn keys(&self) -> Vec<Key> {
        KEYS.to_vec()
    }

    fn validate(&self, spec: &MaintenanceSpec, members: &[Member], cx: &mut Context) {
        Silence::read(spec, members, cx);
    }

    fn build(
        &self,
        plan: &Plan,
        spec: &MaintenanceSpec,
    ) -> Result<Arc<dyn MaintenanceStep>, ConfigErrors> {
        let silence =
            crate::balancer::read(plan, |plan, cx| Silence::read(spec, &plan.members, cx))?;
        Ok(Arc::new(silence))
    }
}

/// A silence while the member is out: created on the way out, expired on return.
pub struct Silence {
    am: Alertmanager,
    /// Label matchers (values are templates: `{address}`, ...).
    matchers: BTreeMap<String, String>,
    /// How long the silence lasts if ebb never comes back to expire it.
    duration: Duration,
    /// Comment on the silence (a template).
    comment: Option<String>,
}

impl Silence {
    /// Reads the step's table, every problem into `cx`, the templates checked against
    /// every member.
    fn read(spec: &MaintenanceSpec, members: &[Member], cx: &mut Context) -> Option<Self> {
        let mut a = Section::new(&spec.settings, spec.path.clone(), KEYS);
        let url = a.req_str(
            cx,
            "url",
            "the Alertmanager, e.g. url = \"http://alertmanager:9093\"",
        );
        ebb_engine::config::http_url(cx, &a.key("url"), &url);
        let matchers = a.string_map(cx, "matchers");
        if matchers.is_empty() {
            cx.err(
                &spec.path,
                "a silence needs matchers, e.g. matchers = { instance = \"{address}\" }",
            );
        }
        let duration = a.duration(cx, "duration", Duration::from_secs(7200));
        let comment = a.str(cx, "comment");
        a.finish(cx);
        let mut templates: Vec<(String, String)> = matchers
            .iter()
            .map(|(k, t)| (format!("{}.{k}", a.key("matchers")), t.clone()))
            .collect();
        if let Some(c) = &comment {
            templates.push((a.key("comment"), c.clone()));
        }
        super::check_templates(cx, &templates, members);
        Some(Silence {
            am: Alertmanager::new(&url?),
            matchers,
            duration,
            comment,
        })
    }
}

#[async_trait]
impl MaintenanceStep for Silence {
    async fn begin(&self, member: &Member, key: &str) -> DriverResult<String> {
        let matchers = render_map(&self.matchers, member);
        let comment = format!(
            "{} [{key}]",
            self.comment
                .as_ref()
                .map(|c| render(c, member, Quote::None, &BTreeMap::new()))
                .unwrap_or_else(|| format!("ebb: rolling maintenance of {}", member.name))
        );
        if let Some(id) = self.am.find_silences(key).await?.into_iter().next() {
            return Ok(format!("silence {id}"));
        }
        let id = self
            .am
            .create_silence(&matchers, self.duration, &comment)
            .await?;
        Ok(format!("silence {id}"))
    }

    async fn end(&self, _: &Member, key: &str, token: &str) -> DriverResult<String> {
        let mut ids: Vec<String> = token
            .strip_prefix("silence ")
            .map(|id| vec![id.trim().to_string()])
            .unwrap_or_default();
        for id in self.am.find_silences(key).await? {
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        for id in &ids {
            self.am.expire_silence(id).await?;
        }
        Ok(if ids.is_empty() {
            "no silence to expire".into()
        } else {
            format!("expired silence {}", ids.join(", "))
        })
    }
}

/// `[pool.gate]`: asks the gate's Alertmanager for the alerts firing.
pub struct AlertmanagerGate;

#[async_trait]
impl AlertGate for AlertmanagerGate {
    async fn firing(&self, gate: &GateSpec) -> DriverResult<Vec<String>> {
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
            "startsAt": super::rfc3339(now),
            "endsAt": super::rfc3339(now + duration),
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
