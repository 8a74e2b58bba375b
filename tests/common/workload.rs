//! Checkout clients that keep going through failures, and the checks of
//! what they were told against what every node holds.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use stockraft::proto::v1 as pb;
use stockraft::proto::v1::inventory_client::InventoryClient;
use tonic::transport::{Channel, ClientTlsConfig};

use super::cluster::Cluster;

pub const SKUS: usize = 5;
pub const STOCK: i64 = 150;
pub const NODE: &str = "dc";

pub fn sku(i: usize) -> String {
    format!("SKU-{i}")
}

/// What a client did with one reservation id and what it was told.
#[derive(Debug, Clone, Default)]
pub struct Record {
    pub sku: String,
    pub qty: i64,
    pub reserve_acked: bool,
    pub commit_attempted: bool,
    pub commit_acked: bool,
    pub release_attempted: bool,
    pub release_acked: bool,
}

pub struct Ledger {
    pub records: Mutex<BTreeMap<String, Record>>,
    pub acks: AtomicU64,
    pub errors: AtomicU64,
    /// Milliseconds since the run started of the last acknowledgement.
    pub last_ack_ms: AtomicU64,
    /// The longest a call took from its first attempt to its answer,
    /// retries included, in milliseconds (reset by a test to time a window).
    pub slowest_call_ms: AtomicU64,
    /// Units of each SKU seeded: STOCK, unless a test seeds more so that
    /// its clients never run out.
    pub stock: i64,
}

impl Default for Ledger {
    fn default() -> Ledger {
        Ledger::with_stock(STOCK)
    }
}

impl Ledger {
    /// A ledger for SKUs seeded with `stock` units ([`seed_stock`]).
    pub fn with_stock(stock: i64) -> Ledger {
        Ledger {
            records: Mutex::default(),
            acks: AtomicU64::default(),
            errors: AtomicU64::default(),
            last_ack_ms: AtomicU64::default(),
            slowest_call_ms: AtomicU64::default(),
            stock,
        }
    }

    fn update(&self, id: &str, change: impl FnOnce(&mut Record)) {
        if let Ok(mut records) = self.records.lock() {
            change(records.entry(id.to_string()).or_default());
        }
    }
}

/// Seeds every SKU with STOCK units at NODE.
pub async fn seed(cluster: &Cluster, via: u64) {
    seed_stock(cluster, via, STOCK).await;
}

/// Seeds every SKU with `stock` units at NODE.
pub async fn seed_stock(cluster: &Cluster, via: u64, stock: i64) {
    let mut c = cluster.client(via).await;
    for i in 0..SKUS {
        c.set_on_hand(pb::SetOnHandRequest {
            txn_id: format!("seed-{i}"),
            sku: sku(i),
            node: NODE.into(),
            on_hand: stock,
            expected_on_hand: None,
        })
        .await
        .expect("seed stock");
    }
}

fn channel(addr: &str, tls: Option<&ClientTlsConfig>) -> Channel {
    stockraft::client::endpoint(addr, tls.cloned())
        .expect("uri")
        .connect_timeout(Duration::from_millis(300))
        .timeout(Duration::from_secs(8))
        .connect_lazy()
}

