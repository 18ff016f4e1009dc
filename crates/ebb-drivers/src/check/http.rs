//! The `http` check: a GET whose status (and optionally body) is as expected; `https://`
//! with TLS (a private CA in `ca_file`, or `insecure_tls`).

use async_trait::async_trait;
use ebb_config::{Context, Key, Kind};
use ebb_engine::config::{relative_to_pool, valid_regex};
use ebb_engine::interfaces::{Check, CheckContext, Transport};
use ebb_engine::placeholder::{render, Quote};
use ebb_engine::plan::Member;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// An HTTP GET.
#[derive(Debug, Clone)]
pub struct HttpCheck {
    /// URL template.
    pub url: String,
    /// Expected status.
    pub expect_status: u16,
    /// The body must contain this text.
    pub expect_body: Option<String>,
    /// The body must match this regular expression.
    pub expect_body_regex: Option<String>,
    /// `https://`: accept any certificate (self-signed, wrong name). The connection is
    /// still encrypted, but not authenticated: prefer `ca_file`.
    pub insecure_tls: bool,
    /// `https://`: also trust the certificates in this PEM file (a self-signed
    /// certificate, a private CA).
    pub ca_file: Option<PathBuf>,
}

/// `http = { url = "..." }`.
pub const KIND: super::Descriptor<HttpCheck> = super::Descriptor {
    name: "http",
    value: Kind::Table,
    description: "an HTTP GET",
    example: "http = { url = \"...\" }",
    keys: KEYS,
    read,
};

const KEYS: &[Key] = &[
    Key::required("url", Kind::String, "the URL to GET"),
    Key::new(
        "expect_status",
        Kind::Integer,
        "the status expected (default 200)",
    ),
    Key::new("expect_body", Kind::String, "text the body must contain"),
    Key::new(
        "expect_body_regex",
        Kind::String,
        "a regular expression the body must match",
    ),
    Key::new(
        "insecure_tls",
        Kind::Bool,
        "https: accept any certificate (default false)",
    ),
    Key::new(
        "ca_file",
        Kind::String,
        "https: also trust the certificates in this PEM file",
    ),
];

fn read(cx: &mut Context, key: &str, value: &toml::Value) -> Option<HttpCheck> {
    let mut ht = super::table(cx, key, value, KEYS)?;
    let url = ht.req_str(
        cx,
        "url",
        "the URL to GET, e.g. url = \"http://{address}/health\"",
    );
    let status = ht.uint(cx, "expect_status", 200);
    if !(100..=599).contains(&status) {
        ht.error(
            cx,
            "expect_status",
            format!("expected an HTTP status from 100 to 599, found {status}"),
        );
    }
    let expect_body = ht.str(cx, "expect_body");
    let expect_body_regex = ht.str(cx, "expect_body_regex");
    if let Some(r) = &expect_body_regex {
        valid_regex(cx, &ht.key("expect_body_regex"), r);
    }
    let insecure_tls = ht.bool(cx, "insecure_tls", false);
    // Relative to the pool file, like every other path in it.
    let ca_file = ht.str(cx, "ca_file").map(|f| relative_to_pool(cx, &f));
    ht.finish(cx);
    if let Some(u) = &url {
        if !u.starts_with("http://") && !u.starts_with("https://") {
            ht.error(
                cx,
                "url",
                format!("expected an http:// or https:// URL, found \"{u}\""),
            );
        } else if u.starts_with("http://") && (insecure_tls || ca_file.is_some()) {
            cx.err(key, "insecure_tls and ca_file apply to https:// URLs only");
        }
    }
    Some(HttpCheck {
        url: url?,
        expect_status: status as u16,
        expect_body,
        expect_body_regex,
        insecure_tls,
        ca_file,
    })
}

#[async_trait]
impl Check for HttpCheck {
    async fn run(
        &self,
        member: &Member,
        _: &dyn Transport,
        _: &CheckContext,
        timeout: Duration,
    ) -> Result<String, String> {
        let url = render(&self.url, member, Quote::None, &BTreeMap::new());
        let tls = crate::tls::TlsOptions {
            insecure: self.insecure_tls,
            ca_file: self.ca_file.clone(),
            client_cert: None,
        };
        let resp = crate::http::request_tls("GET", &url, None, &[], timeout, &tls).await?;
        let last_line = super::last_line;
        if resp.status != self.expect_status {
            return Err(format!(
                "GET {url} answered {} (expected {}): {}",
                resp.status,
                self.expect_status,
                last_line(&resp.body)
            ));
        }
        if let Some(want) = &self.expect_body {
            if !resp.body.contains(want.as_str()) {
                return Err(format!(
                    "GET {url}: the body does not contain \"{want}\"; it was: {}",
                    last_line(&resp.body)
                ));
            }
        }
        if let Some(re) = &self.expect_body_regex {
            let r = regex::Regex::new(re).map_err(|e| e.to_string())?;
            if !r.is_match(&resp.body) {
                return Err(format!(
                    "GET {url}: the body does not match /{re}/; it was: {}",
                    last_line(&resp.body)
                ));
            }
        }
        Ok(format!("GET {url} → {}", resp.status))
    }
    fn templates(&self) -> Vec<(String, String)> {
        vec![("http.url".into(), self.url.clone())]
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}
