//! The admin socket mints a token for root without any credential, and refuses everyone
//! else: by its file mode, and by the peer's credentials when the mode was loosened.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::time::Duration;

use common::TestNode;
use hyper::{Method, StatusCode};
use sluice_api::admin_socket::{request_over_socket, AdminRequest, AdminSocket};

const CLIENT_ENV: &str = "SLUICE_TEST_ADMIN_SOCKET_CLIENT";
const NOBODY: u32 = 65534;

fn mint_request() -> AdminRequest {
    AdminRequest::MintToken { role: "admin".into(), id: None, label: "break-glass".into(), expires_in_s: None }
}

/// Run by the test below in a child process as user `nobody`; prints what the socket said.
#[tokio::test]
#[ignore = "a helper the refusal test runs as another user"]
async fn admin_socket_client_as_another_user() {
    let socket = std::env::var(CLIENT_ENV).expect("run by the refusal test");
    match request_over_socket(socket.as_ref(), &mint_request()).await {
        Ok(minted) => println!("RESULT minted {}", minted.id),
        Err(e) => println!("RESULT refused {e}"),
    }
}

fn run_as_nobody(socket: &std::path::Path) -> String {
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "admin_socket_client_as_another_user", "--nocapture"])
        .env(CLIENT_ENV, socket)
        .uid(NOBODY)
        .gid(NOBODY)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("RESULT ").map(str::to_owned))
        .unwrap_or_else(|| panic!("the helper printed no result: {stdout} {}", String::from_utf8_lossy(&output.stderr)))
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
    let (status, _) = node.send(Method::POST, "/api/v1/tokens", &minted.token, r#"{"role":"readonly"}"#).await;
    assert_eq!(status, StatusCode::CREATED, "the break-glass token is a working admin token");
    let audit: Vec<String> = node.store.read(|s| s.audit_log().map(|a| a.actor.clone()).collect());
    assert!(audit.contains(&"admin-socket:uid=0".to_owned()), "{audit:?}");

    let bad = AdminRequest::MintToken { role: "superuser".into(), id: None, label: String::new(), expires_in_s: None };
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
    assert!(result.starts_with("refused") && result.contains("Permission denied"), "{result}");
    // ...and with the mode loosened, the peer's credentials still do.
    std::fs::set_permissions(socket.path(), std::fs::Permissions::from_mode(0o666)).unwrap();
    let result = tokio::task::spawn_blocking({
        let path = socket.path().to_owned();
        move || run_as_nobody(&path)
    })
    .await
    .unwrap();
    assert!(result.starts_with("refused forbidden") && result.contains("uid 65534"), "{result}");
    assert_eq!(node.store.read(|s| s.tokens().count()), tokens_before, "nothing minted for them");

    drop(socket);
    assert!(!dir.path().join(sluice_api::admin_socket::ADMIN_SOCKET_FILE).exists(), "removed when dropped");
    tokio::time::sleep(Duration::from_millis(10)).await;
    node.stop().await;
}
