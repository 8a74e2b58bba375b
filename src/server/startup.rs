//! [`serve`]: a node's start-up, in order, up to its gRPC servers; and the
//! steps that prepare the process and start the replication thread.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tonic::transport::ClientTlsConfig;

use super::auth::{self, Tokens};
use super::forward::Forwarder;
use super::identity::Identity;
use super::node::{Node, NodeConfig};
use super::servers::{self, Listeners, Started};
use super::transport::{Faults, GrpcTransport, SharedClocks};
use super::{data_dir, huge_pages, ServeConfig, ServeError};
use crate::replica::clock::PeerClocks;
use crate::replica::membership::Member;
use crate::replica::{tracing_logger, Output, Replica};
use crate::storage::RocksStore;

/// Runs a node until `shutdown` completes, then stops it cleanly.
pub async fn serve(
    config: ServeConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    prepare_process(&config)?;
    let tokens = load_tokens(&config)?;
    let advertise = advertised(&config);
    let to_client_ports = client_port_tls(&config)?;
    let (store, identity) = data_dir::open(&config, &advertise, to_client_ports.as_ref()).await?;
    let (replica, startup_commit_index) = open_replica(&config, store)?;
    let faults = Faults::default();
    let clocks: SharedClocks = Arc::new(std::sync::Mutex::new(PeerClocks::default()));
    let node = start_node(
        &config,
        replica,
        startup_commit_index,
        &faults,
        &identity,
        &clocks,
    )?;
    let forwarder = Arc::new(Forwarder::new(
        node.handle(),
        Duration::from_millis(config.leader_wait_ms),
        to_client_ports.clone(),
    ));
    let listeners = Listeners::bind(&config).await?;
    let started = Started {
        node,
        forwarder,
        tokens,
        faults,
        identity,
        clocks,
    };
    servers::serve_until_shutdown(config, listeners, started, shutdown).await
}

/// Before anything is opened: metrics, huge pages off, and the refusal to
/// serve an exposed address unprotected.
fn prepare_process(config: &ServeConfig) -> Result<(), ServeError> {
    if let Some(addr) = config.metrics_listen {
        install_metrics(addr)?;
    }
    if !huge_pages::disable() {
        tracing::warn!(
            "cannot turn transparent huge pages off for this process; \
             new memory may stall the replication thread while the kernel zeroes it"
        );
    }
    check_exposure(config)
}

/// The bearer tokens (`--tokens`), reloaded on SIGHUP; None when calls
/// need no token.
fn load_tokens(config: &ServeConfig) -> Result<Option<Arc<ArcSwap<Tokens>>>, ServeError> {
    let Some(path) = &config.tokens else {
        return Ok(None);
    };
    let loaded = Tokens::load(path).map_err(|e| ServeError::Config(e.to_string()))?;
    tracing::info!(tokens = loaded.len(), "calls need a token");
    let shared = Arc::new(ArcSwap::from_pointee(loaded));
    auth::reload_on_sighup(path.clone(), shared.clone());
    Ok(Some(shared))
}

/// The replica over the opened store, and the commit index the log must
/// be replayed to before the node reports ready. A single voter campaigns
/// at once: it need not wait out an election timeout.
fn open_replica(
    config: &ServeConfig,
    store: RocksStore,
) -> Result<(Replica<RocksStore>, u64), ServeError> {
    let initial =
        raft::Storage::initial_state(&store).map_err(|e| ServeError::Config(e.to_string()))?;
    let startup_commit_index = initial.hard_state.commit;
    let voters = initial.conf_state.voters;
    let logger = tracing_logger();
    let mut replica = Replica::new(config.replica.clone(), store, &logger)?;
    if voters == [config.node_id] {
        // Alone, it has no one to send messages to.
        replica.campaign(&mut Output::default())?;
    }
    Ok((replica, startup_commit_index))
}

/// Starts the replication thread over `replica`, its messages to peers
/// carried by the gRPC transport, which shares the fault switches, the
/// identity and the peers' clocks with the peer service.
fn start_node(
    config: &ServeConfig,
    replica: Replica<RocksStore>,
    startup_commit_index: u64,
    faults: &Faults,
    identity: &Arc<Identity>,
    clocks: &SharedClocks,
) -> Result<Node, ServeError> {
    let runtime = tokio::runtime::Handle::current();
    let node_id = config.node_id;
    let transport_faults = faults.clone();
    let transport_tls = config.peer_tls.clone().map(Arc::new);
    let transport_identity = identity.clone();
    let transport_clocks = clocks.clone();
    Node::start(
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
    .map_err(ServeError::Thread)
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
