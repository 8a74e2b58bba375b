//! `stockraft serve`: its flags, checked and turned into a [`ServeConfig`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use clap::Args;

use stockraft::limits;
use stockraft::replica::membership::Member;
use stockraft::replica::{Members, ReplicaConfig};
use stockraft::server::inventory_service::ApiConfig;
use stockraft::server::ServeConfig;
use stockraft::tls::{ClientPortTls, KeyPair, PeerTls};

use super::{millis, parse_duration};

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// This member's id in the cluster (a positive integer). `--node-id`
    /// and STOCKRAFT_NODE_ID, its names before, still work for one release.
    #[arg(long, alias = "node-id", env = "STOCKRAFT_MEMBER_ID", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub member_id: u64,
    /// Address for clients (and, in a cluster, peers, unless
    /// --peer-listen gives them a port of their own).
    #[arg(long, env = "STOCKRAFT_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,
    /// Address for other members' Raft traffic, apart from clients
    /// (default: peers share --listen).
    #[arg(long, env = "STOCKRAFT_PEER_LISTEN")]
    pub peer_listen: Option<SocketAddr>,
    /// Where the node keeps its Raft log and snapshots.
    #[arg(long, env = "STOCKRAFT_DATA_DIR", default_value = "./stockraft-data")]
    pub data_dir: PathBuf,
    /// The address clients and other nodes use to reach this one
    /// (default: --listen).
    #[arg(long, env = "STOCKRAFT_ADVERTISE")]
    pub advertise: Option<String>,
    /// The address other members send Raft traffic to (default:
    /// --peer-listen, else the advertised address).
    #[arg(long, env = "STOCKRAFT_ADVERTISE_PEER")]
    pub advertise_peer: Option<String>,
    /// The members of a NEW cluster, the same on every node:
    /// 1=HOST:PORT,2=HOST:PORT,3=HOST:PORT, or ID=CLIENT_ADDR/PEER_ADDR
    /// for members listening for peers on a port of their own. Ignored once
    /// the data dir exists.
    #[arg(long, env = "STOCKRAFT_PEERS", conflicts_with = "join")]
    pub peers: Option<String>,
    /// Join a running cluster through any member (HOST:PORT), after
    /// `stockraft cluster add ID ADDR`. Ignored once the data dir exists.
    #[arg(long, env = "STOCKRAFT_JOIN")]
    pub join: Option<String>,
    /// How long a call waits for a leader (and retries) during an election.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub leader_wait: Duration,
    /// Address of the Prometheus metrics endpoint, or "off".
    #[arg(
        long,
        env = "STOCKRAFT_METRICS_LISTEN",
        default_value = "127.0.0.1:9464"
    )]
    pub metrics_listen: String,
    /// Raft tick: heartbeats, elections and expiry checks run on it.
    #[arg(long, default_value = "100ms", value_parser = parse_duration)]
    pub tick: Duration,
    /// How far the leader's clock may be from a majority of members'
    /// before it stops stamping time and steps down (at most 60s).
    #[arg(long, env = "STOCKRAFT_MAX_CLOCK_OFFSET", default_value = "500ms", value_parser = parse_duration)]
    pub max_clock_offset: Duration,
    /// Ticks without a leader before an election.
    #[arg(long, default_value_t = 10)]
    pub election_ticks: usize,
    /// Ticks between leader heartbeats.
    #[arg(long, default_value_t = 2)]
    pub heartbeat_ticks: usize,
    /// TTL of a reservation that asks for none.
    #[arg(long, env = "STOCKRAFT_DEFAULT_TTL", default_value = "15m", value_parser = parse_duration)]
    pub default_ttl: Duration,
    /// Longest TTL a reservation may ask for (at most 7d).
    #[arg(long, env = "STOCKRAFT_MAX_TTL", default_value = "7d", value_parser = parse_duration)]
    pub max_ttl: Duration,
    /// How long ids are remembered for exactly-once retries.
    #[arg(long, env = "STOCKRAFT_ID_RETENTION", default_value = "24h", value_parser = parse_duration)]
    pub id_retention: Duration,
    /// Most finished ids remembered; the oldest are forgotten first beyond it.
    #[arg(long, default_value_t = limits::ID_RETAINED_MAX_DEFAULT,
          value_parser = clap::value_parser!(u64).range(0..=limits::ID_RETAINED_MAX))]
    pub id_retained_max: u64,
    /// How long calls in flight may take to finish on shutdown.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,
    /// Calls need a bearer token listed in this file (lines `ROLE
    /// SHA256-OF-TOKEN [NAME]`, roles read, write, admin; `stockraft
    /// token` makes one). Read again on SIGHUP.
    #[arg(long, env = "STOCKRAFT_TOKENS")]
    pub tokens: Option<PathBuf>,
    /// Serve a non-loopback address even without TLS, tokens or mutual
    /// TLS between members (warned at every start).
    #[arg(long)]
    pub insecure: bool,
    /// Most client connections open at once; one past it is closed at
    /// once (at most 4096).
    #[arg(long, default_value_t = stockraft::limits::CONNECTIONS_MAX as u64,
          value_parser = clap::value_parser!(u64).range(1..=stockraft::limits::CONNECTIONS_MAX as u64))]
    pub connections_max: u64,
    /// Serve clients over TLS with this certificate (PEM; with --tls-key).
    #[arg(long, env = "STOCKRAFT_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The key of --tls-cert (PEM).
    #[arg(long, env = "STOCKRAFT_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Require clients to present a certificate signed by this CA (PEM).
    #[arg(long, env = "STOCKRAFT_CLIENT_CA", requires = "tls_cert")]
    pub client_ca: Option<PathBuf>,
    /// This member's certificate for mutual TLS with the others, naming it
    /// (member-ID.stockraft; `stockraft certs` makes one). Needs
    /// --peer-listen, --peer-key and --peer-ca.
    #[arg(long, env = "STOCKRAFT_PEER_CERT", requires_all = ["peer_key", "peer_ca", "peer_listen"])]
    pub peer_cert: Option<PathBuf>,
    /// The key of --peer-cert (PEM).
    #[arg(long, env = "STOCKRAFT_PEER_KEY", requires = "peer_cert")]
    pub peer_key: Option<PathBuf>,
    /// The CA that signs every member's certificate (PEM).
    #[arg(long, env = "STOCKRAFT_PEER_CA", requires = "peer_cert")]
    pub peer_ca: Option<PathBuf>,
    /// Applied log entries between snapshots, at least: a snapshot also
    /// waits until the log held in memory is as large as the last snapshot,
    /// or --snapshot-log-floor-mib when the snapshot is larger (and a quarter
    /// of it, at least).
    #[arg(long, default_value_t = 20_000)]
    pub snapshot_entries: u64,
    /// MiB of log, at most, that a snapshot waits for beyond
    /// --snapshot-entries (see there); 0 snapshots after a quarter of the
    /// last snapshot's size of log. At most 256: a log of 256 MiB forces a
    /// snapshot whatever this says.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(0..=256))]
    pub snapshot_log_floor_mib: u64,
    /// Log entries kept behind a snapshot, so a briefly lagging follower
    /// catches up from the log rather than by snapshot.
    #[arg(long, default_value_t = 1_000)]
    pub log_keep_entries: u64,
}

