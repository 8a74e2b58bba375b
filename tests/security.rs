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
    // Writes resume once a new leader is elected (and the clients'
    // connections to the dead one have failed over).
    let deadline = Instant::now() + Duration::from_secs(20);
    while ledger.acks.load(Ordering::Relaxed) < before + 20 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
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

/// A tokens file with one token of each role; returns (file, tokens).
fn tokens_file(dir: &Path) -> (std::path::PathBuf, [(&'static str, String); 3]) {
    let mut lines = String::new();
    let mut tokens = Vec::new();
    for role in ["read", "write", "admin"] {
        let token = stockraft::server::auth::new_token();
        let hash = stockraft::server::auth::hash_hex(&token);
        lines.push_str(&format!("{role} {hash} {role}-caller\n"));
        tokens.push((role, token));
    }
    let path = dir.join("tokens");
    std::fs::write(&path, lines).unwrap();
    let tokens: [(&'static str, String); 3] = tokens.try_into().unwrap();
    (path, tokens)
}

type Authed = stockraft::client::Authed;

async fn authed(addr: &str, token: Option<&str>) -> Authed {
    let channel = stockraft::client::channel(addr, Duration::from_secs(5))
        .await
        .unwrap();
    let bearer = stockraft::client::Bearer::new(token).unwrap();
    tonic::service::interceptor::InterceptedService::new(channel, bearer)
}

/// Calls `method` once with `channel`; the status code it got (Ok as
/// `Code::Ok`).
async fn call(channel: Authed, method: &str) -> tonic::Code {
    use stockraft::proto::v1::cluster_client::ClusterClient;
    use stockraft::proto::v1::inventory_client::InventoryClient;
    let mut inv = InventoryClient::new(channel.clone());
    let mut cluster = ClusterClient::new(channel);
    let line = || pb::Line {
        sku: "S".into(),
        node: "N".into(),
        qty: 1,
    };
    let code = |r: Result<(), tonic::Status>| r.err().map_or(tonic::Code::Ok, |s| s.code());
    match method {
        "GetAvailability" => code(
            inv.get_availability(pb::GetAvailabilityRequest {
                skus: vec!["S".into()],
                ..Default::default()
            })
            .await
            .map(|_| ()),
        ),
        "GetReservation" => code(
            inv.get_reservation(pb::GetReservationRequest {
                reservation_id: "r".into(),
                ..Default::default()
            })
            .await
            .map(|_| ()),
        ),
        "Reserve" => code(
            inv.reserve(pb::ReserveRequest {
                reservation_id: "r".into(),
                lines: vec![line()],
                ttl_ms: 0,
            })
            .await
            .map(|_| ()),
        ),
        "Commit" => code(
            inv.commit(pb::CommitRequest {
                reservation_id: "r".into(),
            })
            .await
            .map(|_| ()),
        ),
        "Release" => code(
            inv.release(pb::ReleaseRequest {
                reservation_id: "r".into(),
            })
            .await
            .map(|_| ()),
        ),
        "Extend" => code(
            inv.extend(pb::ExtendRequest {
                reservation_id: "r".into(),
                ttl_ms: 1_000,
            })
            .await
            .map(|_| ()),
        ),
        "Sell" => code(
            inv.sell(pb::SellRequest {
                txn_id: "t-sell".into(),
                sku: "S".into(),
                node: "N".into(),
                qty: 1,
            })
            .await
            .map(|_| ()),
        ),
        "Adjust" => code(
            inv.adjust(pb::AdjustRequest {
                txn_id: "t-adjust".into(),
                sku: "S".into(),
                node: "N".into(),
                delta: 1,
                reason: pb::AdjustReason::Receive as i32,
            })
            .await
            .map(|_| ()),
        ),
        "SetOnHand" => code(
            inv.set_on_hand(pb::SetOnHandRequest {
                txn_id: "t-set".into(),
                sku: "S".into(),
                node: "N".into(),
                on_hand: 5,
                expected_on_hand: None,
            })
            .await
            .map(|_| ()),
        ),
        "SetSafetyStock" => code(
            inv.set_safety_stock(pb::SetSafetyStockRequest {
                sku: "S".into(),
                node: "N".into(),
                safety_stock: 0,
            })
            .await
            .map(|_| ()),
        ),
        "Stream" => {
            let op = pb::StreamRequest {
                id: 1,
                op: Some(pb::stream_request::Op::GetAvailability(
                    pb::GetAvailabilityRequest {
                        skus: vec!["S".into()],
                        ..Default::default()
                    },
                )),
            };
            match inv.stream(tokio_stream::iter(vec![op])).await {
                Ok(response) => {
                    let mut inbound = response.into_inner();
                    code(inbound.message().await.map(|_| ()))
                }
                Err(status) => status.code(),
            }
        }
        "Status" => code(
            cluster
                .status(pb::ClusterStatusRequest { with_digest: false })
                .await
                .map(|_| ()),
        ),
        "AddMember" => code(
            cluster
                .add_member(pb::AddMemberRequest {
                    node_id: 1,
                    address: "127.0.0.1:1".into(),
                    peer_address: String::new(),
                })
                .await
                .map(|_| ()),
        ),
        "RemoveMember" => code(
            cluster
                .remove_member(pb::RemoveMemberRequest { node_id: 9 })
                .await
                .map(|_| ()),
        ),
        "TransferLeader" => code(
            cluster
                .transfer_leader(pb::TransferLeaderRequest { node_id: 9 })
                .await
                .map(|_| ()),
        ),
        other => panic!("no such method {other}"),
    }
}

/// Every call, with no token, an unknown one, and each role's: refused
/// exactly when the role is too low (UNAUTHENTICATED without a valid
/// token, PERMISSION_DENIED under the role), and never refused otherwise;
/// health answers without a token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_roles_matrix() {
    let dir = tempfile::tempdir().unwrap();
    let (path, tokens) = tokens_file(dir.path());
    let path = path.display().to_string();
    let mut server = common::Server::start(&["--tokens", &path]);
    server.wait_ready().await.unwrap();
    let reads = ["GetAvailability", "GetReservation"];
    let writes = [
        "Reserve",
        "Commit",
        "Release",
        "Extend",
        "Sell",
        "Adjust",
        "SetOnHand",
        "SetSafetyStock",
        "Stream",
    ];
    let admins = ["Status", "AddMember", "RemoveMember", "TransferLeader"];
    let needed = |method: &str| {
        if reads.contains(&method) {
            0
        } else if writes.contains(&method) {
            1
        } else {
            2
        }
    };
    use tonic::Code;
    for method in reads.iter().chain(&writes).chain(&admins) {
        for token in [None, Some("not-a-token")] {
            let got = call(authed(&server.addr, token).await, method).await;
            assert_eq!(got, Code::Unauthenticated, "{method} with {token:?}");
        }
        for (rank, (role, token)) in tokens.iter().enumerate() {
            let got = call(authed(&server.addr, Some(token)).await, method).await;
            if rank < needed(method) {
                assert_eq!(got, Code::PermissionDenied, "{method} as {role}");
            } else {
                assert!(
                    got != Code::PermissionDenied && got != Code::Unauthenticated,
                    "{method} as {role} refused: {got:?}"
                );
            }
        }
    }
    assert_eq!(
        common::health(&server.addr, "").await.unwrap(),
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );
}

/// A server on a non-loopback address without TLS and tokens refuses to
/// start and says what to add; `--insecure` overrides it, with a warning.
#[tokio::test]
async fn a_plaintext_start_on_a_non_loopback_address_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let listen = format!("0.0.0.0:{port}");
    let data = dir.path().join("data").display().to_string();
    let output = Command::new(common::BIN)
        .args(["serve", "--listen", &listen, "--data-dir", &data])
        .args(["--metrics-listen", "off"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--tls-cert") && stderr.contains("--tokens"),
        "{stderr}"
    );
    let mut insecure = Command::new(common::BIN)
        .args([
            "serve",
            "--listen",
            &listen,
            "--data-dir",
            &data,
            "--insecure",
        ])
        .args(["--metrics-listen", "off"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let addr = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while common::health(&addr, "").await.is_err() {
        assert!(
            Instant::now() < deadline,
            "the --insecure server did not start"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = insecure.kill();
    let output = insecure.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--insecure"), "{stderr}");
}

/// Tokens on a secured cluster: a follower checks a caller's token and
/// forwards it with the write, and the leader checks it again; members
/// present their certificates instead (the helpers here do); a client
/// certificate that names no member is no token.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tokens_travel_with_forwarded_calls() {
    let certs = tempfile::tempdir().unwrap();
    make_certs(certs.path());
    let (path, tokens) = tokens_file(certs.path());
    let path = path.display().to_string();
    let mut cluster = Cluster::start_secured(3, certs.path(), &["--tokens", &path]);
    // The helpers call as member 1 (its certificate stands for admin).
    cluster.tls = Some(tls_as(certs.path(), Some("member-1"), 0).domain_name("localhost"));
    let leader = cluster.wait_leader(Duration::from_secs(20)).await.unwrap();
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    let caller = |token: Option<&str>, who: Option<&str>| {
        let tls = tls_as(certs.path(), who, 0).domain_name("localhost");
        let addr = cluster.addr(follower);
        let bearer = stockraft::client::Bearer::new(token).unwrap();
        async move {
            let channel = stockraft::client::channel_with(&addr, Duration::from_secs(5), Some(tls))
                .await
                .unwrap();
            tonic::service::interceptor::InterceptedService::new(channel, bearer)
        }
    };
    let [(_, read), (_, write), _] = &tokens;
    let set = |n: i64| pb::SetOnHandRequest {
        txn_id: format!("set-{n}"),
        sku: "SKU-T".into(),
        node: "dc".into(),
        on_hand: n,
        expected_on_hand: None,
    };
    use stockraft::proto::v1::inventory_client::InventoryClient;
    let mut writer = InventoryClient::new(caller(Some(write), None).await);
    writer.set_on_hand(set(5)).await.unwrap();
    let mut reader = InventoryClient::new(caller(Some(read), None).await);
    let refused = reader.set_on_hand(set(6)).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    let mut nobody = InventoryClient::new(caller(None, Some("client-ops")).await);
    let refused = nobody.set_on_hand(set(7)).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    let status = stockraft::proto::v1::cluster_client::ClusterClient::new(
        caller(None, Some("client-ops")).await,
    )
    .status(pb::ClusterStatusRequest { with_digest: false })
    .await
    .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    // What the write token wrote through the follower is on every node.
    cluster
        .wait_converged(&[1, 2, 3], Duration::from_secs(20))
        .await
        .unwrap();
    let level = reader
        .get_availability(pb::GetAvailabilityRequest {
            skus: vec!["SKU-T".into()],
            nodes: vec!["dc".into()],
            consistency: pb::Consistency::Linearizable as i32,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(level.skus[0].nodes[0].on_hand, 5);
}

/// The tokens file is read again on SIGHUP: a token taken out stops
/// working, one put in starts, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_read_again_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let (path, tokens) = tokens_file(dir.path());
    let file = path.display().to_string();
    let mut server = common::Server::start(&["--tokens", &file]);
    server.wait_ready().await.unwrap();
    let [_, (_, old), _] = &tokens;
    assert_eq!(
        call(authed(&server.addr, Some(old)).await, "SetOnHand").await,
        tonic::Code::Ok
    );
    let new = stockraft::server::auth::new_token();
    let hash = stockraft::server::auth::hash_hex(&new);
    std::fs::write(&path, format!("write {hash} rotated\n")).unwrap();
    let pid = server.child.as_ref().unwrap().id().to_string();
    let signalled = Command::new("kill").args(["-HUP", &pid]).status().unwrap();
    assert!(signalled.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let with_old = call(authed(&server.addr, Some(old)).await, "SetOnHand").await;
        let with_new = call(authed(&server.addr, Some(&new)).await, "SetOnHand").await;
        if with_old == tonic::Code::Unauthenticated && with_new == tonic::Code::Ok {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after SIGHUP: old token {with_old:?}, new token {with_new:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
