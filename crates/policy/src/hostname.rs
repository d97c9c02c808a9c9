//! Hostname patterns (`api.example.com`, `*.cdn.example.com`) and query names.
//!
//! Names are compared in a normal form: ASCII lowercase without the trailing root dot. DNS is
//! case-insensitive and `example.com.` is the same name as `example.com`, so both spellings
//! must select the same rules.

use std::net::Ipv4Addr;

/// Longest name DNS can carry in presentation form, without the trailing dot.
const MAX_NAME_LEN: usize = 253;
const MAX_LABEL_LEN: usize = 63;

/// A validated, normalised pattern, split into what the matcher indexes by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pattern<'a> {
    /// Matches exactly this name.
    Exact(&'a str),
    /// `*.suffix`: matches names strictly below `suffix`, at any depth, never `suffix` itself.
    Below(&'a str),
}

impl<'a> Pattern<'a> {
    /// Splits an already normalised pattern (as stored in a validated document).
    pub(crate) fn of(normalised: &'a str) -> Self {
        match normalised.strip_prefix("*.") {
            Some(suffix) => Pattern::Below(suffix),
            None => Pattern::Exact(normalised),
        }
    }

    /// Whether `name` (normalised with [`normalise_name`]) is selected by this pattern. The
    /// compiled index answers this by lookups; this direct form states the rule it implements.
    #[cfg(test)]
    pub(crate) fn matches(self, name: &str) -> bool {
        match self {
            Pattern::Exact(exact) => name == exact,
            Pattern::Below(suffix) => {
                name.strip_suffix(suffix).and_then(|head| head.strip_suffix('.')).is_some_and(|head| !head.is_empty())
            }
        }
    }
}

/// Lowercases and drops one trailing dot: the form names are compared in.
pub(crate) fn normalise_name(name: &str) -> String {
    let name = name.strip_suffix('.').unwrap_or(name);
    name.to_ascii_lowercase()
}

/// Validates a pattern as written in a document and returns its normal form.
pub(crate) fn normalise_pattern(text: &str) -> Result<String, String> {
    if !text.is_ascii() {
        return Err(format!(
            "`{text}` contains non-ASCII characters; write internationalised names in their xn-- (punycode) form"
        ));
    }
    let name = normalise_name(text);
    if name.is_empty() {
        return Err("hostname is empty".to_string());
    }
    if name == "*" {
        return Err("a bare `*` would match every name; list the domains to allow (e.g. *.example.com)".to_string());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!("`{text}` is {} characters long; a DNS name has at most {MAX_NAME_LEN}", name.len()));
    }
    let rest = name.strip_prefix("*.").unwrap_or(&name);
    if rest.contains('*') {
        return Err(format!("`{text}`: `*` is only allowed as the whole leftmost label (e.g. *.example.com)"));
    }
    for label in rest.split('.') {
        check_label(label).map_err(|why| format!("`{text}` is not a valid hostname: {why}"))?;
    }
    if rest.parse::<Ipv4Addr>().is_ok() {
        return Err(format!("`{text}` is an IP address, which DNS never resolves; use `dst_cidrs` for addresses"));
    }
    Ok(name)
}

fn check_label(label: &str) -> Result<(), String> {
    if label.is_empty() {
        return Err("empty label (two dots in a row, or a leading dot)".to_string());
    }
    if label.len() > MAX_LABEL_LEN {
        return Err(format!("label `{label}` is longer than {MAX_LABEL_LEN} characters"));
    }
    // Underscore is not valid in host names proper, but service names (`_sip._tcp.example.com`)
    // are looked up through the same proxy, so they are accepted.
    if let Some(bad) = label.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_')) {
        return Err(format!("label `{label}` contains `{bad}`; only letters, digits, `-` and `_` are allowed"));
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Err(format!("label `{label}` starts or ends with `-`"));
    }
    Ok(())
}

/// The suffixes a wildcard pattern for `name` could be indexed under: for `a.b.example.com`
/// these are `b.example.com`, `example.com`, `com`.
pub(crate) fn parent_suffixes(name: &str) -> impl Iterator<Item = &str> {
    name.match_indices('.').map(move |(dot, _)| &name[dot + 1..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_case_and_one_trailing_dot() {
        assert_eq!(normalise_pattern("API.Example.COM.").unwrap(), "api.example.com");
        assert_eq!(normalise_pattern("*.CDN.example.com").unwrap(), "*.cdn.example.com");
        assert_eq!(normalise_pattern("_sip._tcp.example.com").unwrap(), "_sip._tcp.example.com");
        assert!(normalise_pattern("example.com..").is_err());
    }

    #[test]
    fn rejects_bad_patterns_with_a_reason() {
        let cases = [
            ("*", "bare `*`"),
            ("a.*.com", "leftmost label"),
            ("*foo.com", "leftmost label"),
            ("foo*.com", "leftmost label"),
            ("*.*.com", "leftmost label"),
            ("-a.com", "starts or ends with `-`"),
            ("a-.com", "starts or ends with `-`"),
            ("a..com", "empty label"),
            (".a.com", "empty label"),
            ("", "empty"),
            (".", "empty"),
            ("exa mple.com", "contains ` `"),
            ("bücher.de", "non-ASCII"),
            ("10.0.0.1", "IP address"),
        ];
        for (text, expected) in cases {
            let error = normalise_pattern(text).unwrap_err();
            assert!(error.contains(expected), "{text}: {error}");
        }
        let long_label = format!("{}.com", "a".repeat(64));
        assert!(normalise_pattern(&long_label).unwrap_err().contains("longer than 63"));
        let long_name = vec!["abcdefghi"; 26].join(".");
        assert_eq!(long_name.len(), 259);
        assert!(normalise_pattern(&long_name).unwrap_err().contains("at most 253"));
    }

    #[test]
    fn wildcard_matches_any_depth_below_but_not_the_apex() {
        let pattern = Pattern::of("*.example.com");
        assert!(pattern.matches("a.example.com"));
        assert!(pattern.matches("a.b.c.example.com"));
        assert!(!pattern.matches("example.com"));
        assert!(!pattern.matches("badexample.com"));
        assert!(!pattern.matches(".example.com"));
        assert!(Pattern::of("example.com").matches("example.com"));
        assert!(!Pattern::of("example.com").matches("a.example.com"));
    }

    #[test]
    fn parent_suffixes_walk_label_by_label() {
        let suffixes: Vec<&str> = parent_suffixes("a.b.example.com").collect();
        assert_eq!(suffixes, ["b.example.com", "example.com", "com"]);
        assert_eq!(parent_suffixes("localhost").count(), 0);
    }
}
