//! Turning answers into what the operator reads: plain text by default, the API's JSON
//! with `--json`, and one error form (`error: <code>: <message>`, field paths below it).

use std::fmt::Write as _;

use serde_json::Value;

use super::Answer;
use crate::exit::{Exit, Failure};

/// The failure for an answer that is not a success. `policy_errors_exit` is used for a 400
/// about the document itself (`invalid_policy`, `invalid_json`), so `policy put` and
/// `validate` exit 1 like the offline check.
pub fn refusal(answer: &Answer, policy_errors_exit: Option<Exit>) -> Failure {
    let body = answer.json();
    let error = &body["error"];
    let code = error["code"].as_str().unwrap_or("");
    let message = error["message"].as_str().map_or_else(|| answer.body.trim().to_owned(), str::to_owned);
    let mut text = if code.is_empty() {
        format!("the node answered {}: {message}", answer.status)
    } else {
        format!("{code}: {message}")
    };
    if let Some(fields) = error["fields"].as_array() {
        for field in fields {
            let path = field["path"].as_str().unwrap_or("");
            let problem = field["message"].as_str().unwrap_or("");
            let _ = write!(text, "\n  {}: {problem}", if path.is_empty() { "(document)" } else { path });
        }
    }
    let exit = match (answer.status, code) {
        (401 | 403, _) => Exit::Unauthorized,
        (400, "invalid_policy" | "invalid_json") => policy_errors_exit.unwrap_or(Exit::Refused),
        _ => Exit::Refused,
    };
    // A refused document is reported like the offline check: one `path: message` per line.
    if exit == Exit::PolicyRejected {
        if let Some(fields) = error["fields"].as_array().filter(|f| !f.is_empty()) {
            let lines: Vec<String> = fields
                .iter()
                .map(|f| format!("{}: {}", f["path"].as_str().unwrap_or(""), f["message"].as_str().unwrap_or("")))
                .collect();
            return Failure::new(exit, lines.join("\n"));
        }
    }
    if exit == Exit::Unauthorized && code == "missing_token" {
        text.push_str("\n  give a token with --token, --token-file or SLUICE_TOKEN (mint one as root on the node: sluice token mint)");
    }
    Failure::new(exit, text)
}

pub fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

