//! The peer transport: raft messages between nodes over gRPC.
//!
//! Each peer has its own queue and its own tokio task, which keeps one
//! client-streaming `Peer.Send` call open and writes batches of whatever is
//! queued (many messages per batch). A peer that is down or slow only fills
//! its own queue; once full, further messages to it are dropped (Raft
//! retransmits) and the others are never held up. When a connection fails
//! the task reports the peer unreachable to raft-rs and reconnects with
//! exponential backoff.
//!
//! Snapshots go separately through `Peer.SendSnapshot`, in chunks of
//! [`SNAPSHOT_CHUNK_BYTES`], so a large state never travels as one message;
//! the outcome is reported to raft-rs, which resends on failure.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use protobuf::Message as _;
use raft::eraftpb::{Message, MessageType};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Endpoint;

use crate::tls::PeerTls;

use super::identity::Identity;
use super::node::{NodeHandle, Transport};
use crate::limits::{
    PEER_BATCH_BYTES_MAX, PEER_BATCH_MESSAGES_MAX, PEER_MESSAGE_BYTES_MAX, PEER_SEND_QUEUE_MAX,
    SNAPSHOT_CHUNK_BYTES,
};
use crate::proto::internal as pb;
use crate::proto::internal::peer_client::PeerClient;
use crate::replica::clock::PeerClocks;
use crate::replica::{ClusterId, Members};

/// Peers whose traffic is dropped, in both directions: a partition made on
/// purpose. Only test builds (feature `fault-injection`) let anyone set it.
#[derive(Debug, Default, Clone)]
pub struct Faults {
    isolated: Arc<RwLock<HashSet<u64>>>,
}

impl Faults {
    pub fn is_isolated(&self, peer: u64) -> bool {
        self.isolated
            .read()
            .map(|s| s.contains(&peer))
            .unwrap_or(false)
    }

    pub fn set(&self, peers: impl IntoIterator<Item = u64>) {
        if let Ok(mut set) = self.isolated.write() {
            set.clear();
            set.extend(peers);
        }
    }
}

struct Link {
    address: String,
    queue: mpsc::Sender<Message>,
}

/// Routes the replica's outgoing messages to per-peer tasks.
pub struct GrpcTransport {
    self_id: u64,
    runtime: tokio::runtime::Handle,
    node: NodeHandle,
    members: Members,
    links: HashMap<u64, Link>,
    /// Mutual TLS between members, when they use it.
    tls: Option<Arc<PeerTls>>,
    /// Links to members just removed (or moved), closed once the messages
    /// of the turn that removed them went out: the last of those may
    /// carry the commit of a member's own removal, the only way it learns
    /// it (the leader sends a removed member nothing after that).
    closing: HashMap<u64, Link>,
    faults: Faults,
    /// What this member says of itself, and knows of the others (shared
    /// with the receiving side, `PeerService`).
    identity: Arc<Identity>,
    /// Fellow members' clocks (see `replica::clock`); each batch carries
    /// this member's reading.
    clocks: SharedClocks,
}

/// Fellow members' clocks, shared by the sending links, the receiving
/// service and the replication thread (which reads the verdict).
pub type SharedClocks = Arc<std::sync::Mutex<PeerClocks>>;

impl GrpcTransport {
    pub fn new(
        self_id: u64,
        runtime: tokio::runtime::Handle,
        node: NodeHandle,
        faults: Faults,
        tls: Option<Arc<PeerTls>>,
        identity: Arc<Identity>,
        clocks: SharedClocks,
    ) -> GrpcTransport {
        GrpcTransport {
            self_id,
            runtime,
            node,
            members: Members::new(),
            links: HashMap::new(),
            tls,
            closing: HashMap::new(),
            faults,
            identity,
            clocks,
        }
    }

    fn link_to(&self, peer: u64, address: String) -> LinkTo {
        LinkTo {
            self_id: self.self_id,
            peer,
            address,
            tls: self.tls.clone(),
            identity: self.identity.clone(),
            clocks: self.clocks.clone(),
        }
    }

    fn link(&mut self, peer: u64) -> Option<&Link> {
        if !self.links.contains_key(&peer) {
            let address = self.members.get(&peer)?.peer_address.clone();
            let (queue, receiver) = mpsc::channel(PEER_SEND_QUEUE_MAX);
            self.runtime.spawn(run_link(
                self.link_to(peer, address.clone()),
                receiver,
                self.node.clone(),
                self.faults.clone(),
            ));
            self.links.insert(peer, Link { address, queue });
        }
        self.links.get(&peer)
    }
}

