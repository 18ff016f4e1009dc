//! The `winrm` transport: commands run on a Windows member through WinRM (WS-Management
//! remote shells), the way Windows admins, Ansible and CAU reach Windows servers.
//!
//! Each command gets its own remote shell (Create, Command, Receive until done, Delete), so
//! a member that rebooted is simply reached again by the next command. The command is the
//! very PowerShell wrapper the ssh transport sends to PowerShell members
//! ([`remote_command`]): it prints its `$PID` and its exit code (`$LASTEXITCODE`, or 1 when
//! a cmdlet failed) on stderr, which this transport picks out as the ssh one does. A step
//! that outlives its timeout gets a WS-Man Signal `terminate` and its shell is deleted,
//! which ends the process on the member.
//!
//! WS-Management, NTLMv2, Basic and Kerberos are done by the `winrm-rs` crate (see
//! docs/architecture.md for why). It has not been run against a real Windows host here:
//! the tests use a fake WS-Management endpoint that answers with MS-WSMV's message shapes.

use super::command_line::{remote_alive, remote_kill, RemoteShell, EXIT_MARKER, PID_MARKER};
use super::ssh::{host_of, WINDOWS_BOOT_ID};
use super::winrm_bridge::{Bridge, Failure};
use super::OutputTail;
use crate::tls::TlsOptions;
use async_trait::async_trait;
use ebb_config::{ConfigErrors, Context, Key, Kind, Section};
use ebb_engine::interfaces::{
    CommandOutcome, DriverError, DriverResult, OutputSink, StartedSink, Transport,
};
use ebb_engine::placeholder::{render, Quote};
use ebb_engine::plan::{Member, Plan, Shell};
use ebb_engine::registry::TransportKind;
use std::collections::BTreeMap;
use std::error::Error as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use winrm_rs::{
    AuthMethod, EncryptionMode, WinrmClient, WinrmConfig, WinrmCredentials, WinrmError,
};

/// The environment variable the password is read from unless `winrm_password_env` names
/// another.
pub const DEFAULT_PASSWORD_ENV: &str = "EBB_WINRM_PASSWORD";

/// The keys the winrm transport owns in `[[member]]` and `[defaults]`.
pub const KEYS: &[Key] = &[
    Key::new(
        "winrm_url",
        Kind::String,
        "winrm: the WS-Management endpoint, http(s)://HOST[:PORT]/wsman (default \"https://{host of address}:5986/wsman\")",
    ),
    Key::new(
        "winrm_auth",
        Kind::String,
        "winrm: \"ntlm\" (default), \"kerberos\" (needs a build with the kerberos feature and a ticket), \"basic\" or \"certificate\"",
    ),
    Key::new(
        "winrm_user",
        Kind::String,
        "winrm: the login, \"DOMAIN\\\\user\" or \"user@domain\" (needed for ntlm and basic)",
    ),
    Key::new(
        "winrm_password_env",
        Kind::String,
        "winrm: the environment variable holding the password (default EBB_WINRM_PASSWORD); the password is never in the pool file",
    ),
    Key::new(
        "winrm_cert",
        Kind::String,
        "winrm: client certificate PEM file for winrm_auth = \"certificate\" (relative to the pool file)",
    ),
    Key::new(
        "winrm_key",
        Kind::String,
        "winrm: private key PEM file for winrm_auth = \"certificate\" (relative to the pool file)",
    ),
    Key::new(
        "insecure_tls",
        Kind::Bool,
        "winrm: accept any server certificate over https (default false; test setups only)",
    ),
    Key::new(
        "ca_file",
        Kind::String,
        "winrm: also trust the certificates in this PEM file over https (a private CA; relative to the pool file)",
    ),
    Key::new(
        "winrm_insecure_tls",
        Kind::Bool,
        "winrm: the former name of insecure_tls, still accepted",
    ),
    Key::new(
        "winrm_connect_timeout",
        Kind::Duration,
        "winrm: bound on connecting (default \"10s\")",
    ),
    Key::new(
        "winrm_operation_timeout",
        Kind::Duration,
        "winrm: how long the member may hold one WS-Man request (default \"20s\"); a step's own timeout bounds the whole command",
    ),
];

