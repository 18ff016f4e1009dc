//! What a balancer already knows about its members (their names and addresses), read
//! through the same clients the drivers use, so `ebb init` can write a first pool file.
//! Nothing here changes anything on the balancer: each source is only read.

use crate::balancer::haproxy::client::{RuntimeApi, SocketAddr};
use crate::balancer::nlb::{Nlb, NlbSettings};
use ebb_engine::plan::Plan;
use std::time::Duration;

/// One member as a balancer lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Its name in the balancer (HAProxy server, builtin member, NLB node).
    pub name: String,
    /// `host:port` where it serves, or the host alone when the balancer does not say.
    pub address: String,
    /// Its weight, when the balancer has one other than 1 (builtin).
    pub weight: Option<u32>,
    /// The balancer keeps it out of service now (nginx: `down` in the upstream file).
    pub down: bool,
}

/// Bound on each question to a balancer.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// The servers of `backend`, from HAProxy's runtime API at `socket` (a unix socket path
/// or `tcp://HOST:PORT`): `show servers state BACKEND` gives each server's name, address
/// and port.
pub async fn haproxy(socket: &str, backend: &str) -> Result<Vec<Found>, String> {
    let addr = SocketAddr::parse(socket).map_err(|e| format!("socket {e}"))?;
    let api = RuntimeApi::new(addr, TIMEOUT);
    let cmd = format!("show servers state {backend}");
    let text = api.command(&cmd).await?;
    parse_haproxy_servers(&text, backend).map_err(|e| match e {
        ServersError::Answer(line) => api.answer_error(&cmd, &line),
        ServersError::Format(m) => m,
    })
}

/// Why `show servers state` could not be read.
#[derive(Debug)]
enum ServersError {
    /// HAProxy answered an error line (unknown backend, permission).
    Answer(String),
    /// The answer is not the documented format.
    Format(String),
}

/// Reads `show servers state` (version line `1`, a `# be_id be_name ...` header, one line
/// per server); `srv_port` 0 means the server has no port of its own.
fn parse_haproxy_servers(text: &str, backend: &str) -> Result<Vec<Found>, ServersError> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    match lines.next() {
        Some(v) if v.trim() == "1" => {}
        Some(other) => return Err(ServersError::Answer(other.trim().to_string())),
        None => return Err(ServersError::Answer("(no answer)".into())),
    }
    let header = lines
        .next()
        .and_then(|h| h.strip_prefix("# "))
        .ok_or_else(|| ServersError::Format("`show servers state` has no header line".into()))?;
    let cols: Vec<&str> = header.split_whitespace().collect();
    let idx = |name: &str| {
        cols.iter().position(|c| *c == name).ok_or_else(|| {
            ServersError::Format(format!("`show servers state` has no column \"{name}\""))
        })
    };
    let (be, name, addr) = (idx("be_name")?, idx("srv_name")?, idx("srv_addr")?);
    let port = cols.iter().position(|c| *c == "srv_port");
    let mut found = Vec::new();
    for line in lines {
        let f: Vec<&str> = line.split_whitespace().collect();
        let get = |i: usize| f.get(i).copied().unwrap_or("");
        if get(be) != backend {
            continue;
        }
        let host = get(addr);
        let address = match port.map(get).filter(|p| !p.is_empty() && *p != "0") {
            Some(p) if host.contains(':') => format!("[{host}]:{p}"),
            Some(p) => format!("{host}:{p}"),
            None => host.to_string(),
        };
        found.push(Found {
            name: get(name).to_string(),
            address,
            weight: None,
            down: false,
        });
    }
    if found.is_empty() {
        return Err(ServersError::Format(format!(
            "backend \"{backend}\" has no servers (is it the right backend?)"
        )));
    }
    Ok(found)
}

/// The members of ebb's built-in balancer, from its control API.
pub async fn builtin(control: &str, token: Option<String>) -> Result<Vec<Found>, String> {
    let client = ebb_lb::client::ControlClient::new(control, token)
        .map_err(|e| e.to_string())?
        .with_timeout(TIMEOUT);
    let members = client.members().await.map_err(|e| e.to_string())?;
    if members.is_empty() {
        return Err(format!("the balancer at {control} has no members"));
    }
    Ok(members
        .into_iter()
        .map(|m| Found {
            name: m.name,
            address: m.address,
            weight: (m.weight != 1).then_some(m.weight),
            down: false,
        })
        .collect())
}

