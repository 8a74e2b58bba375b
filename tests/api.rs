//! The public API over gRPC against the real binary: every call and every
//! business outcome (every refusal, with its code and details, is in
//! tests/errors.rs).

mod common;

use common::{get, level, line, reserve, set_on_hand, Server};
use stockraft::proto::v1 as pb;
use tonic::Code;

#[tokio::test]
async fn every_call_round_trips() {
    let mut server = Server::start(&[]);
    server.wait_ready().await.unwrap();
    let mut c = server.client().await;

    // Stock a SKU at two nodes.
    let set = c
        .set_on_hand(pb::SetOnHandRequest {
            txn_id: "count-1".into(),
            sku: "SKU-1".into(),
            node: "store-7".into(),
            on_hand: 10,
            expected_on_hand: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(set.outcome, pb::Outcome::Applied as i32);
    assert_eq!(set.level.unwrap().on_hand, 10);
    let adj = c
        .adjust(pb::AdjustRequest {
            txn_id: "asn-1".into(),
            sku: "SKU-1".into(),
            node: "dc-1".into(),
            delta: 5,
            reason: pb::AdjustReason::Receive as i32,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(adj.level.unwrap().on_hand, 5);

    // Safety stock reduces availability.
    let safety = c
        .set_safety_stock(pb::SetSafetyStockRequest {
            sku: "SKU-1".into(),
            node: "dc-1".into(),
            safety_stock: 1,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(safety.level.unwrap().available, 4);

    // A bundle: two lines of the same counter are summed.
    let r = reserve(
        &mut c,
        "ORDER-1",
        vec![
            line("SKU-1", "store-7", 2),
            line("SKU-1", "store-7", 1),
            line("SKU-1", "dc-1", 4),
        ],
        60_000,
    )
    .await
    .unwrap();
    assert_eq!(r.outcome, pb::Outcome::Reserved as i32);
    assert!(r.expires_at_ms > 0);
    assert_eq!(level(&mut c, "SKU-1", "store-7").await.reserved, 3);
    assert_eq!(level(&mut c, "SKU-1", "dc-1").await.available, 0);

    // Availability over all nodes and over the nodes asked.
    let all = c
        .get_availability(pb::GetAvailabilityRequest {
            skus: vec!["SKU-1".into(), "SKU-NONE".into()],
            nodes: vec![],
            consistency: pb::Consistency::Local as i32,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.skus.len(), 2);
    assert_eq!(all.skus[0].total_available, 7);
    assert_eq!(all.skus[0].nodes.len(), 2);
    assert_eq!(all.skus[1].total_available, 0);
    assert!(all.skus[1].nodes.is_empty());
    assert!(all.applied_index > 0);

    let got = get(&mut c, "ORDER-1").await;
    assert_eq!(got.state, pb::ReservationState::Open as i32);
    assert_eq!(got.lines.len(), 2);
    assert_eq!(got.lines[1].qty, 3);

    // All or nothing: one short line refuses the whole reserve.
    let short = reserve(
        &mut c,
        "ORDER-2",
        vec![line("SKU-1", "store-7", 1), line("SKU-1", "dc-1", 1)],
        0,
    )
    .await
    .unwrap();
    assert_eq!(short.outcome, pb::Outcome::InsufficientStock as i32);
    assert_eq!(short.shortages.len(), 1);
    assert_eq!(short.shortages[0].node, "dc-1");
    assert_eq!(short.shortages[0].available, 0);
    assert_eq!(level(&mut c, "SKU-1", "store-7").await.reserved, 3);

    // Extend, commit, repeat.
    let ext = c
        .extend(pb::ExtendRequest {
            reservation_id: "ORDER-1".into(),
            ttl_ms: 120_000,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ext.outcome, pb::Outcome::Reserved as i32);
    assert!(ext.expires_at_ms > r.expires_at_ms);
    for _ in 0..2 {
        let commit = c
            .commit(pb::CommitRequest {
                reservation_id: "ORDER-1".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(commit.outcome, pb::Outcome::Committed as i32);
    }
    let store = level(&mut c, "SKU-1", "store-7").await;
    assert_eq!((store.on_hand, store.reserved), (7, 0));

    // A repeated reserve reports the reservation's current state.
    let again = reserve(
        &mut c,
        "ORDER-1",
        vec![line("SKU-1", "dc-1", 4), line("SKU-1", "store-7", 3)],
        60_000,
    )
    .await
    .unwrap();
    assert_eq!(again.outcome, pb::Outcome::Committed as i32);

    // Release returns stock; a repeated release answers the same.
    reserve(&mut c, "ORDER-3", vec![line("SKU-1", "store-7", 2)], 0)
        .await
        .unwrap();
    for _ in 0..2 {
        let released = c
            .release(pb::ReleaseRequest {
                reservation_id: "ORDER-3".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(released.outcome, pb::Outcome::Released as i32);
    }
    assert_eq!(level(&mut c, "SKU-1", "store-7").await.reserved, 0);

    // Unknown ids are outcomes, not errors.
    let missing = c
        .commit(pb::CommitRequest {
            reservation_id: "NOPE".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(missing.outcome, pb::Outcome::NotFound as i32);
    assert_eq!(
        get(&mut c, "NOPE").await.outcome,
        pb::Outcome::NotFound as i32
    );

    // A POS sale is never refused and reports the shortfall.
    reserve(&mut c, "ORDER-4", vec![line("SKU-1", "store-7", 5)], 0)
        .await
        .unwrap();
    let sold = c
        .sell(pb::SellRequest {
            txn_id: "pos-1".into(),
            sku: "SKU-1".into(),
            node: "store-7".into(),
            qty: 6,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(sold.short);
    assert_eq!(sold.level.unwrap().available, 1 - 5);
    // The same txn id answers as the first time, without selling again.
    let resold = c
        .sell(pb::SellRequest {
            txn_id: "pos-1".into(),
            sku: "SKU-1".into(),
            node: "store-7".into(),
            qty: 6,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resold, sold);
    assert_eq!(level(&mut c, "SKU-1", "store-7").await.on_hand, 1);

    // Compare-and-set sync from a WMS.
    let cas = c
        .set_on_hand(pb::SetOnHandRequest {
            txn_id: "wms-1".into(),
            sku: "SKU-1".into(),
            node: "store-7".into(),
            on_hand: 9,
            expected_on_hand: Some(1),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cas.level.unwrap().on_hand, 9);
    assert!(!cas.short);
}

#[tokio::test]
async fn malformed_protobuf_gets_an_error_and_the_server_lives_on() {
    use tonic::codegen::http::uri::PathAndQuery;

    let mut server = Server::start(&[]);
    server.wait_ready().await.unwrap();
    let channel = stockraft::client::channel(&server.addr, std::time::Duration::from_secs(5))
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    // Field 2 (lines) as a length-delimited value running past the end.
    let garbage: Vec<u8> = vec![0x12, 0xff, 0xff, 0x03, 0x01];
    let result: Result<tonic::Response<Vec<u8>>, tonic::Status> = grpc
        .unary(
            tonic::Request::new(garbage),
            PathAndQuery::from_static("/stockraft.v1.Inventory/Reserve"),
            raw::RawCodec,
        )
        .await;
    let status = result.expect_err("garbage must be refused");
    // What every gRPC implementation answers for a message it cannot
    // decode (the README's error table says so).
    assert_eq!(status.code(), Code::Internal, "{status:?}");
    let mut c = server.client().await;
    set_on_hand(&mut c, "after", "S", "N", 1).await;
    assert_eq!(level(&mut c, "S", "N").await.on_hand, 1);
}

#[tokio::test]
async fn health_and_reflection_work_without_the_proto_files() {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;

    let mut server = Server::start(&[]);
    server.wait_ready().await.unwrap();
    let status = common::health(&server.addr, "stockraft.v1.Inventory")
        .await
        .unwrap();
    assert_eq!(
        status,
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );

    let channel = stockraft::client::channel(&server.addr, std::time::Duration::from_secs(5))
        .await
        .unwrap();
    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = reflection
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let response = stream.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection answer");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"stockraft.v1.Inventory".to_string()),
        "{names:?}"
    );
    assert!(
        names.contains(&"grpc.health.v1.Health".to_string()),
        "{names:?}"
    );
    // Members' services are for members: not advertised.
    assert!(
        names
            .iter()
            .all(|n| !n.starts_with("stockraft.internal") && !n.starts_with("stockraft.bench")),
        "{names:?}"
    );
}

#[tokio::test]
async fn sigterm_shuts_down_cleanly() {
    let mut server = Server::start(&[]);
    server.wait_ready().await.unwrap();
    let mut c = server.client().await;
    set_on_hand(&mut c, "t", "S", "N", 3).await;
    let status = server.terminate();
    assert!(status.success(), "exit status {status}\n{}", server.logs());
    assert!(
        server.logs().contains("replication thread stopped"),
        "{}",
        server.logs()
    );
    server.restart();
    server.wait_ready().await.unwrap();
    let mut c = server.client().await;
    assert_eq!(level(&mut c, "S", "N").await.on_hand, 3);
}

mod raw {
    //! A codec that sends bytes as they are, to send malformed messages.
    use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
    use tonic::Status;

    #[derive(Debug, Clone, Default)]
    pub struct RawCodec;

    #[derive(Debug, Clone, Default)]
    pub struct RawEncoder;

    #[derive(Debug, Clone, Default)]
    pub struct RawDecoder;

    impl Encoder for RawEncoder {
        type Item = Vec<u8>;
        type Error = Status;
        fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
            use bytes::BufMut;
            dst.put_slice(&item);
            Ok(())
        }
    }

    impl Decoder for RawDecoder {
        type Item = Vec<u8>;
        type Error = Status;
        fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
            use bytes::Buf;
            let mut out = vec![0u8; src.remaining()];
            src.copy_to_slice(&mut out);
            Ok(Some(out))
        }
    }

    impl Codec for RawCodec {
        type Encode = Vec<u8>;
        type Decode = Vec<u8>;
        type Encoder = RawEncoder;
        type Decoder = RawDecoder;
        fn encoder(&mut self) -> RawEncoder {
            RawEncoder
        }
        fn decoder(&mut self) -> RawDecoder {
            RawDecoder
        }
    }
}

#[tokio::test]
async fn prometheus_metrics_are_served() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let metrics_addr = format!("127.0.0.1:{}", common::free_port());
    let mut server = Server::start(&[]);
    // Restart with a metrics port (the harness turns metrics off by default).
    server.kill9();
    server.extra = vec!["--metrics-listen".into(), metrics_addr.clone()];
    server.restart();
    server.wait_ready().await.unwrap();
    let mut c = server.client().await;
    set_on_hand(&mut c, "m", "S", "N", 2).await;
    reserve(&mut c, "o", vec![line("S", "N", 1)], 0)
        .await
        .unwrap();
    reserve(&mut c, "p", vec![line("S", "N", 5)], 0)
        .await
        .unwrap();

    let mut stream = tokio::net::TcpStream::connect(&metrics_addr).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut body = String::new();
    stream.read_to_string(&mut body).await.unwrap();
    for name in [
        "stockraft_requests_total{method=\"Reserve\",code=\"OK\"} 2",
        "stockraft_outcomes_total{method=\"Reserve\",outcome=\"INSUFFICIENT_STOCK\"} 1",
        "stockraft_request_seconds_bucket{method=\"Reserve\"",
        "stockraft_fsync_seconds_bucket",
        // Counts, not seconds: its own buckets.
        "stockraft_batch_commands_bucket{le=\"4096\"}",
        "stockraft_open_reservations 1",
        "stockraft_raft_term",
        "stockraft_raft_commit_index",
        "stockraft_raft_applied_index",
    ] {
        assert!(body.contains(name), "metrics lack {name}:\n{body}");
    }
}
