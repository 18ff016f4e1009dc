//! The user's upstream file: its `server ADDRESS PARAMS;` directives found with their byte
//! positions, and the `down` parameter of one of them toggled with every other byte of the
//! file left as it was (other lines, parameters, comments, spacing, line endings).

/// One `server` directive of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerLine {
    /// The address as written (`10.0.0.1:80`, `app1.example:8080`, `unix:/run/app.sock`).
    pub address: String,
    /// Line (from 1) of the `server` word.
    pub line: usize,
    /// Whether the `down` parameter is present.
    pub down: bool,
    /// Byte range of each parameter after the address (the last one may be `down`).
    params: Vec<(usize, usize)>,
    /// Byte offset just past the last word of the directive (address or parameter).
    last_word_end: usize,
}

/// The parsed file.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// The file's bytes as read.
    pub text: String,
    /// Its `server` directives, in order.
    pub servers: Vec<ServerLine>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    Word(usize, usize),
    Semi,
    Open,
    Close,
}

impl Upstream {
    /// Parses `text`; an error names the line and what is wrong there.
    pub fn parse(text: String) -> Result<Upstream, String> {
        let toks = tokenize(&text)?;
        let mut servers = Vec::new();
        let mut stmt: Vec<(usize, usize)> = Vec::new();
        for tok in toks {
            match tok {
                Tok::Word(s, e) => stmt.push((s, e)),
                Tok::Semi => {
                    if let Some(&(s, e)) = stmt.first() {
                        if unquote(&text[s..e]) == "server" {
                            let line = line_of(&text, s);
                            let Some(&(as_, ae)) = stmt.get(1) else {
                                return Err(format!("line {line}: `server` without an address"));
                            };
                            let params: Vec<(usize, usize)> = stmt[2..].to_vec();
                            let down = params.iter().any(|&(s, e)| unquote(&text[s..e]) == "down");
                            let last_word_end = stmt.last().map(|&(_, e)| e).unwrap_or(ae);
                            servers.push(ServerLine {
                                address: unquote(&text[as_..ae]),
                                line,
                                down,
                                params,
                                last_word_end,
                            });
                        }
                    }
                    stmt.clear();
                }
                Tok::Open | Tok::Close => {
                    if let Some(&(s, e)) = stmt.first() {
                        if unquote(&text[s..e]) == "server" {
                            return Err(format!(
                                "line {}: a `server` directive must end with `;` (found `{}`)",
                                line_of(&text, s),
                                if tok == Tok::Open { "{" } else { "}" }
                            ));
                        }
                    }
                    stmt.clear();
                }
            }
        }
        if let Some(&(s, e)) = stmt.first() {
            return Err(format!(
                "line {}: `{}` is not ended by `;` before the end of the file",
                line_of(&text, s),
                &text[s..e]
            ));
        }
        Ok(Upstream { text, servers })
    }

    /// The file with the `down` parameter of `servers[index]` set to `down`, every other
    /// byte unchanged. Adding appends ` down` after the directive's last word; removing
    /// takes the `down` word out with the blanks just before it.
    pub fn with_down(&self, index: usize, down: bool) -> String {
        let Some(s) = self.servers.get(index) else {
            return self.text.clone();
        };
        if s.down == down {
            return self.text.clone();
        }
        let t = &self.text;
        if down {
            let at = s.last_word_end;
            return format!("{} down{}", &t[..at], &t[at..]);
        }
        // Remove every `down` word (nginx takes one; a doubled one goes too).
        let mut out = String::with_capacity(t.len());
        let mut from = 0;
        for &(ps, pe) in &s.params {
            if unquote(&t[ps..pe]) != "down" {
                continue;
            }
            let mut cut = ps;
            while cut > from && matches!(t.as_bytes()[cut - 1], b' ' | b'\t') {
                cut -= 1;
            }
            out.push_str(&t[from..cut]);
            from = pe;
        }
        out.push_str(&t[from..]);
        out
    }
}

fn line_of(text: &str, pos: usize) -> usize {
    text[..pos].bytes().filter(|b| *b == b'\n').count() + 1
}

fn unquote(w: &str) -> String {
    let b = w.as_bytes();
    if b.len() >= 2 && (b[0] == b'"' || b[0] == b'\'') && b[b.len() - 1] == b[0] {
        w[1..w.len() - 1].replace(&format!("\\{}", b[0] as char), &(b[0] as char).to_string())
    } else {
        w.to_string()
    }
}