/// Sends one call, retrying with the same id (on another node after a
/// failure) until it succeeds or `stop` is set. None when it gave up.
async fn retry<T, F, Fut>(
    addrs: &[String],
    tls: Option<&ClientTlsConfig>,
    at: &mut usize,
    stop: &AtomicBool,
    ledger: &Ledger,
    mut call: F,
) -> Option<T>
where
    F: FnMut(InventoryClient<Channel>) -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    let first_attempt = Instant::now();
    loop {
        let client = InventoryClient::new(channel(&addrs[*at % addrs.len()], tls));
        match call(client).await {
            Ok(value) => {
                let took_ms = first_attempt.elapsed().as_millis() as u64;
                ledger.slowest_call_ms.fetch_max(took_ms, Ordering::Relaxed);
                return Some(value);
            }
            Err(status) => {
                ledger.errors.fetch_add(1, Ordering::Relaxed);
                assert!(
                    matches!(
                        status.code(),
                        tonic::Code::Unavailable
                            | tonic::Code::Cancelled
                            | tonic::Code::DeadlineExceeded
                            | tonic::Code::Unknown
                    ),
                    "unexpected error: {status:?}"
                );
                if stop.load(Ordering::Relaxed) {
                    return None;
                }
                *at += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// Starts `clients` checkout clients spread over `addrs`. They reserve 1-3
/// units of a random SKU, then commit half, release a quarter and leave a
/// quarter open, each call retried with the same id until it succeeds.
pub fn start_clients(
    addrs: Vec<String>,
    clients: usize,
    ledger: Arc<Ledger>,
    stop: Arc<AtomicBool>,
    started: Instant,
) -> Vec<tokio::task::JoinHandle<()>> {
    start_clients_with(addrs, None, clients, ledger, stop, started)
}

/// [`start_clients`], over TLS when `tls` is given.
pub fn start_clients_with(
    addrs: Vec<String>,
    tls: Option<ClientTlsConfig>,
    clients: usize,
    ledger: Arc<Ledger>,
    stop: Arc<AtomicBool>,
    started: Instant,
) -> Vec<tokio::task::JoinHandle<()>> {
    spawn_clients("", addrs, tls, clients, ledger, stop, started)
}

/// [`start_clients`] whose reservation ids begin with `prefix`: clients
/// started again later in a test, into the same ledger, use new ids.
pub fn start_clients_prefixed(
    prefix: &str,
    addrs: Vec<String>,
    clients: usize,
    ledger: Arc<Ledger>,
    stop: Arc<AtomicBool>,
    started: Instant,
) -> Vec<tokio::task::JoinHandle<()>> {
    spawn_clients(prefix, addrs, None, clients, ledger, stop, started)
}

fn spawn_clients(
    prefix: &str,
    addrs: Vec<String>,
    tls: Option<ClientTlsConfig>,
    clients: usize,
    ledger: Arc<Ledger>,
    stop: Arc<AtomicBool>,
    started: Instant,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    for client_no in 0..clients {
        let addrs = addrs.clone();
        let tls = tls.clone();
        let ledger = ledger.clone();
        let stop = stop.clone();
        let prefix = prefix.to_string();
        tasks.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(client_no as u64);
            let mut at = client_no;
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let id = format!("{prefix}c{client_no}-{n}");
                n += 1;
                let sku = sku(rng.random_range(0..SKUS));
                let qty = rng.random_range(1..=3);
                ledger.update(&id, |r| {
                    r.sku = sku.clone();
                    r.qty = qty;
                });
                let request = pb::ReserveRequest {
                    reservation_id: id.clone(),
                    lines: vec![pb::Line {
                        sku: sku.clone(),
                        node: NODE.into(),
                        qty,
                    }],
                    ttl_ms: 600_000,
                };
                let Some(reply) = retry(&addrs, tls.as_ref(), &mut at, &stop, &ledger, |mut c| {
                    let request = request.clone();
                    async move { c.reserve(request).await.map(|r| r.into_inner()) }
                })
                .await
                else {
                    return;
                };
                if reply.outcome != pb::Outcome::Reserved as i32 {
                    assert_eq!(
                        reply.outcome,
                        pb::Outcome::InsufficientStock as i32,
                        "{reply:?}"
                    );
                    continue;
                }
                ledger.update(&id, |r| r.reserve_acked = true);
                ledger.acks.fetch_add(1, Ordering::Relaxed);
                ledger
                    .last_ack_ms
                    .store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
                let choice = rng.random_range(0..4);
                if choice < 2 {
                    ledger.update(&id, |r| r.commit_attempted = true);
                    let request = pb::CommitRequest {
                        reservation_id: id.clone(),
                    };
                    let Some(reply) =
                        retry(&addrs, tls.as_ref(), &mut at, &stop, &ledger, |mut c| {
                            let request = request.clone();
                            async move { c.commit(request).await.map(|r| r.into_inner()) }
                        })
                        .await
                    else {
                        return;
                    };
                    assert_eq!(reply.outcome, pb::Outcome::Committed as i32);
                    ledger.update(&id, |r| r.commit_acked = true);
                } else if choice == 2 {
                    ledger.update(&id, |r| r.release_attempted = true);
                    let request = pb::ReleaseRequest {
                        reservation_id: id.clone(),
                    };
                    let Some(reply) =
                        retry(&addrs, tls.as_ref(), &mut at, &stop, &ledger, |mut c| {
                            let request = request.clone();
                            async move { c.release(request).await.map(|r| r.into_inner()) }
                        })
                        .await
                    else {
                        return;
                    };
                    assert_eq!(reply.outcome, pb::Outcome::Released as i32);
                    ledger.update(&id, |r| r.release_acked = true);
                }
            }
        }));
    }
    tasks
}

/// What [`audit_node`] found wrong on a node.
#[derive(Debug, Clone)]
pub enum Finding {
    /// An acknowledged answer the node does not reflect: the write was
    /// lost, or its outcome changed.
    AckLost(String),
    /// Anything else: counters that disagree with the reservations held
    /// (a command applied twice, or not at all), or stock oversold.
    Wrong(String),
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Finding::AckLost(s) | Finding::Wrong(s) => f.write_str(s),
        }
    }
}

