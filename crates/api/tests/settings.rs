//! Settings, the audit log and the single-node cluster view over real HTTPS against the real
//! store: the history bound an operator sets takes effect at once (never dropping the active
//! version), refused changes are never proposed, every change is in the audit log with who
//! made it, newest first, and a node without cluster flags refuses membership changes.

mod common;

use common::{error_code, TestNode, POLICY_V1, POLICY_V2};
use hyper::{Method, StatusCode};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_history_bound_is_set_through_the_api_and_keeps_the_active_version() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path()).await;
    let (status, settings) = node.get("/api/v1/settings", &node.readonly).await;
    assert_eq!(status, StatusCode::OK, "{settings}");
    assert_eq!(
        (settings["policy_history_limit"].as_u64(), settings["audit_log_limit"].as_u64()),
        (Some(50), Some(1000))
    );
    assert_eq!(settings["limits"]["policy_history_limit_max"].as_u64(), Some(10_000), "{settings}");

    // Four versions, the second one active.
    for document in [POLICY_V1, POLICY_V2, POLICY_V1, POLICY_V2] {
        let (status, body) = node.send(Method::PUT, "/api/v1/policy", &node.admin, document).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (status, body) = node.send(Method::POST, "/api/v1/policy/rollback", &node.admin, r#"{"version":2}"#).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Refusals: the role, an empty change, out-of-range values (every one named), an unknown
    // field; none of them reaches the store.
    let index_before = node.store.status().applied_index;
    let (status, body) =
        node.send(Method::PUT, "/api/v1/settings", &node.readonly, r#"{"policy_history_limit":2}"#).await;
    assert_eq!((status, error_code(&body)), (StatusCode::FORBIDDEN, "forbidden"));
    let (status, body) = node.send(Method::PUT, "/api/v1/settings", &node.admin, "{}").await;
    assert_eq!((status, error_code(&body)), (StatusCode::BAD_REQUEST, "invalid_field"), "{body}");
    let (status, body) = node
        .send(Method::PUT, "/api/v1/settings", &node.admin, r#"{"policy_history_limit":0,"audit_log_limit":5}"#)
        .await;
    assert_eq!((status, error_code(&body)), (StatusCode::BAD_REQUEST, "invalid_field"), "{body}");
    let paths: Vec<&str> =
        body["error"]["fields"].as_array().unwrap().iter().map(|f| f["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["policy_history_limit", "audit_log_limit"], "{body}");
    let (status, body) = node.send(Method::PUT, "/api/v1/settings", &node.admin, r#"{"history":2}"#).await;
    assert_eq!((status, error_code(&body)), (StatusCode::BAD_REQUEST, "invalid_json"), "{body}");
    assert_eq!(node.store.status().applied_index, index_before, "no refused change was proposed");

    // Two versions kept: the newest and the active one; the others go at once.
    let (status, changed) =
        node.send(Method::PUT, "/api/v1/settings", &node.admin, r#"{"policy_history_limit":2}"#).await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    assert_eq!(changed["policy_history_limit"].as_u64(), Some(2));
    assert_eq!(changed["audit_log_limit"].as_u64(), Some(1000), "unchanged when absent");
    assert_eq!(changed["evicted_versions"], serde_json::json!([1, 3]), "{changed}");
    let (_, versions) = node.get("/api/v1/policy/versions", &node.readonly).await;
    let kept: Vec<u64> =
        versions["versions"].as_array().unwrap().iter().map(|v| v["version"].as_u64().unwrap()).collect();
    assert_eq!((kept, versions["active"].as_u64()), (vec![2, 4], Some(2)), "{versions}");
    let (status, body) = node.get("/api/v1/policy/versions/1", &node.readonly).await;
    assert_eq!((status, error_code(&body)), (StatusCode::NOT_FOUND, "unknown_policy_version"));

    // The next write keeps the bound.
    let (status, body) = node.send(Method::PUT, "/api/v1/policy", &node.admin, POLICY_V1).await;
    assert_eq!((status, body["version"].as_u64()), (StatusCode::OK, Some(5)), "{body}");
    let (_, versions) = node.get("/api/v1/policy/versions", &node.readonly).await;
    assert_eq!(versions["versions"].as_array().unwrap().len(), 2, "{versions}");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_names_who_changed_what_newest_first_and_pages() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path()).await;
    for document in [POLICY_V1, POLICY_V2, POLICY_V1] {
        let (status, _) = node.send(Method::PUT, "/api/v1/policy", &node.admin, document).await;
        assert_eq!(status, StatusCode::OK);
    }
    let (status, _) = node.send(Method::PUT, "/api/v1/settings", &node.admin, r#"{"audit_log_limit":500}"#).await;
    assert_eq!(status, StatusCode::OK);

    let (status, page) = node.get("/api/v1/audit?limit=2", &node.readonly).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let entries = page["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0]["action"], "settings.update audit_log_limit=500", "{page}");
    assert!(entries[1]["action"].as_str().unwrap().starts_with("policy.put version=3 "), "{page}");
    for entry in entries {
        assert!(entry["actor"].as_str().unwrap().starts_with("token:"), "{entry}");
        assert!(entry["at_ms"].as_u64().unwrap() > 1_700_000_000_000, "{entry}");
    }
    assert_eq!(page["truncated"], true, "older entries exist");

    // The next page starts below the last index seen, and the whole log ends untruncated.
    let last = entries[1]["index"].as_u64().unwrap();
    let (_, older) = node.get(&format!("/api/v1/audit?before={last}&limit=1000"), &node.readonly).await;
    let older = older["entries"].as_array().unwrap().clone();
    assert!(older.iter().all(|e| e["index"].as_u64().unwrap() < last), "{older:?}");
    let indexes: Vec<u64> = older.iter().map(|e| e["index"].as_u64().unwrap()).collect();
    assert!(indexes.windows(2).all(|w| w[0] > w[1]), "newest first: {indexes:?}");
    assert!(older.iter().any(|e| e["action"].as_str().unwrap().starts_with("policy.put version=1 ")), "{older:?}");

    for bad in ["/api/v1/audit?limit=0", "/api/v1/audit?limit=1001", "/api/v1/audit?limit=x", "/api/v1/audit?since=1"] {
        let (status, body) = node.get(bad, &node.readonly).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
    }
    let (status, _) = node.client.json(Method::GET, "/api/v1/audit", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_node_shows_itself_as_the_cluster_and_refuses_membership_changes() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path()).await;
    let (status, cluster) = node.get("/api/v1/cluster", &node.readonly).await;
    assert_eq!(status, StatusCode::OK, "{cluster}");
    assert_eq!(cluster["mode"], "single");
    let members = cluster["members"].as_array().unwrap();
    assert_eq!(members.len(), 1);
    assert_eq!((members[0]["leader"].as_bool(), members[0]["lag"].as_u64()), (Some(true), Some(0)));
    assert_eq!(members[0]["state_hash"].as_str().map(str::len), Some(64));
    for (path, body) in [("/api/v1/cluster/members/1/remove", "{}"), ("/api/v1/cluster/leader/transfer", "{}")] {
        let (status, answer) = node.send(Method::POST, path, &node.readonly, body).await;
        assert_eq!((status, error_code(&answer)), (StatusCode::FORBIDDEN, "forbidden"), "{path}");
        let (status, answer) = node.send(Method::POST, path, &node.admin, body).await;
        assert_eq!((status, error_code(&answer)), (StatusCode::CONFLICT, "not_clustered"), "{path}: {answer}");
    }
    let (status, answer) =
        node.send(Method::POST, "/api/v1/cluster/leader/transfer", &node.admin, r#"{"to":"x"}"#).await;
    assert_eq!((status, error_code(&answer)), (StatusCode::BAD_REQUEST, "invalid_json"), "{answer}");
    node.stop().await;
}
