//! Line-located errors and the context that collects them while a file is read.

use crate::lines::LineIndex;
use std::fmt;
use std::sync::Arc;

/// One problem in a pool file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file, as the user named it.
    pub file: String,
    /// 1-based line, 0 when unknown.
    pub line: usize,
    /// The key or table the problem is in (`member[2].lb_name`); empty for the whole file.
    pub key: String,
    /// What was wrong and what was expected.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: ", self.file)?;
        } else {
            write!(f, "{}:{}: ", self.file, self.line)?;
        }
        if self.key.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.key, self.message)
        }
    }
}

/// Every problem found in a pool file, displayed one per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// The file being read: its name, where its keys are, and every problem found so far.
#[derive(Debug, Clone)]
pub struct Context {
    file: String,
    lines: Arc<LineIndex>,
    errors: Vec<ConfigError>,
}

impl Context {
    /// Starts reading `file`, whose keys are at `lines`.
    pub fn new(file: impl Into<String>, lines: impl Into<Arc<LineIndex>>) -> Self {
        Context {
            file: file.into(),
            lines: lines.into(),
            errors: Vec::new(),
        }
    }

    /// The file, as the user named it.
    pub fn file(&self) -> &str {
        &self.file
    }

    /// Where the keys of the file are.
    pub fn lines(&self) -> &Arc<LineIndex> {
        &self.lines
    }

    /// Records a problem with `key` (a dotted path such as `member[1].address`), on the
    /// line of that key or of its nearest enclosing table.
    pub fn err(&mut self, key: &str, message: impl Into<String>) {
        self.errors.push(ConfigError {
            file: self.file.clone(),
            line: self.lines.line(key),
            key: key.to_string(),
            message: message.into(),
        });
    }

    /// Records a problem with `key`, shown on the line of `line_of` (a missing key of a
    /// table reported where the table's owner is named, e.g. `balancer.driver`).
    pub fn err_on(&mut self, key: &str, line_of: &str, message: impl Into<String>) {
        self.errors.push(ConfigError {
            file: self.file.clone(),
            line: self.lines.line(line_of),
            key: key.to_string(),
            message: message.into(),
        });
    }

    /// Adds problems found elsewhere (a driver's validation).
    pub fn extend(&mut self, errors: impl IntoIterator<Item = ConfigError>) {
        self.errors.extend(errors);
    }

    /// Whether no problem was found so far.
    pub fn is_ok(&self) -> bool {
        self.errors.is_empty()
    }

    /// The problems, sorted by line, without repeats.
    pub fn into_errors(self) -> ConfigErrors {
        let mut errors = self.errors;
        errors.sort_by_key(|e| e.line);
        errors.dedup();
        ConfigErrors(errors)
    }

    /// `value` when nothing was wrong, else every problem.
    pub fn into_result<T>(self, value: T) -> Result<T, ConfigErrors> {
        if self.errors.is_empty() {
            Ok(value)
        } else {
            Err(self.into_errors())
        }
    }
}
