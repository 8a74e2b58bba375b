//! The server process: storage, the replication thread, and the gRPC
//! services around them.
//!
//! Start-up, in order:
//! 0. Turn transparent huge pages off for the process ([`huge_pages`]).
//! 1. Open the RocksDB store in the data dir; a brand-new one gets the
//!    initial membership (this node as the single voter).
//! 2. Load the latest snapshot, then let raft-rs replay the committed log
//!    tail (in the replication thread's first turn).
//! 3. Start the replication thread; a single voter elects itself at once.
//! 4. Serve gRPC: `stockraft.v1.Inventory`, `grpc.health.v1.Health`
//!    (SERVING once a leader is known and the log present at start-up is
//!    applied) and server reflection. Serve Prometheus metrics.
//!
//! Shutdown (Ctrl-C or SIGTERM), in order: health turns NOT_SERVING, the
//! gRPC server stops accepting and waits for calls in flight, then the
//! replication thread finishes its batch (durable and answered) and stops.

pub mod auth;
pub mod cluster_service;
pub mod forward;
pub mod huge_pages;
pub mod identity;
pub mod incoming;
pub mod inventory_service;
pub mod node;
pub mod peer_service;
pub mod rebuild;
pub mod snapshot_thread;
pub mod status;
pub mod transport;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tonic::transport::ClientTlsConfig;
use tonic_health::ServingStatus;

use crate::limits::{PEER_MESSAGE_BYTES_MAX, REQUEST_BYTES_MAX};
use crate::proto::internal::peer_server::PeerServer;
use crate::proto::v1::cluster_client::ClusterClient;
use crate::proto::v1::cluster_server::ClusterServer;
use crate::proto::v1::inventory_server::InventoryServer;
use crate::replica::clock::PeerClocks;
use crate::replica::membership::Member;
use crate::replica::{
    membership, tracing_logger, Fatal, Members, Replica, ReplicaConfig, StoreError,
};
use crate::storage::RocksStore;
use cluster_service::ClusterService;
use forward::Forwarder;
use inventory_service::{ApiConfig, InventoryService};
use node::{Node, NodeConfig};
use peer_service::PeerService;
use transport::{Faults, GrpcTransport};

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

const INVENTORY_SERVICE: &str = "stockraft.v1.Inventory";

/// How long the peer listener (`--peer-listen`) gets to close its
/// connections once the node has stopped.
const PEERS_STOP_WAIT: Duration = Duration::from_secs(1);

