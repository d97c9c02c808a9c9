//! `sluice-bench store`: the replicated store and the HTTPS management API in-process, wired
//! as the node wires them (single-node Raft store on disk with fsync, `ApiServer` on
//! 127.0.0.1 with its generated certificate, a node view that compiles every newly active
//! policy and publishes it to a dataplane `PolicyHandle` before reporting it applied).
//!
//! Figures:
//! - `policy_put_p50_ms` / `policy_put_p99_ms`: sequential `PUT /api/v1/policy` of a 200 × 20
//!   policy over one keep-alive HTTPS connection with an admin token, each a new version;
//! - `api_get_rps`: `wrk -t2 -c8` against `GET /api/v1/policy` with a readonly token;
//! - `store_apply_per_s`: sequential settings writes through `Store::write`, each committed
//!   (fsync) and applied before the next.

use std::net::SocketAddr;
use std::path::Path;
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
use sluice_dataplane::policy_handle::PolicyHandle;
use sluice_store::state::{Command, Role};
use sluice_store::{Store, StoreConfig};
use tokio::sync::watch;

pub struct Report {
    pub figures: Vec<(&'static str, f64)>,
    /// Free-form lines printed as `# ...` comments (sample counts, sizes, paths).
    pub notes: Vec<String>,
}

/// The node view: applied version only; everything else empty.
struct BenchNode {
    applied: watch::Sender<Option<u64>>,
}

impl NodeView for BenchNode {
    fn stats(&self) -> serde_json::Value {
        serde_json::json!({})
    }
    fn counters(&self) -> NodeCounters {
        NodeCounters::default()
    }
    fn dataplane_check(&self) -> Check {
        Check::ok("bench")
    }
    fn dns_check(&self) -> Check {
        Check::ok("bench")
    }
    fn applied_policy_version(&self) -> watch::Receiver<Option<u64>> {
        self.applied.subscribe()
    }
    // The suite measures the store and policy routes; it has no dataplane to list.
    fn allowlist(&self, _: &AllowlistFilter, _: usize) -> Result<Vec<AllowlistEntry>, ListingError> {
        Ok(Vec::new())
    }
    fn flows(&self, _: &FlowFilter, _: usize) -> Result<Vec<FlowEntry>, ListingError> {
        Ok(Vec::new())
    }
}

/// Follows the store like the node's control loop: every newly active version is compiled on
/// a blocking thread and published to a `PolicyHandle`, then reported applied. There are no
/// dataplane workers here, so the node's wait for the workers to pick the new generation up
/// is not part of the figures.
async fn follow(store: Arc<Store>, node: Arc<BenchNode>, handle: PolicyHandle) {
    let mut views = store.subscribe();
    loop {
        let active = views.borrow_and_update().active_policy.clone();
        if let Some(active) = active.filter(|a| Some(a.version) != *node.applied.borrow()) {
            let document = active.document.clone();
            let compiled = tokio::task::spawn_blocking(move || sluice_policy::compile_json(&document))
                .await
                .expect("compile task")
                .expect("a stored policy compiles");
            handle.publish(compiled);
            node.applied.send_replace(Some(active.version));
        }
        if views.changed().await.is_err() {
            return;
        }
    }
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn connect(addr: SocketAddr, cert: &Path) -> Result<Sender, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(cert).map_err(|e| format!("{}: {e}", cert.display()))? {
        roots.add(cert.map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| format!("connect {addr}: {e}"))?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .map_err(|e| format!("TLS handshake: {e}"))?;
    let (sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .map_err(|e| format!("HTTP handshake: {e}"))?;
    tokio::spawn(connection);
    Ok(sender)
}

async fn send(
    sender: &mut Sender,
    method: Method,
    path: &str,
    token: &str,
    body: String,
) -> Result<(StatusCode, Bytes), String> {
    sender.ready().await.map_err(|e| format!("connection: {e}"))?;
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost")
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let response = sender.send_request(request).await.map_err(|e| format!("request: {e}"))?;
    let status = response.status();
    let body = response.into_body().collect().await.map_err(|e| format!("body: {e}"))?.to_bytes();
    Ok((status, body))
}

/// Nearest-rank percentile of sorted milliseconds.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// The 200 × 20 policy of `policy_compile_ms` with one port of one rule set from `i`, so that
/// every PUT stores a different document.
fn policy_document(base: &str, i: usize) -> String {
    let port = 2000 + i % 60_000;
    let document = base.replacen("\"dst_ports\":[123,1001]", &format!("\"dst_ports\":[123,{port}]"), 1);
    assert_ne!(document, base, "the benchmark policy has the rule the PUTs change");
    document
}

/// Refuses a data directory on tmpfs/ramfs, where fsync costs nothing.
pub fn check_real_disk(dir: &Path) -> Result<String, String> {
    let path = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).map_err(|e| e.to_string())?;
    // SAFETY: statfs writes into the zeroed struct; the path is NUL-terminated.
    let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(path.as_ptr(), &mut fs) } != 0 {
        return Err(format!("statfs {}: {}", dir.display(), std::io::Error::last_os_error()));
    }
    const TMPFS: i64 = 0x0102_1994;
    const RAMFS: i64 = 0x8584_58f6;
    let kind = fs.f_type as i64;
    if kind == TMPFS || kind == RAMFS {
        return Err(format!("{} is on tmpfs/ramfs: fsync would be free; use a disk directory", dir.display()));
    }
    Ok(format!("filesystem magic {kind:#x}"))
}

/// Runs `wrk` against `url` and returns its Requests/sec, failing on any error it reports.
fn run_wrk(url: &str, token: &str, seconds: u32) -> Result<(f64, String), String> {
    let output = std::process::Command::new("wrk")
        .args(["-t2", "-c8", &format!("-d{seconds}s"), "--latency"])
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .arg(url)
        .output()
        .map_err(|e| format!("cannot run wrk (install the Debian package `wrk`): {e}"))?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        return Err(format!("wrk failed ({}):\n{text}{}", output.status, String::from_utf8_lossy(&output.stderr)));
    }
    parse_wrk(&text).map(|rps| (rps, text))
}

