//! Starting and stopping the listeners: HTTPS for the API, optional plain HTTP for
//! `/metrics` alone.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use axum_server::tls_rustls::RustlsConfig;
use axum_server::Handle;
use hyper_util::rt::TokioTimer;
use sluice_store::Store;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{ApiConfig, MAX_BODY_BYTES};
use crate::error::ApiError;
use crate::local::LocalApi;
use crate::node::NodeView;
use crate::routes::{self, health};
use crate::state::{AppState, HttpCounters, Shared};
use crate::tls;

#[derive(Debug)]
pub enum StartError {
    Tls(tls::TlsError),
    Bind { addr: SocketAddr, reason: String },
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Tls(e) => write!(f, "API TLS: {e}"),
            StartError::Bind { addr, reason } => write!(f, "cannot listen on {addr}: {reason}"),
        }
    }
}

impl std::error::Error for StartError {}

/// The running API. Dropping it does not stop the listeners; call [`ApiServer::shutdown`].
pub struct ApiServer {
    /// Where the HTTPS listener is bound (the real port when 0 was asked).
    pub http_addr: SocketAddr,
    pub metrics_addr: Option<SocketAddr>,
    state: AppState,
    /// The same router the listener serves, for the admin socket's in-process requests.
    local: LocalApi,
    handle: Handle<SocketAddr>,
    stop_metrics: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl ApiServer {
    /// Binds the listeners and starts serving. Must run inside a Tokio runtime.
    pub async fn start(config: ApiConfig, store: Arc<Store>, node: Arc<dyn NodeView>) -> Result<ApiServer, StartError> {
        ApiServer::start_with_cluster(config, store, node, None).await
    }

    /// `start` for a cluster member: the cluster routes and readiness checks use `cluster`.
    pub async fn start_with_cluster(
        config: ApiConfig,
        store: Arc<Store>,
        node: Arc<dyn NodeView>,
        cluster: Option<Arc<dyn crate::cluster::ClusterView>>,
    ) -> Result<ApiServer, StartError> {
        let (tls_config, certificate) = tls::server_config(&config).map_err(StartError::Tls)?;
        let (router, api) = routes::api_router();
        let openapi_json = serde_json::to_string_pretty(&api).unwrap_or_default();
        let state = AppState {
            inner: Arc::new(Shared {
                store,
                node,
                cluster,
                config: config.clone(),
                certificate,
                started: Instant::now(),
                draining: AtomicBool::new(false),
                http: Mutex::new(HttpCounters::default()),
                compiled: Mutex::new(None),
                openapi_json,
                snapshots: std::sync::OnceLock::new(),
                upgrade: std::sync::OnceLock::new(),
                policy_grace: crate::grace::Grace::new(crate::grace::POLICY_GRACE),
            }),
        };
        let app = router
            .fallback(not_found)
            .method_not_allowed_fallback(method_not_allowed)
            .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
            .layer(middleware::from_fn_with_state(state.clone(), observe))
            .with_state(state.clone());

        let local = LocalApi::new(app.clone());
        let listener = bind(config.http_bind)?;
        let http_addr =
            listener.local_addr().map_err(|e| StartError::Bind { addr: config.http_bind, reason: e.to_string() })?;
        let handle = Handle::new();
        let mut server = axum_server::from_tcp_rustls(listener, RustlsConfig::from_config(tls_config))
            .map_err(|e| StartError::Bind { addr: http_addr, reason: e.to_string() })?
            .handle(handle.clone());
        server.http_builder().http1().timer(TokioTimer::new()).header_read_timeout(config.header_read_timeout);
        let mut tasks = vec![tokio::spawn(async move {
            if let Err(e) = server.serve(app.into_make_service()).await {
                tracing::error!(error = %e, "the API listener stopped");
            }
        })];
        tracing::info!(addr = %http_addr, "API listening (HTTPS)");

        let (stop_metrics, mut stop_rx) = watch::channel(false);
        let mut metrics_addr = None;
        if let Some(bind_addr) = config.metrics_bind {
            let listener = bind(bind_addr)?;
            let listener = tokio::net::TcpListener::from_std(listener)
                .map_err(|e| StartError::Bind { addr: bind_addr, reason: e.to_string() })?;
            let addr =
                listener.local_addr().map_err(|e| StartError::Bind { addr: bind_addr, reason: e.to_string() })?;
            metrics_addr = Some(addr);
            let metrics_app = Router::new()
                .route("/metrics", get(health::metrics))
                .fallback(not_found)
                .layer(middleware::from_fn_with_state(state.clone(), observe))
                .with_state(state.clone());
            tasks.push(tokio::spawn(async move {
                let stopped = async move {
                    let _ = stop_rx.wait_for(|stop| *stop).await;
                };
                if let Err(e) = axum::serve(listener, metrics_app).with_graceful_shutdown(stopped).await {
                    tracing::error!(error = %e, "the metrics listener stopped");
                }
            }));
            tracing::info!(%addr, "metrics listening (HTTP)");
        }
        Ok(ApiServer { http_addr, metrics_addr, state, local, handle, stop_metrics, tasks })
    }

    /// The router for in-process requests (the admin socket relays the CLI's requests here).
    /// Serves `/api/v1/snapshots` from `service` (set once; later calls are ignored).
    pub fn set_snapshots(&self, service: Arc<dyn crate::snapshots::SnapshotService>) {
        let _ = self.state.inner.snapshots.set(service);
    }

    /// Serves `/api/v1/upgrade` and `/api/v1/releases` from `service` (set once).
    pub fn set_upgrade(&self, service: Arc<dyn crate::upgrade::UpgradeService>) {
        let _ = self.state.inner.upgrade.set(service);
    }

    /// A handle the control plane keeps to read readiness and request totals.
    pub fn probe(&self) -> Probe {
        Probe { state: Arc::downgrade(&self.state.inner) }
    }

    pub fn local(&self) -> LocalApi {
        self.local.clone()
    }

    /// Makes `/ready` fail its `draining` check (the first step of a planned stop) while the
    /// API keeps answering.
    pub fn begin_draining(&self) {
        self.state.inner.draining.store(true, Ordering::Relaxed);
    }

    /// Stops accepting connections, lets requests in flight finish for up to `grace`, then
    /// waits for the listeners to end.
    pub async fn shutdown(self, grace: Duration) {
        self.begin_draining();
        self.handle.graceful_shutdown(Some(grace));
        let _ = self.stop_metrics.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, StartError> {
    let listener = std::net::TcpListener::bind(addr).map_err(|e| StartError::Bind { addr, reason: e.to_string() })?;
    listener.set_nonblocking(true).map_err(|e| StartError::Bind { addr, reason: e.to_string() })?;
    Ok(listener)
}

async fn not_found() -> ApiError {
    ApiError::not_found("not_found", "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "this route does not take that method")
}

/// Times every request out after the configured limit, counts it by route template, and
/// logs it (method, route, status: never headers, so never a token).
async fn observe(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route =
        request.extensions().get::<MatchedPath>().map_or_else(|| "(unmatched)".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    let response = match tokio::time::timeout(state.inner.config.request_timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "request_timeout",
            format!("the request took longer than {} ms", state.inner.config.request_timeout.as_millis()),
        )
        .into_response(),
    };
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    state.inner.http.lock().unwrap_or_else(|p| p.into_inner()).record(&route, &method, status, elapsed);
    tracing::debug!(%method, %route, status, elapsed_ms = elapsed.as_millis() as u64, "api request");
    response
}

/// Readiness and request totals of a running API, for the upgrade gates. It holds the API's
/// state weakly: the upgrade service the state holds keeps a probe, and a strong handle would
/// make a cycle that keeps the store open after the API stopped.
#[derive(Clone)]
pub struct Probe {
    state: std::sync::Weak<crate::state::Shared>,
}

impl Probe {
    fn state(&self) -> Option<AppState> {
        self.state.upgrade().map(|inner| AppState { inner })
    }

    /// Whether every readiness check passes now (what `/ready` answers); false once the API
    /// is gone.
    pub fn ready(&self) -> bool {
        self.state().is_some_and(|state| crate::routes::health::readiness(&state).ready)
    }

    /// Requests answered so far and how many of them were server errors (5xx).
    pub fn request_totals(&self) -> (u64, u64) {
        let Some(state) = self.state() else { return (0, 0) };
        let http = state.inner.http.lock().unwrap_or_else(|p| p.into_inner());
        let mut total = 0;
        let mut errors = 0;
        for ((_, _, status), counter) in &http.requests {
            total += counter.count;
            if *status >= 500 {
                errors += counter.count;
            }
        }
        (total, errors)
    }
}
