//! A streaming call's messages a group at a time. Handed over in chunks:
//! the sending side passes a whole group of messages with one channel
//! operation, the receiving side (tonic, encoding a streaming call's
//! messages) takes them one by one. And taken as they are: [`ready_now`]
//! takes the messages a stream has already received without waiting for
//! more, so a reader handles them as one group.
//!
//! A `Stream` session answers a group of writes at once, and the load
//! harness sends a burst of calls after each burst of answers. Through a
//! channel of single messages each one costs a send, a receive and the
//! channel's bound (a semaphore) on both sides, a visible share of the
//! workers' time under a streaming load; here that is paid once per chunk.
//!
//! The bound, when there is one, still counts messages, not chunks: a
//! sender waits while the stream holds `room` messages its reader has not
//! taken, so a peer that stops reading holds back its own answers and no
//! more.

use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use thiserror::Error;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_stream::Stream;

/// The reading side is gone: nothing sent will be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("the stream's reader is gone")]
pub(crate) struct Closed;

/// A chunk in the channel, with the room its messages take until read.
struct Chunk<T> {
    items: Vec<T>,
    room: Option<OwnedSemaphorePermit>,
}

/// The sending side; cloned freely.
pub(crate) struct ChunkSender<T> {
    tx: mpsc::UnboundedSender<Chunk<T>>,
    /// Messages that may wait unread, when bounded.
    room: Option<Arc<Semaphore>>,
    room_max: usize,
}

impl<T> Clone for ChunkSender<T> {
    fn clone(&self) -> Self {
        ChunkSender {
            tx: self.tx.clone(),
            room: self.room.clone(),
            room_max: self.room_max,
        }
    }
}

/// The receiving side: a `Stream` of the messages, in the order sent.
pub struct Chunked<T> {
    rx: mpsc::UnboundedReceiver<Chunk<T>>,
    /// The chunk being read, and its room (given back once it is read).
    current: std::vec::IntoIter<T>,
    current_room: Option<OwnedSemaphorePermit>,
}

/// A chunked stream. With `room`, at most that many messages wait unread
/// ([`ChunkSender::send`] waits for room); without, the sender's own
/// bound on what it has in flight is the bound.
pub(crate) fn chunked<T>(room: Option<usize>) -> (ChunkSender<T>, Chunked<T>) {
    let (tx, rx) = mpsc::unbounded_channel();
    // A chunk's messages are counted in one u32 of permits.
    let room_max = room
        .unwrap_or(usize::MAX)
        .clamp(1, (u32::MAX as usize).min(Semaphore::MAX_PERMITS));
    let sender = ChunkSender {
        tx,
        room: room.map(|_| Arc::new(Semaphore::new(room_max))),
        room_max,
    };
    let receiver = Chunked {
        rx,
        current: Vec::new().into_iter(),
        current_room: None,
    };
    (sender, receiver)
}

impl<T> ChunkSender<T> {
    /// Hands `items` to the stream as one chunk (or a few, should it be
    /// larger than the room), waiting for room when bounded.
    pub async fn send(&self, mut items: Vec<T>) -> Result<(), Closed> {
        while items.len() > self.room_max {
            let rest = items.split_off(self.room_max);
            self.send_fitting(items).await?;
            items = rest;
        }
        self.send_fitting(items).await
    }

    /// One message.
    pub(crate) async fn send_one(&self, item: T) -> Result<(), Closed> {
        self.send(vec![item]).await
    }

    async fn send_fitting(&self, items: Vec<T>) -> Result<(), Closed> {
        if items.is_empty() {
            return Ok(());
        }
        let room = match &self.room {
            Some(semaphore) => Some(
                semaphore
                    .clone()
                    .acquire_many_owned(count(&items)?)
                    .await
                    .map_err(|_| Closed)?,
            ),
            None => None,
        };
        self.deliver(items, room)
    }

