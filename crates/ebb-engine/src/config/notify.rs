//! `[[notify]]`: where ebb sends a message when something needs a person.

use super::keys;
use crate::plan::*;
use ebb_config::{Context, Section};

/// Every `[[notify]]`.
pub(super) fn notify(cx: &mut Context, top: &mut Section<'_>) -> Vec<NotifySpec> {
    top.tables(cx, "notify")
        .into_iter()
        .enumerate()
        .filter_map(|(i, t)| one(cx, t, &format!("notify[{i}]")))
        .collect()
}

fn one(cx: &mut Context, t: &toml::Table, p: &str) -> Option<NotifySpec> {
    let mut s = Section::new(t, p, keys::NOTIFY);
    let url = s.req_str(
        cx,
        "url",
        "where to send, e.g. url = \"https://hooks.slack.com/services/...\"",
    );
    super::http_url(cx, &format!("{p}.url"), &url);
    let format = s.choice(
        cx,
        "format",
        &[
            ("json", NotifyFormat::Json),
            ("slack", NotifyFormat::Slack),
            ("teams", NotifyFormat::Teams),
        ],
        NotifyFormat::Json,
    );
    let events = match s.strings(cx, "events") {
        None => NotifyEvent::ALL.to_vec(),
        Some(names) => {
            let mut out = Vec::new();
            for n in names {
                match NotifyEvent::ALL.iter().find(|e| e.as_str() == n) {
                    Some(e) => out.push(*e),
                    None => {
                        let known: Vec<&str> =
                            NotifyEvent::ALL.iter().map(|e| e.as_str()).collect();
                        cx.err(
                            &format!("{p}.events"),
                            format!(
                                "unknown event \"{n}\"; expected some of {}",
                                known.join(", ")
                            ),
                        );
                    }
                }
            }
            out
        }
    };
    s.finish(cx);
    Some(NotifySpec {
        url: url?,
        format,
        events,
    })
}
