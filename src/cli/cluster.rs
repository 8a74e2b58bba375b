//! `stockraft cluster`: membership, leadership and status, through the
//! Cluster service (an admin token's calls when the server asks for tokens).

use anyhow::Result;
use clap::Subcommand;

use stockraft::proto::v1 as pb;
use stockraft::proto::v1::cluster_client::ClusterClient;

use super::connection::{status_error, ClientArgs};
use super::render::{ClusterStatus, Leader, MemberView, Membership, Render};

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Members, leader, term, commit and applied index of every node.
    Status {
        /// Also compare the state digests of the nodes.
        #[arg(long)]
        digest: bool,
    },
    /// Add a node as a voter; then start it with `--join` (any member).
    Add {
        node_id: u64,
        /// Where clients reach the new node (HOST:PORT).
        address: String,
        /// Where members reach it for Raft traffic, when it listens for
        /// peers on a port of its own (--peer-listen).
        #[arg(long)]
        peer_address: Option<String>,
    },
    /// Remove a node, then stop it. Removing the leader first hands
    /// leadership to the most caught-up other voter, which removes it.
    Remove { node_id: u64 },
    /// Hand leadership to another voter.
    TransferLeader { node_id: u64 },
}

/// Runs a cluster command against --server and returns its answer.
pub(super) async fn run(command: ClusterCommand, client: &ClientArgs) -> Result<Box<dyn Render>> {
    let mut api = ClusterClient::new(client.authed_to(&client.server).await?);
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
            Ok(Box::new(ClusterStatus {
                first,
                rows,
                digest,
            }))
        }
        ClusterCommand::Add {
            node_id,
            address,
            peer_address,
        } => {
            let answer = api
                .add_member(pb::AddMemberRequest {
                    node_id,
                    address,
                    peer_address: peer_address.unwrap_or_default(),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            Ok(Box::new(Membership(answer)))
        }
        ClusterCommand::Remove { node_id } => {
            let answer = api
                .remove_member(pb::RemoveMemberRequest { node_id })
                .await
                .map_err(status_error)?
                .into_inner();
            Ok(Box::new(Membership(answer)))
        }
        ClusterCommand::TransferLeader { node_id } => {
            let answer = api
                .transfer_leader(pb::TransferLeaderRequest { node_id })
                .await
                .map_err(status_error)?
                .into_inner();
            Ok(Box::new(Leader(answer)))
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
