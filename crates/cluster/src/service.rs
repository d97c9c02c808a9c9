//! The server side of the cluster RPCs: Raft messages handed to the local Raft, the node agent
//! (status, membership changes on the leader, forwarded writes, elect-now) and the join
//! service.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use openraft::BasicNode;
use serde::de::DeserializeOwned;
use serde::Serialize;
use sluice_store::raft::{ApplyResult, NodeId};
use sluice_store::state::Request;
use sluice_store::StoreError;
use tonic::{Response, Status};

use crate::join::{self, AnswerFields, JoinFields, Refusal};
use crate::node::{now_ms, Shared};
use crate::proto;

/// Largest CSR accepted from a joiner.
const MAX_CSR_BYTES: usize = 16 * 1024;
/// How long the leader waits for a new learner to catch up before giving up on the join.
pub const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(120);

fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, Status> {
    serde_json::from_slice(payload).map_err(|e| Status::invalid_argument(format!("malformed payload: {e}")))
}

fn encode<T: Serialize>(value: &T) -> Result<Response<proto::RaftPayload>, Status> {
    let payload = serde_json::to_vec(value).map_err(|e| Status::internal(e.to_string()))?;
    Ok(Response::new(proto::RaftPayload { payload }))
}

pub struct RaftService(pub Arc<Shared>);

#[tonic::async_trait]
impl proto::raft_server::Raft for RaftService {
    async fn append_entries(
        &self,
        request: tonic::Request<proto::RaftPayload>,
    ) -> Result<Response<proto::RaftPayload>, Status> {
        let rpc = decode(&request.into_inner().payload)?;
        encode(&self.0.store.raft().append_entries(rpc).await)
    }

    async fn vote(&self, request: tonic::Request<proto::RaftPayload>) -> Result<Response<proto::RaftPayload>, Status> {
        let rpc = decode(&request.into_inner().payload)?;
        encode(&self.0.store.raft().vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        request: tonic::Request<proto::RaftPayload>,
    ) -> Result<Response<proto::RaftPayload>, Status> {
        let rpc = decode(&request.into_inner().payload)?;
        #[allow(deprecated)] // the chunked API is the one openraft 0.9's network sends
        let result = self.0.store.raft().install_snapshot(rpc).await;
        encode(&result)
    }
}

pub struct AgentService(pub Arc<Shared>);

fn not_leader(shared: &Shared) -> Status {
    match shared.store.status().leader {
        Some(leader) => Status::failed_precondition(format!("not the leader; node {leader} is")),
        None => Status::unavailable("no leader is known"),
    }
}

#[tonic::async_trait]
impl proto::node_agent_server::NodeAgent for AgentService {
    async fn status(
        &self,
        _request: tonic::Request<proto::StatusRequest>,
    ) -> Result<Response<proto::StatusResponse>, Status> {
        Ok(Response::new(self.0.local_status()))
    }

    async fn add_member(
        &self,
        request: tonic::Request<proto::AddMemberRequest>,
    ) -> Result<Response<proto::AddMemberResponse>, Status> {
        let request = request.into_inner();
        if !self.0.is_leader() {
            return Err(not_leader(&self.0));
        }
        let voters = add_member_here(&self.0, request.node_id, &request.advertise).await.map_err(Status::aborted)?;
        Ok(Response::new(proto::AddMemberResponse { voters }))
    }

    async fn remove_member(
        &self,
        request: tonic::Request<proto::RemoveMemberRequest>,
    ) -> Result<Response<proto::RemoveMemberResponse>, Status> {
        let request = request.into_inner();
        if !self.0.is_leader() {
            return Err(not_leader(&self.0));
        }
        let voters =
            self.0.remove_member_here(request.node_id, request.force).await.map_err(Status::failed_precondition)?;
        Ok(Response::new(proto::RemoveMemberResponse { voters }))
    }