/// The nodes of the NLB cluster `host` belongs to, read with `Get-NlbClusterNode` on
/// `host` through the ssh transport (PowerShell), as the `nlb` driver reads them.
/// `probe` is a pool file with `host` as its only member (the ssh settings to reach it).
pub async fn nlb(probe: &Plan) -> Result<Vec<Found>, String> {
    let settings = NlbSettings::from_plan(probe).map_err(|e| e.to_string())?;
    let transports = probe
        .members
        .iter()
        .map(|m| crate::transport::build(probe, m))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let driver = Nlb::with_transports(settings, probe, transports);
    nlb_nodes(&driver).await
}

/// The nodes `driver` reads, as members: an NLB node has a name but no service address
/// of its own (the cluster address is shared), so the address is the node's name.
pub async fn nlb_nodes(driver: &Nlb) -> Result<Vec<Found>, String> {
    let rows = driver.cluster_nodes().await?;
    if rows.is_empty() {
        return Err("Get-NlbClusterNode listed no nodes".into());
    }
    Ok(rows
        .into_iter()
        .map(|r| Found {
            address: r.name.clone(),
            name: r.name,
            weight: None,
            down: false,
        })
        .collect())
}

/// The `server` lines of an nginx upstream file (on this machine): each address exactly
/// as written (the `nginx` driver finds a member's line by it), named after its host.
/// `unix:` sockets are left out (ebb cannot reach such a member); `skipped` lists them.
pub fn nginx(upstream_file: &std::path::Path) -> Result<(Vec<Found>, Vec<String>), String> {
    let text = std::fs::read_to_string(upstream_file)
        .map_err(|e| format!("cannot read {}: {e}", upstream_file.display()))?;
    let upstream = crate::balancer::nginx::upstream::Upstream::parse(text)
        .map_err(|e| format!("{}: {e}", upstream_file.display()))?;
    let mut found: Vec<Found> = Vec::new();
    let mut skipped = Vec::new();
    for server in &upstream.servers {
        if server.address.starts_with("unix:") {
            skipped.push(format!("line {}: {}", server.line, server.address));
            continue;
        }
        let mut name = member_name(&server.address);
        if found.iter().any(|f| f.name == name) {
            name = format!("{name}-{}", server.line);
        }
        found.push(Found {
            name,
            address: server.address.clone(),
            weight: None,
            down: server.down,
        });
    }
    if found.is_empty() {
        return Err(format!(
            "{} has no `server` lines ebb can use (it should hold the upstream's `server ADDRESS ...;` lines)",
            upstream_file.display()
        ));
    }
    Ok((found, skipped))
}

/// A member name from an address: the host of `host:port` (an IP whole, a host name's
/// first label), or `host-port` when the host alone would not tell members apart.
fn member_name(address: &str) -> String {
    let host = match address.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(rest),
        None => match address.rsplit_once(':') {
            Some((h, p)) if p.parse::<u16>().is_ok() && !h.contains(':') => h,
            _ => address,
        },
    };
    let is_ip = host.parse::<std::net::IpAddr>().is_ok();
    let name = if is_ip {
        host
    } else {
        host.split('.').next().unwrap_or(host)
    };
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATE: &str = "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port\n3 app 1 web1 127.0.0.1 2 0 1 1 5 1 0 0 0 0 0 0 - 8081 - 0 0 - - 0\n3 app 2 web2 ::1 2 0 1 1 5 1 0 0 0 0 0 0 - 8082 - 0 0 - - 0\n3 app 3 web3 10.0.0.3 2 0 1 1 5 1 0 0 0 0 0 0 - 0 - 0 0 - - 0\n";

    #[test]
    fn reads_names_and_addresses() {
        let f = parse_haproxy_servers(STATE, "app").expect("parses");
        let got: Vec<(&str, &str)> = f
            .iter()
            .map(|f| (f.name.as_str(), f.address.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("web1", "127.0.0.1:8081"),
                ("web2", "[::1]:8082"),
                ("web3", "10.0.0.3")
            ]
        );
    }

    #[test]
    fn nginx_member_names_come_from_hosts() {
        assert_eq!(member_name("192.0.2.11:80"), "192.0.2.11");
        assert_eq!(member_name("app1.example:8080"), "app1");
        assert_eq!(member_name("[2001:db8::1]:80"), "2001-db8--1");
        assert_eq!(member_name("backend"), "backend");
    }

    #[test]
    fn an_error_line_is_haproxys_answer() {
        match parse_haproxy_servers("Can't find backend.\n", "nope") {
            Err(ServersError::Answer(l)) => assert_eq!(l, "Can't find backend."),
            other => panic!("expected HAProxy's answer, got {other:?}"),
        }
    }
}
