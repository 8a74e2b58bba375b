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
use stockraft::proto::internal::{PeerBatch, Sender};
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

/// What member `id` says of itself on the peer transport: its cluster's
/// id and its data dir's incarnation (read from the file there), as only
/// the member itself knows them.
async fn sender_of(cluster: &Cluster, id: u64) -> Sender {
    let status = cluster.status(id, false).await.unwrap();
    let file = std::fs::read_to_string(cluster.nodes[&id].dir.join("stockraft-identity")).unwrap();
    let hex = file
        .lines()
        .find_map(|l| l.strip_prefix("incarnation "))
        .unwrap();
    let cluster_id = (0..16)
        .map(|i| u8::from_str_radix(&status.cluster_id[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    Sender {
        cluster_id,
        incarnation: u64::from_str_radix(hex, 16).unwrap(),
    }
}

/// Sends one batch to member `to`'s peer port as `who` (a certificate
/// stem, or none), claiming to be `from` with `sender`'s identity.
async fn send_as(
    cluster: &Cluster,
    certs: &Path,
    who: Option<&str>,
    to: u64,
    from: u64,
    term: u64,
    sender: Option<Sender>,
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
        sender,
        clock: None,
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
    assert_eq!(before.cluster_id.len(), 32, "{before:?}");
    let leader_identity = sender_of(&cluster, leader).await;

    // No client certificate: the TLS handshake is refused.
    let refused = send_as(
        &cluster,
        certs.path(),
        None,
        follower,
        leader,
        term,
        Some(leader_identity.clone()),
    )
    .await;
    assert!(refused.is_err(), "accepted without a certificate");
    // Refused, each with PERMISSION_DENIED: a client's certificate (it
    // names no member); another member's certificate claiming to be the
    // leader; the leader's key stolen but not its data dir, so without its
    // identity or with another data dir's.
    let as_other = format!("member-{other}");
    let as_leader = format!("member-{leader}");
    let wiped = Sender {
        incarnation: leader_identity.incarnation ^ 1,
        ..leader_identity.clone()
    };
    let forgeries = [
        ("client-ops", Some(leader_identity.clone())),
        (as_other.as_str(), Some(leader_identity.clone())),
        (as_leader.as_str(), None),
        (as_leader.as_str(), Some(wiped)),
    ];
    for (who, sender) in forgeries {
        let refused = send_as(
            &cluster,
            certs.path(),
            Some(who),
            follower,
            leader,
            term,
            sender,
        )
        .await
        .unwrap_err();
        assert_eq!(
            refused.code(),
            tonic::Code::PermissionDenied,
            "{who}: {refused:?}"
        );
    }
    // The leader's key and identity both (a member turned bad): the
    // heartbeat reaches the node and is refused before raft.
    send_as(
        &cluster,
        certs.path(),
        Some(&as_leader),
        follower,
        leader,
        term,
        Some(leader_identity.clone()),
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
        sender: Some(leader_identity),
        clock: None,
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
    for id in &survivors {
        check_node(&cluster, *id, &ledger).await;
    }
    // A member stops on SIGTERM within its grace (5 s), though the other
    // member holds its Raft stream to the peer port open.
    let stopping = survivors[0];
    let pid = cluster.nodes[&stopping].child.as_ref().unwrap().id();
    let started = Instant::now();
    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let exited = cluster.wait_exit(stopping, Duration::from_secs(15));
    assert!(
        exited.is_some_and(|s| s.success()),
        "member {stopping} did not stop on SIGTERM: {exited:?}\n{}",
        cluster.logs(stopping)
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
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
                    member_id: 1,
                    address: "127.0.0.1:1".into(),
                    peer_address: String::new(),
                })
                .await
                .map(|_| ()),
        ),
        "RemoveMember" => code(
            cluster
                .remove_member(pb::RemoveMemberRequest { member_id: 9 })
                .await
                .map(|_| ()),
        ),
        "TransferLeader" => code(
            cluster
                .transfer_leader(pb::TransferLeaderRequest { member_id: 9 })
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
    let info = reason_of(&refused);
    assert_eq!(info.reason, "ROLE_TOO_LOW");
    assert_eq!(
        (
            info.metadata["role"].as_str(),
            info.metadata["role_needed"].as_str()
        ),
        ("read", "write")
    );
    let mut nobody = InventoryClient::new(caller(None, Some("client-ops")).await);
    let refused = nobody.set_on_hand(set(7)).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    assert_eq!(reason_of(&refused).reason, "TOKEN_MISSING");
    let mut stranger = InventoryClient::new(caller(Some("not-a-token"), None).await);
    let refused = stranger.set_on_hand(set(8)).await.unwrap_err();
    assert_eq!(reason_of(&refused).reason, "TOKEN_UNKNOWN", "{refused:?}");
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

/// Floods stay within their bounds while a checkout client keeps being
/// answered: connections past `--connections-max` are closed at once, a
/// read naming one SKU a thousand times is answered once, and one that
/// would answer a thousand SKUs over a thousand nodes is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn floods_stay_within_bounds() {
    let mut server = common::Server::start(&["--connections-max", "16"]);
    server.wait_ready().await.unwrap();
    let mut checkout = server.client().await;
    checkout
        .set_on_hand(pb::SetOnHandRequest {
            txn_id: "stock".into(),
            sku: "S".into(),
            node: "N".into(),
            on_hand: 1_000,
            expected_on_hand: None,
        })
        .await
        .unwrap();
    let mut reader = server.client().await;

    // A hundred more connections: the ones past the bound are closed.
    let mut flood = Vec::new();
    for _ in 0..100 {
        flood.push(tokio::net::TcpStream::connect(&server.addr).await.unwrap());
    }
    let mut closed = 0;
    let mut open = Vec::new();
    for mut stream in flood {
        use tokio::io::AsyncReadExt;
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_millis(200), stream.read(&mut byte)).await;
        if matches!(read, Ok(Ok(0)) | Ok(Err(_))) {
            closed += 1;
        } else {
            open.push(stream);
        }
    }
    assert!(
        closed >= 80,
        "only {closed} of 100 connections past the bound closed"
    );

    // Amplification: repeated names are asked once; the product is capped.
    let same = reader
        .get_availability(pb::GetAvailabilityRequest {
            skus: vec!["S".into(); 1_000],
            nodes: vec!["N".into(); 1_000],
            consistency: pb::Consistency::Local as i32,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(same.skus.len(), 1);
    assert_eq!(same.skus[0].nodes.len(), 1);
    let wide = reader
        .get_availability(pb::GetAvailabilityRequest {
            skus: (0..1_000).map(|i| format!("S{i}")).collect(),
            nodes: (0..1_000).map(|i| format!("N{i}")).collect(),
            consistency: pb::Consistency::Local as i32,
        })
        .await
        .unwrap_err();
    assert_eq!(wide.code(), tonic::Code::InvalidArgument, "{wide:?}");
    assert!(wide.message().contains("rows"), "{wide:?}");

    // Meanwhile: a storm of reads on the reader's connection, and the
    // checkout client's reserves all answered.
    let storm: Vec<_> = (0..400)
        .map(|_| {
            let mut reader = reader.clone();
            tokio::spawn(async move {
                reader
                    .get_availability(pb::GetAvailabilityRequest {
                        skus: vec!["S".into(); 1_000],
                        nodes: Vec::new(),
                        consistency: pb::Consistency::Linearizable as i32,
                    })
                    .await
                    .is_ok()
            })
        })
        .collect();
    for i in 0..50 {
        let reserved = checkout
            .reserve(pb::ReserveRequest {
                reservation_id: format!("flood-{i}"),
                lines: vec![pb::Line {
                    sku: "S".into(),
                    node: "N".into(),
                    qty: 1,
                }],
                ttl_ms: 0,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(reserved.outcome, pb::Outcome::Reserved as i32);
    }
    let mut answered = 0;
    for read in storm {
        if read.await.unwrap() {
            answered += 1;
        }
    }
    assert_eq!(answered, 400);
    drop(open);
}

/// Waits until every running member reports the same cluster id; returns
/// it.
async fn agreed_cluster_id(cluster: &Cluster) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut ids = Vec::new();
        for id in cluster.running() {
            if let Ok(s) = cluster.status(id, false).await {
                ids.push(s.cluster_id);
            }
        }
        let agreed = ids.len() == cluster.running().len()
            && ids.iter().all(|c| c.len() == 32 && *c == ids[0]);
        if agreed {
            return ids.swap_remove(0);
        }
        assert!(Instant::now() < deadline, "no agreed cluster id: {ids:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until `id`'s log holds `text`.
async fn wait_logged(cluster: &Cluster, id: u64, text: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !cluster.logs(id).contains(text) {
        assert!(
            Instant::now() < deadline,
            "node {id} never logged {text:?}:\n{}",
            cluster.logs(id)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A member of another cluster on a member's address and id, then the
/// member back on a wiped data dir: both refused by name, the cluster
/// serving throughout; removed and added again, the member is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn another_cluster_and_a_wiped_member_are_refused() {
    let mut cluster = Cluster::start(3, &[]);
    let leader = cluster.wait_leader(Duration::from_secs(20)).await.unwrap();
    let ours = agreed_cluster_id(&cluster).await;
    let victim = (1..=3).find(|id| *id != leader).unwrap();
    let peers = cluster.nodes[&victim].first_flags.clone();
    let write = |txn: &'static str, on_hand: i64| pb::SetOnHandRequest {
        txn_id: txn.into(),
        sku: "SKU-0".into(),
        node: "dc".into(),
        on_hand,
        expected_on_hand: None,
    };

    // Another cluster (a one-node cluster of its own) where the victim
    // was: the leader's traffic reaches it and is refused.
    cluster.kill9(victim);
    std::fs::remove_dir_all(&cluster.nodes[&victim].dir).unwrap();
    cluster.nodes.get_mut(&victim).unwrap().first_flags = Vec::new();
    cluster.spawn(victim);
    wait_logged(&cluster, victim, "belongs to cluster").await;
    // It stays a cluster of its own, leading itself.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let other = cluster.status(victim, false).await.unwrap();
        assert_ne!(other.cluster_id, ours);
        assert_eq!(other.members.len(), 1, "{other:?}");
        if other.leader_id == victim && other.cluster_id.len() == 32 {
            break;
        }
        assert!(Instant::now() < deadline, "{other:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut c = cluster.client(leader).await;
    c.set_on_hand(write("while-another-cluster", 5))
        .await
        .unwrap();

    // The member back on an empty data dir with its old flags: it lost its
    // votes and log, so the members refuse it by its new incarnation.
    cluster.kill9(victim);
    std::fs::remove_dir_all(&cluster.nodes[&victim].dir).unwrap();
    cluster.nodes.get_mut(&victim).unwrap().first_flags = peers;
    cluster.spawn(victim);
    wait_logged(&cluster, leader, "runs on another data dir").await;
    c.set_on_hand(write("while-wiped", 6)).await.unwrap();
    let status = cluster.status(leader, false).await.unwrap();
    assert_eq!(status.cluster_id, ours);
    assert_eq!(status.leader_id, leader);

    // The remedy the refusal names: remove it, add it again, join.
    let mut admin = cluster.cluster_client(leader).await;
    admin
        .remove_member(pb::RemoveMemberRequest { member_id: victim })
        .await
        .unwrap();
    cluster.kill9(victim);
    std::fs::remove_dir_all(&cluster.nodes[&victim].dir).unwrap();
    let address = cluster.addr(victim);
    admin
        .add_member(pb::AddMemberRequest {
            member_id: victim,
            address,
            peer_address: String::new(),
        })
        .await
        .unwrap();
    let join = vec!["--join".to_string(), cluster.addr(leader)];
    cluster.nodes.get_mut(&victim).unwrap().first_flags = join;
    cluster.spawn(victim);
    cluster
        .wait_caught_up(victim, leader, Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(
        cluster.status(victim, false).await.unwrap().cluster_id,
        ours
    );
    let all: Vec<u64> = (1..=3).collect();
    cluster
        .wait_converged(&all, Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(cluster.running().len(), 3);
    for id in all {
        assert!(
            !cluster.logs(id).contains("panicked"),
            "{}",
            cluster.logs(id)
        );
    }
}

/// The ErrorInfo every refusal carries (google.rpc details).
fn reason_of(status: &tonic::Status) -> tonic_types::ErrorInfo {
    use tonic_types::StatusExt;
    status
        .get_details_error_info()
        .unwrap_or_else(|| panic!("no ErrorInfo in {status:?}"))
}