/// Requests/sec from wrk's report; an error when it shows non-2xx answers or socket errors.
pub fn parse_wrk(text: &str) -> Result<f64, String> {
    if let Some(line) = text.lines().find(|l| l.contains("Non-2xx or 3xx responses") || l.contains("Socket errors")) {
        return Err(format!("wrk reported errors: {}\n{text}", line.trim()));
    }
    let requests =
        text.lines().find(|l| l.contains("requests in")).ok_or_else(|| format!("no request count in:\n{text}"))?;
    if requests.split_whitespace().next().and_then(|n| n.parse::<u64>().ok()).unwrap_or(0) == 0 {
        return Err(format!("wrk completed no request:\n{text}"));
    }
    text.lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| format!("no Requests/sec in:\n{text}"))
}

async fn mint(store: &Store, role: Role, id: &str) -> Result<String, String> {
    let request =
        MintRequest { role, id: Some(id.into()), label: String::new(), expires_in_s: None, secret_hash: None };
    let (secret, command) = mint_command(request).map_err(|e| format!("mint: {e:?}"))?;
    store
        .write("bench", command)
        .await
        .map_err(|e| format!("mint: {e}"))?
        .response
        .map_err(|e| format!("mint: {e:?}"))?;
    secret.ok_or_else(|| "mint: no secret generated".to_owned())
}

pub fn run(quick: bool) -> Result<Report, String> {
    // Two workers, as the node's control runtime.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(run_async(quick))
}