/// Runs a node until `shutdown` completes, then stops it cleanly.
pub async fn serve(
    config: ServeConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    if let Some(addr) = config.metrics_listen {
        install_metrics(addr)?;
    }
    if !huge_pages::disable() {
        tracing::warn!(
            "cannot turn transparent huge pages off for this process; \
             new memory may stall the replication thread while the kernel zeroes it"
        );
    }

    check_exposure(&config)?;
    let tokens = match &config.tokens {
        Some(path) => {
            let loaded = auth::Tokens::load(path).map_err(|e| ServeError::Config(e.to_string()))?;
            tracing::info!(tokens = loaded.len(), "calls need a token");
            let shared = Arc::new(arc_swap::ArcSwap::from_pointee(loaded));
            auth::reload_on_sighup(path.clone(), shared.clone());
            Some(shared)
        }
        None => None,
    };
    let advertise = advertised(&config);
    let to_client_ports = client_port_tls(&config)?;
    let opening = std::time::Instant::now();
    let mut store = match RocksStore::open(&config.data_dir) {
        Ok(store) => {
            tracing::info!(
                elapsed_ms = opening.elapsed().as_millis() as u64,
                "data dir opened; log read back"
            );
            store
        }
        Err(StoreError::Corrupt(damage)) => {
            rebuild::rebuild(&config, &advertise, &damage, to_client_ports.as_ref()).await?
        }
        Err(e) => return Err(e.into()),
    };
    let identity = Arc::new(identity::Identity::open(
        &config.data_dir,
        store.is_fresh(),
    )?);
    if store.is_fresh() {
        bootstrap(&config, &advertise, to_client_ports.as_ref(), &mut store).await?;
    } else if config.peers.is_some() || config.join.is_some() {
        tracing::info!("data dir already holds a cluster's state; --peers and --join are ignored");
    }
    let initial =
        raft::Storage::initial_state(&store).map_err(|e| ServeError::Config(e.to_string()))?;
    let startup_commit_index = initial.hard_state.commit;
    let voters = initial.conf_state.voters;
    let logger = tracing_logger();
    let mut replica = Replica::new(config.replica.clone(), store, &logger)?;
    if voters == [config.node_id] {
        // A single voter need not wait out an election timeout. (Alone, it
        // has no one to send messages to.)
        replica.campaign(&mut crate::replica::Output::default())?;
    }
    let faults = Faults::default();
    let runtime = tokio::runtime::Handle::current();
    let node_id = config.node_id;
    let transport_faults = faults.clone();
    let peer_tls = config.peer_tls.clone().map(Arc::new);
    let transport_tls = peer_tls.clone();
    let transport_identity = identity.clone();
    let clocks = Arc::new(std::sync::Mutex::new(PeerClocks::default()));
    let transport_clocks = clocks.clone();
    let node = Node::start(
        replica,
        move |handle| {
            GrpcTransport::new(
                node_id,
                runtime,
                handle,
                transport_faults,
                transport_tls,
                transport_identity,
                transport_clocks,
            )
        },
        NodeConfig {
            tick_ms: config.tick_ms,
            startup_commit_index,
            queue_max: crate::limits::QUEUE_REQUESTS_MAX,
            clocks: Some((clocks.clone(), config.max_clock_offset_ms)),
        },
        Some(tokio::runtime::Handle::current()),
    )
    .map_err(ServeError::Thread)?;
    let handle = node.handle();
    let forwarder = Arc::new(Forwarder::new(
        handle.clone(),
        Duration::from_millis(config.leader_wait_ms),
        to_client_ports.clone(),
    ));

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|error| ServeError::Listen {
            addr: config.listen,
            error,
        })?;
    let local = listener.local_addr().map_err(|error| ServeError::Listen {
        addr: config.listen,
        error,
    })?;
    let peer_listener = match config.peer_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|error| ServeError::Listen { addr, error })?,
        ),
        None => None,
    };

    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_service_status("", ServingStatus::NotServing)
        .await;
    health
        .set_service_status(INVENTORY_SERVICE, ServingStatus::NotServing)
        .await;
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| ServeError::Reflection(e.to_string()))?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| ServeError::Reflection(e.to_string()))?;

    let inventory = InventoryServer::new(InventoryService::new(
        handle.clone(),
        config.api,
        forwarder.clone(),
    ))
    .max_decoding_message_size(REQUEST_BYTES_MAX);
    let cluster = ClusterServer::new(ClusterService::new(handle.clone(), forwarder.clone()));
    let peer = PeerServer::new(PeerService::new(
        handle.clone(),
        faults.clone(),
        config.peer_tls.is_some(),
        identity,
        clocks,
    ))
    .max_decoding_message_size(PEER_MESSAGE_BYTES_MAX);

    // Health follows the replica: SERVING when it can answer.
    let (stop_health_tx, mut stop_health_rx) = tokio::sync::watch::channel(false);
    let health_task = {
        let health = health.clone();
        let handle = handle.clone();
        let mut status = handle.status_watch();
        tokio::spawn(async move {
            let mut serving = None;
            loop {
                let now = handle.is_ready();
                if serving != Some(now) {
                    let value = if now {
                        ServingStatus::Serving
                    } else {
                        ServingStatus::NotServing
                    };
                    health.set_service_status("", value).await;
                    health.set_service_status(INVENTORY_SERVICE, value).await;
                    if now {
                        tracing::info!("ready: serving requests");
                    }
                    serving = Some(now);
                }
                tokio::select! {
                    changed = status.changed() => if changed.is_err() { return },
                    _ = stop_health_rx.changed() => return,
                }
            }
        })
    };

    tracing::info!(node_id = config.node_id, listen = %local, "stockraft listening");
    println!("stockraft node {} listening on {local}", config.node_id);

    let (signalled_tx, signalled_rx) = tokio::sync::oneshot::channel::<()>();
    let shutdown_signal = {
        let health = health.clone();
        async move {
            shutdown.await;
            let _ = signalled_tx.send(());
            tracing::info!("shutting down: refusing new calls, finishing calls in flight");
            let _ = stop_health_tx.send(true);
            health
                .set_service_status("", ServingStatus::NotServing)
                .await;
            health
                .set_service_status(INVENTORY_SERVICE, ServingStatus::NotServing)
                .await;
        }
    };
    let incoming = incoming::accept(listener, config.connections_max);
    // Peers on the client port unless they have one of their own.
    let (peer_here, peers_apart) = match peer_listener {
        Some(listener) => (None, Some((listener, peer))),
        None => (Some(peer), None),
    };
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = &config.client_tls {
        let members_ca = config.peer_tls.as_ref().map(|p| p.ca.as_path());
        let tls = tls
            .server_config(members_ca)
            .map_err(|e| ServeError::Config(e.to_string()))?;
        builder = builder.tls_config(tls)?;
    }
    let router = builder
        .layer(auth::AuthLayer::new(tokens))
        .max_concurrent_streams(Some(crate::limits::STREAMS_PER_CONNECTION_MAX))
        .timeout(Duration::from_secs(30))
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(inventory)
        .add_service(cluster)
        .add_optional_service(peer_here);
    #[cfg(feature = "fault-injection")]
    let router = router.add_service(
        crate::proto::internal::fault_injection_server::FaultInjectionServer::new(
            peer_service::FaultService::new(faults.clone()),
        ),
    );
    let (peers_stop_tx, peers_stop_rx) = tokio::sync::oneshot::channel::<()>();
    let peer_tls = match &config.peer_tls {
        Some(tls) => Some(
            tls.server_config()
                .map_err(|e| ServeError::Config(e.to_string()))?,
        ),
        None => None,
    };
    let peer_server = peers_apart.map(|(listener, peer)| {
        let stop = async move {
            let _ = peers_stop_rx.await;
        };
        tokio::spawn(serve_peers(listener, peer, peer_tls, faults.clone(), stop))
    });
    let server = router.serve_with_incoming_shutdown(incoming, shutdown_signal);
    // Calls in flight get a grace period to finish; then connections that
    // are still open (a client that ignores GOAWAY) are dropped.
    let grace = Duration::from_millis(config.shutdown_grace_ms);
    let grace_over = async move {
        if signalled_rx.await.is_ok() {
            tokio::time::sleep(grace).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    let result = tokio::select! {
        result = server => result,
        () = grace_over => {
            tracing::warn!("calls still open {} ms after shutdown began; closing them", grace.as_millis());
            Ok(())
        }
    };
    let _ = health_task.await;
    // Raft traffic goes on until the node stops: the followers' last
    // answers and the leader's last commits are what the grace was for.
    node.stop();
    let _ = peers_stop_tx.send(());
    if let Some(mut peer_server) = peer_server {
        // Other members hold their Raft streams open for as long as they
        // run: a graceful stop would wait for them forever. They are told
        // (GOAWAY) and given a moment; then the listener is dropped.
        match tokio::time::timeout(PEERS_STOP_WAIT, &mut peer_server).await {
            Ok(Ok(Err(error))) => {
                tracing::warn!("the peer listener stopped with an error: {error}");
            }
            Ok(_) => {}
            Err(_) => peer_server.abort(),
        }
    }
    tracing::info!("stopped");
    result.map_err(ServeError::from)
}

/// Serves other members' Raft traffic on a listener of its own
/// (`--peer-listen`) until `stop` completes.
async fn serve_peers(
    listener: tokio::net::TcpListener,
    peer: PeerServer<PeerService>,
    tls: Option<tonic::transport::ServerTlsConfig>,
    faults: Faults,
    stop: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        builder = builder.tls_config(tls)?;
    }
    let router = builder
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .add_service(peer);
    #[cfg(feature = "fault-injection")]
    let router = router.add_service(
        crate::proto::internal::fault_injection_server::FaultInjectionServer::new(
            peer_service::FaultService::new(faults),
        ),
    );
    #[cfg(not(feature = "fault-injection"))]
    drop(faults);
    router
        .serve_with_incoming_shutdown(incoming::accept(listener, incoming::CONNECTIONS_MAX), stop)
        .await
}

