//! Attacks on a secured cluster, with real processes: clients over TLS,
//! members over mutual TLS on peer ports of their own, certificates made
//! by `stockraft certs`. Forged Raft traffic (no certificate, a client's
//! certificate, another member's certificate, a member's certificate with
//! a heartbeat committing past the log) changes nothing and stops nothing;
//! the cluster serves through a leader kill.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::cluster::Cluster;
use common::workload::{check_node, seed, start_clients_with, Ledger};
use protobuf::Message as _;
use raft::eraftpb::{Message, MessageType};
use stockraft::proto::internal::peer_client::PeerClient;
use stockraft::proto::internal::PeerBatch;
use stockraft::proto::v1 as pb;
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

/// Certificates for members 1-3 and a client `ops`, made by the binary.
fn make_certs(dir: &Path) {
    let status = Command::new(common::BIN)
        .args(["certs", "--members", "1,2,3", "--clients", "ops", "--dir"])
        .arg(dir)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("run stockraft certs");
    assert!(status.success());
}

fn tls_as(certs: &Path, who: Option<&str>, server: u64) -> ClientTlsConfig {
    let ca = std::fs::read(certs.join("ca.pem")).unwrap();
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name(format!("member-{server}.stockraft"));
    if let Some(who) = who {
        let cert = std::fs::read(certs.join(format!("{who}.pem"))).unwrap();
        let key = std::fs::read(certs.join(format!("{who}.key"))).unwrap();
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    tls
}

/// A heartbeat from `from` to `to` committing far past any log: raft-rs
/// would abort on it.
fn forged_heartbeat(from: u64, to: u64, term: u64) -> Vec<u8> {
    let mut m = Message::default();
    m.set_msg_type(MessageType::MsgHeartbeat);
    m.from = from;
    m.to = to;
    m.term = term;
    m.commit = 1 << 40;
    m.write_to_bytes().unwrap()
}

/// Sends one batch to member `to`'s peer port as `who` (a certificate
/// stem, or none), claiming to be `from`.
async fn send_as(
    cluster: &Cluster,
    certs: &Path,
    who: Option<&str>,
    to: u64,
    from: u64,
    term: u64,
) -> Result<(), tonic::Status> {
    let tls = tls_as(certs, who, to);
    let channel = stockraft::client::channel_with(
        &cluster.peer_addrs[&to],
        Duration::from_secs(5),
        Some(tls),
    )
    .await
    .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let batch = PeerBatch {
        from,
        messages: vec![forged_heartbeat(from, to, term)],
    };
    PeerClient::new(channel)
        .send(tokio_stream::iter(vec![batch]))
        .await
        .map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forged_peer_traffic_changes_and_stops_nothing() {
    let certs = tempfile::tempdir().unwrap();
    make_certs(certs.path());
    let cluster = Cluster::start_secured(3, certs.path(), &[]);
    let leader = cluster.wait_leader(Duration::from_secs(20)).await.unwrap();
    seed(&cluster, leader).await;
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    let other = (1..=3).find(|id| *id != leader && *id != follower).unwrap();
    let before = cluster.status(follower, true).await.unwrap();
    let term = before.term;

    // No client certificate: the TLS handshake is refused.
    let refused = send_as(&cluster, certs.path(), None, follower, leader, term).await;
    assert!(refused.is_err(), "accepted without a certificate");
    // A client's certificate names no member.
    let refused = send_as(
        &cluster,
        certs.path(),
        Some("client-ops"),
        follower,
        leader,
        term,
    )
    .await
    .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    // Another member's certificate, claiming to be the leader.
    let as_other = format!("member-{other}");
    let refused = send_as(
        &cluster,
        certs.path(),
        Some(&as_other),
        follower,
        leader,
        term,
    )
    .await
    .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    // The leader's own certificate (a member turned bad, or its key
    // stolen): the heartbeat reaches the node and is refused before raft.
    let as_leader = format!("member-{leader}");
    send_as(
        &cluster,
        certs.path(),
        Some(&as_leader),
        follower,
        leader,
        term,
    )
    .await
    .unwrap();
    // Plaintext to the peer port.
    let plain = stockraft::client::channel(&cluster.peer_addrs[&follower], Duration::from_secs(5))
        .await
        .unwrap();
    let batch = PeerBatch {
        from: leader,
        messages: vec![forged_heartbeat(leader, follower, term)],
    };
    assert!(PeerClient::new(plain)
        .send(tokio_stream::iter(vec![batch]))
        .await
        .is_err());

    // Nothing stopped, nothing changed, and writes go on.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(cluster.running().len(), 3, "a node stopped");
    let after = cluster.status(follower, false).await.unwrap();
    assert!(after.commit_index < 1 << 40, "{after:?}");
    let mut c = cluster.client(follower).await;
    c.set_on_hand(pb::SetOnHandRequest {
        txn_id: "after-forgeries".into(),
        sku: "SKU-0".into(),
        node: "dc".into(),
        on_hand: 9,
        expected_on_hand: None,
    })
    .await
    .unwrap();
    let logs = cluster.logs(follower);
    assert!(!logs.contains("panicked"), "{logs}");
}

/// TLS for clients and mutual TLS between members, through a leader kill:
/// every acknowledged reserve, commit and release is on the survivors,
/// nothing oversold.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_secured_cluster_serves_through_a_leader_kill() {
    let certs = tempfile::tempdir().unwrap();
    make_certs(certs.path());
    let mut cluster = Cluster::start_secured(3, certs.path(), &[]);
    let leader = cluster.wait_leader(Duration::from_secs(20)).await.unwrap();
    seed(&cluster, leader).await;
    let ledger = Arc::new(Ledger::default());
    let stop = Arc::new(AtomicBool::new(false));
    let addrs: Vec<String> = (1..=3).map(|id| cluster.addr(id)).collect();
    let tasks = start_clients_with(
        addrs,
        cluster.tls.clone(),
        4,
        ledger.clone(),
        stop.clone(),
        Instant::now(),
    );
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let before = ledger.acks.load(Ordering::Relaxed);
    cluster.kill9(leader);
    tokio::time::sleep(Duration::from_millis(3_000)).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }
    let after = ledger.acks.load(Ordering::Relaxed);
    assert!(before > 10, "too little traffic before the kill: {before}");
    assert!(after > before, "nothing acknowledged after the kill");
    let survivors: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
    cluster
        .wait_converged(&survivors, Duration::from_secs(20))
        .await
        .unwrap();
    for id in survivors {
        check_node(&cluster, id, &ledger).await;
    }
}
