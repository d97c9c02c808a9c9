//! Restart keeps tokens, policy and history; the generated certificate is reused and its key
//! is private; the separate metrics listener and draining behave.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::{error_code, TestNode, POLICY_V1, POLICY_V2};
use hyper::{Method, StatusCode};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_tokens_policy_history_and_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path()).await;
    node.send(Method::PUT, "/api/v1/policy", &node.admin, POLICY_V1).await;
    node.send(Method::PUT, "/api/v1/policy", &node.admin, POLICY_V2).await;
    node.send(Method::POST, "/api/v1/policy/rollback", &node.admin, "{}").await;
    let (_, minted) =
        node.send(Method::POST, "/api/v1/tokens", &node.admin, r#"{"role":"readonly","id":"kept"}"#).await;
    let kept = minted["token"].as_str().unwrap().to_owned();
    node.send(Method::DELETE, "/api/v1/tokens/reader", &node.admin, "").await;
    let (admin, reader) = (node.admin.clone(), node.readonly.clone());
    let cert_before = std::fs::read(dir.path().join(sluice_api::tls::GENERATED_CERT_FILE)).unwrap();
    let hash_before = node.store.status().state_hash;
    node.stop().await;

    let mut node = TestNode::start_with(dir.path(), common::config(dir.path()), false, true).await;
    node.admin = admin;
    assert_eq!(
        std::fs::read(dir.path().join(sluice_api::tls::GENERATED_CERT_FILE)).unwrap(),
        cert_before,
        "certificate reused"
    );
    assert_eq!(node.store.read(|s| s.state_hash()), hash_before, "the same state after replay");
    let (status, _) = node.get("/api/v1/stats", &kept).await;
    assert_eq!(status, StatusCode::OK, "a minted token survives");
    let (status, body) = node.get("/api/v1/stats", &reader).await;
    assert_eq!((status, error_code(&body)), (StatusCode::UNAUTHORIZED, "invalid_token"), "a revocation survives");
    let (_, list) = node.get("/api/v1/policy/versions", &kept).await;
    assert_eq!(list["active"], 1);
    assert_eq!(list["versions"].as_array().unwrap().len(), 2);
    // The restarted dataplane runs the stored active version.
    let (status, ready) = node.client.json(Method::GET, "/ready", None, None).await;
    assert_eq!(status, StatusCode::OK, "{ready}");
    let (status, written) = node.send(Method::PUT, "/api/v1/policy", &node.admin, POLICY_V2).await;
    assert_eq!((status, written["version"].as_u64()), (StatusCode::OK, Some(3)), "version numbers continue");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_generated_key_is_private_and_given_certificates_are_used() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path()).await;
    let key = dir.path().join(sluice_api::tls::GENERATED_KEY_FILE);
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    node.stop().await;

    // An operator's certificate: the files are used as given, nothing is generated.
    let other = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    std::fs::write(other.path().join("c.pem"), cert.cert.pem()).unwrap();
    std::fs::write(other.path().join("k.pem"), cert.signing_key.serialize_pem()).unwrap();
    let mut config = common::config(dir.path());
    config.data_root = other.path().join("root");
    config.cert_path = Some(other.path().join("c.pem"));
    config.key_path = Some(other.path().join("k.pem"));
    let store = std::sync::Arc::new(
        sluice_store::Store::open_single_node(sluice_store::StoreConfig::single_node(other.path().join("store")))
            .await
            .unwrap(),
    );
    let view = std::sync::Arc::new(common::TestNodeView::new());
    let server = sluice_api::ApiServer::start(config.clone(), store.clone(), view.clone()).await.unwrap();
    assert!(!config.data_root.join(sluice_api::tls::GENERATED_KEY_FILE).exists());
    let client = common::Client::new(server.http_addr, &other.path().join("c.pem"));
    let (status, _) = client.json(Method::GET, "/health", None, None).await;
    assert_eq!(status, StatusCode::OK);
    server.shutdown(std::time::Duration::from_secs(1)).await;

    // Only one of the two is refused with a clear error.
    config.key_path = None;
    let error = sluice_api::ApiServer::start(config, store, view).await.err().expect("refused");
    assert!(error.to_string().contains("--http-cert and --http-key must be given together"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_listener_serves_only_metrics_and_draining_fails_readiness() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(dir.path());
    config.metrics_bind = Some("127.0.0.1:0".parse().unwrap());
    let node = TestNode::start_with(dir.path(), config, true, true).await;
    let metrics_addr = node.server.as_ref().unwrap().metrics_addr.unwrap();
    let answer = common::plain_get(metrics_addr, "/metrics").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(String::from_utf8(answer.body).unwrap().contains("sluice_store_applied_index"));
    let answer = common::plain_get(metrics_addr, "/api/v1/policy").await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);

    let (status, _) = node.client.json(Method::GET, "/ready", None, None).await;
    assert_eq!(status, StatusCode::OK);
    node.server.as_ref().unwrap().begin_draining();
    let (status, ready) = node.client.json(Method::GET, "/ready", None, None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ready["checks"]["draining"]["ok"], false);
    // The API keeps answering while draining.
    let (status, _) = node.get("/api/v1/stats", &node.readonly).await;
    assert_eq!(status, StatusCode::OK);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_generated_certificate_names_the_bind_address() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(dir.path());
    config.http_bind = "127.0.0.2:0".parse().unwrap();
    let mut node = TestNode::start_with(dir.path(), config, false, true).await;
    node.client.name = rustls::pki_types::ServerName::IpAddress(std::net::Ipv4Addr::new(127, 0, 0, 2).into());
    let (status, _) = node.client.json(Method::GET, "/health", None, None).await;
    assert_eq!(status, StatusCode::OK, "verified against the address dialled");
    node.stop().await;
}
