//! Durability, expiry and concurrency against the real binary.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{get, level, line, reserve, set_on_hand, Server};
use stockraft::proto::v1 as pb;
use tokio::sync::Mutex;

/// Clients reserve as fast as they can; the server is killed with SIGKILL
/// mid-stream. After restart every acknowledged reserve is there, and
/// retrying every id (acknowledged or not) applies none of them twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_loses_no_acknowledged_reserve_and_applies_none_twice() {
    let mut server = Server::start(&[]);
    server.wait_ready().await.unwrap();
    let mut c = server.client().await;
    set_on_hand(&mut c, "seed", "SKU", "N", 1_000_000).await;

    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let attempted = Arc::new(Mutex::new(BTreeSet::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for client_no in 0..8 {
        let mut c = server.client().await;
        let acked = acked.clone();
        let attempted = attempted.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let id = format!("c{client_no}-{n}");
                n += 1;
                attempted.lock().await.insert(id.clone());
                match reserve(&mut c, &id, vec![line("SKU", "N", 1)], 600_000).await {
                    Ok(r) => {
                        assert_eq!(r.outcome, pb::Outcome::Reserved as i32);
                        acked.lock().await.insert(id);
                    }
                    Err(_) => return,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    server.kill9();
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }
    let acked = acked.lock().await.clone();
    let attempted = attempted.lock().await.clone();
    assert!(
        acked.len() > 50,
        "too few acknowledged reserves ({}) to prove anything",
        acked.len()
    );

    server.restart();
    server.wait_ready().await.unwrap();
    let mut c = server.client().await;
    for id in &acked {
        let r = get(&mut c, id).await;
        assert_eq!(
            r.state,
            pb::ReservationState::Open as i32,
            "acknowledged {id} lost"
        );
    }
    // Retry everything: an applied id answers RESERVED without holding twice.
    for id in &attempted {
        let r = reserve(&mut c, id, vec![line("SKU", "N", 1)], 600_000)
            .await
            .unwrap();
        assert_eq!(r.outcome, pb::Outcome::Reserved as i32);
    }
    let counter = level(&mut c, "SKU", "N").await;
    assert_eq!(counter.reserved, attempted.len() as i64);
    assert_eq!(counter.available, 1_000_000 - attempted.len() as i64);
}

/// A crash in the middle of a write leaves a record cut short at the end of
/// the WAL (Linux lets SIGKILL stop a multi-page `write`; a power loss tears
/// unsynced pages). That write was never acknowledged, so the node must
/// start again without it and with everything acknowledged before it.
#[tokio::test]
async fn a_record_cut_short_at_the_wal_tail_does_not_stop_a_restart() {
    let mut server = Server::start(&[]);
    server.wait_ready().await.unwrap();
    let mut c = server.client().await;
    set_on_hand(&mut c, "seed", "SKU", "N", 1_000).await;
    for i in 0..20 {
        reserve(
            &mut c,
            &format!("o-{i}"),
            vec![line("SKU", "N", 1)],
            600_000,
        )
        .await
        .unwrap();
    }
    server.kill9();
    append_cut_short_record(server.data_dir());

    server.restart();
    server.wait_ready().await.unwrap();
    let mut c = server.client().await;
    for i in 0..20 {
        let r = get(&mut c, &format!("o-{i}")).await;
        assert_eq!(r.state, pb::ReservationState::Open as i32, "o-{i} lost");
    }
    assert_eq!(level(&mut c, "SKU", "N").await.reserved, 20);
    // And the node keeps working after it.
    reserve(&mut c, "after", vec![line("SKU", "N", 1)], 600_000)
        .await
        .unwrap();
}

/// Appends to the newest WAL file the start of a record whose body never
/// made it to disk: a full record header (RocksDB log format: crc32c, length,
/// type, in 32 KiB blocks) announcing 1,000 bytes, then only 100 of them.
fn append_cut_short_record(dir: &std::path::Path) {
    const BLOCK_BYTES: usize = 32 * 1024;
    const HEADER_BYTES: usize = 7;
    let wal = common::newest_wal(dir);
    let mut bytes = std::fs::read(&wal).unwrap();
    assert!(!bytes.is_empty(), "the newest WAL is empty");
    let left_in_block = BLOCK_BYTES - bytes.len() % BLOCK_BYTES;
    if left_in_block < HEADER_BYTES {
        // The writer pads a block's tail too short for a header with zeros.
        bytes.extend(std::iter::repeat_n(0u8, left_in_block));
    }
    bytes.extend_from_slice(&[0x12, 0x34, 0x56, 0x78]); // checksum
    bytes.extend_from_slice(&1_000u16.to_le_bytes()); // length
    bytes.push(1); // a full record
    bytes.extend(std::iter::repeat_n(0xABu8, 100));
    std::fs::write(&wal, bytes).unwrap();
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A short hold expires on time, not before its deadline and well under a
/// second after it, with no other traffic, and its stock comes back.
#[tokio::test]
async fn a_short_hold_expires_on_time_and_frees_its_stock() {
    let mut server = Server::start(&[]);
    server.wait_ready().await.unwrap();
    let mut c = server.client().await;
    set_on_hand(&mut c, "seed", "SKU", "N", 1).await;
    let r = reserve(&mut c, "cart-1", vec![line("SKU", "N", 1)], 1_000)
        .await
        .unwrap();
    assert_eq!(r.outcome, pb::Outcome::Reserved as i32);
    assert_eq!(level(&mut c, "SKU", "N").await.available, 0);
    let taker = reserve(&mut c, "cart-2", vec![line("SKU", "N", 1)], 0)
        .await
        .unwrap();
    assert_eq!(taker.outcome, pb::Outcome::InsufficientStock as i32);

    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let got = get(&mut c, "cart-1").await;
        if got.state == pb::ReservationState::Expired as i32 {
            assert!(
                got.finished_at_ms >= got.expires_at_ms,
                "expired before its deadline"
            );
            assert!(
                got.finished_at_ms - got.expires_at_ms < 500,
                "expired {} ms late",
                got.finished_at_ms - got.expires_at_ms
            );
            break;
        }
        // While open, its deadline has not passed on the server's clock
        // (the same machine's clock here, with a little slack).
        assert!(
            now_ms() < got.expires_at_ms + 500,
            "still open 500 ms after its deadline"
        );
        assert!(Instant::now() < deadline, "never expired");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(level(&mut c, "SKU", "N").await.available, 1);
    let commit = c
        .commit(pb::CommitRequest {
            reservation_id: "cart-1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(commit.outcome, pb::Outcome::Expired as i32);
    let retry = reserve(&mut c, "cart-2", vec![line("SKU", "N", 1)], 0)
        .await
        .unwrap();
    assert_eq!(retry.outcome, pb::Outcome::Reserved as i32);
}

/// With snapshots every few entries the log is compacted; after a restart
/// (graceful and SIGKILL) the state is exactly what it was.
#[tokio::test]
async fn restart_after_snapshot_and_compaction_restores_the_same_state() {
    let mut server = Server::start(&["--snapshot-entries", "25", "--snapshot-log-floor-mib", "0"]);
    server.wait_ready().await.unwrap();
    let mut c = server.client().await;
    for sku in 0..10 {
        set_on_hand(
            &mut c,
            &format!("seed-{sku}"),
            &format!("SKU-{sku}"),
            "N",
            100,
        )
        .await;
    }
    for i in 0..120 {
        let sku = format!("SKU-{}", i % 10);
        let id = format!("o-{i}");
        reserve(&mut c, &id, vec![line(&sku, "N", 1)], 600_000)
            .await
            .unwrap();
        match i % 3 {
            0 => {
                c.commit(pb::CommitRequest { reservation_id: id })
                    .await
                    .unwrap();
            }
            1 => {
                c.release(pb::ReleaseRequest { reservation_id: id })
                    .await
                    .unwrap();
            }
            _ => {}
        }
    }
    let before = snapshot_of(&mut c).await;
    assert!(
        server.logs().contains("snapshot taken"),
        "no snapshot was taken:\n{}",
        server.logs()
    );

    for graceful in [true, false] {
        if graceful {
            assert!(server.terminate().success());
            server.restart();
        } else {
            server.restart();
        }
        server.wait_ready().await.unwrap();
        let mut c = server.client().await;
        assert_eq!(
            snapshot_of(&mut c).await,
            before,
            "state changed across restart (graceful: {graceful})"
        );
    }
}

/// Every counter and every reservation, as text, to compare.
async fn snapshot_of(
    c: &mut stockraft::proto::v1::inventory_client::InventoryClient<tonic::transport::Channel>,
) -> String {
    let mut out = String::new();
    let skus: Vec<String> = (0..10).map(|i| format!("SKU-{i}")).collect();
    let avail = c
        .get_availability(pb::GetAvailabilityRequest {
            skus,
            nodes: vec![],
            consistency: 0,
        })
        .await
        .unwrap()
        .into_inner();
    for s in avail.skus {
        out.push_str(&format!("{s:?}\n"));
    }
    for i in 0..120 {
        let r = get(c, &format!("o-{i}")).await;
        out.push_str(&format!("{} {} {:?}\n", r.reservation_id, r.state, r.lines));
    }
    out
}

/// Many clients race for the last units of one SKU: exactly the stock is
/// reserved, never more.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_clients_never_oversell_the_last_units() {
    let mut server = Server::start(&[]);
    server.wait_ready().await.unwrap();
    let mut c = server.client().await;
    set_on_hand(&mut c, "seed-a", "HOT", "store", 10).await;
    set_on_hand(&mut c, "seed-b", "HOT", "dc", 7).await;

    let mut tasks = Vec::new();
    for i in 0..64 {
        let mut c = server.client().await;
        tasks.push(tokio::spawn(async move {
            // Half ask for one unit at the store; half for a bundle across
            // both nodes.
            let lines = if i % 2 == 0 {
                vec![line("HOT", "store", 1)]
            } else {
                vec![line("HOT", "store", 1), line("HOT", "dc", 1)]
            };
            let r = reserve(&mut c, &format!("race-{i}"), lines.clone(), 600_000)
                .await
                .unwrap();
            (r.outcome == pb::Outcome::Reserved as i32, lines)
        }));
    }
    let mut store = 0;
    let mut dc = 0;
    for task in tasks {
        let (won, lines) = task.await.unwrap();
        if won {
            for l in lines {
                if l.node == "store" {
                    store += 1;
                } else {
                    dc += 1;
                }
            }
        }
    }
    assert_eq!(
        store, 10,
        "the store's 10 units must all be reserved, and no more"
    );
    assert!(dc <= 7);
    let s = level(&mut c, "HOT", "store").await;
    let d = level(&mut c, "HOT", "dc").await;
    assert_eq!((s.reserved, s.available), (10, 0));
    assert_eq!(d.reserved, dc);
    assert!(d.available >= 0);
}
