//! JSON text → validated [`PolicyDocument`], reporting every problem with its field path.
//!
//! serde's derived deserialisers stop at the first error and cannot name the field of a
//! semantic error (a reversed port range, a duplicate id), so the text is first read into a
//! `serde_json::Value` and then walked here by hand.

mod json;
mod rule;

use std::collections::HashMap;

use serde_json::Value;

use crate::cidr::Ipv4Cidr;
use crate::error::{ErrorSink, PolicyErrors};
use crate::model::{GroupMode, PolicyDocument, SourceGroup, Sources};
use json::{Object, Path};

/// At most this many source groups: group indices are `u16` in [`crate::Cause`], and a
/// document this large is already far beyond any real deployment.
pub const MAX_GROUPS: usize = 10_000;
/// At most this many rules per group.
pub const MAX_RULES_PER_GROUP: usize = 1000;
/// At most this many entries in any list of a group or rule (CIDRs, ports, types, names).
pub const MAX_LIST_ENTRIES: usize = 256;
/// Longest group or rule id.
pub const MAX_ID_LEN: usize = 64;

const DOCUMENT_FIELDS: &[&str] = &["default_action", "source_groups"];
const GROUP_FIELDS: &[&str] = &["id", "priority", "mode", "sources", "rules", "default_action"];
const SOURCES_FIELDS: &[&str] = &["cidrs"];

/// Reads and validates a policy document from JSON text.
pub fn parse_policy(json: &str) -> Result<PolicyDocument, PolicyErrors> {
    // serde_json bounds nesting depth itself (128 levels), so hostile text cannot overflow
    // the stack here, and the walk below only descends as deep as the schema does.
    let value: Value =
        serde_json::from_str(json).map_err(|e| PolicyErrors::single("", format!("invalid JSON: {e}")))?;
    decode_document(&value)
}

/// Validates an already parsed JSON value as a policy document.
pub(crate) fn decode_document(value: &Value) -> Result<PolicyDocument, PolicyErrors> {
    let mut sink = ErrorSink::default();
    let document = read_document(&mut sink, value);
    match document {
        Some(document) if sink.is_empty() => Ok(document),
        _ => {
            // Every path that fails to build a document records why, so the sink is never
            // empty here; the fallback keeps that an internal invariant rather than a panic.
            if sink.is_empty() {
                sink.push("", "document is invalid");
            }
            sink.into_result(PolicyDocument::default())
        }
    }
}

fn read_document(sink: &mut ErrorSink, value: &Value) -> Option<PolicyDocument> {
    let object = Object::open(sink, value, Path::Root, DOCUMENT_FIELDS)?;
    let default_action = match object.optional("default_action") {
        None => Some(crate::Action::Deny),
        Some(v) => json::action(sink, v, &object.path_of("default_action")),
    };
    let source_groups = match object.optional("source_groups") {
        None => Some(Vec::new()),
        Some(v) => read_groups(sink, v, &object.path_of("source_groups")),
    };
    Some(PolicyDocument { default_action: default_action?, source_groups: source_groups? })
}

/// What could be read of one group, kept even when the group as a whole is invalid so that
/// duplicate ids and priorities are still reported across all groups.
struct GroupParts {
    id: Option<String>,
    priority: Option<u32>,
    group: Option<SourceGroup>,
}

fn read_groups(sink: &mut ErrorSink, value: &Value, path: &Path<'_>) -> Option<Vec<SourceGroup>> {
    let items = json::bounded_array(sink, value, path, MAX_GROUPS, None)?;
    let parts: Vec<GroupParts> =
        items.iter().enumerate().map(|(i, item)| read_group(sink, item, &path.index(i))).collect();

    let mut ids: HashMap<&str, usize> = HashMap::new();
    let mut priorities: HashMap<u32, usize> = HashMap::new();
    for (i, part) in parts.iter().enumerate() {
        let group_path = path.index(i);
        if let Some(id) = part.id.as_deref() {
            if let Some(&first) = ids.get(id) {
                sink.push(
                    group_path.field("id"),
                    format!("duplicate group id `{id}` (already used by {})", path.index(first)),
                );
            } else {
                ids.insert(id, i);
            }
        }
        if let Some(priority) = part.priority {
            if let Some(&first) = priorities.get(&priority) {
                sink.push(
                    group_path.field("priority"),
                    format!(
                        "priority {priority} is already used by {}; priorities must be unique so the order groups are tried in is explicit",
                        path.index(first)
                    ),
                );
            } else {
                priorities.insert(priority, i);
            }
        }
    }
    parts.into_iter().map(|p| p.group).collect()
}

