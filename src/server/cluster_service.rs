//! The `stockraft.v1.Cluster` admin service: status, membership, leadership.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tonic::{Code, Request, Response, Status};

use super::forward::{Forwarder, Route};
use super::node::{NodeHandle, SubmitError};
use super::status::{self, Problem};
use crate::proto::v1 as pb;
use crate::proto::v1::cluster_client::ClusterClient;
use crate::proto::v1::cluster_server::Cluster;
use crate::replica::membership::Member;
use crate::replica::{MembershipAnswer, MembershipChange, ProposeError, Role};

pub(crate) struct ClusterService {
    node: NodeHandle,
    forwarder: Arc<Forwarder>,
}

impl ClusterService {
    pub fn new(node: NodeHandle, forwarder: Arc<Forwarder>) -> ClusterService {
        ClusterService { node, forwarder }
    }

    fn members(&self) -> Vec<pb::Member> {
        let view = self.node.members();
        let mut out = Vec::new();
        for (id, member) in &view.members {
            let role = if view.conf_state.voters.contains(id) {
                pb::MemberRole::Voter
            } else if view.conf_state.learners.contains(id) {
                pb::MemberRole::Learner
            } else {
                pb::MemberRole::Joining
            };
            out.push(pb::Member {
                member_id: *id,
                address: member.address.clone(),
                peer_address: member.peer_address.clone(),
                role: role as i32,
            });
        }
        out
    }

