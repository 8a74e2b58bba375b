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
//!    election (term T + 2 or later) follows among the other members: the
//!    store is marked rebuilding, and the node grants no vote and starts no
//!    election until it has caught up (`replica::rebuild`), since with its
//!    empty log it would vote for a candidate missing entries it had helped
//!    commit;
//! 4. the leader then sends it the log, or a snapshot when the log is
//!    compacted, and it catches up like a new member, then votes again.
//!
//! A node with no peers (a one-node cluster) cannot be rebuilt: it refuses
//! to start and says so.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use raft::eraftpb::HardState;
use tonic::transport::ClientTlsConfig;

use super::identity::IDENTITY_FILE;
use super::{ServeConfig, ServeError};
use crate::proto::v1::cluster_client::ClusterClient;
use crate::proto::v1::ClusterStatusRequest;
use crate::replica::membership::{cluster_id_from_hex, Member};
use crate::replica::{ClusterId, Members};
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
    let seeds = seeds(config);
    if seeds.is_empty() {
        return Err(ServeError::Config(format!(
            "the data dir {} is damaged ({damage}) and this node has no peers to rebuild from; \
             restore it from a backup, or move it aside to start an empty node",
            config.data_dir.display()
        )));
    }
    tracing::error!(%damage, "the data dir is damaged; rebuilding this node from its peers");
    let deadline = Instant::now() + PEERS_WAIT;
    let (members, cluster_id) = current_members(&seeds, tls, deadline, damage).await?;
    let highest = highest_term(&members, id, tls, deadline, damage).await?;
    let aside = move_aside(config)?;
    tracing::warn!(aside = %aside.display(), term = highest + 1, "damaged data kept aside; rejoining");

    let mut store = RocksStore::open(&config.data_dir)?;
    keep_identity(&aside, config);
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

/// The client addresses to learn the members from: the other founding
/// members (`--peers`) and the member joined through (`--join`).
fn seeds(config: &ServeConfig) -> Vec<String> {
    let mut seeds: Vec<String> = Vec::new();
    if let Some(peers) = &config.peers {
        seeds.extend(
            peers
                .iter()
                .filter(|(p, _)| **p != config.node_id)
                .map(|(_, m)| m.address.clone()),
        );
    }
    if let Some(join) = &config.join {
        seeds.push(join.clone());
    }
    seeds
}

/// The current members and the cluster's id, from any seed that answers
/// before `deadline`.
async fn current_members(
    seeds: &[String],
    tls: Option<&ClientTlsConfig>,
    deadline: Instant,
    damage: &str,
) -> Result<(Members, Option<ClusterId>), ServeError> {
    loop {
        for seed in seeds {
            if let Some(s) = status(seed, tls).await {
                let members = s
                    .members
                    .iter()
                    .map(|m| (m.member_id, Member::of(&m.address, &m.peer_address)))
                    .collect();
                return Ok((members, cluster_id_from_hex(&s.cluster_id)));
            }
        }
        if Instant::now() > deadline {
            return Err(ServeError::Config(format!(
                "the data dir is damaged ({damage}) and no peer answered within {PEERS_WAIT:?} to rebuild from"
            )));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The highest term any other member has seen. Every one must answer
/// before `deadline`: one that does not may know a higher term.
async fn highest_term(
    members: &Members,
    id: u64,
    tls: Option<&ClientTlsConfig>,
    deadline: Instant,
    damage: &str,
) -> Result<u64, ServeError> {
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
    Ok(highest)
}

/// Moves the damaged data dir aside, named by the time, kept for
/// inspection and never deleted. Returns where it went.
fn move_aside(config: &ServeConfig) -> Result<PathBuf, ServeError> {
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
    Ok(aside)
}

/// A rebuild is a safe return (it never votes again in a term it may have
/// voted in): it keeps the data dir's identity, which the other members
/// recorded, instead of coming back as a wiped member.
fn keep_identity(aside: &Path, config: &ServeConfig) {
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
}
