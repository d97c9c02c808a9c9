//! `sluice policy validate` and `sluice policy explain`: offline tools on a policy file.

use std::fmt::Write as _;
use std::path::Path;

use sluice_policy::{Action, CompiledPolicy, ExplainQuery, PolicyErrors};

use crate::cli::ExplainArgs;
use crate::exit::{Exit, Failure};

/// What a policy command prints on success, or its failure.
pub type Output = Result<String, Failure>;

fn read(path: &Path) -> Result<String, Failure> {
    std::fs::read_to_string(path)
        .map_err(|e| Failure::new(Exit::PolicyRejected, format!("cannot read policy file {}: {e}", path.display())))
}

fn rejected(errors: &PolicyErrors) -> Failure {
    Failure::new(Exit::PolicyRejected, errors.to_string())
}

fn compile(path: &Path) -> Result<CompiledPolicy, Failure> {
    sluice_policy::compile_json(&read(path)?).map_err(|e| rejected(&e))
}

/// `OK: ...` with counts, or every error as `path: message`, one per line.
pub fn validate(path: &Path) -> Output {
    let policy = compile(path)?;
    Ok(format!(
        "OK: {} source groups, {} rules ({} hostname rules)",
        policy.group_count(),
        policy.rule_count(),
        policy.hostname_rule_count()
    ))
}

fn action(a: Action) -> &'static str {
    match a {
        Action::Allow => "allow",
        Action::Deny => "deny",
    }
}

pub fn explain(file: &Path, args: &ExplainArgs) -> Output {
    let policy = compile(file)?;
    let query = ExplainQuery {
        src: args.src,
        dst: args.dst,
        proto: args.proto,
        dst_port: args.port,
        icmp_type: args.icmp_type,
        hostname: args.hostname.clone(),
    };
    let e = policy.explain(&query);
    let mut out = String::new();
    let audit = if e.audit_would_deny { " (audit: policy would deny)" } else { "" };
    let _ = writeln!(out, "verdict: {}{audit}", action(e.verdict.action));
    let _ = writeln!(out, "group: {}", e.group.as_deref().unwrap_or("(document default)"));
    let _ = writeln!(out, "rule: {}", e.rule.as_deref().unwrap_or("(none)"));
    let candidates = if e.candidate_groups.is_empty() { "(none)".to_string() } else { e.candidate_groups.join(", ") };
    let _ = writeln!(out, "candidate groups: {candidates}");
    if let (Some(dns), Some(name)) = (&e.dns, &args.hostname) {
        let verdict = if dns.allowed { "forwarded" } else { "refused" };
        let _ = writeln!(out, "dns {name}: {verdict}, learned for {} rule(s)", dns.learn_for.len());
    }
    let _ = write!(out, "why: {}", e.description);
    Ok(out)
}
