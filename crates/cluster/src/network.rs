//! The client side of the cluster transport: openraft's network over tonic (one cached,
//! lazily connected channel per peer address, mutual TLS), and calls to peers' node agents,
//! including the [`Forwarder`] that sends a follower's writes to the leader.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
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
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, E>> {
        let channel = self.peers.channel(&self.addr).map_err(unreachable)?;
        let payload = serde_json::to_vec(request)
            .map_err(|e| RPCError::Network(NetworkError::new(&std::io::Error::other(e.to_string()))))?;
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
        let answer = match tokio::time::timeout(option.hard_ttl(), call).await {
            Err(_) => {
                return Err(unreachable(format!(
                    "node {} at {}: no answer within {:?}",
                    self.target,
                    self.addr,
                    option.hard_ttl()
                )))
            }
            Ok(Err(status)) => {
                return Err(unreachable(format!("node {} at {}: {}", self.target, self.addr, status.message())))
            }
            Ok(Ok(answer)) => answer.into_inner(),
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
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(Rpc::Append, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>>
    {
        self.call(Rpc::Snapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(Rpc::Vote, &rpc, &option).await
    }
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
