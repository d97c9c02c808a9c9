//! Small typed readers over `serde_json::Value` that record a [`FieldError`] instead of
//! stopping at the first problem. Each returns `None` after recording why, so callers simply
//! skip what could not be read and carry on with the rest of the document.
//!
//! [`FieldError`]: crate::FieldError

use std::fmt;

use serde_json::{Map, Value};

use crate::decision::Action;
use crate::error::ErrorSink;

/// Where a value sits in the document, e.g. `source_groups[0].rules[2].match`.
///
/// A chain of borrowed segments on the stack, turned into text only when an error is
/// recorded: a large valid document then decodes without one allocation per field.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Path<'a> {
    Root,
    Field(&'a Path<'a>, &'a str),
    Index(&'a Path<'a>, usize),
}

impl<'a> Path<'a> {
    /// Path of field `name` inside the value at `self`.
    pub(crate) fn field(&'a self, name: &'a str) -> Path<'a> {
        Path::Field(self, name)
    }

    /// Path of element `index` of the array at `self`.
    pub(crate) fn index(&'a self, index: usize) -> Path<'a> {
        Path::Index(self, index)
    }
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Path::Root => Ok(()),
            Path::Field(Path::Root, name) => f.write_str(name),
            Path::Field(parent, name) => write!(f, "{parent}.{name}"),
            Path::Index(parent, index) => write!(f, "{parent}[{index}]"),
        }
    }
}

/// How a JSON value is described in "expected X, found Y" messages.
pub(crate) fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".to_string(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("the string {}", quote_short(s)),
        Value::Array(_) => "an array".to_string(),
        Value::Object(_) => "an object".to_string(),
    }
}

/// Quotes a string for a message, cut short so a huge value cannot flood the error list.
fn quote_short(text: &str) -> String {
    const MAX: usize = 40;
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("\"{}…\"", &text[..cut]),
        None => format!("\"{text}\""),
    }
}

pub(crate) fn type_error(sink: &mut ErrorSink, path: &Path<'_>, expected: &str, found: &Value) {
    sink.push(path, format!("expected {expected}, found {}", describe(found)));
}

/// A JSON object being decoded, with its allowed field names.
pub(crate) struct Object<'a> {
    map: &'a Map<String, Value>,
    path: Path<'a>,
}

impl<'a> Object<'a> {
    /// Opens `value` as an object with exactly the fields in `allowed` (others are errors).
    pub(crate) fn open(
        sink: &mut ErrorSink,
        value: &'a Value,
        path: Path<'a>,
        allowed: &'static [&'static str],
    ) -> Option<Self> {
        let Value::Object(map) = value else {
            type_error(sink, &path, "an object", value);
            return None;
        };
        for key in map.keys() {
            if !allowed.contains(&key.as_str()) {
                sink.push(path.field(key), unknown_field_message(key, allowed));
            }
        }
        Some(Object { map, path })
    }

    pub(crate) fn path_of<'p>(&'p self, name: &'p str) -> Path<'p> {
        self.path.field(name)
    }

    /// A field that must be present; null counts as missing-with-wrong-type, reported by the
    /// typed reader that follows.
    pub(crate) fn required(&self, sink: &mut ErrorSink, name: &str) -> Option<&'a Value> {
        let value = self.map.get(name);
        if value.is_none() {
            sink.push(self.path_of(name), "required field is missing");
        }
        value
    }

    /// A field that may be left out; an explicit `null` means the same as leaving it out,
    /// because JSON generators commonly write absent optionals that way.
    pub(crate) fn optional(&self, name: &str) -> Option<&'a Value> {
        self.map.get(name).filter(|v| !v.is_null())
    }
}

fn unknown_field_message(key: &str, allowed: &[&str]) -> String {
    let expected: Vec<String> = allowed.iter().map(|f| format!("`{f}`")).collect();
    let mut message = format!("unknown field `{key}`; expected one of {}", expected.join(", "));
    if let Some(close) = allowed.iter().find(|f| edit_distance(key, f) <= 2) {
        message.push_str(&format!(" (did you mean `{close}`?)"));
    }
    message
}

/// Levenshtein distance, only used on short field names for "did you mean" hints.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1; b.len() + 1];
        for (j, &cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != cb);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        previous = current;
    }
    previous[b.len()]
}

pub(crate) fn string<'a>(sink: &mut ErrorSink, value: &'a Value, path: &Path<'_>) -> Option<&'a str> {
    match value {
        Value::String(s) => Some(s),
        other => {
            type_error(sink, path, "a string", other);
            None
        }
    }
}

