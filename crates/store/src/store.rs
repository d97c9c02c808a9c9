//! The `Store` handle: one node's Raft group over the redb storage, with typed writes, local
//! reads, a watch of the applied view and status.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use openraft::error::{ClientWriteError, RaftError};
use openraft::network::RaftNetworkFactory;
use openraft::{BasicNode, Config, SnapshotPolicy};
use redb::Database;
use tokio::sync::watch;

use crate::raft::{ApplyResult, NoPeers, NodeId, Raft, TypeConfig};
use crate::state::{Command, CommandError, Outcome, Request, State, StateHash};
use crate::storage::{self, DbError, LogStore, Shared, StateMachineStore};
use crate::view::AppliedView;

/// How to open a store.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// Directory holding the database file (created 0700 if missing).
    pub data_dir: PathBuf,
    pub node_id: NodeId,
    /// Build a snapshot (and let Raft purge the log before it) after this many entries.
    pub snapshot_every: u64,
    /// How long `open` waits for the node to lead and re-apply its log.
    pub open_timeout: Duration,
    /// Raft's heartbeat interval and election timeout range, in milliseconds.
    pub timing: RaftTiming,
}

/// Raft timing. A follower that hears nothing for a random time within the election range
/// starts an election; the leader's heartbeats must come well inside it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RaftTiming {
    pub heartbeat_ms: u64,
    pub election_min_ms: u64,
    pub election_max_ms: u64,
}

impl RaftTiming {
    /// One voter: nobody else can lead, so it may be quick.
    pub const SINGLE_NODE: RaftTiming = RaftTiming { heartbeat_ms: 50, election_min_ms: 150, election_max_ms: 300 };
    /// A LAN cluster: a round trip and an fsync take a few milliseconds, a busy node may stall
    /// for tens. Heartbeats every 50 ms inside a 250-500 ms election range tolerate four missed
    /// heartbeats before anyone stands. openraft's followers refuse votes for a leader lease as
    /// long as the range's upper bound after their last heartbeat, so a dead leader is
    /// replaced after one or two election rounds: about 0.5-1 s (measured by
    /// `cargo xtask bench cluster`).
    pub const LAN: RaftTiming = RaftTiming { heartbeat_ms: 50, election_min_ms: 250, election_max_ms: 500 };
}

impl StoreConfig {
    pub fn single_node(data_dir: impl Into<PathBuf>) -> StoreConfig {
        StoreConfig {
            data_dir: data_dir.into(),
            node_id: 1,
            snapshot_every: 1000,
            open_timeout: Duration::from_secs(30),
            timing: RaftTiming::SINGLE_NODE,
        }
    }

    /// A member of a cluster with id `node_id`, with LAN timing.
    pub fn cluster_member(data_dir: impl Into<PathBuf>, node_id: NodeId) -> StoreConfig {
        StoreConfig { node_id, timing: RaftTiming::LAN, ..StoreConfig::single_node(data_dir) }
    }
}

/// Sends a write that reached a follower to the leader, which proposes it as its own; the
/// cluster layer implements it over its RPC transport.
pub trait Forwarder: Send + Sync + 'static {
    fn forward(
        &self,
        leader: NodeId,
        request: Request,
    ) -> Pin<Box<dyn Future<Output = Result<ApplyResult, StoreError>> + Send + '_>>;
}

/// A committed and applied write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    pub index: u64,
    /// The command's outcome, or why the state machine refused it (deterministically, on
    /// every node).
    pub response: Result<Outcome, CommandError>,
    /// The state hash right after this entry.
    pub state_hash: StateHash,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub node_id: NodeId,
    pub applied_index: u64,
    /// The state hash at `applied_index`.
    pub state_hash: StateHash,
    pub schema_version: u32,
    pub leader: Option<NodeId>,
    pub term: u64,
    pub last_log_index: Option<u64>,
    pub voters: Vec<NodeId>,
    pub learners: Vec<NodeId>,
}

/// The applied state at one index with the Raft position that produced it.
#[derive(Clone, Debug)]
pub struct Capture {
    pub state: State,
    /// `None` only for a store that never applied an entry.
    pub last_applied: Option<crate::raft::LogId>,
    pub membership: openraft::Membership<NodeId, openraft::BasicNode>,
}

