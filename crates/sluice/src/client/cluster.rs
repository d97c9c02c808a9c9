//! `sluice cluster status|members|remove|transfer-leader`.

use std::fmt::Write as _;

use serde_json::{json, Value};

use super::commands::{call, Output};
use super::endpoint::Endpoint;
use super::render;
use crate::cli::ClusterCommand;
use crate::exit::{Exit, Failure};

pub fn cluster(command: &ClusterCommand) -> Output {
    match command {
        ClusterCommand::Status { target } => {
            let endpoint = Endpoint::from_target(target)?;
            let body = call(&endpoint, "GET", "/api/v1/cluster", None, None)?;
            if target.json {
                return Ok(render::pretty(&body));
            }
            let text = status(&body);
            let healthy = body["members"]
                .as_array()
                .is_some_and(|m| m.iter().all(|m| m["ready"] != false && m["lag"].as_u64().unwrap_or(0) == 0));
            if body["leader"].is_null() || !healthy {
                return Err(Failure::new(Exit::Refused, text));
            }
            Ok(text)
        }
        ClusterCommand::Members { target } => {
            let endpoint = Endpoint::from_target(target)?;
            let body = call(&endpoint, "GET", "/api/v1/cluster", None, None)?;
            Ok(if target.json { render::pretty(&body) } else { members(&body) })
        }
        ClusterCommand::Remove { id, force, target } => {
            let endpoint = Endpoint::from_target(target)?;
            let path = format!("/api/v1/cluster/members/{id}/remove");
            let body = call(&endpoint, "POST", &path, Some(json!({ "force": force }).to_string()), None)?;
            Ok(if target.json {
                render::pretty(&body)
            } else {
                format!("node {id} removed; voters now {}", body["voters"])
            })
        }
        ClusterCommand::TransferLeader { to, target } => {
            let endpoint = Endpoint::from_target(target)?;
            let body = call(
                &endpoint,
                "POST",
                "/api/v1/cluster/leader/transfer",
                Some(json!({ "to": to }).to_string()),
                None,
            )?;
            Ok(if target.json { render::pretty(&body) } else { format!("node {} leads", body["leader"]) })
        }
    }
}

fn dash(value: &Value) -> String {
    match value {
        Value::Null => "-".into(),
        Value::String(s) if s.is_empty() => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Summary: mode, id, leader and term, then the member table.
pub fn status(body: &Value) -> String {
    let mut out = format!(
        "cluster {} ({}), asked node {}: leader {}, term {}\n",
        dash(&body["cluster_id"]),
        dash(&body["mode"]),
        dash(&body["node_id"]),
        dash(&body["leader"]),
        dash(&body["term"])
    );
    out.push_str(&members(body));
    out
}

pub fn members(body: &Value) -> String {
    let mut out = format!(
        "{:<18} {:<8} {:<22} {:<22} {:<9} {:>8} {:>5} {:<16} {:>9} {:<5}\n",
        "ID", "ROLE", "CLUSTER ADDRESS", "API", "RELEASE", "APPLIED", "LAG", "STATE HASH", "CONTACT", "READY"
    );
    for m in body["members"].as_array().into_iter().flatten() {
        let role = if m["leader"] == true { "leader".to_owned() } else { dash(&m["role"]) };
        let hash: String = dash(&m["state_hash"]).chars().take(16).collect();
        let contact = m["last_contact_ms"].as_u64().map_or_else(|| "never".to_owned(), |ms| format!("{ms}ms"));
        let ready = match m["ready"].as_bool() {
            Some(true) => "yes",
            Some(false) => "NO",
            None => "-",
        };
        let _ = writeln!(
            out,
            "{:<18} {:<8} {:<22} {:<22} {:<9} {:>8} {:>5} {:<16} {:>9} {:<5}{}",
            dash(&m["id"]),
            role,
            dash(&m["cluster_address"]),
            dash(&m["api_address"]),
            dash(&m["release"]),
            dash(&m["applied_index"]),
            dash(&m["lag"]),
            hash,
            contact,
            ready,
            m["error"].as_str().map(|e| format!("  ({e})")).unwrap_or_default()
        );
    }
    out.trim_end().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_member_table_marks_the_leader_and_unreachable_members() {
        let body = json!({"mode": "cluster", "cluster_id": "c1", "node_id": 1, "leader": 1, "term": 3, "members": [
            {"id": 1, "role": "voter", "leader": true, "cluster_address": "10.0.0.1:9600", "api_address": "10.0.0.1:8443",
             "release": "0.1.0", "applied_index": 9, "lag": 0, "state_hash": "abcdef0123456789ffff", "last_contact_ms": 0, "ready": true},
            {"id": 2, "role": "voter", "leader": false, "cluster_address": "10.0.0.2:9600", "last_contact_ms": null,
             "error": "connection refused"}]});
        let text = status(&body);
        assert!(text.starts_with("cluster c1 (cluster), asked node 1: leader 1, term 3"), "{text}");
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[2].contains("leader") && lines[2].contains("abcdef0123456789 "), "{text}");
        assert!(lines[3].contains("never") && lines[3].ends_with("(connection refused)"), "{text}");
    }
}
