//! Monitoring maintenance steps (Alertmanager silences, webhooks) and `[pool.gate]`.

use super::keys;
use crate::plan::*;
use ebb_config::{type_name, Context as Cx, Section};
use std::time::Duration;

/// `alertmanager = { ... }` or `webhook = { ... }` in a `[[runbook.step]]`.
pub(super) fn maintenance(cx: &mut Cx, s: &mut Section<'_>) -> Option<MaintenanceSpec> {
    let am = s.sub(cx, "alertmanager");
    let wh = s.sub(cx, "webhook");
    if am.is_some() && wh.is_some() {
        cx.err(
            s.path(),
            "give either alertmanager = { ... } or webhook = { ... }, not both",
        );
        return None;
    }
    if let Some(t) = am {
        let key = s.key("alertmanager");
        let mut a = Section::new(t, key.clone(), keys::ALERTMANAGER);
        let url = a.req_str(
            cx,
            "url",
            "the Alertmanager, e.g. url = \"http://alertmanager:9093\"",
        );
        http_url(cx, &format!("{key}.url"), &url);
        let matchers = a.string_map(cx, "matchers");
        if matchers.is_empty() {
            cx.err(
                &key,
                "a silence needs matchers, e.g. matchers = { instance = \"{address}\" }",
            );
        }
        let duration = a.duration(cx, "duration", Duration::from_secs(7200));
        let comment = a.str(cx, "comment");
        a.finish(cx);
        return Some(MaintenanceSpec::Alertmanager {
            url: url?,
            matchers,
            duration,
            comment,
        });
    }
    if let Some(t) = wh {
        let key = s.key("webhook");
        let mut w = Section::new(t, key.clone(), keys::WEBHOOK);
        let url = w.req_str(cx, "url", "the URL to call when maintenance begins");
        http_url(cx, &format!("{key}.url"), &url);
        let method = w.str(cx, "method").unwrap_or_else(|| "POST".into());
        if !["POST", "PUT", "GET", "DELETE", "PATCH"].contains(&method.as_str()) {
            cx.err(
                &format!("{key}.method"),
                format!("expected POST, PUT, PATCH, DELETE or GET, found \"{method}\""),
            );
        }
        let body = webhook_body(cx, &mut w, "body");
        let undo_url = w.str(cx, "undo_url");
        http_url(cx, &format!("{key}.undo_url"), &undo_url);
        let undo_body = webhook_body(cx, &mut w, "undo_body");
        let headers = w.string_map(cx, "headers");
        w.finish(cx);
        return Some(MaintenanceSpec::Webhook {
            url: url?,
            method,
            body,
            undo_url,
            undo_body,
            headers,
        });
    }
    None
}

fn webhook_body(cx: &mut Cx, w: &mut Section<'_>, k: &'static str) -> Option<WebhookBody> {
    match w.get(k)? {
        toml::Value::String(s) => Some(WebhookBody::Text(s.clone())),
        v @ toml::Value::Table(_) => Some(WebhookBody::Json(v.clone())),
        other => {
            cx.err(
                &w.key(k),
                format!(
                    "expected a string or a table (sent as JSON), found {}",
                    type_name(other)
                ),
            );
            None
        }
    }
}

/// The strings inside a JSON body, for placeholder validation.
pub(super) fn body_templates(b: &WebhookBody, out: &mut Vec<String>) {
    pub(super) fn walk(v: &toml::Value, out: &mut Vec<String>) {
        match v {
            toml::Value::String(s) => out.push(s.clone()),
            toml::Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            toml::Value::Table(t) => t.values().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    match b {
        WebhookBody::Text(t) => out.push(t.clone()),
        WebhookBody::Json(v) => walk(v, out),
    }
}

/// The templates in a maintenance step, by key, for placeholder validation.
pub(super) fn maintenance_templates(m: &MaintenanceSpec) -> Vec<(String, String)> {
    match m {
        MaintenanceSpec::Alertmanager {
            matchers, comment, ..
        } => {
            let mut v: Vec<(String, String)> = matchers
                .iter()
                .map(|(k, t)| (format!("alertmanager.matchers.{k}"), t.clone()))
                .collect();
            if let Some(c) = comment {
                v.push(("alertmanager.comment".into(), c.clone()));
            }
            v
        }
        MaintenanceSpec::Webhook {
            url,
            body,
            undo_url,
            undo_body,
            headers,
            ..
        } => {
            let mut v = vec![("webhook.url".to_string(), url.clone())];
            if let Some(u) = undo_url {
                v.push(("webhook.undo_url".to_string(), u.clone()));
            }
            for (k, b) in [("body", body), ("undo_body", undo_body)] {
                let mut ts = Vec::new();
                if let Some(b) = b {
                    body_templates(b, &mut ts);
                }
                v.extend(ts.into_iter().map(|t| (format!("webhook.{k}"), t)));
            }
            for (k, t) in headers {
                v.push((format!("webhook.headers.{k}"), t.clone()));
            }
            v
        }
    }
}

/// An `http://` or `https://` URL.
pub(super) fn http_url(cx: &mut Cx, key: &str, u: &Option<String>) {
    if let Some(u) = u {
        if !u.starts_with("http://") && !u.starts_with("https://") {
            cx.err(
                key,
                format!("expected an http:// or https:// URL, found \"{u}\""),
            );
        }
    }
}
