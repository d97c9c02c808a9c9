//! Three members in one process on loopback (no dataplane is needed to test the control
//! plane): seed and two joins over the real join listener and mutual TLS, writes through a
//! follower, equal state hashes, and the refusals of design §10 for joins and RPCs.

mod common;

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use common::{config, put, start, wait_for};
use sluice_cluster::Role;
use sluice_store::Store;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_seed_and_two_joins_form_a_cluster_that_replicates_writes_made_anywhere() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let seed = start(config(dirs[0].path(), None)).await;
    assert_eq!(seed.cluster.role, Role::Seed);
    let join_addr = seed.config.join_bind.to_string();
    let token = std::fs::read_to_string(&seed.config.paths.bootstrap_token_path).unwrap();
    let mut members = vec![seed];
    // The second node joins through the seed, the third through that follower's join
    // listener: a follower handles a join and has the leader add the node.
    let mut through = join_addr.clone();
    for dir in &dirs[1..] {
        std::fs::write(dir.path().join("bootstrap-token"), &token).unwrap();
        let member = start(config(dir.path(), Some(through.clone()))).await;
        assert_eq!(member.cluster.role, Role::Joined);
        through = member.config.join_bind.to_string();
        members.push(member);
    }
    assert_ne!(members[1].store.status().leader, Some(members[1].store.status().node_id), "joined via a follower");
    let voters = members[0].store.status().voters;
    assert_eq!(voters.len(), 3, "{voters:?}");

    // A write through a follower is forwarded, answered as if local, and seen everywhere.
    let leader = members[0].store.status().leader.unwrap();
    let follower = members.iter().find(|m| m.store.status().node_id != leader).unwrap();
    let applied = follower.store.write("test", put(1)).await.expect("forwarded write");
    assert!(applied.response.is_ok(), "{applied:?}");
    assert!(follower.store.status().applied_index >= applied.index, "the follower reads its own write");
    for m in &members {
        let store = m.store.clone();
        wait_for("replication", || store.status().applied_index >= applied.index).await;
    }
    let hashes: Vec<_> = members.iter().map(|m| m.store.status().state_hash).collect();
    assert!(hashes.windows(2).all(|w| w[0] == w[1]), "{hashes:?}");

    // Leadership moves to the node asked for.
    let target = members.iter().map(|m| m.store.status().node_id).find(|id| *id != leader).unwrap();
    let new_leader = members[0].cluster.transfer_leader(Some(target)).await.unwrap();
    assert_eq!(new_leader, target);
    let applied = members[0].store.write("test", put(2)).await.expect("a write after the transfer");
    assert!(applied.response.is_ok());

    // Removing a member: with one follower down, removing the other would leave one
    // reachable voter of two: refused without force. Removing the dead one is fine.
    let leader_id = target;
    let (alive, dead): (Vec<u64>, Vec<u64>) = {
        let others: Vec<u64> = members.iter().map(|m| m.store.status().node_id).filter(|id| *id != leader_id).collect();
        (vec![others[0]], vec![others[1]])
    };
    {
        let leader_member = members.iter().find(|m| m.store.status().node_id == leader_id).unwrap();
        wait_for("probes", || leader_member.cluster.shared.reachable(alive[0])).await;
    }
    let index = members.iter().position(|m| m.store.status().node_id == dead[0]).unwrap();
    let down = members.remove(index);
    down.cluster.shutdown().await;
    down.store.raft().shutdown().await.unwrap();
    let leader_member = members.iter().find(|m| m.store.status().node_id == leader_id).unwrap();
    wait_for("the probe to notice", || !leader_member.cluster.shared.reachable(dead[0])).await;
    let refused = leader_member.cluster.remove_member(alive[0], false).await.unwrap_err();
    assert!(refused.contains("below the quorum of 2"), "{refused}");
    assert_eq!(leader_member.store.status().voters.len(), 3, "nothing changed");
    let voters = leader_member.cluster.remove_member(dead[0], false).await.unwrap();
    assert_eq!(voters.len(), 2, "{voters:?}");
    let applied = leader_member.store.write("test", put(3)).await.expect("the two keep accepting writes");
    assert!(applied.response.is_ok());

    for m in members {
        m.cluster.shutdown().await;
        m.store.raft().shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn joins_with_a_wrong_token_a_replay_or_another_clusters_id_are_refused_with_the_reason() {
    use sluice_cluster::join::{request_mac, JoinFields};
    use sluice_cluster::proto::join_client::JoinClient;
    use sluice_cluster::proto::{ChallengeRequest, JoinRequest};

    let dir = tempfile::tempdir().unwrap();
    let seed = start(config(dir.path(), None)).await;
    let join_addr = seed.config.join_bind.to_string();
    let token = std::fs::read_to_string(&seed.config.paths.bootstrap_token_path).unwrap().trim().to_owned();
    let index_before = seed.store.status().applied_index;

    let wrong = sluice_cluster::enroll::join_cluster(&join_addr, 77, "127.0.0.1:1", "not-the-token-at-all", None)
        .await
        .unwrap_err();
    assert!(wrong.contains("not made with this cluster's bootstrap token"), "{wrong}");
    let foreign = sluice_cluster::enroll::join_cluster(&join_addr, 77, "127.0.0.1:1", &token, Some("0123abcd"))
        .await
        .unwrap_err();
    assert!(
        foreign.contains(&format!("belongs to cluster {}, not to cluster 0123abcd", seed.cluster.shared.cluster_id)),
        "{foreign}"
    );

    // A request captured on the wire and sent again.
    let tls = Arc::new(sluice_cluster::tls::join_client_config().unwrap());
    let mut client = JoinClient::new(sluice_cluster::tls::channel(&join_addr, tls, Duration::from_secs(10)).unwrap());
    let challenge = client.challenge(ChallengeRequest {}).await.unwrap().into_inner();
    let key = sluice_cluster::pki::new_node_key(78).unwrap();
    let fields = JoinFields {
        nonce: &challenge.nonce,
        node_id: 78,
        advertise: "127.0.0.1:2",
        cluster_id: "",
        csr_pem: &key.csr_pem,
        client_nonce: &[9; 32],
    };
    let request = JoinRequest {
        nonce: challenge.nonce.clone(),
        node_id: 78,
        advertise: "127.0.0.1:2".into(),
        cluster_id: String::new(),
        csr_pem: key.csr_pem.clone(),
        client_nonce: vec![9; 32],
        mac: request_mac(&token, &fields),
    };
    let mut tampered = request.clone();
    tampered.node_id = 79;
    let refused = client.join(tampered).await.unwrap_err();
    assert!(refused.message().contains("bootstrap token"), "a changed field breaks the MAC: {refused:?}");
    let replayed = client.join(request).await.unwrap_err();
    assert!(replayed.message().contains("replayed"), "{replayed:?}");
    assert_eq!(seed.store.status().applied_index, index_before, "no refused join changed the cluster");
    assert_eq!(seed.store.status().voters.len(), 1);
    assert_eq!(seed.cluster.shared.join_refusals.load(std::sync::atomic::Ordering::Relaxed), 4);

    // The cluster listener refuses a client without a certificate of the cluster CA.
    let anonymous = Arc::new(sluice_cluster::tls::join_client_config().unwrap());
    let channel =
        sluice_cluster::tls::channel(&seed.config.bind.to_string(), anonymous, Duration::from_secs(5)).unwrap();
    let mut agent = sluice_cluster::proto::node_agent_client::NodeAgentClient::new(channel);
    let refused = agent.status(sluice_cluster::proto::StatusRequest {}).await.unwrap_err();
    // Refused in the TLS handshake: no gRPC answer at all, a transport failure (TLS 1.3 shows
    // it as an alert, a broken pipe or a closed connection, depending on timing).
    let transport = std::error::Error::source(&refused).is_some_and(|e| e.is::<tonic::transport::Error>());
    assert!(transport, "refused in the handshake, not by a handler: {refused:?}");
    // The same call with a member's certificate is answered.
    let member = Arc::new(sluice_cluster::tls::cluster_client_config(&seed.cluster.shared.identity).unwrap());
    let channel = sluice_cluster::tls::channel(&seed.config.bind.to_string(), member, Duration::from_secs(5)).unwrap();
    let mut agent = sluice_cluster::proto::node_agent_client::NodeAgentClient::new(channel);
    let status = agent.status(sluice_cluster::proto::StatusRequest {}).await.unwrap().into_inner();
    assert_eq!(status.cluster_id, seed.cluster.shared.cluster_id);
    seed.cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_single_node_becomes_the_seed_with_its_state_and_id() {
    let dir = tempfile::tempdir().unwrap();
    let single =
        Store::open_single_node(sluice_store::StoreConfig::single_node(dir.path().join("store"))).await.unwrap();
    let cluster_id = single.ensure_cluster_identity("bootstrap").await.unwrap();
    single.write("before", put(1)).await.unwrap().response.unwrap();
    let before = single.status();
    single.shutdown().await.unwrap();

    let seed = start(config(dir.path(), None)).await;
    assert_eq!(seed.cluster.role, Role::Seed);
    let status = seed.store.status();
    assert_eq!((status.node_id, status.voters.clone()), (1, vec![1]), "the single node keeps id 1");
    assert_eq!(seed.cluster.shared.cluster_id, cluster_id, "and its cluster id");
    assert!(status.applied_index > before.applied_index, "one more entry: its cluster address");
    assert_eq!(seed.store.read(|s| s.active_policy().map(|p| p.version)), Some(1), "the state is kept");
    assert_eq!(
        sluice_cluster::network::member_address(&seed.store, 1).as_deref(),
        Some(seed.config.advertise.as_str()),
        "its membership now carries its cluster address"
    );
    seed.cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_certificate_of_another_cluster_is_refused_on_the_cluster_listener() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let ours = start(config(a.path(), None)).await;
    let theirs = start(config(b.path(), None)).await;
    let foreign = Arc::new(sluice_cluster::tls::cluster_client_config(&theirs.cluster.shared.identity).unwrap());
    let channel = sluice_cluster::tls::channel(&ours.config.bind.to_string(), foreign, Duration::from_secs(5)).unwrap();
    let mut agent = sluice_cluster::proto::node_agent_client::NodeAgentClient::new(channel);
    let refused = agent.status(sluice_cluster::proto::StatusRequest {}).await.unwrap_err();
    let transport = std::error::Error::source(&refused).is_some_and(|e| e.is::<tonic::transport::Error>());
    assert!(transport, "refused in the handshake: {refused:?}");
    // And the other way round: our client does not accept their server.
    let ours_client = Arc::new(sluice_cluster::tls::cluster_client_config(&ours.cluster.shared.identity).unwrap());
    let channel =
        sluice_cluster::tls::channel(&theirs.config.bind.to_string(), ours_client, Duration::from_secs(5)).unwrap();
    let mut agent = sluice_cluster::proto::node_agent_client::NodeAgentClient::new(channel);
    assert!(agent.status(sluice_cluster::proto::StatusRequest {}).await.is_err());
    ours.cluster.shutdown().await;
    theirs.cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stopped_member_frees_its_addresses_and_restarts_in_the_same_process() {
    let dir = tempfile::tempdir().unwrap();
    let seed = start(config(dir.path(), None)).await;
    let config = seed.config.clone();
    seed.cluster.shutdown().await;
    seed.store.raft().shutdown().await.unwrap();
    drop(seed.cluster);
    let store = Arc::try_unwrap(seed.store).ok().expect("nothing else holds the store after shutdown");
    store.shutdown().await.unwrap();
    for addr in [config.bind, config.join_bind] {
        TcpListener::bind(addr).unwrap_or_else(|e| panic!("{addr} still taken: {e}"));
    }
    let again = start(config).await;
    assert_eq!(again.cluster.role, Role::Restarted);
    again.cluster.shutdown().await;
}