    /// Hands `items` over without waiting; only for an unbounded stream
    /// (a bounded one with no room now is reported closed, as a reader
    /// that holds back is stuck).
    pub(crate) fn try_send(&self, items: Vec<T>) -> Result<(), Closed> {
        if items.is_empty() {
            return Ok(());
        }
        let room = match &self.room {
            Some(semaphore) => Some(
                semaphore
                    .clone()
                    .try_acquire_many_owned(count(&items)?)
                    .map_err(|_| Closed)?,
            ),
            None => None,
        };
        self.deliver(items, room)
    }

    fn deliver(&self, items: Vec<T>, room: Option<OwnedSemaphorePermit>) -> Result<(), Closed> {
        self.tx.send(Chunk { items, room }).map_err(|_| Closed)
    }
}

/// A chunk's messages as permits: at most `room_max`, which fits.
fn count<T>(items: &[T]) -> Result<u32, Closed> {
    u32::try_from(items.len()).map_err(|_| Closed)
}

impl<T: Unpin> Stream for Chunked<T> {
    type Item = T;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        loop {
            if let Some(item) = self.current.next() {
                return Poll::Ready(Some(item));
            }
            // The chunk is read: its room goes back to the sender.
            self.current_room = None;
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some(chunk)) => {
                    self.current = chunk.items.into_iter();
                    self.current_room = chunk.room;
                }
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// Polls a future once: its output if it is ready now. Used to take the
/// messages a stream has already received without waiting for more.
pub(crate) fn ready_now<F: Future>(future: F) -> Option<F::Output> {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    match future.as_mut().poll(&mut cx) {
        Poll::Ready(output) => Some(output),
        Poll::Pending => None,
    }
}

#[cfg(test)]
mod tests {
    use tokio_stream::StreamExt;

    use super::*;

    #[tokio::test]
    async fn messages_come_out_one_by_one_in_the_order_sent() {
        let (tx, rx) = chunked(None);
        tx.send(vec![1, 2, 3]).await.unwrap();
        tx.send_one(4).await.unwrap();
        tx.try_send(vec![5, 6]).unwrap();
        tx.send(Vec::new()).await.unwrap();
        drop(tx);
        let got: Vec<i32> = rx.collect().await;
        assert_eq!(got, vec![1, 2, 3, 4, 5, 6]);
    }

    #[tokio::test]
    async fn a_bounded_sender_waits_until_its_messages_are_read() {
        let (tx, mut rx) = chunked(Some(4));
        tx.send(vec![1, 2, 3]).await.unwrap();
        // Two more would make five unread: no room until the chunk is read.
        assert_eq!(tx.try_send(vec![4, 5]), Err(Closed));
        let waiting = tokio::spawn({
            let tx = tx.clone();
            async move { tx.send(vec![4, 5]).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        // Reading the first chunk to its end gives its room back.
        for want in 1..=3 {
            assert_eq!(rx.next().await, Some(want));
        }
        assert_eq!(rx.next().await, Some(4));
        waiting.await.unwrap().unwrap();
        assert_eq!(rx.next().await, Some(5));
    }

    #[tokio::test]
    async fn a_chunk_larger_than_the_room_goes_in_pieces() {
        let (tx, rx) = chunked(Some(2));
        let reader = tokio::spawn(async move { rx.collect::<Vec<i32>>().await });
        tx.send((0..7).collect()).await.unwrap();
        drop(tx);
        assert_eq!(reader.await.unwrap(), (0..7).collect::<Vec<_>>());
    }

    #[test]
    fn ready_now_takes_only_what_is_ready() {
        assert_eq!(ready_now(async { 7 }), Some(7));
        assert_eq!(ready_now(std::future::pending::<u8>()), None);
    }

    #[tokio::test]
    async fn sending_to_a_dropped_reader_says_closed() {
        let (tx, rx) = chunked::<i32>(Some(8));
        drop(rx);
        assert_eq!(tx.send(vec![1]).await, Err(Closed));
        assert_eq!(tx.try_send(vec![1]), Err(Closed));
    }
}
