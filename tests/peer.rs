//! The peer service's snapshot reception against the real binary: what a
//! node does with snapshot streams that no raft-rs step may ever see.

mod common;

use std::time::{Duration, Instant};

use common::Server;
use protobuf::Message as _;
use raft::eraftpb::{Message, MessageType};
use stockraft::proto::internal as pb;
use stockraft::proto::internal::peer_client::PeerClient;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

/// The first part of a snapshot of `total_bytes`, as a peer would send it.
fn first_part(total_bytes: u64) -> pb::SnapshotPart {
    let mut message = Message::default();
    message.set_msg_type(MessageType::MsgSnapshot);
    message.from = 2;
    message.to = 1;
    pb::SnapshotPart {
        from: 2,
        message: message.write_to_bytes().expect("encodes"),
        data: Vec::new(),
        total_bytes,
        // A stranger's identity: admitted (and never recorded), so the
        // size checks are what refuses it.
        sender: Some(pb::Sender {
            cluster_id: Vec::new(),
            incarnation: 1,
        }),
    }
}

/// A snapshot stream that announces 10 bytes and sends none: refused as
/// shorter than announced once it ends, if it was received at all.
async fn short_snapshot(addr: &str) -> tonic::Status {
    let mut client = PeerClient::connect(format!("http://{addr}"))
        .await
        .expect("connects");
    let parts = tokio_stream::iter(vec![first_part(10)]);
    client
        .send_snapshot(parts)
        .await
        .expect_err("a short snapshot is refused")
}

/// A snapshot stream that sends its first part and then nothing, its
/// sender held open by the caller: it holds the receiving slot, if it got
/// it, until the sender is dropped.
async fn open_stalled_snapshot(
    addr: &str,
) -> (
    mpsc::Sender<pb::SnapshotPart>,
    tokio::task::JoinHandle<Result<tonic::Response<pb::PeerAck>, tonic::Status>>,
) {
    let (tx, rx) = mpsc::channel(4);
    tx.send(first_part(10)).await.unwrap();
    let mut client = PeerClient::connect(format!("http://{addr}")).await.unwrap();
    let call = tokio::spawn(async move { client.send_snapshot(ReceiverStream::new(rx)).await });
    (tx, call)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_receives_one_snapshot_at_a_time_and_frees_the_slot() {
    let mut server = Server::start(&[]);
    server.wait_ready().await.unwrap();

    // Stream A: its first part, then nothing; its sender is held open.
    let (mut a_tx, mut a) = open_stalled_snapshot(&server.addr).await;

    // Until A's handler holds the slot, another stream is received and
    // refused as short; once it does, another is told to come back later.
    // A probe may hold the slot at the moment A arrives, and A is then the
    // one told to come back later: it is opened again, as a leader would.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if a.is_finished() {
            let a_status = a.await.unwrap().expect_err("A is refused");
            assert_eq!(a_status.code(), Code::Unavailable, "{a_status:?}");
            (a_tx, a) = open_stalled_snapshot(&server.addr).await;
        }
        let status = short_snapshot(&server.addr).await;
        if status.code() == Code::Unavailable {
            assert!(
                status.message().contains("already receiving"),
                "{}",
                status.message()
            );
            break;
        }
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(Instant::now() < deadline, "stream A never held the slot");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A ends short: refused, and the slot is free again.
    drop(a_tx);
    let a_status = a.await.unwrap().expect_err("A is refused");
    assert_eq!(a_status.code(), Code::InvalidArgument, "{a_status:?}");
    assert!(a_status.message().contains("shorter than announced"));
    let after = short_snapshot(&server.addr).await;
    assert_eq!(after.code(), Code::InvalidArgument, "{after:?}");

    // Nothing of it reached raft-rs: the node still serves.
    server.wait_ready().await.unwrap();
}

#[tokio::test]
async fn a_snapshot_over_the_limit_is_refused_with_resource_exhausted() {
    let mut server = Server::start(&[]);
    server.wait_ready().await.unwrap();
    let mut client = PeerClient::connect(format!("http://{}", server.addr))
        .await
        .unwrap();
    let parts = tokio_stream::iter(vec![first_part(stockraft::limits::SNAPSHOT_BYTES_MAX + 1)]);
    let status = client.send_snapshot(parts).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("limit"), "{}", status.message());
}
