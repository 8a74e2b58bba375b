//! [`Node`]: the running replication thread, started over a replica and
//! stopped once what it wrote is durable and answered.

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::thread::JoinHandle;

use arc_swap::ArcSwap;
use tokio::sync::watch;

use super::answers::{relay_answers, Relayed};
use super::run::{run, Channels};
use super::{sync, ClientInput, MembersView, NodeConfig, NodeHandle, Transport};
use crate::limits::{PEER_QUEUE_MAX, QUEUE_REQUESTS_MAX};
use crate::replica::{LogStore, Replica};

/// The running replication thread.
pub struct Node {
    handle: NodeHandle,
    thread: Option<JoinHandle<()>>,
}

impl Node {
    /// Starts the replication thread over `replica`. `transport` is built
    /// with the node's handle, so it can report unreachable peers.
    ///
    /// `answers_on`: the tokio runtime the callers wait on. The thread then
    /// hands each turn's answers to one task there (see [`Relayed`]).
    pub fn start<S, T>(
        replica: Replica<S>,
        transport: impl FnOnce(NodeHandle) -> T,
        config: NodeConfig,
        answers_on: Option<tokio::runtime::Handle>,
    ) -> std::io::Result<Node>
    where
        S: LogStore + Send + 'static,
        T: Transport,
    {
        let queued_max = config.queue_max.clamp(1, QUEUE_REQUESTS_MAX);
        let (tx, rx) = crossbeam_channel::bounded(queued_max);
        let queued = Arc::new(AtomicUsize::new(0));
        let (peer_tx, peer_rx) = crossbeam_channel::bounded(PEER_QUEUE_MAX);
        let sync = sync::spawn(replica.store().syncer())?;
        let (status_tx, status_rx) = watch::channel(replica.status());
        let members = Arc::new(ArcSwap::from_pointee(MembersView {
            members: replica.members().clone(),
            conf_state: replica.conf_state(),
        }));
        let handle = NodeHandle {
            tx,
            peer_tx,
            shared: replica.shared(),
            members: members.clone(),
            status: status_rx,
            startup_commit_index: config.startup_commit_index,
            queued: queued.clone(),
            queued_max,
            digests: Arc::new(tokio::sync::Semaphore::new(1)),
        };
        let mut transport = transport(handle.clone());
        transport.set_members(replica.members());
        transport.set_cluster(replica.cluster_id(), &[]);
        let channels = Channels {
            rx,
            peer_rx,
            sync_tx: sync.requests,
            synced: sync.synced,
            synced_wake: sync.wake,
            status_tx,
            members,
            queued,
        };
        let sync_thread = sync.thread;
        let relay = answers_on.map(start_relay);
        let thread = std::thread::Builder::new()
            .name("replica".into())
            .spawn(move || {
                run(replica, transport, &channels, config, relay);
                // The sync thread holds the store open: it ends when its
                // queue closes and is joined before the store is reopened.
                drop(channels);
                let _ = sync_thread.join();
            })?;
        Ok(Node {
            handle,
            thread: Some(thread),
        })
    }

    pub fn handle(&self) -> NodeHandle {
        self.handle.clone()
    }

    /// Stops the thread after the batch in progress is durable and answered.
    pub fn stop(mut self) {
        self.stop_inner();
    }

    fn stop_inner(&mut self) {
        // A blocking send: shutdown must get through even when the queue is full.
        let _ = self.handle.tx.send(ClientInput::Shutdown);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop_inner();
    }
}

/// Starts the task on `runtime` that completes the callers' oneshots (see
/// [`Relayed`]); without a runtime the thread completes them itself.
fn start_relay(
    runtime: tokio::runtime::Handle,
) -> tokio::sync::mpsc::UnboundedSender<Vec<Relayed>> {
    let (relay_tx, relay_rx) = tokio::sync::mpsc::unbounded_channel::<Vec<Relayed>>();
    runtime.spawn(relay_answers(relay_rx));
    relay_tx
}
