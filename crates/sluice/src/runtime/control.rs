//! The control plane of `sluice run`: the policy store, the policy follower and the HTTPS
//! management API (with the admin socket), on a small multi-thread Tokio runtime whose
//! threads are named `sluice-control`. The control loop on the main thread stays synchronous
//! and reaches this only through [`ControlPlane`]'s methods.
//!
//! Policy flow: the store holds the policy versions and the active pointer. At start, a
//! store that already has an active version wins over `--policy` (which then only
//! bootstraps an empty store, as actor `bootstrap`). The follower watches the store's
//! applied view; each newly active version is compiled, published to the [`PolicyHandle`]
//! the workers and the DNS proxy read, and reported as applied once the worker's
//! `policy_generation` counter shows it. API writes wait on that report. SIGHUP writes the
//! `--policy` file to the store (actor `sighup`) and the follower applies it like any write.
//!
//! The dataplane never waits for any of this: if the runtime or the store fails while the
//! node runs, the workers keep the last policy they were given.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_api::admin_socket::AdminSocket;
use sluice_api::{ApiConfig, ApiServer, ClusterView, NodeView};
use sluice_cluster::identity::ClusterPaths;
use sluice_cluster::{Cluster, ClusterConfig, Role};
use sluice_dataplane::counters::{Counter, CounterBlock};
use sluice_dataplane::policy_handle::PolicyHandle;
use sluice_policy::CompiledPolicy;
use sluice_store::state::{Command, Outcome};
use sluice_store::{Store, StoreConfig};
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use super::cluster_view::{ClusterHandle, Local};
use super::view::NodeState;
use crate::config::NodeConfig;
use crate::exit::{Exit, Failure};

/// The store's directory under the data directory.
pub const STORE_DIR: &str = "store";
/// After SIGTERM, how long `/ready` fails while the API still answers, so load balancers
/// notice before the listener goes away.
const DRAIN_PERIOD: Duration = Duration::from_millis(200);
/// How long requests in flight may finish once the listener stops.
const API_GRACE: Duration = Duration::from_millis(200);
/// How long a SIGHUP write to the store may take.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the follower waits for the worker to show a new policy generation.
const APPLY_WAIT: Duration = Duration::from_secs(5);

fn control_failure(message: String) -> Failure {
    Failure::new(Exit::ControlPlane, message)
}

pub(super) struct ControlPlane {
    runtime: Runtime,
    store: Arc<Store>,
    cluster: Option<Arc<Cluster>>,
    api: Option<ApiServer>,
    admin: Option<AdminSocket>,
    follower: Option<JoinHandle<()>>,
    /// `--snapshot-interval`'s task.
    snapshots: Option<JoinHandle<()>>,
    /// The upgrade driver (runs the replicated plan while this node leads).
    upgrades: Option<JoinHandle<()>>,
    /// Readiness as `/ready` answers it, once the API runs.
    probe: Option<sluice_api::Probe>,
    /// Set by the upgrade service: stop and exec the release on probation.
    restart: Arc<std::sync::atomic::AtomicBool>,
}

/// The opened control plane and the policy the dataplane starts with.
pub(super) struct Opened {
    pub control: ControlPlane,
    pub policy: CompiledPolicy,
    /// The store's version of `policy` (`None`: the deny-all default, nothing stored).
    pub version: Option<u64>,
}

