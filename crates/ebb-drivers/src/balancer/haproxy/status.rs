//! Reading HAProxy's answers: `show stat` (CSV: status, sessions, queue, last check, the
//! error counters the `balancer` check reads) and
//! `show servers state` (the admin flags: forced maintenance, forced drain), and mapping
//! what they say of one server to ebb's started | draining | stopped.

use ebb_engine::interfaces::{Counters, HostState, MemberLbState};
use std::collections::HashMap;

/// `srv_admin_state` bits (HAProxy's `enum srv_admin`).
pub mod admin {
    /// Forced into maintenance (`set server ... state maint`, `disable server`).
    pub const FMAINT: u32 = 0x01;
    /// Maintenance inherited from a tracked server.
    pub const IMAINT: u32 = 0x02;
    /// Maintenance from the configuration (`disabled`).
    pub const CMAINT: u32 = 0x04;
    /// Forced drain (`set server ... state drain`).
    pub const FDRAIN: u32 = 0x08;
    /// Drain inherited from a tracked server.
    pub const IDRAIN: u32 = 0x10;
    /// Maintenance after a DNS resolution failure.
    pub const RMAINT: u32 = 0x20;
    /// Any maintenance.
    pub const ANY_MAINT: u32 = FMAINT | IMAINT | CMAINT | RMAINT;
    /// Any drain.
    pub const ANY_DRAIN: u32 = FDRAIN | IDRAIN;
}

/// `srv_check_state` bit: the server has health checks (`check`).
pub const CHECK_CONFIGURED: u32 = 0x02;

/// One server's line of `show stat`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatRow {
    /// Backend.
    pub backend: String,
    /// Server.
    pub server: String,
    /// `status`: `UP`, `UP 1/3`, `DOWN`, `DRAIN`, `MAINT`, `NOLB`, `no check`, ...
    pub status: String,
    /// `scur`: current sessions.
    pub scur: u64,
    /// `qcur`: requests queued for this server.
    pub qcur: u64,
    /// `check_status` (`L4OK`, `L4CON`, `L7STS`, ...), empty without checks.
    pub check_status: String,
    /// `last_chk`: the last check's detail (`Connection refused`, `HTTP status 503`, ...).
    pub last_chk: String,
    /// Requests sent to the server and those that failed (see [`counters`]).
    pub counters: Counters,
}

/// A server's counters: requests are `req_tot` (HTTP requests it processed) or `lbtot`
/// (times the balancing chose it: TCP mode), whichever is higher; errors are `econ`
/// (connect failures) + `eresp` (failed or aborted responses) + `hrsp_5xx` (5xx answers,
/// HTTP mode). A column HAProxy leaves empty (`hrsp_5xx` in TCP mode) counts as 0.
fn counters(get: &dyn Fn(&str) -> u64) -> Counters {
    Counters {
        requests: get("req_tot").max(get("lbtot")),
        errors: get("econ") + get("eresp") + get("hrsp_5xx"),
    }
}

/// Parses `show stat` output; the rows of servers only (not FRONTEND/BACKEND lines).
pub fn parse_stat(text: &str) -> Result<Vec<StatRow>, String> {
    let mut lines = text.lines();
    let header = lines
        .next()
        .and_then(|h| h.strip_prefix("# "))
        .ok_or_else(|| first_line(text))?;
    let cols: HashMap<&str, usize> = header.split(',').enumerate().map(|(i, c)| (c, i)).collect();
    let col = |name: &str| {
        cols.get(name)
            .copied()
            .ok_or_else(|| format!("`show stat` has no column \"{name}\""))
    };
    let (px, sv, st, sc, qc) = (
        col("pxname")?,
        col("svname")?,
        col("status")?,
        col("scur")?,
        col("qcur")?,
    );
    let (cs, lc) = (
        cols.get("check_status").copied(),
        cols.get("last_chk").copied(),
    );
    let mut rows = Vec::new();
    for line in lines.filter(|l| !l.trim().is_empty()) {
        let f = split_csv(line);
        let get = |i: usize| f.get(i).map(String::as_str).unwrap_or("");
        if get(sv) == "FRONTEND" || get(sv) == "BACKEND" {
            continue;
        }
        let number = |name: &str| cols.get(name).map_or(0, |i| get(*i).parse().unwrap_or(0));
        rows.push(StatRow {
            counters: counters(&number),
            backend: get(px).to_string(),
            server: get(sv).to_string(),
            status: get(st).to_string(),
            scur: get(sc).parse().unwrap_or(0),
            qcur: get(qc).parse().unwrap_or(0),
            check_status: cs.map(get).unwrap_or("").to_string(),
            last_chk: lc.map(get).unwrap_or("").to_string(),
        });
    }
    Ok(rows)
}