fn install_metrics(addr: SocketAddr) -> Result<(), ServeError> {
    let latency_buckets = [
        0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
        2.5,
    ];
    let size_buckets = [
        1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0,
    ];
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets(&latency_buckets)
        .and_then(|b| {
            b.set_buckets_for_metric(
                metrics_exporter_prometheus::Matcher::Full("stockraft_batch_commands".into()),
                &size_buckets,
            )
        })
        .and_then(|b| {
            b.set_buckets_for_metric(
                metrics_exporter_prometheus::Matcher::Full("stockraft_peer_batch_messages".into()),
                &size_buckets,
            )
        })
        .and_then(|b| b.install())
        .map_err(|e| ServeError::Metrics(e.to_string()))
}

/// Refuses to serve a non-loopback address open to anyone: clients need
/// TLS and tokens there, members mutual TLS on a port of their own.
/// `--insecure` overrides, and says so at every start.
fn check_exposure(config: &ServeConfig) -> Result<(), ServeError> {
    let mut missing = Vec::new();
    if !config.listen.ip().is_loopback() {
        if config.client_tls.is_none() {
            missing.push("--tls-cert and --tls-key (clients over TLS)");
        }
        if config.tokens.is_none() {
            missing.push("--tokens (who may call what)");
        }
        let clustered = config.peers.is_some() || config.join.is_some();
        if clustered && config.peer_listen.is_none() {
            missing.push("--peer-listen (members apart from clients)");
        }
    }
    let peers_exposed = config
        .peer_listen
        .is_some_and(|addr| !addr.ip().is_loopback());
    if peers_exposed && config.peer_tls.is_none() {
        missing.push("--peer-cert, --peer-key and --peer-ca (mutual TLS between members)");
    }
    if missing.is_empty() {
        return Ok(());
    }
    if config.insecure {
        tracing::warn!(
            missing = ?missing,
            "--insecure: serving a non-loopback address without all of its protections"
        );
        return Ok(());
    }
    Err(ServeError::Config(format!(
        "refusing to serve {} without {}; `stockraft certs` makes certificates and \
         `stockraft token` tokens (see the README's Security section), or pass --insecure \
         on a network you trust",
        config.listen,
        missing.join(", ")
    )))
}

