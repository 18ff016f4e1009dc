//! Declarations of the keys a section accepts: what the reader checks against, and what
//! tools (the JSON Schema, the docs) describe.

/// What a key holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A string.
    String,
    /// One of these strings.
    OneOf(&'static [&'static str]),
    /// `true` or `false`.
    Bool,
    /// A whole number, 0 or more.
    Integer,
    /// A number, whole or not (`2.5`).
    Number,
    /// A duration string (`"1m30s"`, `"250ms"`, `"1d"`), more than zero.
    Duration,
    /// A duration string where `"0s"` is allowed.
    DurationOrZero,
    /// A list of strings.
    Strings,
    /// A table of string values (`matchers`, `headers`).
    StringMap,
    /// A table (its own section).
    Table,
    /// An array of tables (`[[member]]`).
    Tables,
    /// Anything a description explains (e.g. a count or a percentage).
    Any,
}

/// One key a section accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    /// Its name in the section.
    pub name: &'static str,
    /// What it holds.
    pub kind: Kind,
    /// Whether the section needs it.
    pub required: bool,
    /// One line saying what it is for (and its default).
    pub description: &'static str,
}

impl Key {
    /// An optional key.
    pub const fn new(name: &'static str, kind: Kind, description: &'static str) -> Key {
        Key {
            name,
            kind,
            required: false,
            description,
        }
    }

    /// A key the section needs.
    pub const fn required(name: &'static str, kind: Kind, description: &'static str) -> Key {
        Key {
            name,
            kind,
            required: true,
            description,
        }
    }
}