/// How ebb logs in to a member over WinRM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// NTLMv2 (the body is sealed by NTLM over http).
    Ntlm,
    /// Kerberos (SPNEGO), from the caller's ticket.
    Kerberos,
    /// HTTP Basic (a local account; https only, except to a loopback address).
    Basic,
    /// A TLS client certificate mapped to a local account.
    Certificate,
}

impl Auth {
    fn name(self) -> &'static str {
        match self {
            Auth::Ntlm => "ntlm",
            Auth::Kerberos => "kerberos",
            Auth::Basic => "basic",
            Auth::Certificate => "certificate",
        }
    }
}

/// Where the WS-Management endpoint is, from `winrm_url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `https` (true) or `http`.
    pub tls: bool,
    /// Host name or address (IPv6 in brackets).
    pub host: String,
    /// Port (default 5986 for https, 5985 for http).
    pub port: u16,
}

impl Endpoint {
    /// Parses `scheme://host[:port]/wsman`. The client always uses the path `/wsman`
    /// (WinRM's own), so another path is refused rather than silently changed.
    pub fn parse(url: &str) -> Result<Endpoint, String> {
        let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(format!(
                "expected an http:// or https:// URL like \"https://web1.example.com:5986/wsman\", found \"{url}\""
            ));
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if !(path.is_empty() || path == "/wsman" || path == "/wsman/") {
            return Err(format!(
                "\"{url}\": the WinRM client ebb uses always talks to the path /wsman, found \"{path}\""
            ));
        }
        if authority.contains('@') {
            return Err(format!(
                "\"{url}\": no user in the URL; set winrm_user (the password comes from the environment)"
            ));
        }
        let (host, port) = if let Some(r) = authority.strip_prefix('[') {
            let (h, after) = r
                .split_once(']')
                .ok_or_else(|| format!("\"{url}\": unclosed [ in the host"))?;
            (format!("[{h}]"), after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (authority.to_string(), None),
            }
        };
        if host.is_empty() || host == "[]" {
            return Err(format!("\"{url}\": no host"));
        }
        let port = match port {
            None => {
                if tls {
                    5986
                } else {
                    5985
                }
            }
            Some(p) => match p.parse::<u16>() {
                Ok(p) if p > 0 => p,
                _ => return Err(format!("\"{url}\": \"{p}\" is not a port from 1 to 65535")),
            },
        };
        Ok(Endpoint { tls, host, port })
    }

    /// The URL, as messages show it.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}:{}/wsman", self.host, self.port)
    }

    fn is_loopback(&self) -> bool {
        let h = self.host.trim_start_matches('[').trim_end_matches(']');
        h == "localhost"
            || h.parse::<std::net::IpAddr>()
                .map(|a| a.is_loopback())
                .unwrap_or(false)
    }
}

/// One member's WinRM settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WinrmSettings {
    /// The endpoint (`winrm_url`).
    pub endpoint: Endpoint,
    /// `winrm_auth`.
    pub auth: Auth,
    /// `winrm_user`.
    pub user: Option<String>,
    /// `winrm_password_env` (default [`DEFAULT_PASSWORD_ENV`]).
    pub password_env: String,
    /// `winrm_cert` / `winrm_key`.
    pub cert: Option<(PathBuf, PathBuf)>,
    /// `insecure_tls` (or its former name `winrm_insecure_tls`).
    pub insecure_tls: bool,
    /// `ca_file`: a PEM file of CA certificates trusted besides the Mozilla roots.
    pub ca_file: Option<PathBuf>,
    /// `winrm_connect_timeout` (default 10 s).
    pub connect_timeout: Duration,
    /// `winrm_operation_timeout` (default 20 s).
    pub operation_timeout: Duration,
}

