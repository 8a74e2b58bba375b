//! The server process: storage, the replication thread, and the gRPC
//! services around them; the I/O shell over `replica`.
//!
//! Start-up and shutdown:
//! - `startup.rs`: [`serve`], the steps in order: huge pages off
//!   ([`huge_pages`]), the exposure check, tokens, the data dir, the
//!   replica (a single voter elects itself at once), the replication
//!   thread ([`node`]), the listeners.
//! - `data_dir.rs`: opening the data dir; a damaged one rebuilt from the
//!   peers ([`rebuild`]), a brand-new one bootstrapped.
//! - `servers.rs`: the client port (`stockraft.v1.Inventory` and
//!   `Cluster`, health, reflection), the peer port, and shutdown: health
//!   turns NOT_SERVING, calls in flight get a grace period, then the
//!   replication thread finishes its batch (durable and answered) and
//!   stops.
//!
//! The rest, one concept per module: the services ([`inventory_service`],
//! with its metric handles, [`cluster_service`], [`peer_service`]), what
//! guards them ([`auth`], [`incoming`], [`identity`]), what they share
//! ([`forward`], [`status`]), and the threads beside the replication thread
//! ([`snapshot_thread`], [`transport`]).

pub mod auth;
pub mod cluster_service;
mod data_dir;
pub mod forward;
pub(crate) mod huge_pages;
pub mod identity;
pub mod incoming;
pub mod inventory_service;
pub mod node;
pub mod peer_service;
pub(crate) mod rebuild;
mod servers;
pub(crate) mod snapshot_thread;
mod startup;
pub mod status;
pub mod transport;

use std::net::SocketAddr;
use std::path::PathBuf;

use thiserror::Error;

use crate::replica::{Fatal, Members, ReplicaConfig, StoreError};
use inventory_service::ApiConfig;

pub use startup::serve;

/// Everything `stockraft serve` can be told.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub node_id: u64,
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// Where Prometheus scrapes metrics; None to not serve them.
    pub metrics_listen: Option<SocketAddr>,
    /// Where other members' Raft traffic is served apart from clients;
    /// None: on `listen`.
    pub peer_listen: Option<SocketAddr>,
    /// The address clients and forwarding nodes use to reach this node
    /// (defaults to `listen`; set it when listening on 0.0.0.0).
    pub advertise: Option<String>,
    /// The address members send Raft traffic to (defaults to
    /// `peer_listen`, else `advertise`).
    pub advertise_peer: Option<String>,
    /// TLS on the client port (`--tls-cert`, `--tls-key`, `--client-ca`).
    pub client_tls: Option<crate::tls::ClientPortTls>,
    /// Mutual TLS between members (`--peer-cert`, `--peer-key`,
    /// `--peer-ca`), on the peer listener.
    pub peer_tls: Option<crate::tls::PeerTls>,
    /// Bearer tokens and their roles (`--tokens`); None: no token asked.
    pub tokens: Option<PathBuf>,
    /// Serve a non-loopback address without TLS or tokens (`--insecure`).
    pub insecure: bool,
    /// Most client connections open at once (at most
    /// [`crate::limits::CONNECTIONS_MAX`]).
    pub connections_max: usize,
    /// The members of a new cluster (`--peers`), the same list on every node.
    pub peers: Option<Members>,
    /// Any member of an existing cluster, to learn its members from
    /// (`--join`), for a node added with `stockraft cluster add`.
    pub join: Option<String>,
    /// How long a call may wait for a leader and retry through an election.
    pub leader_wait_ms: u64,
    pub tick_ms: u64,
    /// See `replica::clock` (`--max-clock-offset`).
    pub max_clock_offset_ms: u64,
    /// How long calls in flight may take to finish once shutdown begins.
    pub shutdown_grace_ms: u64,
    pub api: ApiConfig,
    pub replica: ReplicaConfig,
}

#[derive(Debug, Error)]
pub enum ServeError {
    #[error("cannot open the data dir")]
    Store(#[from] StoreError),
    #[error("cannot start the replica")]
    Replica(#[from] Fatal),
    #[error("cannot listen on {addr}: {error}")]
    Listen {
        addr: SocketAddr,
        error: std::io::Error,
    },
    #[error("cannot start the replication thread: {0}")]
    Thread(std::io::Error),
    #[error("cannot serve metrics: {0}")]
    Metrics(String),
    #[error("cannot build the reflection service: {0}")]
    Reflection(String),
    #[error("gRPC server failed")]
    Transport(#[from] tonic::transport::Error),
    #[error("{0}")]
    Config(String),
    #[error("cannot join through {addr}: {reason}")]
    Join { addr: String, reason: String },
    #[error("cannot keep this member's identity")]
    Identity(#[from] identity::IdentityError),
}
