//! The receiving side of the peer transport (`stockraft.internal.v1.Peer`).

use protobuf::Message as _;
use raft::eraftpb::Message;
use tonic::{Request, Response, Status, Streaming};

use super::node::NodeHandle;
use super::transport::Faults;
use crate::limits::SNAPSHOT_BYTES_MAX;
use crate::proto::internal as pb;
use crate::proto::internal::peer_server::Peer;

pub struct PeerService {
    node: NodeHandle,
    faults: Faults,
}

impl PeerService {
    pub fn new(node: NodeHandle, faults: Faults) -> PeerService {
        PeerService { node, faults }
    }
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn send(
        &self,
        request: Request<Streaming<pb::PeerBatch>>,
    ) -> Result<Response<pb::PeerAck>, Status> {
        let mut stream = request.into_inner();
        while let Some(batch) = stream.message().await? {
            if self.faults.is_isolated(batch.from) {
                continue;
            }
            for bytes in batch.messages {
                let message = Message::parse_from_bytes(&bytes)
                    .map_err(|e| Status::invalid_argument(format!("not a raft message: {e}")))?;
                if message.from != batch.from {
                    return Err(Status::invalid_argument(
                        "raft message sender does not match the batch",
                    ));
                }
                self.node.step(message);
            }
        }
        Ok(Response::new(pb::PeerAck {}))
    }

    async fn send_snapshot(
        &self,
        request: Request<Streaming<pb::SnapshotPart>>,
    ) -> Result<Response<pb::PeerAck>, Status> {
        let mut stream = request.into_inner();
        let Some(first) = stream.message().await? else {
            return Err(Status::invalid_argument("empty snapshot stream"));
        };
        if self.faults.is_isolated(first.from) {
            return Err(Status::unavailable(
                "isolated from this peer (fault injection)",
            ));
        }
        if first.total_bytes > SNAPSHOT_BYTES_MAX {
            return Err(Status::resource_exhausted(format!(
                "snapshot of {} bytes is over the {SNAPSHOT_BYTES_MAX} byte limit",
                first.total_bytes
            )));
        }
        let mut message = Message::parse_from_bytes(&first.message)
            .map_err(|e| Status::invalid_argument(format!("not a raft message: {e}")))?;
        let mut data = Vec::with_capacity(first.total_bytes as usize);
        while let Some(part) = stream.message().await? {
            if (data.len() + part.data.len()) as u64 > first.total_bytes {
                return Err(Status::invalid_argument(
                    "snapshot is longer than announced",
                ));
            }
            data.extend_from_slice(&part.data);
        }
        if data.len() as u64 != first.total_bytes {
            return Err(Status::invalid_argument(
                "snapshot is shorter than announced",
            ));
        }
        message.mut_snapshot().data = data.into();
        tracing::info!(
            from = first.from,
            bytes = first.total_bytes,
            "received a snapshot"
        );
        self.node.step(message);
        Ok(Response::new(pb::PeerAck {}))
    }

    async fn set_faults(
        &self,
        request: Request<pb::Faults>,
    ) -> Result<Response<pb::PeerAck>, Status> {
        if !cfg!(feature = "fault-injection") {
            return Err(Status::unimplemented(
                "fault injection is only in test builds (cargo feature fault-injection)",
            ));
        }
        let faults = request.into_inner();
        tracing::warn!(isolated = ?faults.isolate_from, "fault injection: isolating peers");
        self.faults.set(faults.isolate_from);
        Ok(Response::new(pb::PeerAck {}))
    }
}