    async fn forward(
        &self,
        request: tonic::Request<proto::ForwardRequest>,
    ) -> Result<Response<proto::ForwardResponse>, Status> {
        let write: Request = decode(&request.into_inner().request)?;
        let applied = self.0.store.propose_here(write).await.map_err(|e| match e {
            StoreError::NotLeader { .. } => not_leader(&self.0),
            StoreError::Timeout(why) => Status::deadline_exceeded(why),
            other => Status::internal(other.to_string()),
        })?;
        let result = ApplyResult { index: applied.index, outcome: applied.response, state_hash: applied.state_hash };
        let result = serde_json::to_vec(&result).map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(proto::ForwardResponse { result }))
    }

    async fn transfer_leader(
        &self,
        request: tonic::Request<proto::TransferRequest>,
    ) -> Result<Response<proto::TransferResponse>, Status> {
        if !self.0.is_leader() {
            return Err(not_leader(&self.0));
        }
        let to = Some(request.into_inner().to).filter(|t| *t != 0);
        let leader = self.0.transfer_leader_here(to).await.map_err(Status::failed_precondition)?;
        Ok(Response::new(proto::TransferResponse { leader }))
    }

    async fn upgrade(
        &self,
        request: tonic::Request<proto::UpgradeCall>,
    ) -> Result<Response<proto::UpgradeReply>, Status> {
        let agent = self.0.upgrade.get().ok_or_else(|| Status::unavailable("this node has no upgrade agent yet"))?;
        let reply = agent.call(request.into_inner().request).await.map_err(Status::failed_precondition)?;
        Ok(Response::new(proto::UpgradeReply { reply }))
    }

    async fn fetch_release_chunk(
        &self,
        request: tonic::Request<proto::ReleaseChunkRequest>,
    ) -> Result<Response<proto::ReleaseChunk>, Status> {
        let agent =
            self.0.upgrade.get().ok_or_else(|| Status::unavailable("this node has no upgrade agent yet"))?.clone();
        let request = request.into_inner();
        let length = request.length.min(crate::upgrade::MAX_CHUNK);
        // A disk read: off the async workers.
        let read = tokio::task::spawn_blocking(move || agent.release_chunk(&request.version, request.offset, length))
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        let (data, total) = read.map_err(Status::not_found)?;
        Ok(Response::new(proto::ReleaseChunk { data, total }))
    }

    async fn elect_now(
        &self,
        _request: tonic::Request<proto::ElectRequest>,
    ) -> Result<Response<proto::ElectResponse>, Status> {
        self.0.store.raft().trigger().elect().await.map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(proto::ElectResponse {}))
    }
}

/// On the leader: adds `node_id` as a learner, waits until it has caught up, makes it a voter.
pub async fn add_member_here(shared: &Shared, node_id: NodeId, advertise: &str) -> Result<Vec<u64>, String> {
    let raft = shared.store.raft();
    let node = BasicNode { addr: advertise.to_owned() };
    let learner = tokio::time::timeout(CATCH_UP_TIMEOUT, raft.add_learner(node_id, node, true)).await;
    match learner {
        Err(_) => return Err(format!("node {node_id} at {advertise} did not catch up within {CATCH_UP_TIMEOUT:?}")),
        Ok(Err(e)) => return Err(format!("cannot add node {node_id} as a learner: {e}")),
        Ok(Ok(_)) => {}
    }
    let voters = shared.store.status().voters;
    if !voters.contains(&node_id) {
        let mut wanted: BTreeSet<NodeId> = voters.into_iter().collect();
        wanted.insert(node_id);
        raft.change_membership(wanted, false).await.map_err(|e| format!("cannot make node {node_id} a voter: {e}"))?;
    }
    tracing::info!(node_id, %advertise, "member added as a voter");
    Ok(shared.store.status().voters)
}

pub struct JoinService(pub Arc<Shared>);