/// Checks one node's state against the ledger: every acknowledged answer is
/// reflected, every counter equals the reservations it holds (each applied
/// exactly once), and nothing is oversold. Panics listing what is not.
pub async fn check_node(cluster: &Cluster, id: u64, ledger: &Ledger) {
    let findings = audit_node(cluster, id, ledger).await;
    assert!(
        findings.is_empty(),
        "{} findings, the first ones:\n{}",
        findings.len(),
        findings
            .iter()
            .take(20)
            .map(|f| f.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// The checks of [`check_node`], returning what failed instead of
/// panicking (a test that must see them fail, too). Panics only when the
/// node cannot be asked.
pub async fn audit_node(cluster: &Cluster, id: u64, ledger: &Ledger) -> Vec<Finding> {
    let mut c = cluster.client(id).await;
    let records = ledger.records.lock().expect("ledger").clone();
    let mut findings = Vec::new();
    let mut open: HashMap<String, i64> = HashMap::new();
    let mut consumed: HashMap<String, i64> = HashMap::new();
    for (rid, record) in &records {
        let got = c
            .get_reservation(pb::GetReservationRequest {
                reservation_id: rid.clone(),
                consistency: pb::Consistency::Local as i32,
            })
            .await
            .expect("get reservation")
            .into_inner();
        findings.extend(audit_record(id, rid, record, &got));
        let state = got.state;
        use pb::ReservationState as S;
        if state == S::Open as i32 {
            *open.entry(record.sku.clone()).or_default() += record.qty;
        }
        if state == S::Committed as i32 {
            *consumed.entry(record.sku.clone()).or_default() += record.qty;
        }
    }
    for i in 0..SKUS {
        let name = sku(i);
        let level = c
            .get_availability(pb::GetAvailabilityRequest {
                skus: vec![name.clone()],
                nodes: vec![NODE.into()],
                consistency: pb::Consistency::Local as i32,
            })
            .await
            .expect("availability")
            .into_inner()
            .skus
            .first()
            .and_then(|s| s.nodes.first().cloned())
            .unwrap_or_default();
        let held = open.get(&name).copied().unwrap_or(0);
        let gone = consumed.get(&name).copied().unwrap_or(0);
        findings.extend(audit_level(id, &name, &level, held, gone, ledger.stock));
    }
    findings
}

/// One reservation as the node holds it against what its client was told.
fn audit_record(
    id: u64,
    rid: &str,
    record: &Record,
    got: &pb::GetReservationResponse,
) -> Vec<Finding> {
    use pb::ReservationState as S;
    let mut findings = Vec::new();
    let state = got.state;
    if record.reserve_acked && got.outcome == pb::Outcome::NotFound as i32 {
        findings.push(Finding::AckLost(format!(
            "node {id}: acknowledged reserve {rid} lost"
        )));
    }
    if record.commit_acked && state != S::Committed as i32 {
        findings.push(Finding::AckLost(format!(
            "node {id}: acknowledged commit of {rid} not reflected (state {state})"
        )));
    }
    if record.release_acked && state != S::Released as i32 {
        findings.push(Finding::AckLost(format!(
            "node {id}: acknowledged release of {rid} not reflected (state {state})"
        )));
    }
    let left_open = record.reserve_acked && !record.commit_attempted && !record.release_attempted;
    if left_open && got.outcome != pb::Outcome::NotFound as i32 && state != S::Open as i32 {
        findings.push(Finding::Wrong(format!(
            "node {id}: {rid} should be open (state {state})"
        )));
    }
    findings
}

/// One SKU's counters against the reservations the node holds.
fn audit_level(
    id: u64,
    name: &str,
    level: &pb::NodeAvailability,
    held: i64,
    gone: i64,
    stock: i64,
) -> Vec<Finding> {
    let mut findings = Vec::new();
    if level.reserved != held {
        findings.push(Finding::Wrong(format!(
            "node {id} {name}: reserved {} != open reservations {held}",
            level.reserved
        )));
    }
    if level.on_hand != stock - gone {
        findings.push(Finding::Wrong(format!(
            "node {id} {name}: on_hand {} != stock - committed {}",
            level.on_hand,
            stock - gone
        )));
    }
    if held + gone > stock {
        findings.push(Finding::Wrong(format!(
            "node {id} {name}: oversold: {held} held + {gone} committed > {stock}"
        )));
    }
    if level.available < 0 {
        findings.push(Finding::Wrong(format!(
            "node {id} {name}: available {}",
            level.available
        )));
    }
    findings
}
