//! The exact command lines ebb sends to a remote member, for `sh` and PowerShell members.
//! Kept apart from the ssh plumbing so they can be tested as text (Windows members cannot
//! be started in a test here).

use ebb_engine::placeholder::{ps_quote, sh_quote};
use std::collections::BTreeMap;

/// The first line a wrapped command prints on stderr: its process id on the member, so
/// that a timeout can kill it there, then (`sh`, where `/proc` has them) the process's
/// start time in clock ticks after boot and the member's boot id, so that a later ebb can
/// tell that very process from another that got the same id ([`remote_alive`]).
pub const PID_MARKER: &str = "__ebb_pid__ ";

/// The last line a wrapped command prints on stderr: its exit code, as the member saw it.
/// Without it, an ssh that ended with 255 lost its connection while the command ran, and
/// the command's outcome is unknown (it may have finished, failed, or still be running).
pub const EXIT_MARKER: &str = "__ebb_exit__ ";

/// The shell a remote member runs commands with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteShell {
    /// A POSIX `sh`.
    Sh,
    /// Windows PowerShell (`powershell.exe`).
    PowerShell,
}

/// The remote command line for `command` (already rendered for the member's shell) with
/// `env` set.
///
/// - `sh`: the login shell prints its pid (sshd made it a session and process-group
///   leader), runs `env NAME=value ... sh -c COMMAND` and prints its exit code
///   ([`EXIT_MARKER`]).
/// - PowerShell: `powershell -NoProfile -NonInteractive -EncodedCommand ...` with a script
///   that prints `$PID`, sets `$env:NAME`, runs the command and exits with
///   `$LASTEXITCODE` (1 when a cmdlet failed without one), printed first. The script travels base64
///   encoded (UTF-16LE, as PowerShell wants), so Windows' `cmd.exe` quoting, which sshd on
///   Windows uses by default, can never mangle it.
pub fn remote_command(shell: RemoteShell, command: &str, env: &BTreeMap<String, String>) -> String {
    match shell {
        RemoteShell::Sh => {
            let mut s = format!("printf '%s\\n' \"{PID_MARKER}$$ {START_AND_BOOT}\" >&2; env");
            for (k, v) in env {
                s.push(' ');
                s.push_str(k);
                s.push('=');
                s.push_str(&sh_quote(v));
            }
            s.push_str(" sh -c ");
            s.push_str(&sh_quote(command));
            s.push_str(&format!(
                "; s=$?; printf '%s\\n' \"{EXIT_MARKER}$s\" >&2; exit $s"
            ));
            s
        }
        RemoteShell::PowerShell => {
            format!(
                "powershell -NoProfile -NonInteractive -EncodedCommand {}",
                encode_powershell(&powershell_script(command, env))
            )
        }
    }
}

/// The PowerShell script a command is wrapped in (before encoding).
pub fn powershell_script(command: &str, env: &BTreeMap<String, String>) -> String {
    let mut s = format!("[Console]::Error.WriteLine('{PID_MARKER}' + $PID)\n");
    for (k, v) in env {
        s.push_str(&format!("$env:{k} = {}\n", ps_quote(v)));
    }
    s.push_str("$global:LASTEXITCODE = 0\n");
    s.push_str(command);
    s.push_str("\n$ebbOk = $?\n");
    s.push_str("if ($LASTEXITCODE) { $ebbCode = $LASTEXITCODE } elseif (-not $ebbOk) { $ebbCode = 1 } else { $ebbCode = 0 }\n");
    s.push_str(&format!(
        "[Console]::Error.WriteLine('{EXIT_MARKER}' + $ebbCode)\nexit $ebbCode\n"
    ));
    s
}

/// What the `sh` wrapper adds after its pid: the start time of `$$` (field 22 of
/// `/proc/$$/stat`) and the boot id; empty where the member has no `/proc`.
const START_AND_BOOT: &str = "$(sed 's/.*) //' /proc/$$/stat 2>/dev/null | cut -d' ' -f20) $(cat /proc/sys/kernel/random/boot_id 2>/dev/null)";

