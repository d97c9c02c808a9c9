//! Validation errors that name the offending field.
//!
//! Every problem in a document is reported at once, each with the path of the field it is
//! about (`source_groups[0].rules[2].match.dst_ports[1]`), so an operator fixes a policy in
//! one round trip instead of one error per attempt.

use std::fmt;

use serde::Serialize;

/// One problem in a policy document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// Where the problem is, e.g. `source_groups[0].rules[2].match.dst_ports[1]`; empty for
    /// the document as a whole (a JSON syntax error, say).
    pub path: String,
    pub message: String,
}

impl FieldError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError { path: path.into(), message: message.into() }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A document-level error has no field to name; "`: message`" would only look broken.
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every problem found in a document, in the order they occur in it. Never empty when
/// returned as an error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyErrors(pub Vec<FieldError>);

impl PolicyErrors {
    pub fn single(path: impl Into<String>, message: impl Into<String>) -> Self {
        PolicyErrors(vec![FieldError::new(path, message)])
    }

    pub fn errors(&self) -> &[FieldError] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, FieldError> {
        self.0.iter()
    }

    /// The paths of all errors, in order; handy when checking which fields were rejected.
    pub fn paths(&self) -> Vec<&str> {
        self.0.iter().map(|e| e.path.as_str()).collect()
    }
}

impl fmt::Display for PolicyErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for PolicyErrors {}

impl<'a> IntoIterator for &'a PolicyErrors {
    type Item = &'a FieldError;
    type IntoIter = std::slice::Iter<'a, FieldError>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl IntoIterator for PolicyErrors {
    type Item = FieldError;
    type IntoIter = std::vec::IntoIter<FieldError>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

/// At most this many errors are kept. Errors grow with the size of the text, and a huge
/// garbage document must not turn into an equally huge error list; a final entry says how
/// many more there were.
pub(crate) const MAX_REPORTED_ERRORS: usize = 1000;

/// Collects errors while a document is walked.
#[derive(Debug, Default)]
pub(crate) struct ErrorSink {
    errors: Vec<FieldError>,
    dropped: usize,
}

impl ErrorSink {
    /// Records an error; `path` is formatted only here, so callers pass lazy paths freely.
    pub(crate) fn push(&mut self, path: impl std::fmt::Display, message: impl Into<String>) {
        if self.errors.len() < MAX_REPORTED_ERRORS {
            self.errors.push(FieldError::new(path.to_string(), message));
        } else {
            self.dropped += 1;
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    pub(crate) fn into_result<T>(self, value: T) -> Result<T, PolicyErrors> {
        if self.errors.is_empty() {
            return Ok(value);
        }
        let mut errors = self.errors;
        if self.dropped > 0 {
            errors
                .push(FieldError::new("", format!("{} more errors not shown; fix the ones above first", self.dropped)));
        }
        Err(PolicyErrors(errors))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_puts_one_error_per_line_and_omits_empty_paths() {
        let errors = PolicyErrors(vec![
            FieldError::new("", "invalid JSON: EOF while parsing at line 1 column 1"),
            FieldError::new("source_groups[0].id", "required field is missing"),
        ]);
        assert_eq!(
            errors.to_string(),
            "invalid JSON: EOF while parsing at line 1 column 1\nsource_groups[0].id: required field is missing"
        );
    }

    #[test]
    fn sink_caps_the_number_of_errors_and_says_how_many_were_dropped() {
        let mut sink = ErrorSink::default();
        for i in 0..MAX_REPORTED_ERRORS + 5 {
            sink.push(format!("x[{i}]"), "bad");
        }
        let errors = sink.into_result(()).unwrap_err();
        assert_eq!(errors.len(), MAX_REPORTED_ERRORS + 1);
        assert!(errors.0.last().unwrap().message.starts_with("5 more errors"));
    }

    #[test]
    fn errors_serialize_as_a_list_of_path_and_message() {
        let errors = PolicyErrors::single("default_action", "expected \"allow\" or \"deny\"");
        let json = serde_json::to_string(&errors).unwrap();
        assert_eq!(json, r#"[{"path":"default_action","message":"expected \"allow\" or \"deny\""}]"#);
    }
}
