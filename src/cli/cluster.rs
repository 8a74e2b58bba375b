//! `stockraft cluster`: membership, leadership and status, through the
//! Cluster service (an admin token's calls when the server asks for tokens).

use anyhow::Result;
use clap::Subcommand;

use stockraft::proto::v1 as pb;
use stockraft::proto::v1::cluster_client::ClusterClient;

use super::connection::{status_error, ClientArgs};
use super::render::{self, Answer, MemberView};

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Members, leader, term, commit and applied index of every member.
    Status {
        /// Also compare the state digests of the members.
        #[arg(long)]
        digest: bool,
    },
    /// Add a member as a voter; then start it with `--join` (any member).
    Add {
        member_id: u64,
        /// Where clients reach the new member (HOST:PORT).
        address: String,
        /// Where members reach it for Raft traffic, when it listens for
        /// peers on a port of its own (--peer-listen).
        #[arg(long)]
        peer_address: Option<String>,
    },
    /// Remove a member, then stop it. Removing the leader first hands
    /// leadership to the most caught-up other voter, which removes it.
    Remove { member_id: u64 },
    /// Hand leadership to another voter.
    TransferLeader { member_id: u64 },
}

/// Runs a cluster command against the member to call and returns its
/// answer. Changes may go to any member: a follower forwards them.
pub(super) async fn run(command: ClusterCommand, client: &ClientArgs) -> Result<Answer> {
    let target = client.target().await?;
    let mut api = ClusterClient::new(client.authed_to(&target).await?);
    match command {
        ClusterCommand::Status { digest } => {
            let first = api
                .status(pb::ClusterStatusRequest {
                    with_digest: digest,
                })
                .await
                .map_err(status_error)?
                .into_inner();
            let rows = member_views(client, &first.members, digest).await;
            Ok(render::cluster_status(&first, &rows, digest))
        }
        ClusterCommand::Add {
            member_id,
            address,
            peer_address,
        } => {
            let answer = api
                .add_member(pb::AddMemberRequest {
                    member_id,
                    address,
                    peer_address: peer_address.unwrap_or_default(),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            Ok(render::membership(&answer, &answer.members, 0))
        }
        ClusterCommand::Remove { member_id } => {
            let answer = api
                .remove_member(pb::RemoveMemberRequest { member_id })
                .await
                .map_err(status_error)?
                .into_inner();
            Ok(render::membership(
                &answer,
                &answer.members,
                answer.leadership_moved_to,
            ))
        }
        ClusterCommand::TransferLeader { member_id } => {
            let answer = api
                .transfer_leader(pb::TransferLeaderRequest { member_id })
                .await
                .map_err(status_error)?
                .into_inner();
            Ok(render::leader(&answer))
        }
    }
}

/// Asks every member for its own view, one after another: a member that
/// cannot be reached is a row that says why, not a failed command.
async fn member_views(
    client: &ClientArgs,
    members: &[pb::Member],
    digest: bool,
) -> Vec<(pb::Member, MemberView)> {
    let mut rows = Vec::new();
    for member in members {
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
    rows
}
