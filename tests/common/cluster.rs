//! A cluster of real `stockraft serve` processes on loopback.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use stockraft::proto::v1 as pb;
use stockraft::proto::v1::cluster_client::ClusterClient;
use stockraft::proto::v1::inventory_client::InventoryClient;
use tonic::transport::{Channel, ClientTlsConfig};

use super::{free_port, BIN};

pub struct NodeProc {
    pub id: u64,
    pub addr: String,
    pub dir: PathBuf,
    pub log: PathBuf,
    pub child: Option<Child>,
    /// `--peers` or `--join`.
    pub first_flags: Vec<String>,
    pub started: bool,
    /// Environment for the next start only (crash points).
    pub env: Vec<(String, String)>,
}

pub struct Cluster {
    pub nodes: BTreeMap<u64, NodeProc>,
    pub extra: Vec<String>,
    pub temp: tempfile::TempDir,
    /// How the helpers reach the nodes' client ports: TLS when they serve it.
    pub tls: Option<ClientTlsConfig>,
    /// Peer listen addresses, of nodes that have ports of their own.
    pub peer_addrs: BTreeMap<u64, String>,
}

impl Cluster {
    /// Starts `n` founding nodes with ids 1..=n.
    pub fn start(n: u64, extra: &[&str]) -> Cluster {
        let mut cluster = Cluster::founding(n, extra);
        let ids: Vec<u64> = cluster.nodes.keys().copied().collect();
        for id in ids {
            cluster.spawn(id);
        }
        cluster
    }

