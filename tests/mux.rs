//! The Rust client's multiplexer (`client::mux`) against real servers:
//! many callers over a few streams with nothing lost or doubled, the order
//! of operations on one reservation, per-call deadlines, the fall-back to
//! unary calls, and a leader killed under load.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::cluster::Cluster;
use common::{level, line, set_on_hand, Server};
use stockraft::client::mux::{Multiplexed, MuxConfig};
use stockraft::client::{Authed, Bearer};
use stockraft::proto::v1 as pb;
use tonic::{Code, Status};

const DEADLINE: Duration = Duration::from_secs(10);

async fn authed(addr: &str) -> Authed {
    let channel = stockraft::client::channel(addr, Duration::from_secs(10))
        .await
        .expect("connect");
    tonic::service::interceptor::InterceptedService::new(channel, Bearer::default())
}

fn reserve_request(id: &str, sku: &str, qty: i64) -> pb::ReserveRequest {
    pb::ReserveRequest {
        reservation_id: id.into(),
        lines: vec![line(sku, "N", qty)],
        ttl_ms: 600_000,
    }
}

fn commit_request(id: &str) -> pb::CommitRequest {
    pb::CommitRequest {
        reservation_id: id.into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_callers_share_streams_and_every_unit_is_accounted_for() {
    let mut server = Server::start(&[]);
    server.wait_ready().await.unwrap();
    let mut c = server.client().await;
    // Fewer units than asked for: some reserves must come up short.
    set_on_hand(&mut c, "seed", "S", "N", 1_500).await;
    let mux = Arc::new(Multiplexed::new(
        vec![authed(&server.addr).await],
        MuxConfig::default(),
    ));
    let committed = Arc::new(AtomicU64::new(0));
    let mut callers = Vec::new();
    for caller in 0..64 {
        let mux = mux.clone();
        let committed = committed.clone();
        callers.push(tokio::spawn(async move {
            for n in 0..20 {
                let id = format!("c{caller}-{n}");
                let held = mux
                    .reserve(reserve_request(&id, "S", 2), DEADLINE)
                    .await
                    .unwrap();
                if held.outcome == pb::Outcome::InsufficientStock as i32 {
                    assert_eq!(held.shortages.len(), 1);
                    continue;
                }
                assert_eq!(held.outcome, pb::Outcome::Reserved as i32);
                let done = mux.commit(commit_request(&id), DEADLINE).await.unwrap();
                assert_eq!(done.outcome, pb::Outcome::Committed as i32);
                committed.fetch_add(2, Ordering::Relaxed);
            }
        }));
    }
    for caller in callers {
        caller.await.unwrap();
    }
    assert!(!mux.is_unary(), "the server serves Stream");
    let sold = committed.load(Ordering::Relaxed) as i64;
    assert_eq!(sold, 1_500, "every unit sold once all 1,280 orders ran");
    let after = level(&mut c, "S", "N").await;
    assert_eq!((after.on_hand, after.reserved), (1_500 - sold, 0));
}

#[tokio::test]
async fn operations_on_one_reservation_keep_the_order_called() {
    let mut server = Server::start(&[]);
    server.wait_ready().await.unwrap();
    let mut c = server.client().await;
    set_on_hand(&mut c, "seed", "S", "N", 1_000).await;
    let mux = Multiplexed::new(vec![authed(&server.addr).await], MuxConfig::default());
    for n in 0..100 {
        let id = format!("o{n}");
        // Reserve, commit and read, sent without awaiting in between: the
        // server would run them concurrently, the multiplexer keeps the
        // order.
        let (held, done, read) = tokio::join!(
            mux.reserve(reserve_request(&id, "S", 1), DEADLINE),
            mux.commit(commit_request(&id), DEADLINE),
            mux.get_reservation(
                pb::GetReservationRequest {
                    reservation_id: id.clone(),
                    consistency: pb::Consistency::Linearizable as i32,
                },
                DEADLINE
            ),
        );
        assert_eq!(held.unwrap().outcome, pb::Outcome::Reserved as i32);
        assert_eq!(done.unwrap().outcome, pb::Outcome::Committed as i32);
        assert_eq!(
            read.unwrap().state,
            pb::ReservationState::Committed as i32,
            "{id}"
        );
    }
    assert_eq!(level(&mut c, "S", "N").await.on_hand, 900);
}

#[tokio::test]
async fn a_deadline_fails_the_caller_and_a_retry_applies_once() {
    let mut server = Server::start(&[]);
    server.wait_ready().await.unwrap();
    let mut c = server.client().await;
    set_on_hand(&mut c, "seed", "S", "N", 10).await;
    let mux = Multiplexed::new(vec![authed(&server.addr).await], MuxConfig::default());
    let sell = pb::SellRequest {
        txn_id: "pos-1".into(),
        sku: "S".into(),
        node: "N".into(),
        qty: 3,
    };
    let late = mux.sell(sell.clone(), Duration::from_micros(1)).await;
    assert_eq!(late.unwrap_err().code(), Code::DeadlineExceeded);
    // Whether the first attempt reached the server or not, the retry with
    // the same txn id leaves on_hand 3 lower, once.
    let retried = mux.sell(sell, DEADLINE).await.unwrap();
    assert_eq!(retried.level.unwrap().on_hand, 7);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(level(&mut c, "S", "N").await.on_hand, 7);
    // The refusals of the server arrive as the unary call's, details too.
    let stale = mux
        .set_on_hand(
            pb::SetOnHandRequest {
                txn_id: "count".into(),
                sku: "S".into(),
                node: "N".into(),
                on_hand: 1,
                expected_on_hand: Some(99),
            },
            DEADLINE,
        )
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::FailedPrecondition);
    use tonic_types::StatusExt;
    let info = stale.get_details_error_info().expect("ErrorInfo");
    assert_eq!(info.reason, "STALE_ON_HAND");
    assert_eq!(info.metadata["on_hand"], "7");
}

/// A server with every call but `Stream`: it forwards each unary call to a
/// real server, and answers `Stream` UNIMPLEMENTED, as an older server or
/// a proxy that does not carry streams would.
struct WithoutStream {
    real: stockraft::proto::v1::inventory_client::InventoryClient<tonic::transport::Channel>,
    unary_calls: Arc<AtomicU64>,
}

type Answer<T> = Result<tonic::Response<T>, Status>;

impl WithoutStream {
    fn client(
        &self,
    ) -> stockraft::proto::v1::inventory_client::InventoryClient<tonic::transport::Channel> {
        self.unary_calls.fetch_add(1, Ordering::Relaxed);
        self.real.clone()
    }
}

#[tonic::async_trait]
impl pb::inventory_server::Inventory for WithoutStream {
    async fn reserve(&self, r: tonic::Request<pb::ReserveRequest>) -> Answer<pb::ReserveResponse> {
        self.client().reserve(r.into_inner()).await
    }
    async fn commit(&self, r: tonic::Request<pb::CommitRequest>) -> Answer<pb::CommitResponse> {
        self.client().commit(r.into_inner()).await
    }
    async fn release(&self, r: tonic::Request<pb::ReleaseRequest>) -> Answer<pb::ReleaseResponse> {
        self.client().release(r.into_inner()).await
    }
    async fn extend(&self, r: tonic::Request<pb::ExtendRequest>) -> Answer<pb::ExtendResponse> {
        self.client().extend(r.into_inner()).await
    }
    async fn get_reservation(
        &self,
        r: tonic::Request<pb::GetReservationRequest>,
    ) -> Answer<pb::GetReservationResponse> {
        self.client().get_reservation(r.into_inner()).await
    }
    async fn sell(&self, r: tonic::Request<pb::SellRequest>) -> Answer<pb::SellResponse> {
        self.client().sell(r.into_inner()).await
    }
    async fn adjust(&self, r: tonic::Request<pb::AdjustRequest>) -> Answer<pb::AdjustResponse> {
        self.client().adjust(r.into_inner()).await
    }
    async fn set_on_hand(
        &self,
        r: tonic::Request<pb::SetOnHandRequest>,
    ) -> Answer<pb::SetOnHandResponse> {
        self.client().set_on_hand(r.into_inner()).await
    }
    async fn set_safety_stock(
        &self,
        r: tonic::Request<pb::SetSafetyStockRequest>,
    ) -> Answer<pb::SetSafetyStockResponse> {
        self.client().set_safety_stock(r.into_inner()).await
    }
    async fn get_availability(
        &self,
        r: tonic::Request<pb::GetAvailabilityRequest>,
    ) -> Answer<pb::GetAvailabilityResponse> {
        self.client().get_availability(r.into_inner()).await
    }
    type StreamStream = tokio_stream::Empty<Result<pb::StreamResponse, Status>>;
    async fn stream(
        &self,
        _r: tonic::Request<tonic::Streaming<pb::StreamRequest>>,
    ) -> Answer<Self::StreamStream> {
        Err(Status::unimplemented("this server does not carry Stream"))
    }
}

#[tokio::test]
async fn without_stream_the_calls_go_unary() {
    let mut server = Server::start(&[]);
    server.wait_ready().await.unwrap();
    let unary_calls = Arc::new(AtomicU64::new(0));
    let proxy = WithoutStream {
        real: server.client().await,
        unary_calls: unary_calls.clone(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(pb::inventory_server::InventoryServer::new(proxy))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let mux = Multiplexed::new(vec![authed(&addr).await], MuxConfig::default());
    let set = mux
        .set_on_hand(
            pb::SetOnHandRequest {
                txn_id: "seed".into(),
                sku: "S".into(),
                node: "N".into(),
                on_hand: 5,
                expected_on_hand: None,
            },
            DEADLINE,
        )
        .await
        .unwrap();
    assert_eq!(set.level.unwrap().on_hand, 5);
    assert!(mux.is_unary(), "UNIMPLEMENTED turned the multiplexer unary");
    let held = mux
        .reserve(reserve_request("o", "S", 2), DEADLINE)
        .await
        .unwrap();
    assert_eq!(held.outcome, pb::Outcome::Reserved as i32);
    assert_eq!(unary_calls.load(Ordering::Relaxed), 2);
}

/// Orders reserved and committed through the multiplexer while the leader
/// is killed: every call is answered or fails with a status; the callers
/// retry what failed with the same id; in the end every order is
/// committed exactly once and on_hand fell by exactly what was committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_killed_under_load_loses_and_doubles_nothing() {
    let mut cluster = Cluster::start(3, &[]);
    let leader = cluster.wait_leader(Duration::from_secs(20)).await.unwrap();
    let mut seed = cluster.client(leader).await;
    set_on_hand(&mut seed, "seed", "S", "N", 1_000_000).await;
    let mut members = Vec::new();
    for id in 1..=3 {
        members.push(authed(&cluster.addr(id)).await);
    }
    let mux = Arc::new(Multiplexed::new(members, MuxConfig::default()));
    let failures = Arc::new(std::sync::Mutex::new(BTreeMap::<String, u64>::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let orders = Arc::new(AtomicU64::new(0));
    let mut callers = Vec::new();
    for caller in 0..16 {
        let (mux, failures, stop, orders) =
            (mux.clone(), failures.clone(), stop.clone(), orders.clone());
        callers.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let id = format!("k{caller}-{n}");
                n += 1;
                let held = retry(&failures, || {
                    mux.reserve(reserve_request(&id, "S", 1), Duration::from_secs(2))
                })
                .await;
                assert_eq!(held.outcome, pb::Outcome::Reserved as i32, "{id}");
                let done = retry(&failures, || {
                    mux.commit(commit_request(&id), Duration::from_secs(2))
                })
                .await;
                assert_eq!(done.outcome, pb::Outcome::Committed as i32, "{id}");
                orders.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    let before_kill = orders.load(Ordering::Relaxed);
    cluster.kill9(leader);
    // Go on until well after a new leader took over.
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop.store(true, Ordering::Relaxed);
    for caller in callers {
        caller.await.unwrap();
    }
    let total = orders.load(Ordering::Relaxed);
    assert!(
        before_kill > 0 && total > before_kill,
        "{before_kill} then {total}"
    );
    // The kill cut calls in flight: they failed with a status and were
    // retried, not lost.
    assert!(
        !failures.lock().unwrap().is_empty(),
        "no call saw the leader die"
    );
    // The survivors may still name the dead leader for an election timeout.
    let new_leader = loop {
        let id = cluster.wait_leader(Duration::from_secs(20)).await.unwrap();
        if id != leader {
            break id;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut c = cluster.client(new_leader).await;
    let after = level(&mut c, "S", "N").await;
    assert_eq!(
        (after.on_hand, after.reserved),
        (1_000_000 - total as i64, 0),
        "each of {total} orders committed once; failures retried: {:?}",
        failures.lock().unwrap()
    );
    eprintln!(
        "{total} orders ({before_kill} before the kill); failures retried: {:?}",
        failures.lock().unwrap()
    );
}

/// Calls `attempt` until it answers, retrying a failure whose outcome is
/// unknown (UNAVAILABLE, DEADLINE_EXCEEDED) with the same request, and
/// counts the failures by code. Any other refusal fails the test.
async fn retry<T, F, Fut>(failures: &std::sync::Mutex<BTreeMap<String, u64>>, mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Status>>,
{
    let give_up = Instant::now() + Duration::from_secs(60);
    loop {
        match attempt().await {
            Ok(answer) => return answer,
            Err(status) if matches!(status.code(), Code::Unavailable | Code::DeadlineExceeded) => {
                *failures
                    .lock()
                    .unwrap()
                    .entry(format!("{:?}", status.code()))
                    .or_default() += 1;
                assert!(Instant::now() < give_up, "no answer in 60 s: {status:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(status) => panic!("refused: {status:?}"),
        }
    }
}

/// A multiplexer given no member answers each call with a status, never
/// a panic.
#[tokio::test]
async fn no_member_is_a_status_not_a_panic() {
    let mux = Multiplexed::new(Vec::new(), MuxConfig::default());
    let refused = mux
        .reserve(reserve_request("o", "S", 1), DEADLINE)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
}
