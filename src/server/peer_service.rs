//! The receiving side of the peer transport (`stockraft.internal.v1.Peer`).

use std::sync::Arc;
use std::time::Duration;

use raft::eraftpb::Message;
use tokio_stream::{Stream, StreamExt as _};
use tonic::{Request, Response, Status, Streaming};

use super::identity::{Identity, Refusal};
use super::node::NodeHandle;
use super::transport::Faults;
use super::transport::SharedClocks;
use crate::limits::{
    SNAPSHOT_BYTES_MAX, SNAPSHOT_PART_WAIT_MS_MAX, SNAPSHOT_RECEIVE_BYTES_PER_S_MIN,
    SNAPSHOT_RECEIVE_MS_MIN,
};
use crate::proto::internal as pb;
use crate::proto::internal::peer_server::Peer;
use crate::replica::clock::ClockReading;
use crate::replica::wire;
use crate::tls::member_of_certificate;

pub(crate) struct PeerService {
    node: NodeHandle,
    faults: Faults,
    /// Members talk over mutual TLS: every message must come from the
    /// member its sender's certificate names.
    identified: bool,
    /// Held while a snapshot is being received (see `send_snapshot`).
    receiving: tokio::sync::Mutex<()>,
    /// How long to wait for each part of a snapshot.
    limits: ReceiveLimits,
    /// Refuses members of other clusters and members on a new data dir.
    identity: Arc<Identity>,
    /// Takes in each batch's clock reading (see `replica::clock`).
    clocks: SharedClocks,
    /// `stockraft_peer_clock_offset_ms` per member, registered once each
    /// (not looked up by a freshly formatted label on every batch).
    offset_gauges: std::sync::Mutex<std::collections::BTreeMap<u64, metrics::Gauge>>,
}

/// How long a snapshot may take to arrive: each part, and the whole.
#[derive(Debug, Clone, Copy)]
struct ReceiveLimits {
    part_wait: Duration,
    /// The least time any snapshot gets.
    floor: Duration,
    /// The slowest average rate allowed beyond the floor.
    bytes_per_s: u64,
}

impl ReceiveLimits {
    const SERVER: ReceiveLimits = ReceiveLimits {
        part_wait: Duration::from_millis(SNAPSHOT_PART_WAIT_MS_MAX),
        floor: Duration::from_millis(SNAPSHOT_RECEIVE_MS_MIN),
        bytes_per_s: SNAPSHOT_RECEIVE_BYTES_PER_S_MIN,
    };

    /// How long a snapshot of `total_bytes` may take to arrive.
    fn budget(&self, total_bytes: u64) -> Duration {
        let at_rate_ms = total_bytes.saturating_mul(1_000) / self.bytes_per_s.max(1);
        self.floor.saturating_add(Duration::from_millis(at_rate_ms))
    }
}

impl PeerService {
    /// The member the caller's certificate names, when members use mutual
    /// TLS (None otherwise: nothing to check against).
    fn sender<T>(&self, request: &Request<T>) -> Result<Option<u64>, Status> {
        if !self.identified {
            return Ok(None);
        }
        let named = request
            .peer_certs()
            .and_then(|certs| certs.first().and_then(|c| member_of_certificate(c)));
        match named {
            Some(id) => Ok(Some(id)),
            None => {
                metrics::counter!("stockraft_peer_messages_refused_total", "reason" => "no_member_certificate")
                    .increment(1);
                Err(Status::permission_denied(
                    "Raft traffic needs a member's certificate (one naming member-ID.stockraft)",
                ))
            }
        }
    }

    /// Refuses traffic that claims to come from another member than the
    /// caller's certificate names.
    fn check_sender(&self, certified: Option<u64>, claimed: u64) -> Result<(), Status> {
        match certified {
            Some(id) if id != claimed => {
                metrics::counter!("stockraft_peer_messages_refused_total", "reason" => "sender_not_certified")
                    .increment(1);
                tracing::warn!(
                    certified = id,
                    claimed,
                    "refused Raft traffic claiming another member's id"
                );
                Err(Status::permission_denied(format!(
                    "the certificate names member {id}, the traffic claims member {claimed}"
                )))
            }
            _ => Ok(()),
        }
    }

    pub fn new(
        node: NodeHandle,
        faults: Faults,
        identified: bool,
        identity: Arc<Identity>,
        clocks: SharedClocks,
    ) -> PeerService {
        PeerService {
            node,
            faults,
            identified,
            receiving: tokio::sync::Mutex::new(()),
            limits: ReceiveLimits::SERVER,
            identity,
            clocks,
            offset_gauges: std::sync::Mutex::default(),
        }
    }