impl WinrmSettings {
    /// Reads the winrm keys of one table, every problem into `cx`. `address` gives the
    /// default host; relative paths are taken from `base`.
    pub fn read(
        cx: &mut Context,
        s: &mut Section<'_>,
        address: &str,
        base: &Path,
    ) -> WinrmSettings {
        let default_url = format!("https://{}:5986/wsman", bracket(&host_of(address)));
        let endpoint = match s.str(cx, "winrm_url") {
            None => Endpoint::parse(&default_url).unwrap_or(Endpoint {
                tls: true,
                host: bracket(&host_of(address)),
                port: 5986,
            }),
            Some(u) => match Endpoint::parse(u.trim()) {
                Ok(e) => e,
                Err(m) => {
                    s.error(cx, "winrm_url", m);
                    Endpoint {
                        tls: true,
                        host: "-".into(),
                        port: 5986,
                    }
                }
            },
        };
        let auth = s.choice(
            cx,
            "winrm_auth",
            &[
                ("ntlm", Auth::Ntlm),
                ("kerberos", Auth::Kerberos),
                ("basic", Auth::Basic),
                ("certificate", Auth::Certificate),
            ],
            Auth::Ntlm,
        );
        if auth == Auth::Kerberos && !cfg!(feature = "kerberos") {
            s.error(
                cx,
                "winrm_auth",
                "\"kerberos\" needs an ebb built with Kerberos (cargo build --features ebb-drivers/kerberos, which needs the system's GSSAPI library); use \"ntlm\" here",
            );
        }
        let user = s.str(cx, "winrm_user").filter(|u| !u.trim().is_empty());
        let password_env = s
            .str(cx, "winrm_password_env")
            .unwrap_or_else(|| DEFAULT_PASSWORD_ENV.to_string());
        let cert = s.str(cx, "winrm_cert").map(|p| base.join(p));
        let key = s.str(cx, "winrm_key").map(|p| base.join(p));
        // `insecure_tls` is the documented name; `winrm_insecure_tls`, its first name, is
        // still accepted so that existing pool files keep working.
        let insecure_tls = s.bool(cx, "insecure_tls", false);
        let former = s.bool(cx, "winrm_insecure_tls", false);
        if s.has("insecure_tls") && s.has("winrm_insecure_tls") {
            s.error(
                cx,
                "winrm_insecure_tls",
                "winrm_insecure_tls is the former name of insecure_tls: set insecure_tls only",
            );
        }
        let insecure_tls = insecure_tls || former;
        let ca_file = s.str(cx, "ca_file").map(|p| base.join(p));
        if ca_file.is_some() && insecure_tls {
            s.error(
                cx,
                "ca_file",
                "set either ca_file or insecure_tls, not both",
            );
        }
        if ca_file.is_some() && !endpoint.tls {
            s.error(
                cx,
                "ca_file",
                "ca_file applies to an https:// winrm_url only",
            );
        }
        let connect_timeout = s.duration(cx, "winrm_connect_timeout", Duration::from_secs(10));
        let operation_timeout = s.duration(cx, "winrm_operation_timeout", Duration::from_secs(20));
        let cert = match (auth, cert, key) {
            (Auth::Certificate, Some(c), Some(k)) => Some((c, k)),
            (Auth::Certificate, _, _) => {
                s.error(
                    cx,
                    "winrm_auth",
                    "\"certificate\" needs winrm_cert and winrm_key (PEM files)",
                );
                None
            }
            _ => None,
        };
        if auth == Auth::Certificate && !endpoint.tls {
            s.error(
                cx,
                "winrm_url",
                "winrm_auth = \"certificate\" needs an https:// URL",
            );
        }
        if auth == Auth::Basic && !endpoint.tls && !endpoint.is_loopback() {
            s.error(
                cx,
                "winrm_url",
                "winrm_auth = \"basic\" over http:// would send the password in clear; use https:// (or ntlm, which seals the messages over http)",
            );
        }
        WinrmSettings {
            endpoint,
            auth,
            user,
            password_env,
            cert,
            insecure_tls,
            ca_file,
            connect_timeout,
            operation_timeout,
        }
    }
}

