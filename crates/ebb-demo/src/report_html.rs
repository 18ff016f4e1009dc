//! `ebb report --html`: one self-contained page.

/// Renders the report.
pub fn render(report: &serde_json::Value) -> String {
    format!("<!doctype html><pre>{report}</pre>")
}