fn read_group(sink: &mut ErrorSink, value: &Value, path: &Path<'_>) -> GroupParts {
    let Some(object) = Object::open(sink, value, *path, GROUP_FIELDS) else {
        return GroupParts { id: None, priority: None, group: None };
    };
    let id = object.required(sink, "id").and_then(|v| read_id(sink, v, &object.path_of("id")));
    let priority = object
        .required(sink, "priority")
        .and_then(|v| json::integer(sink, v, &object.path_of("priority"), "priority", 0, u64::from(u32::MAX)))
        .map(|p| p as u32);
    let mode = match object.optional("mode") {
        None => Some(GroupMode::Enforce),
        Some(v) => json::keyword(
            sink,
            v,
            &object.path_of("mode"),
            &[("enforce", GroupMode::Enforce), ("audit", GroupMode::Audit)],
        ),
    };
    let sources = object.required(sink, "sources").and_then(|v| read_sources(sink, v, &object.path_of("sources")));
    let rules = match object.optional("rules") {
        None => Some(Vec::new()),
        Some(v) => rule::read_rules(sink, v, &object.path_of("rules")),
    };
    let default_action = match object.optional("default_action") {
        None => Some(None),
        Some(v) => json::action(sink, v, &object.path_of("default_action")).map(Some),
    };
    let group = (|| {
        Some(SourceGroup {
            id: id.clone()?,
            priority: priority?,
            mode: mode?,
            sources: sources?,
            rules: rules?,
            default_action: default_action?,
        })
    })();
    GroupParts { id, priority, group }
}

fn read_sources(sink: &mut ErrorSink, value: &Value, path: &Path<'_>) -> Option<Sources> {
    let object = Object::open(sink, value, *path, SOURCES_FIELDS)?;
    let cidrs_path = object.path_of("cidrs");
    let cidrs = object.required(sink, "cidrs").and_then(|v| {
        read_cidrs(sink, v, &cidrs_path, "a source group needs at least one CIDR (use 0.0.0.0/0 for every source)")
    })?;
    Some(Sources { cidrs })
}

/// A non-empty list of CIDRs; `empty_hint` tells the operator what to write instead.
pub(crate) fn read_cidrs(
    sink: &mut ErrorSink,
    value: &Value,
    path: &Path<'_>,
    empty_hint: &str,
) -> Option<Vec<Ipv4Cidr>> {
    let items = json::bounded_array(sink, value, path, MAX_LIST_ENTRIES, Some(empty_hint))?;
    let mut cidrs = Some(Vec::with_capacity(items.len()));
    for (i, item) in items.iter().enumerate() {
        let item_path = path.index(i);
        let cidr = json::string(sink, item, &item_path).and_then(|text| match text.parse::<Ipv4Cidr>() {
            Ok(cidr) => Some(cidr),
            Err(e) => {
                sink.push(item_path, e.0);
                None
            }
        });
        match (cidr, cidrs.as_mut()) {
            (Some(cidr), Some(list)) => list.push(cidr),
            _ => cidrs = None,
        }
    }
    cidrs
}

/// A group or rule id: what operators, logs and the API use to name it.
pub(crate) fn read_id(sink: &mut ErrorSink, value: &Value, path: &Path<'_>) -> Option<String> {
    let id = json::string(sink, value, path)?;
    if id.is_empty() {
        sink.push(path, "must not be empty");
        return None;
    }
    if id.chars().count() > MAX_ID_LEN {
        sink.push(path, format!("is {} characters long; at most {MAX_ID_LEN} are allowed", id.chars().count()));
        return None;
    }
    if let Some(bad) = id.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))) {
        sink.push(path, format!("`{id}` contains `{bad}`; ids may only use letters, digits, `_`, `.` and `-`"));
        return None;
    }
    Some(id.to_string())
}
