//! The gRPC servers a node runs once started: the client port (the public
//! services, health, reflection, and peers unless they have a port of
//! their own), the peer port (`--peer-listen`), and their shutdown.
//!
//! Shutdown, in order: health turns NOT_SERVING, the client port stops
//! accepting and gives calls in flight a grace period, the replication
//! thread finishes its batch (durable and answered) and stops, and then
//! the peer port closes.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tonic::transport::{Server, ServerTlsConfig};
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;
use tower::layer::util::{Identity as NoLayer, Stack};

use super::auth::{self, Tokens};
use super::cluster_service::ClusterService;
use super::forward::Forwarder;
use super::identity::Identity;
use super::inventory_service::InventoryService;
use super::node::{Node, NodeHandle};
use super::peer_service::PeerService;
use super::transport::{Faults, SharedClocks};
use super::{incoming, ServeConfig, ServeError};
use crate::limits::{PEER_MESSAGE_BYTES_MAX, REQUEST_BYTES_MAX};
use crate::proto::internal::peer_server::PeerServer;
use crate::proto::v1::cluster_server::ClusterServer;
use crate::proto::v1::inventory_server::InventoryServer;

const INVENTORY_SERVICE: &str = "stockraft.v1.Inventory";
/// A health entry SERVING only on the member that leads and is ready:
/// clients find the leader with the standard health call (no token, no
/// Cluster role needed) and send their writes there, sparing a forward.
const LEADER_SERVICE: &str = "stockraft.v1.Leader";

/// How long the peer listener (`--peer-listen`) gets to close its
/// connections once the node has stopped.
const PEERS_STOP_WAIT: Duration = Duration::from_secs(1);

/// What start-up hands the servers: the running node and what its
/// services share with it.
pub(super) struct Started {
    pub(super) node: Node,
    pub(super) forwarder: Arc<Forwarder>,
    pub(super) tokens: Option<Arc<ArcSwap<Tokens>>>,
    pub(super) faults: Faults,
    pub(super) identity: Arc<Identity>,
    pub(super) clocks: SharedClocks,
}

/// The bound listeners: bound before serving, to fail fast on a taken
/// port and to learn the port bound.
pub(super) struct Listeners {
    client: TcpListener,
    local: SocketAddr,
    peer: Option<TcpListener>,
}

impl Listeners {
    pub(super) async fn bind(config: &ServeConfig) -> Result<Listeners, ServeError> {
        let client =
            TcpListener::bind(config.listen)
                .await
                .map_err(|error| ServeError::Listen {
                    addr: config.listen,
                    error,
                })?;
        let local = client.local_addr().map_err(|error| ServeError::Listen {
            addr: config.listen,
            error,
        })?;
        let peer = match config.peer_listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|error| ServeError::Listen { addr, error })?,
            ),
            None => None,
        };
        Ok(Listeners {
            client,
            local,
            peer,
        })
    }
}

/// Serves until `shutdown` completes, then stops the servers and the node
/// in the order the module's doc gives.
pub(super) async fn serve_until_shutdown(
    config: ServeConfig,
    listeners: Listeners,
    started: Started,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let handle = started.node.handle();
    let (health, health_service) = tonic_health::server::health_reporter();
    set_health(&health, ServingStatus::NotServing).await;
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
    let services = Services::new(&config, &handle, &started);
    let (stop_health_tx, stop_health_rx) = watch::channel(false);
    let health_task = tokio::spawn(follow_readiness(
        health.clone(),
        handle.clone(),
        handle.status_watch(),
        stop_health_rx,
    ));

    tracing::info!(node_id = config.node_id, listen = %listeners.local, "stockraft listening");
    println!(
        "stockraft node {} listening on {}",
        config.node_id, listeners.local
    );

    let (signalled_tx, signalled_rx) = oneshot::channel::<()>();
    let shutdown_signal = begin_shutdown(shutdown, signalled_tx, stop_health_tx, health.clone());
    let incoming = incoming::accept(listeners.client, config.connections_max);
    // Peers on the client port unless they have one of their own.
    let (peer_here, peers_apart) = match listeners.peer {
        Some(listener) => (None, Some((listener, services.peer))),
        None => (Some(services.peer), None),
    };
    let router = client_port(&config, started.tokens)?
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(services.inventory)
        .add_service(services.cluster)
        .add_optional_service(peer_here);
    #[cfg(feature = "fault-injection")]
    let router = router.add_service(
        crate::proto::internal::fault_injection_server::FaultInjectionServer::new(
            super::peer_service::FaultService::new(started.faults.clone()),
        ),
    );
    let (peers_stop_tx, peers_stop_rx) = oneshot::channel::<()>();
    let peer_server = spawn_peer_port(&config, peers_apart, &started.faults, peers_stop_rx)?;
    let server = router.serve_with_incoming_shutdown(incoming, shutdown_signal);
    let grace = Duration::from_millis(config.shutdown_grace_ms);
    let result = serve_with_grace(server, signalled_rx, grace).await;
    let _ = health_task.await;
    // Raft traffic goes on until the node stops: the followers' last
    // answers and the leader's last commits are what the grace was for.
    started.node.stop();
    stop_peer_port(peers_stop_tx, peer_server).await;
    tracing::info!("stopped");
    result.map_err(ServeError::from)
}