impl ServeArgs {
    /// The server's configuration, or the first flag that is out of bounds.
    pub fn into_config(self) -> Result<ServeConfig> {
        let metrics_listen = self.metrics_listen()?;
        let api = self.api_config()?;
        let replica = self.replica_config()?;
        let peers = match &self.peers {
            Some(text) => Some(parse_peers(text)?),
            None => None,
        };
        let max_clock_offset_ms = checked_clock_offset(self.max_clock_offset)?;
        Ok(ServeConfig {
            client_tls: self.client_tls(),
            peer_tls: self.peer_tls(),
            tokens: self.tokens,
            insecure: self.insecure,
            connections_max: self.connections_max as usize,
            advertise: self.advertise,
            peer_listen: self.peer_listen,
            advertise_peer: self.advertise_peer,
            peers,
            join: self.join,
            leader_wait_ms: millis(self.leader_wait),
            node_id: self.member_id,
            listen: self.listen,
            data_dir: self.data_dir,
            metrics_listen,
            tick_ms: millis(self.tick).max(1),
            max_clock_offset_ms,
            shutdown_grace_ms: millis(self.shutdown_grace),
            api,
            replica,
        })
    }

    /// `--metrics-listen`: an address, or None for "off".
    fn metrics_listen(&self) -> Result<Option<SocketAddr>> {
        match self.metrics_listen.as_str() {
            "off" | "" => Ok(None),
            text => Ok(Some(text.parse::<SocketAddr>().with_context(|| {
                format!("--metrics-listen {text:?} is not HOST:PORT or \"off\"")
            })?)),
        }
    }

