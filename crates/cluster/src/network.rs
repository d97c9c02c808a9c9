//! The client side of the cluster transport: openraft's network over tonic (one cached,
//! lazily connected channel per peer address, mutual TLS), and calls to peers' node agents,
//! including the [`Forwarder`] that sends a follower's writes to the leader.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::BasicNode;
use rustls::ClientConfig;
use serde::de::DeserializeOwned;
use serde::Serialize;
use sluice_store::raft::{ApplyResult, NodeId, TypeConfig};
use sluice_store::state::Request;
use sluice_store::{Forwarder, Store, StoreError};
use tonic::transport::Channel;

use crate::proto::node_agent_client::NodeAgentClient;
use crate::proto::raft_client::RaftClient;
use crate::proto::{ForwardRequest, RaftPayload};

/// A peer RPC that takes longer is failed (Raft retries; a forwarded write reports it).
pub const RPC_TIMEOUT: Duration = Duration::from_secs(5);

/// Channels to peers by address, shared by Raft's network and the node agent's clients.
///
/// The TLS configuration is set once the node has its identity: a seed opens its store (and
/// with it Raft's network) before it has made its certificate, and alone it dials nobody.
#[derive(Clone, Default)]
pub struct Peers {
    tls: Arc<OnceLock<Arc<ClientConfig>>>,
    channels: Arc<Mutex<HashMap<String, Channel>>>,
}

impl Peers {
    pub fn pending() -> Peers {
        Peers::default()
    }

    pub fn set_tls(&self, tls: ClientConfig) {
        let _ = self.tls.set(Arc::new(tls));
    }

    pub fn tls(&self) -> Result<Arc<ClientConfig>, String> {
        self.tls.get().cloned().ok_or_else(|| "this node has no cluster certificate yet".to_owned())
    }

    pub fn channel(&self, addr: &str) -> Result<Channel, String> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(channel) = channels.get(addr) {
            return Ok(channel.clone());
        }
        let channel = crate::tls::channel(addr, self.tls()?, RPC_TIMEOUT)?;
        channels.insert(addr.to_owned(), channel.clone());
        Ok(channel)
    }

    pub fn agent(&self, addr: &str) -> Result<NodeAgentClient<Channel>, String> {
        Ok(NodeAgentClient::new(self.channel(addr)?))
    }
}

impl RaftNetworkFactory<TypeConfig> for Peers {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerClient {
        PeerClient { target, addr: node.addr.clone(), peers: self.clone() }
    }
}

pub struct PeerClient {
    target: NodeId,
    addr: String,
    peers: Peers,
}

#[derive(Clone, Copy)]
enum Rpc {
    Append,
    Vote,
    Snapshot,
}

fn unreachable<E: std::error::Error>(why: String) -> RPCError<NodeId, BasicNode, E> {
    RPCError::Unreachable(Unreachable::new(&std::io::Error::other(why)))
}