fn bracket(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

/// The `winrm` transport's descriptor, registered in [`crate::registry`].
pub struct WinrmTransport;

impl TransportKind for WinrmTransport {
    fn name(&self) -> &'static str {
        "winrm"
    }

    fn keys(&self) -> Vec<Key> {
        KEYS.to_vec()
    }

    fn validate(&self, cx: &mut Context, section: &mut Section<'_>) {
        WinrmSettings::read(cx, section, "localhost", Path::new(""));
    }

    fn knows_boot_identity(&self) -> bool {
        true
    }

    fn build(&self, plan: &Plan, member: &Member) -> Result<Arc<dyn Transport>, ConfigErrors> {
        Ok(Arc::new(Winrm::new(plan, member)?))
    }
}

/// Runs a member's commands over WinRM.
pub struct Winrm {
    member: String,
    settings: WinrmSettings,
    boot_id: String,
    client: Result<Arc<WinrmClient>, String>,
    /// Over https with `ca_file` or a client certificate: ebb's own TLS, between winrm-rs
    /// and the member (see [`super::winrm_bridge`]).
    bridge: Option<Bridge>,
}

impl Winrm {
    /// The winrm transport for `member` of `plan`. The password is read from the
    /// environment here; a missing one is reported when the member is first reached.
    pub fn new(plan: &Plan, member: &Member) -> Result<Winrm, ConfigErrors> {
        let (base, at) = super::member_settings_origin(plan, member);
        let mut cx = ebb_engine::config::context(plan);
        let mut section = Section::new(&member.settings, at.clone(), KEYS);
        let settings = WinrmSettings::read(&mut cx, &mut section, &member.address, &base);
        if member.shell != Shell::PowerShell {
            cx.err(
                &format!("{at}.shell"),
                "transport = \"winrm\" runs PowerShell: set shell = \"powershell\"",
            );
        }
        let settings = cx.into_result(settings)?;
        let boot_id = match &member.boot_id {
            Some(b) => render(b, member, Quote::from(member.shell), &BTreeMap::new()),
            None => WINDOWS_BOOT_ID.to_string(),
        };
        let bridge = bridge(&settings);
        let client = match &bridge {
            Some(Err(e)) => Err(e.clone()),
            Some(Ok(b)) => client(&settings, Some(b.proxy_url())),
            None => client(&settings, None),
        };
        Ok(Winrm {
            member: member.name.clone(),
            settings,
            boot_id,
            client,
            bridge: bridge.and_then(Result::ok),
        })
    }

    /// The settings in use.
    pub fn settings(&self) -> &WinrmSettings {
        &self.settings
    }

    fn client(&self) -> DriverResult<&Arc<WinrmClient>> {
        let started = match &self.bridge {
            Some(b) => b.start(),
            None => Ok(()),
        };
        started
            .and(self.client.as_ref().map_err(String::clone))
            .map_err(|e| {
                DriverError::new(format!(
                    "member \"{}\": cannot reach it over WinRM at {}: {e}",
                    self.member,
                    self.settings.endpoint.url()
                ))
            })
    }

    /// Explains a WinRM failure for humans: auth failed, TLS, unreachable.
    fn failure(&self, doing: &str, e: &WinrmError) -> DriverError {
        // Through the bridge, winrm-rs sees only that its proxy answered 502: the bridge
        // knows what went wrong with the member.
        let why = match self.bridge.as_ref().and_then(Bridge::take_failure) {
            Some(Failure::Tls(t)) => tls_failed(&t, &self.settings),
            Some(Failure::Unreachable(t)) => format!("unreachable: {t}"),
            None => explain(e, &self.settings),
        };
        DriverError::new(format!(
            "member \"{}\": WinRM {doing} at {} failed: {why}",
            self.member,
            self.settings.endpoint.url(),
        ))
    }
}