#[tonic::async_trait]
impl proto::join_server::Join for JoinService {
    async fn challenge(
        &self,
        _request: tonic::Request<proto::ChallengeRequest>,
    ) -> Result<Response<proto::ChallengeResponse>, Status> {
        let nonce = crate::identity::random_bytes::<32>().map_err(Status::internal)?;
        self.0.nonces.lock().unwrap_or_else(|p| p.into_inner()).issue(nonce, now_ms());
        Ok(Response::new(proto::ChallengeResponse { nonce: nonce.to_vec(), cluster_id: self.0.cluster_id.clone() }))
    }

    async fn join(&self, request: tonic::Request<proto::JoinRequest>) -> Result<Response<proto::JoinResponse>, Status> {
        let peer = request.remote_addr();
        let request = request.into_inner();
        match self.0.answer_join(&request) {
            Ok(answer) => {
                tracing::info!(node_id = request.node_id, advertise = %request.advertise, "join accepted; enrolling");
                let shared = self.0.clone();
                let (node_id, advertise) = (request.node_id, request.advertise.clone());
                tokio::spawn(async move { shared.enrol(node_id, advertise).await });
                Ok(Response::new(answer))
            }
            Err(refusal) => {
                tracing::warn!(?peer, node_id = request.node_id, reason = %refusal, "join refused");
                self.0.join_refusals.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Err(Status::permission_denied(refusal.to_string()))
            }
        }
    }
}

impl Shared {
    /// Checks a join request and builds its answer; changes nothing but the nonce book.
    fn answer_join(&self, request: &proto::JoinRequest) -> Result<proto::JoinResponse, Refusal> {
        self.nonces.lock().unwrap_or_else(|p| p.into_inner()).take(&request.nonce, now_ms())?;
        if !request.cluster_id.is_empty() && request.cluster_id != self.cluster_id {
            let (asked, ours) = (request.cluster_id.clone(), self.cluster_id.clone());
            let restored = self.store.read(|s| s.cluster().is_some_and(|c| c.descends_from(&asked).is_some()));
            return Err(if restored {
                Refusal::RestoredFrom { asked, ours }
            } else {
                Refusal::ForeignCluster { asked, ours }
            });
        }
        let fields = JoinFields {
            nonce: &request.nonce,
            node_id: request.node_id,
            advertise: &request.advertise,
            cluster_id: &request.cluster_id,
            csr_pem: &request.csr_pem,
            client_nonce: &request.client_nonce,
        };
        join::verify_request(&self.token, &fields, &request.mac)?;
        if request.node_id == 0 {
            return Err(Refusal::BadRequest("node_id: 0 is not a node id".into()));
        }
        if request.advertise.parse::<std::net::SocketAddr>().is_err() {
            return Err(Refusal::BadRequest(format!("advertise: {:?} is not an ip:port", request.advertise)));
        }
        if request.csr_pem.len() > MAX_CSR_BYTES || request.client_nonce.len() != 32 {
            return Err(Refusal::BadRequest("csr_pem or client_nonce out of bounds".into()));
        }
        let status = self.store.status();
        if status.voters.contains(&request.node_id) || status.learners.contains(&request.node_id) {
            return Err(Refusal::AlreadyMember(request.node_id));
        }
        let cert = crate::pki::sign_node_csr(&self.identity.ca, &request.csr_pem, request.node_id)
            .map_err(|e| Refusal::BadRequest(e.to_string()))?;
        let sealed =
            join::seal(&self.token, &request.nonce, &request.client_nonce, self.identity.ca.key_pem.as_bytes());
        let voters = status.voters;
        let answer = AnswerFields {
            nonce: &request.nonce,
            client_nonce: &request.client_nonce,
            cluster_id: &self.cluster_id,
            ca_pem: &self.identity.ca.cert_pem,
            node_cert_pem: &cert,
            sealed_ca_key: &sealed,
            voters: &voters,
        };
        let mac = join::answer_mac(&self.token, &answer);
        Ok(proto::JoinResponse {
            cluster_id: self.cluster_id.clone(),
            ca_pem: self.identity.ca.cert_pem.clone(),
            node_cert_pem: cert,
            sealed_ca_key: sealed,
            voters,
            mac,
        })
    }
}