    /// `n` founding nodes with ids 1..=n, not started yet (a test may move
    /// their data dirs first).
    pub fn founding(n: u64, extra: &[&str]) -> Cluster {
        let temp = tempfile::tempdir().expect("temp dir");
        let mut cluster = Cluster {
            nodes: BTreeMap::new(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            temp,
            tls: None,
            peer_addrs: BTreeMap::new(),
        };
        let addrs: Vec<(u64, String)> = (1..=n)
            .map(|id| (id, format!("127.0.0.1:{}", free_port())))
            .collect();
        let peers = addrs
            .iter()
            .map(|(id, a)| format!("{id}={a}"))
            .collect::<Vec<_>>()
            .join(",");
        for (id, addr) in addrs {
            cluster.add_proc(id, addr, vec!["--peers".into(), peers.clone()]);
        }
        cluster
    }

    fn add_proc(&mut self, id: u64, addr: String, first_flags: Vec<String>) {
        let dir = self.temp.path().join(format!("node-{id}"));
        let log = self.temp.path().join(format!("node-{id}.log"));
        self.nodes.insert(
            id,
            NodeProc {
                id,
                addr,
                dir,
                log,
                child: None,
                first_flags,
                started: false,
                env: Vec::new(),
            },
        );
    }

    /// Prepares a node that will join through `via` (not started yet).
    pub fn add_joining(&mut self, id: u64, via: u64) -> String {
        let addr = format!("127.0.0.1:{}", free_port());
        let via_addr = self.nodes[&via].addr.clone();
        self.add_proc(id, addr.clone(), vec!["--join".into(), via_addr]);
        addr
    }

    /// Starts `n` founding nodes secured as `stockraft certs` sets them up
    /// (certificates made in `certs` first): clients over TLS, members over
    /// mutual TLS on peer ports of their own. The helpers call over TLS.
    pub fn start_secured(n: u64, certs: &std::path::Path, extra: &[&str]) -> Cluster {
        let (mut cluster, peer_addrs) = Cluster::start_configured(n, extra, |id| {
            let file = |ext: &str| {
                certs
                    .join(format!("member-{id}.{ext}"))
                    .display()
                    .to_string()
            };
            vec![
                "--tls-cert".into(),
                file("pem"),
                "--tls-key".into(),
                file("key"),
                "--peer-cert".into(),
                file("pem"),
                "--peer-key".into(),
                file("key"),
                "--peer-ca".into(),
                certs.join("ca.pem").display().to_string(),
            ]
        });
        let ca = std::fs::read(certs.join("ca.pem")).expect("ca.pem");
        cluster.tls = Some(
            ClientTlsConfig::new().ca_certificate(tonic::transport::Certificate::from_pem(ca)),
        );
        cluster.peer_addrs = peer_addrs;
        cluster
    }

    /// Like [`Self::add_joining`], for a node that listens for peers on a
    /// port of its own: returns its client and peer addresses.
    pub fn add_joining_with_peer_port(&mut self, id: u64, via: u64) -> (String, String) {
        let addr = format!("127.0.0.1:{}", free_port());
        let peer_addr = format!("127.0.0.1:{}", free_port());
        let via_addr = self.nodes[&via].addr.clone();
        let flags = vec![
            "--join".into(),
            via_addr,
            "--peer-listen".into(),
            peer_addr.clone(),
        ];
        self.add_proc(id, addr.clone(), flags);
        (addr, peer_addr)
    }

    /// Starts `n` founding nodes, each listening for peers on a port of its
    /// own (`--peer-listen`). Returns the cluster and the peer addresses.
    pub fn start_with_peer_ports(n: u64, extra: &[&str]) -> (Cluster, BTreeMap<u64, String>) {
        Cluster::start_configured(n, extra, |_| Vec::new())
    }

    /// Founding nodes with peer ports of their own, each also given the
    /// flags `flags_of` returns for its id; not yet waited for.
    fn start_configured(
        n: u64,
        extra: &[&str],
        flags_of: impl Fn(u64) -> Vec<String>,
    ) -> (Cluster, BTreeMap<u64, String>) {
        let temp = tempfile::tempdir().expect("temp dir");
        let mut cluster = Cluster {
            nodes: BTreeMap::new(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            temp,
            tls: None,
            peer_addrs: BTreeMap::new(),
        };
        let addrs: Vec<(u64, String, String)> = (1..=n)
            .map(|id| {
                let client = format!("127.0.0.1:{}", free_port());
                (id, client, format!("127.0.0.1:{}", free_port()))
            })
            .collect();
        let peers = addrs
            .iter()
            .map(|(id, client, peer)| format!("{id}={client}/{peer}"))
            .collect::<Vec<_>>()
            .join(",");
        for (id, client, peer) in &addrs {
            let mut flags = vec![
                "--peers".into(),
                peers.clone(),
                "--peer-listen".into(),
                peer.clone(),
            ];
            flags.extend(flags_of(*id));
            cluster.add_proc(*id, client.clone(), flags);
        }
        for id in 1..=n {
            cluster.spawn(id);
        }
        let peer_addrs: BTreeMap<u64, String> =
            addrs.into_iter().map(|(id, _, peer)| (id, peer)).collect();
        cluster.peer_addrs = peer_addrs.clone();
        (cluster, peer_addrs)
    }

    pub fn spawn(&mut self, id: u64) {
        let extra = self.extra.clone();
        let node = self.nodes.get_mut(&id).expect("known node");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .expect("open node log");
        let mut command = Command::new(BIN);
        command
            .arg("serve")
            .arg("--member-id")
            .arg(id.to_string())
            .arg("--listen")
            .arg(&node.addr)
            .arg("--data-dir")
            .arg(&node.dir)
            .arg("--metrics-listen")
            .arg("off")
            .args(&extra)
            .stdout(Stdio::null())
            .stderr(log);
        // As a deployment would: the same flags on every start (--peers and
        // --join are ignored once the data dir holds state).
        command.args(&node.first_flags);
        for (key, value) in node.env.drain(..) {
            command.env(key, value);
        }
        node.child = Some(command.spawn().expect("spawn stockraft serve"));
        node.started = true;
    }

    pub fn kill9(&mut self, id: u64) {
        if let Some(node) = self.nodes.get_mut(&id) {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    /// Waits for a node's process to exit on its own (a crash point).
    pub fn wait_exit(&mut self, id: u64, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        let node = self.nodes.get_mut(&id)?;
        loop {
            let child = node.child.as_mut()?;
            if let Ok(Some(status)) = child.try_wait() {
                node.child = None;
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn is_running(&self, id: u64) -> bool {
        self.nodes.get(&id).is_some_and(|n| n.child.is_some())
    }

    pub fn addr(&self, id: u64) -> String {
        self.nodes[&id].addr.clone()
    }

    pub fn running(&self) -> Vec<u64> {
        self.nodes
            .values()
            .filter(|n| n.child.is_some())
            .map(|n| n.id)
            .collect()
    }

    pub fn logs(&self, id: u64) -> String {
        std::fs::read_to_string(&self.nodes[&id].log).unwrap_or_default()
    }

    pub fn all_logs(&self) -> String {
        let mut out = String::new();
        for id in self.nodes.keys() {
            let log = self.logs(*id);
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            out.push_str(&format!("==== node {id} (last 40 lines)\n"));
            for line in tail.into_iter().rev() {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    pub async fn channel(&self, id: u64) -> Result<Channel> {
        let addr = self.addr(id);
        let tls = self.tls.clone();
        Ok(stockraft::client::channel_with(&addr, Duration::from_secs(10), tls).await?)
    }

    pub async fn client(&self, id: u64) -> InventoryClient<Channel> {
        InventoryClient::new(self.channel(id).await.expect("connect"))
    }

    pub async fn status(&self, id: u64, with_digest: bool) -> Result<pb::ClusterStatusResponse> {
        let channel = self.channel(id).await?;
        Ok(ClusterClient::new(channel)
            .status(pb::ClusterStatusRequest { with_digest })
            .await?
            .into_inner())
    }

    pub async fn cluster_client(&self, id: u64) -> ClusterClient<Channel> {
        ClusterClient::new(self.channel(id).await.expect("connect"))
    }

    /// Waits until every running node is ready and they agree on a leader.
    pub async fn wait_leader(&self, timeout: Duration) -> Result<u64> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut leaders = Vec::new();
            let mut all_ready = true;
            for id in self.running() {
                match self.status(id, false).await {
                    Ok(s) if s.ready => leaders.push(s.leader_id),
                    _ => all_ready = false,
                }
            }
            if all_ready
                && !leaders.is_empty()
                && leaders.iter().all(|l| *l == leaders[0] && *l != 0)
            {
                return Ok(leaders[0]);
            }
            if Instant::now() > deadline {
                return Err(anyhow!(
                    "no agreed leader after {timeout:?}: {leaders:?}\n{}",
                    self.all_logs()
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until node `id` has applied what `reference` had committed when
    /// the wait began: it caught up (traffic may go on meanwhile).
    pub async fn wait_caught_up(&self, id: u64, reference: u64, timeout: Duration) -> Result<()> {
        let target = self.status(reference, false).await?.commit_index;
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(s) = self.status(id, false).await {
                if s.applied_index >= target {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(anyhow!(
                    "node {id} did not catch up to {target}\n{}",
                    self.all_logs()
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the given nodes applied the same index with the same
    /// state digest; returns it.
    pub async fn wait_converged(&self, ids: &[u64], timeout: Duration) -> Result<(u64, u64)> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut seen = Vec::new();
            for id in ids {
                if let Ok(s) = self.status(*id, true).await {
                    seen.push((s.applied_index, s.state_digest, s.commit_index));
                }
            }
            if seen.len() == ids.len() && seen.iter().all(|s| s.0 == seen[0].0 && s.1 == seen[0].1)
            {
                return Ok((seen[0].0, seen[0].1));
            }
            if Instant::now() > deadline {
                return Err(anyhow!(
                    "nodes {ids:?} did not converge after {timeout:?}: {seen:?}\n{}",
                    self.all_logs()
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in ids {
            self.kill9(id);
        }
    }
}