#[derive(Debug)]
pub enum StoreError {
    /// The data directory or database could not be opened or read.
    Storage(String),
    /// Raft could not start, or stopped on an unrecoverable error.
    Raft(String),
    /// This node is not the leader; writes go to `leader` if one is known.
    NotLeader { leader: Option<NodeId> },
    /// The node did not become ready in time.
    Timeout(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Storage(reason) => write!(f, "store storage: {reason}"),
            StoreError::Raft(reason) => write!(f, "store consensus: {reason}"),
            StoreError::NotLeader { leader: Some(leader) } => write!(f, "not the leader; node {leader} is"),
            StoreError::NotLeader { leader: None } => write!(f, "no leader is known; no write was made"),
            StoreError::Timeout(reason) => write!(f, "store timed out: {reason}"),
        }
    }
}

impl std::error::Error for StoreError {}

impl From<DbError> for StoreError {
    fn from(e: DbError) -> StoreError {
        StoreError::Storage(e.to_string())
    }
}

pub struct Store {
    raft: Raft,
    shared: Arc<Shared>,
    node_id: NodeId,
    /// Kept to know when Raft's tasks have let go of the database (see `shutdown`).
    db: Arc<Database>,
    /// Set in cluster mode: where writes that reach a follower go.
    forwarder: OnceLock<Arc<dyn Forwarder>>,
    /// Set while leadership is being handed over: new proposals wait (see [`Store::hold_writes`]).
    writes_held: std::sync::atomic::AtomicBool,
}

/// How long a write in a cluster waits for a leader to be elected before it is refused.
const LEADER_WAIT: Duration = Duration::from_secs(3);
/// How long a proposal waits while writes are held for a leadership transfer: a little past
/// the transfer's own 20 s deadline, and well inside the API's 30 s request timeout.
const HOLD_LIMIT: Duration = Duration::from_secs(22);
/// How long a forwarded write may take to show up in this node's applied state.
const FORWARDED_APPLY_TIMEOUT: Duration = Duration::from_secs(10);

impl Store {
    /// Opens a one-voter group in `config.data_dir`, initialising it on first use, and returns
    /// once this node leads and has re-applied its whole log. Must run inside a Tokio runtime.
    pub async fn open_single_node(config: StoreConfig) -> Result<Store, StoreError> {
        let store = Store::open(&config).await?;
        if !store.raft.is_initialized().await.map_err(|e| StoreError::Raft(e.to_string()))? {
            let members = BTreeMap::from([(config.node_id, BasicNode::default())]);
            store.raft.initialize(members).await.map_err(|e| StoreError::Raft(e.to_string()))?;
        }
        let node_id = config.node_id;
        store
            .raft
            .wait(Some(config.open_timeout))
            .metrics(
                |m| m.current_leader == Some(node_id) && m.last_applied.map(|id| id.index) == m.last_log_index,
                "leader with its log applied",
            )
            .await
            .map_err(|e| StoreError::Timeout(e.to_string()))?;
        Ok(store)
    }

    /// Starts Raft on the stored log and snapshot without initialising or waiting (the cluster
    /// layer decides membership).
    pub async fn open(config: &StoreConfig) -> Result<Store, StoreError> {
        Store::open_with_network(config, NoPeers).await
    }

