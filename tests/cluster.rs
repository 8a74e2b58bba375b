//! Three real nodes on loopback: losing the leader, a follower catching up
//! by snapshot, and membership changes, all under load.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::cluster::Cluster;
use common::workload::{check_node, seed, start_clients, Ledger};
use stockraft::proto::v1 as pb;

/// Clients on every node; the leader is killed with SIGKILL mid-stream; the
/// clients keep going through the election; the old leader comes back.
/// Every acknowledged reserve, commit and release is on every node exactly
/// once, nothing is oversold, and the replicas converge to one state.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn losing_the_leader_loses_nothing_and_oversells_nothing() {
    let mut cluster = Cluster::start(3, &[]);
    let leader = cluster.wait_leader(Duration::from_secs(20)).await.unwrap();
    seed(&cluster, leader).await;

    let started = Instant::now();
    let ledger = Arc::new(Ledger::default());
    let stop = Arc::new(AtomicBool::new(false));
    let addrs: Vec<String> = (1..=3).map(|id| cluster.addr(id)).collect();
    let tasks = start_clients(addrs, 6, ledger.clone(), stop.clone(), started);

    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let before_kill = ledger.acks.load(Ordering::Relaxed);
    let killed_at = started.elapsed().as_millis() as u64;
    cluster.kill9(leader);
    tokio::time::sleep(Duration::from_millis(3_000)).await;
    let after_kill = ledger.acks.load(Ordering::Relaxed);
    cluster.spawn(leader);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }
    assert!(
        before_kill > 20,
        "too little traffic before the kill: {before_kill}"
    );
    assert!(
        after_kill > before_kill,
        "no reserve was acknowledged after the leader died"
    );

    let new_leader = cluster.wait_leader(Duration::from_secs(20)).await.unwrap();
    let (applied, _) = cluster
        .wait_converged(&[1, 2, 3], Duration::from_secs(20))
        .await
        .unwrap();
    eprintln!(
        "leader {leader} killed at {killed_at} ms; new leader {new_leader}; {} reserves acknowledged; converged at index {applied}",
        ledger.acks.load(Ordering::Relaxed)
    );
    for id in 1..=3 {
        check_node(&cluster, id, &ledger).await;
    }
}

/// A follower is down while the log is compacted past it; on restart it
/// catches up by snapshot and converges.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_behind_the_compacted_log_catches_up_by_snapshot() {
    let mut cluster = Cluster::start(3, common::SNAPSHOT_OFTEN);
    let leader = cluster.wait_leader(Duration::from_secs(20)).await.unwrap();
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    seed(&cluster, leader).await;
    cluster.kill9(follower);

    let ledger = Arc::new(Ledger::default());
    let stop = Arc::new(AtomicBool::new(false));
    let addrs: Vec<String> = (1..=3)
        .filter(|id| *id != follower)
        .map(|id| cluster.addr(id))
        .collect();
    let tasks = start_clients(addrs, 4, ledger.clone(), stop.clone(), Instant::now());
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }
    let status = cluster.status(leader, false).await.unwrap();
    assert!(
        status.snapshot_index > 0,
        "the leader took no snapshot: {status:?}"
    );

    cluster.spawn(follower);
    cluster
        .wait_converged(&[1, 2, 3], Duration::from_secs(30))
        .await
        .unwrap();
    assert!(
        cluster
            .logs(follower)
            .contains("installed a snapshot from the leader"),
        "the follower did not catch up by snapshot:\n{}",
        cluster.logs(follower)
    );
    for id in 1..=3 {
        check_node(&cluster, id, &ledger).await;
    }
}

