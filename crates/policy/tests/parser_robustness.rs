//! Whatever the text, the parser answers with a document or located errors, never a panic;
//! and what it accepts compiles and round-trips.

mod common;

use proptest::prelude::*;
use serde_json::{Map, Value};
use sluice_policy::{compile, parse_policy, PolicyErrors};

/// Field names of the schema (plus near misses), so random objects often look like policy.
const KEYS: &[&str] = &[
    "default_action",
    "source_groups",
    "id",
    "priority",
    "mode",
    "sources",
    "cidrs",
    "rules",
    "action",
    "match",
    "proto",
    "dst_ports",
    "icmp_types",
    "dst_cidrs",
    "hostnames",
    "prot",
    "",
];

/// Values the decoder gives meaning to, valid and not.
const STRINGS: &[&str] = &[
    "allow",
    "deny",
    "audit",
    "enforce",
    "tcp",
    "udp",
    "icmp",
    "any",
    "10.0.0.0/8",
    "10.0.0.1/8",
    "0.0.0.0/0",
    "1.2.3.4",
    "1-2",
    "9-1",
    "0-0",
    "65535-65535",
    "*.example.com",
    "*",
    "a.*.b",
    "example.com.",
    "",
    "g",
    "ü",
    "-",
];

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (0u64..70_000).prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        prop::sample::select(STRINGS).prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::from),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(5, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(KEYS), inner), 0..6).prop_map(|fields| {
                Value::Object(fields.into_iter().map(|(k, v)| (k.to_string(), v)).collect::<Map<_, _>>())
            }),
        ]
    })
}

/// Every location in `value`, as JSON pointers.
fn pointers(value: &Value, at: String, out: &mut Vec<String>) {
    match value {
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                pointers(item, format!("{at}/{i}"), out);
            }
        }
        Value::Object(fields) => {
            for (key, item) in fields {
                pointers(item, format!("{at}/{}", key.replace('~', "~0").replace('/', "~1")), out);
            }
        }
        _ => {}
    }
    out.push(at);
}

/// The checks every parser outcome must pass.
fn check_outcome(text: &str) -> Result<(), TestCaseError> {
    match parse_policy(text) {
        Ok(doc) => {
            let again = parse_policy(&serde_json::to_string(&doc).unwrap());
            prop_assert_eq!(again.as_ref(), Ok(&doc), "round trip of {}", text);
            prop_assert!(compile(&doc).is_ok(), "accepted document must compile: {}", text);
        }
        Err(PolicyErrors(errors)) => {
            prop_assert!(!errors.is_empty());
            for error in &errors {
                prop_assert!(!error.message.is_empty());
                prop_assert!(
                    error.path.is_empty()
                        || error.path.starts_with("source_groups")
                        || error.path.starts_with("default_action")
                        || !error.path.contains('.'),
                    "unexpected path {}",
                    error.path
                );
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
        check_outcome(&text)?;
    }

    #[test]
    fn arbitrary_json_never_panics(value in json_value()) {
        check_outcome(&value.to_string())?;
    }

    #[test]
    fn mutated_valid_documents_never_panic(
        replacement in json_value(),
        location in any::<prop::sample::Index>(),
        truncate_at in any::<prop::sample::Index>(),
    ) {
        let mut value: Value = serde_json::from_str(common::EXAMPLE).unwrap();
        let mut locations = Vec::new();
        pointers(&value, String::new(), &mut locations);
        let at = location.get(&locations).clone();
        *value.pointer_mut(&at).unwrap() = replacement;
        let text = value.to_string();
        check_outcome(&text)?;
        // Cut-off text is a syntax error reported at the document level.
        let cut = truncate_at.index(text.len().max(1));
        if let Some(prefix) = text.get(..cut) {
            if let Err(errors) = parse_policy(prefix) {
                prop_assert!(!errors.is_empty());
            }
        }
    }
}

#[test]
fn deeply_nested_text_is_a_syntax_error_not_a_stack_overflow() {
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let errors = parse_policy(&deep).unwrap_err();
    assert_eq!(errors.paths(), [""]);
    assert!(errors.0[0].message.contains("recursion limit"), "{errors}");
}
