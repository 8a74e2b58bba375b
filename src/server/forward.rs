//! Finding the leader and reaching it, for calls that only the leader can
//! carry out.
//!
//! Any node accepts any call. A write that reaches a follower is forwarded
//! once, over the public API, to the node the follower believes leads; the
//! forwarded call is marked so that it is never forwarded again (two nodes
//! with stale views cannot bounce a call between them). While no leader is
//! known a call waits for one, up to its time budget, then gets UNAVAILABLE.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tonic::metadata::{AsciiMetadataValue, MetadataMap};
use tonic::transport::{Channel, ClientTlsConfig};
use tonic::Status;

use super::node::NodeHandle;

/// Metadata key marking a call forwarded by another node.
pub(crate) const FORWARDED: &str = "x-stockraft-forwarded";

/// The header that carries a caller's token.
pub(crate) const AUTHORIZATION: &str = "authorization";

/// Where a call comes from: forwarded by another member or not, and the
/// caller's token, which a forwarded call carries on.
#[derive(Debug, Clone, Default)]
pub(crate) struct Origin {
    pub forwarded: bool,
    authorization: Option<AsciiMetadataValue>,
}

/// Where a leader-only call must run.
pub enum Route {
    /// This node leads.
    Here,
    /// Another node leads; call it over this channel.
    Leader { id: u64, channel: Channel },
}

/// Caches one lazily connected channel per leader address.
pub struct Forwarder {
    node: NodeHandle,
    channels: Mutex<HashMap<String, Channel>>,
    /// How long a call may wait for a leader and retry.
    pub budget: Duration,
    /// TLS to other members' client ports, when they serve it.
    tls: Option<ClientTlsConfig>,
}

impl Forwarder {
    pub fn new(node: NodeHandle, budget: Duration, tls: Option<ClientTlsConfig>) -> Forwarder {
        Forwarder {
            node,
            channels: Mutex::new(HashMap::new()),
            budget,
            tls,
        }
    }

    /// Where a call comes from, as its metadata says; `session` is the
    /// caller's token of the stream the call runs in, if any.
    pub(crate) fn origin(metadata: &MetadataMap, session: Option<&AsciiMetadataValue>) -> Origin {
        Origin {
            forwarded: metadata.contains_key(FORWARDED),
            authorization: metadata.get(AUTHORIZATION).or(session).cloned(),
        }
    }

    /// Marks a request as forwarded, carries its caller's token (the leader
    /// checks it again), and gives it what is left of the budget.
    pub(crate) fn mark<T>(request: &mut tonic::Request<T>, deadline: Instant, origin: &Origin) {
        let metadata = request.metadata_mut();
        metadata.insert(FORWARDED, tonic::metadata::MetadataValue::from_static("1"));
        if let Some(token) = &origin.authorization {
            metadata.insert(AUTHORIZATION, token.clone());
        }
        request.set_timeout(
            deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1)),
        );
    }

    /// Decides where a leader-only call runs, waiting for a leader until
    /// `deadline`. A call already forwarded once is never sent on again.
    pub async fn route(&self, forwarded: bool, deadline: Instant) -> Result<Route, Status> {
        let status = self.node.status();
        if status.removed {
            return Err(super::status::removed());
        }
        if status.is_leader {
            return Ok(Route::Here);
        }
        let leader = if status.leader_id != 0 {
            status.leader_id
        } else {
            let wait = deadline.saturating_duration_since(Instant::now());
            match self.node.wait_for_leader(wait).await {
                Some(id) => id,
                None => return Err(super::status::no_leader()),
            }
        };
        if leader == status.id {
            return Ok(Route::Here);
        }
        if forwarded {
            return Err(super::status::forwarded_twice(leader));
        }
        let Some(address) = self
            .node
            .members()
            .members
            .get(&leader)
            .map(|m| m.address.clone())
        else {
            return Err(super::status::leader_unreachable(
                leader,
                "its address is not known here yet",
            ));
        };
        let channel = self
            .channel(&address)
            .map_err(|why| super::status::leader_unreachable(leader, why))?;
        Ok(Route::Leader {
            id: leader,
            channel,
        })
    }

    /// A channel to `address`, made once and kept.
    fn channel(&self, address: &str) -> Result<Channel, String> {
        let mut channels = self
            .channels
            .lock()
            .map_err(|_| "the forwarding table is poisoned".to_string())?;
        if let Some(channel) = channels.get(address) {
            return Ok(channel.clone());
        }
        let endpoint = crate::client::endpoint(address, self.tls.clone())
            .map_err(|e| format!("its address {address:?} is refused: {e}"))?
            .connect_timeout(Duration::from_millis(500))
            .tcp_nodelay(true);
        let channel = endpoint.connect_lazy();
        channels.insert(address.to_string(), channel.clone());
        Ok(channel)
    }
}