/// The services a node serves over the replication thread.
struct Services {
    inventory: InventoryServer<InventoryService>,
    cluster: ClusterServer<ClusterService>,
    peer: PeerServer<PeerService>,
}

impl Services {
    fn new(config: &ServeConfig, handle: &NodeHandle, started: &Started) -> Services {
        let inventory = InventoryServer::new(InventoryService::new(
            handle.clone(),
            config.api,
            started.forwarder.clone(),
        ))
        .max_decoding_message_size(REQUEST_BYTES_MAX);
        let cluster = ClusterServer::new(ClusterService::new(
            handle.clone(),
            started.forwarder.clone(),
        ));
        let peer = PeerServer::new(PeerService::new(
            handle.clone(),
            started.faults.clone(),
            config.peer_tls.is_some(),
            started.identity.clone(),
            started.clocks.clone(),
        ))
        .max_decoding_message_size(PEER_MESSAGE_BYTES_MAX);
        Services {
            inventory,
            cluster,
            peer,
        }
    }
}

/// Sets the health of the whole server and of the Inventory service; a
/// member that does not serve does not lead either.
async fn set_health(health: &HealthReporter, status: ServingStatus) {
    health.set_service_status("", status).await;
    health.set_service_status(INVENTORY_SERVICE, status).await;
    if status != ServingStatus::Serving {
        health
            .set_service_status(LEADER_SERVICE, ServingStatus::NotServing)
            .await;
    }
}

fn serving_if(yes: bool) -> ServingStatus {
    if yes {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    }
}

/// Health follows the replica: SERVING when it can answer (a leader is
/// known and the log present at start-up is applied), until shutdown.
async fn follow_readiness(
    health: HealthReporter,
    handle: NodeHandle,
    mut status: watch::Receiver<crate::replica::ReplicaStatus>,
    mut stop: watch::Receiver<bool>,
) {
    let mut serving = None;
    let mut leading = None;
    loop {
        let now = handle.is_ready();
        if serving != Some(now) {
            set_health(&health, serving_if(now)).await;
            if now {
                tracing::info!("ready: serving requests");
            }
            serving = Some(now);
            leading = None;
        }
        let leads = now && handle.status().is_leader;
        if leading != Some(leads) {
            health
                .set_service_status(LEADER_SERVICE, serving_if(leads))
                .await;
            leading = Some(leads);
        }
        tokio::select! {
            changed = status.changed() => if changed.is_err() { return },
            _ = stop.changed() => return,
        }
    }
}

/// Completes when `shutdown` does, after refusing new calls: health turns
/// NOT_SERVING and stays so, and the grace period starts.
async fn begin_shutdown(
    shutdown: impl Future<Output = ()>,
    signalled: oneshot::Sender<()>,
    stop_health: watch::Sender<bool>,
    health: HealthReporter,
) {
    shutdown.await;
    let _ = signalled.send(());
    tracing::info!("shutting down: refusing new calls, finishing calls in flight");
    let _ = stop_health.send(true);
    set_health(&health, ServingStatus::NotServing).await;
}

