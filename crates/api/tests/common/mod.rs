//! A real node for API tests: the real store in a temporary directory, the real HTTPS server on
//! a loopback port, a node view whose "dataplane" compiles every active policy with
//! sluice-policy before reporting it applied (as the runtime does), and an HTTPS client on
//! rustls/ring that trusts only the node's generated certificate.

#![allow(dead_code)]

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use sluice_api::node::{
    AllowlistEntry, AllowlistFilter, Check, FlowEntry, FlowFilter, ListingError, NodeCounters, NodeView,
};
use sluice_api::secret::{mint_command, MintRequest};
use sluice_api::{ApiConfig, ApiServer};
use sluice_policy::CompiledPolicy;
use sluice_store::state::Role;
use sluice_store::{Store, StoreConfig};
use tokio::sync::watch;

pub const POLICY_V1: &str = r#"{
  "default_action": "deny",
  "source_groups": [
    { "id": "apps", "priority": 10, "mode": "enforce",
      "sources": { "cidrs": ["10.10.0.0/24"] },
      "rules": [
        { "id": "api", "action": "allow",
          "match": { "hostnames": ["api.example.com"], "proto": "tcp", "dst_ports": [443] } },
        { "id": "ntp", "action": "allow",
          "match": { "dst_cidrs": ["203.0.113.0/24"], "proto": "udp", "dst_ports": [123] } }
      ] }
  ]
}"#;

/// V1 plus a rule allowing ping.
pub const POLICY_V2: &str = r#"{
  "default_action": "deny",
  "source_groups": [
    { "id": "apps", "priority": 10, "mode": "enforce",
      "sources": { "cidrs": ["10.10.0.0/24"] },
      "rules": [
        { "id": "api", "action": "allow",
          "match": { "hostnames": ["api.example.com"], "proto": "tcp", "dst_ports": [443] } },
        { "id": "ntp", "action": "allow",
          "match": { "dst_cidrs": ["203.0.113.0/24"], "proto": "udp", "dst_ports": [123] } },
        { "id": "ping", "action": "allow", "match": { "proto": "icmp", "icmp_types": [8] } }
      ] }
  ]
}"#;

/// The node view of the tests: a "dataplane" that really compiles what the store makes active.
pub struct TestNodeView {
    applied: watch::Sender<Option<u64>>,
    pub compiled: Mutex<Option<Arc<CompiledPolicy>>>,
    pub flows: Vec<FlowEntry>,
    pub allowlist: Vec<AllowlistEntry>,
    pub dns_ok: bool,
    /// When set, every listing fails with it (the worker busy, silent or gone).
    pub listing_error: Mutex<Option<ListingError>>,
}

impl TestNodeView {
    pub fn new() -> TestNodeView {
        let flow = |n: u8, proto: &str, dst: [u8; 4], port: u16| FlowEntry {
            proto: proto.into(),
            src: Ipv4Addr::new(10, 10, 0, n),
            src_port: 40000 + u16::from(n),
            dst: Ipv4Addr::from(dst),
            dst_port: port,
            nat_ip: Ipv4Addr::new(203, 0, 113, 2),
            nat_port: 50000 + u16::from(n),
            state: "tcp_established".into(),
            origin: "internal".into(),
            idle_ms: 10,
            expires_in_ms: 1_000,
            policy_generation: 1,
            group: None,
            rule: None,
        };
        let mut flows = Vec::new();
        for n in 2..=6 {
            flows.push(flow(n, "tcp", [198, 51, 100, 10], 443));
        }
        flows.push(flow(7, "udp", [203, 0, 113, 1], 123));
        let allowlist = vec![
            AllowlistEntry {
                ip: Ipv4Addr::new(198, 51, 100, 10),
                group: Some("apps".into()),
                rule: Some("api".into()),
                rule_key: "00000000000000aa".into(),
                expires_in_ms: 30_000,
                pinned: true,
            },
            AllowlistEntry {
                ip: Ipv4Addr::new(198, 51, 100, 11),
                group: Some("apps".into()),
                rule: Some("api".into()),
                rule_key: "00000000000000aa".into(),
                expires_in_ms: 12_000,
                pinned: false,
            },
        ];
        TestNodeView {
            applied: watch::channel(None).0,
            compiled: Mutex::new(None),
            flows,
            allowlist,
            dns_ok: true,
            listing_error: Mutex::new(None),
        }
    }

