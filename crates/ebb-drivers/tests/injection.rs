//! Hostile names and values in the command lines ebb sends to members: over ssh to a real
//! sshd (the member's login shell, then `sh -c`: two shells that must both see only
//! literals), and in PowerShell command text (no Windows here: the generated text is read
//! back with PowerShell's own quoting rules, as the NLB tests read theirs).

mod support_issue6;
use support_issue6::*;

use ebb_drivers::balancer::nlb::commands::{decode_command, Commands};
use ebb_drivers::transport::command_line::{powershell_script, remote_command, RemoteShell};
use ebb_engine::placeholder::{is_ps_single_quote, ps_quote, render, Quote};
use std::collections::BTreeMap;
use std::time::Duration;

/// Values that would run something (create a file `pwned*`, start `calc`, stop the
/// computer) if any shell on the way executed them instead of taking them literally.
const HOSTILE: &[&str] = &[
    "a'b$(touch pwned1)",
    "c`touch pwned2`\"d",
    "e;touch pwned3;%PATH%|x&y",
    "line one\ntouch pwned4\n",
    "$(Stop-Computer) @(calc) ${env:PATH} $env:X",
    "'; calc; '",
    "\u{2019}; Stop-Computer; \u{2018}",
    "\u{201A}\u{201B}'\u{2018}\u{2019}",
    "`$(calc)` \"$(calc)\" #",
];

/// Reads one PowerShell single-quoted string at the start of `s`, by PowerShell's rules:
/// any of its five single-quote characters opens and closes it, and two of them in a row
/// stand for one. Returns the literal and what follows it.
fn ps_literal(s: &str) -> Option<(String, &str)> {
    let mut it = s.char_indices().peekable();
    let (_, first) = it.next()?;
    if !is_ps_single_quote(first) {
        return None;
    }
    let mut lit = String::new();
    while let Some((i, c)) = it.next() {
        if is_ps_single_quote(c) {
            match it.peek() {
                Some((_, n)) if is_ps_single_quote(*n) => {
                    lit.push(*n);
                    it.next();
                }
                _ => return Some((lit, &s[i + c.len_utf8()..])),
            }
        } else {
            lit.push(c);
        }
    }
    None
}

/// The literals of `text` after `prefix`, separated by single spaces, up to the end.
fn ps_literals_after<'a>(text: &'a str, prefix: &str) -> (Vec<String>, &'a str) {
    let mut rest = text
        .strip_prefix(prefix)
        .unwrap_or_else(|| panic!("{text:?} does not start with {prefix:?}"));
    let mut out = Vec::new();
    while let Some((lit, r)) = ps_literal(rest) {
        out.push(lit);
        rest = r.strip_prefix(' ').unwrap_or(r);
    }
    (out, rest)
}

#[test]
fn powershell_quoting_keeps_every_hostile_value_one_literal() {
    for v in HOSTILE {
        assert_eq!(
            ps_literal(&ps_quote(v)),
            Some((v.to_string(), "")),
            "{v:?} quoted as {:?}",
            ps_quote(v)
        );
    }
}

fn powershell_member(
    dir: &std::path::Path,
    name: &str,
    lb_name: &str,
    v: &str,
) -> ebb_engine::plan::Member {
    let q = |s: &str| serde_json::to_string(s).unwrap();
    let text = format!(
        "{}\n[[member]]\nname = {}\naddress = \"127.0.0.1:1\"\nlb_name = {}\nshell = \"powershell\"\nvars = {{ v = {} }}\n",
        file_balancer(dir, &[lb_name]).replace("[balancer]", "[pool]\nname = \"p\"\n\n[balancer]"),
        q(name),
        q(lb_name),
        q(v)
    );
    load_plan(dir, &text).members[0].clone()
}

#[test]
fn hostile_values_in_powershell_step_commands_stay_literals_after_encoding() {
    let dir = tempfile::tempdir().unwrap();
    for (k, v) in HOSTILE.iter().enumerate() {
        // Control characters are refused in names; they stay in the variable.
        let name = v.replace('\n', " ");
        let lb = format!("lb{k}");
        let m = powershell_member(dir.path(), &name, &lb, v);
        let cmd = render(
            "Write-Output {member} {lb_name} {var.v}",
            &m,
            Quote::PowerShell,
            &BTreeMap::new(),
        );
        let (lits, rest) = ps_literals_after(&cmd, "Write-Output ");
        assert_eq!(lits, [name.as_str(), lb.as_str(), v], "{cmd}");
        assert_eq!(rest, "", "nothing after the literals: {cmd}");
        // What travels to the member: the script, base64 of UTF-16LE, decoded back.
        let mut env = BTreeMap::new();
        env.insert("EBB_MEMBER".to_string(), name.clone());
        env.insert("EBB_VAR_V".to_string(), v.to_string());
        let line = remote_command(RemoteShell::PowerShell, &cmd, &env);
        let enc = line
            .strip_prefix("powershell -NoProfile -NonInteractive -EncodedCommand ")
            .expect("the encoded form");
        assert!(
            enc.chars()
                .all(|c| c.is_ascii_alphanumeric() || "+/=".contains(c)),
            "only base64 reaches cmd.exe: {enc}"
        );
        let script = decode_command(enc).expect("decodes");
        assert_eq!(script, powershell_script(&cmd, &env));
        for (key, want) in [("EBB_MEMBER", name.as_str()), ("EBB_VAR_V", v)] {
            let at = script
                .find(&format!("$env:{key} = "))
                .unwrap_or_else(|| panic!("{key} set in {script}"));
            let after = &script[at + format!("$env:{key} = ").len()..];
            let (lit, rest) = ps_literal(after).expect("a literal");
            assert_eq!(lit, want);
            assert!(
                rest.starts_with('\n'),
                "the assignment ends there: {rest:?}"
            );
        }
        assert!(script.contains(&format!("\n{cmd}\n")), "{script}");
    }
}

