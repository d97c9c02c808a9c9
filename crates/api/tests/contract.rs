//! Contract tests: every route over real HTTPS against the real store, success shapes and the
//! bad-input rows of design §10.

mod common;

use common::{error_code, TestNode, POLICY_V1, POLICY_V2};
use hyper::{Method, StatusCode};
use serde_json::Value;
use sluice_api::ListingError;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_routes_answer_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path()).await;
    let (status, body) = node.client.json(Method::GET, "/health", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "ok");

    // No policy stored: the policy check passes (the dataplane denies all, as the store says).
    let (status, body) = node.client.json(Method::GET, "/ready", None, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for check in ["dataplane", "dns", "policy", "store", "draining"] {
        assert_eq!(body["checks"][check]["ok"], true, "{check}: {body}");
        assert!(body["checks"][check]["detail"].as_str().is_some_and(|d| !d.is_empty()), "{check}");
    }

    let answer = node.client.request(Method::GET, "/metrics", None, None).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(answer.headers["content-type"].to_str().unwrap().starts_with("text/plain"));
    let text = String::from_utf8(answer.body).unwrap();
    for line in [
        "sluice_up 1",
        "sluice_ready{check=\"store\"} 1",
        "sluice_dataplane_events_total{counter=\"policy_denied\"} 3",
        "sluice_dns_events_total{counter=\"queries\"} 5",
        "sluice_port_events_total{port=\"internal\",counter=\"rx_packets\"} 10",
        "sluice_node_gauge{name=\"flows\"} 6",
        "sluice_policy_active_version 0",
        "sluice_store_leader 1",
        "sluice_api_tokens{role=\"admin\"} 1",
        "sluice_api_tokens{role=\"readonly\"} 1",
        "sluice_http_requests_total{route=\"/health\",method=\"GET\",status=\"200\"} 1",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
    }

    let (status, body) = node.client.json(Method::GET, "/api/v1/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body["openapi"].as_str().unwrap().starts_with("3."));

    let (status, body) = node.client.json(Method::GET, "/api/v1/nothing-here", None, None).await;
    assert_eq!((status, error_code(&body)), (StatusCode::NOT_FOUND, "not_found"));
    let (status, body) = node.client.json(Method::DELETE, "/health", None, None).await;
    assert_eq!((status, error_code(&body)), (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"));
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_checked_missing_invalid_expired_and_by_role() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path()).await;
    // Three seconds, checked at once: TLS handshakes in a debug build on a loaded machine
    // can take a good part of a second each.
    let expiring = common::mint(&node.store, sluice_store::state::Role::Admin, "brief", Some(3)).await;
    let (status, _) = node.get("/api/v1/policy/versions", &expiring).await;
    assert_eq!(status, StatusCode::OK, "valid before expiry");

    let answer = node.client.request(Method::GET, "/api/v1/policy/versions", None, None).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.headers["www-authenticate"], "Bearer");
    let body: Value = serde_json::from_slice(&answer.body).unwrap();
    assert_eq!(error_code(&body), "missing_token");
    assert!(body["error"]["message"].as_str().unwrap().contains("Bearer"));

    let (status, body) = node.get("/api/v1/policy/versions", "sluice_not-a-token").await;
    assert_eq!((status, error_code(&body)), (StatusCode::UNAUTHORIZED, "invalid_token"));

    tokio::time::sleep(std::time::Duration::from_millis(3100)).await;
    let (status, body) = node.get("/api/v1/policy/versions", &expiring).await;
    assert_eq!((status, error_code(&body)), (StatusCode::UNAUTHORIZED, "token_expired"));
    // An expired token cannot write either, and a 401 comes before the body is looked at.
    let (status, body) = node.send(Method::PUT, "/api/v1/policy", &expiring, POLICY_V1).await;
    assert_eq!((status, error_code(&body)), (StatusCode::UNAUTHORIZED, "token_expired"));

    // Readonly may read everything and write nothing; nothing changes.
    let index_before = node.store.status().applied_index;
    let writes: [(Method, &str, &str); 10] = [
        (Method::PUT, "/api/v1/policy", POLICY_V1),
        (Method::POST, "/api/v1/upgrade", r#"{"version":"2.0.0"}"#),
        (Method::POST, "/api/v1/upgrade/rollback", "{}"),
        (Method::POST, "/api/v1/upgrade/abort", ""),
        (Method::POST, "/api/v1/upgrade/finalize", ""),
        (Method::POST, "/api/v1/policy/rollback", "{}"),
        (Method::POST, "/api/v1/tokens", r#"{"role":"admin"}"#),
        (Method::DELETE, "/api/v1/tokens/admin", ""),
        (Method::POST, "/api/v1/support/sysdump", ""),
        (Method::PUT, "/api/v1/policy", "{not json"),
    ];
    for (method, path, body) in writes {
        let (status, answer) = node.send(method.clone(), path, &node.readonly, body).await;
        assert_eq!((status, error_code(&answer)), (StatusCode::FORBIDDEN, "forbidden"), "{method} {path}");
        assert!(answer["error"]["message"].as_str().unwrap().contains("readonly"));
    }
    assert_eq!(node.store.status().applied_index, index_before, "refused writes changed nothing");
    assert_eq!(node.store.read(|s| s.tokens().count()), 3);
    // A node started without release slots says so instead of pretending to upgrade.
    let (status, answer) = node.client.json(Method::GET, "/api/v1/upgrade", Some(&node.readonly), None).await;
    assert_eq!((status, error_code(&answer)), (StatusCode::SERVICE_UNAVAILABLE, "upgrade_unavailable"));
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_put_get_versions_and_rollback() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path()).await;
    let (status, body) = node.get("/api/v1/policy", &node.readonly).await;
    assert_eq!((status, error_code(&body)), (StatusCode::NOT_FOUND, "no_policy"));

    let (status, v1) = node.send(Method::PUT, "/api/v1/policy?comment=first", &node.admin, POLICY_V1).await;
    assert_eq!(status, StatusCode::OK, "{v1}");
    assert_eq!(v1["version"], 1);
    assert_eq!(v1["applied"], true);
    assert_eq!(v1["sha256"].as_str().unwrap().len(), 64);
    // Answered only once the node's dataplane runs it: the compiled policy is in place.
    assert_eq!(*node.view.applied_policy_version_now(), Some(1));
    assert!(node.view.compiled.lock().unwrap().is_some());

    let (status, v2) = node.send(Method::PUT, "/api/v1/policy", &node.admin, POLICY_V2).await;
    assert_eq!((status, v2["version"].as_u64()), (StatusCode::OK, Some(2)));
    assert!(v2["index"].as_u64().unwrap() > v1["index"].as_u64().unwrap());

    let (status, active) = node.get("/api/v1/policy", &node.readonly).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(active["version"], 2);
    assert_eq!(active["active"], true);
    assert_eq!(active["applied_version"], 2);
    assert_eq!(active["created_by"], "token:admin");
    assert_eq!(active["document"], serde_json::from_str::<Value>(POLICY_V2).unwrap());

    let (status, list) = node.get("/api/v1/policy/versions", &node.readonly).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["active"], 2);
    let versions: Vec<u64> =
        list["versions"].as_array().unwrap().iter().map(|v| v["version"].as_u64().unwrap()).collect();
    assert_eq!(versions, [1, 2]);
    assert_eq!(list["versions"][0]["comment"], "first");
    assert!(list["versions"][0].get("document").is_none(), "the list carries no documents");

    let (status, one) = node.get("/api/v1/policy/versions/1", &node.readonly).await;
    assert_eq!((status, one["version"].as_u64(), one["active"].as_bool()), (StatusCode::OK, Some(1), Some(false)));
    assert_eq!(one["document"], serde_json::from_str::<Value>(POLICY_V1).unwrap());
    let (status, body) = node.get("/api/v1/policy/versions/99", &node.readonly).await;
    assert_eq!((status, error_code(&body)), (StatusCode::NOT_FOUND, "unknown_policy_version"));
    let (status, body) = node.get("/api/v1/policy/versions/first", &node.readonly).await;
    assert_eq!((status, error_code(&body)), (StatusCode::BAD_REQUEST, "invalid_version"));

    // Rollback without a version goes to the newest older one.
    let (status, back) = node.send(Method::POST, "/api/v1/policy/rollback", &node.admin, "{}").await;
    assert_eq!(status, StatusCode::OK, "{back}");
    assert_eq!((back["version"].as_u64(), back["previous"].as_u64()), (Some(1), Some(2)));
    assert_eq!(*node.view.applied_policy_version_now(), Some(1));
    let (status, back) = node.send(Method::POST, "/api/v1/policy/rollback", &node.admin, r#"{"version":2}"#).await;
    assert_eq!((status, back["version"].as_u64()), (StatusCode::OK, Some(2)));
    let (status, body) = node.send(Method::POST, "/api/v1/policy/rollback", &node.admin, r#"{"version":7}"#).await;
    assert_eq!((status, error_code(&body)), (StatusCode::NOT_FOUND, "unknown_policy_version"));
    let (status, body) = node.send(Method::POST, "/api/v1/policy/rollback", &node.admin, r#"{"version":"x"}"#).await;
    assert_eq!((status, error_code(&body)), (StatusCode::BAD_REQUEST, "invalid_json"));
    let (_, body) = node.send(Method::POST, "/api/v1/policy/rollback", &node.admin, "{}").await;
    assert_eq!(body["version"], 1);
    let (status, body) = node.send(Method::POST, "/api/v1/policy/rollback", &node.admin, "{}").await;
    assert_eq!((status, error_code(&body)), (StatusCode::CONFLICT, "no_previous_version"));

    let (status, ready) = node.client.json(Method::GET, "/ready", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(ready["checks"]["policy"]["detail"].as_str().unwrap().contains("version 1"));
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_policies_are_refused_with_field_paths_and_nothing_changes() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path()).await;
    node.send(Method::PUT, "/api/v1/policy", &node.admin, POLICY_V1).await;
    let index_before = node.store.status().applied_index;

    let (status, body) = node.send(Method::PUT, "/api/v1/policy", &node.admin, "{\"default_action\": ").await;
    assert_eq!((status, error_code(&body)), (StatusCode::BAD_REQUEST, "invalid_policy"));
    assert!(body["error"]["message"].as_str().unwrap().contains("invalid JSON"), "{body}");

    let bad = POLICY_V1.replace("[443]", "[443, 70000]").replace("\"udp\"", "\"sctp\"");
    for path in ["/api/v1/policy", "/api/v1/policy/validate"] {
        let method = if path.ends_with("validate") { Method::POST } else { Method::PUT };
        let (status, body) = node.send(method, path, &node.admin, &bad).await;
        assert_eq!((status, error_code(&body)), (StatusCode::BAD_REQUEST, "invalid_policy"), "{path}");
        let paths: Vec<&str> =
            body["error"]["fields"].as_array().unwrap().iter().map(|f| f["path"].as_str().unwrap()).collect();
        assert!(paths.contains(&"source_groups[0].rules[0].match.dst_ports[1]"), "{path}: {paths:?}");
        assert!(paths.contains(&"source_groups[0].rules[1].match.proto"), "{path}: {paths:?}");
        assert!(body["error"]["message"].as_str().unwrap().contains("2 problems"), "{body}");
    }
    assert_eq!(node.store.status().applied_index, index_before, "nothing was proposed");
    let (_, active) = node.get("/api/v1/policy", &node.readonly).await;
    assert_eq!(active["version"], 1);

    let (status, ok) = node.send(Method::POST, "/api/v1/policy/validate", &node.readonly, POLICY_V2).await;
    assert_eq!(status, StatusCode::OK, "{ok}");
    assert_eq!((ok["valid"].as_bool(), ok["groups"].as_u64(), ok["rules"].as_u64()), (Some(true), Some(1), Some(3)));

    // Over 2 MiB: 413, in the error shape.
    for (method, path) in [
        (Method::PUT, "/api/v1/policy"),
        (Method::POST, "/api/v1/policy/validate"),
        (Method::POST, "/api/v1/policy/explain"),
    ] {
        let (status, body) = node.client.oversized(method, path, &node.admin, 3 * 1024 * 1024).await;
        assert_eq!((status, error_code(&body)), (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"), "{path}");
    }
    assert_eq!(node.store.status().applied_index, index_before);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_names_the_deciding_rule() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path()).await;
    let query = r#"{"src":"10.10.0.2","dst":"203.0.113.5","proto":"udp","dst_port":123}"#;
    let (status, body) = node.send(Method::POST, "/api/v1/policy/explain", &node.readonly, query).await;
    assert_eq!((status, error_code(&body)), (StatusCode::NOT_FOUND, "no_policy"));
    node.send(Method::PUT, "/api/v1/policy", &node.admin, POLICY_V1).await;
    node.send(Method::PUT, "/api/v1/policy", &node.admin, POLICY_V2).await;

    let (status, body) = node.send(Method::POST, "/api/v1/policy/explain", &node.readonly, query).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (body["action"].as_str(), body["group"].as_str(), body["rule"].as_str()),
        (Some("allow"), Some("apps"), Some("ntp"))
    );
    assert_eq!(body["version"], 2);
    assert_eq!(body["candidate_groups"], serde_json::json!(["apps"]));

    let ping = r#"{"src":"10.10.0.2","dst":"192.0.2.1","proto":1,"icmp_type":8}"#;
    let (_, body) = node.send(Method::POST, "/api/v1/policy/explain", &node.readonly, ping).await;
    assert_eq!((body["action"].as_str(), body["rule"].as_str()), (Some("allow"), Some("ping")));
    let old = r#"{"src":"10.10.0.2","dst":"192.0.2.1","proto":"icmp","icmp_type":8,"version":1}"#;
    let (_, body) = node.send(Method::POST, "/api/v1/policy/explain", &node.readonly, old).await;
    assert_eq!(
        (body["action"].as_str(), body["rule"].as_str(), body["version"].as_u64()),
        (Some("deny"), None, Some(1))
    );

    let by_name =
        r#"{"src":"10.10.0.2","dst":"198.51.100.10","proto":"tcp","dst_port":443,"hostname":"API.example.com"}"#;
    let (_, body) = node.send(Method::POST, "/api/v1/policy/explain", &node.readonly, by_name).await;
    assert_eq!((body["action"].as_str(), body["rule"].as_str()), (Some("allow"), Some("api")), "{body}");
    assert_eq!(body["dns"]["allowed"], true);
    assert_eq!(body["dns"]["rule"], "api");
    let outsider = r#"{"src":"192.168.1.1","dst":"198.51.100.10","proto":"tcp","dst_port":443}"#;
    let (_, body) = node.send(Method::POST, "/api/v1/policy/explain", &node.readonly, outsider).await;
    assert_eq!(body["action"], "deny");
    assert!(body["description"].as_str().unwrap().contains("no source group"), "{body}");

    for (bad, code) in [
        (r#"{"src":"10.10.0.2","dst":"1.2.3.4","proto":"gre"}"#, "invalid_field"),
        (r#"{"src":"10.10.0.999","dst":"1.2.3.4","proto":"tcp"}"#, "invalid_json"),
        (r#"{"src":"10.10.0.2""#, "invalid_json"),
    ] {
        let (status, body) = node.send(Method::POST, "/api/v1/policy/explain", &node.readonly, bad).await;
        assert_eq!((status, error_code(&body)), (StatusCode::BAD_REQUEST, code), "{bad}");
    }
    let (status, body) = node
        .send(Method::POST, "/api/v1/policy/explain", &node.readonly, &old.replace("\"version\":1", "\"version\":9"))
        .await;
    assert_eq!((status, error_code(&body)), (StatusCode::NOT_FOUND, "unknown_policy_version"));
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_mint_list_use_and_revoke() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path()).await;
    let (status, minted) = node
        .send(
            Method::POST,
            "/api/v1/tokens",
            &node.admin,
            r#"{"role":"readonly","id":"ci","label":"pipeline","expires_in_s":3600}"#,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{minted}");
    assert_eq!(
        (minted["id"].as_str(), minted["role"].as_str(), minted["created_by"].as_str()),
        (Some("ci"), Some("readonly"), Some("token:admin"))
    );
    assert!(minted["expires_at_ms"].as_u64().is_some());
    let secret = minted["token"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("sluice_") && secret.len() > 60);

    let (status, _) = node.get("/api/v1/stats", &secret).await;
    assert_eq!(status, StatusCode::OK, "the new token works");
    let (status, body) = node.send(Method::POST, "/api/v1/tokens", &secret, r#"{"role":"admin"}"#).await;
    assert_eq!((status, error_code(&body)), (StatusCode::FORBIDDEN, "forbidden"));

    let answer = node.client.request(Method::GET, "/api/v1/tokens", Some(&node.readonly), None).await;
    assert_eq!(answer.status, StatusCode::OK);
    let text = String::from_utf8(answer.body).unwrap();
    assert!(!text.contains(&secret) && !text.contains("secret") && !text.contains("hash"), "{text}");
    let list: Value = serde_json::from_str(&text).unwrap();
    let ids: Vec<&str> = list["tokens"].as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["admin", "ci", "reader"]);

    let (status, body) = node.send(Method::POST, "/api/v1/tokens", &node.admin, r#"{"role":"admin","id":"ci"}"#).await;
    assert_eq!((status, error_code(&body)), (StatusCode::CONFLICT, "token_exists"));
    let (status, body) = node.send(Method::POST, "/api/v1/tokens", &node.admin, r#"{"role":"root"}"#).await;
    assert_eq!((status, error_code(&body)), (StatusCode::BAD_REQUEST, "invalid_field"));
    let (status, body) =
        node.send(Method::POST, "/api/v1/tokens", &node.admin, r#"{"role":"admin","colour":"red"}"#).await;
    assert_eq!((status, error_code(&body)), (StatusCode::BAD_REQUEST, "invalid_json"));
    let (status, body) = node
        .send(Method::POST, "/api/v1/tokens", &node.admin, &format!(r#"{{"role":"admin","id":"{}"}}"#, "x".repeat(200)))
        .await;
    assert_eq!((status, error_code(&body)), (StatusCode::BAD_REQUEST, "invalid_field"));
    assert_eq!(body["error"]["fields"][0]["path"], "id");
    let (status, minted) = node.send(Method::POST, "/api/v1/tokens", &node.admin, r#"{"role":"admin"}"#).await;
    assert_eq!(status, StatusCode::CREATED);
    assert!(minted["id"].as_str().unwrap().starts_with("tok-"));

    let (status, body) = node.send(Method::DELETE, "/api/v1/tokens/ci", &node.admin, "").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["revoked"], true);
    let (status, body) = node.get("/api/v1/stats", &secret).await;
    assert_eq!((status, error_code(&body)), (StatusCode::UNAUTHORIZED, "invalid_token"), "revoked at once");
    let (status, body) = node.send(Method::DELETE, "/api/v1/tokens/ci", &node.admin, "").await;
    assert_eq!((status, error_code(&body)), (StatusCode::NOT_FOUND, "unknown_token"));
    let audit: Vec<String> = node.store.read(|s| s.audit_log().map(|a| a.action.clone()).collect());
    assert!(audit.iter().any(|a| a == "token.revoke id=ci"), "{audit:?}");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_local_views_are_bounded_and_filterable() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path()).await;
    let (status, page) = node.get("/api/v1/flows", &node.readonly).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!((page["flows"].as_array().unwrap().len(), page["truncated"].as_bool()), (6, Some(false)));
    assert_eq!(page["flows"][0]["src"], "10.10.0.2");

    let (_, page) = node.get("/api/v1/flows?proto=tcp&limit=2", &node.readonly).await;
    assert_eq!((page["flows"].as_array().unwrap().len(), page["truncated"].as_bool()), (2, Some(true)));
    let (_, page) = node.get("/api/v1/flows?proto=UDP&port=123", &node.readonly).await;
    assert_eq!(page["flows"].as_array().unwrap().len(), 1);
    let (_, page) = node.get("/api/v1/flows?src=10.10.0.4&dst=198.51.100.10", &node.readonly).await;
    assert_eq!(page["flows"].as_array().unwrap().len(), 1);
    let (_, page) = node.get("/api/v1/flows?limit=100000", &node.readonly).await;
    assert_eq!(page["flows"].as_array().unwrap().len(), 6, "an over-large limit is clamped, not refused");
    let (status, body) = node.get("/api/v1/flows?src=not-an-ip", &node.readonly).await;
    assert_eq!((status, error_code(&body)), (StatusCode::BAD_REQUEST, "invalid_query"));

    let (status, page) = node.get("/api/v1/dns/allowlist", &node.readonly).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["entries"].as_array().unwrap().len(), 2);
    assert_eq!(
        (page["entries"][0]["group"].as_str(), page["entries"][0]["rule"].as_str()),
        (Some("apps"), Some("api"))
    );
    let (_, page) = node.get("/api/v1/dns/allowlist?ip=198.51.100.11", &node.readonly).await;
    assert_eq!((page["entries"].as_array().unwrap().len(), page["entries"][0]["pinned"].as_bool()), (1, Some(false)));
    let (_, page) = node.get("/api/v1/dns/allowlist?group=other", &node.readonly).await;
    assert!(page["entries"].as_array().unwrap().is_empty());
    let (_, page) = node.get("/api/v1/dns/allowlist?rule=api&limit=1", &node.readonly).await;
    assert_eq!(page["truncated"], true);

    // A worker that cannot answer is an error with its reason, never an empty page.
    for (error, status, code) in [
        (ListingError::Busy("busy".into()), StatusCode::SERVICE_UNAVAILABLE, "listing_busy"),
        (ListingError::Timeout("slow".into()), StatusCode::GATEWAY_TIMEOUT, "dataplane_timeout"),
        (ListingError::Unavailable("gone".into()), StatusCode::SERVICE_UNAVAILABLE, "dataplane_unavailable"),
    ] {
        *node.view.listing_error.lock().unwrap() = Some(error);
        for path in ["/api/v1/flows", "/api/v1/dns/allowlist"] {
            let (got, body) = node.get(path, &node.readonly).await;
            assert_eq!((got, error_code(&body)), (status, code), "{path}");
        }
    }
    *node.view.listing_error.lock().unwrap() = None;

    let (status, stats) = node.get("/api/v1/stats", &node.readonly).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(stats["node"]["counters"]["policy_denied"], 3);
    assert_eq!(stats["store"]["leader"], 1);
    assert_eq!(stats["store"]["state_hash"].as_str().unwrap().len(), 64);
    assert!(stats["release"].as_str().is_some());
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_lists_every_route_the_router_serves() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path()).await;
    let (_, doc) = node.client.json(Method::GET, "/api/v1/openapi.json", None, None).await;
    let api: utoipa::openapi::OpenApi = serde_json::from_value(doc.clone()).unwrap();
    let described = sluice_api::routes::described_routes(&api);
    // Design §8, plus settings and the audit log.
    let mut expected: Vec<(String, String)> = [
        ("GET", "/health"),
        ("GET", "/ready"),
        ("GET", "/metrics"),
        ("GET", "/api/v1/stats"),
        ("GET", "/api/v1/openapi.json"),
        ("GET", "/api/v1/policy"),
        ("PUT", "/api/v1/policy"),
        ("GET", "/api/v1/policy/versions"),
        ("GET", "/api/v1/policy/versions/{version}"),
        ("POST", "/api/v1/policy/rollback"),
        ("POST", "/api/v1/policy/validate"),
        ("POST", "/api/v1/policy/explain"),
        ("GET", "/api/v1/dns/allowlist"),
        ("GET", "/api/v1/flows"),
        ("GET", "/api/v1/tokens"),
        ("POST", "/api/v1/tokens"),
        ("DELETE", "/api/v1/tokens/{id}"),
        ("GET", "/api/v1/settings"),
        ("PUT", "/api/v1/settings"),
        ("GET", "/api/v1/audit"),
        ("GET", "/api/v1/cluster"),
        ("POST", "/api/v1/cluster/members/{id}/remove"),
        ("GET", "/api/v1/snapshots"),
        ("POST", "/api/v1/snapshots"),
        ("GET", "/api/v1/snapshots/{id}"),
        ("POST", "/api/v1/snapshots/{id}/verify"),
        ("POST", "/api/v1/cluster/leader/transfer"),
        ("POST", "/api/v1/support/sysdump"),
        ("GET", "/api/v1/upgrade"),
        ("POST", "/api/v1/upgrade"),
        ("POST", "/api/v1/upgrade/rollback"),
        ("POST", "/api/v1/upgrade/abort"),
        ("POST", "/api/v1/upgrade/finalize"),
        ("GET", "/api/v1/releases"),
    ]
    .iter()
    .map(|(m, p)| (m.to_string(), p.to_string()))
    .collect();
    expected.sort();
    assert_eq!(described, expected);
    // The served document is the one the router was built with.
    assert_eq!(sluice_api::routes::described_routes(&sluice_api::routes::api_router().1), expected);

    // Every described route is served (the router answers it, not the 404/405 fallbacks).
    for (method, path) in &described {
        let id = if path.contains("members") { "7" } else { "nobody" };
        let concrete = path.replace("{version}", "1").replace("{id}", id);
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let answer = node.client.request(method.clone(), &concrete, Some(&node.readonly), Some(b"{}".to_vec())).await;
        let body: Value = serde_json::from_slice(&answer.body).unwrap_or(Value::Null);
        let code = body["error"]["code"].as_str().unwrap_or("");
        assert!(code != "not_found" && code != "method_not_allowed", "{method} {concrete}: {body}");
        assert_ne!(answer.status, StatusCode::METHOD_NOT_ALLOWED, "{method} {concrete}");
    }
    // Authenticated routes declare the bearer scheme.
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    assert!(doc["paths"]["/api/v1/policy"]["put"]["security"].is_array());
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_the_dataplane_does_not_run_times_out_with_504() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(dir.path());
    config.apply_timeout = std::time::Duration::from_millis(300);
    let node = TestNode::start_with(dir.path(), config, true, false).await;
    let (status, body) = node.send(Method::PUT, "/api/v1/policy", &node.admin, POLICY_V1).await;
    assert_eq!((status, error_code(&body)), (StatusCode::GATEWAY_TIMEOUT, "apply_timeout"));
    assert!(body["error"]["message"].as_str().unwrap().contains("version 1 is stored"));
    let (status, ready) = node.client.json(Method::GET, "/ready", None, None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ready["ready"], false);
    assert_eq!(ready["checks"]["policy"]["ok"], false);
    node.stop().await;
}
