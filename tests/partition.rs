//! A network partition, made with the transport's fault-injection switch
//! (compiled only with the `fault-injection` feature): the old leader alone
//! on one side stops acknowledging writes, the majority elects a new leader
//! and keeps serving, and after healing every node converges.

mod common;

use std::time::{Duration, Instant};

use common::cluster::Cluster;
use stockraft::proto::internal::fault_injection_client::FaultInjectionClient;
use stockraft::proto::internal::Faults;
use stockraft::proto::v1 as pb;

async fn isolate(cluster: &Cluster, id: u64, from: Vec<u64>) {
    let channel = stockraft::client::channel(&cluster.addr(id), Duration::from_secs(5))
        .await
        .unwrap();
    FaultInjectionClient::new(channel)
        .set_faults(Faults { isolate_from: from })
        .await
        .unwrap();
}

fn reserve(id: &str) -> pb::ReserveRequest {
    pb::ReserveRequest {
        reservation_id: id.into(),
        lines: vec![pb::Line {
            sku: "SKU".into(),
            node: "dc".into(),
            qty: 1,
        }],
        ttl_ms: 600_000,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_minority_stops_acknowledging_and_the_majority_serves_on() {
    let cluster = Cluster::start(3, &[]);
    let old = cluster.wait_leader(Duration::from_secs(20)).await.unwrap();
    let others: Vec<u64> = (1..=3).filter(|id| *id != old).collect();
    let mut c = cluster.client(old).await;
    c.set_on_hand(pb::SetOnHandRequest {
        txn_id: "seed".into(),
        sku: "SKU".into(),
        node: "dc".into(),
        on_hand: 10,
        expected_on_hand: None,
    })
    .await
    .unwrap();

    isolate(&cluster, old, others.clone()).await;
    for id in &others {
        isolate(&cluster, *id, vec![old]).await;
    }

    // The old leader cannot commit: the write is never acknowledged.
    let started = Instant::now();
    let minority = c.reserve(reserve("minority-1")).await;
    let status = minority.expect_err("a write on the minority side was acknowledged");
    assert!(
        matches!(
            status.code(),
            tonic::Code::Unavailable | tonic::Code::Cancelled | tonic::Code::DeadlineExceeded
        ),
        "{status:?}"
    );
    eprintln!(
        "minority write refused after {:?}: {}",
        started.elapsed(),
        status.message()
    );

    // The majority elects a leader of its own and serves.
    let deadline = Instant::now() + Duration::from_secs(15);
    let new = loop {
        let mut leaders = Vec::new();
        for id in &others {
            if let Ok(s) = cluster.status(*id, false).await {
                leaders.push(s.leader_id);
            }
        }
        if leaders.len() == 2 && leaders[0] == leaders[1] && leaders[0] != 0 && leaders[0] != old {
            break leaders[0];
        }
        assert!(
            Instant::now() < deadline,
            "the majority elected no leader: {leaders:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut m = cluster.client(others[0]).await;
    let reply = m.reserve(reserve("majority-1")).await.unwrap().into_inner();
    assert_eq!(reply.outcome, pb::Outcome::Reserved as i32);
    // The old leader knows it is not leading any more.
    let old_view = cluster.status(old, false).await.unwrap();
    assert_ne!(
        old_view.role,
        pb::RaftRole::Leader as i32,
        "the isolated node still thinks it leads: {old_view:?}"
    );

    // Heal.
    for id in 1..=3 {
        isolate(&cluster, id, vec![]).await;
    }
    cluster
        .wait_converged(&[1, 2, 3], Duration::from_secs(20))
        .await
        .unwrap();
    for id in 1..=3 {
        let mut c = cluster.client(id).await;
        let lost = c
            .get_reservation(pb::GetReservationRequest {
                reservation_id: "minority-1".into(),
                consistency: pb::Consistency::Local as i32,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            lost.outcome,
            pb::Outcome::NotFound as i32,
            "node {id}: the unacknowledged write was applied"
        );
        let kept = c
            .get_reservation(pb::GetReservationRequest {
                reservation_id: "majority-1".into(),
                consistency: pb::Consistency::Local as i32,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(kept.state, pb::ReservationState::Open as i32, "node {id}");
    }
    eprintln!("old leader {old}, new leader {new}");
}

/// Writes in flight on a `Stream` to a leader that gets cut off: their
/// group's proposals can never commit there, so when the old leader steps
/// down they are retried one by one with the same ids, reach the new
/// leader once the partition heals, and each is applied exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stream_writes_on_a_cut_off_leader_are_retried_through_the_new_one() {
    use stockraft::proto::v1::stream_request::Op;
    use stockraft::proto::v1::stream_response::Result as R;

    let cluster = Cluster::start(3, &["--leader-wait", "20s"]);
    let old = cluster.wait_leader(Duration::from_secs(20)).await.unwrap();
    let others: Vec<u64> = (1..=3).filter(|id| *id != old).collect();
    let mut c = cluster.client(old).await;
    c.set_on_hand(pb::SetOnHandRequest {
        txn_id: "seed".into(),
        sku: "SKU".into(),
        node: "dc".into(),
        on_hand: 100,
        expected_on_hand: None,
    })
    .await
    .unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let mut answers = c
        .stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();

    isolate(&cluster, old, others.clone()).await;
    for id in &others {
        isolate(&cluster, *id, vec![old]).await;
    }
    for i in 0..20u64 {
        tx.send(pb::StreamRequest {
            id: i,
            op: Some(Op::Reserve(reserve(&format!("cut-{i}")))),
        })
        .await
        .unwrap();
    }
    // Long enough for the majority to elect a leader and the old one to
    // step down; then heal, well within the calls' budget.
    tokio::time::sleep(Duration::from_secs(4)).await;
    for id in 1..=3 {
        isolate(&cluster, id, vec![]).await;
    }
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < 20 {
        let response = tokio::time::timeout(Duration::from_secs(30), answers.message())
            .await
            .expect("every write answered in time")
            .unwrap()
            .unwrap();
        match response.result {
            Some(R::Reserve(r)) => assert_eq!(r.outcome, pb::Outcome::Reserved as i32),
            other => panic!("write {} answered {other:?}", response.id),
        }
        assert!(seen.insert(response.id), "two answers to {}", response.id);
    }
    let leader = cluster.wait_leader(Duration::from_secs(10)).await.unwrap();
    let mut on_leader = cluster.client(leader).await;
    let level = on_leader
        .get_availability(pb::GetAvailabilityRequest {
            skus: vec!["SKU".into()],
            nodes: vec!["dc".into()],
            consistency: pb::Consistency::Linearizable as i32,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        level.skus[0].nodes[0].reserved, 20,
        "each write applied once"
    );
}
