//! The member RPCs of a rolling upgrade: the leader's driver asks each member's upgrade agent
//! to report itself, stage a release, restart into one or save a diagnostic bundle, and a
//! member that lacks the artifact fetches it in chunks from the member that holds it.
//!
//! This layer carries the requests as opaque JSON: their meaning (and the plan) belongs to the
//! node runtime, which implements [`UpgradeAgent`]. Every call rides the cluster's mutual TLS,
//! so only members can ask.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use sluice_store::raft::NodeId;

use crate::network::member_address;
use crate::node::Cluster;
use crate::proto;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The largest chunk of a release binary one call carries (under tonic's 4 MiB message
/// limit with room for framing).
pub const MAX_CHUNK: u32 = 2 << 20;

/// What a member's runtime answers to upgrade calls.
pub trait UpgradeAgent: Send + Sync + 'static {
    /// Handles one request (JSON defined by the runtime) and returns its JSON reply.
    fn call(&self, request: Vec<u8>) -> BoxFuture<'_, Result<Vec<u8>, String>>;
    /// Up to `length` bytes of release `version`'s binary from `offset`, and its full size.
    fn release_chunk(&self, version: &str, offset: u64, length: u32) -> Result<(Vec<u8>, u64), String>;
}

impl Cluster {
    /// Lets peers reach this node's upgrade agent (set once).
    pub fn set_upgrade_agent(&self, agent: std::sync::Arc<dyn UpgradeAgent>) {
        let _ = self.shared.upgrade.set(agent);
    }

    fn agent_for(
        &self,
        node: NodeId,
        timeout: Duration,
    ) -> Result<proto::node_agent_client::NodeAgentClient<tonic::transport::Channel>, String> {
        let addr =
            member_address(&self.shared.store, node).ok_or_else(|| format!("node {node}'s address is unknown"))?;
        let channel = if timeout <= crate::network::RPC_TIMEOUT {
            self.shared.peers.channel(&addr)?
        } else {
            // A long call (a member staging a release) gets its own channel and deadline.
            crate::tls::channel(&addr, self.shared.peers.tls()?, timeout)?
        };
        Ok(proto::node_agent_client::NodeAgentClient::new(channel))
    }

    /// Sends an upgrade request to `node`'s agent (this node's own agent answers directly).
    pub async fn upgrade_call(&self, node: NodeId, request: Vec<u8>, timeout: Duration) -> Result<Vec<u8>, String> {
        if node == self.shared.node_id {
            let agent = self.shared.upgrade.get().ok_or("this node has no upgrade agent")?.clone();
            return tokio::time::timeout(timeout, agent.call(request))
                .await
                .map_err(|_| format!("no answer within {timeout:?}"))?;
        }
        let mut agent = self.agent_for(node, timeout)?;
        let reply =
            agent.upgrade(proto::UpgradeCall { request }).await.map_err(|s| format!("node {node}: {}", s.message()))?;
        Ok(reply.into_inner().reply)
    }

    /// Fetches a piece of release `version` from `node`.
    pub async fn fetch_release_chunk(
        &self,
        node: NodeId,
        version: &str,
        offset: u64,
        length: u32,
    ) -> Result<(Vec<u8>, u64), String> {
        if node == self.shared.node_id {
            let agent = self.shared.upgrade.get().ok_or("this node has no upgrade agent")?;
            return agent.release_chunk(version, offset, length.min(MAX_CHUNK));
        }
        let mut agent = self.agent_for(node, crate::network::RPC_TIMEOUT)?;
        let chunk = agent
            .fetch_release_chunk(proto::ReleaseChunkRequest {
                version: version.to_owned(),
                offset,
                length: length.min(MAX_CHUNK),
            })
            .await
            .map_err(|s| format!("node {node}: {}", s.message()))?
            .into_inner();
        Ok((chunk.data, chunk.total))
    }
}
