//! Opening the data dir: RocksDB and this member's identity beside it. A
//! damaged dir is rebuilt from the peers (`rebuild.rs`); a brand-new one
//! gets its first Raft state: a new cluster (`--peers`), a node joining
//! one (`--join`), or a new one-node cluster.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tonic::transport::ClientTlsConfig;

use super::identity::Identity;
use super::{rebuild, ServeConfig, ServeError};
use crate::proto::v1::cluster_client::ClusterClient;
use crate::replica::membership::{self, Member};
use crate::replica::{Members, StoreError};
use crate::storage::RocksStore;

/// Opens the store and the identity file; a brand-new data dir is
/// bootstrapped, one already holding a cluster's state is used as it is.
pub(super) async fn open(
    config: &ServeConfig,
    advertise: &Member,
    tls: Option<&ClientTlsConfig>,
) -> Result<(RocksStore, Arc<Identity>), ServeError> {
    let mut store = open_or_rebuild(config, advertise, tls).await?;
    let identity = Arc::new(Identity::open(&config.data_dir, store.is_fresh())?);
    if store.is_fresh() {
        bootstrap(config, advertise, tls, &mut store).await?;
    } else if config.peers.is_some() || config.join.is_some() {
        tracing::info!("data dir already holds a cluster's state; --peers and --join are ignored");
    }
    Ok((store, identity))
}

/// Opens the store, reading its log back; a damaged one is moved aside
/// and rebuilt from the peers, never served from.
async fn open_or_rebuild(
    config: &ServeConfig,
    advertise: &Member,
    tls: Option<&ClientTlsConfig>,
) -> Result<RocksStore, ServeError> {
    let opening = Instant::now();
    match RocksStore::open(&config.data_dir) {
        Ok(store) => {
            tracing::info!(
                elapsed_ms = opening.elapsed().as_millis() as u64,
                "data dir opened; log read back"
            );
            Ok(store)
        }
        Err(StoreError::Corrupt(damage)) => rebuild::rebuild(config, advertise, &damage, tls).await,
        Err(e) => Err(e.into()),
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
        return join(id, addr, advertise, tls, store).await;
    }
    let first = membership::bootstrap(&[(id, advertise.clone())].into())
        .map_err(|e| ServeError::Config(e.to_string()))?;
    store.bootstrap(&first)?;
    tracing::info!(node_id = id, dir = %config.data_dir.display(), "created a new one-node cluster");
    Ok(())
}

/// Learns the members and the cluster's id from `addr`, a member of the
/// cluster this node was added to, and records them with this node
/// among them.
async fn join(
    id: u64,
    addr: &str,
    advertise: &Member,
    tls: Option<&ClientTlsConfig>,
    store: &mut RocksStore,
) -> Result<(), ServeError> {
    let join_error = |reason: String| ServeError::Join {
        addr: addr.to_string(),
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
        .map(|m| (m.member_id, Member::of(&m.address, &m.peer_address)))
        .collect();
    members.insert(id, advertise.clone());
    let cluster_id = membership::cluster_id_from_hex(&status.cluster_id);
    // No log and no vote: this node waits for the leader to send it the
    // log (or a snapshot), which carries the membership.
    store.bootstrap_joining(&members, cluster_id.as_ref(), None)?;
    tracing::info!(node_id = id, through = %addr, "joining an existing cluster; waiting for the leader");
    Ok(())
}