fn or_dash(value: &Value) -> String {
    match value {
        Value::Null => "-".into(),
        Value::String(s) if s.is_empty() => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Milliseconds since the epoch as `YYYY-MM-DD HH:MM:SS` UTC.
pub fn timestamp(ms: &Value) -> String {
    let Some(ms) = ms.as_u64() else { return "-".into() };
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's method).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn duration(ms: &Value) -> String {
    let Some(ms) = ms.as_u64() else { return "-".into() };
    let s = ms / 1000;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// `sluice status`: readiness with each check, then the node's store, policy and traffic.
pub fn status(ready: &Value, stats: Option<&Value>) -> String {
    let mut out = String::new();
    let state = if ready["ready"].as_bool() == Some(true) { "ready" } else { "NOT READY" };
    let _ = writeln!(out, "node: {state}");
    if let Some(checks) = ready["checks"].as_object() {
        for (name, check) in checks {
            let ok = if check["ok"].as_bool() == Some(true) { "ok" } else { "FAIL" };
            let _ = writeln!(out, "  {name:<20} {ok:<4}  {}", or_dash(&check["detail"]));
        }
    }
    let Some(stats) = stats else { return out.trim_end().to_owned() };
    let _ = writeln!(out, "release: {}   uptime: {}", or_dash(&stats["release"]), duration(&stats["uptime_ms"]));
    let policy = &stats["policy"];
    let _ = writeln!(
        out,
        "policy: version {} active, version {} applied in the dataplane",
        or_dash(&policy["active_version"]),
        or_dash(&policy["applied_version"])
    );
    let store = &stats["store"];
    let _ = writeln!(
        out,
        "store: applied index {}, state hash {}, schema {}",
        or_dash(&store["applied_index"]),
        or_dash(&store["state_hash"]),
        or_dash(&store["schema_version"])
    );
    let counters = &stats["node"]["counters"];
    let pick = |name: &str| counters[name].as_u64().map_or_else(|| "-".to_owned(), |v| v.to_string());
    if counters.is_object() {
        let _ = writeln!(
            out,
            "traffic: {} packets in, {} out; {} allowed, {} denied by policy; {} flows active",
            pick("rx_packets"),
            pick("tx_packets"),
            pick("policy_allowed"),
            pick("policy_denied"),
            pick("flows_active")
        );
    }
    out.trim_end().to_owned()
}

/// `sluice policy versions`: one line per stored version, newest first.
pub fn versions(body: &Value) -> String {
    let mut out = format!("{:<8} {:<6} {:<19} {:<28} COMMENT\n", "VERSION", "ACTIVE", "CREATED (UTC)", "BY");
    let mut rows: Vec<&Value> = body["versions"].as_array().map(|v| v.iter().collect()).unwrap_or_default();
    rows.sort_by_key(|v| std::cmp::Reverse(v["version"].as_u64()));
    for v in rows {
        let active = if v["active"].as_bool() == Some(true) { "*" } else { "" };
        let _ = writeln!(
            out,
            "{:<8} {active:<6} {:<19} {:<28} {}",
            or_dash(&v["version"]),
            timestamp(&v["created_at_ms"]),
            or_dash(&v["created_by"]),
            v["comment"].as_str().unwrap_or("")
        );
    }
    out.trim_end().to_owned()
}

/// `sluice token list`: one line per token; never a secret (the API has none to give).
pub fn tokens(body: &Value) -> String {
    let mut out =
        format!("{:<24} {:<9} {:<19} {:<19} {:<28} LABEL\n", "ID", "ROLE", "CREATED (UTC)", "EXPIRES (UTC)", "BY");
    for t in body["tokens"].as_array().into_iter().flatten() {
        let expires = if t["expired"].as_bool() == Some(true) {
            "expired".to_owned()
        } else if t["expires_at_ms"].is_null() {
            "never".to_owned()
        } else {
            timestamp(&t["expires_at_ms"])
        };
        let _ = writeln!(
            out,
            "{:<24} {:<9} {:<19} {expires:<19} {:<28} {}",
            or_dash(&t["id"]),
            or_dash(&t["role"]),
            timestamp(&t["created_at_ms"]),
            or_dash(&t["created_by"]),
            t["label"].as_str().unwrap_or("")
        );
    }
    out.trim_end().to_owned()
}

/// `sluice settings`: the values, their ranges, and what a change dropped.
pub fn settings(body: &Value) -> String {
    let limits = &body["limits"];
    let mut out = format!(
        "policy_history_limit {}   (versions kept; {}..={})\naudit_log_limit      {}   (entries kept; {}..={})",
        or_dash(&body["policy_history_limit"]),
        or_dash(&limits["policy_history_limit_min"]),
        or_dash(&limits["policy_history_limit_max"]),
        or_dash(&body["audit_log_limit"]),
        or_dash(&limits["audit_log_limit_min"]),
        or_dash(&limits["audit_log_limit_max"]),
    );
    if let Some(evicted) = body["evicted_versions"].as_array().filter(|e| !e.is_empty()) {
        let list: Vec<String> = evicted.iter().map(or_dash).collect();
        let _ = write!(out, "\ndropped policy versions: {}", list.join(", "));
    }
    out
}

/// `sluice audit`: one line per change, newest first, and how to get the next page.
pub fn audit(body: &Value) -> String {
    let mut out = format!("{:<8} {:<19} {:<28} ACTION\n", "INDEX", "AT (UTC)", "BY");
    let entries = body["entries"].as_array().map(Vec::as_slice).unwrap_or_default();
    for e in entries {
        let _ = writeln!(
            out,
            "{:<8} {:<19} {:<28} {}",
            or_dash(&e["index"]),
            timestamp(&e["at_ms"]),
            or_dash(&e["actor"]),
            e["action"].as_str().unwrap_or("")
        );
    }
    if let (true, Some(last)) = (body["truncated"].as_bool() == Some(true), entries.last()) {
        let _ = write!(out, "(older entries: --before {})", or_dash(&last["index"]));
    }
    out.trim_end().to_owned()
}

/// `sluice policy explain` against a node, in the offline command's layout.
pub fn explanation(body: &Value, hostname: Option<&str>) -> String {
    let mut out = String::new();
    let audit = if body["audit_would_deny"].as_bool() == Some(true) { " (audit: policy would deny)" } else { "" };
    let _ = writeln!(out, "version: {}", or_dash(&body["version"]));
    let _ = writeln!(out, "verdict: {}{audit}", or_dash(&body["action"]));
    let group = body["group"].as_str().unwrap_or("(document default)");
    let _ = writeln!(out, "group: {group}");
    let _ = writeln!(out, "rule: {}", body["rule"].as_str().unwrap_or("(none)"));
    let candidates: Vec<&str> =
        body["candidate_groups"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    let candidates = if candidates.is_empty() { "(none)".to_owned() } else { candidates.join(", ") };
    let _ = writeln!(out, "candidate groups: {candidates}");
    if let (Some(name), dns) = (hostname, &body["dns"]) {
        if dns.is_object() {
            let verdict = if dns["allowed"].as_bool() == Some(true) { "forwarded" } else { "refused" };
            let _ = writeln!(out, "dns {name}: {verdict}, learned for {} rule(s)", or_dash(&dns["learned_for_rules"]));
        }
    }
    let _ = write!(out, "why: {}", or_dash(&body["description"]));
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn settings_and_audit_pages_read_as_tables() {
        let body = json!({"policy_history_limit": 2, "audit_log_limit": 1000, "evicted_versions": [1, 3],
            "limits": {"policy_history_limit_min": 1, "policy_history_limit_max": 10000,
                       "audit_log_limit_min": 10, "audit_log_limit_max": 100000}});
        let text = settings(&body);
        assert!(text.starts_with("policy_history_limit 2   (versions kept; 1..=10000)"), "{text}");
        assert!(text.ends_with("dropped policy versions: 1, 3"), "{text}");
        let page = json!({"truncated": true, "entries": [
            {"index": 9, "at_ms": 0, "actor": "token:ops", "action": "policy.put version=3 sha256=ab"},
            {"index": 7, "at_ms": 0, "actor": "bootstrap", "action": "policy.put version=1 sha256=cd"}]});
        let text = audit(&page);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[1].starts_with("9        1970-01-01 00:00:00 token:ops"), "{text}");
        assert_eq!(lines.last(), Some(&"(older entries: --before 7)"));
        assert!(!audit(&json!({"truncated": false, "entries": []})).contains("older"));
    }

    #[test]
    fn timestamps_are_utc_calendar_dates() {
        assert_eq!(timestamp(&json!(0)), "1970-01-01 00:00:00");
        assert_eq!(timestamp(&json!(951_782_400_000u64)), "2000-02-29 00:00:00");
        assert_eq!(timestamp(&json!(1_796_428_800_000u64 + 3_723_000)), "2026-12-05 01:02:03");
        assert_eq!(timestamp(&Value::Null), "-");
    }

    #[test]
    fn refusals_map_to_exit_codes_and_list_field_paths() {
        let answer = |status, body: Value| Answer { status, body: body.to_string() };
        let invalid = answer(
            400,
            json!({"error": {"code": "invalid_policy", "message": "1 error", "fields": [
                {"path": "source_groups[0].rules[0].match.dst_ports[0]", "message": "port 0 is not a port"}]}}),
        );
        let f = refusal(&invalid, Some(Exit::PolicyRejected));
        assert_eq!(f.exit, Exit::PolicyRejected);
        assert_eq!(f.message, "source_groups[0].rules[0].match.dst_ports[0]: port 0 is not a port");
        let f = refusal(&invalid, None);
        assert_eq!(f.exit, Exit::Refused);
        assert!(f.message.contains("invalid_policy: 1 error\n  source_groups[0].rules[0].match.dst_ports[0]: port 0"));
        let forbidden = answer(403, json!({"error": {"code": "forbidden", "message": "needs role admin"}}));
        assert_eq!(refusal(&forbidden, None).exit, Exit::Unauthorized);
        let missing = answer(401, json!({"error": {"code": "missing_token", "message": "m"}}));
        assert!(refusal(&missing, None).message.contains("--token"));
        let not_json = answer(502, Value::Null);
        assert_eq!(
            refusal(&Answer { status: 502, body: "bad gateway".into() }, None).message,
            "the node answered 502: bad gateway"
        );
        assert_eq!(refusal(&not_json, None).exit, Exit::Refused);
    }
}
