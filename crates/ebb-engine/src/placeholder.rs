//! Placeholders in commands and URLs: `{member}`, `{address}`, `{lb_name}`, `{group}`,
//! `{var.NAME}`, and driver-specific extras such as `{state}`.
//!
//! Values are quoted for the target shell when substituted, so a member variable can never
//! inject a command. `{{` and `}}` are literal braces; `${...}` is left to the shell.

use crate::plan::{Member, Shell};
use std::collections::BTreeMap;

/// How substituted values are quoted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quote {
    /// POSIX shell single quotes.
    Sh,
    /// PowerShell single quotes.
    PowerShell,
    /// As is (URLs, addresses).
    None,
}

impl From<Shell> for Quote {
    fn from(s: Shell) -> Self {
        match s {
            Shell::Sh => Quote::Sh,
            Shell::PowerShell => Quote::PowerShell,
        }
    }
}

/// Quotes `value` for a POSIX shell (only when needed, so commands stay readable).
pub fn sh_quote(value: &str) -> String {
    let safe = !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@,+%".contains(c));
    if safe {
        value.to_string()
    } else {
        format!("'{}'", value.replace('\'', r"'\''"))
    }
}

/// Quotes `value` for PowerShell (single quotes; a quote is doubled). PowerShell takes the
/// typographic single quotes (U+2018 to U+201B) for `'` too, so they are doubled as well:
/// otherwise `’; Stop-Computer; ’` would end the string and run.
pub fn ps_quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        if is_ps_single_quote(c) {
            out.push(c);
        }
        out.push(c);
    }
    out.push('\'');
    out
}

/// The characters PowerShell reads as a single quote.
pub fn is_ps_single_quote(c: char) -> bool {
    matches!(c, '\'' | '\u{2018}' | '\u{2019}' | '\u{201A}' | '\u{201B}')
}

/// The error for a shell command template with a placeholder inside its own quotes (see
/// [`quoted_placeholder`]), if it has one.
pub fn quoted_placeholder_error(template: &str) -> Option<String> {
    quoted_placeholder(template).map(|name| {
        format!("placeholder {{{name}}} is inside quotes: ebb quotes every value it substitutes for the member's shell, and inside quotes of your own a value could run as a command (`$(...)`, backticks); remove the quotes around {{{name}}}")
    })
}