/// The TLS bridge a member needs: over https with `ca_file` or a client certificate, which
/// winrm-rs 1.1.2 cannot use itself.
fn bridge(s: &WinrmSettings) -> Option<Result<Bridge, String>> {
    if !s.endpoint.tls || (s.ca_file.is_none() && s.auth != Auth::Certificate) {
        return None;
    }
    let tls = TlsOptions {
        insecure: s.insecure_tls,
        ca_file: s.ca_file.clone(),
        client_cert: s.cert.clone(),
    };
    let authority = format!("{}:{}", s.endpoint.host, s.endpoint.port);
    Some(Bridge::bind(
        &authority,
        tls,
        s.connect_timeout,
        s.auth == Auth::Certificate,
    ))
}

/// Builds the client of a member (an error text when its credentials are missing). With a
/// bridge (`proxy`), winrm-rs speaks plain HTTP to it and the bridge does the TLS.
fn client(s: &WinrmSettings, proxy: Option<&str>) -> Result<Arc<WinrmClient>, String> {
    // reqwest needs a process-wide rustls provider: ebb's is ring (no C toolchain beyond
    // ring's own). Installing it twice is harmless.
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    let password = match s.auth {
        Auth::Ntlm | Auth::Basic => match std::env::var(&s.password_env) {
            Ok(p) if !p.is_empty() => p,
            _ => {
                return Err(format!(
                "no password: set the environment variable {} (winrm_password_env names another)",
                s.password_env
            ))
            }
        },
        _ => String::new(),
    };
    let user = s.user.clone().unwrap_or_default();
    if matches!(s.auth, Auth::Ntlm | Auth::Basic) && user.is_empty() {
        return Err(format!(
            "winrm_auth = \"{}\" needs winrm_user",
            s.auth.name()
        ));
    }
    let (domain, user) = match user.split_once('\\') {
        Some((d, u)) => (d.to_string(), u.to_string()),
        None => (String::new(), user),
    };
    let config = WinrmConfig {
        port: s.endpoint.port,
        use_tls: s.endpoint.tls && proxy.is_none(),
        accept_invalid_certs: s.insecure_tls && proxy.is_none(),
        proxy: proxy.map(str::to_string),
        // Through the bridge the messages are inside ebb's TLS: NTLM does not seal them, as
        // over any https listener.
        encryption: if proxy.is_some() {
            EncryptionMode::Never
        } else {
            EncryptionMode::Auto
        },
        connect_timeout_secs: s.connect_timeout.as_secs().max(1),
        operation_timeout_secs: s.operation_timeout.as_secs().max(1),
        auth_method: match s.auth {
            Auth::Ntlm => AuthMethod::Ntlm,
            Auth::Kerberos => AuthMethod::Kerberos,
            Auth::Basic => AuthMethod::Basic,
            Auth::Certificate => AuthMethod::Certificate,
        },
        client_cert_pem: s.cert.as_ref().map(|(c, _)| c.display().to_string()),
        client_key_pem: s.cert.as_ref().map(|(_, k)| k.display().to_string()),
        // Step output is kept bounded by ebb ([`OutputTail`]); this bounds one command.
        max_output_bytes: Some(64 * 1024 * 1024),
        ..WinrmConfig::default()
    };
    WinrmClient::new(config, WinrmCredentials::new(user, password, domain))
        .map(Arc::new)
        .map_err(|e| explain(&e, s))
}

/// A WinRM error in words: which of auth failed / TLS / unreachable it is.
fn explain(e: &WinrmError, s: &WinrmSettings) -> String {
    let text = error_chain(e);
    let lower = text.to_ascii_lowercase();
    // winrm-rs reports every refused HTTP status as AuthFailed: only a 401 answer is a
    // refused login ("HTTP 401 Unauthorized from WinRM", NTLM's "authentication rejected").
    // Not any "401": the URL's port may hold it, and NTLM says "expected 401 ..., got 404".
    let refused = matches!(e, WinrmError::AuthFailed(_))
        && (lower.contains("http 401")
            || lower.contains("401 unauthorized")
            || lower.contains("authentication rejected")
            || lower.contains("session expired"));
    if refused || (matches!(e, WinrmError::Ntlm(_)) && !lower.contains("http error")) {
        let who = s.user.as_deref().unwrap_or("(no winrm_user)");
        return format!(
            "login refused (auth failed for {who} with {}; check winrm_user and the password in {}): {text}",
            s.auth.name(),
            s.password_env
        );
    }
    if lower.contains("certificate")
        || lower.contains("tls")
        || lower.contains("handshake")
        || lower.contains("unknownissuer")
        || lower.contains("corrupt message")
        || lower.contains("alert")
    {
        return tls_failed(&text, s);
    }
    if lower.contains("connect") || lower.contains("dns") || lower.contains("timed out") {
        return format!("unreachable: {text}");
    }
    text
}

