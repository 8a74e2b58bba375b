//! Starts real `stockraft serve` processes on loopback for whole-binary tests.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use stockraft::proto::v1 as pb;
use stockraft::proto::v1::inventory_client::InventoryClient;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

pub const BIN: &str = env!("CARGO_BIN_EXE_stockraft");

/// Server flags that make a cluster snapshot and compact its log every few
/// entries, so tests reach the snapshot paths (catching up by snapshot,
/// installing one) within a few hundred writes.
pub const SNAPSHOT_OFTEN: &[&str] = &[
    "--snapshot-entries",
    "20",
    "--snapshot-log-floor-mib",
    "0",
    "--log-keep-entries",
    "5",
];

/// The newest RocksDB WAL file in a (stopped) node's data dir. RocksDB
/// numbers its files with zero-padded increasing numbers, so the largest
/// name is the newest.
pub fn newest_wal(dir: &Path) -> PathBuf {
    let mut wals: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("reading the data dir")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    wals.sort();
    wals.pop().expect("a WAL file")
}

/// A free loopback port (bound and released; the server binds it next).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local addr").port()
}

/// One server process with its own data dir.
pub struct Server {
    pub child: Option<Child>,
    pub addr: String,
    pub dir: PathBuf,
    pub extra: Vec<String>,
    pub log: PathBuf,
    _temp: Option<tempfile::TempDir>,
}

impl Server {
    /// Starts a server in a new temporary data dir with extra `serve` flags.
    pub fn start(extra: &[&str]) -> Server {
        let temp = tempfile::tempdir().expect("temp dir");
        let dir = temp.path().join("data");
        let mut server = Server {
            child: None,
            addr: format!("127.0.0.1:{}", free_port()),
            log: temp.path().join("server.log"),
            dir,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            _temp: Some(temp),
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open server log");
        let child = Command::new(BIN)
            .arg("serve")
            .arg("--listen")
            .arg(&self.addr)
            .arg("--data-dir")
            .arg(&self.dir)
            .args(self.metrics_flag())
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn stockraft serve");
        self.child = Some(child);
    }

    /// Metrics are off unless the test's own flags turn them on.
    fn metrics_flag(&self) -> Vec<String> {
        if self.extra.iter().any(|a| a == "--metrics-listen") {
            return Vec::new();
        }
        vec!["--metrics-listen".into(), "off".into()]
    }

    /// SIGKILL: no chance to flush or clean up.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then wait for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("server running");
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        child.wait().expect("wait for server")
    }

    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn data_dir(&self) -> &Path {
        &self.dir
    }

    /// Waits until the health service says SERVING.
    pub async fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    bail!(
                        "server exited with {status} before it was ready:\n{}",
                        self.logs()
                    );
                }
            }
            if let Ok(status) = health(&self.addr, "").await {
                if status == ServingStatus::Serving {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(anyhow!("server not ready after 30 s:\n{}", self.logs()));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn client(&self) -> InventoryClient<Channel> {
        stockraft::client::connect(&self.addr, Duration::from_secs(10))
            .await
            .expect("connect to server")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub async fn health(addr: &str, service: &str) -> Result<ServingStatus> {
    let channel = stockraft::client::channel(addr, Duration::from_secs(2)).await?;
    let mut client = HealthClient::new(channel);
    let response = client
        .check(HealthCheckRequest {
            service: service.to_string(),
        })
        .await?
        .into_inner();
    Ok(ServingStatus::try_from(response.status).unwrap_or(ServingStatus::Unknown))
}

pub fn line(sku: &str, node: &str, qty: i64) -> pb::Line {
    pb::Line {
        sku: sku.into(),
        node: node.into(),
        qty,
    }
}

pub async fn set_on_hand(
    client: &mut InventoryClient<Channel>,
    txn: &str,
    sku: &str,
    node: &str,
    on_hand: i64,
) {
    client
        .set_on_hand(pb::SetOnHandRequest {
            txn_id: txn.into(),
            sku: sku.into(),
            node: node.into(),
            on_hand,
            expected_on_hand: None,
        })
        .await
        .expect("set on hand");
}

pub async fn level(
    client: &mut InventoryClient<Channel>,
    sku: &str,
    node: &str,
) -> pb::NodeAvailability {
    let response = client
        .get_availability(pb::GetAvailabilityRequest {
            skus: vec![sku.into()],
            nodes: vec![node.into()],
            consistency: pb::Consistency::Linearizable as i32,
        })
        .await
        .expect("availability")
        .into_inner();
    response.skus[0].nodes[0].clone()
}

pub async fn reserve(
    client: &mut InventoryClient<Channel>,
    id: &str,
    lines: Vec<pb::Line>,
    ttl_ms: u64,
) -> Result<pb::ReserveResponse, tonic::Status> {
    client
        .reserve(pb::ReserveRequest {
            reservation_id: id.into(),
            lines,
            ttl_ms,
        })
        .await
        .map(|r| r.into_inner())
}

pub async fn get(client: &mut InventoryClient<Channel>, id: &str) -> pb::GetReservationResponse {
    client
        .get_reservation(pb::GetReservationRequest {
            reservation_id: id.into(),
            consistency: pb::Consistency::Linearizable as i32,
        })
        .await
        .expect("get reservation")
        .into_inner()
}

pub mod cluster;
pub mod lossyfs;
pub mod workload;