/// One of a fixed set of lowercase words, e.g. `"allow"`/`"deny"`.
pub(crate) fn keyword<T: Copy>(
    sink: &mut ErrorSink,
    value: &Value,
    path: &Path<'_>,
    choices: &[(&str, T)],
) -> Option<T> {
    let quoted: Vec<String> = choices.iter().map(|(word, _)| format!("\"{word}\"")).collect();
    let expected = quoted.join(" or ");
    let Value::String(text) = value else {
        type_error(sink, path, &expected, value);
        return None;
    };
    if let Some((_, choice)) = choices.iter().find(|(word, _)| word == text) {
        return Some(*choice);
    }
    sink.push(path, format!("unknown value {}; expected {expected}", quote_short(text)));
    None
}

pub(crate) fn action(sink: &mut ErrorSink, value: &Value, path: &Path<'_>) -> Option<Action> {
    keyword(sink, value, path, &[("allow", Action::Allow), ("deny", Action::Deny)])
}

/// A whole number in `min..=max`; `what` names it in the out-of-range message.
pub(crate) fn integer(
    sink: &mut ErrorSink,
    value: &Value,
    path: &Path<'_>,
    what: &str,
    min: u64,
    max: u64,
) -> Option<u64> {
    let Value::Number(number) = value else {
        type_error(sink, path, "an integer", value);
        return None;
    };
    let out_of_range = || format!("{what} {number} is out of range {min}..={max}");
    match number.as_u64() {
        Some(n) if (min..=max).contains(&n) => Some(n),
        Some(_) => {
            sink.push(path, out_of_range());
            None
        }
        None if number.is_i64() => {
            sink.push(path, out_of_range());
            None
        }
        None => {
            sink.push(path, format!("expected an integer, found the number {number}"));
            None
        }
    }
}

/// An array with at most `max` entries. `None` (after recording why) when the value is not an
/// array, is empty, or is too long: the entries are then not looked at, so an oversized list
/// costs one error rather than one per entry.
pub(crate) fn bounded_array<'a>(
    sink: &mut ErrorSink,
    value: &'a Value,
    path: &Path<'_>,
    max: usize,
    empty_hint: Option<&str>,
) -> Option<&'a [Value]> {
    let Value::Array(items) = value else {
        type_error(sink, path, "an array", value);
        return None;
    };
    if items.is_empty() {
        if let Some(hint) = empty_hint {
            sink.push(path, format!("must not be empty; {hint}"));
            return None;
        }
    }
    if items.len() > max {
        sink.push(path, format!("has {} entries; at most {max} are allowed", items.len()));
        return None;
    }
    Some(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_compose() {
        let root = Path::Root;
        let groups = root.field("source_groups");
        let group = groups.index(2);
        assert_eq!(root.to_string(), "");
        assert_eq!(groups.to_string(), "source_groups");
        assert_eq!(group.to_string(), "source_groups[2]");
        assert_eq!(group.field("id").to_string(), "source_groups[2].id");
    }

    #[test]
    fn unknown_field_suggests_a_close_name() {
        let message = unknown_field_message("prot", &["proto", "dst_ports"]);
        assert_eq!(message, "unknown field `prot`; expected one of `proto`, `dst_ports` (did you mean `proto`?)");
        assert!(!unknown_field_message("colour", &["proto"]).contains("did you mean"));
    }

    #[test]
    fn long_strings_are_cut_in_messages() {
        let long = "x".repeat(100);
        let text = describe(&Value::String(long));
        assert!(text.chars().count() < 60, "{text}");
    }

    #[test]
    fn integer_reports_range_sign_and_fraction() {
        let mut sink = ErrorSink::default();
        assert_eq!(integer(&mut sink, &serde_json::json!(443), &Path::Root.field("p"), "port", 1, 65535), Some(443));
        assert_eq!(integer(&mut sink, &serde_json::json!(0), &Path::Root.field("p"), "port", 1, 65535), None);
        assert_eq!(integer(&mut sink, &serde_json::json!(-1), &Path::Root.field("p"), "port", 1, 65535), None);
        assert_eq!(integer(&mut sink, &serde_json::json!(1.5), &Path::Root.field("p"), "port", 1, 65535), None);
        assert_eq!(integer(&mut sink, &serde_json::json!("80"), &Path::Root.field("p"), "port", 1, 65535), None);
        let errors = sink.into_result(()).unwrap_err();
        let messages: Vec<&str> = errors.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(
            messages,
            [
                "port 0 is out of range 1..=65535",
                "port -1 is out of range 1..=65535",
                "expected an integer, found the number 1.5",
                "expected an integer, found the string \"80\"",
            ]
        );
    }
}
