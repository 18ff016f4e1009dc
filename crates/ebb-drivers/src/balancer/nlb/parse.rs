//! Reading what the NLB cmdlets print: the `Get-NlbClusterNode` table (Name, State,
//! Interface, HostID) and the `Get-NlbClusterDriverInfo` list (`Key : Value`), in their
//! default PowerShell formatting, and mapping a node's state to ebb's words.

use ebb_engine::interfaces::{HostState, MemberLbState};

/// One row of `Get-NlbClusterNode`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRow {
    /// `Name`: the node (host) name.
    pub name: String,
    /// `State`: `Converged`, `Converged(default)`, `Converging`, `Draining`, `Stopped`,
    /// `Suspended`, ...
    pub state: String,
    /// `Interface`: the network interface NLB is bound to.
    pub interface: String,
    /// `HostID`: the node's priority / id.
    pub host_id: String,
}

impl NodeRow {
    /// The state without the `(default)` suffix of the default host.
    pub fn state_word(&self) -> &str {
        self.state.split('(').next().unwrap_or("").trim()
    }

    /// Converged (as the default host or not).
    pub fn converged(&self) -> bool {
        self.state_word().eq_ignore_ascii_case("Converged")
    }

    /// The cluster is still settling on this node.
    pub fn converging(&self) -> bool {
        self.state_word().eq_ignore_ascii_case("Converging")
    }
}

/// Parses the table `Get-NlbClusterNode` prints. Columns are found from the dashes line
/// under the header, so values with spaces (interface names such as `Ethernet 2`) are
/// read whole; other lines (blank, warnings) are ignored.
pub fn parse_nodes(text: &str) -> Result<Vec<NodeRow>, String> {
    let lines: Vec<&str> = text.lines().collect();
    let Some(h) = lines.iter().position(|l| {
        let w: Vec<&str> = l.split_whitespace().collect();
        w.first() == Some(&"Name") && w.contains(&"State")
    }) else {
        let first = lines
            .iter()
            .map(|l| l.trim())
            .find(|l| !l.is_empty())
            .unwrap_or("");
        return Err(if first.is_empty() {
            "Get-NlbClusterNode printed nothing".to_string()
        } else {
            format!("Get-NlbClusterNode printed no node table, but \"{first}\"")
        });
    };
    let dashes = lines
        .get(h + 1)
        .filter(|l| l.trim_start().starts_with('-'))
        .ok_or("Get-NlbClusterNode: the header is not followed by a ---- line")?;
    // Column spans: each run of dashes starts a column that ends where the next begins.
    let mut starts = Vec::new();
    let bytes = dashes.as_bytes();
    for i in 0..bytes.len() {
        if bytes[i] == b'-' && (i == 0 || bytes[i - 1] == b' ') {
            starts.push(i);
        }
    }
    let header = lines[h];
    let names: Vec<String> = cut(header, &starts).into_iter().collect();
    let col = |n: &str| names.iter().position(|c| c.eq_ignore_ascii_case(n));
    let (Some(ni), Some(si)) = (col("Name"), col("State")) else {
        return Err(format!(
            "Get-NlbClusterNode: unexpected header \"{}\"",
            header.trim()
        ));
    };
    let (ii, hi) = (col("Interface"), col("HostID"));
    let mut rows = Vec::new();
    for line in &lines[h + 2..] {
        if line.trim().is_empty() {
            continue;
        }
        let f = cut(line, &starts);
        let get = |i: Option<usize>| i.and_then(|i| f.get(i).cloned()).unwrap_or_default();
        let row = NodeRow {
            name: get(Some(ni)),
            state: get(Some(si)),
            interface: get(ii),
            host_id: get(hi),
        };
        if row.name.is_empty() || row.state.is_empty() {
            continue;
        }
        rows.push(row);
    }
    Ok(rows)
}

/// Cuts `line` at the column starts; the last column runs to the end of the line.
fn cut(line: &str, starts: &[usize]) -> Vec<String> {
    let chars: Vec<char> = line.chars().collect();
    starts
        .iter()
        .enumerate()
        .map(|(k, &s)| {
            let e = starts
                .get(k + 1)
                .copied()
                .unwrap_or(chars.len())
                .min(chars.len());
            if s >= chars.len() {
                String::new()
            } else {
                chars[s..e].iter().collect::<String>().trim().to_string()
            }
        })
        .collect()
}

/// The value of `key` in `Key : Value` list output (`Format-List`, the default for
/// `Get-NlbClusterDriverInfo`).
pub fn list_value(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim().eq_ignore_ascii_case(key)).then(|| v.trim().to_string())
    })
}

/// A node's NLB state in ebb's words:
///
/// | NLB | ebb | health |
/// |---|---|---|
/// | `Converged`, `Converged(default)` | started | healthy |
/// | `Converging` | started | not yet (counts as out until it has converged) |
/// | `Draining` | draining | |
/// | `Stopped`, `Suspended` | stopped | |
/// | anything else (`Unreachable`, `Misconfigured`, ...) | stopped | unhealthy |
pub fn to_member_state(row: &NodeRow) -> MemberLbState {
    let word = row.state_word().to_ascii_lowercase();
    let (state, healthy) = match word.as_str() {
        "converged" => (HostState::Started, Some(true)),
        "converging" => (HostState::Started, Some(false)),
        "draining" => (HostState::Draining, None),
        "stopped" | "suspended" => (HostState::Stopped, None),
        _ => (HostState::Stopped, Some(false)),
    };
    MemberLbState {
        state,
        healthy,
        // NLB does not count a node's connections per node through these cmdlets.
        active_connections: None,
        detail: row.state.clone(),
    }
}

/// A `Started` or `Stopped` initial host state in ebb's words. `Suspended` (and anything
/// else) is `None`: ebb records only started | stopped, so it could not restore it.
pub fn initial_state(word: &str) -> Option<HostState> {
    match word.trim().to_ascii_lowercase().as_str() {
        "started" => Some(HostState::Started),
        "stopped" => Some(HostState::Stopped),
        _ => None,
    }
}
