//! Indicative API figures on this machine: `PUT /api/v1/policy` latency (stored with fsync,
//! compiled and "applied" by a node view that compiles like the runtime) and sequential
//! `GET /api/v1/policy` requests per second over one keep-alive HTTPS connection.
//!
//! `cargo run --release -p sluice-api --example api_latency [puts] [gets]`
//! Wall-clock figures on a shared machine are indicative only.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use sluice_api::node::{
    AllowlistEntry, AllowlistFilter, Check, FlowEntry, FlowFilter, ListingError, NodeCounters, NodeView,
};
use sluice_api::secret::{mint_command, MintRequest};
use sluice_api::{ApiConfig, ApiServer};
use sluice_store::state::Role;
use sluice_store::{Store, StoreConfig};
use tokio::sync::watch;

/// Applies whatever the store makes active after compiling it, as the runtime will.
struct CompilingNode {
    applied: watch::Sender<Option<u64>>,
}

impl NodeView for CompilingNode {
    fn stats(&self) -> serde_json::Value {
        serde_json::json!({})
    }
    fn counters(&self) -> NodeCounters {
        NodeCounters::default()
    }
    fn dataplane_check(&self) -> Check {
        Check::ok("example")
    }
    fn dns_check(&self) -> Check {
        Check::ok("example")
    }
    fn applied_policy_version(&self) -> watch::Receiver<Option<u64>> {
        self.applied.subscribe()
    }
    fn allowlist(&self, _: &AllowlistFilter, _: usize) -> Result<Vec<AllowlistEntry>, ListingError> {
        Ok(Vec::new())
    }
    fn flows(&self, _: &FlowFilter, _: usize) -> Result<Vec<FlowEntry>, ListingError> {
        Ok(Vec::new())
    }
}

/// A policy of `groups` groups with `rules` rules each.
fn policy(groups: usize, rules: usize, salt: usize) -> String {
    let groups: Vec<serde_json::Value> = (0..groups)
        .map(|g| {
            let rules: Vec<serde_json::Value> = (0..rules)
                .map(|r| serde_json::json!({ "id": format!("r{r}"), "action": "allow",
                    "match": { "dst_cidrs": [format!("198.{}.{}.0/24", r % 200, g % 250)], "proto": "tcp", "dst_ports": [443 + (salt % 1000) as u64] } }))
                .collect();
            serde_json::json!({ "id": format!("g{g}"), "priority": g, "mode": "enforce",
                "sources": { "cidrs": [format!("10.{}.{}.0/24", g / 250, g % 250)] }, "rules": rules })
        })
        .collect();
    serde_json::json!({ "default_action": "deny", "source_groups": groups }).to_string()
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn connect(addr: SocketAddr, cert: &std::path::Path) -> Sender {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(cert).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let (sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await.unwrap();
    tokio::spawn(connection);
    sender
}

async fn send(sender: &mut Sender, method: Method, path: &str, token: &str, body: String) -> StatusCode {
    sender.ready().await.unwrap();
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost")
        .header("authorization", format!("Bearer {token}"))
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status();
    response.into_body().collect().await.unwrap();
    status
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1000.0
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let puts: usize = args.next().map_or(100, |a| a.parse().unwrap());
    let gets: usize = args.next().map_or(5000, |a| a.parse().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open_single_node(StoreConfig::single_node(dir.path().join("store"))).await.unwrap());
    let (secret, command) = mint_command(MintRequest {
        role: Role::Admin,
        id: Some("bench".into()),
        label: String::new(),
        expires_in_s: None,
        secret_hash: None,
    })
    .unwrap();
    let secret = secret.expect("a generated secret");
    store.write("bench", command).await.unwrap().response.unwrap();
    let node = Arc::new(CompilingNode { applied: watch::channel(None).0 });
    let mut views = store.subscribe();
    let follower = node.clone();
    tokio::spawn(async move {
        loop {
            let view = views.borrow_and_update().clone();
            if let Some(active) = &view.active_policy {
                sluice_policy::compile_json(&active.document).unwrap();
                follower.applied.send_replace(Some(active.version));
            }
            if views.changed().await.is_err() {
                return;
            }
        }
    });
    let mut config = ApiConfig::new(dir.path());
    config.http_bind = SocketAddr::from(([127, 0, 0, 1], 0));
    let server = ApiServer::start(config, store.clone(), node).await.unwrap();
    let mut sender = connect(server.http_addr, &dir.path().join(sluice_api::tls::GENERATED_CERT_FILE)).await;

    for (groups, rules) in [(2, 3), (200, 20)] {
        let documents: Vec<String> = (0..puts).map(|i| policy(groups, rules, i)).collect();
        let mut times = Vec::with_capacity(puts);
        for document in documents {
            let started = Instant::now();
            assert_eq!(send(&mut sender, Method::PUT, "/api/v1/policy", &secret, document).await, StatusCode::OK);
            times.push(started.elapsed());
        }
        times.sort();
        let bytes = policy(groups, rules, 0).len();
        println!(
            "BENCH api_policy_put_{groups}x{rules}_p50_ms {:.2} (p99 {:.2} ms, {puts} puts, {bytes} bytes each)",
            percentile(&times, 0.5),
            percentile(&times, 0.99)
        );
    }
    let started = Instant::now();
    for _ in 0..gets {
        assert_eq!(send(&mut sender, Method::GET, "/api/v1/tokens", &secret, String::new()).await, StatusCode::OK);
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "BENCH api_get_small_sequential_rps {:.0} ({gets} GETs of the token list, one connection)",
        gets as f64 / elapsed
    );
    server.shutdown(Duration::from_secs(1)).await;
}
