//! The SVG pieces of the report: one time axis shared by the member timeline, the
//! in-service chart and the traffic chart.

use std::fmt::Write as _;

use super::escape::{esc, utc};
use super::{at, Member, Step};
use crate::RunSummary;
use ebb_engine::journal::{ActionKind, Outcome};

/// Width of the plotting area in SVG units, and of the label column to its left.
const PLOT_W: f64 = 900.0;
const LABEL_W: f64 = 90.0;
const ROW_H: f64 = 26.0;
const CHART_H: f64 = 120.0;

/// Colours of the step kinds, in legend order.
const KINDS: &[(&str, &str)] = &[
    ("drain", "#f59e0b"),
    ("hold", "#a855f7"),
    ("step", "#3b82f6"),
    ("update", "#2563eb"),
    ("backup", "#64748b"),
    ("reboot", "#475569"),
    ("verify", "#10b981"),
    ("undo", "#06b6d4"),
    ("start", "#22c55e"),
    ("return", "#22c55e"),
    ("release", "#84cc16"),
    ("check", "#14b8a6"),
    ("wait", "#cbd5e1"),
];
const OTHER_KIND: &str = "#9ca3af";

/// The shared time axis: every chart maps unix ms to x the same way.
pub(super) struct Axis {
    pub(super) start: u64,
    pub(super) end: u64,
}

impl Axis {
    pub(super) fn new(
        run: &RunSummary,
        members: &[Member<'_>],
        in_service: &[(u64, u64, u64)],
        traffic: &[(u64, u64, u64)],
    ) -> Option<Self> {
        let mut times: Vec<u64> = Vec::new();
        times.extend(at(run.started_ms));
        times.extend(run.ended_ms.and_then(at));
        for step in members.iter().flat_map(|m| &m.steps) {
            times.extend(step.started_ms);
            times.extend(step.ended_ms);
        }
        times.extend(in_service.iter().map(|s| s.0));
        times.extend(traffic.iter().flat_map(|s| [s.0, s.0 + 1000]));
        let start = *times.iter().min()?;
        let end = (*times.iter().max()?).max(start + 1000);
        Some(Self { start, end })
    }

    pub(super) fn x(&self, t: u64) -> f64 {
        let t = t.clamp(self.start, self.end);
        LABEL_W + (t - self.start) as f64 / (self.end - self.start) as f64 * PLOT_W
    }

    /// Vertical grid lines and second labels at a readable step.
    fn ticks(&self, top: f64, bottom: f64) -> String {
        let span_s = (self.end - self.start) as f64 / 1000.0;
        let step = [
            1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
        ]
        .into_iter()
        .find(|s| span_s / s <= 12.0)
        .unwrap_or(7200.0);
        let mut out = String::new();
        let mut s = 0.0;
        while s <= span_s {
            let x = LABEL_W + s / span_s * PLOT_W;
            let _ = write!(
                out,
                "<line class=\"grid\" x1=\"{x:.1}\" y1=\"{top:.1}\" x2=\"{x:.1}\" y2=\"{bottom:.1}\"/><text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
                bottom + 13.0,
                seconds_label(s)
            );
            s += step;
        }
        out
    }
}

pub(super) fn seconds_label(s: f64) -> String {
    if s >= 60.0 {
        format!("{}m{:02}s", (s / 60.0).floor(), (s % 60.0).round())
    } else {
        format!("{s:.0}s")
    }
}

pub(super) fn kind_colour(kind: &ActionKind) -> &'static str {
    KINDS
        .iter()
        .find(|(k, _)| *k == kind.as_str())
        .map(|(_, c)| *c)
        .unwrap_or(OTHER_KIND)
}

