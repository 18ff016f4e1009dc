//! Addresses in the config: `HOST:PORT` and the control URL.

use std::net::{SocketAddr, ToSocketAddrs};

/// Parses `host:port` into one socket address, resolving names like `localhost`.
pub fn parse_host_port(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(format!("expected \"HOST:PORT\", found {s:?}"));
    };
    let port: u16 = port
        .parse()
        .map_err(|_| format!("expected \"HOST:PORT\" with a numeric port, found {s:?}"))?;
    resolve(host.trim_start_matches('[').trim_end_matches(']'), port)
}

pub(super) fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    match (host, port).to_socket_addrs() {
        Ok(mut it) => it
            .next()
            .ok_or_else(|| format!("the host {host:?} has no address")),
        Err(e) => Err(format!("cannot resolve the host {host:?}: {e}")),
    }
}

/// Splits a control URL (`http://HOST:PORT`, a trailing `/` allowed; the scheme may be left
/// out) into host and port.
pub fn parse_control_url(url: &str) -> Result<(String, u16), String> {
    let rest = if let Some(r) = url.strip_prefix("http://") {
        r
    } else if url.starts_with("https://") {
        return Err(format!(
            "expected an http:// URL, found {url:?}; the control API speaks plain HTTP (keep it on loopback or behind a TLS proxy)"
        ));
    } else if url.contains("://") {
        return Err(format!("expected an http://HOST:PORT URL, found {url:?}"));
    } else {
        url
    };
    let rest = rest.trim_end_matches('/');
    if rest.contains('/') || rest.is_empty() {
        return Err(format!(
            "expected http://HOST:PORT without a path, found {url:?}"
        ));
    }
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(':') || h.starts_with('[') => (h, p),
        _ => {
            return Err(format!(
                "expected http://HOST:PORT with a port, found {url:?}"
            ))
        }
    };
    let port: u16 = port
        .parse()
        .map_err(|_| format!("expected http://HOST:PORT with a numeric port, found {url:?}"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(format!(
            "expected http://HOST:PORT with a host, found {url:?}"
        ));
    }
    Ok((host.to_string(), port))
}