    /// The TTL bounds, checked against each other and the hard limit.
    fn api_config(&self) -> Result<ApiConfig> {
        let ttl_ms_max = millis(self.max_ttl);
        if ttl_ms_max > limits::TTL_MS_MAX {
            return Err(anyhow!("--max-ttl may be at most 7d"));
        }
        let ttl_ms_default = millis(self.default_ttl);
        if ttl_ms_default == 0 || ttl_ms_default > ttl_ms_max {
            return Err(anyhow!(
                "--default-ttl must be positive and at most --max-ttl"
            ));
        }
        Ok(ApiConfig {
            ttl_ms_default,
            ttl_ms_max,
        })
    }

    /// The replication core's settings. The server encodes snapshots and
    /// syncs the log off the thread that applies entries, so the replica
    /// hands both to its caller.
    fn replica_config(&self) -> Result<ReplicaConfig> {
        if self.election_ticks <= self.heartbeat_ticks {
            return Err(anyhow!(
                "--election-ticks must be greater than --heartbeat-ticks"
            ));
        }
        let mut replica = ReplicaConfig::new(self.member_id);
        replica.cluster_id_candidate = rand::random();
        replica.election_tick = self.election_ticks;
        replica.heartbeat_tick = self.heartbeat_ticks;
        replica.id_retention_ms = millis(self.id_retention);
        replica.id_retained_max = self.id_retained_max;
        replica.snapshot_entries = self.snapshot_entries.max(1);
        replica.snapshot_log_floor_bytes = self.snapshot_log_floor_mib.saturating_mul(1024 * 1024);
        replica.log_keep_entries = self.log_keep_entries;
        replica.snapshot_by_caller = true;
        replica.persist_async = true;
        Ok(replica)
    }

    /// TLS on the client port, when --tls-cert and --tls-key are given.
    fn client_tls(&self) -> Option<ClientPortTls> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(ClientPortTls {
                server: KeyPair {
                    cert: cert.clone(),
                    key: key.clone(),
                },
                client_ca: self.client_ca.clone(),
            }),
            _ => None,
        }
    }

    /// Mutual TLS between members, when all three --peer-* files are given.
    fn peer_tls(&self) -> Option<PeerTls> {
        match (&self.peer_cert, &self.peer_key, &self.peer_ca) {
            (Some(cert), Some(key), Some(ca)) => Some(PeerTls {
                member: KeyPair {
                    cert: cert.clone(),
                    key: key.clone(),
                },
                ca: ca.clone(),
            }),
            _ => None,
        }
    }
}

/// `--max-clock-offset` in ms, within its bound.
fn checked_clock_offset(offset: Duration) -> Result<u64> {
    let ms = millis(offset);
    if ms == 0 || ms > stockraft::limits::CLOCK_OFFSET_MS_MAX {
        return Err(anyhow!(
            "--max-clock-offset must be more than 0 and at most {} ms",
            stockraft::limits::CLOCK_OFFSET_MS_MAX
        ));
    }
    Ok(ms)
}

/// Parses `1=HOST:PORT,2=HOST:PORT,...`, each address optionally
/// `CLIENT_HOST:PORT/PEER_HOST:PORT`.
pub fn parse_peers(text: &str) -> Result<Members> {
    let mut members = Members::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (id, addresses) = item
            .split_once('=')
            .ok_or_else(|| anyhow!("--peers item {item:?} is not ID=HOST:PORT"))?;
        let id: u64 =
            id.trim().parse().ok().filter(|id| *id > 0).ok_or_else(|| {
                anyhow!("--peers item {item:?}: the id must be a positive integer")
            })?;
        let (address, peer_address) = match addresses.split_once('/') {
            Some((client, peer)) => (client.trim(), peer.trim()),
            None => (addresses.trim(), addresses.trim()),
        };
        if !address.contains(':') || !peer_address.contains(':') {
            return Err(anyhow!(
                "--peers item {item:?}: each address must be HOST:PORT"
            ));
        }
        let member = Member::of(address, peer_address);
        if members.insert(id, member).is_some() {
            return Err(anyhow!("--peers lists node {id} twice"));
        }
    }
    if members.is_empty() {
        return Err(anyhow!("--peers lists no nodes"));
    }
    Ok(members)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use crate::cli::Cli;

    #[test]
    fn the_snapshot_log_floor_is_bounded_by_the_log_that_forces_a_snapshot() {
        let parse = |mib: &str| {
            Cli::try_parse_from(["stockraft", "serve", "--snapshot-log-floor-mib", mib])
        };
        assert!(parse("0").is_ok());
        assert!(parse("256").is_ok());
        let error = parse("257")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(error.contains("--snapshot-log-floor-mib"), "{error}");
        assert!(error.contains("0..=256"), "{error}");
    }
}