/// A TLS failure in words, with what to set.
fn tls_failed(text: &str, s: &WinrmSettings) -> String {
    let what = if s.auth == Auth::Certificate {
        "the listener's certificate is not trusted, the member refused ebb's client certificate (winrm_cert), or it does not speak TLS"
    } else {
        "the listener's certificate is not trusted, or it does not speak TLS"
    };
    let fix = match &s.ca_file {
        Some(f) => format!(
            "check that {} holds the CA that signed the listener's certificate and that the certificate names {}",
            f.display(),
            s.endpoint.host
        ),
        None => "for an internal CA set ca_file = \"its.pem\"; or use the http:// listener with ntlm or kerberos, or insecure_tls = true on a trusted network".to_string(),
    };
    format!("TLS failed ({what}; {fix}; see docs/transports.md): {text}")
}

/// An error with its sources (reqwest hides the useful part in them).
fn error_chain(e: &WinrmError) -> String {
    let mut s = e.to_string();
    // winrm-rs does not give its HTTP error as the source: walk reqwest's own chain.
    let mut cur: Option<&dyn std::error::Error> = match e {
        WinrmError::Http(h) => h.source(),
        other => std::error::Error::source(other),
    };
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

/// Splits what Receive gave into lines, keeping a partial last line for the next poll.
#[derive(Default)]
struct Lines {
    partial: Vec<u8>,
}

impl Lines {
    fn feed(&mut self, bytes: &[u8]) -> Vec<String> {
        self.partial.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(i) = self.partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=i).collect();
            out.push(clean(&line));
        }
        out
    }

    fn finish(&mut self) -> Option<String> {
        if self.partial.is_empty() {
            return None;
        }
        let line = clean(&self.partial);
        self.partial.clear();
        Some(line)
    }
}

fn clean(line: &[u8]) -> String {
    String::from_utf8_lossy(line)
        .trim_end_matches(['\n', '\r'])
        .to_string()
}

/// What the stderr lines of the wrapper told.
#[derive(Default)]
struct Markers {
    pid: Option<u32>,
    exit: Option<i32>,
}

impl Markers {
    /// Takes a marker line; false for an ordinary line.
    fn take(&mut self, line: &str, started: &Option<StartedSink>) -> bool {
        if let Some(code) = line
            .strip_prefix(EXIT_MARKER)
            .and_then(|c| c.trim().parse::<i32>().ok())
        {
            self.exit = Some(code);
            return true;
        }
        if self.pid.is_none() {
            if let Some(pid) = line
                .strip_prefix(PID_MARKER)
                .and_then(|p| p.trim().parse::<u32>().ok())
            {
                self.pid = Some(pid);
                if let Some(s) = started {
                    s(&format!("winrm {pid}"));
                }
                return true;
            }
        }
        false
    }
}