    async fn change(&self, change: MembershipChange) -> Result<Changed, Status> {
        let deadline = Instant::now() + self.forwarder.budget;
        loop {
            match self.node.change_membership(change.clone()).await {
                Ok(answer) => return Ok(membership_response(answer)),
                Err(SubmitError::Propose(ProposeError::Unknown)) if Instant::now() < deadline => {
                    // Applied or not: read the membership back and decide.
                    let view = self.node.members();
                    let done = match &change {
                        MembershipChange::Add { node_id, .. } => {
                            view.conf_state.voters.contains(node_id)
                        }
                        MembershipChange::Remove { node_id } => {
                            !view.conf_state.voters.contains(node_id)
                        }
                    };
                    if done {
                        return Ok(Changed {
                            members: self.members(),
                            index: 0,
                        });
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(SubmitError::Propose(ProposeError::Dropped(reason))) => {
                    // raft-rs refuses a change while another is unapplied
                    // or leadership is moving, and a new leader refuses
                    // one until it applied its first entry (just after a
                    // hand-over, say): usually over within a round trip.
                    if Instant::now() >= deadline {
                        return Err(Problem::new(
                            Code::FailedPrecondition,
                            "CHANGE_REFUSED",
                            format!(
                                "the leader refused the change: {reason}; retry when it is done"
                            ),
                        )
                        .into_status());
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(SubmitError::Propose(ProposeError::RemovesLeader)) => {
                    // Leadership came back to the node being removed
                    // between its hand-over and this proposal.
                    return Err(status::submit(SubmitError::Propose(
                        ProposeError::RemovesLeader,
                    )));
                }
                Err(e) => return Err(status::submit(e)),
            }
        }
    }
}

impl ClusterService {
    /// A node can be removed when it is a member and not the last voter.
    fn check_removable(&self, node_id: u64) -> Result<(), Status> {
        let view = self.node.members();
        let is_voter = view.conf_state.voters.contains(&node_id);
        if !is_voter && !view.conf_state.learners.contains(&node_id) {
            return Err(Problem::new(
                Code::NotFound,
                "MEMBER_NOT_FOUND",
                format!("member {node_id} is not a member"),
            )
            .fact("member_id", node_id)
            .into_status());
        }
        if is_voter && view.conf_state.voters.len() == 1 {
            return Err(Problem::new(
                Code::FailedPrecondition,
                "LAST_VOTER",
                "it is the last voter; a cluster cannot remove its only voter",
            )
            .fact("member_id", node_id)
            .into_status());
        }
        Ok(())
    }

    /// Hands this leader's leadership to its most caught-up voter and
    /// waits until it leads no more. Asked again every half second: raft-rs
    /// abandons a transfer that did not finish within an election timeout
    /// (the voter chosen was down, say), and the next ask may choose
    /// another.
    async fn hand_over(&self, deadline: Instant) -> Result<(), Status> {
        let mut watch = self.node.status_watch();
        loop {
            if !watch.borrow_and_update().is_leader {
                return Ok(());
            }
            let asked = match self
                .node
                .hand_over_leadership()
                .await
                .map_err(status::submit)?
            {
                Some(target) => target,
                None if self.node.status().is_leader => {
                    return Err(Problem::new(
                        Code::FailedPrecondition,
                        "NO_SUCCESSOR",
                        "this member leads and no other voter can take over",
                    )
                    .into_status())
                }
                None => return Ok(()),
            };
            tracing::info!(
                to = asked,
                "handing leadership over before this node is removed"
            );
            let wait = deadline.saturating_duration_since(Instant::now());
            if wait.is_zero() {
                return Err(Problem::new(
                    Code::Unavailable,
                    "LEADERSHIP_NOT_MOVED",
                    format!("leadership did not move to member {asked} in time, so this leader was not removed; retry"),
                )
                .fact("member_id", asked)
                .into_status());
            }
            let _ =
                tokio::time::timeout(wait.min(Duration::from_millis(500)), watch.changed()).await;
        }
    }
}

/// The members and the index of an applied change, for either answer.
struct Changed {
    members: Vec<pb::Member>,
    index: u64,
}

fn membership_response(answer: MembershipAnswer) -> Changed {
    let members = answer
        .members
        .iter()
        .map(|(id, member)| pb::Member {
            member_id: *id,
            address: member.address.clone(),
            peer_address: member.peer_address.clone(),
            role: if answer.voters.contains(id) {
                pb::MemberRole::Voter as i32
            } else {
                pb::MemberRole::Learner as i32
            },
        })
        .collect();
    Changed {
        members,
        index: answer.index,
    }
}

fn check_address(field: &'static str, address: &str) -> Result<(), Status> {
    let well_formed = match address.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok(),
        None => false,
    };
    if well_formed {
        return Ok(());
    }
    Err(Problem::new(
        Code::InvalidArgument,
        "ADDRESS_MALFORMED",
        format!("{field} {address:?} is not HOST:PORT"),
    )
    .field(field)
    .into_status())
}

/// A member id must be positive (0 means "none" in answers).
fn check_member_id(member_id: u64) -> Result<(), Status> {
    if member_id > 0 {
        return Ok(());
    }
    Err(Problem::new(
        Code::InvalidArgument,
        "VALUE_OUT_OF_RANGE",
        "member_id must be positive",
    )
    .fact("value", 0)
    .fact("min", 1)
    .field("member_id")
    .into_status())
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn status(
        &self,
        request: Request<pb::ClusterStatusRequest>,
    ) -> Result<Response<pb::ClusterStatusResponse>, Status> {
        let with_digest = request.into_inner().with_digest;
        let (state_digest, digest_index) = if with_digest {
            self.node.digest().await.map_err(status::submit)?
        } else {
            (0, 0)
        };
        let s = self.node.status();
        let applied_index = if with_digest {
            digest_index
        } else {
            s.applied_index
        };
        Ok(Response::new(pb::ClusterStatusResponse {
            member_id: s.id,
            leader_id: s.leader_id,
            term: s.term,
            role: raft_role(s.role) as i32,
            commit_index: s.commit_index,
            applied_index,
            last_index: s.last_index,
            snapshot_index: s.snapshot_index,
            members: self.members(),
            ready: self.node.is_ready(),
            state_digest,
            open_reservations: s.open_reservations,
            cluster_id: s
                .cluster_id
                .as_ref()
                .map(crate::replica::membership::cluster_id_hex)
                .unwrap_or_default(),
            rebuilding: s.rebuilding,
        }))
    }

    async fn add_member(
        &self,
        request: Request<pb::AddMemberRequest>,
    ) -> Result<Response<pb::AddMemberResponse>, Status> {
        let origin = Forwarder::origin(request.metadata(), None);
        let r = request.into_inner();
        check_member_id(r.member_id)?;
        check_address("address", &r.address)?;
        if !r.peer_address.is_empty() {
            check_address("peer_address", &r.peer_address)?;
        }
        let deadline = Instant::now() + self.forwarder.budget;
        if let Route::Leader { channel, .. } =
            self.forwarder.route(origin.forwarded, deadline).await?
        {
            let mut call = Request::new(r);
            Forwarder::mark(&mut call, deadline, &origin);
            return ClusterClient::new(channel).add_member(call).await;
        }
        let member = Member::of(&r.address, &r.peer_address);
        let view = self.node.members();
        if view.conf_state.voters.contains(&r.member_id) {
            if view.members.get(&r.member_id) == Some(&member) {
                return Ok(Response::new(pb::AddMemberResponse {
                    members: self.members(),
                    index: 0,
                }));
            }
            return Err(Problem::new(
                Code::AlreadyExists,
                "MEMBER_EXISTS",
                format!(
                    "member {} is already a member at other addresses; remove it first",
                    r.member_id
                ),
            )
            .fact("member_id", r.member_id)
            .into_status());
        }
        let answer = self
            .change(MembershipChange::Add {
                node_id: r.member_id,
                member,
            })
            .await?;
        Ok(Response::new(pb::AddMemberResponse {
            members: answer.members,
            index: answer.index,
        }))
    }

    /// A leader never removes itself (raft-rs would leave it leading a
    /// group it is not in). Removing the leader hands leadership to the
    /// most caught-up other voter first, then forwards the removal to it,
    /// as etcd's server does: writes pause for a leadership transfer (no
    /// election timeout), not for an election.
    async fn remove_member(
        &self,
        request: Request<pb::RemoveMemberRequest>,
    ) -> Result<Response<pb::RemoveMemberResponse>, Status> {
        let origin = Forwarder::origin(request.metadata(), None);
        let r = request.into_inner();
        let node_id = r.member_id;
        let deadline = Instant::now() + self.forwarder.budget;
        // Whether this node, the one to remove, led and handed over.
        let mut handed_over = false;
        loop {
            // After its own hand-over this node sends the call on to the
            // new leader even if it came forwarded: that is one more hop
            // it chose, not two stale views bouncing a call.
            let route = self
                .forwarder
                .route(origin.forwarded && !handed_over, deadline);
            if let Route::Leader { id, channel } = route.await? {
                let mut call = Request::new(r);
                Forwarder::mark(&mut call, deadline, &origin);
                let mut answer = ClusterClient::new(channel).remove_member(call).await?;
                if handed_over {
                    answer.get_mut().leadership_moved_to = id;
                }
                if node_id == self.node.status().id {
                    // The new leader will send this node nothing more, not
                    // even the commit of its removal: it learns it here.
                    self.node.note_removed().await.map_err(status::submit)?;
                }
                return Ok(answer);
            }
            self.check_removable(node_id)?;
            if node_id != self.node.status().id {
                let answer = self.change(MembershipChange::Remove { node_id }).await?;
                return Ok(Response::new(pb::RemoveMemberResponse {
                    members: answer.members,
                    index: answer.index,
                    leadership_moved_to: 0,
                }));
            }
            self.hand_over(deadline).await?;
            handed_over = true;
        }
    }

    async fn transfer_leader(
        &self,
        request: Request<pb::TransferLeaderRequest>,
    ) -> Result<Response<pb::TransferLeaderResponse>, Status> {
        let origin = Forwarder::origin(request.metadata(), None);
        let r = request.into_inner();
        let deadline = Instant::now() + self.forwarder.budget;
        if let Route::Leader { channel, .. } =
            self.forwarder.route(origin.forwarded, deadline).await?
        {
            let mut call = Request::new(r);
            Forwarder::mark(&mut call, deadline, &origin);
            return ClusterClient::new(channel).transfer_leader(call).await;
        }
        if !self.node.members().conf_state.voters.contains(&r.member_id) {
            return Err(Problem::new(
                Code::FailedPrecondition,
                "NOT_A_VOTER",
                format!(
                    "member {} is not a voter; only a voter can lead",
                    r.member_id
                ),
            )
            .fact("member_id", r.member_id)
            .into_status());
        }
        let mut watch = self.node.status_watch();
        loop {
            let s = *watch.borrow_and_update();
            if s.leader_id == r.member_id {
                return Ok(Response::new(pb::TransferLeaderResponse {
                    leader_id: s.leader_id,
                    term: s.term,
                }));
            }
            if s.is_leader {
                self.node
                    .transfer_leader(r.member_id)
                    .map_err(status::submit)?;
            }
            let wait = deadline.saturating_duration_since(Instant::now());
            if wait.is_zero() {
                return Err(Problem::new(
                    Code::DeadlineExceeded,
                    "LEADERSHIP_NOT_MOVED",
                    format!(
                        "leadership did not move to member {} in time (is it up and caught up?)",
                        r.member_id
                    ),
                )
                .fact("member_id", r.member_id)
                .into_status());
            }
            let _ =
                tokio::time::timeout(wait.min(Duration::from_millis(500)), watch.changed()).await;
        }
    }
}

/// The wire value of a replica's Raft role.
fn raft_role(role: Role) -> pb::RaftRole {
    match role {
        Role::Follower => pb::RaftRole::Follower,
        Role::PreCandidate => pb::RaftRole::PreCandidate,
        Role::Candidate => pb::RaftRole::Candidate,
        Role::Leader => pb::RaftRole::Leader,
    }
}
