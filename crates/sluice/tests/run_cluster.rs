//! Three real `sluice run` processes, each a node with its own dataplane in its own lab
//! (client, node, upstream), joined by a management network for cluster RPC: the cluster
//! forms by seed and `--join`; a policy written through a follower is enforced by all three
//! dataplanes; the leader is killed (-9) and replaced, and comes back without seed or token;
//! a node cut off the management network reports `cluster` not ready and refuses writes with
//! 503 while its dataplane keeps enforcing, then catches up. Needs root.

mod node_harness;

use std::time::{Duration, Instant};

use node_harness::cluster_nodes::{check_ok, form, hashes_agree, policy_without_echo, three_labs, wait_until};
use node_harness::{require_root, POLICY};

#[test]
fn three_nodes_form_a_cluster_fail_over_and_survive_a_partition() {
    require_root();
    let (mgmt, mut nodes) = three_labs();
    let first = nodes[0].dir.path().join("policy.json");
    std::fs::write(&first, policy_without_echo()).unwrap();
    let with_echo = nodes[0].dir.path().join("with-echo.json");
    std::fs::write(&with_echo, POLICY).unwrap();

    // Seed, then two joins with a copy of the bootstrap token.
    let token = form(&mut nodes, Some(&first));
    for node in &nodes {
        assert!(!node.echo_passes(), "version 1 has no echo rule (node {})", node.index);
    }
    let cluster = nodes[0].cluster();
    let voters = cluster["members"].as_array().unwrap().iter().filter(|m| m["role"] == "voter").count();
    assert_eq!(voters, 3, "{cluster:#}");

    // A policy written through a follower is enforced by all three dataplanes.
    let leader_id = nodes[0].cluster()["leader"].as_u64().unwrap();
    let follower = nodes.iter().position(|n| n.node_id() != leader_id).unwrap();
    let put = nodes[follower].cli(&["policy", "put", with_echo.to_str().unwrap()]).ok();
    assert_eq!(put.stdout, "stored as version 2; the dataplane runs it");
    for node in &nodes {
        wait_until("version 2 everywhere", Duration::from_secs(10), || node.echo_passes());
    }
    wait_until("equal state hashes", Duration::from_secs(10), || hashes_agree(&nodes[0]));

    // kill -9 the leader: a survivor takes over and accepts writes.
    let leader = nodes.iter().position(|n| n.node_id() == leader_id).unwrap();
    let killed_at = Instant::now();
    nodes[leader].process.as_mut().unwrap().stop(libc::SIGKILL, Duration::from_secs(5));
    let survivor = (leader + 1) % 3;
    wait_until("a new leader", Duration::from_secs(10), || {
        nodes[survivor].cluster()["leader"].as_u64().is_some_and(|l| l != leader_id)
    });
    let failover = killed_at.elapsed();
    let put = nodes[survivor].cli(&["policy", "put", first.to_str().unwrap(), "--comment", "after failover"]).ok();
    assert_eq!(put.stdout, "stored as version 3; the dataplane runs it", "failover took {failover:?}");
    // The old leader restarts with neither the seed's help nor the token.
    std::fs::remove_file(nodes[leader].dir.path().join("bootstrap-token")).unwrap();
    nodes[leader].start(None, false);
    assert!(nodes[leader].log().contains("Restarted"), "{}", nodes[leader].log());
    wait_until("the old leader catches up", Duration::from_secs(20), || {
        let ready = nodes[leader].ready();
        check_ok(&ready, "policy_replication") && !nodes[leader].echo_passes()
    });
    wait_until("equal state hashes after the restart", Duration::from_secs(10), || hashes_agree(&nodes[survivor]));

    // Cut a follower off: it is not ready, refuses writes with 503, keeps enforcing.
    let leader_id = nodes[survivor].cluster()["leader"].as_u64().unwrap();
    let cut = nodes.iter().position(|n| n.node_id() != leader_id).unwrap();
    let majority: Vec<usize> = (0..3).filter(|i| *i != cut).collect();
    mgmt.set_link(&nodes[cut].lab.node, cut, false);
    wait_until("the cut node to notice", Duration::from_secs(15), || !check_ok(&nodes[cut].ready(), "cluster"));
    let refused = nodes[cut].cli(&["policy", "put", with_echo.to_str().unwrap()]);
    assert_eq!(refused.code, 5, "{}\n{}", refused.stdout, refused.stderr);
    assert!(refused.stderr.contains("no_leader"), "{}", refused.stderr);
    assert!(!nodes[cut].echo_passes(), "the cut node's dataplane still enforces version 3");
    let put = nodes[majority[0]].cli(&["policy", "put", with_echo.to_str().unwrap(), "--comment", "majority"]).ok();
    assert_eq!(put.stdout, "stored as version 4; the dataplane runs it");
    wait_until("version 4 on the other majority node", Duration::from_secs(20), || nodes[majority[1]].echo_passes());
    assert!(!nodes[cut].echo_passes(), "the cut node did not get version 4");
    mgmt.set_link(&nodes[cut].lab.node, cut, true);
    wait_until("the cut node catches up", Duration::from_secs(30), || {
        let ready = nodes[cut].ready();
        check_ok(&ready, "cluster") && check_ok(&ready, "policy_replication")
    });
    assert!(nodes[cut].echo_passes(), "version 4 reached the node that was cut off");
    wait_until("equal state hashes after the partition", Duration::from_secs(15), || hashes_agree(&nodes[cut]));

    for node in &mut nodes {
        let (status, _) = node.process.as_mut().unwrap().stop(libc::SIGTERM, Duration::from_secs(10));
        assert_eq!(status.code(), Some(0), "{}", node.log());
        assert!(!node.log().contains(token.trim()), "the bootstrap token is never logged");
    }
    eprintln!("failover (kill -9 to a new leader seen by a survivor): {failover:?}");
}

