//! Decoding of a group's rules and their `match` objects.

use std::collections::HashMap;

use serde_json::Value;

use super::json::{self, Object, Path};
use super::{read_cidrs, read_id, MAX_LIST_ENTRIES, MAX_RULES_PER_GROUP};
use crate::error::ErrorSink;
use crate::hostname::normalise_pattern;
use crate::model::{PortRange, Protocol, Rule, RuleMatch};

const RULE_FIELDS: &[&str] = &["id", "action", "match"];
const MATCH_FIELDS: &[&str] = &["proto", "dst_ports", "icmp_types", "dst_cidrs", "hostnames"];

pub(super) fn read_rules(sink: &mut ErrorSink, value: &Value, path: &Path<'_>) -> Option<Vec<Rule>> {
    let Value::Array(items) = value else {
        json::type_error(sink, path, "an array", value);
        return None;
    };
    if items.len() > MAX_RULES_PER_GROUP {
        sink.push(path, format!("has {} rules; at most {MAX_RULES_PER_GROUP} are allowed per group", items.len()));
        return None;
    }
    let mut ids: HashMap<String, usize> = HashMap::new();
    let mut rules = Some(Vec::with_capacity(items.len()));
    for (i, item) in items.iter().enumerate() {
        let rule_path = path.index(i);
        let (id, rule) = read_rule(sink, item, &rule_path);
        if let Some(id) = id {
            if let Some(&first) = ids.get(&id) {
                sink.push(
                    rule_path.field("id"),
                    format!("duplicate rule id `{id}` in this group (already used by {})", path.index(first)),
                );
            } else {
                ids.insert(id, i);
            }
        }
        match (rule, rules.as_mut()) {
            (Some(rule), Some(list)) => list.push(rule),
            _ => rules = None,
        }
    }
    rules
}

/// The rule's id is returned separately so duplicates are found even in invalid rules.
fn read_rule(sink: &mut ErrorSink, value: &Value, path: &Path<'_>) -> (Option<String>, Option<Rule>) {
    let Some(object) = Object::open(sink, value, *path, RULE_FIELDS) else {
        return (None, None);
    };
    let id = object.required(sink, "id").and_then(|v| read_id(sink, v, &object.path_of("id")));
    let action = object.required(sink, "action").and_then(|v| json::action(sink, v, &object.path_of("action")));
    let matches = object.required(sink, "match").and_then(|v| read_match(sink, v, &object.path_of("match")));
    let rule = match (id.clone(), action, matches) {
        (Some(id), Some(action), Some(matches)) => Some(Rule { id, action, matches }),
        _ => None,
    };
    (id, rule)
}

fn read_match(sink: &mut ErrorSink, value: &Value, path: &Path<'_>) -> Option<RuleMatch> {
    let object = Object::open(sink, value, *path, MATCH_FIELDS)?;
    let mut valid = true;

    let proto = match object.optional("proto") {
        None => Some(Protocol::Any),
        Some(v) => json::keyword(
            sink,
            v,
            &object.path_of("proto"),
            &[("tcp", Protocol::Tcp), ("udp", Protocol::Udp), ("icmp", Protocol::Icmp), ("any", Protocol::Any)],
        ),
    };
    valid &= proto.is_some();

    let mut dst_ports = Vec::new();
    if let Some(v) = object.optional("dst_ports") {
        let ports_path = object.path_of("dst_ports");
        match proto {
            Some(p) if !p.has_ports() => {
                sink.push(
                    ports_path,
                    format!("`dst_ports` needs `proto` \"tcp\" or \"udp\" (proto is \"{}\")", p.name()),
                );
                valid = false;
            }
            _ => match read_ports(sink, v, &ports_path) {
                Some(ports) => dst_ports = ports,
                None => valid = false,
            },
        }
    }

    let mut icmp_types = Vec::new();
    if let Some(v) = object.optional("icmp_types") {
        let types_path = object.path_of("icmp_types");
        match proto {
            Some(p) if p != Protocol::Icmp => {
                sink.push(types_path, format!("`icmp_types` needs `proto` \"icmp\" (proto is \"{}\")", p.name()));
                valid = false;
            }
            _ => match read_icmp_types(sink, v, &types_path) {
                Some(types) => icmp_types = types,
                None => valid = false,
            },
        }
    }

    let cidrs_value = object.optional("dst_cidrs");
    let hostnames_value = object.optional("hostnames");
    if cidrs_value.is_some() && hostnames_value.is_some() {
        sink.push(path, "a rule may have `hostnames` or `dst_cidrs`, not both; split it into one rule for each");
        valid = false;
    }
    let mut dst_cidrs = Vec::new();
    if let Some(v) = cidrs_value {
        let hint = "leave `dst_cidrs` out to match every destination";
        match read_cidrs(sink, v, &object.path_of("dst_cidrs"), hint) {
            Some(cidrs) => dst_cidrs = cidrs,
            None => valid = false,
        }
    }
    let mut hostnames = Vec::new();
    if let Some(v) = hostnames_value {
        match read_hostnames(sink, v, &object.path_of("hostnames")) {
            Some(names) => hostnames = names,
            None => valid = false,
        }
    }

    let proto = proto?;
    valid.then_some(RuleMatch { proto, dst_ports, icmp_types, dst_cidrs, hostnames })
}