/// One server's line of `show servers state`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AdminRow {
    /// `srv_op_state`: 0 stopped, 1 starting, 2 running, 3 stopping.
    pub op_state: u32,
    /// `srv_admin_state`: the [`admin`] bits.
    pub admin_state: u32,
    /// `srv_check_state`: health check flags ([`CHECK_CONFIGURED`], ...).
    pub check_state: u32,
}

/// Parses `show servers state` output into (backend, server) -> admin row.
pub fn parse_servers_state(text: &str) -> Result<HashMap<(String, String), AdminRow>, String> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    match lines.next() {
        Some(v) if v.trim() == "1" => {}
        _ => return Err(first_line(text)),
    }
    let header = lines
        .next()
        .and_then(|h| h.strip_prefix("# "))
        .ok_or_else(|| "`show servers state` has no header line".to_string())?;
    let cols: Vec<&str> = header.split_whitespace().collect();
    let idx = |name: &str| {
        cols.iter()
            .position(|c| *c == name)
            .ok_or_else(|| format!("`show servers state` has no column \"{name}\""))
    };
    let (be, sv, op, ad, ck) = (
        idx("be_name")?,
        idx("srv_name")?,
        idx("srv_op_state")?,
        idx("srv_admin_state")?,
        idx("srv_check_state")?,
    );
    let mut out = HashMap::new();
    for line in lines {
        let f: Vec<&str> = line.split_whitespace().collect();
        let get = |i: usize| f.get(i).copied().unwrap_or("");
        out.insert(
            (get(be).to_string(), get(sv).to_string()),
            AdminRow {
                op_state: get(op).parse().unwrap_or(0),
                admin_state: get(ad).parse().unwrap_or(0),
                check_state: get(ck).parse().unwrap_or(0),
            },
        );
    }
    Ok(out)
}

/// What HAProxy says of one server, in ebb's words. `admin` is `None` when
/// `show servers state` did not list the server (then the status word decides).
///
/// - maintenance (MAINT) or drain (DRAIN, NOLB): `draining` while sessions or queued
///   requests remain (`scur + qcur > 0`), `stopped` when none do;
/// - otherwise `started`, healthy when the status is `UP` (or `UP 1/3`, going down but
///   still up), unhealthy when `DOWN`, unknown with `no check`.
pub fn to_member_state(row: &StatRow, admin: Option<AdminRow>) -> MemberLbState {
    let flags = admin.map(|a| a.admin_state).unwrap_or(0);
    let status = row.status.trim();
    let word = status.split_whitespace().next().unwrap_or("");
    let sessions = row.scur + row.qcur;
    let in_maint = flags & admin::ANY_MAINT != 0 || word == "MAINT";
    let in_drain = flags & admin::ANY_DRAIN != 0 || word == "DRAIN" || word == "NOLB";
    let health_down = word == "DOWN";
    let out_state = if sessions > 0 {
        HostState::Draining
    } else {
        HostState::Stopped
    };
    let (state, healthy) = if in_maint {
        // Health checks are off in maintenance: nothing is known of the health.
        (out_state, None)
    } else if in_drain {
        (out_state, Some(!health_down))
    } else if health_down {
        (HostState::Started, Some(false))
    } else if word == "UP" {
        (HostState::Started, Some(true))
    } else {
        (HostState::Started, None)
    };
    let mut detail = status.to_string();
    if in_drain && !in_maint && word != "DRAIN" && word != "NOLB" {
        // A drained server that fails its checks shows DOWN; say both.
        detail = format!("DRAIN, {detail}");
    }
    if health_down && !row.check_status.is_empty() {
        detail.push_str(&format!(" (check {}", row.check_status));
        if !row.last_chk.is_empty() {
            detail.push_str(&format!(": {}", row.last_chk));
        }
        detail.push(')');
    }
    if sessions > 0 {
        detail.push_str(&format!(", {} session(s)", row.scur));
        if row.qcur > 0 {
            detail.push_str(&format!(", {} queued", row.qcur));
        }
    }
    MemberLbState {
        state,
        healthy,
        active_connections: Some(sessions),
        detail,
    }
}