/// The first placeholder of a shell command template that sits inside quotes the template
/// wrote itself (`'...'` or `"..."`, either shell). ebb quotes every substituted value;
/// inside quotes of the template's own that quoting is undone (`echo "{member}"` becomes
/// `echo "'web$(...)'"`, and the shell runs `$(...)`), so such a template is refused.
pub fn quoted_placeholder(template: &str) -> Option<String> {
    let chars: Vec<char> = template.chars().collect();
    let mut quote: Option<char> = None;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match (quote, c) {
            (Some('"'), '\\') | (None, '\\') | (Some('"'), '`') | (None, '`')
                if i + 1 < chars.len() =>
            {
                i += 2;
                continue;
            }
            (Some(q), _) if c == q || (q == '\'' && is_ps_single_quote(c)) => quote = None,
            (None, '"') => quote = Some('"'),
            (None, _) if is_ps_single_quote(c) => quote = Some('\''),
            (_, '{') if chars.get(i + 1) == Some(&'{') => {
                i += 2;
                continue;
            }
            (_, '$') if chars.get(i + 1) == Some(&'{') => {
                // ${VAR} belongs to the shell.
                while i < chars.len() && chars[i] != '}' {
                    i += 1;
                }
            }
            (Some(_), '{') => {
                let rest: String = chars[i + 1..].iter().collect();
                if let Some(end) = rest.find('}') {
                    return Some(rest[..end].to_string());
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// The placeholder names used in `template`, or an error naming the malformed part.
pub fn placeholders(template: &str) -> Result<Vec<String>, String> {
    let mut names = Vec::new();
    let bytes = template.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'{' if bytes.get(i + 1) == Some(&b'{') => i += 2,
            b'}' if bytes.get(i + 1) == Some(&b'}') => i += 2,
            b'$' if bytes.get(i + 1) == Some(&b'{') => {
                // ${VAR} belongs to the shell: skip to its closing brace.
                match template[i..].find('}') {
                    Some(end) => i += end + 1,
                    None => i = bytes.len(),
                }
            }
            b'{' => match template[i + 1..].find('}') {
                Some(end) => {
                    names.push(template[i + 1..i + 1 + end].to_string());
                    i += end + 2;
                }
                None => {
                    return Err(format!(
                        "unclosed placeholder at \"{}\" (write {{{{ for a literal brace)",
                        &template[i..]
                    ))
                }
            },
            _ => i += 1,
        }
    }
    Ok(names)
}

/// Checks a template against a member: every placeholder must be known.
pub fn validate(template: &str, member: &Member, extras: &[&str]) -> Result<(), String> {
    for name in placeholders(template)? {
        if lookup(&name, member, &BTreeMap::new()).is_none() && !extras.contains(&name.as_str()) {
            let hint = if let Some(var) = name.strip_prefix("var.") {
                format!(
                    "member \"{}\" has no variable \"{var}\" (set it in its vars or in [defaults] vars)",
                    member.name
                )
            } else {
                "known placeholders: {member}, {address}, {lb_name}, {group}, {var.NAME}".into()
            };
            return Err(format!("unknown placeholder {{{name}}}: {hint}"));
        }
    }
    Ok(())
}

fn lookup(name: &str, member: &Member, extras: &BTreeMap<&str, String>) -> Option<String> {
    if let Some(v) = extras.get(name) {
        return Some(v.clone());
    }
    match name {
        "member" => Some(member.name.clone()),
        "address" => Some(member.address.clone()),
        "lb_name" => Some(member.lb_name.clone()),
        "group" => Some(member.group.clone().unwrap_or_default()),
        _ => name
            .strip_prefix("var.")
            .and_then(|v| member.vars.get(v).cloned()),
    }
}

/// Substitutes the placeholders of a template that [`validate`] accepted.
/// Unknown placeholders are left as written (validation already refused them).
pub fn render(
    template: &str,
    member: &Member,
    quote: Quote,
    extras: &BTreeMap<&str, String>,
) -> String {
    let mut out = String::with_capacity(template.len() + 16);
    let bytes = template.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'{' if bytes.get(i + 1) == Some(&b'{') => {
                out.push('{');
                i += 2;
            }
            b'}' if bytes.get(i + 1) == Some(&b'}') => {
                out.push('}');
                i += 2;
            }
            b'$' if bytes.get(i + 1) == Some(&b'{') => {
                let end = template[i..].find('}').map_or(bytes.len(), |e| i + e + 1);
                out.push_str(&template[i..end]);
                i = end;
            }
            b'{' => {
                let end = template[i + 1..].find('}').map(|e| i + 1 + e);
                match end.and_then(|e| lookup(&template[i + 1..e], member, extras).map(|v| (e, v)))
                {
                    Some((e, value)) => {
                        out.push_str(&match quote {
                            Quote::Sh => sh_quote(&value),
                            Quote::PowerShell => ps_quote(&value),
                            Quote::None => value,
                        });
                        i = e + 1;
                    }
                    None => {
                        out.push('{');
                        i += 1;
                    }
                }
            }
            _ => {
                let next = template[i..]
                    .find(['{', '}', '$'])
                    .map_or(bytes.len(), |n| if n == 0 { i + 1 } else { i + n });
                out.push_str(&template[i..next]);
                i = next;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member() -> Member {
        Member {
            name: "web1".into(),
            address: "127.0.0.1:8081".into(),
            lb_name: "w 1".into(),
            transport: "local".into(),
            shell: Shell::Sh,
            group: None,
            vars: [("evil".to_string(), "x'; rm -rf /".to_string())].into(),
            boot_id: None,
            settings: toml::Table::new(),
            weight: 1,
        }
    }

    #[test]
    fn substitutes_and_quotes() {
        let m = member();
        let none = BTreeMap::new();
        assert_eq!(
            render("drain {lb_name} at {address}", &m, Quote::Sh, &none),
            "drain 'w 1' at 127.0.0.1:8081"
        );
        assert_eq!(
            render("echo {var.evil}", &m, Quote::Sh, &none),
            r"echo 'x'\''; rm -rf /'"
        );
        assert_eq!(
            render("{var.evil}", &m, Quote::PowerShell, &none),
            "'x''; rm -rf /'"
        );
        assert_eq!(
            render("a {{b}} ${HOME} é", &m, Quote::Sh, &none),
            "a {b} ${HOME} é"
        );
    }

    #[test]
    fn powershell_quoting_doubles_every_quote_powershell_knows() {
        assert_eq!(ps_quote("it's"), "'it''s'");
        assert_eq!(ps_quote("a\u{2019}; calc"), "'a\u{2019}\u{2019}; calc'");
        assert_eq!(
            ps_quote("\u{2018}\u{201A}\u{201B}"),
            "'\u{2018}\u{2018}\u{201A}\u{201A}\u{201B}\u{201B}'"
        );
    }

    #[test]
    fn placeholders_inside_the_templates_own_quotes_are_found() {
        for (t, found) in [
            ("echo {member}", None),
            ("echo \"{member}\"", Some("member")),
            ("echo '{var.x}'", Some("var.x")),
            ("echo \"$HOME\" {member} '{{x}}' \"${HOME}\"", None),
            ("echo \\\"{member}", None),
            ("echo it\\'s {member}", None),
            ("Write-Host \u{2018}{lb_name}\u{2019}", Some("lb_name")),
            ("echo \"a\" {address} \"b\"", None),
        ] {
            assert_eq!(quoted_placeholder(t).as_deref(), found, "{t}");
        }
    }

    #[test]
    fn validation_names_the_unknown() {
        let m = member();
        assert!(validate("{member} {var.evil}", &m, &[]).is_ok());
        assert!(validate("{membr}", &m, &[])
            .unwrap_err()
            .contains("{membr}"));
        assert!(validate("{var.nope}", &m, &[])
            .unwrap_err()
            .contains("no variable"));
        assert!(validate("{state}", &m, &["state"]).is_ok());
        assert!(validate("{oops", &m, &[]).is_err());
    }
}
