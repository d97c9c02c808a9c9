//! A cluster member: how it starts (seed, joiner, restarted member), its listeners, the probe
//! loop that keeps every peer's status fresh, and the membership operations the API offers.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use openraft::{BasicNode, ChangeMembers};
use sluice_store::raft::NodeId;
use sluice_store::{Store, StoreConfig};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::identity::{self, ClusterPaths, Identity};
use crate::join::NonceBook;
use crate::network::{member_address, LeaderForwarder, Peers};
use crate::proto;
use crate::service::{AgentService, JoinService, RaftService};

/// A peer heard from within this long counts as reachable.
pub const CONTACT_BOUND: Duration = Duration::from_secs(3);
/// How often every peer's status is asked for.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// How long a leadership transfer may take: the target's catch-up, the followers' leases
/// running out and its election, on a loaded machine.
pub(crate) const TRANSFER_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a seed waits to lead its own group, and a joiner to be made a voter.
const START_TIMEOUT: Duration = Duration::from_secs(180);

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// What the node outside the cluster layer tells its peers about itself.
pub trait LocalNode: Send + Sync + 'static {
    /// Readiness of the local parts (dataplane, DNS, policy applied), cluster checks aside.
    fn locally_ready(&self) -> bool;
    /// The policy version the dataplane runs.
    fn applied_policy_version(&self) -> Option<u64>;
    /// Where this node's management API listens (for operators reading the member list).
    fn api_address(&self) -> String;
    /// The release this node runs.
    fn release(&self) -> String {
        env!("CARGO_PKG_VERSION").to_owned()
    }
}

#[derive(Clone, Debug)]
pub struct ClusterConfig {
    pub store_dir: PathBuf,
    pub paths: ClusterPaths,
    pub bind: SocketAddr,
    pub join_bind: SocketAddr,
    /// host:port at which the others reach this node's cluster listener.
    pub advertise: String,
    /// The seed's join listener, for a node that has not enrolled yet.
    pub join: Option<String>,
    /// The cluster a joiner expects; a node of another cluster refuses it.
    pub expected_cluster_id: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Created the cluster now (or turned its single-node store into the first member).
    Seed,
    /// Enrolled through `--join` now.
    Joined,
    /// Started with the identity it stored earlier.
    Restarted,
    /// Started for the first time from a data root written by `sluice restore`: the seed of
    /// a new cluster holding the restored state.
    Restored,
}

/// The last answer of one peer's node agent.
#[derive(Clone, Debug, Default)]
pub struct Probe {
    pub status: Option<proto::StatusResponse>,
    pub last_contact: Option<Instant>,
    pub error: Option<String>,
}

pub struct Shared {
    pub node_id: NodeId,
    pub cluster_id: String,
    pub advertise: String,
    pub identity: Identity,
    pub(crate) token: String,
    pub store: Arc<Store>,
    pub peers: Peers,
    pub(crate) nonces: Mutex<NonceBook>,
    pub local: OnceLock<Arc<dyn LocalNode>>,
    /// The runtime's answer to rolling-upgrade calls (none until the API is up).
    pub upgrade: OnceLock<Arc<dyn crate::upgrade::UpgradeAgent>>,
    pub probes: Mutex<HashMap<NodeId, Probe>>,
    pub join_refusals: AtomicU64,
}

impl Shared {
    pub fn is_leader(&self) -> bool {
        self.store.status().leader == Some(self.node_id)
    }

    pub fn local_status(&self) -> proto::StatusResponse {
        let status = self.store.status();
        let active = self.store.read(|s| s.active_policy().map(|p| p.version)).unwrap_or(0);
        let local = self.local.get();
        proto::StatusResponse {
            node_id: self.node_id,
            cluster_id: self.cluster_id.clone(),
            release: local.map_or_else(|| env!("CARGO_PKG_VERSION").to_owned(), |l| l.release()),
            applied_index: status.applied_index,
            state_hash: status.state_hash.to_hex(),
            ready: local.is_some_and(|l| l.locally_ready()),
            applied_policy_version: local.and_then(|l| l.applied_policy_version()).unwrap_or(0),
            api_address: local.map(|l| l.api_address()).unwrap_or_default(),
            active_policy_version: active,
            term: status.term,
            leader: status.leader.unwrap_or(0),
        }
    }