/// Starts the runtime and opens the store (creating it and the cluster identity on first
/// use), then decides the starting policy: the store's active version, else `file_policy`
/// (the compiled `--policy` file), stored as the first version, else deny-all.
pub(super) fn open(config: &NodeConfig, file_policy: Option<CompiledPolicy>) -> Result<Opened, Failure> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("sluice-control")
        .enable_all()
        .build()
        .map_err(|e| control_failure(format!("cannot start the control-plane runtime: {e}")))?;
    let dir = config.data_dir.join(STORE_DIR);
    let (store, cluster, may_bootstrap) = match &config.cluster {
        None => {
            let mut store_config = StoreConfig::single_node(&dir);
            // A data root restored from a cluster member's snapshot keeps that member's id.
            if let Some(id) = restored_node_id(&config.data_dir)? {
                store_config.node_id = id;
            }
            let store = runtime.block_on(Store::open_single_node(store_config)).map_err(|e| {
                control_failure(format!(
                    "cannot open the policy store in {}: {e}; is another sluice using this --data-dir?",
                    dir.display()
                ))
            })?;
            let cluster_dir = config.data_dir.join("cluster");
            let marker = sluice_cluster::restored::read_marker(&cluster_dir).map_err(control_failure)?;
            if let Some(marker) = marker {
                runtime
                    .block_on(sluice_cluster::restored::finish(&store, &cluster_dir, &marker))
                    .map_err(|e| control_failure(format!("cannot finish the restore: {e}")))?;
            }
            (Arc::new(store), None, true)
        }
        Some(settings) => {
            let cluster_config = ClusterConfig {
                store_dir: dir.clone(),
                paths: ClusterPaths {
                    cluster_dir: settings.cluster_data_dir.clone(),
                    node_id_path: settings.node_id_path.clone(),
                    bootstrap_token_path: settings.bootstrap_token_path.clone(),
                },
                bind: settings.bind,
                join_bind: settings.join_bind,
                advertise: settings.advertise.clone(),
                join: settings.join.clone(),
                expected_cluster_id: settings.expected_cluster_id.clone(),
            };
            let (cluster, store) = runtime
                .block_on(Cluster::start(&cluster_config))
                .map_err(|e| Failure::new(Exit::Cluster, format!("cluster: {e}")))?;
            // Only a seed may write the --policy file into an empty store: a joiner receives
            // the cluster's state, and a restarted member has it.
            let seed = cluster.role == Role::Seed;
            (store, Some(Arc::new(cluster)), seed)
        }
    };
    let cluster_id = runtime
        .block_on(store.ensure_cluster_identity("bootstrap"))
        .map_err(|e| control_failure(format!("cannot initialise the store in {}: {e}", dir.display())))?;
    let status = store.status();
    info!(store = %dir.display(), cluster_id = %cluster_id, applied_index = status.applied_index, "store open");
    let file_policy = if may_bootstrap { file_policy } else { None };
    let (policy, version) = runtime.block_on(starting_policy(&store, config.policy.as_deref(), file_policy))?;
    let control = ControlPlane {
        runtime,
        store,
        cluster,
        api: None,
        admin: None,
        follower: None,
        snapshots: None,
        upgrades: None,
        probe: None,
        restart: Arc::default(),
    };
    Ok(Opened { control, policy, version })
}