    /// Follows the store like the runtime does: compile the active version, swap it in, then
    /// report it applied. With `apply` false the "dataplane" never takes a policy.
    pub fn follow(self: &Arc<Self>, store: &Arc<Store>, apply: bool) {
        let mut views = store.subscribe();
        let node = self.clone();
        tokio::spawn(async move {
            loop {
                let view = views.borrow_and_update().clone();
                if let (true, Some(active)) = (apply, &view.active_policy) {
                    let compiled =
                        sluice_policy::compile_json(&active.document).expect("the store holds only compiled policies");
                    *node.compiled.lock().unwrap() = Some(Arc::new(compiled));
                    node.applied.send_replace(Some(active.version));
                }
                if views.changed().await.is_err() {
                    return;
                }
            }
        });
    }
}

impl NodeView for TestNodeView {
    fn stats(&self) -> Value {
        serde_json::json!({ "running": true, "workers": 1, "counters": { "policy_denied": 3, "internal_rx_packets": 10 } })
    }

    fn counters(&self) -> NodeCounters {
        NodeCounters {
            dataplane: vec![("policy_denied".into(), 3), ("internal_rx_packets".into(), 10)],
            dns: vec![("queries".into(), 5)],
            ports: vec![("internal".into(), vec![("rx_packets".into(), 10)])],
            gauges: vec![("flows".into(), self.flows.len() as u64)],
        }
    }

    fn dataplane_check(&self) -> Check {
        Check::ok("1 worker running")
    }

    fn dns_check(&self) -> Check {
        if self.dns_ok {
            Check::ok("serving")
        } else {
            Check::failed("no upstream answers")
        }
    }

    fn applied_policy_version(&self) -> watch::Receiver<Option<u64>> {
        self.applied.subscribe()
    }

    fn allowlist(&self, filter: &AllowlistFilter, limit: usize) -> Result<Vec<AllowlistEntry>, ListingError> {
        if let Some(e) = self.listing_error.lock().unwrap().clone() {
            return Err(e);
        }
        Ok(self.allowlist.iter().filter(|e| filter.matches(e)).take(limit).cloned().collect())
    }

    fn flows(&self, filter: &FlowFilter, limit: usize) -> Result<Vec<FlowEntry>, ListingError> {
        if let Some(e) = self.listing_error.lock().unwrap().clone() {
            return Err(e);
        }
        Ok(self.flows.iter().filter(|f| filter.matches(f)).take(limit).cloned().collect())
    }
}

pub struct TestNode {
    pub dir: PathBuf,
    pub store: Arc<Store>,
    pub view: Arc<TestNodeView>,
    pub server: Option<ApiServer>,
    pub client: Client,
    pub admin: String,
    pub readonly: String,
}

pub async fn mint(store: &Store, role: Role, id: &str, expires_in_s: Option<u64>) -> String {
    let (secret, command) = mint_command(MintRequest {
        role,
        id: Some(id.into()),
        label: format!("{id} for tests"),
        expires_in_s,
        secret_hash: None,
    })
    .unwrap();
    store.write("test-setup", command).await.unwrap().response.unwrap();
    secret.expect("a generated secret")
}

pub fn config(dir: &Path) -> ApiConfig {
    let mut config = ApiConfig::new(dir);
    config.http_bind = SocketAddr::from(([127, 0, 0, 1], 0));
    config.apply_timeout = Duration::from_secs(5);
    config
}

impl TestNode {
    /// A fresh node with an `admin` and a `reader` token.
    pub async fn start(dir: &Path) -> TestNode {
        TestNode::start_with(dir, config(dir), true, true).await
    }

    pub async fn start_with(dir: &Path, config: ApiConfig, mint_tokens: bool, apply: bool) -> TestNode {
        let store = Arc::new(Store::open_single_node(StoreConfig::single_node(dir.join("store"))).await.unwrap());
        let (admin, readonly) = if mint_tokens {
            (mint(&store, Role::Admin, "admin", None).await, mint(&store, Role::Readonly, "reader", None).await)
        } else {
            (String::new(), String::new())
        };
        let view = Arc::new(TestNodeView::new());
        view.follow(&store, apply);
        let server = ApiServer::start(config, store.clone(), view.clone()).await.unwrap();
        let client = Client::new(server.http_addr, &dir.join(sluice_api::tls::GENERATED_CERT_FILE));
        TestNode { dir: dir.to_owned(), store, view, server: Some(server), client, admin, readonly }
    }