/// The command that prints `running` while the process group `pid` a wrapped command
/// started is still alive on the member (not a zombie), `gone` otherwise. `start` and
/// `boot` are what the wrapper printed (`-` when unknown): a leader that started at
/// another time, or a member that rebooted since, is not the command.
pub fn remote_alive(shell: RemoteShell, pid: u32, start: &str, boot: &str) -> String {
    match shell {
        RemoteShell::Sh => {
            let (start, boot) = (sh_quote(start), sh_quote(boot));
            format!(
                "if [ -r /proc/sys/kernel/random/boot_id ]; then \
if [ {boot} != - ] && [ \"$(cat /proc/sys/kernel/random/boot_id)\" != {boot} ]; then echo gone; exit 0; fi; \
if [ {start} != - ] && [ -r /proc/{pid}/stat ]; then read -r l 2>/dev/null </proc/{pid}/stat; l=${{l##*')'}}; set -- $l; \
if [ \"${{20}}\" != {start} ]; then echo gone; exit 0; fi; fi; \
for f in /proc/[0-9]*/stat; do read -r l 2>/dev/null <\"$f\" || continue; l=${{l##*')'}}; set -- $l; \
if [ \"$3\" = {pid} ] && [ \"$1\" != Z ]; then echo running; exit 0; fi; done; echo gone; \
elif kill -0 -- -{pid} 2>/dev/null; then echo running; else echo gone; fi"
            )
        }
        RemoteShell::PowerShell => format!(
            "if (Get-Process -Id {pid} -ErrorAction SilentlyContinue) {{ 'running' }} else {{ 'gone' }}"
        ),
    }
}

/// The command that kills a timed-out command on the member: its process group and
/// whatever else is left in its session (`sh`), or its process tree (Windows).
pub fn remote_kill(shell: RemoteShell, pid: u32) -> String {
    match shell {
        RemoteShell::Sh => {
            format!("kill -s KILL -- -{pid} 2>/dev/null; pkill -KILL -s {pid} 2>/dev/null; true")
        }
        RemoteShell::PowerShell => format!("taskkill /F /T /PID {pid}"),
    }
}

/// `-EncodedCommand` form: base64 of the UTF-16LE text.
pub fn encode_powershell(script: &str) -> String {
    let bytes: Vec<u8> = script
        .encode_utf16()
        .flat_map(|u| u.to_le_bytes())
        .collect();
    crate::base64::encode(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_powershell_as_windows_does() {
        // What `[Convert]::ToBase64String([Text.Encoding]::Unicode.GetBytes('dir'))` gives.
        assert_eq!(encode_powershell("dir"), "ZABpAHIA");
    }

    #[test]
    fn sh_wrapper_quotes_env_and_command() {
        let mut env = BTreeMap::new();
        env.insert("EBB_MEMBER".to_string(), "web 1".to_string());
        let c = remote_command(RemoteShell::Sh, "echo 'hi' && exit 3", &env);
        assert_eq!(
            c,
            "printf '%s\\n' \"__ebb_pid__ $$ $(sed 's/.*) //' /proc/$$/stat 2>/dev/null | cut -d' ' -f20) $(cat /proc/sys/kernel/random/boot_id 2>/dev/null)\" >&2; env EBB_MEMBER='web 1' sh -c 'echo '\\''hi'\\'' && exit 3'; s=$?; printf '%s\\n' \"__ebb_exit__ $s\" >&2; exit $s"
        );
    }

    #[test]
    fn powershell_wrapper_carries_lastexitcode() {
        let mut env = BTreeMap::new();
        env.insert("EBB_MEMBER".to_string(), "it's".to_string());
        let s = powershell_script("msiexec /update 'x.msp' /quiet", &env);
        assert_eq!(
            s,
            "[Console]::Error.WriteLine('__ebb_pid__ ' + $PID)\n$env:EBB_MEMBER = 'it''s'\n$global:LASTEXITCODE = 0\nmsiexec /update 'x.msp' /quiet\n$ebbOk = $?\nif ($LASTEXITCODE) { $ebbCode = $LASTEXITCODE } elseif (-not $ebbOk) { $ebbCode = 1 } else { $ebbCode = 0 }\n[Console]::Error.WriteLine('__ebb_exit__ ' + $ebbCode)\nexit $ebbCode\n"
        );
        let c = remote_command(
            RemoteShell::PowerShell,
            "msiexec /update 'x.msp' /quiet",
            &env,
        );
        assert!(c.starts_with("powershell -NoProfile -NonInteractive -EncodedCommand "));
        assert_eq!(
            remote_kill(RemoteShell::PowerShell, 42),
            "taskkill /F /T /PID 42"
        );
    }
}
