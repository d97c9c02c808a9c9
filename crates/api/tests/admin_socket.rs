//! The admin socket mints a token for root without any credential and relays API calls for
//! root into the node's router, and refuses everyone else: by its file mode, and by the peer's
//! credentials when the mode was loosened.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::time::Duration;

use common::TestNode;
use hyper::{Method, StatusCode};
use sluice_api::admin_socket::{api_over_socket, request_over_socket, AdminRequest, AdminSocket};

const CLIENT_ENV: &str = "SLUICE_TEST_ADMIN_SOCKET_CLIENT";
const NOBODY: u32 = 65534;

fn mint_request() -> AdminRequest {
    AdminRequest::MintToken {
        role: "admin".into(),
        id: None,
        label: "break-glass".into(),
        expires_in_s: None,
        secret_sha256: None,
    }
}

/// Run by the test below in a child process as user `nobody`; prints what the socket said.
#[tokio::test]
#[ignore = "a helper the refusal test runs as another user"]
async fn admin_socket_client_as_another_user() {
    let socket = std::env::var(CLIENT_ENV).expect("run by the refusal test");
    let mint = match request_over_socket(socket.as_ref(), &mint_request()).await {
        Ok(minted) => format!("minted {}", minted.id),
        Err(e) => format!("refused {e}"),
    };
    let relay = match api_over_socket(socket.as_ref(), "GET", "/api/v1/tokens", None).await {
        Ok(answer) => format!("relayed {}", answer.status),
        Err(e) => format!("refused {e}"),
    };
    println!("RESULT {mint}");
    println!("RELAY {relay}");
}

