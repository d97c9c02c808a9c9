//! One source group in compiled form: for each protocol class, the port (or ICMP type)
//! space split into intervals that list only the rules able to match there.

use super::intervals::{partition, Cover, ListStore, Span};
use crate::cidr::merge_blocks;
use crate::decision::{Action, RuleKey, PROTO_ICMP, PROTO_TCP, PROTO_UDP};
use crate::model::{Protocol, Rule, SourceGroup};

/// Protocols are indexed separately because a rule's port list means nothing for another
/// protocol; "other" covers every protocol number without ports or types (GRE, ESP, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProtoClass {
    Tcp = 0,
    Udp = 1,
    Icmp = 2,
    Other = 3,
}

const CLASS_COUNT: usize = 4;
const ALL_CLASSES: [ProtoClass; CLASS_COUNT] = [ProtoClass::Tcp, ProtoClass::Udp, ProtoClass::Icmp, ProtoClass::Other];
/// Ports and ICMP types both fit in this key space; ICMP only uses 0..=255 of it.
const KEY_MAX: u64 = u16::MAX as u64;

impl ProtoClass {
    /// The class of a packet and the key it is looked up by in that class.
    #[inline]
    pub(crate) fn of_packet(proto: u8, dst_port: u16, icmp_type: u8) -> (ProtoClass, u16) {
        match proto {
            PROTO_TCP => (ProtoClass::Tcp, dst_port),
            PROTO_UDP => (ProtoClass::Udp, dst_port),
            PROTO_ICMP => (ProtoClass::Icmp, u16::from(icmp_type)),
            _ => (ProtoClass::Other, 0),
        }
    }

    fn of_rule(proto: Protocol) -> &'static [ProtoClass] {
        match proto {
            Protocol::Tcp => &[ProtoClass::Tcp],
            Protocol::Udp => &[ProtoClass::Udp],
            Protocol::Icmp => &[ProtoClass::Icmp],
            Protocol::Any => &ALL_CLASSES,
        }
    }
}

/// Which destinations a rule accepts.
#[derive(Debug)]
pub(crate) enum Target {
    Anywhere,
    /// Sorted, disjoint inclusive address ranges.
    Addresses(Box<[(u32, u32)]>),
    /// Addresses the dataplane learned from DNS answers for this hostname rule.
    Learned(RuleKey),
}

impl Target {
    #[inline]
    pub(crate) fn contains_address(ranges: &[(u32, u32)], dst: u32) -> bool {
        let after = ranges.partition_point(|&(first, _)| first <= dst);
        after > 0 && dst <= ranges[after - 1].1
    }
}

#[derive(Debug)]
pub(crate) struct CompiledRule {
    pub action: Action,
    pub target: Target,
}

impl CompiledRule {
    /// Set for hostname rules only.
    pub(crate) fn key(&self) -> Option<RuleKey> {
        match self.target {
            Target::Learned(key) => Some(key),
            _ => None,
        }
    }
}

/// Per class: interval starts and, for each, the rules that can match there.
#[derive(Debug)]
struct KeyIndex {
    starts: Box<[u16]>,
    spans: Box<[Span]>,
}

#[derive(Debug)]
pub(crate) struct CompiledGroup {
    pub audit: bool,
    pub default_action: Option<Action>,
    pub rules: Box<[CompiledRule]>,
    classes: [KeyIndex; CLASS_COUNT],
    /// Rule indices that the classes' spans point into.
    rule_lists: Box<[u16]>,
}

impl CompiledGroup {
    pub(crate) fn build(group_id: &str, group: &SourceGroup) -> Self {
        let rules: Box<[CompiledRule]> = group.rules.iter().map(|rule| compile_rule(group_id, rule)).collect();
        let mut store = ListStore::default();
        let classes = ALL_CLASSES.map(|class| build_class(class, &group.rules, &rules, &mut store));
        CompiledGroup {
            audit: group.is_audit(),
            default_action: group.default_action,
            rules,
            classes,
            rule_lists: store.finish(),
        }
    }

    /// The rules, in document order, whose protocol and port/type constraints accept `key`
    /// in `class`. The list stops at the first rule that accepts every destination, since
    /// no rule after it can ever be reached.
    #[inline]
    pub(crate) fn rules_for(&self, class: ProtoClass, key: u16) -> &[u16] {
        let index = &self.classes[class as usize];
        let interval = index.starts.partition_point(|&start| start <= key).saturating_sub(1);
        match index.spans.get(interval) {
            Some(span) => span.of(&self.rule_lists),
            None => &[],
        }
    }

    /// Intervals across all classes: a size measure for tests and diagnostics.
    pub(crate) fn interval_count(&self) -> usize {
        self.classes.iter().map(|c| c.starts.len()).sum()
    }
}

fn compile_rule(group_id: &str, rule: &Rule) -> CompiledRule {
    let matches = &rule.matches;
    let target = if rule.is_hostname_rule() {
        Target::Learned(RuleKey::for_rule(group_id, &rule.id, &matches.hostnames))
    } else if matches.dst_cidrs.is_empty() {
        Target::Anywhere
    } else {
        Target::Addresses(merge_blocks(&matches.dst_cidrs).into_boxed_slice())
    };
    CompiledRule { action: rule.action, target }
}

fn build_class(class: ProtoClass, rules: &[Rule], compiled: &[CompiledRule], store: &mut ListStore) -> KeyIndex {
    let mut covers = Vec::new();
    for (index, rule) in rules.iter().enumerate() {
        if !ProtoClass::of_rule(rule.matches.proto).contains(&class) {
            continue;
        }
        let item = index as u32;
        let matches = &rule.matches;
        let before = covers.len();
        // Validation guarantees ports only on tcp/udp rules and types only on icmp rules,
        // so whichever list is present is the key constraint for this class.
        for ports in &matches.dst_ports {
            covers.push(Cover { item, first: ports.first.into(), last: ports.last.into() });
        }
        for &icmp_type in &matches.icmp_types {
            covers.push(Cover { item, first: icmp_type.into(), last: icmp_type.into() });
        }
        if covers.len() == before {
            covers.push(Cover { item, first: 0, last: KEY_MAX });
        }
    }
    let reaches_everything = |item: u32| matches!(compiled[item as usize].target, Target::Anywhere);
    let intervals = partition(covers, KEY_MAX, |list| {
        if let Some(stop) = list.iter().position(|&item| reaches_everything(item)) {
            list.truncate(stop + 1);
        }
    });
    let mut starts = Vec::with_capacity(intervals.len());
    let mut spans = Vec::with_capacity(intervals.len());
    for (start, items) in intervals {
        let list: Vec<u16> = items.iter().map(|&item| item as u16).collect();
        // Keys are ports or types, so every interval start fits in u16.
        starts.push(start as u16);
        spans.push(store.intern(&list));
    }
    KeyIndex { starts: starts.into(), spans: spans.into() }
}