    /// Takes in what `from` says of its clock; the offset is a metric.
    fn observe_clock(&self, from: u64, reading: Option<&pb::ClockReading>) {
        let Some(reading) = reading else {
            return;
        };
        if !self.identity.is_member(from) {
            return;
        }
        let now_ms = super::node::wall_clock_ms();
        let reading = ClockReading {
            clock_ms: reading.clock_ms,
            echo_ms: reading.echo_ms,
            held_ms: reading.held_ms,
        };
        let sample = {
            let mut clocks = self.clocks.lock().unwrap_or_else(|p| p.into_inner());
            clocks.observe(from, &reading, now_ms);
            clocks.sample(from)
        };
        let Some(sample) = sample else {
            return;
        };
        let mut gauges = self.offset_gauges.lock().unwrap_or_else(|p| p.into_inner());
        gauges
            .entry(from)
            .or_insert_with(
                || metrics::gauge!("stockraft_peer_clock_offset_ms", "peer" => from.to_string()),
            )
            .set(sample.offset_ms as f64);
    }

    /// Checks who the sender says it is (see `server::identity`).
    fn check_identity(&self, from: u64, sender: Option<&pb::Sender>) -> Result<(), Status> {
        self.identity
            .check(from, sender)
            .map_err(|refusal| match refusal {
                Refusal::Unrecorded { .. } => Status::unavailable(refusal.to_string()),
                _ => Status::permission_denied(refusal.to_string()),
            })
    }
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn send(
        &self,
        request: Request<Streaming<pb::PeerBatch>>,
    ) -> Result<Response<pb::PeerAck>, Status> {
        let sender = self.sender(&request)?;
        let mut stream = request.into_inner();
        while let Some(batch) = stream.message().await? {
            self.check_sender(sender, batch.from)?;
            self.check_identity(batch.from, batch.sender.as_ref())?;
            if self.faults.is_isolated(batch.from) {
                continue;
            }
            self.observe_clock(batch.from, batch.clock.as_ref());
            for bytes in batch.messages {
                let message = wire::decode_message(bytes::Bytes::from(bytes))
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
        // One snapshot at a time: each may reserve up to SNAPSHOT_BYTES_MAX,
        // and only the leader has a reason to send one. A second stream
        // (a leader's retry while a stalled stream is still held, or a
        // stale leader) is told to come back later; raft-rs on its side
        // hears that the send failed and sends again.
        let sender = self.sender(&request)?;
        let Ok(_receiving) = self.receiving.try_lock() else {
            return Err(Status::unavailable(
                "already receiving a snapshot from a peer; send again later",
            ));
        };
        let mut stream = request.into_inner();
        let Some(first) = next_part(&mut stream, self.limits.part_wait).await? else {
            return Err(Status::invalid_argument("empty snapshot stream"));
        };
        self.check_sender(sender, first.from)?;
        self.check_identity(first.from, first.sender.as_ref())?;
        if self.faults.is_isolated(first.from) {
            return Err(Status::unavailable(
                "isolated from this peer (fault injection)",
            ));
        }
        let from = first.from;
        let message = receive_snapshot(first, &mut stream, self.limits).await?;
        tracing::info!(
            from,
            bytes = message.get_snapshot().get_data().len(),
            "received a snapshot"
        );
        self.node.step(message);
        Ok(Response::new(pb::PeerAck {}))
    }
}

/// Test builds only (the `fault-injection` feature): partitions made on
/// purpose. A server built without the feature never serves it.
#[cfg(feature = "fault-injection")]
pub(crate) struct FaultService {
    faults: Faults,
}

#[cfg(feature = "fault-injection")]
impl FaultService {
    pub fn new(faults: Faults) -> FaultService {
        FaultService { faults }
    }
}

#[cfg(feature = "fault-injection")]
#[tonic::async_trait]
impl crate::proto::internal::fault_injection_server::FaultInjection for FaultService {
    async fn set_faults(
        &self,
        request: Request<pb::Faults>,
    ) -> Result<Response<pb::PeerAck>, Status> {
        let faults = request.into_inner();
        tracing::warn!(isolated = ?faults.isolate_from, "fault injection: isolating peers");
        self.faults.set(faults.isolate_from);
        Ok(Response::new(pb::PeerAck {}))
    }
}

/// The next part of a snapshot stream, or `None` at its end. A sender that
/// sends nothing for `part_wait` is dropped (see `SNAPSHOT_PART_WAIT_MS_MAX`).
async fn next_part<S>(
    stream: &mut S,
    part_wait: Duration,
) -> Result<Option<pb::SnapshotPart>, Status>
where
    S: Stream<Item = Result<pb::SnapshotPart, Status>> + Unpin,
{
    match tokio::time::timeout(part_wait, stream.next()).await {
        Ok(Some(part)) => part.map(Some),
        Ok(None) => Ok(None),
        Err(_) => Err(Status::deadline_exceeded(format!(
            "no part of the snapshot arrived for {} ms; dropped it",
            part_wait.as_millis()
        ))),
    }
}

/// Reserves the buffer a snapshot of `total_bytes` is received into.
///
/// The size is the sender's word, checked against `bytes_max`
/// (`SNAPSHOT_BYTES_MAX` in the server).
/// Reserving it whole keeps the image in one buffer that is never copied
/// as it grows (one image's worth of memory, not up to three). The
/// reservation is fallible: a machine that cannot give that much address
/// space answers RESOURCE_EXHAUSTED instead of aborting the process.
fn snapshot_buffer(total_bytes: u64, bytes_max: u64) -> Result<Vec<u8>, Status> {
    if total_bytes > bytes_max {
        return Err(Status::resource_exhausted(format!(
            "snapshot of {total_bytes} bytes is over the {bytes_max} byte limit"
        )));
    }
    let bytes = usize::try_from(total_bytes).map_err(|_| {
        Status::resource_exhausted(format!(
            "snapshot of {total_bytes} bytes does not fit this machine's address space"
        ))
    })?;
    let mut data = Vec::new();
    data.try_reserve_exact(bytes).map_err(|e| {
        Status::resource_exhausted(format!(
            "cannot reserve {total_bytes} bytes to receive a snapshot: {e}"
        ))
    })?;
    Ok(data)
}

/// Receives the data of a snapshot whose first part is `first` and returns
/// the raft message it belongs to, with the data in place.
///
/// Every refusal (over the limit, longer or shorter than announced, not a
/// raft message, a stalled sender) drops what was received: raft-rs is
/// stepped with a snapshot only when it arrived whole.
async fn receive_snapshot<S>(
    mut first: pb::SnapshotPart,
    stream: &mut S,
    limits: ReceiveLimits,
) -> Result<Message, Status>
where
    S: Stream<Item = Result<pb::SnapshotPart, Status>> + Unpin,
{
    let total_bytes = first.total_bytes;
    let mut data = snapshot_buffer(total_bytes, SNAPSHOT_BYTES_MAX)?;
    let header = std::mem::take(&mut first.message);
    let mut message = wire::decode_message(bytes::Bytes::from(header))
        .map_err(|e| Status::invalid_argument(format!("not a raft message: {e}")))?;
    // As `send` checks each message of a batch: the sender the stream
    // names (which fault injection isolates by) is the message's own.
    if message.from != first.from {
        return Err(Status::invalid_argument(format!(
            "snapshot message from node {} in a stream from node {}",
            message.from, first.from
        )));
    }
    // The whole of it, at the slowest rate allowed (see
    // SNAPSHOT_RECEIVE_BYTES_PER_S_MIN): a sender trickling parts just
    // inside `part_wait` cannot hold the receiving slot for ever.
    let deadline = tokio::time::Instant::now() + limits.budget(total_bytes);
    // The first part may carry data too; it is taken like the others.
    let mut part = Some(first);
    while let Some(received) = part {
        // `total_bytes` is at most SNAPSHOT_BYTES_MAX and `data` never
        // grows past it, so the sum cannot wrap.
        if (data.len() + received.data.len()) as u64 > total_bytes {
            return Err(Status::invalid_argument(
                "snapshot is longer than announced",
            ));
        }
        data.extend_from_slice(&received.data);
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return Err(Status::deadline_exceeded(format!(
                "the snapshot ({total_bytes} bytes) arrived slower than {} bytes/s; dropped it",
                limits.bytes_per_s
            )));
        }
        part = next_part(stream, limits.part_wait.min(left)).await?;
    }
    if data.len() as u64 != total_bytes {
        return Err(Status::invalid_argument(format!(
            "snapshot is shorter than announced: {} of {total_bytes} bytes",
            data.len()
        )));
    }
    message.mut_snapshot().data = data.into();
    Ok(message)
}

#[cfg(test)]
mod tests {
    use protobuf::Message as _;