pub(super) fn legend(members: &[Member<'_>]) -> String {
    let used: Vec<&str> = members
        .iter()
        .flat_map(|m| &m.steps)
        .map(|s| s.kind.as_str())
        .collect();
    let mut out = String::from("<div class=\"legend\">");
    for (kind, colour) in KINDS.iter().filter(|(k, _)| used.contains(k)) {
        let _ = write!(
            out,
            "<span><i style=\"background:{colour}\"></i>{kind}</span>"
        );
    }
    if used
        .iter()
        .any(|k| !KINDS.iter().any(|(known, _)| known == k))
    {
        let _ = write!(
            out,
            "<span><i style=\"background:{OTHER_KIND}\"></i>other</span>"
        );
    }
    out.push_str(
        "<span><i style=\"background:#fff;outline:2px solid #b91c1c\"></i>failed</span></div>\n",
    );
    out
}

pub(super) fn timeline(members: &[Member<'_>], axis: Option<&Axis>) -> String {
    let height = members.len() as f64 * ROW_H + 24.0;
    let mut out = format!(
        "<svg class=\"timeline\" viewBox=\"0 0 {} {height:.0}\" role=\"img\" aria-label=\"timeline of steps per member\">\n",
        LABEL_W + PLOT_W + 10.0
    );
    let bottom = members.len() as f64 * ROW_H;
    if let Some(axis) = axis {
        out.push_str(&axis.ticks(0.0, bottom));
    }
    for (i, member) in members.iter().enumerate() {
        let y = i as f64 * ROW_H;
        let _ = write!(
            out,
            "<g class=\"member-row\" data-member=\"{0}\"><text x=\"4\" y=\"{1:.1}\">{0}</text>",
            esc(member.name),
            y + ROW_H / 2.0 + 4.0
        );
        if let Some(axis) = axis {
            for step in &member.steps {
                let Some(start) = step.started_ms else {
                    continue;
                };
                let end = step.ended_ms.unwrap_or(axis.end).max(start);
                let x0 = axis.x(start);
                let w = (axis.x(end) - x0).max(2.0);
                let class = if *step.outcome == Outcome::Failed {
                    " class=\"failed\""
                } else {
                    ""
                };
                let _ = write!(
                    out,
                    "<rect{class} x=\"{x0:.1}\" y=\"{:.1}\" width=\"{w:.1}\" height=\"{:.1}\" rx=\"2\" fill=\"{}\"><title>{}</title></rect>",
                    y + 4.0,
                    ROW_H - 8.0,
                    kind_colour(step.kind),
                    esc(&step_tooltip(step))
                );
            }
        }
        out.push_str("</g>\n");
    }
    let _ = writeln!(
        out,
        "<line class=\"axis\" x1=\"{LABEL_W}\" y1=\"{bottom:.1}\" x2=\"{:.1}\" y2=\"{bottom:.1}\"/></svg>",
        LABEL_W + PLOT_W
    );
    out
}

pub(super) fn step_tooltip(step: &Step<'_>) -> String {
    let duration = match (step.started_ms, step.ended_ms) {
        (Some(a), Some(b)) => format!("{:.1} s", b.saturating_sub(a) as f64 / 1000.0),
        _ => "unfinished".into(),
    };
    let mut text = format!("{}: {} ({}), {duration}", step.member, step.name, step.kind);
    let _ = write!(text, ", {}", step.outcome);
    if let Some(code) = step.exit_code {
        let _ = write!(text, ", exit {code}");
    }
    if !step.detail.is_empty() {
        let _ = write!(text, " — {}", step.detail);
    }
    text
}

pub(super) fn chart_frame(label: &str, max: u64, axis: &Axis) -> String {
    let mut out = format!(
        "<svg viewBox=\"0 0 {} {}\" role=\"img\" aria-label=\"{}\">\n",
        LABEL_W + PLOT_W + 10.0,
        CHART_H + 24.0,
        esc(label)
    );
    out.push_str(&axis.ticks(0.0, CHART_H));
    let _ = write!(
        out,
        "<text x=\"{:.1}\" y=\"10\" text-anchor=\"end\">{max}</text><text x=\"{:.1}\" y=\"{CHART_H:.1}\" text-anchor=\"end\">0</text>",
        LABEL_W - 6.0,
        LABEL_W - 6.0
    );
    let _ = write!(
        out,
        "<line class=\"axis\" x1=\"{LABEL_W}\" y1=\"{CHART_H}\" x2=\"{:.1}\" y2=\"{CHART_H}\"/><line class=\"axis\" x1=\"{LABEL_W}\" y1=\"0\" x2=\"{LABEL_W}\" y2=\"{CHART_H}\"/>",
        LABEL_W + PLOT_W
    );
    out
}

pub(super) fn y_of(value: u64, max: u64) -> f64 {
    CHART_H - value as f64 / max.max(1) as f64 * (CHART_H - 8.0)
}

pub(super) fn in_service_chart(samples: &[(u64, u64, u64)], axis: &Axis) -> String {
    let max = samples
        .iter()
        .map(|s| s.1.max(s.2))
        .max()
        .unwrap_or(1)
        .max(1);
    let mut out = chart_frame("members in service over time", max, axis);
    // A step line: the count holds until the next sample.
    let mut path = String::new();
    for (i, &(t, n, _)) in samples.iter().enumerate() {
        let x = axis.x(t);
        let y = y_of(n, max);
        if i == 0 {
            let _ = write!(path, "M{x:.1},{y:.1}");
        } else {
            let _ = write!(path, " H{x:.1} V{y:.1}");
        }
    }
    if let Some(&(t, _, _)) = samples.last() {
        let _ = write!(path, " H{:.1}", axis.x(axis.end.max(t)));
    }
    let _ = writeln!(
        out,
        "<path class=\"in-service\" d=\"{path}\" fill=\"none\" stroke=\"#16a34a\" stroke-width=\"2\"/></svg>"
    );
    out
}

pub(super) fn traffic_chart(samples: &[(u64, u64, u64)], axis: &Axis) -> String {
    let max = samples.iter().map(|s| s.1).max().unwrap_or(1).max(1);
    let mut out = chart_frame("client requests and errors per second", max, axis);
    for &(t, requests, errors) in samples {
        let x0 = axis.x(t);
        let w = (axis.x(t + 1000) - x0 - 1.0).max(1.0);
        let y = y_of(requests, max);
        let _ = write!(
            out,
            "<rect class=\"requests\" x=\"{x0:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{:.1}\" fill=\"#93c5fd\"><title>{}: {requests} requests, {errors} errors</title></rect>",
            CHART_H - y,
            esc(&utc(t))
        );
        if errors > 0 {
            let ye = y_of(errors, max).min(CHART_H - 3.0);
            let _ = write!(
                out,
                "<rect class=\"errors\" x=\"{x0:.1}\" y=\"{ye:.1}\" width=\"{w:.1}\" height=\"{:.1}\" fill=\"#dc2626\"/>",
                CHART_H - ye
            );
        }
    }
    out.push_str("</svg>\n<div class=\"legend\"><span><i style=\"background:#93c5fd\"></i>requests/s</span><span><i style=\"background:#dc2626\"></i>errors/s (failed requests and cut connections)</span></div>\n");
    out
}