impl Transport for GrpcTransport {
    fn send(&mut self, messages: Vec<Message>) {
        for message in messages {
            let to = message.to;
            if to == self.self_id || self.faults.is_isolated(to) {
                continue;
            }
            if message.get_msg_type() == MessageType::MsgSnapshot {
                let Some(address) = self.members.get(&to).map(|m| m.peer_address.clone()) else {
                    self.node.report_snapshot(to, false);
                    continue;
                };
                self.runtime.spawn(send_snapshot(
                    self.link_to(to, address),
                    message,
                    self.node.clone(),
                ));
                continue;
            }
            let link = match self.closing.get(&to) {
                Some(closing) if !self.members.contains_key(&to) => closing,
                _ => match self.link(to) {
                    Some(link) => link,
                    None => {
                        tracing::debug!(peer = to, "no address for peer; dropping message");
                        self.node.report_unreachable(to);
                        continue;
                    }
                },
            };
            if link.queue.try_send(message).is_err() {
                metrics::counter!("stockraft_peer_messages_dropped_total", "reason" => "send_queue_full")
                    .increment(1);
            }
        }
        // Dropping a link closes its queue: its task sends what is queued,
        // ends its stream and stops.
        self.closing.clear();
    }

    fn set_members(&mut self, members: &Members) {
        // Links to removed members or changed addresses close after this
        // turn's messages; new ones start on demand.
        let ids: Vec<u64> = self.links.keys().copied().collect();
        for id in ids {
            if members
                .get(&id)
                .is_some_and(|m| self.links[&id].address == m.peer_address)
            {
                continue;
            }
            if let Some(link) = self.links.remove(&id) {
                self.closing.insert(id, link);
            }
        }
        self.members = members.clone();
        self.identity.set_members(members.keys().copied());
    }

    fn set_cluster(&mut self, cluster_id: Option<ClusterId>, removed: &[u64]) {
        self.identity.set_cluster_id(cluster_id);
        if let Err(e) = self.identity.forget(removed) {
            tracing::error!("cannot forget removed members' identities: {e}");
        }
        let mut clocks = self.clocks.lock().unwrap_or_else(|p| p.into_inner());
        for id in removed {
            clocks.forget(*id);
        }
    }
}

/// How long a closed link waits for its last batches to be delivered.
const LINK_FLUSH_WAIT: Duration = Duration::from_secs(1);

/// The endpoint of member `peer` at `address`: over mutual TLS when
/// members use it, its certificate required to name `peer`.
fn endpoint(address: &str, peer: u64, tls: Option<&PeerTls>) -> Option<Endpoint> {
    let config = match tls.map(|t| t.to_member(peer)) {
        Some(Ok(config)) => Some(config),
        Some(Err(e)) => {
            tracing::error!(peer, "cannot load the member TLS files: {e}");
            return None;
        }
        None => None,
    };
    crate::client::endpoint(address, config).ok().map(|e| {
        e.connect_timeout(Duration::from_millis(500))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5))
    })
}

/// Who a link sends from, and to whom and where.
struct LinkTo {
    self_id: u64,
    peer: u64,
    address: String,
    tls: Option<Arc<PeerTls>>,
    identity: Arc<Identity>,
    clocks: SharedClocks,
}

