//! Crash points (the `fail` crate, compiled only with the `failpoints`
//! feature): a node is made to crash at an exact place in its write path,
//! under load, then restarted. Nothing acknowledged is lost, nothing is
//! applied twice, and the replicas converge.
//!
//! Entries and hard state are written in one atomic RocksDB batch, so
//! "between appending entries and writing hard state" has no window: the
//! crash points sit right before and right after that one write. The
//! applied index is not stored (state = snapshot + replayed log), so the
//! crash point "between applying and recording the applied index" is
//! right after a batch is applied, before anything else happens.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::cluster::Cluster;
use common::workload::{check_node, seed, start_clients, Ledger};
use stockraft::proto::v1 as pb;

/// Restarts `target` with a crash point armed, makes it lead if asked,
/// drives load until it crashes, restarts it clean, and checks everything.
async fn crash_under_load(point: &str, lead: bool) {
    let mut cluster = Cluster::start(3, &[]);
    let leader = cluster.wait_leader(Duration::from_secs(20)).await.unwrap();
    seed(&cluster, leader).await;
    let target = if lead {
        (1..=3).find(|id| *id != leader).unwrap()
    } else {
        leader % 3 + 1
    };

    cluster.kill9(target);
    cluster.nodes.get_mut(&target).unwrap().env =
        vec![("FAILPOINTS".into(), format!("{point}=30*off->panic"))];
    cluster.spawn(target);
    cluster
        .wait_caught_up(target, leader, Duration::from_secs(20))
        .await
        .unwrap();
    if lead {
        let mut admin = cluster.cluster_client(target).await;
        admin
            .transfer_leader(pb::TransferLeaderRequest { member_id: target })
            .await
            .unwrap();
        // The crash point must strike a leader: wait until it leads.
        let deadline = Instant::now() + Duration::from_secs(20);
        while cluster.wait_leader(Duration::from_secs(20)).await.ok() != Some(target) {
            assert!(
                Instant::now() < deadline,
                "node {target} never took the lead\n{}",
                cluster.all_logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    let ledger = Arc::new(Ledger::default());
    let stop = Arc::new(AtomicBool::new(false));
    let addrs: Vec<String> = (1..=3).map(|id| cluster.addr(id)).collect();
    let tasks = start_clients(addrs, 4, ledger.clone(), stop.clone(), Instant::now());
    let exit = tokio::task::block_in_place(|| cluster.wait_exit(target, Duration::from_secs(30)));
    let exit = exit.unwrap_or_else(|| {
        panic!(
            "node {target} never reached {point}\n{}",
            cluster.all_logs()
        )
    });
    assert!(
        !exit.success(),
        "node {target} exited cleanly instead of crashing at {point}"
    );
    assert!(
        cluster.logs(target).contains(point),
        "the crash was not at {point}:\n{}",
        cluster.logs(target)
    );
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    cluster.spawn(target);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }
    assert!(ledger.acks.load(Ordering::Relaxed) > 10);
    cluster.wait_leader(Duration::from_secs(20)).await.unwrap();
    cluster
        .wait_converged(&[1, 2, 3], Duration::from_secs(30))
        .await
        .unwrap();
    for id in 1..=3 {
        check_node(&cluster, id, &ledger).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_crashes_before_its_append_is_written() {
    crash_under_load("append::before_write", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_crashes_after_its_append_is_written() {
    crash_under_load("append::after_write", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_crashes_after_its_sync_before_anyone_is_told() {
    crash_under_load("sync::after", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn follower_crashes_with_its_appends_written_but_not_synced() {
    crash_under_load("sync::before", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn follower_crashes_between_applying_and_anything_else() {
    crash_under_load("apply::after_batch", false).await;
}

/// A follower that missed compacted entries crashes in the middle of
/// installing the leader's snapshot, before and after the write.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn follower_crashes_while_installing_a_snapshot() {
    for point in [
        "install_snapshot::before_write",
        "install_snapshot::after_write",
    ] {
        let mut cluster = Cluster::start(3, common::SNAPSHOT_OFTEN);
        let leader = cluster.wait_leader(Duration::from_secs(20)).await.unwrap();
        seed(&cluster, leader).await;
        let follower = leader % 3 + 1;
        cluster.kill9(follower);
        let ledger = Arc::new(Ledger::default());
        let stop = Arc::new(AtomicBool::new(false));
        let addrs: Vec<String> = (1..=3)
            .filter(|id| *id != follower)
            .map(|id| cluster.addr(id))
            .collect();
        let tasks = start_clients(addrs, 4, ledger.clone(), stop.clone(), Instant::now());
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        stop.store(true, Ordering::Relaxed);
        for task in tasks {
            task.await.unwrap();
        }
        cluster.nodes.get_mut(&follower).unwrap().env =
            vec![("FAILPOINTS".into(), format!("{point}=panic"))];
        cluster.spawn(follower);
        let exit =
            tokio::task::block_in_place(|| cluster.wait_exit(follower, Duration::from_secs(30)));
        assert!(
            exit.is_some_and(|e| !e.success()),
            "node {follower} did not crash at {point}"
        );
        cluster.spawn(follower);
        cluster
            .wait_converged(&[1, 2, 3], Duration::from_secs(30))
            .await
            .unwrap();
        for id in 1..=3 {
            check_node(&cluster, id, &ledger).await;
        }
    }
}
