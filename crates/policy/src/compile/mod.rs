//! Validated document → [`CompiledPolicy`], the immutable form the dataplane evaluates.

mod group;
mod intervals;
mod sources;

use std::collections::HashMap;

use crate::decision::{Action, Cause, RuleKey};
use crate::decode::{decode_document, parse_policy};
use crate::dns::HostnameIndex;
use crate::error::{ErrorSink, PolicyErrors};
use crate::model::PolicyDocument;
pub(crate) use group::{CompiledGroup, ProtoClass, Target};
use sources::SourceIndex;

/// Returned by the id accessors for indices this policy does not have: a [`Cause`] kept from
/// an older policy version may name a group or rule that no longer exists.
const UNKNOWN_ID: &str = "(unknown)";

/// A policy ready for evaluation. Immutable once built, so one instance is shared by all
/// workers behind an `Arc` and replaced whole on a policy change.
#[derive(Debug)]
pub struct CompiledPolicy {
    pub(crate) document: PolicyDocument,
    pub(crate) default_action: Action,
    pub(crate) sources: SourceIndex,
    /// In document order, so `Cause` indices are document indices.
    pub(crate) groups: Box<[CompiledGroup]>,
    pub(crate) hostnames: HostnameIndex,
    hostname_rule_count: usize,
    rule_count: usize,
}

/// Compiles a document. It is validated again first (a document can be built or edited in
/// code without going through [`parse_policy`]), so this never trusts its input.
pub fn compile(doc: &PolicyDocument) -> Result<CompiledPolicy, PolicyErrors> {
    // Validating through the JSON form reuses the one decoder and its field paths, and
    // yields the normalised document that the compiled policy keeps.
    let value = serde_json::to_value(doc)
        .map_err(|e| PolicyErrors::single("", format!("document cannot be represented as JSON: {e}")))?;
    let document = decode_document(&value)?;
    build(document)
}

/// [`parse_policy`] and [`compile`] in one step.
pub fn compile_json(json: &str) -> Result<CompiledPolicy, PolicyErrors> {
    build(parse_policy(json)?)
}

fn build(document: PolicyDocument) -> Result<CompiledPolicy, PolicyErrors> {
    let groups: Box<[CompiledGroup]> =
        document.source_groups.iter().map(|group| CompiledGroup::build(&group.id, group)).collect();
    check_keys_are_distinct(&groups)?;
    let sources = SourceIndex::build(&document.source_groups);
    let hostnames = HostnameIndex::build(&document.source_groups);
    let rule_count = document.source_groups.iter().map(|g| g.rules.len()).sum();
    let hostname_rule_count =
        document.source_groups.iter().flat_map(|g| &g.rules).filter(|r| r.is_hostname_rule()).count();
    Ok(CompiledPolicy {
        default_action: document.default_action,
        document,
        sources,
        groups,
        hostnames,
        hostname_rule_count,
        rule_count,
    })
}

/// Two hostname rules with one key would share learned addresses. With 64-bit keys this
/// needs a hash collision, but rejecting it costs one map and keeps the dataplane's
/// allowlist unambiguous by construction.
fn check_keys_are_distinct(groups: &[CompiledGroup]) -> Result<(), PolicyErrors> {
    let mut sink = ErrorSink::default();
    let mut seen: HashMap<RuleKey, (usize, usize)> = HashMap::new();
    for (g, group) in groups.iter().enumerate() {
        for (r, rule) in group.rules.iter().enumerate() {
            let Some(key) = rule.key() else { continue };
            if let Some(&(first_g, first_r)) = seen.get(&key) {
                sink.push(
                    format!("source_groups[{g}].rules[{r}]"),
                    format!(
                        "rule key {key} collides with source_groups[{first_g}].rules[{first_r}]; rename one of the rules"
                    ),
                );
            } else {
                seen.insert(key, (g, r));
            }
        }
    }
    sink.into_result(())
}

impl CompiledPolicy {
    /// The validated, normalised document this policy was compiled from.
    pub fn document(&self) -> &PolicyDocument {
        &self.document
    }

    /// Id of the group at `group` (document order), or `"(unknown)"`.
    pub fn group_id(&self, group: u16) -> &str {
        self.document.source_groups.get(usize::from(group)).map_or(UNKNOWN_ID, |g| g.id.as_str())
    }

    /// Id of rule `rule` of group `group` (document order), or `"(unknown)"`.
    pub fn rule_id(&self, group: u16, rule: u16) -> &str {
        self.document
            .source_groups
            .get(usize::from(group))
            .and_then(|g| g.rules.get(usize::from(rule)))
            .map_or(UNKNOWN_ID, |r| r.id.as_str())
    }

    /// A short human name for what decided: `rule apps/api`, `default of group apps`,
    /// `document default`.
    pub fn describe(&self, cause: Cause) -> String {
        match cause {
            Cause::Rule { group, rule } => format!("rule {}/{}", self.group_id(group), self.rule_id(group, rule)),
            Cause::GroupDefault { group } => format!("default of group {}", self.group_id(group)),
            Cause::DocumentDefault => "document default".to_string(),
        }
    }

    /// Every hostname rule as `(key, group id, rule id)`, in document order: how views of the
    /// dataplane's learned state (which knows only keys) name what they show.
    pub fn hostname_rules(&self) -> impl Iterator<Item = (RuleKey, &str, &str)> + '_ {
        self.groups.iter().zip(&self.document.source_groups).flat_map(|(group, doc)| {
            group
                .rules
                .iter()
                .zip(&doc.rules)
                .filter_map(|(rule, r)| rule.key().map(|k| (k, doc.id.as_str(), r.id.as_str())))
        })
    }

    pub fn hostname_rule_count(&self) -> usize {
        self.hostname_rule_count
    }

    pub fn rule_count(&self) -> usize {
        self.rule_count
    }

    pub fn group_count(&self) -> usize {
        self.groups.len()
    }

    /// Number of intervals in the source index and in all groups' port indexes: how much the
    /// document's boundaries fragmented the key spaces (for diagnostics and tests).
    pub fn index_size(&self) -> IndexSize {
        IndexSize {
            source_intervals: self.sources.interval_count(),
            port_intervals: self.groups.iter().map(|g| g.interval_count()).sum(),
        }
    }
}

/// See [`CompiledPolicy::index_size`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexSize {
    pub source_intervals: usize,
    pub port_intervals: usize,
}