/// One peer's sending task: connect, stream batches, reconnect on failure.
async fn run_link(
    to: LinkTo,
    mut queue: mpsc::Receiver<Message>,
    node: NodeHandle,
    faults: Faults,
) {
    let LinkTo {
        self_id,
        peer,
        address,
        tls,
        identity,
        clocks,
    } = to;
    let Some(endpoint) = endpoint(&address, peer, tls.as_deref()) else {
        tracing::warn!(peer, %address, "peer address is not usable");
        return;
    };
    let mut backoff = Duration::from_millis(50);
    loop {
        let channel = match endpoint.connect().await {
            Ok(channel) => channel,
            Err(e) => {
                tracing::debug!(peer, %address, "cannot connect: {e}");
                node.report_unreachable(peer);
                if !drain_while_down(&mut queue, backoff).await {
                    return;
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        backoff = Duration::from_millis(50);
        let mut client = PeerClient::new(channel).max_encoding_message_size(PEER_MESSAGE_BYTES_MAX);
        let (batches, stream) = mpsc::channel::<pb::PeerBatch>(4);
        let mut call = tokio::spawn(async move { client.send(ReceiverStream::new(stream)).await });
        loop {
            tokio::select! {
                finished = &mut call => {
                    tracing::debug!(peer, "peer stream ended: {:?}", finished.map(|r| r.map(|_| ())));
                    node.report_unreachable(peer);
                    break;
                }
                first = queue.recv() => {
                    let Some(first) = first else {
                        // The link was closed: what was queued is on its way;
                        // end the stream so it is delivered, not cut off.
                        drop(batches);
                        if tokio::time::timeout(LINK_FLUSH_WAIT, &mut call).await.is_err() {
                            call.abort();
                        }
                        return;
                    };
                    let mut batch = collect_batch(self_id, first, &mut queue, &faults);
                    batch.sender = Some(identity.sender());
                    batch.clock = Some(clock_reading(&clocks, peer));
                    if batch.messages.is_empty() {
                        continue;
                    }
                    metrics::histogram!("stockraft_peer_batch_messages").record(batch.messages.len() as f64);
                    if batches.send(batch).await.is_err() {
                        node.report_unreachable(peer);
                        break;
                    }
                }
            }
        }
        call.abort();
    }
}

/// This member's clock reading for `peer`, now.
fn clock_reading(clocks: &SharedClocks, peer: u64) -> pb::ClockReading {
    let now_ms = super::node::wall_clock_ms();
    let reading = clocks
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .reading_for(peer, now_ms);
    pb::ClockReading {
        clock_ms: reading.clock_ms,
        echo_ms: reading.echo_ms,
        held_ms: reading.held_ms,
    }
}

/// Waits out a backoff while dropping what is queued (stale by the time the
/// peer is back; Raft resends what matters). False when the link is closed.
async fn drain_while_down(queue: &mut mpsc::Receiver<Message>, backoff: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + backoff;
    loop {
        match tokio::time::timeout_at(deadline, queue.recv()).await {
            Ok(Some(_)) => continue,
            Ok(None) => return false,
            Err(_) => return true,
        }
    }
}

fn collect_batch(
    self_id: u64,
    first: Message,
    queue: &mut mpsc::Receiver<Message>,
    faults: &Faults,
) -> pb::PeerBatch {
    let mut batch = pb::PeerBatch {
        from: self_id,
        messages: Vec::new(),
        sender: None,
        clock: None,
    };
    let mut bytes = 0usize;
    let mut next = Some(first);
    while let Some(message) = next.take() {
        if !faults.is_isolated(message.to) {
            match message.write_to_bytes() {
                Ok(encoded) => {
                    bytes += encoded.len();
                    batch.messages.push(encoded);
                }
                Err(e) => tracing::error!("cannot encode a raft message: {e}"),
            }
        }
        if batch.messages.len() >= PEER_BATCH_MESSAGES_MAX || bytes >= PEER_BATCH_BYTES_MAX {
            break;
        }
        next = queue.try_recv().ok();
    }
    batch
}

/// Streams one snapshot to a peer in chunks and reports the outcome.
async fn send_snapshot(to: LinkTo, mut message: Message, node: NodeHandle) {
    let peer = message.to;
    let data = message.mut_snapshot().take_data();
    let delivered = match send_snapshot_parts(&to, &message, data).await {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(peer, "sending a snapshot failed: {e}");
            false
        }
    };
    node.report_snapshot(peer, delivered);
}

async fn send_snapshot_parts(
    to: &LinkTo,
    message: &Message,
    data: bytes::Bytes,
) -> Result<(), String> {
    let self_id = to.self_id;
    let endpoint = endpoint(&to.address, to.peer, to.tls.as_deref()).ok_or("bad address")?;
    let channel = endpoint.connect().await.map_err(|e| e.to_string())?;
    let mut client = PeerClient::new(channel);
    let header = message.write_to_bytes().map_err(|e| e.to_string())?;
    let total = data.len() as u64;
    let first = pb::SnapshotPart {
        from: self_id,
        message: header,
        data: Vec::new(),
        total_bytes: total,
        sender: Some(to.identity.sender()),
    };
    // Chunks are cut as the stream is sent, so only a few are in memory.
    let chunks = data.len().div_ceil(SNAPSHOT_CHUNK_BYTES);
    let rest = (0..chunks).map(move |i| {
        let start = i * SNAPSHOT_CHUNK_BYTES;
        let end = (start + SNAPSHOT_CHUNK_BYTES).min(data.len());
        pb::SnapshotPart {
            from: self_id,
            message: Vec::new(),
            data: data[start..end].to_vec(),
            total_bytes: 0,
            sender: None,
        }
    });
    let parts = std::iter::once(first).chain(rest);
    tracing::info!(
        peer = message.to,
        bytes = total,
        chunks,
        "sending a snapshot"
    );
    client
        .send_snapshot(tokio_stream::iter(parts))
        .await
        .map_err(|status| status.to_string())?;
    Ok(())
}
