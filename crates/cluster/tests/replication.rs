//! Replication under the conditions of a rolling restart: a member that comes back far
//! behind catches up even when the entries it missed are large, and a member that is
//! stopping starts no election (which would leave it with a higher term that disrupts the
//! leader when it returns).

mod common;

use std::time::Duration;

use common::{start, stop, take_follower, three, wait_for};
use sluice_cluster::Role;
use sluice_store::state::Command;

/// A policy document of about `groups` × 150 bytes: many source groups, as a large site has.
fn large_policy(version: u32, groups: u32) -> Command {
    let groups: Vec<String> = (0..groups)
        .map(|g| {
            format!(
                r#"{{"id":"site-{version}-group-{g}","priority":{g},"sources":{{"cidrs":["10.{}.{}.0/24"]}},"rules":[]}}"#,
                g / 250,
                g % 250
            )
        })
        .collect();
    let document = format!(r#"{{"default_action":"deny","source_groups":[{}]}}"#, groups.join(","));
    Command::PutPolicy { document, comment: format!("large v{version}") }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_back_from_a_stop_catches_up_on_many_large_entries() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut members = three(&dirs).await;
    let (leader, follower) = take_follower(&mut members);
    let away = stop(follower).await;

    // About 3 MB of entries it has not seen: more than one append may carry in the time
    // openraft gives it (one heartbeat interval).
    let writer = members.iter().find(|m| m.store.status().node_id == leader).unwrap();
    let mut last = 0;
    for version in 0..200 {
        last =
            writer.store.write("test", large_policy(version, 100)).await.expect("a write with one member away").index;
    }

    let back = start(config_again(away)).await;
    assert_eq!(back.cluster.role, Role::Restarted);
    let store = back.store.clone();
    wait_for("the returning member to apply every entry it missed", || store.status().applied_index >= last).await;
    let leader_hash = writer.store.status().state_hash;
    assert_eq!(store.status().state_hash, leader_hash, "the returning member's state equals the leader's");
    drop(store);

    members.push(back);
    for m in members {
        stop(m).await;
    }
}

/// The same data root and addresses as before the stop.
fn config_again(config: sluice_cluster::ClusterConfig) -> sluice_cluster::ClusterConfig {
    sluice_cluster::ClusterConfig { join: None, ..config }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_that_stops_standing_starts_no_election_once_it_hears_no_leader() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut members = three(&dirs).await;
    let (leader, stopping) = take_follower(&mut members);
    let term = stopping.store.status().term;

    // What a stopping node does: no more elections, then its listeners close, so it hears
    // from no leader for several election timeouts (250-500 ms each).
    stopping.store.stop_standing_for_election();
    stopping.cluster.shutdown().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let status = stopping.store.status();
    assert_eq!(status.term, term, "the stopping member stood for election: term {term} -> {}", status.term);
    assert_ne!(status.leader, Some(status.node_id));

    // The others keep a leader among themselves. Usually it is the same one in the same
    // term; a loaded machine may stall a heartbeat past an election timeout, and the two
    // may then elect again, but never because of the stopping member, whose term stayed.
    let stopping_id = status.node_id;
    wait_for("a leader among the others", || members.iter().all(|m| m.store.status().leader.is_some())).await;
    for m in &members {
        let s = m.store.status();
        assert!(s.leader.is_some() && s.leader != Some(stopping_id), "node {}: leader {:?}", s.node_id, s.leader);
        if s.term == term {
            assert_eq!(s.leader, Some(leader), "node {}: a new leader in the same term", s.node_id);
        }
    }
    stop(stopping).await;
    for m in members {
        stop(m).await;
    }
}