async fn run_async(quick: bool) -> Result<Report, String> {
    let (warmup, samples, wrk_seconds, settings_writes) = if quick { (5, 40, 3, 200) } else { (20, 200, 10, 1000) };
    let mut notes = Vec::new();
    // Under the workspace's target/bench (a disk), not /tmp (often tmpfs).
    let parent = Path::new("target").join("bench");
    std::fs::create_dir_all(&parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    let dir = tempfile::Builder::new().prefix("store-data-").tempdir_in(&parent).map_err(|e| e.to_string())?;
    notes.push(format!("data dir {} ({})", dir.path().display(), check_real_disk(dir.path())?));

    let store = Arc::new(
        Store::open_single_node(StoreConfig::single_node(dir.path().join("store")))
            .await
            .map_err(|e| format!("store: {e}"))?,
    );
    let admin = mint(&store, Role::Admin, "bench-admin").await?;
    let readonly = mint(&store, Role::Readonly, "bench-readonly").await?;
    let node = Arc::new(BenchNode { applied: watch::channel(None).0 });
    let initial = sluice_policy::compile_json(r#"{"default_action":"deny","source_groups":[]}"#)
        .map_err(|e| format!("initial policy: {e:?}"))?;
    tokio::spawn(follow(store.clone(), node.clone(), PolicyHandle::new(initial)));
    let mut config = ApiConfig::new(dir.path());
    config.http_bind = SocketAddr::from(([127, 0, 0, 1], 0));
    let server = ApiServer::start(config, store.clone(), node).await.map_err(|e| format!("API: {e}"))?;
    let cert = dir.path().join(sluice_api::tls::GENERATED_CERT_FILE);
    let mut sender = connect(server.http_addr, &cert).await?;

    // policy_put_*: every answer a 200 naming a new, higher version that is applied.
    let base = crate::realistic_policy_json(200, 20);
    notes.push(format!("policy 200 groups x 20 rules, {} bytes", base.len()));
    let mut last_version = 0u64;
    let mut times = Vec::with_capacity(samples);
    for i in 0..warmup + samples {
        let document = policy_document(&base, i);
        let started = Instant::now();
        let (status, body) = send(&mut sender, Method::PUT, "/api/v1/policy", &admin, document).await?;
        let elapsed = started.elapsed();
        if status != StatusCode::OK {
            return Err(format!("PUT {i}: {status}: {}", String::from_utf8_lossy(&body)));
        }
        let answer: serde_json::Value = serde_json::from_slice(&body).map_err(|e| format!("PUT {i} answer: {e}"))?;
        let version = answer["version"].as_u64().ok_or_else(|| format!("PUT {i}: no version in {answer}"))?;
        if version <= last_version || answer["applied"] != true {
            return Err(format!("PUT {i}: version {version} after {last_version}, applied {}", answer["applied"]));
        }
        last_version = version;
        if i >= warmup {
            times.push(elapsed.as_secs_f64() * 1e3);
        }
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    notes.push(format!(
        "{samples} PUTs after {warmup} warm-up, max {:.2} ms, last version {last_version}",
        times[times.len() - 1]
    ));
    let put_p50 = percentile(&times, 0.50);
    let put_p99 = percentile(&times, 0.99);

    // api_get_rps: the GET answers the active 200 × 20 policy.
    let (status, body) = send(&mut sender, Method::GET, "/api/v1/policy", &readonly, String::new()).await?;
    if status != StatusCode::OK {
        return Err(format!("GET /api/v1/policy with the readonly token: {status}"));
    }
    notes.push(format!("GET /api/v1/policy answer {} bytes", body.len()));
    drop(sender);
    let url = format!("https://127.0.0.1:{}/api/v1/policy", server.http_addr.port());
    let (rps, wrk_text) = tokio::task::spawn_blocking(move || run_wrk(&url, &readonly, wrk_seconds))
        .await
        .map_err(|e| e.to_string())??;
    notes.extend(wrk_text.lines().filter(|l| !l.trim().is_empty()).map(|l| format!("wrk: {l}")));

    // store_apply_per_s: settings writes, alternating so that each changes the state.
    let started = Instant::now();
    for i in 0..settings_writes {
        let command =
            Command::UpdateSettings { policy_history_limit: None, audit_log_limit: Some(5000 + (i % 2) as u32) };
        let applied = store.write("bench", command).await.map_err(|e| format!("settings write {i}: {e}"))?;
        applied.response.map_err(|e| format!("settings write {i}: {e:?}"))?;
    }
    let apply_per_s = settings_writes as f64 / started.elapsed().as_secs_f64();
    notes.push(format!("{settings_writes} sequential settings writes"));

    server.shutdown(Duration::from_secs(2)).await;
    Ok(Report {
        figures: vec![
            ("policy_put_p50_ms", put_p50),
            ("policy_put_p99_ms", put_p99),
            ("api_get_rps", rps),
            ("store_apply_per_s", apply_per_s),
        ],
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=200).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 100.0);
        assert_eq!(percentile(&v, 0.99), 198.0);
        assert_eq!(percentile(&[3.0], 0.99), 3.0);
    }

    #[test]
    fn wrk_report_parsing() {
        let ok = "  8 threads\n  1000 requests in 3.00s, 1.00MB read\nRequests/sec:    333.33\nTransfer/sec: 1MB\n";
        assert_eq!(parse_wrk(ok).unwrap(), 333.33);
        let bad = "  1000 requests in 3.00s\n  Non-2xx or 3xx responses: 12\nRequests/sec: 333.33\n";
        assert!(parse_wrk(bad).is_err());
        let socket =
            "  1000 requests in 3.00s\n  Socket errors: connect 0, read 1, write 0, timeout 0\nRequests/sec: 3\n";
        assert!(parse_wrk(socket).is_err());
        assert!(parse_wrk("  0 requests in 3.00s\nRequests/sec: 0.00\n").is_err());
    }

    #[test]
    fn every_put_document_differs() {
        let base = crate::realistic_policy_json(200, 20);
        assert_ne!(policy_document(&base, 0), policy_document(&base, 1));
    }
}
