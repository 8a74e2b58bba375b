//! Rebuilding a node whose data dir is damaged, from its peers.
//!
//! A node that finds its Raft log damaged (RocksDB reports a checksum
//! mismatch, a record cut short, a gap in the log) must not serve from it,
//! and must not simply start empty either: it may have voted, or
//! acknowledged entries, in terms it no longer remembers, and voting again
//! in such a term could elect two leaders. So the rebuild:
//!
//! 1. asks every other member for its current term (all must answer: a
//!    member that is unreachable may know a higher term), and takes the
//!    highest, T;
//! 2. moves the damaged dir aside (kept for inspection, never deleted);
//! 3. starts a fresh store as a joining node with hard state (term T + 1,
//!    vote for itself): it can never vote again in a term it saw before the
//!    damage. Its first reply makes the leader step down once, and a new
//!    election (term T + 2 or later) follows; the node's empty log keeps it
//!    from winning;
//! 4. the leader then sends it the log, or a snapshot when the log is
//!    compacted, and it catches up like a new member.
//!
//! A node with no peers (a one-node cluster) cannot be rebuilt: it refuses
//! to start and says so.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use raft::eraftpb::HardState;
use tonic::transport::ClientTlsConfig;

use super::identity::IDENTITY_FILE;
use super::{ServeConfig, ServeError};
use crate::proto::v1::cluster_client::ClusterClient;
use crate::proto::v1::ClusterStatusRequest;
use crate::replica::membership::{cluster_id_from_hex, Member};
use crate::replica::Members;
use crate::storage::RocksStore;

/// How long the rebuild waits for every other member to answer.
const PEERS_WAIT: Duration = Duration::from_secs(60);

async fn status(
    address: &str,
    tls: Option<&ClientTlsConfig>,
) -> Option<crate::proto::v1::ClusterStatusResponse> {
    let channel = crate::client::channel_with(address, Duration::from_secs(2), tls.cloned())
        .await
        .ok()?;
    ClusterClient::new(channel)
        .status(ClusterStatusRequest { with_digest: false })
        .await
        .ok()
        .map(|r| r.into_inner())
}

/// Moves the damaged data dir aside and opens a fresh store that rejoins
/// the cluster safely. `damage` says what was found.
pub async fn rebuild(
    config: &ServeConfig,
    advertise: &Member,
    damage: &str,
    tls: Option<&ClientTlsConfig>,
) -> Result<RocksStore, ServeError> {
    let id = config.node_id;
    let mut seeds: Vec<String> = Vec::new();
    if let Some(peers) = &config.peers {
        seeds.extend(
            peers
                .iter()
                .filter(|(p, _)| **p != id)
                .map(|(_, m)| m.address.clone()),
        );
    }
    if let Some(join) = &config.join {
        seeds.push(join.clone());
    }
    if seeds.is_empty() {
        return Err(ServeError::Config(format!(
            "the data dir {} is damaged ({damage}) and this node has no peers to rebuild from; \
             restore it from a backup, or move it aside to start an empty node",
            config.data_dir.display()
        )));
    }
    tracing::error!(%damage, "the data dir is damaged; rebuilding this node from its peers");

    // The current members and the cluster's id, from any peer that answers.
    let deadline = Instant::now() + PEERS_WAIT;
    let (members, cluster_id): (Members, _) = loop {
        let mut found = None;
        for seed in &seeds {
            if let Some(s) = status(seed, tls).await {
                let members = s
                    .members
                    .iter()
                    .map(|m| (m.node_id, Member::of(&m.address, &m.peer_address)))
                    .collect();
                found = Some((members, cluster_id_from_hex(&s.cluster_id)));
                break;
            }
        }
        if let Some(found) = found {
            break found;
        }
        if Instant::now() > deadline {
            return Err(ServeError::Config(format!(
                "the data dir is damaged ({damage}) and no peer answered within {PEERS_WAIT:?} to rebuild from"
            )));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };

    // The highest term any other member has seen; every one must answer.
    let mut highest = 0u64;
    for (peer, member) in members.iter().filter(|(p, _)| **p != id) {
        let address = &member.address;
        let term = loop {
            if let Some(s) = status(address, tls).await {
                break s.term;
            }
            if Instant::now() > deadline {
                return Err(ServeError::Config(format!(
                    "the data dir is damaged ({damage}); rebuilding needs every other member's term, \
                     and node {peer} at {address} did not answer"
                )));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        highest = highest.max(term);
    }

    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let aside = PathBuf::from(format!("{}.damaged-{stamp}", config.data_dir.display()));
    std::fs::rename(&config.data_dir, &aside).map_err(|e| {
        ServeError::Config(format!(
            "cannot move the damaged data dir {} aside: {e}",
            config.data_dir.display()
        ))
    })?;
    tracing::warn!(aside = %aside.display(), term = highest + 1, "damaged data kept aside; rejoining");

    let mut store = RocksStore::open(&config.data_dir)?;
    // A rebuild is a safe return (it never votes again in a term it may
    // have voted in): it keeps the data dir's identity, which the other
    // members recorded, instead of coming back as a wiped member.
    let kept = std::fs::copy(
        aside.join(IDENTITY_FILE),
        config.data_dir.join(IDENTITY_FILE),
    );
    if let Err(e) = kept {
        tracing::error!(
            "cannot keep this member's identity file ({e}): the other members will refuse it \
             as a wiped member until it is removed and added again"
        );
    }
    let mut all = members;
    all.insert(id, advertise.clone());
    let hard_state = HardState {
        term: highest + 1,
        vote: id,
        commit: 0,
        ..Default::default()
    };
    store.bootstrap_joining(&all, cluster_id.as_ref(), Some(&hard_state))?;
    Ok(store)
}
