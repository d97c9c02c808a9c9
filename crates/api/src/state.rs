//! What every handler shares.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sluice_policy::CompiledPolicy;
use sluice_store::state::Digest;
use sluice_store::Store;

use crate::config::ApiConfig;
use crate::node::NodeView;
use crate::tls::CertificateSource;

#[derive(Clone)]
pub struct AppState {
    pub inner: Arc<Shared>,
}

pub struct Shared {
    pub store: Arc<Store>,
    pub node: Arc<dyn NodeView>,
    /// Set in cluster mode.
    pub cluster: Option<Arc<dyn crate::cluster::ClusterView>>,
    pub config: ApiConfig,
    pub certificate: CertificateSource,
    pub started: Instant,
    pub draining: AtomicBool,
    pub http: Mutex<HttpCounters>,
    /// The last policy compiled for `explain`, by document digest.
    pub compiled: Mutex<Option<(Digest, Arc<CompiledPolicy>)>>,
    /// The OpenAPI document, rendered once.
    pub openapi_json: String,
    /// The node's snapshot repository, set by the runtime once it is open.
    pub snapshots: OnceLock<Arc<dyn crate::snapshots::SnapshotService>>,
    pub upgrade: OnceLock<Arc<dyn crate::upgrade::UpgradeService>>,
    /// Since when the dataplane has run another version than the active one.
    pub policy_grace: crate::grace::Grace,
}

/// Requests answered, by (route template, method, status).
#[derive(Default)]
pub struct HttpCounters {
    pub requests: BTreeMap<(String, String, u16), RouteCounter>,
}

#[derive(Default, Clone, Copy)]
pub struct RouteCounter {
    pub count: u64,
    pub seconds_sum: f64,
}

impl HttpCounters {
    pub fn record(&mut self, route: &str, method: &str, status: u16, elapsed: Duration) {
        let counter = self.requests.entry((route.to_owned(), method.to_owned(), status)).or_default();
        counter.count += 1;
        counter.seconds_sum += elapsed.as_secs_f64();
    }
}

impl AppState {
    pub fn draining(&self) -> bool {
        self.inner.draining.load(Ordering::Relaxed)
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