/// A policy document whose single group's id names the round, so every write is distinct.
fn numbered_policy(n: usize) -> String {
    policy_without_echo().replacen("\"clients\"", &format!("\"clients-{n}\""), 1)
}

#[test]
fn no_acknowledged_write_is_lost_while_random_nodes_are_killed() {
    require_root();
    let (_mgmt, mut nodes) = three_labs();
    form(&mut nodes, None);
    nodes[0].cli(&["settings", "--policy-history-limit", "10000"]).ok();
    let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut acknowledged = Vec::new();
    let mut refused = 0;
    let mut written = 0;
    for round in 0..20 {
        let victim = (next() % 3) as usize;
        // Writes through the other nodes while the victim goes down and comes back; each
        // answered "stored as version N" is an acknowledged write.
        let kill_after = (next() % 3) as usize;
        for attempt in 0..6 {
            if attempt == kill_after {
                nodes[victim].process.as_mut().unwrap().stop(libc::SIGKILL, Duration::from_secs(5));
            }
            written += 1;
            let file = nodes[0].dir.path().join(format!("round-{round}-{attempt}.json"));
            std::fs::write(&file, numbered_policy(written)).unwrap();
            let through = (victim + 1 + (next() % 2) as usize) % 3;
            let ran = nodes[through].cli(&["policy", "put", file.to_str().unwrap(), "--timeout", "15s"]);
            match ran.stdout.strip_prefix("stored as version ") {
                Some(rest) => acknowledged.push(rest.split(';').next().unwrap().parse::<u64>().unwrap()),
                None => {
                    refused += 1;
                    if refused <= 5 {
                        eprintln!("round {round}: not acknowledged (exit {}): {}", ran.code, ran.stderr.trim());
                    }
                }
            }
        }
        nodes[victim].start(None, false);
        let node = &nodes[victim];
        wait_until("the killed node back and caught up", Duration::from_secs(30), || {
            let ready = node.ready();
            check_ok(&ready, "cluster") && check_ok(&ready, "policy_replication")
        });
    }
    assert!(
        acknowledged.len() >= 60,
        "most writes were acknowledged: {} of {written} ({refused} not)",
        acknowledged.len()
    );
    for node in &nodes {
        let versions = node.cli(&["policy", "versions", "--json"]).ok().json();
        let stored: Vec<u64> =
            versions["versions"].as_array().unwrap().iter().map(|v| v["version"].as_u64().unwrap()).collect();
        let lost: Vec<&u64> = acknowledged.iter().filter(|v| !stored.contains(v)).collect();
        assert!(lost.is_empty(), "node {}: acknowledged versions missing: {lost:?}", node.index);
    }
    wait_until("equal state hashes at the end", Duration::from_secs(15), || hashes_agree(&nodes[0]));
    eprintln!("{} of {written} writes acknowledged over 20 kill -9 rounds; none lost", acknowledged.len());
}