/// Grow 3 -> 5 under load, then shrink back to 3, without losing an
/// acknowledged write.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn growing_to_five_and_back_to_three_under_load() {
    let mut cluster = Cluster::start(
        3,
        &["--snapshot-entries", "50", "--snapshot-log-floor-mib", "0"],
    );
    let leader = cluster.wait_leader(Duration::from_secs(20)).await.unwrap();
    seed(&cluster, leader).await;
    let ledger = Arc::new(Ledger::default());
    let stop = Arc::new(AtomicBool::new(false));
    let addrs: Vec<String> = (1..=3).map(|id| cluster.addr(id)).collect();
    let tasks = start_clients(addrs, 4, ledger.clone(), stop.clone(), Instant::now());
    tokio::time::sleep(Duration::from_millis(500)).await;

    for id in [4u64, 5] {
        // Node 5 listens for peers on a port of its own.
        let (addr, peer_address) = if id == 5 {
            cluster.add_joining_with_peer_port(id, 1)
        } else {
            (cluster.add_joining(id, 1), String::new())
        };
        let mut admin = cluster.cluster_client(2).await;
        let added = admin
            .add_member(pb::AddMemberRequest {
                member_id: id,
                address: addr.clone(),
                peer_address: peer_address.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        let expected_peer = if peer_address.is_empty() {
            addr
        } else {
            peer_address
        };
        assert!(added.members.iter().any(|m| m.member_id == id
            && m.role == pb::MemberRole::Voter as i32
            && m.peer_address == expected_peer));
        cluster.spawn(id);
        cluster
            .wait_caught_up(id, 1, Duration::from_secs(30))
            .await
            .unwrap();
    }
    let status = cluster.status(5, false).await.unwrap();
    assert_eq!(status.members.len(), 5, "{status:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;

    for id in [4u64, 5] {
        let mut admin = cluster.cluster_client(1).await;
        let removed = admin
            .remove_member(pb::RemoveMemberRequest { member_id: id })
            .await
            .unwrap()
            .into_inner();
        assert!(!removed.members.iter().any(|m| m.member_id == id));
        assert_eq!(removed.leadership_moved_to, 0);
        // The removed node learns its removal (the last message it gets
        // carries the commit) and refuses calls from then on.
        refused_as_removed(&cluster, id, Duration::from_secs(5)).await;
        cluster.kill9(id);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }
    cluster
        .wait_converged(&[1, 2, 3], Duration::from_secs(30))
        .await
        .unwrap();
    let status = cluster.status(1, false).await.unwrap();
    assert_eq!(status.members.len(), 3, "{status:?}");
    assert!(
        cluster
            .logs(4)
            .contains("installed a snapshot from the leader")
            || cluster.logs(4).contains("membership changed"),
        "node 4 never caught up"
    );
    for id in 1..=3 {
        check_node(&cluster, id, &ledger).await;
    }
}

/// Waits until node `id` refuses calls as a removed member (UNAVAILABLE,
/// saying so), as it must once it applied its own removal.
async fn refused_as_removed(cluster: &Cluster, id: u64, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    let mut client = cluster.client(id).await;
    loop {
        let answer = client
            .get_availability(pb::GetAvailabilityRequest {
                skus: vec!["SKU-0".into()],
                nodes: Vec::new(),
                consistency: pb::Consistency::Linearizable as i32,
            })
            .await;
        match answer {
            Err(status) if status.message().contains("removed") => {
                assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
                return;
            }
            other => assert!(
                Instant::now() < deadline,
                "node {id} does not refuse as removed: {other:?}\n{}",
                cluster.logs(id)
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The longest a write may wait when the leader is removed: one election
/// at the servers' default timing (a randomised timeout of at most twice
/// `--election-ticks` 10 x `--tick` 100 ms). Removing the leader hands
/// leadership over first, so no election timeout is waited out at all.
const ELECTION_BOUND_MS: u64 = 2 * 10 * 100;

/// `stockraft cluster remove <leader>` under load (issue 27): the leader
/// hands leadership to another voter first, which removes it; no process
/// aborts, every call is answered within one election, nothing
/// acknowledged is lost or oversold, and the two left converge.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn removing_the_leader_under_load_hands_leadership_over_first() {
    let mut cluster = Cluster::start(3, &[]);
    let leader = cluster.wait_leader(Duration::from_secs(20)).await.unwrap();
    seed(&cluster, leader).await;
    let ledger = Arc::new(Ledger::default());
    let stop = Arc::new(AtomicBool::new(false));
    let addrs: Vec<String> = (1..=3).map(|id| cluster.addr(id)).collect();
    let tasks = start_clients(addrs, 6, ledger.clone(), stop.clone(), Instant::now());
    tokio::time::sleep(Duration::from_millis(1_000)).await;

    let before = ledger.acks.load(Ordering::Relaxed);
    ledger.slowest_call_ms.store(0, Ordering::Relaxed);
    let output = tokio::process::Command::new(common::BIN)
        .args(["cluster", "remove", &leader.to_string(), "--json"])
        .args(["--server", &cluster.addr(leader)])
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "cluster remove failed: {}\n{}",
        String::from_utf8_lossy(&output.stderr),
        cluster.all_logs()
    );
    // The proto3 JSON mapping: lowerCamelCase names, 64-bit integers as
    // strings.
    let answer: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let number = |v: &serde_json::Value| v.as_str().and_then(|s| s.parse::<u64>().ok());
    let moved_to = number(&answer["leadershipMovedTo"]).unwrap_or(0);
    assert!(
        moved_to != 0 && moved_to != leader,
        "the answer does not say where leadership went: {answer}"
    );
    let members: Vec<u64> = answer["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| number(&m["memberId"]).unwrap())
        .collect();
    assert!(!members.contains(&leader), "{answer}");
    // The removed node learnt it from the answer it relayed: it refuses at
    // once, so callers move on instead of waiting for a leader.
    let asked = Instant::now();
    let refused = cluster
        .client(leader)
        .await
        .reserve(pb::ReserveRequest {
            reservation_id: "to-the-removed-node".into(),
            lines: vec![pb::Line {
                sku: "SKU-0".into(),
                node: "dc".into(),
                qty: 1,
            }],
            ttl_ms: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    assert!(refused.message().contains("removed"), "{refused:?}");
    assert!(asked.elapsed() < Duration::from_secs(1));
    // The removed node still runs (it forwards to the new leader) until
    // the operator stops it.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert!(
        cluster.wait_exit(leader, Duration::ZERO).is_none(),
        "the removed leader exited:\n{}",
        cluster.logs(leader)
    );
    cluster.kill9(leader);
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }
    let remaining: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
    for id in &remaining {
        assert!(
            cluster.wait_exit(*id, Duration::ZERO).is_none(),
            "node {id} exited:\n{}",
            cluster.logs(*id)
        );
    }
    for id in 1..=3 {
        assert!(
            !cluster.logs(id).contains("panicked"),
            "node {id} panicked:\n{}",
            cluster.logs(id)
        );
    }
    let after = ledger.acks.load(Ordering::Relaxed);
    let slowest_ms = ledger.slowest_call_ms.load(Ordering::Relaxed);
    eprintln!(
        "leader {leader} removed; leadership moved to {moved_to}; reserves acknowledged {before} before, {after} in all; slowest call from the removal on {slowest_ms} ms"
    );
    assert!(
        after > before,
        "no write was acknowledged after the removal"
    );
    assert!(
        slowest_ms < ELECTION_BOUND_MS,
        "a call waited {slowest_ms} ms, more than one election ({ELECTION_BOUND_MS} ms)"
    );
    let new_leader = cluster.wait_leader(Duration::from_secs(20)).await.unwrap();
    assert_ne!(new_leader, leader);
    cluster
        .wait_converged(&remaining, Duration::from_secs(20))
        .await
        .unwrap();
    let status = cluster.status(new_leader, false).await.unwrap();
    assert_eq!(status.members.len(), 2, "{status:?}");
    for id in remaining {
        check_node(&cluster, id, &ledger).await;
    }
}

/// Members listening for peers on ports of their own (`--peer-listen`,
/// `--peers ID=CLIENT/PEER`): Raft traffic flows between the peer ports,
/// a leader killed is replaced, and each port serves only its own
/// services.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn peers_on_ports_of_their_own() {
    let (mut cluster, peer_addrs) = Cluster::start_with_peer_ports(3, &[]);
    let leader = cluster.wait_leader(Duration::from_secs(20)).await.unwrap();
    let status = cluster.status(leader, false).await.unwrap();
    for member in &status.members {
        assert_eq!(
            member.peer_address, peer_addrs[&member.member_id],
            "{status:?}"
        );
        assert_ne!(member.peer_address, member.address);
    }
    seed(&cluster, leader).await;
    cluster.kill9(leader);
    let deadline = Instant::now() + Duration::from_secs(20);
    let next = loop {
        let next = cluster.wait_leader(Duration::from_secs(20)).await.unwrap();
        if next != leader {
            break next;
        }
        assert!(Instant::now() < deadline, "no new leader after the kill");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut c = cluster.client(next).await;
    c.set_on_hand(pb::SetOnHandRequest {
        txn_id: "after-kill".into(),
        sku: "SKU-0".into(),
        node: "dc".into(),
        on_hand: 7,
        expected_on_hand: None,
    })
    .await
    .unwrap();
    // The client port has no Peer service; the peer port no Inventory.
    let channel = stockraft::client::channel(&cluster.addr(next), Duration::from_secs(5))
        .await
        .unwrap();
    let batch = stockraft::proto::internal::PeerBatch {
        from: leader,
        messages: Vec::new(),
        sender: None,
        clock: None,
    };
    let refused = stockraft::proto::internal::peer_client::PeerClient::new(channel)
        .send(tokio_stream::iter(vec![batch]))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unimplemented, "{refused:?}");
    let peer_channel = stockraft::client::channel(&peer_addrs[&next], Duration::from_secs(5))
        .await
        .unwrap();
    let refused = stockraft::proto::v1::inventory_client::InventoryClient::new(peer_channel)
        .get_availability(pb::GetAvailabilityRequest {
            skus: vec!["SKU-0".into()],
            nodes: Vec::new(),
            consistency: pb::Consistency::Local as i32,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unimplemented, "{refused:?}");
}

/// Leadership moves on request, and writes keep working through it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leadership_can_be_handed_over() {
    let cluster = Cluster::start(3, &[]);
    let leader = cluster.wait_leader(Duration::from_secs(20)).await.unwrap();
    let target = (1..=3).find(|id| *id != leader).unwrap();
    let mut admin = cluster.cluster_client(leader).await;
    let moved = admin
        .transfer_leader(pb::TransferLeaderRequest { member_id: target })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(moved.leader_id, target);
    assert_eq!(
        cluster.wait_leader(Duration::from_secs(10)).await.unwrap(),
        target
    );
    seed(&cluster, leader).await;
    cluster
        .wait_converged(&[1, 2, 3], Duration::from_secs(10))
        .await
        .unwrap();
}

/// Damages the newest RocksDB WAL file of a stopped node: flips bytes near
/// its end, as a torn or rotten disk would.
fn damage_wal_tail(dir: &std::path::Path) -> std::path::PathBuf {
    let wal = common::newest_wal(dir);
    let mut bytes = std::fs::read(&wal).unwrap();
    assert!(
        bytes.len() > 200,
        "WAL too short to damage: {}",
        bytes.len()
    );
    let end = bytes.len();
    for b in &mut bytes[end - 60..end - 30] {
        *b ^= 0xA5;
    }
    std::fs::write(&wal, bytes).unwrap();
    wal
}

/// A damaged log tail is detected (never silently accepted), the damaged
/// data is kept aside, and the node is rebuilt from its peers.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_damaged_log_tail_is_detected_and_the_node_rebuilt_from_a_peer() {
    let mut cluster = Cluster::start(3, common::SNAPSHOT_OFTEN);
    let leader = cluster.wait_leader(Duration::from_secs(20)).await.unwrap();
    seed(&cluster, leader).await;
    let ledger = Arc::new(Ledger::default());
    let stop = Arc::new(AtomicBool::new(false));
    let addrs: Vec<String> = (1..=3).map(|id| cluster.addr(id)).collect();
    let tasks = start_clients(addrs, 4, ledger.clone(), stop.clone(), Instant::now());
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let victim = leader % 3 + 1;
    cluster.kill9(victim);
    let dir = cluster.nodes[&victim].dir.clone();
    damage_wal_tail(&dir);
    cluster.spawn(victim);
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }
    cluster
        .wait_converged(&[1, 2, 3], Duration::from_secs(40))
        .await
        .unwrap();
    let log = cluster.logs(victim);
    assert!(
        log.contains("the data dir is damaged"),
        "damage not detected:\n{log}"
    );
    let parent = dir.parent().unwrap();
    let kept = std::fs::read_dir(parent)
        .unwrap()
        .filter_map(|e| e.ok())
        .any(|e| e.file_name().to_string_lossy().contains(".damaged-"));
    assert!(kept, "the damaged data dir was not kept aside");
    // Caught up, the rebuilt member votes again (replica/rebuild.rs).
    let deadline = Instant::now() + Duration::from_secs(20);
    while cluster.status(victim, false).await.unwrap().rebuilding {
        assert!(
            Instant::now() < deadline,
            "the rebuilt member never caught up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for id in 1..=3 {
        check_node(&cluster, id, &ledger).await;
    }
}

/// A measurement, not a check (run on demand: `cargo test --test cluster
/// -- --ignored --nocapture failover`): kills the leader five times and
/// prints how long until a write is acknowledged again, through a follower.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore]
async fn failover_time() {
    let mut cluster = Cluster::start(3, &[]);
    let mut times = Vec::new();
    for round in 0..5 {
        let leader = cluster.wait_leader(Duration::from_secs(30)).await.unwrap();
        let survivor = (1..=3).find(|id| *id != leader).unwrap();
        let mut c = cluster.client(survivor).await;
        let killed = Instant::now();
        cluster.kill9(leader);
        let mut n = 0;
        loop {
            n += 1;
            let request = pb::SetOnHandRequest {
                txn_id: format!("failover-{round}-{n}"),
                sku: "SKU".into(),
                node: "dc".into(),
                on_hand: n,
                expected_on_hand: None,
            };
            let mut call = tonic::Request::new(request);
            call.set_timeout(Duration::from_secs(10));
            if c.set_on_hand(call).await.is_ok() {
                break;
            }
        }
        let took = killed.elapsed();
        eprintln!(
            "round {round}: leader {leader} killed; a write was acknowledged again after {took:?}"
        );
        times.push(took);
        cluster.spawn(leader);
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    times.sort();
    eprintln!(
        "failover: min {:?}, median {:?}, max {:?}",
        times[0], times[2], times[4]
    );
}
