//! Every bound stockraft enforces, in one place.
//!
//! Following TigerBeetle's rule that everything has a limit: a request, a
//! queue, a batch or a table that can grow without bound is a way to take the
//! server down. Each limit here is checked where input enters (the request is
//! refused with a clear status) and asserted where it matters inside.

/// Longest reservation id or transaction id, in bytes.
pub const ID_BYTES_MAX: usize = 128;

/// Longest SKU or node name, in bytes.
pub const NAME_BYTES_MAX: usize = 128;

/// Most lines in one reservation.
pub const LINES_PER_RESERVATION_MAX: usize = 1_000;

/// Largest quantity in one line, sale or adjustment.
pub const QTY_MAX: i64 = 1_000_000_000;

/// Largest magnitude of on_hand, reserved or safety stock on one counter.
/// Far above any real stock, and far below i64::MAX, so that sums of many
/// counters (total availability of a SKU over all its nodes) cannot overflow.
pub const COUNTER_MAX: i64 = 1_000_000_000_000;

/// Most SKUs in one availability read.
pub const SKUS_PER_READ_MAX: usize = 1_000;

/// Most nodes named in one availability read.
pub const NODES_PER_READ_MAX: usize = 1_000;

/// Most client connections a listener keeps open at once (each holds
/// HTTP/2 buffers and a task); one past it is closed at once.
pub const CONNECTIONS_MAX: usize = 4_096;

/// Most calls in flight on one HTTP/2 connection (its
/// SETTINGS_MAX_CONCURRENT_STREAMS): a client wanting more opens more
/// connections, which [`CONNECTIONS_MAX`] bounds.
pub const STREAMS_PER_CONNECTION_MAX: u32 = 1_024;

/// Most (sku, node) rows one availability read answers: a thousand SKUs
/// over a thousand nodes would be a million rows (tens of megabytes) for
/// one small request.
pub const AVAILABILITY_ROWS_MAX: usize = 10_000;

/// Most nodes that can stock one SKU. Bounds the per-SKU node list, which is
/// scanned to total a SKU's availability.
pub const NODES_PER_SKU_MAX: usize = 10_000;

/// Most (sku, node) counters in the state machine.
pub const COUNTERS_MAX: usize = 50_000_000;

/// Most reservations open at once.
pub const RESERVATIONS_OPEN_MAX: usize = 10_000_000;

/// Most finished reservations and transaction ids remembered for retries, by
/// default. When more are finished within the retention window, the oldest
/// are forgotten first, so memory stays bounded at any traffic.
pub const ID_RETAINED_MAX_DEFAULT: u64 = 20_000_000;

/// Most finished reservations and transaction ids any setting may keep
/// (about 64 GB of them): under 2^32, which the retained outcomes' index
/// relies on.
pub const ID_RETAINED_MAX: u64 = 1_000_000_000;

/// Longest time-to-live a reservation may ask for: 7 days.
pub const TTL_MS_MAX: u64 = 7 * 24 * 3_600 * 1_000;

/// Default time-to-live of a reservation when the request leaves it 0.
pub const TTL_MS_DEFAULT: u64 = 15 * 60 * 1_000;

/// How long ids are remembered for exactly-once retries, by default: 24 h.
pub const ID_RETENTION_MS_DEFAULT: u64 = 24 * 3_600 * 1_000;

/// Most client commands in one Raft log entry (one group commit).
pub const BATCH_COMMANDS_MAX: usize = 4_096;

/// Log writes waiting for their sync before the leader proposes another
/// batch (persistence off the replication thread): one being synced and
/// one written behind it. More would make batches smaller (each carrying
/// what arrived since the last) without syncing more often.
pub const UNSYNCED_WRITES_MAX: usize = 2;

/// Most bytes of encoded commands in one Raft log entry.
pub const BATCH_BYTES_MAX: usize = 4 * 1024 * 1024;

/// Most requests waiting for the replication loop. Beyond this the server
/// answers RESOURCE_EXHAUSTED instead of queueing without bound.
pub const QUEUE_REQUESTS_MAX: usize = 65_536;

/// Most bytes in one gRPC request the public service accepts.
pub const REQUEST_BYTES_MAX: usize = 4 * 1024 * 1024;

/// Most raft messages (or transport reports) waiting for the replication
/// thread. Beyond this, messages are dropped; Raft retransmits.
pub const PEER_QUEUE_MAX: usize = 16_384;

/// Most raft messages queued for sending to one peer. A peer that is down or
/// slow fills its queue and further messages to it are dropped (Raft
/// retransmits), so it never slows the others.
pub const PEER_SEND_QUEUE_MAX: usize = 4_096;

/// Most raft messages sent to a peer in one batch.
pub const PEER_BATCH_MESSAGES_MAX: usize = 512;

/// Most bytes of raft messages sent to a peer in one batch.
pub const PEER_BATCH_BYTES_MAX: usize = 8 * 1024 * 1024;

/// Largest message the peer service accepts (a batch of appends).
pub const PEER_MESSAGE_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Bytes of snapshot data per chunk on the wire.
pub const SNAPSHOT_CHUNK_BYTES: usize = 1024 * 1024;

/// Largest snapshot a node accepts from a peer.
pub const SNAPSHOT_BYTES_MAX: u64 = 16 * 1024 * 1024 * 1024;

/// Longest a node waits for the next part of a snapshot it is receiving.
/// The sender streams from memory, so a gap this long means it stalled;
/// the stream is dropped, with the buffer reserved for it, so a stalled
/// peer cannot hold a snapshot's memory (or the one receiving slot) for
/// ever. Raft-rs on the leader is told and sends again later.
pub const SNAPSHOT_PART_WAIT_MS_MAX: u64 = 30_000;

/// The slowest a snapshot may arrive, on average, once its size is known:
/// a sender trickling one part just inside [`SNAPSHOT_PART_WAIT_MS_MAX`]
/// would otherwise hold the one receiving slot for days. A snapshot of
/// `n` bytes gets [`SNAPSHOT_RECEIVE_MS_MIN`] plus `n` at this rate.
pub const SNAPSHOT_RECEIVE_BYTES_PER_S_MIN: u64 = 1024 * 1024;

/// The least time any snapshot gets to arrive.
pub const SNAPSHOT_RECEIVE_MS_MIN: u64 = 60_000;

/// Most operations of one `Stream` call running at once.
pub const STREAM_IN_FLIGHT_MAX: usize = 1_024;

/// How far a leader's clock may be from a majority's before it stops
/// stamping and steps down (`--max-clock-offset`), by default; see
/// `replica::clock`.
pub const CLOCK_OFFSET_MS_DEFAULT: u64 = 500;

/// The most `--max-clock-offset` accepts: past a minute the bound says
/// nothing a hold's time-to-live would notice.
pub const CLOCK_OFFSET_MS_MAX: u64 = 60_000;

/// A clock sample older than this counts for nothing: a leader hears from
/// its followers every heartbeat (200 ms by default), so a fresh sample is
/// always at hand; a clock that jumps makes every sample look stale.
pub const CLOCK_SAMPLE_FRESH_MS: u64 = 2_000;
