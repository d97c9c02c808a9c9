//! Slow requests and slow clients are cut off with a clear answer.

mod common;

use std::time::{Duration, Instant};

use common::{error_code, TestNode, POLICY_V1};
use hyper::{Method, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_over_the_time_limit_is_answered_503() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(dir.path());
    config.request_timeout = Duration::from_millis(300);
    config.apply_timeout = Duration::from_secs(30);
    // A dataplane that never applies keeps the write waiting past the request limit.
    let node = TestNode::start_with(dir.path(), config, true, false).await;
    let (status, body) = node.send(Method::PUT, "/api/v1/policy", &node.admin, POLICY_V1).await;
    assert_eq!((status, error_code(&body)), (StatusCode::SERVICE_UNAVAILABLE, "request_timeout"));
    let (status, _) = node.get("/api/v1/policy/versions", &node.readonly).await;
    assert_eq!(status, StatusCode::OK, "the server keeps answering");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_finishes_its_headers_is_disconnected() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(dir.path());
    config.header_read_timeout = Duration::from_millis(300);
    let node = TestNode::start_with(dir.path(), config, false, true).await;
    // The server's clock starts when it begins reading the connection, so ours starts first.
    let started = Instant::now();
    let mut tls = node.client.connect().await;
    tls.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n").await.unwrap();
    tls.flush().await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the connection was not closed within 5 s");
    let text = String::from_utf8_lossy(&answer);
    assert!(answer.is_empty() || text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(started.elapsed() >= Duration::from_millis(250), "closed before the limit: {:?}", started.elapsed());
    node.stop().await;
}