/// What this node presents and trusts when it calls another member's
/// client port (forwarding, joining, rebuilding): its member certificate
/// and the members' CA, when the client ports serve TLS.
fn client_port_tls(config: &ServeConfig) -> Result<Option<ClientTlsConfig>, ServeError> {
    if config.client_tls.is_none() {
        return Ok(None);
    }
    let Some(peer_tls) = &config.peer_tls else {
        return Ok(None);
    };
    let tls = peer_tls
        .to_client_port()
        .map_err(|e| ServeError::Config(e.to_string()))?;
    Ok(Some(tls))
}

/// This node's addresses, as it tells the others.
fn advertised(config: &ServeConfig) -> Member {
    let address = config
        .advertise
        .clone()
        .unwrap_or_else(|| config.listen.to_string());
    let peer_address = match (&config.advertise_peer, config.peer_listen) {
        (Some(peer), _) => peer.clone(),
        (None, Some(listen)) => listen.to_string(),
        (None, None) => address.clone(),
    };
    Member {
        address,
        peer_address,
    }
}

/// Writes the first Raft state of a brand-new data dir.
///
/// - `--peers`: a new cluster; every node starts with the same voters.
/// - `--join ADDR`: a node added to a running cluster; it learns the
///   members from ADDR and starts with no vote, waiting for the leader to
///   send it a snapshot.
/// - neither: a new one-node cluster.
async fn bootstrap(
    config: &ServeConfig,
    advertise: &Member,
    tls: Option<&ClientTlsConfig>,
    store: &mut RocksStore,
) -> Result<(), ServeError> {
    let id = config.node_id;
    if let Some(peers) = &config.peers {
        if !peers.contains_key(&id) {
            return Err(ServeError::Config(format!(
                "--peers does not list this node's id {id}"
            )));
        }
        let first = membership::bootstrap(peers).map_err(|e| ServeError::Config(e.to_string()))?;
        store.bootstrap(&first)?;
        tracing::info!(node_id = id, voters = ?first.conf_state.voters, "created a new cluster");
        return Ok(());
    }
    if let Some(addr) = &config.join {
        let join_error = |reason: String| ServeError::Join {
            addr: addr.clone(),
            reason,
        };
        let channel = crate::client::channel_with(addr, Duration::from_secs(5), tls.cloned())
            .await
            .map_err(|e| join_error(e.to_string()))?;
        let status = ClusterClient::new(channel)
            .status(crate::proto::v1::ClusterStatusRequest { with_digest: false })
            .await
            .map_err(|e| join_error(e.message().to_string()))?
            .into_inner();
        let mut members: Members = status
            .members
            .iter()
            .map(|m| (m.node_id, Member::of(&m.address, &m.peer_address)))
            .collect();
        members.insert(id, advertise.clone());
        let cluster_id = membership::cluster_id_from_hex(&status.cluster_id);
        // No log and no vote: this node waits for the leader to send it the
        // log (or a snapshot), which carries the membership.
        store.bootstrap_joining(&members, cluster_id.as_ref(), None)?;
        tracing::info!(node_id = id, through = %addr, "joining an existing cluster; waiting for the leader");
        return Ok(());
    }
    let first = membership::bootstrap(&[(id, advertise.clone())].into())
        .map_err(|e| ServeError::Config(e.to_string()))?;
    store.bootstrap(&first)?;
    tracing::info!(node_id = id, dir = %config.data_dir.display(), "created a new one-node cluster");
    Ok(())
}