/// The client port's server: TLS when configured, the token check before
/// any service, and the HTTP/2 limits.
fn client_port(
    config: &ServeConfig,
    tokens: Option<Arc<ArcSwap<Tokens>>>,
) -> Result<Server<Stack<auth::AuthLayer, NoLayer>>, ServeError> {
    let mut builder = Server::builder();
    if let Some(tls) = &config.client_tls {
        let members_ca = config.peer_tls.as_ref().map(|p| p.ca.as_path());
        let tls = tls
            .server_config(members_ca)
            .map_err(|e| ServeError::Config(e.to_string()))?;
        builder = builder.tls_config(tls)?;
    }
    Ok(builder
        .layer(auth::AuthLayer::new(tokens))
        .max_concurrent_streams(Some(crate::limits::STREAMS_PER_CONNECTION_MAX))
        .timeout(Duration::from_secs(30))
        .http2_keepalive_interval(Some(Duration::from_secs(10))))
}

/// Serves the peers on a listener of their own, when they have one,
/// until `stop` is sent.
fn spawn_peer_port(
    config: &ServeConfig,
    peers_apart: Option<(TcpListener, PeerServer<PeerService>)>,
    faults: &Faults,
    stop: oneshot::Receiver<()>,
) -> Result<Option<JoinHandle<Result<(), tonic::transport::Error>>>, ServeError> {
    let peer_tls = match &config.peer_tls {
        Some(tls) => Some(
            tls.server_config()
                .map_err(|e| ServeError::Config(e.to_string()))?,
        ),
        None => None,
    };
    Ok(peers_apart.map(|(listener, peer)| {
        let stopped = async move {
            let _ = stop.await;
        };
        tokio::spawn(serve_peers(
            listener,
            peer,
            peer_tls,
            faults.clone(),
            stopped,
        ))
    }))
}

/// Serves other members' Raft traffic on a listener of its own
/// (`--peer-listen`) until `stop` completes.
async fn serve_peers(
    listener: TcpListener,
    peer: PeerServer<PeerService>,
    tls: Option<ServerTlsConfig>,
    faults: Faults,
    stop: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    let mut builder = Server::builder();
    if let Some(tls) = tls {
        builder = builder.tls_config(tls)?;
    }
    let router = builder
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .add_service(peer);
    #[cfg(feature = "fault-injection")]
    let router = router.add_service(
        crate::proto::internal::fault_injection_server::FaultInjectionServer::new(
            super::peer_service::FaultService::new(faults),
        ),
    );
    #[cfg(not(feature = "fault-injection"))]
    drop(faults);
    router
        .serve_with_incoming_shutdown(incoming::accept(listener, incoming::CONNECTIONS_MAX), stop)
        .await
}

/// Runs `server` until it stops, or until `grace` after shutdown was
/// signalled: calls in flight get that long to finish; then connections
/// still open (a client that ignores GOAWAY) are dropped.
async fn serve_with_grace(
    server: impl Future<Output = Result<(), tonic::transport::Error>>,
    signalled: oneshot::Receiver<()>,
    grace: Duration,
) -> Result<(), tonic::transport::Error> {
    let grace_over = async move {
        if signalled.await.is_ok() {
            tokio::time::sleep(grace).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        result = server => result,
        () = grace_over => {
            tracing::warn!("calls still open {} ms after shutdown began; closing them", grace.as_millis());
            Ok(())
        }
    }
}

/// Stops the peer port once the node has stopped. Other members hold
/// their Raft streams open for as long as they run: a graceful stop would
/// wait for them forever. They are told (GOAWAY) and given a moment; then
/// the listener is dropped.
async fn stop_peer_port(
    stop: oneshot::Sender<()>,
    peer_server: Option<JoinHandle<Result<(), tonic::transport::Error>>>,
) {
    let _ = stop.send(());
    let Some(mut peer_server) = peer_server else {
        return;
    };
    match tokio::time::timeout(PEERS_STOP_WAIT, &mut peer_server).await {
        Ok(Ok(Err(error))) => {
            tracing::warn!("the peer listener stopped with an error: {error}");
        }
        Ok(_) => {}
        Err(_) => peer_server.abort(),
    }
}