fn read_ports(sink: &mut ErrorSink, value: &Value, path: &Path<'_>) -> Option<Vec<PortRange>> {
    let hint = "leave `dst_ports` out to match every port";
    let items = json::bounded_array(sink, value, path, MAX_LIST_ENTRIES, Some(hint))?;
    collect_all(items.iter().enumerate().map(|(i, item)| read_port(sink, item, &path.index(i))))
}

/// A port number, or a string `"lo-hi"` for an inclusive range.
fn read_port(sink: &mut ErrorSink, value: &Value, path: &Path<'_>) -> Option<PortRange> {
    if let Value::String(text) = value {
        return match parse_port_range(text) {
            Ok(range) => Some(range),
            Err(message) => {
                sink.push(path, message);
                None
            }
        };
    }
    if !value.is_number() {
        json::type_error(sink, path, "a port number or a \"lo-hi\" range string", value);
        return None;
    }
    json::integer(sink, value, path, "port", 1, 65535).map(|p| PortRange::single(p as u16))
}

fn parse_port_range(text: &str) -> Result<PortRange, String> {
    let malformed = || format!("`{text}` is not a port range; expected \"lo-hi\" such as \"8000-8999\"");
    let (lo, hi) = text.split_once('-').ok_or_else(malformed)?;
    let parse = |part: &str| -> Result<u16, String> {
        let part = part.trim();
        if part.is_empty() || part.len() > 5 || !part.bytes().all(|b| b.is_ascii_digit()) {
            return Err(malformed());
        }
        match part.parse::<u32>() {
            Ok(port @ 1..=65535) => Ok(port as u16),
            _ => Err(format!("port {part} in `{text}` is out of range 1..=65535")),
        }
    };
    let (first, last) = (parse(lo)?, parse(hi)?);
    if first > last {
        return Err(format!("range `{text}` is reversed; write \"{last}-{first}\""));
    }
    Ok(PortRange { first, last })
}

fn read_icmp_types(sink: &mut ErrorSink, value: &Value, path: &Path<'_>) -> Option<Vec<u8>> {
    let hint = "leave `icmp_types` out to match every ICMP type";
    let items = json::bounded_array(sink, value, path, MAX_LIST_ENTRIES, Some(hint))?;
    collect_all(
        items
            .iter()
            .enumerate()
            .map(|(i, item)| json::integer(sink, item, &path.index(i), "icmp type", 0, 255).map(|t| t as u8)),
    )
}

fn read_hostnames(sink: &mut ErrorSink, value: &Value, path: &Path<'_>) -> Option<Vec<String>> {
    let hint = "leave `hostnames` out for a rule that matches by address";
    let items = json::bounded_array(sink, value, path, MAX_LIST_ENTRIES, Some(hint))?;
    collect_all(items.iter().enumerate().map(|(i, item)| {
        let item_path = path.index(i);
        let text = json::string(sink, item, &item_path)?;
        normalise_pattern(text).map_err(|message| sink.push(item_path, message)).ok()
    }))
}

/// Like `collect::<Option<Vec<_>>>()` but keeps consuming after the first `None`, so every
/// entry of a list gets validated (and its error recorded) instead of only the first bad one.
fn collect_all<T>(items: impl Iterator<Item = Option<T>>) -> Option<Vec<T>> {
    let mut all_valid = true;
    let mut collected = Vec::new();
    for item in items {
        match item {
            Some(value) => collected.push(value),
            None => all_valid = false,
        }
    }
    all_valid.then_some(collected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_ranges_parse_and_explain_mistakes() {
        assert_eq!(parse_port_range("8000-8999"), Ok(PortRange { first: 8000, last: 8999 }));
        assert_eq!(parse_port_range("80-80"), Ok(PortRange::single(80)));
        assert_eq!(parse_port_range("200-100").unwrap_err(), "range `200-100` is reversed; write \"100-200\"");
        assert!(parse_port_range("0-10").unwrap_err().contains("out of range"));
        assert!(parse_port_range("1-70000").unwrap_err().contains("out of range"));
        for bad in ["80", "-", "a-b", "1-2-3", "+1-2", "1--2"] {
            assert!(parse_port_range(bad).unwrap_err().contains("is not a port range"), "{bad}");
        }
    }
}
