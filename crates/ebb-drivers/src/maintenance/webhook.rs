//! The `webhook` maintenance kind: an HTTP request to another system when maintenance
//! begins, and another (`undo_url`, `undo_body`) when it ends.

use super::REQUEST_TIMEOUT;
use crate::http::request_tls;
use crate::tls::TlsOptions;
use async_trait::async_trait;
use ebb_config::{type_name, ConfigErrors, Context, Key, Kind, Section};
use ebb_engine::interfaces::{DriverError, DriverResult, MaintenanceStep};
use ebb_engine::placeholder::{render, Quote};
use ebb_engine::plan::{MaintenanceSpec, Member, Plan};
use ebb_engine::registry::MaintenanceKind;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The keys of `webhook = { ... }` in a step.
pub const KEYS: &[Key] = &[
    Key::required(
        "url",
        Kind::String,
        "the URL called when maintenance begins",
    ),
    Key::new(
        "method",
        Kind::OneOf(&["POST", "PUT", "PATCH", "DELETE", "GET"]),
        "HTTP method (default \"POST\")",
    ),
    Key::new("body", Kind::Any, "body: a string, or a table sent as JSON"),
    Key::new(
        "undo_url",
        Kind::String,
        "the URL called when it ends (default: url)",
    ),
    Key::new("undo_body", Kind::Any, "body of the ending request"),
    Key::new("headers", Kind::StringMap, "extra headers"),
];

/// The descriptor of `webhook = { ... }`.
pub struct WebhookKind;

impl MaintenanceKind for WebhookKind {
    fn name(&self) -> &'static str {
        "webhook"
    }

    fn description(&self) -> &'static str {
        "a maintenance step: a request when it starts and another on return"
    }

    fn keys(&self) -> Vec<Key> {
        KEYS.to_vec()
    }

    fn validate(&self, spec: &MaintenanceSpec, members: &[Member], cx: &mut Context) {
        Webhook::read(spec, members, cx);
    }

    fn build(
        &self,
        plan: &Plan,
        spec: &MaintenanceSpec,
    ) -> Result<Arc<dyn MaintenanceStep>, ConfigErrors> {
        let hook = crate::balancer::read(plan, |plan, cx| Webhook::read(spec, &plan.members, cx))?;
        Ok(Arc::new(hook))
    }
}

/// A webhook's body.
#[derive(Debug, Clone)]
pub enum WebhookBody {
    /// A text template (`{{` and `}}` are literal braces; substituted values are
    /// JSON-escaped, so they fit inside JSON strings).
    Text(String),
    /// A TOML table sent as JSON; placeholders in its strings are substituted.
    Json(toml::Value),
}

/// A request on the way out and another on return.
pub struct Webhook {
    /// URL template of the request that begins maintenance.
    url: String,
    /// HTTP method (default `POST`).
    method: String,
    /// Body of the request that begins maintenance.
    body: Option<WebhookBody>,
    /// URL template of the request that ends it (default: `url`).
    undo_url: Option<String>,
    /// Body of the request that ends it.
    undo_body: Option<WebhookBody>,
    /// Extra headers (values are templates).
    headers: BTreeMap<String, String>,
}

impl Webhook {
    /// Reads the step's table, every problem into `cx`, the templates checked against
    /// every member.
    fn read(spec: &MaintenanceSpec, members: &[Member], cx: &mut Context) -> Option<Self> {
        let mut w = Section::new(&spec.settings, spec.path.clone(), KEYS);
        let url = w.req_str(cx, "url", "the URL to call when maintenance begins");
        ebb_engine::config::http_url(cx, &w.key("url"), &url);
        let method = w.str(cx, "method").unwrap_or_else(|| "POST".into());
        if !["POST", "PUT", "GET", "DELETE", "PATCH"].contains(&method.as_str()) {
            w.error(
                cx,
                "method",
                format!("expected POST, PUT, PATCH, DELETE or GET, found \"{method}\""),
            );
        }
        let body = read_body(cx, &mut w, "body");
        let undo_url = w.str(cx, "undo_url");
        ebb_engine::config::http_url(cx, &w.key("undo_url"), &undo_url);
        let undo_body = read_body(cx, &mut w, "undo_body");
        let headers = w.string_map(cx, "headers");
        w.finish(cx);
        let hook = Webhook {
            url: url?,
            method,
            body,
            undo_url,
            undo_body,
            headers,
        };
        super::check_templates(cx, &hook.templates(&w), members);
        Some(hook)
    }

    /// Its templates, each with its key.
    fn templates(&self, w: &Section<'_>) -> Vec<(String, String)> {
        let mut v = vec![(w.key("url"), self.url.clone())];
        if let Some(u) = &self.undo_url {
            v.push((w.key("undo_url"), u.clone()));
        }
        for (k, b) in [("body", &self.body), ("undo_body", &self.undo_body)] {
            let mut ts = Vec::new();
            if let Some(b) = b {
                b.templates(&mut ts);
            }
            v.extend(ts.into_iter().map(|t| (w.key(k), t)));
        }
        for (k, t) in &self.headers {
            v.push((format!("{}.{k}", w.key("headers")), t.clone()));
        }
        v
    }

    async fn call(
        &self,
        member: &Member,
        url: &str,
        body: Option<&WebhookBody>,
    ) -> DriverResult<String> {
        let method = &self.method;
        let none = BTreeMap::new();
        let url = render(url, member, Quote::None, &none);
        let body = body.map(|b| match b {
            WebhookBody::Text(t) => render(t, &json_escaped(member), Quote::None, &none),
            WebhookBody::Json(v) => to_json(v, member).to_string(),
        });
        let hs: Vec<(&str, String)> = self
            .headers
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
}

#[async_trait]
impl MaintenanceStep for Webhook {
    async fn begin(&self, member: &Member, _: &str) -> DriverResult<String> {
        self.call(member, &self.url, self.body.as_ref()).await
    }

    async fn end(&self, member: &Member, _: &str, _: &str) -> DriverResult<String> {
        if self.undo_url.is_none() && self.undo_body.is_none() {
            return Ok("nothing to undo".into());
        }
        let url = self.undo_url.as_ref().unwrap_or(&self.url);
        self.call(member, url, self.undo_body.as_ref()).await
    }
}

impl WebhookBody {
    /// The strings it holds (the text, or every string inside the JSON), for placeholder
    /// validation.
    fn templates(&self, out: &mut Vec<String>) {
        fn walk(v: &toml::Value, out: &mut Vec<String>) {
            match v {
                toml::Value::String(s) => out.push(s.clone()),
                toml::Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
                toml::Value::Table(t) => t.values().for_each(|x| walk(x, out)),
                _ => {}
            }
        }
        match self {
            WebhookBody::Text(t) => out.push(t.clone()),
            WebhookBody::Json(v) => walk(v, out),
        }
    }
}

/// `body` or `undo_body`: a string, or a table sent as JSON.
fn read_body(cx: &mut Context, w: &mut Section<'_>, k: &'static str) -> Option<WebhookBody> {
    match w.get(k)? {
        toml::Value::String(s) => Some(WebhookBody::Text(s.clone())),
        v @ toml::Value::Table(_) => Some(WebhookBody::Json(v.clone())),
        other => {
            w.error(
                cx,
                k,
                format!(
                    "expected a string or a table (sent as JSON), found {}",
                    type_name(other)
                ),
            );
            None
        }
    }
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
