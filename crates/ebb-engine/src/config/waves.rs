//! `[[wave]]`: groups of members rolled in order; members in no wave form a last one.

use super::keys;
use crate::plan::*;
use ebb_config::{Context, Section};
use std::collections::BTreeMap;

pub(super) fn waves(cx: &mut Context, top: &mut Section<'_>, members: &[Member]) -> Vec<Wave> {
    let mut waves = Vec::new();
    let mut assigned: BTreeMap<usize, String> = BTreeMap::new();
    for (i, t) in top.tables(cx, "wave").into_iter().enumerate() {
        let p = format!("wave[{i}]");
        let wave = wave(cx, t, &p, i, members);
        for ix in &wave.members {
            if let Some(prev) = assigned.get(ix) {
                cx.err(
                    &p,
                    format!(
                        "member \"{}\" is already in {prev}; a member belongs to one wave",
                        members[*ix].name
                    ),
                );
            }
            assigned.insert(*ix, wave.name.clone());
        }
        waves.push(wave);
    }
    let rest: Vec<usize> = (0..members.len())
        .filter(|i| !assigned.contains_key(i))
        .collect();
    if !rest.is_empty() {
        let name = if waves.is_empty() { "all" } else { "rest" };
        waves.push(Wave {
            name: name.to_string(),
            members: rest,
            pause_after: false,
        });
    }
    waves
}

fn wave(cx: &mut Context, t: &toml::Table, p: &str, i: usize, members: &[Member]) -> Wave {
    let mut w = Section::new(t, p, keys::WAVE);
    let name = w
        .str(cx, "name")
        .unwrap_or_else(|| format!("wave {}", i + 1));
    let listed = w.strings(cx, "members");
    let group = w.str(cx, "group");
    let pause_after = w.bool(cx, "pause_after", false);
    w.finish(cx);
    let mut idxs = Vec::new();
    match (listed, group) {
        (Some(_), Some(_)) => cx.err(
            p,
            "give either members = [...] or group = \"...\", not both",
        ),
        (None, None) => cx.err(
            p,
            "a wave needs members = [\"name\", ...] or group = \"...\"",
        ),
        (Some(list), None) => {
            for n in list {
                match members.iter().position(|m| m.name == n) {
                    Some(ix) => idxs.push(ix),
                    None => cx.err(&format!("{p}.members"), format!("no member named \"{n}\"")),
                }
            }
        }
        (None, Some(g)) => {
            idxs = members
                .iter()
                .enumerate()
                .filter(|(_, m)| m.group.as_deref() == Some(g.as_str()))
                .map(|(ix, _)| ix)
                .collect();
            if idxs.is_empty() {
                cx.err(
                    &format!("{p}.group"),
                    format!("no member is in group \"{g}\""),
                );
            }
        }
    }
    Wave {
        name,
        members: idxs,
        pause_after,
    }
}