    /// `open` with a Raft transport (the cluster layer's).
    pub async fn open_with_network<N: RaftNetworkFactory<TypeConfig>>(
        config: &StoreConfig,
        network: N,
    ) -> Result<Store, StoreError> {
        create_private_dir(&config.data_dir)?;
        let db = open_database_retrying(&config.data_dir).await?;
        let log_store = LogStore::new(db.clone());
        let (state_machine, shared) = StateMachineStore::open(db.clone())?;
        let raft_config = Config {
            cluster_name: "sluice".into(),
            heartbeat_interval: config.timing.heartbeat_ms,
            election_timeout_min: config.timing.election_min_ms,
            election_timeout_max: config.timing.election_max_ms,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_every),
            max_in_snapshot_log_to_keep: 0,
            ..Config::default()
        }
        .validate()
        .map_err(|e| StoreError::Raft(e.to_string()))?;
        let raft = Raft::new(config.node_id, Arc::new(raft_config), network, log_store, state_machine)
            .await
            .map_err(|e| StoreError::Raft(e.to_string()))?;
        Ok(Store {
            raft,
            shared,
            node_id: config.node_id,
            db,
            forwarder: OnceLock::new(),
            writes_held: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Makes writes on a follower go to the leader (once; later calls are ignored).
    pub fn set_forwarder(&self, forwarder: Arc<dyn Forwarder>) {
        let _ = self.forwarder.set(forwarder);
    }

    /// Proposes `command` by `actor`, stamped with the current wall-clock time, and returns
    /// once it is committed and applied on this node.
    pub async fn write(&self, actor: &str, command: Command) -> Result<Applied, StoreError> {
        let at_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        self.write_at(actor, at_ms, command).await
    }

    /// `write` with the request time given (for tests and replays of a known history).
    pub async fn write_at(&self, actor: &str, at_ms: u64, command: Command) -> Result<Applied, StoreError> {
        self.write_request(Request { actor: actor.to_owned(), at_ms, command }).await
    }

    /// Proposes `request` here or, on a follower with a forwarder, through the leader; a
    /// forwarded write is answered once this node has applied it too, so the caller reads
    /// its own write.
    pub async fn write_request(&self, request: Request) -> Result<Applied, StoreError> {
        let Some(forwarder) = self.forwarder.get() else { return self.propose_here(request).await };
        // In a cluster, a write that finds no leader waits a moment for an election in
        // progress before it is refused: a failover then costs a slower write, not a failed
        // one. Only refusals where nothing was proposed are retried.
        let deadline = Instant::now() + LEADER_WAIT;
        loop {
            let attempt = match self.propose_here(request.clone()).await {
                Err(StoreError::NotLeader { leader: Some(leader) }) => {
                    match forwarder.forward(leader, request.clone()).await {
                        Ok(result) => {
                            self.wait_applied(result.index, FORWARDED_APPLY_TIMEOUT).await?;
                            return Ok(Applied {
                                index: result.index,
                                response: result.outcome,
                                state_hash: result.state_hash,
                            });
                        }
                        Err(e) => Err(e),
                    }
                }
                other => other,
            };
            match attempt {
                Err(StoreError::NotLeader { leader: None }) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                other => return other,
            }
        }
    }

    /// Proposes `request` on this node only: `NotLeader` on a follower.
    pub async fn propose_here(&self, request: Request) -> Result<Applied, StoreError> {
        let held_since = Instant::now();
        while self.writes_held.load(std::sync::atomic::Ordering::SeqCst) && held_since.elapsed() < HOLD_LIMIT {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        match self.raft.client_write(request).await {
            Ok(response) => {
                let result = response.data;
                Ok(Applied { index: result.index, response: result.outcome, state_hash: result.state_hash })
            }
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward))) => {
                Err(StoreError::NotLeader { leader: forward.leader_id })
            }
            Err(e) => Err(StoreError::Raft(e.to_string())),
        }
    }

    /// Holds new proposals on this node (they wait, at most [`HOLD_LIMIT`], then go on): a leader
    /// handing over leadership stops growing its log so the target can catch up and win the
    /// election (a candidate whose log is behind the leader's is refused the vote). A held
    /// write that finds another leader afterwards is forwarded or refused as usual.
    pub fn hold_writes(&self, held: bool) {
        self.writes_held.store(held, std::sync::atomic::Ordering::SeqCst);
    }

    /// This node no longer starts elections (for the rest of its run): what a stopping node
    /// does first. Once its listeners close it hears no leader, and an election it started
    /// then would store a higher term; restarted with that term, it would refuse the
    /// leader's appends and force a new election (openraft has no pre-vote).
    pub fn stop_standing_for_election(&self) {
        self.raft.runtime_config().elect(false);
    }