    pub async fn stop(mut self) {
        self.server.take().unwrap().shutdown(Duration::from_secs(1)).await;
        // An aborted task (an admin socket's accept loop, say) drops its store handle when the
        // runtime next reaches it, not at `abort()`: wait for that, bounded, as `sluice run` does.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let mut store = self.store;
        let store = loop {
            match Arc::try_unwrap(store) {
                Ok(owned) => break owned,
                Err(shared) if std::time::Instant::now() < deadline => {
                    store = shared;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err(_) => panic!("something still holds the store 5 s after the server stopped"),
            }
        };
        store.shutdown().await.unwrap();
    }

    pub async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.client.json(Method::GET, path, Some(token), None).await
    }

    pub async fn send(&self, method: Method, path: &str, token: &str, body: &str) -> (StatusCode, Value) {
        self.client.json(method, path, Some(token), Some(body.as_bytes().to_vec())).await
    }
}

/// An HTTPS/1.1 client on rustls with the ring provider, trusting one certificate.
pub struct Client {
    addr: SocketAddr,
    connector: tokio_rustls::TlsConnector,
    /// The name the server's certificate is verified against.
    pub name: ServerName<'static>,
}

pub struct Answer {
    pub status: StatusCode,
    pub headers: hyper::HeaderMap,
    pub body: Vec<u8>,
}

impl Client {
    pub fn new(addr: SocketAddr, cert: &Path) -> Client {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(cert).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Client {
            addr,
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
            name: ServerName::try_from("localhost").unwrap(),
        }
    }

    pub async fn connect(&self) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
        let tcp = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        self.connector.connect(self.name.clone(), tcp).await.unwrap()
    }

    pub async fn request(&self, method: Method, path: &str, token: Option<&str>, body: Option<Vec<u8>>) -> Answer {
        let tcp = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        let tls = self.connector.connect(self.name.clone(), tcp).await.unwrap();
        send(hyper_util::rt::TokioIo::new(tls), method, path, token, body).await
    }

    /// Declares a body of `declared` bytes, sends only the first 64 KiB of it, and reads the
    /// answer. A server that refuses an oversized body answers as soon as it sees the declared
    /// length and closes; writing the whole body through a regular client would race that close
    /// (a broken pipe instead of the answer), which is not what is under test.
    pub async fn oversized(&self, method: Method, path: &str, token: &str, declared: usize) -> (StatusCode, Value) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut tls = self.connect().await;
        let head = format!(
            "{method} {path} HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {token}\r\n\
             content-type: application/json\r\ncontent-length: {declared}\r\n\r\n"
        );
        tls.write_all(head.as_bytes()).await.unwrap();
        // The server may already have answered and closed: a failed write is fine here.
        let _ = tls.write_all(&vec![b'x'; 64 * 1024]).await;
        let _ = tls.flush().await;
        let mut raw = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut raw)).await;
        let text = String::from_utf8_lossy(&raw);
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("{path}: no answer head in {text:?}"));
        let code: u16 = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("{path}: {head}"));
        let length = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap())
            })
            .unwrap_or(body.len());
        let value = serde_json::from_str(&body[..length.min(body.len())])
            .unwrap_or_else(|e| panic!("{path}: body is not JSON ({e}): {body}"));
        (StatusCode::from_u16(code).unwrap(), value)
    }

    pub async fn json(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> (StatusCode, Value) {
        let answer = self.request(method, path, token, body).await;
        let value = serde_json::from_slice(&answer.body)
            .unwrap_or_else(|e| panic!("{path}: body is not JSON ({e}): {}", String::from_utf8_lossy(&answer.body)));
        (answer.status, value)
    }
}

/// Plain HTTP (the metrics listener).
pub async fn plain_get(addr: SocketAddr, path: &str) -> Answer {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    send(hyper_util::rt::TokioIo::new(tcp), Method::GET, path, None, None).await
}

async fn send<IO>(io: IO, method: Method, path: &str, token: Option<&str>, body: Option<Vec<u8>>) -> Answer
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await.unwrap();
    tokio::spawn(connection);
    let mut request = Request::builder().method(method).uri(path).header("host", "localhost");
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    if body.is_some() {
        request = request.header("content-type", "application/json");
    }
    let request = request.body(Full::new(Bytes::from(body.unwrap_or_default()))).unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes().to_vec();
    Answer { status, headers, body }
}

pub fn error_code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or_else(|| panic!("not an error body: {body}"))
}

impl TestNodeView {
    pub fn applied_policy_version_now(&self) -> watch::Ref<'_, Option<u64>> {
        self.applied.borrow()
    }
}
