//! `[state]`: where the journal and the pool's lock live (SQLite beside the pool file, or
//! etcd), with the `EBB_STATE_*` overrides a pipeline sets instead of editing the file.

use super::keys;
use crate::plan::{Secret, StateBackend, StateSpec};
use ebb_config::{Context, Section};
use std::time::Duration;

pub(super) fn state(cx: &mut Context, top: &mut Section<'_>) -> StateSpec {
    let mut spec = StateSpec::default();
    let Some(t) = top.sub(cx, "state") else {
        return spec;
    };
    let mut s = Section::new(t, "state", keys::STATE);
    spec.backend = s.choice(
        cx,
        "backend",
        &[
            ("sqlite", StateBackend::Sqlite),
            ("etcd", StateBackend::Etcd),
        ],
        StateBackend::Sqlite,
    );
    if let Some(e) = s.strings(cx, "endpoints") {
        for (i, ep) in e.iter().enumerate() {
            if let Err(m) = check_endpoint(ep) {
                cx.err(&format!("state.endpoints[{i}]"), m);
            }
        }
        spec.endpoints = e;
    }
    if let Some(p) = s.str(cx, "prefix") {
        if !p.starts_with('/') || p.ends_with('/') && p.len() > 1 {
            s.error(
                cx,
                "prefix",
                format!("expected a key prefix such as \"/ebb\" (leading '/', no trailing '/'), found \"{p}\""),
            );
        }
        spec.prefix = p;
    }
    let ttl = s.duration(cx, "lease_ttl", spec.lease_ttl);
    if let Err(m) = check_ttl(ttl) {
        s.error(cx, "lease_ttl", m);
    }
    spec.lease_ttl = ttl;
    // Relative to the pool file, like every other path in it.
    spec.ca_file = s
        .str(cx, "ca_file")
        .map(|f| super::relative_to_pool(cx, &f));
    spec.cert_file = s
        .str(cx, "cert_file")
        .map(|f| super::relative_to_pool(cx, &f));
    spec.key_file = s
        .str(cx, "key_file")
        .map(|f| super::relative_to_pool(cx, &f));
    if spec.cert_file.is_some() != spec.key_file.is_some() {
        let missing = if spec.cert_file.is_some() {
            "key_file"
        } else {
            "cert_file"
        };
        cx.err(
            &format!("state.{missing}"),
            "cert_file and key_file go together (the client certificate and its private key): give both or neither",
        );
    }
    spec.username = s.str(cx, "username");
    if let Some(p) = s.str(cx, "password") {
        spec.password = Some(Secret(p));
    }
    s.finish(cx);
    if spec.backend == StateBackend::Etcd && spec.endpoints.is_empty() {
        cx.err(
            "state.endpoints",
            "backend = \"etcd\" needs endpoints = [\"http://HOST:2379\", ...]",
        );
    }
    if let Err(m) = spec.check_tls() {
        cx.err("state", m);
    }
    spec
}

fn check_endpoint(ep: &str) -> Result<(), String> {
    let Some(rest) = ep
        .strip_prefix("http://")
        .or_else(|| ep.strip_prefix("https://"))
    else {
        return Err(format!(
            "expected an etcd client URL such as \"http://127.0.0.1:2379\" or \"https://etcd1:2379\", found \"{ep}\""
        ));
    };
    let hostport = rest.trim_end_matches('/');
    match hostport.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok() && !hostport.contains('/') => {
            Ok(())
        }
        _ => Err(format!(
            "expected http://HOST:PORT or https://HOST:PORT (the port is required), found \"{ep}\""
        )),
    }
}

fn check_ttl(ttl: Duration) -> Result<(), String> {
    if ttl < Duration::from_secs(2) || ttl.subsec_nanos() != 0 {
        return Err(format!(
            "expected whole seconds, at least \"2s\" (etcd leases count in seconds), found \"{}\"",
            ebb_config::format_duration(ttl)
        ));
    }
    Ok(())
}

impl StateSpec {
    /// TLS files only make sense with an `https://` endpoint (a typo'd scheme would
    /// otherwise send the password in clear).
    fn check_tls(&self) -> Result<(), String> {
        let files = self.ca_file.is_some() || self.cert_file.is_some();
        if files
            && !self.endpoints.is_empty()
            && !self.endpoints.iter().any(|e| e.starts_with("https://"))
        {
            return Err("ca_file, cert_file and key_file apply to https:// endpoints only; the endpoints are all http://".into());
        }
        Ok(())
    }