/// nginx's lexical rules, as much as an upstream block needs: blanks separate words, `#`
/// at the start of a word runs to the end of the line, `;` `{` `}` end a statement, quotes
/// group (with backslash escapes).
fn tokenize(text: &str) -> Result<Vec<Tok>, String> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b' ' | b'\t' | b'\r' | b'\n' => i += 1,
            b'#' => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b';' => {
                out.push(Tok::Semi);
                i += 1;
            }
            b'{' => {
                out.push(Tok::Open);
                i += 1;
            }
            b'}' => {
                out.push(Tok::Close);
                i += 1;
            }
            q @ (b'"' | b'\'') => {
                let start = i;
                i += 1;
                loop {
                    match b.get(i) {
                        None => {
                            return Err(format!(
                                "line {}: a quote ({}) is not closed",
                                line_of(text, start),
                                q as char
                            ))
                        }
                        Some(b'\\') => i += 2,
                        Some(c) if *c == q => {
                            i += 1;
                            break;
                        }
                        Some(_) => i += 1,
                    }
                }
                out.push(Tok::Word(start, i.min(b.len())));
            }
            _ => {
                let start = i;
                while i < b.len()
                    && !matches!(b[i], b' ' | b'\t' | b'\r' | b'\n' | b';' | b'{' | b'}')
                {
                    i += 1;
                }
                out.push(Tok::Word(start, i));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "# pool web, included in `upstream web { include ...; }`\r\n\
server 127.0.0.1:8081 weight=5 max_fails=2;   # first\r\n\
server 127.0.0.1:8082   down ;\n\
\tserver \"127.0.0.1:8083\"\n    backup\n    ;\n\
keepalive 16;\n";

    #[test]
    fn finds_every_server_with_its_line_and_down_flag() {
        let u = Upstream::parse(FILE.to_string()).unwrap();
        let got: Vec<_> = u
            .servers
            .iter()
            .map(|s| (s.address.as_str(), s.line, s.down))
            .collect();
        assert_eq!(
            got,
            vec![
                ("127.0.0.1:8081", 2, false),
                ("127.0.0.1:8082", 3, true),
                ("127.0.0.1:8083", 4, false)
            ]
        );
    }

    #[test]
    fn toggling_down_changes_only_that_word() {
        let u = Upstream::parse(FILE.to_string()).unwrap();
        let on = u.with_down(0, true);
        assert_eq!(
            on,
            FILE.replace("max_fails=2;", "max_fails=2 down;"),
            "only ` down` added"
        );
        let off = u.with_down(1, false);
        assert_eq!(off, FILE.replace("8082   down ;", "8082 ;"));
        let multi = u.with_down(2, true);
        assert_eq!(multi, FILE.replace("    backup\n", "    backup down\n"));
        // And back: the exact original bytes.
        let back = Upstream::parse(on).unwrap().with_down(0, false);
        assert_eq!(back, FILE);
        let back = Upstream::parse(multi).unwrap().with_down(2, false);
        assert_eq!(back, FILE);
        // Unchanged when already so.
        assert_eq!(u.with_down(1, true), FILE);
    }

    #[test]
    fn malformed_files_say_where() {
        assert_eq!(
            Upstream::parse("server 10.0.0.1:80;\nserver 10.0.0.2:80\n".into()).unwrap_err(),
            "line 2: `server` is not ended by `;` before the end of the file"
        );
        assert_eq!(
            Upstream::parse("\nserver 'x;\n".into()).unwrap_err(),
            "line 2: a quote (') is not closed"
        );
        assert_eq!(
            Upstream::parse("server;\n".into()).unwrap_err(),
            "line 1: `server` without an address"
        );
        assert_eq!(
            Upstream::parse("server a:1 }\n".into()).unwrap_err(),
            "line 1: a `server` directive must end with `;` (found `}`)"
        );
    }

    #[test]
    fn a_down_inside_a_comment_or_another_word_is_not_the_flag() {
        let u = Upstream::parse(
            "server a:1 weight=1; # down\nserver b:1 route=down;\nserver c:1 \"down\";\n".into(),
        )
        .unwrap();
        // nginx unquotes words: "down" is the flag.
        assert_eq!(
            u.servers.iter().map(|s| s.down).collect::<Vec<_>>(),
            vec![false, false, true]
        );
        assert_eq!(
            u.with_down(2, false),
            "server a:1 weight=1; # down\nserver b:1 route=down;\nserver c:1;\n"
        );
    }
}
