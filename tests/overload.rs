//! The service's answers when the replica cannot take a request: no leader
//! (UNAVAILABLE) and a full queue (RESOURCE_EXHAUSTED). Runs the real
//! service and replication thread in-process over in-memory stores.

use std::sync::Arc;
use std::time::Duration;

use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState};
use stockraft::proto::v1 as pb;
use stockraft::proto::v1::inventory_server::Inventory;
use stockraft::replica::{
    tracing_logger, ChunkWriter, LogStore, Members, Output, Replica, ReplicaConfig, SavedSnapshot,
    SnapshotRecord, StoreError, Syncer,
};
use stockraft::server::forward::Forwarder;
use stockraft::server::inventory_service::{ApiConfig, InventoryService};
use stockraft::server::node::{NoPeers, Node, NodeConfig};
use stockraft::storage::MemStore;
use tonic::{Code, Request};

const API: ApiConfig = ApiConfig {
    ttl_ms_default: 60_000,
    ttl_ms_max: 600_000,
};

fn reserve_request(id: &str) -> Request<pb::ReserveRequest> {
    Request::new(pb::ReserveRequest {
        reservation_id: id.into(),
        lines: vec![pb::Line {
            sku: "S".into(),
            node: "N".into(),
            qty: 1,
        }],
        ttl_ms: 0,
    })
}

