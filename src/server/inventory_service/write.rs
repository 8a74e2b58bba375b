//! The write path of a call: propose on the leader, forward from a
//! follower, retry while leadership is unsettled.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status};

use super::convert::{request_of, FromCommand};
use super::InventoryService;
use crate::inventory::{Applied, Command};
use crate::proto::v1::inventory_client::InventoryClient;
use crate::server::forward::{Forwarder, Route};
use crate::server::node::{Refused, SubmitError};
use crate::server::status;

/// A call of the same method on the leader.
pub(super) type Forwarded<Resp> =
    Pin<Box<dyn Future<Output = Result<Response<Resp>, Status>> + Send>>;

impl InventoryService {
    /// Runs a write: on the leader, propose and wait for the answer; on a
    /// follower, forward the request to the leader. While no leader is known,
    /// or when leadership changes under a proposal, it waits and retries until
    /// the budget runs out: retrying is safe because every command carries
    /// an id applied at most once (SetSafetyStock is an absolute set).
    pub(super) async fn write<Req, Resp>(
        &self,
        request: Request<Req>,
        build: impl FnOnce(Req) -> Result<Command, Status>,
        answer: impl Fn(Applied) -> Result<Resp, Status>,
        forward: impl Fn(InventoryClient<Channel>, Request<Req>) -> Forwarded<Resp>,
    ) -> Result<Resp, Status>
    where
        Req: Clone + FromCommand + Send + 'static,
    {
        let deadline = Instant::now() + self.forwarder.budget;
        let origin = Forwarder::origin(request.metadata(), self.session_token.as_ref());
        let body = request.into_inner();
        // A follower forwards the request as it came; the leader, which
        // almost always runs it itself, keeps no copy, and should it lose
        // the leadership before the command is applied it forwards the
        // request rebuilt from the command.
        let kept = if self.node.status().is_leader {
            None
        } else {
            Some(body.clone())
        };
        let mut command = build(body)?;
        loop {
            if let Route::Leader { id, channel } =
                self.forwarder.route(origin.forwarded, deadline).await?
            {
                let resent = match &kept {
                    Some(body) => body.clone(),
                    None => request_of(&command),
                };
                let mut call = Request::new(resent);
                Forwarder::mark(&mut call, deadline, &origin);
                metrics::counter!("stockraft_forwarded_total").increment(1);
                match forward(InventoryClient::new(channel), call).await {
                    Ok(response) => return Ok(response.into_inner()),
                    Err(e) if e.code() == Code::Unavailable && Instant::now() < deadline => {
                        tracing::debug!(leader = id, "forwarding failed, retrying: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            }
            // The command goes to the replication thread; a failed proposal
            // hands it back for the retry.
            match self.node.submit(command).await {
                Ok(applied) => return answer(applied),
                Err(Refused {
                    error: SubmitError::Propose(e),
                    command: Some(returned),
                }) if Instant::now() < deadline => {
                    tracing::debug!("retrying a proposal: {e}");
                    command = returned;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(refused) => return Err(status::submit(refused.error)),
            }
        }
    }
}
