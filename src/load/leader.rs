//! Following the leader (`--route leader`): finding it through the Cluster
//! service, and moving the clients to a new one after a failover.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tonic::Status;

use super::conn::Conn;
use super::connect::open_conns;
use super::{LoadConfig, LoadError};
use crate::proto::v1 as pb;
use crate::proto::v1::cluster_client::ClusterClient;

/// Where `--route leader` clients send their calls, kept current through
/// a failover, as a leader-aware client library would: when a call fails
/// UNAVAILABLE (the leader's process is gone, or its connection broke),
/// the first worker to see it asks the members it knows for the leader and
/// opens every client's connection anew there; the other workers take the
/// new connections when they next fail. (A follower forwards writes, so a
/// live server that merely stopped leading needs no move.)
pub(super) struct LeaderRoute {
    pub(super) config: LoadConfig,
    /// Member addresses: those of `--server`, then those the cluster's
    /// status listed when the run started.
    pub(super) known: Vec<String>,
    pub(super) current: tokio::sync::Mutex<Placement>,
    /// Moves made, for the report.
    pub(super) moves: AtomicU64,
}

/// The connections of one leader, and which move made them.
pub(super) struct Placement {
    /// Bumped by each attempt to move: a worker whose connection is of an
    /// older epoch takes the current one instead of moving again.
    pub(super) epoch: u64,
    pub(super) conns: Vec<Arc<Conn>>,
    pub(super) leader: String,
    /// When `conns` were opened.
    pub(super) opened: Instant,
}

/// A leader just moved to may answer UNAVAILABLE for a moment while it
/// takes over; its connections are not opened anew within this time.
const LEADER_REOPEN_INTERVAL_MIN: Duration = Duration::from_secs(1);

impl LeaderRoute {
    /// Client `slot`'s connection after one of `epoch` failed: a new one,
    /// at the leader found now if no other worker moved since `epoch`.
    /// While the cluster elects (up to the call timeout) the worker waits
    /// here, as calls to a cluster without a leader would. Should no
    /// leader be found, the connections stay as they were and the next
    /// failure tries again.
    pub(super) async fn after_failure(&self, slot: usize, epoch: u64) -> (u64, Option<Arc<Conn>>) {
        let mut current = self.current.lock().await;
        if current.epoch == epoch {
            current.epoch += 1;
            match find_leader(&self.config, &self.known, self.config.call_timeout).await {
                Ok(found)
                    if found.leader == current.leader
                        && current.opened.elapsed() < LEADER_REOPEN_INTERVAL_MIN => {}
                Ok(found) => {
                    match open_conns(&self.config, std::slice::from_ref(&found.leader)).await {
                        Ok(conns) => {
                            self.moves.fetch_add(1, Ordering::Relaxed);
                            if self.config.progress {
                                eprintln!("leader unreachable: clients moved to {}", found.leader);
                            }
                            current.conns = conns;
                            current.leader = found.leader;
                            current.opened = Instant::now();
                        }
                        Err(e) => {
                            if self.config.progress {
                                eprintln!("leader unreachable, and the new one not yet: {e}");
                            }
                        }
                    }
                }
                Err(e) => {
                    if self.config.progress {
                        eprintln!("leader unreachable, and no new one found yet: {e}");
                    }
                }
            }
        }
        let conn = current
            .conns
            .get(slot % current.conns.len().max(1))
            .cloned();
        (current.epoch, conn)
    }
}

/// A call the server will not take from this caller, however often asked.
fn is_refused(status: &Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::PermissionDenied | tonic::Code::Unauthenticated
    )
}

/// A leader as a member of the cluster names it.
pub(super) struct FoundLeader {
    pub(super) leader: String,
    /// Every member's address, as that member listed them.
    pub(super) members: Vec<String>,
}

/// The leader's address, as the first of `addrs` that answers knows it,
/// waiting for an election up to `timeout`.
pub(super) async fn find_leader(
    config: &LoadConfig,
    addrs: &[String],
    timeout: Duration,
) -> Result<FoundLeader, LoadError> {
    let deadline = Instant::now() + timeout;
    let mut last = String::from("no server answered the cluster status");
    loop {
        for addr in addrs {
            let channel = match config.dial(addr, timeout).await {
                Ok(channel) => channel,
                Err(e) => {
                    last = e.to_string();
                    continue;
                }
            };
            let mut client = ClusterClient::new(channel);
            let status = match client
                .status(pb::ClusterStatusRequest { with_digest: false })
                .await
            {
                Ok(status) => status.into_inner(),
                Err(e) if is_refused(&e) => {
                    return Err(LoadError::NoLeader(format!(
                        "{addr} refused the cluster status ({}): following the leader needs an \
                         admin token; pass one, or --route spread",
                        e.message()
                    )))
                }
                Err(e) => {
                    last = format!("{addr}: {}", e.message());
                    continue;
                }
            };
            if status.leader_id == 0 {
                last = format!("{addr} knows no leader");
                continue;
            }
            match status
                .members
                .iter()
                .find(|m| m.member_id == status.leader_id)
            {
                // Just after the leader died its followers still name it,
                // until their election timeout: keep asking until the one
                // named answers.
                Some(leader) => match config.dial(&leader.address, timeout).await {
                    Ok(_) => {
                        return Ok(FoundLeader {
                            leader: leader.address.clone(),
                            members: status.members.iter().map(|m| m.address.clone()).collect(),
                        })
                    }
                    Err(e) => last = format!("{addr} names {} as leader: {e}", leader.address),
                },
                None => {
                    last = format!(
                        "{addr} names node {} as leader but not its address",
                        status.leader_id
                    )
                }
            }
        }
        if Instant::now() >= deadline {
            return Err(LoadError::NoLeader(last));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
