//! The exact PowerShell command lines the nlb driver runs on a member. Every one starts
//! with `$ErrorActionPreference = 'Stop'` so that any cmdlet error ends the command with a
//! non-zero exit code instead of a warning ebb would miss, and imports the NLB module
//! (Windows PowerShell 2.0, the default on the Windows Server 2008 R2 of Exchange 2010,
//! does not load modules by itself); node and interface names are PowerShell-quoted.

use crate::transport::command_line::encode_powershell;
use ebb_engine::interfaces::HostState;
use ebb_engine::placeholder::ps_quote;

const STRICT: &str =
    "$ErrorActionPreference = 'Stop'; Import-Module NetworkLoadBalancingClusters; ";

/// Builds the cmdlet command lines for one NLB cluster.
#[derive(Debug, Clone, Default)]
pub struct Commands {
    /// `-InterfaceName` for hosts bound to more than one NLB cluster.
    pub interface: Option<String>,
}

impl Commands {
    fn iface(&self) -> String {
        match &self.interface {
            Some(i) => format!(" -InterfaceName {}", ps_quote(i)),
            None => String::new(),
        }
    }

    /// `Get-NlbClusterNode -NodeName 'NODE'`: the pipeline head of every node operation.
    fn node(&self, node: &str) -> String {
        format!(
            "Get-NlbClusterNode -NodeName {}{}",
            ps_quote(node),
            self.iface()
        )
    }

    /// Every node of the cluster with its state (the table ebb parses).
    pub fn nodes(&self) -> String {
        format!("{STRICT}Get-NlbClusterNode{}", self.iface())
    }

    /// The local NLB driver's settings, among them `InitialHostState` (run on the member
    /// itself: it describes the machine it runs on).
    pub fn driver_info(&self) -> String {
        format!("{STRICT}Get-NlbClusterDriverInfo{}", self.iface())
    }

    /// The drain itself (with its module import), as a separate command: `Stop-NlbClusterNode -Drain` returns only
    /// once the node has drained (its documented examples print the node `Stopped`), and
    /// the unit of its `-Timeout` is not made unmistakable, so ebb starts it detached and
    /// owns the wait and the timeout.
    pub fn drain_pipeline(&self, node: &str) -> String {
        format!(
            "Import-Module NetworkLoadBalancingClusters; {} | Stop-NlbClusterNode -Drain",
            self.node(node)
        )
    }

    /// Starts [`Self::drain_pipeline`] in a process of its own, created by WMI
    /// (`Win32_Process.Create`, through `[wmiclass]`, which every Windows PowerShell has) so
    /// that it does not depend on the remote session staying open, after checking that the
    /// node exists so that a wrong name fails here, not in the background.
    pub fn drainstop(&self, node: &str) -> String {
        let inner = encode_powershell(&self.drain_pipeline(node));
        format!(
            "{STRICT}$null = {}; $r = ([wmiclass]'Win32_Process').Create('powershell.exe -NoProfile -NonInteractive -EncodedCommand {inner}'); if ($r.ReturnValue -ne 0) {{ throw \"could not start the drain (Win32_Process.Create returned $($r.ReturnValue))\" }}",
            self.node(node)
        )
    }

    /// Stop now: connections in progress are cut.
    pub fn stop(&self, node: &str) -> String {
        format!("{STRICT}{} | Stop-NlbClusterNode", self.node(node))
    }

    /// Start the node (it converges into the cluster).
    pub fn start(&self, node: &str) -> String {
        format!("{STRICT}{} | Start-NlbClusterNode", self.node(node))
    }

    /// Resume a suspended node; it is then Stopped and needs a start as well.
    pub fn resume(&self, node: &str) -> String {
        format!("{STRICT}{} | Resume-NlbClusterNode", self.node(node))
    }

    /// The state the node takes when it (or its host) starts: `Started` or `Stopped`.
    /// `-Force` because the cmdlet asks for confirmation otherwise, and nobody is there to
    /// answer.
    pub fn set_initial_state(&self, node: &str, state: HostState) -> String {
        let word = match state {
            HostState::Stopped => "Stopped",
            _ => "Started",
        };
        format!(
            "{STRICT}{} | Set-NlbClusterNode -InitialHostState {word} -Force",
            self.node(node)
        )
    }
}

/// Reverses `-EncodedCommand` text (for tests and for showing what runs).
pub fn decode_command(encoded: &str) -> Option<String> {
    let bytes = crate::base64::decode(encoded)?;
    if bytes.len() % 2 != 0 {
        return None;
    }
    let units: Vec<u16> = bytes
        .chunks(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    String::from_utf16(&units).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_what_the_transport_encodes() {
        assert_eq!(decode_command("ZABpAHIA").as_deref(), Some("dir"));
        for s in [
            "",
            "a",
            "ab",
            "abc",
            "Get-NlbClusterNode -NodeName 'o''brien' | Stop-NlbClusterNode -Drain",
        ] {
            assert_eq!(decode_command(&encode_powershell(s)).as_deref(), Some(s));
        }
    }
}