#[test]
fn hostile_node_names_in_nlb_commands_stay_literals() {
    let c = Commands {
        interface: Some("Ethernet 2'; calc; '".into()),
    };
    for v in HOSTILE {
        let node = v.replace('\n', " ");
        for (text, tail) in [
            (c.stop(&node), " | Stop-NlbClusterNode"),
            (c.start(&node), " | Start-NlbClusterNode"),
            (c.resume(&node), " | Resume-NlbClusterNode"),
            (
                c.set_initial_state(&node, ebb_engine::interfaces::HostState::Stopped),
                " | Set-NlbClusterNode -InitialHostState Stopped -Force",
            ),
        ] {
            let at = text.find("-NodeName ").expect("-NodeName") + "-NodeName ".len();
            let (lit, rest) = ps_literal(&text[at..]).expect("node literal");
            assert_eq!(lit, node, "{text}");
            let rest = rest
                .strip_prefix(" -InterfaceName ")
                .expect("interface follows");
            let (iface, rest) = ps_literal(rest).expect("interface literal");
            assert_eq!(iface, "Ethernet 2'; calc; '");
            assert_eq!(rest, tail, "{text}");
        }
        // The drain runs in a process of its own: its script travels encoded too.
        let d = c.drainstop(&node);
        let enc = d
            .split("-EncodedCommand ")
            .nth(1)
            .and_then(|r| r.split('\'').next())
            .expect("inner encoded command");
        let inner = decode_command(enc).expect("decodes");
        let at = inner.find("-NodeName ").expect("-NodeName") + "-NodeName ".len();
        assert_eq!(
            ps_literal(&inner[at..]).expect("literal").0,
            node,
            "{inner}"
        );
    }
}

#[test]
fn hostile_service_names_in_the_services_check_stay_literals() {
    use ebb_drivers::check::services::command;
    let names: Vec<String> = HOSTILE.iter().map(|v| v.replace('\n', " ")).collect();
    let ps = command(ebb_engine::plan::Shell::PowerShell, &names);
    let (lits, rest) = {
        let body = ps.strip_prefix("Get-Service -Name ").expect("Get-Service");
        let mut rest = body;
        let mut lits = Vec::new();
        while let Some((lit, r)) = ps_literal(rest) {
            lits.push(lit);
            rest = r.strip_prefix(',').unwrap_or(r);
        }
        (lits, rest)
    };
    assert_eq!(lits, names);
    assert!(rest.starts_with(" -ErrorAction SilentlyContinue"), "{rest}");
    // sh: each name one argument of systemctl, whatever it holds.
    let sh = command(ebb_engine::plan::Shell::Sh, &names);
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(sh.replacen("systemctl", "printf '%s\\n'", 1))
        .current_dir(tempfile::tempdir().unwrap().path())
        .output()
        .unwrap();
    let args: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect();
    let want: Vec<String> = names
        .iter()
        .map(|n| ebb_drivers::check::services::systemd_unit(n))
        .collect();
    assert_eq!(args[args.len() - want.len()..], want[..]);
}

#[tokio::test]
async fn hostile_values_over_ssh_pass_two_shells_as_literals() {
    let sshd = Sshd::start();
    let d = sshd.dir.path().to_path_buf();
    let work = d.join("work");
    std::fs::create_dir_all(&work).unwrap();
    let q = |s: &str| serde_json::to_string(s).unwrap();
    let v = HOSTILE.join("\n");
    let name = "web$(touch pwned9);`touch pwned10`'\"";
    let text = format!(
        "[pool]\nname = \"ssh-inj\"\n\n{}\n[[member]]\nname = {}\naddress = \"127.0.0.1:9\"\n{}vars = {{ v = {} }}\n",
        file_balancer(&d, &[name]),
        q(name),
        sshd.member_keys(),
        q(&v)
    );
    let plan = load_plan(&d, &text);
    let t = ebb_drivers::transport::build(&plan, &plan.members[0]).expect("ssh transport");
    let cmd = render(
        &format!(
            "cd {}; printf '%s|' {{member}} {{var.v}} > seen; printf '%s|' \"$EBB_MEMBER\" \"$EBB_VAR_V\" > env",
            work.display()
        ),
        &plan.members[0],
        Quote::Sh,
        &BTreeMap::new(),
    );
    let mut env = BTreeMap::new();
    env.insert("EBB_MEMBER".to_string(), name.to_string());
    env.insert("EBB_VAR_V".to_string(), v.clone());
    let out = t
        .run(&cmd, &env, Duration::from_secs(20), None)
        .await
        .expect("ssh run");
    assert_eq!(out.exit_code, Some(0), "{out:?}");
    let read = |f: &str| std::fs::read_to_string(work.join(f)).unwrap_or_default();
    assert_eq!(read("seen"), format!("{name}|{v}|"));
    assert_eq!(read("env"), format!("{name}|{v}|"));
    let mut pwned = Vec::new();
    for dir in [&work, &d, &d.join("home")] {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if e.file_name().to_string_lossy().starts_with("pwned") {
                pwned.push(e.path());
            }
        }
    }
    assert!(pwned.is_empty(), "something ran: {pwned:?}");
}
