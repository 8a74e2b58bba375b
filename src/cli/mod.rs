//! The `stockraft` command line: `serve`, and a client command for every
//! call of the public API.
//!
//! Client commands print a short human-readable answer, or with `--json` one
//! JSON object for scripts. Errors print the gRPC status code and the
//! server's message, and exit with status 1.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::{json, Value};

use stockraft::client::{self, parse_counter_arg};
use stockraft::limits;
use stockraft::proto::v1 as pb;
use stockraft::proto::v1::cluster_client::ClusterClient;
use stockraft::proto::v1::inventory_client::InventoryClient;
use stockraft::replica::membership::Member;
use stockraft::replica::{Members, ReplicaConfig};
use stockraft::server::inventory_service::ApiConfig;
use stockraft::server::ServeConfig;
use stockraft::tls::{ClientPortTls, ClientTls, KeyPair, PeerTls};

#[derive(Debug, Parser)]
#[command(
    name = "stockraft",
    version,
    about = "A Raft-replicated inventory reservation server",
    long_about = "A Raft-replicated inventory reservation server: per-SKU-per-node stock, \
                  atomic reserve / commit / release over gRPC.\n\n\
                  Run `stockraft serve` for a one-node server on 127.0.0.1:50051, then use the \
                  client commands against it."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a server node.
    Serve(Box<ServeArgs>),
    /// Hold stock for an order: `stockraft reserve ORDER-1 SKU-1@store-7:2 SKU-2@dc-1:1`.
    Reserve {
        /// The reservation id (your order or cart id).
        id: String,
        /// Lines as SKU@NODE:QTY.
        #[arg(required = true)]
        lines: Vec<String>,
        /// Time to live, e.g. 30s, 15m (default: the server's).
        #[arg(long, value_parser = parse_duration)]
        ttl: Option<Duration>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Consume a reservation's stock (the order shipped or was paid).
    Commit {
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Return a reservation's stock.
    Release {
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Move an open reservation's deadline to now + TTL.
    Extend {
        id: String,
        #[arg(long, value_parser = parse_duration)]
        ttl: Option<Duration>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show a reservation.
    Get {
        id: String,
        /// Read this node's applied state without a round to the leader.
        #[arg(long)]
        local: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Record a point-of-sale sale: SKU@NODE:QTY (never refused for lack of stock).
    Sell {
        line: String,
        /// Transaction id for exactly-once retries (default: a new random id).
        #[arg(long)]
        txn: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Change on_hand by a signed delta: SKU@NODE:DELTA.
    Adjust {
        line: String,
        #[arg(long, value_enum)]
        reason: Reason,
        #[arg(long)]
        txn: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Set on_hand (a count or WMS sync): SKU@NODE:ON_HAND.
    Set {
        line: String,
        /// Only if on_hand is still this value (compare-and-set).
        #[arg(long, allow_hyphen_values = true)]
        expected: Option<i64>,
        #[arg(long)]
        txn: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Set the safety stock kept back from sale: SKU@NODE:UNITS.
    Safety {
        line: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Drive a workload against a server or cluster and report throughput,
    /// latency, outcomes, and a verification of the final counters.
    Load(LoadArgs),
    /// Make a CA and the certificates a cluster runs TLS with: one per
    /// member (naming it, for mutual TLS between members; it serves the
    /// client port too) and one per client name.
    Certs(CertsArgs),
    /// Make a bearer token: prints the token (give it to the caller) and
    /// the line to add to the server's --tokens file (which keeps only its
    /// SHA-256).
    Token {
        /// read (availability and reservations), write (every change), or
        /// admin (write and the Cluster service).
        #[arg(long, value_parser = ["read", "write", "admin"])]
        role: String,
        /// Who it is for, kept beside it in the tokens file.
        #[arg(long, default_value = "")]
        name: String,
    },
    /// Exit 0 if the server reports SERVING on the gRPC health service
    /// (a leader is known and its log is applied), 1 otherwise.
    Health {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Cluster administration: status, add, remove, transfer-leader.
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show availability of SKUs, over all their nodes or the ones named.
    Avail {
        #[arg(required = true)]
        skus: Vec<String>,
        /// Only these nodes (repeat the flag for several).
        #[arg(long = "node")]
        nodes: Vec<String>,
        #[arg(long)]
        local: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Servers of the cluster: ADDR[,ADDR...].
    #[arg(
        long,
        env = "STOCKRAFT_SERVER",
        default_value = "127.0.0.1:50051",
        value_delimiter = ','
    )]
    pub server: Vec<String>,
    /// Where clients connect: `leader` (found through the servers given, as
    /// a leader-aware client does, and followed to a new leader when it
    /// stops answering) or `spread` (over the servers given in turn;
    /// followers forward writes to the leader).
    #[arg(long, default_value = "leader")]
    pub route: stockraft::load::Route,
    /// Connections (clients).
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// Operations each client keeps in flight.
    #[arg(long, default_value_t = 1)]
    pub in_flight: usize,
    /// How long to run, e.g. 30s, 5m.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// How many workload operations to run (instead of --duration).
    #[arg(long)]
    pub ops: Option<u64>,
    /// Workloads and weights: checkout, flash-sale, pos, browse, restock,
    /// e.g. checkout=70,browse=25,pos=5.
    #[arg(long, default_value = "checkout")]
    pub workload: String,
    /// Open loop: workload operations per second over all clients.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Use the bidirectional Stream call instead of unary calls.
    #[arg(long)]
    pub stream: bool,
    /// SKUs to seed and use.
    #[arg(long, default_value_t = 10_000)]
    pub skus: usize,
    /// Fulfilment nodes per SKU.
    #[arg(long, default_value_t = 4)]
    pub nodes: usize,
    /// Units seeded per (SKU, node).
    #[arg(long, default_value_t = 1_000_000)]
    pub stock: i64,
    /// Hot SKUs of the flash-sale workload.
    #[arg(long, default_value_t = 3)]
    pub hot_skus: usize,
    /// Units of each hot SKU (limited, so the sale sells out).
    #[arg(long, default_value_t = 1_000)]
    pub hot_stock: i64,
    /// Zipf exponent of SKU popularity (0 = uniform).
    #[arg(long, default_value_t = 1.0)]
    pub zipf: f64,
    /// Use the stock already there instead of seeding.
    #[arg(long)]
    pub no_seed: bool,
    /// Skip the final verification.
    #[arg(long)]
    pub no_verify: bool,
    /// TTL of the harness's reservations.
    #[arg(long, default_value = "30m", value_parser = parse_duration)]
    pub ttl: Duration,
    /// Deadline of one call.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Write the report as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write an HTML report with charts here.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// No progress line.
    #[arg(long)]
    pub quiet: bool,
    #[command(flatten)]
    pub security: SecurityArgs,
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Members, leader, term, commit and applied index of every node.
    Status {
        /// Also compare the state digests of the nodes.
        #[arg(long)]
        digest: bool,
    },
    /// Add a node as a voter; then start it with `--join` (any member).
    Add {
        node_id: u64,
        /// Where clients reach the new node (HOST:PORT).
        address: String,
        /// Where members reach it for Raft traffic, when it listens for
        /// peers on a port of its own (--peer-listen).
        #[arg(long)]
        peer_address: Option<String>,
    },
    /// Remove a node, then stop it. Removing the leader first hands
    /// leadership to the most caught-up other voter, which removes it.
    Remove { node_id: u64 },
    /// Hand leadership to another voter.
    TransferLeader { node_id: u64 },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Reason {
    Receive,
    ReturnRestock,
    Damage,
    Shrink,
    Correction,
}

#[derive(Debug, Args)]
pub struct CertsArgs {
    /// Where to write them (ca.pem, ca.key, member-ID.pem/.key,
    /// client-NAME.pem/.key).
    #[arg(long, default_value = "./stockraft-certs")]
    pub dir: PathBuf,
    /// Member ids to make certificates for: 1,2,3.
    #[arg(long, value_delimiter = ',', default_value = "1")]
    pub members: Vec<u64>,
    /// Host names and IP addresses in every member's certificate; {id} is
    /// the member's id (stockraft-{id}, say).
    #[arg(long, value_delimiter = ',', default_value = "localhost,127.0.0.1,::1")]
    pub hosts: Vec<String>,
    /// Client certificates to make, by name: ops,checkout.
    #[arg(long, value_delimiter = ',')]
    pub clients: Vec<String>,
    /// Sign with the CA already in --dir (for a member or client added
    /// later) instead of making a new one.
    #[arg(long)]
    pub add: bool,
}

#[derive(Debug, Args)]
pub struct ClientArgs {
    /// The server to call.
    #[arg(
        long,
        env = "STOCKRAFT_SERVER",
        default_value = "127.0.0.1:50051",
        global = true
    )]
    pub server: String,
    /// Print one JSON object instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// Give up on a call after this long.
    #[arg(long, default_value = "10s", value_parser = parse_duration, global = true)]
    pub timeout: Duration,
    #[command(flatten)]
    pub security: SecurityArgs,
}

/// TLS and token settings of a client (the CLI, `stockraft load`).
#[derive(Debug, Args)]
pub struct SecurityArgs {
    /// Call over TLS, trusting the server's certificate when this CA (PEM)
    /// signed it.
    #[arg(long, env = "STOCKRAFT_TLS_CA", global = true)]
    pub tls_ca: Option<PathBuf>,
    /// A client certificate (PEM) for servers that ask for one (with
    /// --tls-client-key and --tls-ca).
    #[arg(long, env = "STOCKRAFT_TLS_CLIENT_CERT", global = true, requires_all = ["tls_client_key", "tls_ca"])]
    pub tls_client_cert: Option<PathBuf>,
    /// The key of --tls-client-cert (PEM).
    #[arg(
        long,
        env = "STOCKRAFT_TLS_CLIENT_KEY",
        global = true,
        requires = "tls_client_cert"
    )]
    pub tls_client_key: Option<PathBuf>,
    /// The bearer token to call with, for servers started with --tokens.
    #[arg(long, env = "STOCKRAFT_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
}

impl SecurityArgs {
    /// TLS as the flags ask for it: None for plaintext.
    pub fn tls(&self) -> Result<Option<tonic::transport::ClientTlsConfig>> {
        let Some(ca) = &self.tls_ca else {
            return Ok(None);
        };
        let identity = match (&self.tls_client_cert, &self.tls_client_key) {
            (Some(cert), Some(key)) => Some(KeyPair {
                cert: cert.clone(),
                key: key.clone(),
            }),
            _ => None,
        };
        let tls = ClientTls {
            ca: ca.clone(),
            identity,
        };
        Ok(Some(tls.config()?))
    }

    pub fn bearer(&self) -> Result<client::Bearer> {
        Ok(client::Bearer::new(self.token.as_deref())?)
    }
}

impl ClientArgs {
    /// A channel to `address` with these settings.
    pub async fn channel_to(&self, address: &str) -> Result<tonic::transport::Channel> {
        let tls = self.security.tls()?;
        Ok(client::channel_with(address, self.timeout, tls).await?)
    }

    /// A channel to --server.
    pub async fn channel(&self) -> Result<tonic::transport::Channel> {
        self.channel_to(&self.server).await
    }

    /// A channel to `address` whose calls carry --token.
    pub async fn authed_to(&self, address: &str) -> Result<client::Authed> {
        let bearer = self.security.bearer()?;
        let channel = self.channel_to(address).await?;
        Ok(tonic::service::interceptor::InterceptedService::new(
            channel, bearer,
        ))
    }

    /// An Inventory client of --server.
    pub async fn connect(&self) -> Result<InventoryClient<client::Authed>> {
        Ok(InventoryClient::new(self.authed_to(&self.server).await?))
    }
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// This node's id in the cluster (a positive integer).
    #[arg(long, env = "STOCKRAFT_NODE_ID", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub node_id: u64,
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

fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .map_err(|e| format!("{text:?} is not a duration like 500ms, 30s, 15m, 24h: {e}"))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl ServeArgs {
    pub fn into_config(self) -> Result<ServeConfig> {
        let metrics_listen = match self.metrics_listen.as_str() {
            "off" | "" => None,
            text => Some(text.parse::<SocketAddr>().with_context(|| {
                format!("--metrics-listen {text:?} is not HOST:PORT or \"off\"")
            })?),
        };
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
        if self.election_ticks <= self.heartbeat_ticks {
            return Err(anyhow!(
                "--election-ticks must be greater than --heartbeat-ticks"
            ));
        }
        let mut replica = ReplicaConfig::new(self.node_id);
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
        let peers = match &self.peers {
            Some(text) => Some(parse_peers(text)?),
            None => None,
        };
        let client_tls = match (self.tls_cert, self.tls_key) {
            (Some(cert), Some(key)) => Some(ClientPortTls {
                server: KeyPair { cert, key },
                client_ca: self.client_ca,
            }),
            _ => None,
        };
        let peer_tls = match (self.peer_cert, self.peer_key, self.peer_ca) {
            (Some(cert), Some(key), Some(ca)) => Some(PeerTls {
                member: KeyPair { cert, key },
                ca,
            }),
            _ => None,
        };
        Ok(ServeConfig {
            client_tls,
            peer_tls,
            tokens: self.tokens,
            insecure: self.insecure,
            connections_max: self.connections_max as usize,
            advertise: self.advertise,
            peer_listen: self.peer_listen,
            advertise_peer: self.advertise_peer,
            peers,
            join: self.join,
            leader_wait_ms: millis(self.leader_wait),
            node_id: self.node_id,
            listen: self.listen,
            data_dir: self.data_dir,
            metrics_listen,
            tick_ms: millis(self.tick).max(1),
            max_clock_offset_ms: checked_clock_offset(self.max_clock_offset)?,
            shutdown_grace_ms: millis(self.shutdown_grace),
            api: ApiConfig {
                ttl_ms_default,
                ttl_ms_max,
            },
            replica,
        })
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

/// A random transaction id for commands run by hand.
fn new_txn_id() -> String {
    format!("cli-{:016x}", rand::random::<u64>())
}

fn outcome_name(outcome: i32) -> &'static str {
    pb::Outcome::try_from(outcome)
        .map(|o| o.as_str_name())
        .unwrap_or("UNKNOWN_OUTCOME")
}

fn level_json(level: &Option<pb::StockLevel>) -> Value {
    match level {
        Some(l) => json!({
            "on_hand": l.on_hand, "reserved": l.reserved,
            "safety_stock": l.safety_stock, "available": l.available,
        }),
        None => Value::Null,
    }
}

fn level_text(level: &Option<pb::StockLevel>, short: bool) -> String {
    match level {
        Some(l) => format!(
            "on_hand={} reserved={} safety_stock={} available={}{}",
            l.on_hand,
            l.reserved,
            l.safety_stock,
            l.available,
            if short {
                "  (SHORT: more promised than held)"
            } else {
                ""
            }
        ),
        None => String::new(),
    }
}

fn format_ms(ms: u64) -> String {
    if ms == 0 {
        return "-".into();
    }
    let time = std::time::UNIX_EPOCH + Duration::from_millis(ms);
    humantime::format_rfc3339_millis(time).to_string()
}

fn status_error(status: tonic::Status) -> anyhow::Error {
    // What a plaintext call to a TLS port gets back: the server's TLS
    // record read as HTTP/2. Say what it most likely means.
    let hint = if status.message().contains("h2 protocol error") {
        " (does the server use TLS? then pass --tls-ca with its CA certificate)"
    } else {
        ""
    };
    anyhow!(
        "{}: {}{hint}",
        stockraft::server::status::code_label(status.code()),
        status.message()
    )
}

/// Runs a client command and prints its answer.
pub async fn run_client(command: Command) -> Result<()> {
    match command {
        Command::Serve(_) => Err(anyhow!("serve is not a client command")),
        Command::Reserve {
            id,
            lines,
            ttl,
            client,
        } => {
            let mut parsed = Vec::new();
            for line in &lines {
                let c = parse_counter_arg(line)?;
                parsed.push(pb::Line {
                    sku: c.sku,
                    node: c.node,
                    qty: c.number,
                });
            }
            let mut api = client.connect().await?;
            let r = api
                .reserve(pb::ReserveRequest {
                    reservation_id: id.clone(),
                    lines: parsed,
                    ttl_ms: ttl.map(millis).unwrap_or(0),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            let shortages: Vec<Value> = r
                .shortages
                .iter()
                .map(|s| json!({"sku": s.sku, "node": s.node, "requested": s.requested, "available": s.available}))
                .collect();
            if client.json {
                println!(
                    "{}",
                    json!({"reservation_id": id, "outcome": outcome_name(r.outcome), "expires_at_ms": r.expires_at_ms, "shortages": shortages})
                );
            } else {
                if r.expires_at_ms == 0 {
                    println!("{id}: {}", outcome_name(r.outcome));
                } else {
                    println!(
                        "{id}: {} (expires {})",
                        outcome_name(r.outcome),
                        format_ms(r.expires_at_ms)
                    );
                }
                for s in &r.shortages {
                    println!(
                        "  short: {}@{} requested {} available {}",
                        s.sku, s.node, s.requested, s.available
                    );
                }
            }
            Ok(())
        }
        Command::Commit { id, client } => {
            let mut api = client.connect().await?;
            let r = api
                .commit(pb::CommitRequest {
                    reservation_id: id.clone(),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            print_outcome(&client, &id, r.outcome);
            Ok(())
        }
        Command::Release { id, client } => {
            let mut api = client.connect().await?;
            let r = api
                .release(pb::ReleaseRequest {
                    reservation_id: id.clone(),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            print_outcome(&client, &id, r.outcome);
            Ok(())
        }
        Command::Extend { id, ttl, client } => {
            let mut api = client.connect().await?;
            let r = api
                .extend(pb::ExtendRequest {
                    reservation_id: id.clone(),
                    ttl_ms: ttl.map(millis).unwrap_or(0),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            if client.json {
                println!(
                    "{}",
                    json!({"reservation_id": id, "outcome": outcome_name(r.outcome), "expires_at_ms": r.expires_at_ms})
                );
            } else {
                println!(
                    "{id}: {} (expires {})",
                    outcome_name(r.outcome),
                    format_ms(r.expires_at_ms)
                );
            }
            Ok(())
        }
        Command::Get { id, local, client } => {
            let mut api = client.connect().await?;
            let r = api
                .get_reservation(pb::GetReservationRequest {
                    reservation_id: id.clone(),
                    consistency: consistency(local),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            let state = pb::ReservationState::try_from(r.state)
                .map(|s| s.as_str_name().trim_start_matches("RESERVATION_STATE_"))
                .unwrap_or("UNKNOWN");
            if client.json {
                let lines: Vec<Value> = r
                    .lines
                    .iter()
                    .map(|l| json!({"sku": l.sku, "node": l.node, "qty": l.qty}))
                    .collect();
                println!(
                    "{}",
                    json!({"reservation_id": id, "outcome": outcome_name(r.outcome), "state": state, "lines": lines,
                        "created_at_ms": r.created_at_ms, "expires_at_ms": r.expires_at_ms, "finished_at_ms": r.finished_at_ms})
                );
            } else if r.outcome == pb::Outcome::NotFound as i32 {
                println!("{id}: NOT_FOUND");
            } else {
                println!(
                    "{id}: {state} (created {}, expires {}, finished {})",
                    format_ms(r.created_at_ms),
                    format_ms(r.expires_at_ms),
                    format_ms(r.finished_at_ms)
                );
                for l in &r.lines {
                    println!("  {}@{}: {}", l.sku, l.node, l.qty);
                }
            }
            Ok(())
        }
        Command::Sell { line, txn, client } => {
            let c = parse_counter_arg(&line)?;
            let txn_id = txn.unwrap_or_else(new_txn_id);
            let mut api = client.connect().await?;
            let r = api
                .sell(pb::SellRequest {
                    txn_id: txn_id.clone(),
                    sku: c.sku.clone(),
                    node: c.node.clone(),
                    qty: c.number,
                })
                .await
                .map_err(status_error)?
                .into_inner();
            print_level(
                &client, &txn_id, &c.sku, &c.node, r.outcome, &r.level, r.short,
            );
            Ok(())
        }
        Command::Adjust {
            line,
            reason,
            txn,
            client,
        } => {
            let c = parse_counter_arg(&line)?;
            let txn_id = txn.unwrap_or_else(new_txn_id);
            let reason = match reason {
                Reason::Receive => pb::AdjustReason::Receive,
                Reason::ReturnRestock => pb::AdjustReason::ReturnRestock,
                Reason::Damage => pb::AdjustReason::Damage,
                Reason::Shrink => pb::AdjustReason::Shrink,
                Reason::Correction => pb::AdjustReason::Correction,
            };
            let mut api = client.connect().await?;
            let r = api
                .adjust(pb::AdjustRequest {
                    txn_id: txn_id.clone(),
                    sku: c.sku.clone(),
                    node: c.node.clone(),
                    delta: c.number,
                    reason: reason as i32,
                })
                .await
                .map_err(status_error)?
                .into_inner();
            print_level(
                &client, &txn_id, &c.sku, &c.node, r.outcome, &r.level, r.short,
            );
            Ok(())
        }
        Command::Set {
            line,
            expected,
            txn,
            client,
        } => {
            let c = parse_counter_arg(&line)?;
            let txn_id = txn.unwrap_or_else(new_txn_id);
            let mut api = client.connect().await?;
            let r = api
                .set_on_hand(pb::SetOnHandRequest {
                    txn_id: txn_id.clone(),
                    sku: c.sku.clone(),
                    node: c.node.clone(),
                    on_hand: c.number,
                    expected_on_hand: expected,
                })
                .await
                .map_err(status_error)?
                .into_inner();
            print_level(
                &client, &txn_id, &c.sku, &c.node, r.outcome, &r.level, r.short,
            );
            Ok(())
        }
        Command::Safety { line, client } => {
            let c = parse_counter_arg(&line)?;
            let mut api = client.connect().await?;
            let r = api
                .set_safety_stock(pb::SetSafetyStockRequest {
                    sku: c.sku.clone(),
                    node: c.node.clone(),
                    safety_stock: c.number,
                })
                .await
                .map_err(status_error)?
                .into_inner();
            print_level(&client, "-", &c.sku, &c.node, r.outcome, &r.level, r.short);
            Ok(())
        }
        Command::Cluster { command, client } => run_cluster(command, client).await,
        Command::Load(args) => run_load(args).await,
        Command::Token { role, name } => {
            if name.chars().any(char::is_whitespace) {
                return Err(anyhow!("--name: one word, no spaces"));
            }
            let token = stockraft::server::auth::new_token();
            println!("token: {token}");
            let hash = stockraft::server::auth::hash_hex(&token);
            println!("tokens file line: {role} {hash} {name}");
            Ok(())
        }
        Command::Certs(args) => {
            if args.members.contains(&0) {
                return Err(anyhow!("--members: ids are positive integers"));
            }
            let plan = stockraft::certs::Plan {
                dir: args.dir,
                members: args.members,
                hosts: args.hosts,
                clients: args.clients,
                add: args.add,
            };
            for path in stockraft::certs::make(&plan)? {
                println!("{}", path.display());
            }
            Ok(())
        }
        Command::Health { client } => {
            use tonic_health::pb::health_check_response::ServingStatus;
            let channel = client.channel().await?;
            let response = tonic_health::pb::health_client::HealthClient::new(channel)
                .check(tonic_health::pb::HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            let serving = response.status == ServingStatus::Serving as i32;
            let name = ServingStatus::try_from(response.status)
                .map(|s| s.as_str_name())
                .unwrap_or("UNKNOWN");
            if client.json {
                println!("{}", json!({"status": name}));
            } else {
                println!("{name}");
            }
            if !serving {
                return Err(anyhow!("the server is not serving ({name})"));
            }
            Ok(())
        }
        Command::Avail {
            skus,
            nodes,
            local,
            client,
        } => {
            let mut api = client.connect().await?;
            let r = api
                .get_availability(pb::GetAvailabilityRequest {
                    skus,
                    nodes,
                    consistency: consistency(local),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            if client.json {
                let skus: Vec<Value> = r
                    .skus
                    .iter()
                    .map(|s| {
                        let nodes: Vec<Value> = s
                            .nodes
                            .iter()
                            .map(|n| {
                                json!({"node": n.node, "on_hand": n.on_hand, "reserved": n.reserved,
                                "safety_stock": n.safety_stock, "available": n.available})
                            })
                            .collect();
                        json!({"sku": s.sku, "total_available": s.total_available, "nodes": nodes})
                    })
                    .collect();
                println!(
                    "{}",
                    json!({"skus": skus, "applied_index": r.applied_index})
                );
            } else {
                for s in &r.skus {
                    println!("{}: total_available={}", s.sku, s.total_available);
                    for n in &s.nodes {
                        println!(
                            "  {:<20} on_hand={:<6} reserved={:<6} safety_stock={:<6} available={}",
                            n.node, n.on_hand, n.reserved, n.safety_stock, n.available
                        );
                    }
                }
            }
            Ok(())
        }
    }
}

fn consistency(local: bool) -> i32 {
    if local {
        pb::Consistency::Local as i32
    } else {
        pb::Consistency::Linearizable as i32
    }
}

fn print_outcome(client: &ClientArgs, id: &str, outcome: i32) {
    if client.json {
        println!(
            "{}",
            json!({"reservation_id": id, "outcome": outcome_name(outcome)})
        );
    } else {
        println!("{id}: {}", outcome_name(outcome));
    }
}

fn print_level(
    client: &ClientArgs,
    txn_id: &str,
    sku: &str,
    node: &str,
    outcome: i32,
    level: &Option<pb::StockLevel>,
    short: bool,
) {
    if client.json {
        println!(
            "{}",
            json!({"txn_id": txn_id, "sku": sku, "node": node, "outcome": outcome_name(outcome),
                "level": level_json(level), "short": short})
        );
    } else {
        println!(
            "{sku}@{node}: {} {}",
            outcome_name(outcome),
            level_text(level, short)
        );
    }
}

async fn run_cluster(command: ClusterCommand, client: ClientArgs) -> Result<()> {
    let mut api = ClusterClient::new(client.authed_to(&client.server).await?);
    match command {
        ClusterCommand::Status { digest } => {
            let first = api
                .status(pb::ClusterStatusRequest {
                    with_digest: digest,
                })
                .await
                .map_err(status_error)?
                .into_inner();
            // Ask every member for its own view.
            let mut rows = Vec::new();
            for member in &first.members {
                let row = match client.authed_to(&member.address).await {
                    Ok(channel) => ClusterClient::new(channel)
                        .status(pb::ClusterStatusRequest {
                            with_digest: digest,
                        })
                        .await
                        .map(|r| r.into_inner())
                        .map_err(|s| s.message().to_string()),
                    Err(e) => Err(e.to_string()),
                };
                rows.push((member.clone(), row));
            }
            if client.json {
                let nodes: Vec<Value> = rows
                    .iter()
                    .map(|(m, row)| match row {
                        Ok(s) => json!({"node_id": m.node_id, "address": m.address, "member_role": m.role,
                            "reachable": true, "role": s.role, "leader_id": s.leader_id, "term": s.term,
                            "commit_index": s.commit_index, "applied_index": s.applied_index,
                            "last_index": s.last_index, "snapshot_index": s.snapshot_index, "ready": s.ready,
                            "state_digest": s.state_digest, "open_reservations": s.open_reservations}),
                        Err(e) => json!({"node_id": m.node_id, "address": m.address, "member_role": m.role,
                            "reachable": false, "error": e}),
                    })
                    .collect();
                println!(
                    "{}",
                    json!({"leader_id": first.leader_id, "term": first.term, "nodes": nodes})
                );
                return Ok(());
            }
            println!("leader: node {}  term: {}", first.leader_id, first.term);
            println!(
                "{:<6} {:<22} {:<8} {:<10} {:>6} {:>10} {:>10} {:>10} {}",
                "node",
                "address",
                "member",
                "role",
                "term",
                "commit",
                "applied",
                "snapshot",
                if digest { "digest" } else { "" }
            );
            for (m, row) in rows {
                match row {
                    Ok(s) => println!(
                        "{:<6} {:<22} {:<8} {:<10} {:>6} {:>10} {:>10} {:>10} {}",
                        m.node_id,
                        m.address,
                        m.role,
                        s.role,
                        s.term,
                        s.commit_index,
                        s.applied_index,
                        s.snapshot_index,
                        if digest {
                            format!("{:016x}", s.state_digest)
                        } else {
                            String::new()
                        }
                    ),
                    Err(e) => println!(
                        "{:<6} {:<22} {:<8} unreachable: {e}",
                        m.node_id, m.address, m.role
                    ),
                }
            }
            Ok(())
        }
        ClusterCommand::Add {
            node_id,
            address,
            peer_address,
        } => {
            let r = api
                .add_member(pb::AddMemberRequest {
                    node_id,
                    address,
                    peer_address: peer_address.unwrap_or_default(),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            print_members(&client, &r);
            Ok(())
        }
        ClusterCommand::Remove { node_id } => {
            let r = api
                .remove_member(pb::RemoveMemberRequest { node_id })
                .await
                .map_err(status_error)?
                .into_inner();
            print_members(&client, &r);
            Ok(())
        }
        ClusterCommand::TransferLeader { node_id } => {
            let r = api
                .transfer_leader(pb::TransferLeaderRequest { node_id })
                .await
                .map_err(status_error)?
                .into_inner();
            if client.json {
                println!("{}", json!({"leader_id": r.leader_id, "term": r.term}));
            } else {
                println!("leader: node {} (term {})", r.leader_id, r.term);
            }
            Ok(())
        }
    }
}

fn print_members(client: &ClientArgs, r: &pb::MembershipResponse) {
    if client.json {
        let members: Vec<Value> = r
            .members
            .iter()
            .map(|m| json!({"node_id": m.node_id, "address": m.address, "role": m.role}))
            .collect();
        let mut out = json!({"members": members, "index": r.index});
        if r.leadership_moved_to != 0 {
            out["leadership_moved_to"] = json!(r.leadership_moved_to);
        }
        println!("{out}");
        return;
    }
    if r.leadership_moved_to != 0 {
        println!(
            "the node removed was leading: it handed leadership to node {} first, which removed it",
            r.leadership_moved_to
        );
    }
    for m in &r.members {
        println!("node {:<4} {:<24} {}", m.node_id, m.address, m.role);
    }
}

async fn run_load(args: LoadArgs) -> Result<()> {
    use stockraft::load;
    let mix = load::workload::parse_mix(&args.workload).map_err(|e| anyhow!("--workload: {e}"))?;
    if args.duration.is_none() && args.ops.is_none() {
        return Err(anyhow!("give --duration (e.g. 30s) or --ops"));
    }
    if args.rate.is_some_and(|r| r <= 0.0 || !r.is_finite()) {
        return Err(anyhow!(
            "--rate must be a positive number of operations per second"
        ));
    }
    if !(0.0..=10.0).contains(&args.zipf) {
        return Err(anyhow!("--zipf must be between 0 and 10"));
    }
    if args.stock < 0 || args.hot_stock < 0 {
        return Err(anyhow!("--stock and --hot-stock must not be negative"));
    }
    let config = load::LoadConfig {
        servers: args.server,
        route: args.route,
        clients: args.clients,
        in_flight: args.in_flight,
        duration: args.duration,
        ops: args.ops,
        mix,
        rate: args.rate,
        skus: args.skus,
        nodes: args.nodes,
        stock: args.stock,
        hot_skus: args.hot_skus,
        hot_stock: args.hot_stock,
        zipf: args.zipf,
        seed: !args.no_seed,
        ttl_ms: millis(args.ttl),
        stream: args.stream,
        call_timeout: args.timeout,
        json: args.json.clone(),
        report: args.report.clone(),
        verify: !args.no_verify,
        run_id: format!("load-{:08x}", rand::random::<u32>()),
        progress: !args.quiet,
        tls: args.security.tls()?,
        bearer: args.security.bearer()?,
    };
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let outcome = load::run(config, interrupt).await?;
    print!("{}", load::report::text(&outcome));
    if let Some(path) = &args.json {
        std::fs::write(
            path,
            serde_json::to_string_pretty(&load::report::json(&outcome))?,
        )
        .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.report {
        std::fs::write(path, load::report::html(&outcome))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(reason) = outcome
        .verification
        .as_ref()
        .and_then(|v| v.unreadable.as_ref())
    {
        return Err(anyhow!(
            "verification not done: the counters could not be read back from any server given: {reason}"
        ));
    }
    if outcome
        .verification
        .as_ref()
        .is_some_and(|v| v.inconclusive())
    {
        return Err(anyhow!(
            "verification inconclusive: every counter was touched by a call whose outcome stayed unknown, so none could be checked"
        ));
    }
    if outcome.verification.as_ref().is_some_and(|v| !v.passed()) {
        return Err(anyhow!(
            "verification FAILED: the server's counters disagree with what the clients were told"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