fn first_line(text: &str) -> String {
    let first = text.lines().next().unwrap_or("").trim();
    if first.is_empty() {
        "an empty answer".to_string()
    } else {
        format!("\"{first}\"")
    }
}

/// Splits one CSV line; HAProxy quotes fields that contain commas or quotes.
fn split_csv(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "# pxname,svname,qcur,qmax,scur,smax,status,check_status,last_chk\n\
        be,FRONTEND,,,0,0,OPEN,,\n\
        be,s1,0,0,2,3,DRAIN,L4OK,\n\
        be,s2,1,1,0,0,DOWN,L4CON,\"Connection refused, really\"\n\
        be,s3,0,0,0,0,UP 1/3,L4OK,\n\
        be,BACKEND,0,0,2,3,UP,,\n\n";

    fn row(name: &str) -> StatRow {
        parse_stat(STAT)
            .unwrap()
            .into_iter()
            .find(|r| r.server == name)
            .unwrap()
    }

    #[test]
    fn parses_show_stat_servers_only() {
        let rows = parse_stat(STAT).unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!(row("s2").last_chk, "Connection refused, really");
        assert_eq!(row("s1").scur, 2);
        assert!(parse_stat("No such proxy.\n\n")
            .unwrap_err()
            .contains("No such proxy."));
    }

    #[test]
    fn reads_error_counters_empty_columns_as_zero() {
        // HTTP mode (s1: requests counted) and TCP mode (s2: empty req_tot and hrsp_5xx).
        let t = "# pxname,svname,scur,qcur,status,econ,eresp,lbtot,req_tot,hrsp_5xx\n\
            be,s1,0,0,UP,1,2,90,100,7\n\
            be,s2,0,0,UP,3,0,40,,\n";
        let rows = parse_stat(t).unwrap();
        assert_eq!(
            rows[0].counters,
            Counters {
                requests: 100,
                errors: 10
            }
        );
        assert_eq!(
            rows[1].counters,
            Counters {
                requests: 40,
                errors: 3
            }
        );
    }

    #[test]
    fn maps_statuses() {
        let drain = to_member_state(&row("s1"), None);
        assert_eq!(drain.state, HostState::Draining);
        assert_eq!(drain.active_connections, Some(2));
        assert_eq!(drain.detail, "DRAIN, 2 session(s)");
        let down = to_member_state(&row("s2"), None);
        assert_eq!(
            (down.state, down.healthy),
            (HostState::Started, Some(false))
        );
        assert!(down.detail.contains("L4CON"), "{}", down.detail);
        let going_down = to_member_state(&row("s3"), None);
        assert!(going_down.in_service());
        // Drained by an operator, and failing its checks: HAProxy says DOWN.
        let drained_down = to_member_state(
            &row("s2"),
            Some(AdminRow {
                admin_state: admin::FDRAIN,
                ..Default::default()
            }),
        );
        assert_eq!(drained_down.state, HostState::Draining);
        assert!(drained_down.detail.starts_with("DRAIN, DOWN"));
        let maint = to_member_state(
            &StatRow {
                status: "MAINT".into(),
                ..Default::default()
            },
            Some(AdminRow {
                admin_state: admin::FMAINT,
                ..Default::default()
            }),
        );
        assert_eq!((maint.state, maint.healthy), (HostState::Stopped, None));
    }

    #[test]
    fn parses_servers_state() {
        let t = "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state\n\
            3 be 1 s1 127.0.0.1 0 1 1 1 3 8 2 0 14\n3 be 2 s2 127.0.0.1 2 8 1 1 1 1 0 2 0\n\n";
        let m = parse_servers_state(t).unwrap();
        assert_eq!(
            m[&("be".to_string(), "s1".to_string())].admin_state,
            admin::FMAINT
        );
        assert_eq!(m[&("be".to_string(), "s2".to_string())].op_state, 2);
        assert!(parse_servers_state("Can't find backend.\n").is_err());
    }
}