    /// Waits until this node has applied `index`.
    pub async fn wait_applied(&self, index: u64, timeout: Duration) -> Result<(), StoreError> {
        let mut view = self.subscribe();
        let reached = tokio::time::timeout(timeout, view.wait_for(|v| v.applied_index >= index)).await;
        match reached {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(StoreError::Raft("the store stopped".into())),
            Err(_) => Err(StoreError::Timeout(format!("index {index} not applied here within {timeout:?}"))),
        }
    }

    /// Returns the cluster id, first minting a random one (128 bits, hex) if the state has
    /// none: what a seed does once.
    pub async fn ensure_cluster_identity(&self, actor: &str) -> Result<String, StoreError> {
        if let Some(identity) = self.read(|state| state.cluster().cloned()) {
            return Ok(identity.cluster_id);
        }
        let mut random = [0u8; 16];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut random)
            .map_err(|_| StoreError::Storage("the system random source failed".into()))?;
        let cluster_id: String = random.iter().map(|byte| format!("{byte:02x}")).collect();
        match self.write(actor, Command::InitCluster { cluster_id }).await?.response {
            Ok(Outcome::ClusterInitialized { cluster_id }) => Ok(cluster_id),
            // Another writer set it first; theirs stands.
            Err(CommandError::ClusterIdMismatch { existing, .. }) => Ok(existing),
            other => Err(StoreError::Raft(format!("unexpected outcome of InitCluster: {other:?}"))),
        }
    }

    /// Reads the applied state of this node (not linearizable across a cluster).
    pub fn read<T>(&self, read: impl FnOnce(&State) -> T) -> T {
        let state = self.shared.state.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        read(&state)
    }

    /// A copy of the applied state with the Raft position it belongs to, taken under one
    /// lock: what a snapshot file holds. The copy is cheap (policy documents are shared).
    pub fn capture(&self) -> Capture {
        let state = self.shared.state.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        let (last_applied, membership) =
            self.shared.position.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone();
        Capture { state: state.clone(), last_applied, membership: membership.membership().clone() }
    }

    /// The applied view, updated after every apply; `changed()` wakes on each new one.
    pub fn subscribe(&self) -> watch::Receiver<Arc<AppliedView>> {
        self.shared.view.subscribe()
    }

    pub fn status(&self) -> Status {
        let (applied_index, state_hash, schema_version) =
            self.read(|state| (state.applied_index(), state.state_hash(), state.schema_version()));
        let metrics = self.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        Status {
            node_id: self.node_id,
            applied_index,
            state_hash,
            schema_version,
            leader: metrics.current_leader,
            term: metrics.current_term,
            last_log_index: metrics.last_log_index,
            voters: membership.voter_ids().collect(),
            learners: membership.learner_ids().collect(),
        }
    }

    /// The Raft handle, for the cluster layer (membership, transport).
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// Stops Raft and waits until the database file is released, so the same data directory
    /// can be opened again (by this process or another).
    pub async fn shutdown(self) -> Result<(), StoreError> {
        self.raft.shutdown().await.map_err(|e| StoreError::Raft(e.to_string()))?;
        let Store { raft, shared, db, forwarder, .. } = self;
        drop(forwarder);
        drop(raft);
        drop(shared);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Arc::strong_count(&db) > 1 {
            if Instant::now() > deadline {
                return Err(StoreError::Timeout("Raft tasks still hold the database".into()));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(())
    }
}

fn create_private_dir(dir: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| StoreError::Storage(format!("cannot create {}: {e}", dir.display())))
}

/// Opens the database; a file still held by a store of this process that is shutting down is
/// retried briefly rather than failed.
async fn open_database_retrying(dir: &Path) -> Result<Arc<Database>, StoreError> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match storage::open_database(dir) {
            Ok(db) => return Ok(db),
            Err(DbError::Redb(redb::Error::DatabaseAlreadyOpen)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => return Err(StoreError::Storage(format!("{}: {e}", dir.join(storage::DB_FILE).display()))),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_store_can_be_shared_between_tasks_and_threads() {
        fn shareable<T: Send + Sync + 'static>() {}
        shareable::<super::Store>();
    }
}