#[tokio::test]
async fn without_a_leader_writes_and_linearizable_reads_are_unavailable() {
    // A member of a three-voter group whose peers never answer.
    let replica = Replica::new(
        ReplicaConfig::new(1),
        MemStore::new(&[1, 2, 3]),
        &tracing_logger(),
    )
    .unwrap();
    let node = Node::start(
        replica,
        |_| NoPeers,
        NodeConfig {
            tick_ms: 10,
            startup_commit_index: 0,
            queue_max: 16,
            clocks: None,
        },
        // Answers completed by the replication thread itself.
        None,
    )
    .unwrap();
    assert!(!node.handle().is_ready());
    let forwarder = Arc::new(Forwarder::new(
        node.handle(),
        Duration::from_millis(300),
        None,
    ));
    let service = InventoryService::new(node.handle(), API, forwarder);
    let status = service.reserve(reserve_request("o")).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert!(status.message().contains("leader"), "{}", status.message());
    // Retry advice a client can act on without parsing the message.
    assert_retry_advice(&status, "NO_LEADER");
    let status = service
        .get_availability(Request::new(pb::GetAvailabilityRequest {
            skus: vec!["S".into()],
            nodes: vec![],
            consistency: pb::Consistency::Linearizable as i32,
        }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    // A LOCAL read is served from this replica's state.
    let local = service
        .get_availability(Request::new(pb::GetAvailabilityRequest {
            skus: vec!["S".into()],
            nodes: vec![],
            consistency: pb::Consistency::Local as i32,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(local.skus[0].total_available, 0);
    node.stop();
}

/// A store whose every write takes a while, like a slow disk.
#[derive(Debug, Clone)]
struct SlowStore(MemStore);

impl raft::Storage for SlowStore {
    fn initial_state(&self) -> raft::Result<RaftState> {
        self.0.initial_state()
    }
    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        self.0.entries(low, high, max_size, context)
    }
    fn term(&self, idx: u64) -> raft::Result<u64> {
        self.0.term(idx)
    }
    fn first_index(&self) -> raft::Result<u64> {
        self.0.first_index()
    }
    fn last_index(&self) -> raft::Result<u64> {
        self.0.last_index()
    }
    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        self.0.snapshot(request_index, to)
    }
}

impl LogStore for SlowStore {
    fn append(
        &mut self,
        entries: &[Entry],
        hard_state: Option<&HardState>,
        sync: bool,
    ) -> Result<(), StoreError> {
        if !entries.is_empty() {
            std::thread::sleep(Duration::from_millis(100));
        }
        self.0.append(entries, hard_state, sync)
    }
    fn set_commit(&mut self, commit: u64) -> Result<(), StoreError> {
        self.0.set_commit(commit)
    }
    fn set_conf_state(
        &mut self,
        conf_state: &ConfState,
        members: &Members,
    ) -> Result<(), StoreError> {
        self.0.set_conf_state(conf_state, members)
    }
    fn members(&self) -> Members {
        self.0.members()
    }
    fn set_cluster_id(&mut self, id: &stockraft::replica::ClusterId) -> Result<(), StoreError> {
        self.0.set_cluster_id(id)
    }
    fn cluster_id(&self) -> Option<stockraft::replica::ClusterId> {
        self.0.cluster_id()
    }
    fn rebuilt_term(&self) -> Option<u64> {
        self.0.rebuilt_term()
    }
    fn clear_rebuilt(&mut self) -> Result<(), StoreError> {
        self.0.clear_rebuilt()
    }
    fn chunk_writer(&self) -> Box<dyn ChunkWriter> {
        self.0.chunk_writer()
    }
    fn sync(&mut self) -> Result<(), StoreError> {
        self.0.sync()
    }
    fn syncer(&self) -> Box<dyn Syncer> {
        self.0.syncer()
    }
    fn save_snapshot(
        &mut self,
        snapshot: &SnapshotRecord,
        compact_to: u64,
    ) -> Result<(), StoreError> {
        self.0.save_snapshot(snapshot, compact_to)
    }
    fn install_snapshot(
        &mut self,
        snapshot: &SnapshotRecord,
        chunks: &[&[u8]],
    ) -> Result<(), StoreError> {
        self.0.install_snapshot(snapshot, chunks)
    }
    fn load_snapshot(&self) -> Result<Option<SavedSnapshot>, StoreError> {
        self.0.load_snapshot()
    }
    fn log_bytes(&self) -> u64 {
        self.0.log_bytes()
    }
    fn snapshot_unreadable(&self) -> bool {
        self.0.snapshot_unreadable()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_queue_answers_resource_exhausted_and_loses_nothing_it_accepted() {
    let mut replica = Replica::new(
        ReplicaConfig::new(1),
        SlowStore(MemStore::new(&[1])),
        &tracing_logger(),
    )
    .unwrap();
    replica.campaign(&mut Output::default()).unwrap();
    let node = Node::start(
        replica,
        |_| NoPeers,
        NodeConfig {
            tick_ms: 10,
            startup_commit_index: 0,
            queue_max: 4,
            clocks: None,
        },
        // Answers relayed through a task on this runtime, as the server does.
        Some(tokio::runtime::Handle::current()),
    )
    .unwrap();
    let forwarder = Arc::new(Forwarder::new(
        node.handle(),
        Duration::from_millis(300),
        None,
    ));
    let service = Arc::new(InventoryService::new(node.handle(), API, forwarder));
    service
        .set_on_hand(Request::new(pb::SetOnHandRequest {
            txn_id: "seed".into(),
            sku: "S".into(),
            node: "N".into(),
            on_hand: 1_000,
            expected_on_hand: None,
        }))
        .await
        .unwrap();
    let mut calls = Vec::new();
    for i in 0..64 {
        let service = service.clone();
        calls.push(tokio::spawn(async move {
            service.reserve(reserve_request(&format!("o{i}"))).await
        }));
    }
    let mut accepted = 0;
    let mut refused = 0;
    for call in calls {
        match call.await.unwrap() {
            Ok(r) => {
                assert_eq!(r.into_inner().outcome, pb::Outcome::Reserved as i32);
                accepted += 1;
            }
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                assert!(
                    status.message().contains("overloaded"),
                    "{}",
                    status.message()
                );
                assert_retry_advice(&status, "OVERLOADED");
                refused += 1;
            }
        }
    }
    assert!(refused > 0, "a queue of 4 never filled with 64 callers");
    assert!(accepted > 0);
    let avail = service
        .get_availability(Request::new(pb::GetAvailabilityRequest {
            skus: vec!["S".into()],
            nodes: vec![],
            consistency: pb::Consistency::Linearizable as i32,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(avail.skus[0].nodes[0].reserved, accepted);
}

/// `status` carries ErrorInfo with `reason`, a RetryInfo, and the same
/// delay as the `grpc-retry-pushback-ms` that gRPC's retry policy reads.
fn assert_retry_advice(status: &tonic::Status, reason: &str) {
    use tonic_types::StatusExt;
    let info = status.get_details_error_info().expect("ErrorInfo");
    assert_eq!(info.reason, reason, "{status:?}");
    assert_eq!(info.domain, "stockraft");
    let delay = status
        .get_details_retry_info()
        .and_then(|r| r.retry_delay)
        .expect("RetryInfo");
    let pushback = status
        .metadata()
        .get("grpc-retry-pushback-ms")
        .expect("pushback")
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(pushback, delay.as_millis().to_string());
}