    use super::*;
    use raft::eraftpb::MessageType;

    const WAIT: Duration = Duration::from_millis(50);

    async fn receive_snapshot_for_test<S>(
        first: pb::SnapshotPart,
        stream: &mut S,
        part_wait: Duration,
    ) -> Result<Message, Status>
    where
        S: Stream<Item = Result<pb::SnapshotPart, Status>> + Unpin,
    {
        let limits = ReceiveLimits {
            part_wait,
            ..ReceiveLimits::SERVER
        };
        receive_snapshot(first, stream, limits).await
    }

    /// A sender trickling parts each just inside the wait for the next is
    /// dropped once the whole is late at the slowest rate allowed.
    #[tokio::test]
    async fn a_trickling_sender_is_dropped() {
        let trickle = tokio_stream::iter(std::iter::repeat_with(|| data_part(b"x")))
            .throttle(Duration::from_millis(20));
        let mut trickle = Box::pin(trickle);
        // 1,000 bytes at 1,000 bytes/s at the slowest, 200 ms on top: they
        // come at 50 bytes/s, each part well inside the wait for the next.
        let limits = ReceiveLimits {
            part_wait: WAIT,
            floor: Duration::from_millis(200),
            bytes_per_s: 1_000,
        };
        let started = tokio::time::Instant::now();
        let status = receive_snapshot(first_part(1_000, b""), &mut trickle, limits)
            .await
            .expect_err("trickled");
        assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    fn first_part(total_bytes: u64, data: &[u8]) -> pb::SnapshotPart {
        let mut message = Message::default();
        message.set_msg_type(MessageType::MsgSnapshot);
        message.from = 1;
        message.to = 2;
        message.mut_snapshot().mut_metadata().index = 7;
        pb::SnapshotPart {
            from: 1,
            message: message.write_to_bytes().expect("encodes"),
            data: data.to_vec(),
            total_bytes,
            sender: None,
        }
    }

    fn data_part(data: &[u8]) -> Result<pb::SnapshotPart, Status> {
        Ok(pb::SnapshotPart {
            from: 1,
            message: Vec::new(),
            data: data.to_vec(),
            total_bytes: 0,
            sender: None,
        })
    }

    #[tokio::test]
    async fn a_snapshot_arrives_whole_with_its_message() {
        let mut rest =
            tokio_stream::iter(vec![data_part(b"defg"), data_part(b""), data_part(b"hi")]);
        let message = receive_snapshot_for_test(first_part(9, b"abc"), &mut rest, WAIT)
            .await
            .expect("received");
        assert_eq!(message.get_snapshot().get_metadata().index, 7);
        assert_eq!(message.to, 2);
        assert_eq!(message.get_snapshot().get_data(), b"abcdefghi");
    }

    #[tokio::test]
    async fn a_snapshot_longer_or_shorter_than_announced_is_refused() {
        let mut longer = tokio_stream::iter(vec![data_part(b"abcd"), data_part(b"e")]);
        let status = receive_snapshot_for_test(first_part(4, b""), &mut longer, WAIT)
            .await
            .expect_err("longer than announced");
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.message().contains("longer"), "{}", status.message());

        let mut shorter = tokio_stream::iter(vec![data_part(b"abc")]);
        let status = receive_snapshot_for_test(first_part(4, b""), &mut shorter, WAIT)
            .await
            .expect_err("shorter than announced");
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(
            status.message().contains("3 of 4 bytes"),
            "{}",
            status.message()
        );
    }