/// What the helper, run as `nobody`, got: (mint outcome, relay outcome).
fn run_as_nobody(socket: &std::path::Path) -> (String, String) {
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "admin_socket_client_as_another_user", "--nocapture"])
        .env(CLIENT_ENV, socket)
        .uid(NOBODY)
        .gid(NOBODY)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let line = |prefix: &str| {
        stdout.lines().find_map(|l| l.strip_prefix(prefix).map(str::to_owned)).unwrap_or_else(|| {
            panic!("the helper printed no {prefix}: {stdout} {}", String::from_utf8_lossy(&output.stderr))
        })
    };
    (line("RESULT "), line("RELAY "))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_mints_over_the_admin_socket_and_other_users_are_refused() {
    assert_eq!(unsafe { libc::geteuid() }, 0, "this test needs root (it runs a client as another user)");
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start_with(dir.path(), common::config(dir.path()), false, true).await;
    let socket = AdminSocket::start(dir.path(), node.store.clone(), None, 0).await.unwrap();
    assert_eq!(std::fs::metadata(socket.path()).unwrap().permissions().mode() & 0o777, 0o600);

    let minted = request_over_socket(socket.path(), &mint_request()).await.unwrap();
    assert_eq!(minted.role, "admin");
    let secret = minted.token.expect("a generated secret");
    let (status, _) = node.send(Method::POST, "/api/v1/tokens", &secret, r#"{"role":"readonly"}"#).await;
    assert_eq!(status, StatusCode::CREATED, "the break-glass token is a working admin token");

    // A first-boot seed registers a secret the operator holds, by its hash only.
    let held = "sluice_operator-held-secret-for-the-seed";
    let hash = sluice_store::state::hash_token_secret(held).to_hex();
    let seeded = AdminRequest::MintToken {
        role: "admin".into(),
        id: Some("seed-admin".into()),
        label: "first boot".into(),
        expires_in_s: None,
        secret_sha256: Some(hash.clone()),
    };
    let registered = request_over_socket(socket.path(), &seeded).await.unwrap();
    assert_eq!((registered.id.as_str(), registered.token), ("seed-admin", None), "no secret is made or shown");
    let (status, _) = node.send(Method::GET, "/api/v1/tokens", held, "").await;
    assert_eq!(status, StatusCode::OK, "the held secret works");
    let again = request_over_socket(socket.path(), &seeded).await.unwrap_err();
    assert!(again.contains("exists") || again.contains("taken"), "a second registration is refused: {again}");
    let bad_hash = AdminRequest::MintToken {
        role: "admin".into(),
        id: None,
        label: String::new(),
        expires_in_s: None,
        secret_sha256: Some("abc".into()),
    };
    let refused = request_over_socket(socket.path(), &bad_hash).await.unwrap_err();
    assert!(refused.starts_with("invalid_field") && refused.contains("64 hex digits"), "{refused}");
    let audit: Vec<String> = node.store.read(|s| s.audit_log().map(|a| a.actor.clone()).collect());
    assert!(audit.contains(&"admin-socket:uid=0".to_owned()), "{audit:?}");

    let bad = AdminRequest::MintToken {
        role: "superuser".into(),
        id: None,
        label: String::new(),
        expires_in_s: None,
        secret_sha256: None,
    };
    let refused = request_over_socket(socket.path(), &bad).await.unwrap_err();
    assert!(refused.starts_with("invalid_field"), "{refused}");

    let tokens_before = node.store.read(|s| s.tokens().count());
    // The file mode (and the private data root) keep another user out...
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let result = tokio::task::spawn_blocking({
        let path = socket.path().to_owned();
        move || run_as_nobody(&path)
    })
    .await
    .unwrap();
    assert!(result.0.starts_with("refused") && result.0.contains("Permission denied"), "{result:?}");
    assert!(result.1.starts_with("refused") && result.1.contains("Permission denied"), "{result:?}");
    // ...and with the mode loosened, the peer's credentials still do.
    std::fs::set_permissions(socket.path(), std::fs::Permissions::from_mode(0o666)).unwrap();
    let result = tokio::task::spawn_blocking({
        let path = socket.path().to_owned();
        move || run_as_nobody(&path)
    })
    .await
    .unwrap();
    assert!(result.0.starts_with("refused forbidden") && result.0.contains("uid 65534"), "{result:?}");
    assert!(result.1.starts_with("refused forbidden") && result.1.contains("uid 65534"), "{result:?}");
    assert_eq!(node.store.read(|s| s.tokens().count()), tokens_before, "nothing minted for them");

    drop(socket);
    assert!(!dir.path().join(sluice_api::admin_socket::ADMIN_SOCKET_FILE).exists(), "removed when dropped");
    tokio::time::sleep(Duration::from_millis(10)).await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_calls_the_api_through_the_socket_as_the_local_admin() {
    assert_eq!(unsafe { libc::geteuid() }, 0, "the socket serves uid 0 and this test is its client");
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start_with(dir.path(), common::config(dir.path()), false, true).await;
    let local = node.server.as_ref().unwrap().local();
    let socket = AdminSocket::start(dir.path(), node.store.clone(), Some(local), 0).await.unwrap();

    // A write without any token: the relay authenticates the caller as the local root admin,
    // and the audit trail says so.
    let put = api_over_socket(socket.path(), "PUT", "/api/v1/policy?comment=local", Some(common::POLICY_V2.into()))
        .await
        .unwrap();
    assert_eq!(put.status, 200, "{}", put.body);
    assert_eq!(put.content_type.as_deref(), Some("application/json"));
    let written: serde_json::Value = serde_json::from_str(&put.body).unwrap();
    let version = written["version"].as_u64().unwrap();
    let audit: Vec<String> = node.store.read(|s| s.audit_log().map(|a| a.actor.clone()).collect());
    assert!(audit.contains(&"admin-socket:uid=0".to_owned()), "{audit:?}");
    let got = api_over_socket(socket.path(), "GET", &format!("/api/v1/policy/versions/{version}"), None).await.unwrap();
    let got: serde_json::Value = serde_json::from_str(&got.body).unwrap();
    assert_eq!(got["created_by"], "admin-socket:uid=0", "{got:#}");

    // Refusals of the route come back as its own status and error shape.
    let bad = api_over_socket(socket.path(), "PUT", "/api/v1/policy", Some("{\"default_action\":\"maybe\"}".into()))
        .await
        .unwrap();
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert!(bad.body.contains("invalid_policy") && bad.body.contains("default_action"), "{}", bad.body);
    let missing = api_over_socket(socket.path(), "GET", "/api/v1/policy/versions/999", None).await.unwrap();
    assert_eq!(missing.status, 404, "{}", missing.body);
    let refused = api_over_socket(socket.path(), "GET", "api/v1/policy", None).await.unwrap_err();
    assert!(refused.starts_with("invalid_request") && refused.contains("must start with `/`"), "{refused}");
    let refused = api_over_socket(socket.path(), "GE T", "/api/v1/policy", None).await.unwrap_err();
    assert!(refused.starts_with("invalid_request") && refused.contains("not an HTTP method"), "{refused}");

    // A request line over the limit is refused as such, and the socket keeps serving.
    let huge = "x".repeat(5 * 1024 * 1024);
    let too_large = api_over_socket(socket.path(), "PUT", "/api/v1/policy", Some(huge)).await.unwrap_err();
    assert!(too_large.starts_with("too_large"), "{too_large}");
    let after = api_over_socket(socket.path(), "GET", "/health", None).await.unwrap();
    assert_eq!(after.status, 200);
    drop(socket);

    // A socket started without the API (a node whose API is not up) says so.
    let bare = AdminSocket::start(dir.path(), node.store.clone(), None, 0).await.unwrap();
    let unavailable = api_over_socket(bare.path(), "GET", "/health", None).await.unwrap_err();
    assert!(unavailable.starts_with("api_unavailable"), "{unavailable}");
    drop(bare);
    node.stop().await;
}