impl Winrm {
    async fn run_inner(
        &self,
        command: &str,
        env: &BTreeMap<String, String>,
        timeout: Duration,
        output: Option<OutputSink>,
        started: Option<StartedSink>,
    ) -> DriverResult<CommandOutcome> {
        let client = self.client()?;
        let host = self.settings.endpoint.host.as_str();
        let shell_id = client
            .create_shell(host)
            .await
            .map_err(|e| self.failure("login (Create shell)", &e))?;
        let script = super::command_line::powershell_script(command, env);
        let encoded = super::command_line::encode_powershell(&script);
        let args = [
            "-NoProfile",
            "-NonInteractive",
            "-EncodedCommand",
            encoded.as_str(),
        ];
        let command_id = match client
            .execute_command(host, &shell_id, "powershell", &args)
            .await
        {
            Ok(c) => c,
            Err(e) => {
                let _ = client.delete_shell(host, &shell_id).await;
                return Err(self.failure("Command", &e));
            }
        };
        let mut guard = TerminateOnDrop {
            client: client.clone(),
            host: host.to_string(),
            shell: shell_id.clone(),
            command: command_id.clone(),
            armed: true,
        };
        let tail = OutputTail::default();
        let mut markers = Markers::default();
        let (mut out_lines, mut err_lines) = (Lines::default(), Lines::default());
        let mut status: Option<i32> = None;
        let polled = tokio::time::timeout(timeout, async {
            loop {
                let r = client.receive_output(host, &shell_id, &command_id).await?;
                for l in out_lines.feed(&r.stdout) {
                    tail.keep(l, &output);
                }
                for l in err_lines.feed(&r.stderr) {
                    if !markers.take(&l, &started) {
                        tail.keep(l, &output);
                    }
                }
                if r.done {
                    status = r.exit_code;
                    return Ok::<(), WinrmError>(());
                }
            }
        })
        .await;
        if let Some(l) = out_lines.finish() {
            tail.keep(l, &output);
        }
        if let Some(l) = err_lines.finish() {
            if !markers.take(&l, &started) {
                tail.keep(l, &output);
            }
        }
        let outcome = match polled {
            Err(_) => {
                guard.armed = false;
                // Stop the command on the member: Signal terminate, then delete its shell.
                let _ = client.signal_terminate(host, &shell_id, &command_id).await;
                let _ = client.delete_shell(host, &shell_id).await;
                return Ok(CommandOutcome {
                    exit_code: None,
                    timed_out: true,
                    tail: tail.text(),
                    connection_lost: false,
                    signal: None,
                });
            }
            Ok(Err(e)) => {
                // The member went away mid-command (a reboot, the network): the outcome of
                // the command is unknown. Why goes at the end of its output, where ssh's own
                // message about a dropped connection goes too.
                let mut text = tail.text();
                if !text.is_empty() && !text.ends_with('\n') {
                    text.push('\n');
                }
                text.push_str(&format!("ebb: WinRM Receive failed: {}", error_chain(&e)));
                CommandOutcome {
                    exit_code: None,
                    timed_out: false,
                    tail: text,
                    connection_lost: true,
                    signal: None,
                }
            }
            Ok(Ok(())) => CommandOutcome {
                exit_code: markers.exit.or(status),
                timed_out: false,
                tail: tail.text(),
                connection_lost: false,
                signal: None,
            },
        };
        guard.armed = false;
        let _ = client.delete_shell(host, &shell_id).await;
        Ok(outcome)
    }
}

/// Stops the command on the member when a run is cancelled while it runs (Ctrl-C, abort):
/// the future is dropped, so Signal terminate and Delete go out from a task of their own.
struct TerminateOnDrop {
    client: Arc<WinrmClient>,
    host: String,
    shell: String,
    command: String,
    armed: bool,
}

impl Drop for TerminateOnDrop {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (client, host, shell, command) = (
            self.client.clone(),
            std::mem::take(&mut self.host),
            std::mem::take(&mut self.shell),
            std::mem::take(&mut self.command),
        );
        rt.spawn(async move {
            let _ = client.signal_terminate(&host, &shell, &command).await;
            let _ = client.delete_shell(&host, &shell).await;
        });
    }
}

#[async_trait]
impl Transport for Winrm {
    async fn run(
        &self,
        command: &str,
        env: &BTreeMap<String, String>,
        timeout: Duration,
        output: Option<OutputSink>,
    ) -> DriverResult<CommandOutcome> {
        self.run_inner(command, env, timeout, output, None).await
    }

    async fn run_tracked(
        &self,
        command: &str,
        env: &BTreeMap<String, String>,
        timeout: Duration,
        output: Option<OutputSink>,
        started: StartedSink,
    ) -> DriverResult<CommandOutcome> {
        self.run_inner(command, env, timeout, output, Some(started))
            .await
    }

