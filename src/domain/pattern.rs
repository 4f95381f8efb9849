//! String rules written once, as a regular expression: the server checks a
//! value with it and the OpenAPI document states it as the field's `pattern`,
//! so that the two cannot drift apart.
//!
//! The expressions keep to what ECMA-262 (JSON Schema), Rust's `regex` and
//! Python's `re` read alike: anchors, ASCII classes and counted repetition.

use std::sync::OnceLock;

use regex::Regex;

/// The blanks (space, tab, line breaks) trimmed around names and keys: the
/// characters every engine's `\s` agrees on, unlike the wider Unicode spaces.
pub const BLANKS: [char; 4] = [' ', '\t', '\r', '\n'];

/// Longest part of a client's text an error message quotes, in characters.
const SHOWN_CHARS: usize = 64;

/// A client's key or text as an error message quotes it: at most `SHOWN_CHARS` characters.
pub fn shown(text: &str) -> String {
    if text.chars().count() <= SHOWN_CHARS {
        text.to_owned()
    } else {
        format!("{}…", text.chars().take(SHOWN_CHARS).collect::<String>())
    }
}

/// Something shows: a character other than a blank.
pub static VISIBLE: Pattern = Pattern::new("[^ \\t\\r\\n]");

pub struct Pattern {
    source: &'static str,
    compiled: OnceLock<Regex>,
}

impl Pattern {
    pub const fn new(source: &'static str) -> Pattern {
        Pattern { source, compiled: OnceLock::new() }
    }

    /// The expression, as the OpenAPI document states it.
    pub fn source(&self) -> &'static str {
        self.source
    }

    pub fn is_match(&self, value: &str) -> bool {
        self.compiled.get_or_init(|| Regex::new(self.source).expect("a valid pattern")).is_match(value)
    }
}