impl PeerClient {
    async fn call<Req: Serialize, Resp: DeserializeOwned, E: std::error::Error + DeserializeOwned>(
        &mut self,
        rpc: Rpc,
        request: &Req,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, E>> {
        self.call_encoded(rpc, encode(request).map_err(RPCError::Network)?).await
    }

    /// `call` with the request already encoded.
    async fn call_encoded<Resp: DeserializeOwned, E: std::error::Error + DeserializeOwned>(
        &mut self,
        rpc: Rpc,
        payload: Vec<u8>,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, E>> {
        let channel = self.peers.channel(&self.addr).map_err(unreachable)?;
        let mut client =
            RaftClient::new(channel).max_decoding_message_size(64 << 20).max_encoding_message_size(64 << 20);
        let message = RaftPayload { payload };
        let call = async {
            match rpc {
                Rpc::Append => client.append_entries(message).await,
                Rpc::Vote => client.vote(message).await,
                Rpc::Snapshot => client.install_snapshot(message).await,
            }
        };
        // No deadline of our own: openraft puts its own on every call (the heartbeat interval
        // for appends, the election timeout for votes, the snapshot timeout) and reports a
        // late answer as a timeout, which it retries at once. Failing it here as
        // "unreachable" would put the peer into a 500 ms backoff, and a follower whose
        // appends are slow would never catch up.
        let answer = match call.await {
            Err(status) => {
                return Err(unreachable(format!("node {} at {}: {}", self.target, self.addr, status.message())))
            }
            Ok(answer) => answer.into_inner(),
        };
        let result: Result<Resp, E> = serde_json::from_slice(&answer.payload).map_err(|e| {
            RPCError::Network(NetworkError::new(&std::io::Error::other(format!(
                "node {}: malformed answer: {e}",
                self.target
            ))))
        })?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        let payload = encode(&rpc).map_err(RPCError::Network)?;
        if let Some(fewer) = entries_within_budget(rpc.entries.len(), payload.len()) {
            return Err(RPCError::PayloadTooLarge(PayloadTooLarge::new_entries_hint(fewer)));
        }
        self.call_encoded(Rpc::Append, payload).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>>
    {
        self.call(Rpc::Snapshot, &rpc).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(Rpc::Vote, &rpc).await
    }
}

/// The most an append should carry, in encoded bytes. openraft gives an append one
/// heartbeat interval (50 ms) to be answered, and the follower fsyncs before it answers: a
/// catch-up batch of hundreds of policy versions would miss that deadline on every try, and
/// the follower would never catch up. A larger batch is refused before it is sent with a
/// hint of how many entries fit, which openraft uses for its next few appends.
pub const APPEND_BUDGET_BYTES: usize = 64 * 1024;

/// `Some(n)`: an append of `entries` entries encoded in `bytes` is over
/// [`APPEND_BUDGET_BYTES`]; send the first `n` (at least one) instead. `None`: it fits, or
/// it is a single entry, which goes as it is.
fn entries_within_budget(entries: usize, bytes: usize) -> Option<u64> {
    if entries <= 1 || bytes <= APPEND_BUDGET_BYTES {
        return None;
    }
    // Entries of one log are of similar size (policy documents); the hint lasts for a few
    // appends, after which openraft tries the full batch again.
    let fit = (entries as u128 * APPEND_BUDGET_BYTES as u128 / bytes as u128) as u64;
    Some(fit.clamp(1, entries as u64 - 1))
}

fn encode<T: Serialize>(request: &T) -> Result<Vec<u8>, NetworkError> {
    serde_json::to_vec(request).map_err(|e| NetworkError::new(&std::io::Error::other(e.to_string())))
}

/// The address of `node` in the store's current membership.
pub fn member_address(store: &Store, node: NodeId) -> Option<String> {
    let metrics = store.raft().metrics().borrow().clone();
    metrics.membership_config.membership().get_node(&node).map(|n| n.addr.clone())
}

/// Whether a transport failure happened before a connection existed (so nothing was sent).
/// A reset or a broken connection does not count: the request may have arrived.
fn never_connected(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    ["connection refused", "trying to connect", "connect error", "no route to host", "network is unreachable"]
        .iter()
        .any(|m| message.contains(m))
}

/// Forwards a follower's writes to the leader's node agent.
pub struct LeaderForwarder {
    pub peers: Peers,
    /// Used only to look up the leader's address in the membership.
    pub store: std::sync::Weak<Store>,
}

impl Forwarder for LeaderForwarder {
    fn forward(
        &self,
        leader: NodeId,
        request: Request,
    ) -> Pin<Box<dyn Future<Output = Result<ApplyResult, StoreError>> + Send + '_>> {
        Box::pin(async move {
            let store = self.store.upgrade().ok_or_else(|| StoreError::Raft("the store stopped".into()))?;
            let addr = member_address(&store, leader).ok_or(StoreError::NotLeader { leader: None })?;
            let mut agent = self.peers.agent(&addr).map_err(StoreError::Raft)?;
            let body = serde_json::to_vec(&request).map_err(|e| StoreError::Raft(e.to_string()))?;
            let answer = agent.forward(ForwardRequest { request: body }).await.map_err(|status| {
                match status.code() {
                    // The node is no longer the leader, or could not be connected to: the
                    // write was not proposed, so it may be retried once a leader is known.
                    tonic::Code::FailedPrecondition => {
                        tracing::info!(leader, error = %status.message(), "forwarded write not taken");
                        StoreError::NotLeader { leader: None }
                    }
                    tonic::Code::Unavailable if never_connected(status.message()) => {
                        tracing::info!(leader, error = %status.message(), "the leader cannot be reached");
                        StoreError::NotLeader { leader: None }
                    }
                    // Sent, but the answer was lost: it may have been applied, so it is not
                    // retried; the caller is told the outcome is unknown.
                    tonic::Code::Unavailable => StoreError::Timeout(format!(
                        "the connection to the leader (node {leader}) broke during the write; it may or may not \
                         have been applied: {}",
                        status.message()
                    )),
                    tonic::Code::DeadlineExceeded => StoreError::Timeout(status.message().to_owned()),
                    _ => StoreError::Raft(format!("forwarding to node {leader} at {addr}: {}", status.message())),
                }
            })?;
            serde_json::from_slice(&answer.into_inner().result)
                .map_err(|e| StoreError::Raft(format!("node {leader} answered a forwarded write malformed: {e}")))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{entries_within_budget, APPEND_BUDGET_BYTES};

    #[test]
    fn an_append_over_the_budget_is_cut_to_what_fits_and_never_to_nothing() {
        assert_eq!(entries_within_budget(300, APPEND_BUDGET_BYTES), None, "at the budget it goes");
        assert_eq!(entries_within_budget(1, 100 * APPEND_BUDGET_BYTES), None, "one entry goes however large");
        assert_eq!(entries_within_budget(200, 50 * APPEND_BUDGET_BYTES), Some(4));
        assert_eq!(entries_within_budget(2, 100 * APPEND_BUDGET_BYTES), Some(1));
        assert_eq!(entries_within_budget(10, APPEND_BUDGET_BYTES + 1), Some(9), "always fewer than asked");
    }
}