    async fn still_running(&self, process: &str) -> DriverResult<bool> {
        let pid = parse_process(process)?;
        super::ask_alive(
            self,
            &self.member,
            &format!("process {pid}"),
            &remote_alive(RemoteShell::PowerShell, pid, "-", "-"),
            self.settings.connect_timeout + Duration::from_secs(20),
        )
        .await
    }

    async fn stop_process(&self, process: &str) -> DriverResult<()> {
        let pid = parse_process(process)?;
        if !self.still_running(process).await? {
            return Ok(());
        }
        self.run(
            &remote_kill(RemoteShell::PowerShell, pid),
            &BTreeMap::new(),
            self.settings.connect_timeout + Duration::from_secs(20),
            None,
        )
        .await?;
        if self.still_running(process).await? {
            return Err(DriverError::new(format!(
                "member \"{}\": process {pid} did not end after it was killed",
                self.member
            )));
        }
        Ok(())
    }

    fn describe_process(&self, process: &str) -> String {
        match parse_process(process) {
            Ok(pid) => format!("process {pid} on {}", self.settings.endpoint.host),
            Err(_) => process.to_string(),
        }
    }

    async fn boot_id(&self) -> DriverResult<String> {
        super::ask_boot_id(
            self,
            &self.member,
            &self.boot_id,
            " over WinRM",
            self.settings.connect_timeout + self.settings.operation_timeout,
        )
        .await
    }
}

fn parse_process(s: &str) -> DriverResult<u32> {
    s.strip_prefix("winrm ")
        .and_then(|p| p.trim().parse().ok())
        .ok_or_else(|| DriverError::new(format!("\"{s}\" is not a winrm process identity")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_endpoints() {
        let e = Endpoint::parse("https://web1.example.com:5986/wsman").unwrap();
        assert_eq!(
            (e.tls, e.host.as_str(), e.port),
            (true, "web1.example.com", 5986)
        );
        let e = Endpoint::parse("http://10.0.0.5/wsman").unwrap();
        assert_eq!((e.tls, e.port), (false, 5985));
        let e = Endpoint::parse("https://[fe80::1]:6000").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("[fe80::1]", 6000));
        assert!(Endpoint::parse("https://h/other")
            .unwrap_err()
            .contains("/wsman"));
        assert!(Endpoint::parse("ftp://h/wsman").is_err());
        assert!(Endpoint::parse("https://h:99999/wsman").is_err());
        assert!(Endpoint::parse("https://u:p@h/wsman").is_err());
    }

    #[test]
    fn only_a_401_answer_is_a_refused_login() {
        let s = WinrmSettings {
            endpoint: Endpoint::parse("https://127.0.0.1:34012/wsman").unwrap(),
            auth: Auth::Ntlm,
            user: Some("ebb".into()),
            password_env: DEFAULT_PASSWORD_ENV.into(),
            cert: None,
            insecure_tls: false,
            ca_file: None,
            connect_timeout: Duration::from_secs(1),
            operation_timeout: Duration::from_secs(1),
        };
        let says = |m: &str| explain(&WinrmError::AuthFailed(m.into()), &s);
        for refused in [
            "HTTP 401 Unauthorized from WinRM: ",
            "NTLM authentication rejected (bad credentials or CBT mismatch)",
        ] {
            assert!(says(refused).starts_with("login refused"), "{refused}");
        }
        for other in [
            "expected 401 for NTLM negotiate, got 404 Not Found",
            "HTTP 503 Service Unavailable from WinRM: https://127.0.0.1:34012/wsman",
        ] {
            assert!(!says(other).starts_with("login refused"), "{other}");
        }
    }

    #[test]
    fn lines_across_polls() {
        let mut l = Lines::default();
        assert!(l.feed(b"ab").is_empty());
        assert_eq!(l.feed(b"c\r\nd\n"), vec!["abc", "d"]);
        assert!(l.feed(b"e").is_empty());
        assert_eq!(l.finish().as_deref(), Some("e"));
    }
}