    pub(crate) fn probe(&self, node: NodeId) -> Probe {
        self.probes.lock().unwrap_or_else(|p| p.into_inner()).get(&node).cloned().unwrap_or_default()
    }

    /// Heard from within [`CONTACT_BOUND`] (this node always is).
    pub fn reachable(&self, node: NodeId) -> bool {
        node == self.node_id || self.probe(node).last_contact.is_some_and(|t| t.elapsed() < CONTACT_BOUND)
    }

    /// The node that answered a join makes the leader add the joiner: itself, or through the
    /// leader's node agent, retrying while the joiner starts and while no leader is known.
    pub(crate) async fn enrol(self: Arc<Self>, node_id: NodeId, advertise: String) {
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            let outcome = match self.store.status().leader {
                Some(leader) if leader == self.node_id => {
                    crate::service::add_member_here(&self, node_id, &advertise).await.map(|_| ())
                }
                Some(leader) => self.add_member_via(leader, node_id, &advertise).await,
                None => Err("no leader is known yet".to_owned()),
            };
            match outcome {
                Ok(()) => return,
                Err(e) => {
                    tracing::info!(node_id, error = %e, "enrolment not done yet; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
        tracing::warn!(node_id, %advertise, "gave up enrolling the joined node");
    }

    async fn add_member_via(&self, leader: NodeId, node_id: NodeId, advertise: &str) -> Result<(), String> {
        let addr = member_address(&self.store, leader).ok_or("the leader's address is unknown")?;
        // Its own channel: the call lasts as long as the joiner takes to catch up.
        let channel =
            crate::tls::channel(&addr, self.peers.tls()?, crate::service::CATCH_UP_TIMEOUT + Duration::from_secs(10))?;
        let mut agent = proto::node_agent_client::NodeAgentClient::new(channel);
        agent
            .add_member(proto::AddMemberRequest { node_id, advertise: advertise.to_owned() })
            .await
            .map(|_| ())
            .map_err(|s| format!("node {leader}: {}", s.message()))
    }
}

/// A running cluster member.
pub struct Cluster {
    pub shared: Arc<Shared>,
    pub role: Role,
    stop: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Cluster {
    /// Enrols if needed, opens the store on the cluster transport and starts the listeners.
    /// A seed returns once it leads; a joiner once it is a voter and has applied the entry
    /// that made it one; a restarted member at once (it enforces its last applied state and
    /// catches up in the background).
    pub async fn start(config: &ClusterConfig) -> Result<(Cluster, Arc<Store>), String> {
        let stored = Identity::load(&config.paths)?;
        let peers = Peers::pending();
        let (role, identity, token, store) = match stored {
            Some(identity) => {
                peers.set_tls(crate::tls::cluster_client_config(&identity)?);
                let token = identity::read_token(&config.paths.bootstrap_token_path).unwrap_or_default();
                let marker = crate::restored::read_marker(&config.paths.cluster_dir)?;
                // Before the store opens: a data root that another cluster refuses must not
                // start Raft at all.
                if let (None, Some(seed)) = (&marker, &config.join) {
                    crate::enroll::check_join_target(seed, &identity, &config.advertise, &token).await?;
                }
                let store = open_store(config, identity.node_id, &peers).await?;
                if let Some(stored) = store.read(|s| s.cluster().map(|c| c.cluster_id.clone())) {
                    let restoring = crate::restored::explains_mismatch(marker.as_ref(), &stored, &identity.cluster_id);
                    if stored != identity.cluster_id && !restoring {
                        return Err(format!(
                            "the store belongs to cluster {stored} but {} says {}: the data root is mixed up",
                            config.paths.cluster_dir.display(),
                            identity.cluster_id
                        ));
                    }
                }
                match marker {
                    Some(marker) => {
                        record_own_address(&store, identity.node_id, &config.advertise).await?;
                        crate::restored::finish(&store, &config.paths.cluster_dir, &marker).await?;
                        (Role::Restored, identity, token, store)
                    }
                    None => (Role::Restarted, identity, token, store),
                }
            }
            None => match &config.join {
                Some(seed) => {
                    let db = config.store_dir.join(sluice_store::storage::DB_FILE);
                    if db.exists() {
                        return Err(format!(
                            "{} holds a store of its own: a joining node starts from an empty data root (it \
                             receives the cluster's state); move {} aside, or start this node without --join",
                            db.display(),
                            config.store_dir.display()
                        ));
                    }
                    let node_id = identity::node_id(&config.paths.node_id_path, None)?;
                    let token = identity::read_token(&config.paths.bootstrap_token_path)?;
                    let identity = crate::enroll::join_cluster(
                        seed,
                        node_id,
                        &config.advertise,
                        &token,
                        config.expected_cluster_id.as_deref(),
                    )
                    .await?;
                    identity.save(&config.paths)?;
                    peers.set_tls(crate::tls::cluster_client_config(&identity)?);
                    let store = open_store(config, node_id, &peers).await?;
                    (Role::Joined, identity, token, store)
                }
                None => {
                    let (identity, token, store) = seed(config, &peers).await?;
                    (Role::Seed, identity, token, store)
                }
            },
        };
        let shared = Arc::new(Shared {
            node_id: identity.node_id,
            cluster_id: identity.cluster_id.clone(),
            advertise: config.advertise.clone(),
            identity,
            token,
            store: store.clone(),
            peers: peers.clone(),
            nonces: Mutex::new(NonceBook::default()),
            local: OnceLock::new(),
            upgrade: OnceLock::new(),
            probes: Mutex::default(),
            join_refusals: AtomicU64::new(0),
        });
        store.set_forwarder(Arc::new(LeaderForwarder { peers, store: Arc::downgrade(&store) }));
        let (stop, stopped) = watch::channel(false);
        let mut tasks = listen(config, &shared, stopped.clone()).await?;
        tasks.push(tokio::spawn(probe_loop(shared.clone(), stopped)));
        let cluster = Cluster { shared, role, stop, tasks: Mutex::new(tasks) };
        if role == Role::Joined {
            cluster.wait_until_voter().await?;
        }
        tracing::info!(
            node_id = cluster.shared.node_id,
            cluster_id = %cluster.shared.cluster_id,
            role = ?role,
            bind = %config.bind,
            join_bind = %config.join_bind,
            advertise = %config.advertise,
            "cluster member started"
        );
        Ok((cluster, store))
    }

    /// Tells the cluster layer about the rest of the node (readiness, applied policy).
    pub fn set_local(&self, local: Arc<dyn LocalNode>) {
        let _ = self.shared.local.set(local);
    }

    async fn wait_until_voter(&self) -> Result<(), String> {
        let id = self.shared.node_id;
        let raft = self.shared.store.raft();
        let metrics = raft
            .wait(Some(START_TIMEOUT))
            .metrics(
                |m| {
                    let membership = m.membership_config.membership();
                    let voter = membership.voter_ids().any(|v| v == id);
                    let applied = m.last_applied.map(|l| l.index);
                    voter && m.current_leader.is_some() && applied >= m.membership_config.log_id().map(|l| l.index)
                },
                "a voter with the membership that made it one applied",
            )
            .await
            .map_err(|e| format!("joined, but was not made a voter within {START_TIMEOUT:?}: {e}"))?;
        tracing::info!(node_id = id, applied = ?metrics.last_applied, "joined the cluster as a voter");
        Ok(())
    }

    /// Moves leadership to `to` (or the most up-to-date reachable follower); on a follower
    /// the request goes to the leader. Returns the new leader.
    pub async fn transfer_leader(&self, to: Option<NodeId>) -> Result<NodeId, String> {
        let shared = &self.shared;
        if shared.is_leader() {
            return shared.transfer_leader_here(to).await;
        }
        let leader = shared.store.status().leader.ok_or("no leader is known: nothing to transfer")?;
        let addr = member_address(&shared.store, leader).ok_or("the leader's address is unknown")?;
        let mut agent = shared.peers.agent(&addr)?;
        let answer = agent
            .transfer_leader(proto::TransferRequest { to: to.unwrap_or(0) })
            .await
            .map_err(|s| s.message().to_owned())?;
        Ok(answer.into_inner().leader)
    }

    /// Removes a member; on a follower the request goes to the leader.
    pub async fn remove_member(&self, node_id: NodeId, force: bool) -> Result<Vec<u64>, String> {
        let shared = &self.shared;
        if shared.is_leader() {
            return shared.remove_member_here(node_id, force).await;
        }
        let leader = shared.store.status().leader.ok_or("no leader is known; no change was made")?;
        let addr = member_address(&shared.store, leader).ok_or("the leader's address is unknown")?;
        let mut agent = shared.peers.agent(&addr)?;
        let answer = agent
            .remove_member(proto::RemoveMemberRequest { node_id, force })
            .await
            .map_err(|s| s.message().to_owned())?;
        Ok(answer.into_inner().voters)
    }

    /// Stops the listeners and the probe loop (the store is the caller's to close).
    pub async fn shutdown(&self) {
        let _ = self.stop.send(true);
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        for task in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
        }
    }
}

async fn open_store(config: &ClusterConfig, node_id: NodeId, peers: &Peers) -> Result<Arc<Store>, String> {
    let store_config = StoreConfig::cluster_member(&config.store_dir, node_id);
    Store::open_with_network(&store_config, peers.clone())
        .await
        .map(Arc::new)
        .map_err(|e| format!("cannot open the store in {}: {e}", config.store_dir.display()))
}

/// A seed: its one-voter group (created, or the single-node store it already had, which keeps
/// node id 1) with this node's cluster address, the cluster id, the CA and its certificate,
/// and the bootstrap token.
async fn seed(config: &ClusterConfig, peers: &Peers) -> Result<(Identity, String, Arc<Store>), String> {
    let had_store = config.store_dir.join(sluice_store::storage::DB_FILE).exists();
    let node_id = identity::node_id(&config.paths.node_id_path, had_store.then_some(1))?;
    let store = open_store(config, node_id, peers).await?;
    let raft = store.raft();
    let node = BasicNode { addr: config.advertise.clone() };
    if !raft.is_initialized().await.map_err(|e| e.to_string())? {
        raft.initialize(BTreeMap::from([(node_id, node)])).await.map_err(|e| e.to_string())?;
    }
    raft.wait(Some(START_TIMEOUT))
        .metrics(|m| m.current_leader == Some(node_id), "the seed leads its group")
        .await
        .map_err(|e| format!("the seed did not become leader of its own group: {e}"))?;
    record_own_address(&store, node_id, &config.advertise).await?;
    let cluster_id = store.ensure_cluster_identity("seed").await.map_err(|e| e.to_string())?;
    let ca = crate::pki::new_ca(&cluster_id).map_err(|e| e.to_string())?;
    let key = crate::pki::new_node_key(node_id).map_err(|e| e.to_string())?;
    let cert = crate::pki::sign_node_csr(&ca, &key.csr_pem, node_id).map_err(|e| e.to_string())?;
    let identity = Identity { node_id, cluster_id, ca, node_cert_pem: cert, node_key_pem: key.key_pem };
    let token = identity::seed_token(&config.paths.bootstrap_token_path)?;
    identity.save(&config.paths)?;
    peers.set_tls(crate::tls::cluster_client_config(&identity)?);
    tracing::info!(
        node_id,
        cluster_id = %identity.cluster_id,
        token_file = %config.paths.bootstrap_token_path.display(),
        "seeded a new cluster; copy the bootstrap token file to the nodes that will --join"
    );
    Ok((identity, token, store))
}

/// Makes the membership say where this node is reached (a single-node store or a restored
/// one was written without a cluster address). Only for a node that leads alone.
async fn record_own_address(store: &Store, node_id: NodeId, advertise: &str) -> Result<(), String> {
    if member_address(store, node_id).as_deref() == Some(advertise) {
        return Ok(());
    }
    let raft = store.raft();
    raft.wait(Some(START_TIMEOUT))
        .metrics(|m| m.current_leader == Some(node_id), "this node leads its group")
        .await
        .map_err(|e| format!("this node did not become leader of its own group: {e}"))?;
    let node = BasicNode { addr: advertise.to_owned() };
    raft.change_membership(ChangeMembers::SetNodes(BTreeMap::from([(node_id, node)])), false)
        .await
        .map(|_| ())
        .map_err(|e| format!("cannot record this node's cluster address: {e}"))
}

async fn bind(addr: SocketAddr, what: &str) -> Result<TcpListener, String> {
    TcpListener::bind(addr).await.map_err(|e| format!("cannot listen on {addr} ({what}): {e}"))
}

async fn listen(
    config: &ClusterConfig,
    shared: &Arc<Shared>,
    stopped: watch::Receiver<bool>,
) -> Result<Vec<JoinHandle<()>>, String> {
    let cluster = bind(config.bind, "--cluster-bind").await?;
    let join = bind(config.join_bind, "--cluster-join-bind").await?;
    let cluster_tls = crate::tls::cluster_server_config(&shared.identity)?;
    let join_tls = crate::tls::join_server_config(&shared.identity)?;
    let until_stopped = |mut stopped: watch::Receiver<bool>| async move {
        let _ = stopped.wait_for(|s| *s).await;
    };
    let raft = proto::raft_server::RaftServer::new(RaftService(shared.clone()))
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20);
    let agent = proto::node_agent_server::NodeAgentServer::new(AgentService(shared.clone()));
    let cluster_server = tonic::transport::Server::builder()
        .timeout(crate::service::CATCH_UP_TIMEOUT + Duration::from_secs(20))
        .add_service(raft)
        .add_service(agent)
        .serve_with_incoming_shutdown(
            crate::tls::incoming(cluster, cluster_tls, "cluster"),
            until_stopped(stopped.clone()),
        );
    let join_server = tonic::transport::Server::builder()
        .timeout(Duration::from_secs(30))
        .add_service(proto::join_server::JoinServer::new(JoinService(shared.clone())))
        .serve_with_incoming_shutdown(crate::tls::incoming(join, join_tls, "join"), until_stopped(stopped));
    Ok(vec![
        tokio::spawn(async move {
            if let Err(e) = cluster_server.await {
                tracing::error!(error = %e, "the cluster listener stopped");
            }
        }),
        tokio::spawn(async move {
            if let Err(e) = join_server.await {
                tracing::error!(error = %e, "the join listener stopped");
            }
        }),
    ])
}

/// Asks every other member for its status every [`PROBE_INTERVAL`].
async fn probe_loop(shared: Arc<Shared>, mut stopped: watch::Receiver<bool>) {
    loop {
        let metrics = shared.store.raft().metrics().borrow().clone();
        let members: Vec<(NodeId, String)> = metrics
            .membership_config
            .membership()
            .nodes()
            .filter(|(id, _)| **id != shared.node_id)
            .map(|(id, node)| (*id, node.addr.clone()))
            .collect();
        let asks = members.into_iter().map(|(id, addr)| {
            let peers = shared.peers.clone();
            async move {
                let answer = async {
                    let mut agent = peers.agent(&addr)?;
                    let ask = agent.status(proto::StatusRequest {});
                    match tokio::time::timeout(PROBE_INTERVAL, ask).await {
                        Ok(Ok(answer)) => Ok(answer.into_inner()),
                        Ok(Err(status)) => Err(status.message().to_owned()),
                        Err(_) => Err(format!("no answer within {PROBE_INTERVAL:?}")),
                    }
                }
                .await;
                (id, answer)
            }
        });
        let answers = futures_join_all(asks).await;
        {
            let mut probes = shared.probes.lock().unwrap_or_else(|p| p.into_inner());
            for (id, answer) in answers {
                let probe = probes.entry(id).or_default();
                match answer {
                    Ok(status) => {
                        probe.status = Some(status);
                        probe.last_contact = Some(Instant::now());
                        probe.error = None;
                    }
                    Err(e) => probe.error = Some(e),
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(PROBE_INTERVAL) => {}
            _ = stopped.wait_for(|s| *s) => return,
        }
    }
}

/// Runs the futures concurrently and collects their outputs (a handful of peers).
async fn futures_join_all<F>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for handle in handles {
        if let Ok(value) = handle.await {
            out.push(value);
        }
    }
    out
}
