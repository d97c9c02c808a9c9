//! Token secrets are never stored or logged in clear, and the sysdump holds no secret.
//! (Its own test binary: it installs a global log subscriber that captures everything.)

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::{TestNode, POLICY_V1};
use hyper::{Method, StatusCode};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_in_neither_the_database_nor_the_logs_nor_the_sysdump() {
    let logs = Captured::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();

    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path()).await;
    let (status, minted) =
        node.send(Method::POST, "/api/v1/tokens", &node.admin, r#"{"role":"admin","id":"minted"}"#).await;
    assert_eq!(status, StatusCode::CREATED);
    let minted_secret = minted["token"].as_str().unwrap().to_owned();
    for secret in [&node.admin, &node.readonly, &minted_secret] {
        let (status, _) = node.get("/api/v1/stats", secret).await;
        assert_eq!(status, StatusCode::OK);
    }
    node.send(Method::PUT, "/api/v1/policy", &minted_secret, POLICY_V1).await;
    let (status, _) = node.get("/api/v1/stats", "sluice_wrong-guess-0123456789").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let answer = node.client.request(Method::POST, "/api/v1/support/sysdump", Some(&node.admin), None).await;
    assert_eq!(answer.status, StatusCode::OK);
    let dump = answer.body;
    let dump_json: serde_json::Value = serde_json::from_slice(&dump).unwrap();
    assert_eq!(dump_json["tokens"].as_array().unwrap().len(), 3, "tokens are listed (ids only)");
    assert_eq!(dump_json["policy"]["active"], 1);
    assert!(dump_json["audit_log"].as_array().unwrap().len() >= 4);
    assert_eq!(dump_json["readiness"]["ready"], true);

    let hashes: Vec<String> = node.store.read(|s| s.tokens().map(|t| t.secret_hash.to_hex()).collect());
    let key_pem = std::fs::read_to_string(dir.path().join(sluice_api::tls::GENERATED_KEY_FILE)).unwrap();
    let key_body: String = key_pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let secrets =
        [node.admin.clone(), node.readonly.clone(), minted_secret.clone(), "sluice_wrong-guess-0123456789".into()];
    node.stop().await;

    let mut database = Vec::new();
    for entry in std::fs::read_dir(dir.path().join("store")).unwrap() {
        database.extend(std::fs::read(entry.unwrap().path()).unwrap());
    }
    let logs = logs.0.lock().unwrap().clone();
    assert!(contains(&logs, "token minted"), "the capture works: {}", String::from_utf8_lossy(&logs));
    for secret in &secrets {
        assert!(!contains(&database, secret), "a secret is in the database");
        assert!(!contains(&logs, secret), "a secret is in the logs");
        assert!(!contains(&dump, secret), "a secret is in the sysdump");
    }
    for hash in &hashes {
        assert!(!contains(&dump, hash), "a token hash is in the sysdump");
        assert!(!contains(&logs, hash), "a token hash is in the logs");
    }
    assert!(!contains(&dump, &key_body[..40]), "the private key is in the sysdump");
    assert!(!contains(&dump, "PRIVATE KEY"));
}
