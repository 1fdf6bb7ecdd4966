//! Writing many small requests to Redis as a few large ones. Callers submit
//! one item each and wait for its own result; one task takes every item
//! waiting (up to a batch) and hands them to a write function that makes one
//! script call for all of them. An item alone is written at once; under load
//! batches grow by themselves, because items gather while earlier batches are
//! being written.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc, oneshot};

use super::script::{Durability, ScriptCall};
use super::{Queue, QueueError};

/// Most items written by one call.
const MAX_BATCH: usize = 128;
/// Most bytes written by one call (beyond one item): a batch of large
/// bodies is split, so no call nears Redis's query buffer limit or holds
/// the shared connection for long.
const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;
/// Calls under way at once; while they run, the next batch gathers.
const MAX_BATCHES_IN_FLIGHT: usize = 4;
/// Items waiting for a batch; beyond this, submitters wait to be taken.
const WAITING: usize = 4096;

type Answer<R> = oneshot::Sender<Result<R, QueueError>>;

/// A submitter's handle to one batching task; cheap to clone. The task ends
/// when the last handle is dropped, after writing what it holds.
pub struct Batcher<T, R> {
    items: mpsc::Sender<(T, Answer<R>)>,
    queue: Queue,
}

impl<T, R> Clone for Batcher<T, R> {
    fn clone(&self) -> Self {
        Self {
            items: self.items.clone(),
            queue: self.queue.clone(),
        }
    }
}

impl<T: Send + 'static, R: Send + 'static> Batcher<T, R> {
    /// Starts the batching task on the current runtime. `write` makes one
    /// call for a batch and returns one result per item, in order; `bytes`
    /// is an item's size in that call.
    pub fn spawn<W, F>(queue: Queue, bytes: fn(&T) -> usize, write: W) -> Self
    where
        W: Fn(Queue, Vec<T>) -> F + Send + Sync + 'static,
        F: Future<Output = Vec<Result<R, QueueError>>> + Send + 'static,
    {
        let (items, waiting) = mpsc::channel(WAITING);
        tokio::spawn(run(queue.clone(), waiting, bytes, write));
        Self { items, queue }
    }

    /// Writes `item` with whatever else is waiting; its own result.
    pub async fn submit(&self, item: T) -> Result<R, QueueError> {
        let stopped = || QueueError::WriterStopped {
            url: self.queue.display_url.clone(),
        };
        let (answer, answered) = oneshot::channel();
        self.items
            .send((item, answer))
            .await
            .map_err(|_| stopped())?;
        // The task dropped the answer: it ended (the runtime is shutting down).
        answered.await.unwrap_or_else(|_| Err(stopped()))
    }
}

async fn run<T, R, W, F>(
    queue: Queue,
    mut waiting: mpsc::Receiver<(T, Answer<R>)>,
    bytes: fn(&T) -> usize,
    write: W,
) where
    T: Send + 'static,
    R: Send + 'static,
    W: Fn(Queue, Vec<T>) -> F,
    F: Future<Output = Vec<Result<R, QueueError>>> + Send + 'static,
{
    let in_flight = Arc::new(Semaphore::new(MAX_BATCHES_IN_FLIGHT));
    let mut taken = Vec::with_capacity(MAX_BATCH);
    loop {
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        if waiting.recv_many(&mut taken, MAX_BATCH).await == 0 {
            return;
        }
        // Calls are built now and made one after another by one task.
        let calls: Vec<_> = split_by_bytes(taken.drain(..), bytes)
            .into_iter()
            .map(|part| {
                let (items, answers): (Vec<T>, Vec<Answer<R>>) = part.into_iter().unzip();
                (write(queue.clone(), items), answers)
            })
            .collect();
        tokio::spawn(async move {
            for (written, answers) in calls {
                let results = written.await;
                for (answer, result) in answers.into_iter().zip(results) {
                    // The submitter may have gone (a sender that hung up);
                    // what was written stays written.
                    let _ = answer.send(result);
                }
            }
            drop(permit);
        });
    }
}

/// Splits `items` into runs of at most [`MAX_BATCH_BYTES`] (an item larger
/// than that goes alone), keeping their order.
fn split_by_bytes<T, A>(
    items: impl Iterator<Item = (T, A)>,
    bytes: fn(&T) -> usize,
) -> Vec<Vec<(T, A)>> {
    let mut parts: Vec<Vec<(T, A)>> = Vec::new();
    let mut part_bytes = 0;
    for (item, answer) in items {
        let size = bytes(&item);
        match parts.last_mut() {
            Some(part) if part_bytes + size <= MAX_BATCH_BYTES => {
                part_bytes += size;
                part.push((item, answer));
            }
            _ => {
                part_bytes = size;
                parts.push(vec![(item, answer)]);
            }
        }
    }
    parts
}

/// Reads a batch script's reply for `items` items. Such scripts answer the
/// number of items when every one came to the common outcome `all` (one
/// integer, cheap to parse however large the batch: redis-rs parses each
/// reply value at about 2k instructions), and otherwise one value per item,
/// read by `each`. `None` when the reply does not answer for each item.
pub fn per_item<T: Clone>(
    reply: redis::Value,
    items: usize,
    all: T,
    each: impl Fn(redis::Value) -> Option<T>,
) -> Option<Vec<T>> {
    match reply {
        redis::Value::Int(count) if usize::try_from(count) == Ok(items) => Some(vec![all; items]),
        redis::Value::Array(values) if values.len() == items => {
            values.into_iter().map(each).collect()
        }
        _ => None,
    }
}

/// `error` for every item of a batch that failed as a whole.
fn all_failed<R>(count: usize, error: QueueError) -> Vec<Result<R, QueueError>> {
    (0..count).map(|_| Err(error.clone())).collect()
}

impl Queue {
    /// Runs the batch script `script` (named for errors) for `items` items
    /// and reads its reply with `read` (see [`per_item`]): one result per
    /// item, or the call's failure for each of them.
    pub(super) async fn invoke_batch<T>(
        &self,
        script: &'static str,
        call: &ScriptCall,
        durability: Durability,
        items: usize,
        read: impl FnOnce(redis::Value, usize) -> Option<Vec<T>>,
    ) -> Vec<Result<T, QueueError>> {
        match self.run_script::<redis::Value>(call, durability).await {
            Ok(reply) => match read(reply, items) {
                Some(results) => results.into_iter().map(Ok).collect(),
                None => all_failed(
                    items,
                    QueueError::UnexpectedReply {
                        url: self.display_url.clone(),
                        script,
                    },
                ),
            },
            Err(err) => all_failed(items, err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_split_by_bytes_in_order_and_a_large_item_goes_alone() {
        let mb = 1024 * 1024;
        let sizes = [mb, 2 * mb, mb, 9 * mb, 10, 3 * mb, mb];
        let parts = split_by_bytes(sizes.into_iter().map(|s| (s, ())), |s| *s);
        let shape: Vec<Vec<usize>> = parts
            .into_iter()
            .map(|p| p.into_iter().map(|(s, ())| s).collect())
            .collect();
        assert_eq!(
            shape,
            vec![
                vec![mb, 2 * mb, mb],
                vec![9 * mb],
                vec![10, 3 * mb],
                vec![mb]
            ]
        );
    }
}
