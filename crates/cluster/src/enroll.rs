//! The joiner's side of enrolment: challenge, proof of the bootstrap token, and checking the
//! answer before anything it carries is trusted.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::identity::{random_bytes, Identity};
use crate::join::{self, AnswerFields, JoinFields};
use crate::pki::{self, CaMaterial};
use crate::proto::join_client::JoinClient;
use crate::proto::{ChallengeRequest, JoinRequest};

/// How long a joiner keeps trying to reach the seed's join listener.
pub const REACH_SEED_TIMEOUT: Duration = Duration::from_secs(60);

/// Joins the cluster whose join listener is at `seed`; returns the identity to store.
pub async fn join_cluster(
    seed: &str,
    node_id: u64,
    advertise: &str,
    token: &str,
    expected_cluster_id: Option<&str>,
) -> Result<Identity, String> {
    let channel = crate::tls::channel(seed, Arc::new(crate::tls::join_client_config()?), Duration::from_secs(30))?;
    let mut client = JoinClient::new(channel);
    let deadline = Instant::now() + REACH_SEED_TIMEOUT;
    let challenge = loop {
        match client.challenge(ChallengeRequest {}).await {
            Ok(answer) => break answer.into_inner(),
            Err(status) if Instant::now() < deadline && status.code() == tonic::Code::Unavailable => {
                tracing::info!(%seed, error = %status.message(), "the seed's join listener is not answering yet");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(status) => return Err(format!("cannot reach the join listener at {seed}: {}", status.message())),
        }
    };
    let key = pki::new_node_key(node_id).map_err(|e| e.to_string())?;
    let client_nonce = random_bytes::<32>()?;
    let asked_cluster = expected_cluster_id.unwrap_or("");
    let fields = JoinFields {
        nonce: &challenge.nonce,
        node_id,
        advertise,
        cluster_id: asked_cluster,
        csr_pem: &key.csr_pem,
        client_nonce: &client_nonce,
    };
    let request = JoinRequest {
        nonce: challenge.nonce.clone(),
        node_id,
        advertise: advertise.to_owned(),
        cluster_id: asked_cluster.to_owned(),
        csr_pem: key.csr_pem.clone(),
        client_nonce: client_nonce.to_vec(),
        mac: join::request_mac(token, &fields),
    };
    let answer = client
        .join(request)
        .await
        .map_err(|status| format!("the join was refused by {seed}: {}", status.message()))?
        .into_inner();
    let checked = AnswerFields {
        nonce: &challenge.nonce,
        client_nonce: &client_nonce,
        cluster_id: &answer.cluster_id,
        ca_pem: &answer.ca_pem,
        node_cert_pem: &answer.node_cert_pem,
        sealed_ca_key: &answer.sealed_ca_key,
        voters: &answer.voters,
    };
    join::verify_answer(token, &checked, &answer.mac).map_err(|e| format!("{seed}: {e}"))?;
    if let Some(expected) = expected_cluster_id {
        if answer.cluster_id != expected {
            return Err(format!("{seed} answered for cluster {}, not {expected}", answer.cluster_id));
        }
    }
    let ca_key = join::open(token, &challenge.nonce, &client_nonce, &answer.sealed_ca_key)?;
    let ca_key = String::from_utf8(ca_key).map_err(|_| "the CA key is not PEM text".to_owned())?;
    tracing::info!(%seed, cluster_id = %answer.cluster_id, node_id, "enrolled: certificate received");
    Ok(Identity {
        node_id,
        cluster_id: answer.cluster_id,
        ca: CaMaterial { cert_pem: answer.ca_pem, key_pem: ca_key },
        node_cert_pem: answer.node_cert_pem,
        node_key_pem: key.key_pem,
    })
}

/// How long a restarted member waits for the join listener named by `--join` before it
/// starts without asking (a restart must not depend on the seed).
pub const JOIN_TARGET_CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// For a restarted member that still has `--join` in its configuration: asks the join
/// listener which cluster it serves. The same cluster, or no answer in time: fine, the member
/// carries on with its stored identity. Another cluster: this node's data root does not
/// belong there (typically a member of a cluster that was since restored from a snapshot as
/// a new one), so it asks to join under its own cluster id, lets that cluster say why it
/// refuses, and returns the refusal as the error. Nothing changes on either side.
pub async fn check_join_target(seed: &str, identity: &Identity, advertise: &str, token: &str) -> Result<(), String> {
    let attempt = async {
        let channel =
            crate::tls::channel(seed, Arc::new(crate::tls::join_client_config()?), JOIN_TARGET_CHECK_TIMEOUT)?;
        let mut client = JoinClient::new(channel);
        let challenge = client
            .challenge(ChallengeRequest {})
            .await
            .map_err(|status| format!("no challenge: {}", status.message()))?
            .into_inner();
        if challenge.cluster_id == identity.cluster_id {
            return Ok::<_, String>(None);
        }
        let key = pki::new_node_key(identity.node_id).map_err(|e| e.to_string())?;
        let client_nonce = random_bytes::<32>()?;
        let fields = JoinFields {
            nonce: &challenge.nonce,
            node_id: identity.node_id,
            advertise,
            cluster_id: &identity.cluster_id,
            csr_pem: &key.csr_pem,
            client_nonce: &client_nonce,
        };
        let request = JoinRequest {
            nonce: challenge.nonce.clone(),
            node_id: identity.node_id,
            advertise: advertise.to_owned(),
            cluster_id: identity.cluster_id.clone(),
            csr_pem: key.csr_pem.clone(),
            client_nonce: client_nonce.to_vec(),
            mac: join::request_mac(token, &fields),
        };
        let reason = match client.join(request).await {
            Err(status) => status.message().to_owned(),
            Ok(_) => format!("it serves cluster {}", challenge.cluster_id),
        };
        Ok(Some(reason))
    };
    match tokio::time::timeout(JOIN_TARGET_CHECK_TIMEOUT, attempt).await {
        Ok(Ok(None)) => Ok(()),
        Ok(Ok(Some(reason))) => Err(format!(
            "this node belongs to cluster {} (stored in its data root), and the cluster at --join {seed} refused \
             it: {reason}",
            identity.cluster_id
        )),
        Ok(Err(e)) => {
            tracing::info!(%seed, error = %e, "could not ask the --join address which cluster it serves; starting with the stored identity");
            Ok(())
        }
        Err(_) => {
            tracing::info!(%seed, "the --join address did not answer in time; starting with the stored identity");
            Ok(())
        }
    }
}
