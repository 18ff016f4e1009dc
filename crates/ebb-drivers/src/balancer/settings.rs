//! Reading a driver's keys under `[balancer]`: every problem collected, each with file,
//! line and key, so drivers validate the same way.

use super::setting_error;
use ebb_engine::duration::parse_duration;
use ebb_engine::plan::Plan;
use std::time::Duration;

/// A driver's `[balancer]` settings being read.
pub(crate) struct Settings<'a> {
    plan: &'a Plan,
    /// Every problem found so far.
    pub errors: Vec<String>,
}

impl<'a> Settings<'a> {
    /// Starts reading; keys not in `known` are reported as unknown for `driver`.
    pub fn new(plan: &'a Plan, driver: &str, known: &[&str]) -> Self {
        let errors = plan
            .balancer
            .settings
            .keys()
            .filter(|k| !known.contains(&k.as_str()))
            .map(|k| {
                setting_error(
                    plan,
                    k,
                    format!(
                        "unknown key for the {driver} driver (known: {})",
                        known.join(", ")
                    ),
                )
            })
            .collect();
        Settings { plan, errors }
    }

    /// Whether the key is present (whatever its type).
    pub fn has(&self, key: &str) -> bool {
        self.plan.balancer.settings.contains_key(key)
    }

    /// A string value; a value of another type is an error.
    pub fn string(&mut self, key: &str) -> Option<String> {
        match self.plan.balancer.settings.get(key) {
            None => None,
            Some(toml::Value::String(v)) => Some(v.clone()),
            Some(_) => {
                self.error(key, "expected a string");
                None
            }
        }
    }

    /// A duration string such as `"30s"`, more than zero; `default` when absent or wrong.
    pub fn duration(&mut self, key: &str, default: Duration) -> Duration {
        match self.string(key).map(|v| parse_duration(&v)) {
            None => default,
            Some(Ok(d)) if !d.is_zero() => d,
            Some(Ok(_)) => {
                self.error(key, "must be more than 0");
                default
            }
            Some(Err(e)) => {
                self.error(key, e);
                default
            }
        }
    }

    /// Records a problem with `key`.
    pub fn error(&mut self, key: &str, message: impl std::fmt::Display) {
        self.errors.push(setting_error(self.plan, key, message));
    }

    /// Records a problem with the `[balancer]` table as a whole (a missing key), on the
    /// line of its `driver`.
    pub fn missing(&mut self, message: impl std::fmt::Display) {
        self.errors.push(format!(
            "{}:{}: balancer: {message}",
            self.plan.file.display(),
            self.plan.balancer.lines.get("driver").copied().unwrap_or(0)
        ));
    }
}