/// The node id a restore wrote into a single node's data root (`<data-dir>/node_id`), if any.
fn restored_node_id(data_dir: &Path) -> Result<Option<u64>, Failure> {
    let path = data_dir.join("node_id");
    match std::fs::read_to_string(&path) {
        Ok(text) => match text.trim().parse::<u64>() {
            Ok(id) if id > 0 => Ok(Some(id)),
            _ => Err(control_failure(format!("{}: not a node id: {:?}", path.display(), text.trim()))),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(control_failure(format!("cannot read {}: {e}", path.display()))),
    }
}

async fn starting_policy(
    store: &Store,
    path: Option<&Path>,
    file_policy: Option<CompiledPolicy>,
) -> Result<(CompiledPolicy, Option<u64>), Failure> {
    if let Some((version, document)) = store.read(|s| s.active_policy().map(|p| (p.version, p.document.clone()))) {
        let policy = sluice_policy::compile_json(&document).map_err(|errors| {
            control_failure(format!(
                "the store's active policy version {version} does not compile ({} error(s), first: {})",
                errors.0.len(),
                errors.0.first().map_or_else(String::new, |e| format!("{}: {}", e.path, e.message))
            ))
        })?;
        match path {
            Some(path) => info!(
                policy_version = version,
                policy_file = %path.display(),
                "policy: the store's active version {version} is in force; the --policy file is not applied \
                 because the store already holds a policy (it only bootstraps an empty store; SIGHUP writes it \
                 to the store as a new version)"
            ),
            None => info!(policy_version = version, "policy: the store's active version {version} is in force"),
        }
        return Ok((policy, Some(version)));
    }
    let (Some(path), Some(policy)) = (path, file_policy) else {
        warn!("no policy in the store and no --policy given: applying a deny-all policy; nothing leaves until a policy is written through the API");
        let deny_all = sluice_policy::compile_json(super::DENY_ALL).expect("the deny-all policy compiles");
        return Ok((deny_all, None));
    };
    let document = std::fs::read_to_string(path)
        .map_err(|e| Failure::new(Exit::Policy, format!("cannot read policy file {}: {e}", path.display())))?;
    let version = put_policy(store, "bootstrap", document, format!("bootstrap from {}", path.display()))
        .await
        .map_err(|e| control_failure(format!("cannot store the bootstrap policy: {e}")))?;
    info!(
        policy_version = version,
        policy_file = %path.display(),
        "policy: the store was empty; the --policy file is stored as version {version} and is in force"
    );
    Ok((policy, Some(version)))
}

/// Proposes `document` (already compiled by the caller) as the new active version.
async fn put_policy(store: &Store, actor: &str, document: String, comment: String) -> Result<u64, String> {
    let applied = store.write(actor, Command::PutPolicy { document, comment }).await.map_err(|e| e.to_string())?;
    match applied.response {
        Ok(Outcome::PolicyStored { version, .. }) => Ok(version),
        Ok(other) => Err(format!("unexpected outcome {other:?}")),
        Err(refused) => Err(format!("{refused:?}")),
    }
}

impl ControlPlane {
    /// Starts the policy follower, the HTTPS API and the admin socket. `generation` is the
    /// worker's counter block, read to know when it runs a newly published policy.
    pub(super) fn start_api(
        &mut self,
        config: &NodeConfig,
        handle: PolicyHandle,
        generation: Arc<CounterBlock>,
        state: Arc<NodeState>,
    ) -> Result<(), Failure> {
        let follower = follow(self.store.clone(), handle, generation, state.clone());
        self.follower = Some(self.runtime.spawn(follower));
        let mut api_config = ApiConfig::new(&config.data_dir);
        api_config.http_bind = config.http_bind;
        api_config.metrics_bind = config.metrics_bind;
        api_config.cert_path.clone_from(&config.http_cert);
        api_config.key_path.clone_from(&config.http_key);
        let cluster_view: Option<Arc<dyn ClusterView>> = self.cluster.as_ref().map(|cluster| {
            let local =
                Local { state: state.clone(), store: self.store.clone(), api_address: config.http_bind.to_string() };
            cluster.set_local(Arc::new(local));
            Arc::new(ClusterHandle::new(cluster.clone())) as Arc<dyn ClusterView>
        });
        let state_for_upgrades = state.clone();
        let view: Arc<dyn NodeView> = state;
        let start = ApiServer::start_with_cluster(api_config, self.store.clone(), view, cluster_view);
        let api = self.runtime.block_on(start).map_err(|e| {
            control_failure(format!(
                "cannot start the management API: {e}; choose a free address with --http-bind \
                 (and --metrics-bind), or fix --http-cert/--http-key"
            ))
        })?;
        info!(
            api = %format!("https://{}", api.http_addr),
            metrics = api.metrics_addr.map(|a| format!("http://{a}/metrics")),
            "management API listening"
        );
        let paths = match &config.cluster {
            Some(c) => ClusterPaths {
                cluster_dir: c.cluster_data_dir.clone(),
                node_id_path: c.node_id_path.clone(),
                bootstrap_token_path: c.bootstrap_token_path.clone(),
            },
            None => ClusterPaths::under(&config.data_dir),
        };
        let root = sluice_lifecycle::layout::DataRoot::with_cluster_paths(&config.data_dir, paths);
        let snapshots = Arc::new(super::snapshots::NodeSnapshots::new(self.store.clone(), root));
        api.set_snapshots(snapshots.clone());
        if config.snapshots.interval.is_some() {
            self.snapshots =
                Some(self.runtime.spawn(super::snapshots::run_schedule(snapshots.clone(), config.snapshots)));
        }
        let probe = api.probe();
        self.probe = Some(probe.clone());
        let local_node = Arc::new(super::upgrade::LocalNode {
            store: self.store.clone(),
            data_dir: config.data_dir.clone(),
            state: state_for_upgrades,
            probe,
            snapshots,
            restart: self.restart.clone(),
            // The merged settings as they are printed for debugging: a change in any of them
            // changes the digest. They hold paths to secrets, never secrets.
            config_digest: sluice_lifecycle::releases::sha256_hex(format!("{config:?}").as_bytes()),
        });
        // Every node runs the driver; it acts only while its node leads, from the plan in the
        // replicated state, so a new leader carries on where the old one stopped.
        let fleet: Arc<dyn super::upgrade::Fleet> = match &self.cluster {
            Some(cluster) => {
                let agent = super::fleet::Agent { local: local_node.clone(), cluster: Arc::downgrade(cluster) };
                cluster.set_upgrade_agent(Arc::new(agent));
                Arc::new(super::fleet::ClusterFleet { local: local_node.clone(), cluster: cluster.clone() })
            }
            None => Arc::new(super::upgrade::LocalFleet(local_node.clone())),
        };
        api.set_upgrade(Arc::new(super::upgrade::Upgrades::new(local_node, fleet.clone())));
        self.upgrades = Some(self.runtime.spawn(super::upgrade::drive(self.store.clone(), fleet)));
        let local = api.local();
        self.api = Some(api);
        let data_dir: PathBuf = config.data_dir.clone();
        let admin = self.runtime.block_on(AdminSocket::start(&data_dir, self.store.clone(), Some(local), 0));
        let admin = admin.map_err(|e| {
            control_failure(format!(
                "cannot open the admin socket {}: {e}",
                data_dir.join(sluice_api::admin_socket::ADMIN_SOCKET_FILE).display()
            ))
        })?;
        self.admin = Some(admin);
        Ok(())
    }

    /// Whether the node passes every readiness check (false before the API runs).
    pub(super) fn ready(&self) -> bool {
        self.probe.as_ref().is_some_and(sluice_api::Probe::ready)
    }

    /// Whether the upgrade service asked for a restart into the release on probation.
    pub(super) fn restart_requested(&self) -> bool {
        self.restart.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// SIGHUP: re-reads `--policy` and writes it to the store as a new version (the follower
    /// applies it). An unreadable or invalid file is refused with every error and its field
    /// path logged; nothing is written and the current policy stays.
    pub(super) fn reload(&self, path: Option<&Path>, current_generation: u32) {
        let Some(path) = path else {
            warn!("SIGHUP: no --policy file is configured, nothing to reload; policies are written through the API");
            return;
        };
        let current = current_generation;
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                error!(policy = %path.display(), policy_generation = current, "policy reload refused: cannot read the file: {e}; keeping the current policy");
                return;
            }
        };
        if let Err(errors) = sluice_policy::compile_json(&text) {
            for e in &errors {
                error!(policy = %path.display(), field = %e.path, "policy error: {}", e.message);
            }
            error!(
                policy = %path.display(),
                policy_generation = current,
                errors = errors.0.len(),
                "policy reload refused: the file has {} error(s) (each logged above with its field path); \
                 keeping the current policy",
                errors.0.len()
            );
            return;
        }
        let comment = format!("SIGHUP reload of {}", path.display());
        let store = &self.store;
        let write =
            async move { tokio::time::timeout(WRITE_TIMEOUT, put_policy(store, "sighup", text, comment)).await };
        match self.runtime.block_on(write) {
            Ok(Ok(version)) => {
                info!(policy = %path.display(), policy_version = version, "policy reloaded: stored as version {version}")
            }
            Ok(Err(e)) => {
                error!(policy = %path.display(), "policy reload refused by the store: {e}; keeping the current policy")
            }
            Err(_) => error!(
                policy = %path.display(),
                "policy reload: the store did not answer within {} s; keeping the current policy",
                WRITE_TIMEOUT.as_secs()
            ),
        }
    }

    /// SIGTERM, first part: `/ready` fails while the API keeps answering for a moment, then
    /// the API, the admin socket, the follower and the store stop. The dataplane and the DNS
    /// proxy are untouched (the caller stops them afterwards).
    pub(super) fn shutdown(self) {
        let ControlPlane { runtime, store, cluster, api, admin, follower, snapshots, upgrades, .. } = self;
        store.stop_standing_for_election();
        if let Some(snapshots) = snapshots {
            snapshots.abort();
        }
        if let Some(upgrades) = upgrades {
            upgrades.abort();
        }
        if let Some(api) = api {
            api.begin_draining();
            info!("draining: /ready now fails; the API answers for {} ms more", DRAIN_PERIOD.as_millis());
            std::thread::sleep(DRAIN_PERIOD);
            runtime.block_on(api.shutdown(API_GRACE));
        }
        drop(admin);
        if let Some(cluster) = cluster {
            runtime.block_on(cluster.shutdown());
            drop(cluster);
            info!("cluster listeners stopped");
        }
        if let Some(follower) = follower {
            follower.abort();
            let _ = runtime.block_on(follower);
        }
        // The API and admin tasks let go of their store handles as they end.
        let deadline = Instant::now() + Duration::from_secs(1);
        let mut store = store;
        let owned = loop {
            match Arc::try_unwrap(store) {
                Ok(owned) => break Some(owned),
                Err(shared) if Instant::now() < deadline => {
                    store = shared;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(_) => break None,
            }
        };
        match owned {
            Some(owned) => match runtime.block_on(owned.shutdown()) {
                Ok(()) => info!("store closed"),
                Err(e) => warn!("store shutdown: {e}; every acknowledged write was already on disk"),
            },
            None => {
                warn!("store still in use at stop; closing it with the runtime (every acknowledged write is on disk)")
            }
        }
        runtime.shutdown_timeout(Duration::from_millis(500));
    }
}

/// Applies every newly active version of the store to the dataplane, in order of arrival.
async fn follow(store: Arc<Store>, handle: PolicyHandle, generation: Arc<CounterBlock>, state: Arc<NodeState>) {
    let mut view = store.subscribe();
    loop {
        let active = view.borrow_and_update().active_policy.clone();
        if let Some(active) = active.filter(|a| Some(a.version) != state.applied()) {
            let document = active.document.clone();
            match tokio::task::spawn_blocking(move || sluice_policy::compile_json(&document)).await {
                Ok(Ok(policy)) => {
                    let published = handle.publish(policy);
                    if wait_for_generation(&generation, published).await {
                        state.set_applied(active.version);
                        info!(policy_version = active.version, policy_generation = published, "policy applied");
                    } else {
                        warn!(
                            policy_version = active.version,
                            policy_generation = published,
                            "policy published, but the worker did not show it within {} s",
                            APPLY_WAIT.as_secs()
                        );
                    }
                }
                Ok(Err(errors)) => error!(
                    policy_version = active.version,
                    errors = errors.0.len(),
                    "the store's active policy does not compile; the dataplane keeps its current policy"
                ),
                Err(e) => error!(policy_version = active.version, "policy compile task failed: {e}"),
            }
        }
        if view.changed().await.is_err() {
            return;
        }
    }
}

/// True once the worker's `policy_generation` counter reaches `published`.
async fn wait_for_generation(block: &CounterBlock, published: u32) -> bool {
    let deadline = Instant::now() + APPLY_WAIT;
    while block.snapshot().get(Counter::PolicyGeneration) < u64::from(published) {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    true
}