    /// Applies `--state-backend` and the `EBB_STATE_BACKEND`, `EBB_STATE_ENDPOINTS`
    /// (comma-separated), `EBB_STATE_PREFIX`, `EBB_STATE_LEASE_TTL`, `EBB_STATE_USERNAME`,
    /// `EBB_STATE_PASSWORD`, `EBB_STATE_CA_FILE`, `EBB_STATE_CERT_FILE` and
    /// `EBB_STATE_KEY_FILE` environment variables, in that order of precedence (flag
    /// first). Errors name the flag or variable.
    pub fn apply_overrides(
        &mut self,
        backend_flag: Option<&str>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<(), String> {
        let backend = match backend_flag {
            Some(b) => Some(("--state-backend", b.to_string())),
            None => env("EBB_STATE_BACKEND").map(|b| ("EBB_STATE_BACKEND", b)),
        };
        if let Some((from, b)) = backend {
            self.backend = match b.as_str() {
                "sqlite" => StateBackend::Sqlite,
                "etcd" => StateBackend::Etcd,
                other => {
                    return Err(format!(
                        "{from}: expected \"sqlite\" or \"etcd\", found \"{other}\""
                    ))
                }
            };
        }
        if let Some(e) = env("EBB_STATE_ENDPOINTS") {
            let eps: Vec<String> = e
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect();
            for ep in &eps {
                check_endpoint(ep).map_err(|m| format!("EBB_STATE_ENDPOINTS: {m}"))?;
            }
            self.endpoints = eps;
        }
        if let Some(p) = env("EBB_STATE_PREFIX") {
            if !p.starts_with('/') {
                return Err(format!(
                    "EBB_STATE_PREFIX: expected a key prefix such as \"/ebb\", found \"{p}\""
                ));
            }
            self.prefix = p;
        }
        if let Some(t) = env("EBB_STATE_LEASE_TTL") {
            let d =
                ebb_config::parse_duration(&t).map_err(|m| format!("EBB_STATE_LEASE_TTL: {m}"))?;
            check_ttl(d).map_err(|m| format!("EBB_STATE_LEASE_TTL: {m}"))?;
            self.lease_ttl = d;
        }
        if let Some(u) = env("EBB_STATE_USERNAME") {
            self.username = Some(u);
        }
        if let Some(p) = env("EBB_STATE_PASSWORD") {
            self.password = Some(Secret(p));
        }
        for (var, slot) in [
            ("EBB_STATE_CA_FILE", &mut self.ca_file),
            ("EBB_STATE_CERT_FILE", &mut self.cert_file),
            ("EBB_STATE_KEY_FILE", &mut self.key_file),
        ] {
            if let Some(f) = env(var).filter(|f| !f.is_empty()) {
                *slot = Some(f.into());
            }
        }
        if self.cert_file.is_some() != self.key_file.is_some() {
            return Err("EBB_STATE_CERT_FILE and EBB_STATE_KEY_FILE (or the pool file's cert_file and key_file) go together: give both or neither".into());
        }
        self.check_tls()?;
        if self.backend == StateBackend::Etcd && self.endpoints.is_empty() {
            return Err("the etcd state backend needs endpoints: set [state] endpoints in the pool file or EBB_STATE_ENDPOINTS".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Result<StateSpec, Vec<String>> {
        let root: toml::Table = text.parse().unwrap();
        let mut cx = Context::new("pool.toml", ebb_config::LineIndex::new(text));
        let mut top = Section::new(&root, "", keys::TOP);
        let s = state(&mut cx, &mut top);
        cx.into_result(s)
            .map_err(|e| e.0.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn defaults_are_sqlite_with_etcd_defaults_ready() {
        let s = read("").unwrap();
        assert_eq!(s.backend, StateBackend::Sqlite);
        assert_eq!(s.prefix, "/ebb");
        assert_eq!(s.lease_ttl, Duration::from_secs(15));
    }

    #[test]
    fn bad_keys_name_file_line_and_key() {
        let e = read(
            "[state]\nbackend = \"etcd\"\nlease_ttl = \"1500ms\"\ncert_file = \"x\"\nendpoint = 1\n",
        )
        .unwrap_err();
        let all = e.join("\n");
        assert!(all.contains("pool.toml:3: state.lease_ttl"), "{all}");
        assert!(all.contains("state.key_file"), "{all}");
        assert!(all.contains("state.endpoint"), "{all}");
        assert!(all.contains("state.endpoints"), "{all}");
    }

    #[test]
    fn env_overrides_win_and_the_password_is_never_printed() {
        let mut s = read("[state]\nbackend = \"etcd\"\nendpoints = [\"http://a:2379\"]\npassword = \"hunter2\"\n").unwrap();
        assert!(!format!("{s:?}").contains("hunter2"));
        s.apply_overrides(None, |k| match k {
            "EBB_STATE_ENDPOINTS" => Some("http://b:1, http://c:2".into()),
            "EBB_STATE_PASSWORD" => Some("s3cret".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(s.endpoints, ["http://b:1", "http://c:2"]);
        assert_eq!(s.password.as_ref().unwrap().0, "s3cret");
        assert!(!format!("{s:?}").contains("s3cret"));
        let e = s.apply_overrides(Some("zk"), |_| None).unwrap_err();
        assert!(e.starts_with("--state-backend"), "{e}");
    }

    #[test]
    fn tls_files_are_read_relative_to_the_pool_file_and_need_https() {
        let s = read("[state]\nbackend = \"etcd\"\nendpoints = [\"https://e1:2379\"]\nca_file = \"ca.pem\"\ncert_file = \"/abs/c.pem\"\nkey_file = \"k.pem\"\n").unwrap();
        assert_eq!(s.ca_file.as_deref(), Some(std::path::Path::new("ca.pem")));
        assert_eq!(
            s.cert_file.as_deref(),
            Some(std::path::Path::new("/abs/c.pem"))
        );
        let e = read(
            "[state]\nbackend = \"etcd\"\nendpoints = [\"http://e1:2379\"]\nca_file = \"ca.pem\"\n",
        )
        .unwrap_err()
        .join("\n");
        assert!(e.contains("https:// endpoints only"), "{e}");
        let e = read("[state]\nbackend = \"etcd\"\nendpoints = [\"ftp://e1:2379\"]\n")
            .unwrap_err()
            .join("\n");
        assert!(
            e.contains("https://HOST:PORT") || e.contains("https://etcd1:2379"),
            "{e}"
        );
    }
}