    #[tokio::test]
    async fn a_snapshot_over_the_limit_is_refused_before_anything_is_read() {
        // The stream after the first part never ends: a refusal that read
        // on would wait for the part timeout and answer DEADLINE_EXCEEDED.
        let mut rest = tokio_stream::pending();
        let status =
            receive_snapshot_for_test(first_part(SNAPSHOT_BYTES_MAX + 1, b""), &mut rest, WAIT)
                .await
                .expect_err("over the limit");
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    }

    #[test]
    fn a_reservation_the_machine_cannot_give_is_an_answer_not_an_abort() {
        // Past isize::MAX no allocator can give it; `Vec::with_capacity`
        // would panic (or abort, for a size the allocator refuses).
        let status = snapshot_buffer(u64::MAX / 2 + 1, u64::MAX).expect_err("cannot reserve");
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert!(
            status.message().contains("cannot reserve"),
            "{}",
            status.message()
        );
        let buffer = snapshot_buffer(4096, SNAPSHOT_BYTES_MAX).expect("small reservation");
        assert!(buffer.is_empty());
        assert!(buffer.capacity() >= 4096);
    }

    #[tokio::test]
    async fn a_stalled_sender_is_dropped() {
        let mut rest = tokio_stream::iter(vec![data_part(b"ab")]).chain(tokio_stream::pending());
        let status = receive_snapshot_for_test(first_part(4, b""), &mut rest, WAIT)
            .await
            .expect_err("stalled");
        assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
    }

    #[tokio::test]
    async fn a_snapshot_whose_message_names_another_sender_is_refused() {
        let mut rest = tokio_stream::iter(Vec::new());
        let mut first = first_part(0, b"");
        first.from = 3;
        let status = receive_snapshot_for_test(first, &mut rest, WAIT)
            .await
            .expect_err("another sender");
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(
            status
                .message()
                .contains("from node 1 in a stream from node 3"),
            "{}",
            status.message()
        );
    }

    #[tokio::test]
    async fn a_first_part_that_is_not_a_raft_message_is_refused() {
        let mut rest = tokio_stream::iter(Vec::new());
        let mut first = first_part(0, b"");
        first.message = vec![0xff; 3];
        let status = receive_snapshot_for_test(first, &mut rest, WAIT)
            .await
            .expect_err("not a raft message");
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
    }
}
