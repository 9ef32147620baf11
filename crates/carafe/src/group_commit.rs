//! Group commit: small durable writes that arrive together share one transaction and one sync.
//!
//! Every synced commit costs the disk a flush, so a server that commits each small write on its
//! own (a worker completing one job per request, say) runs at the disk's commit rate whatever
//! its CPU could do. A `GroupCommit` puts each write into a queue and one task writes what has
//! queued up: the first write goes out at once (an idle server
//! adds no delay, and there is no timer), and every write that arrives while a batch is being
//! committed joins the next one. Each caller is answered only when the batch holding its write
//! has committed.
//!
//! A caller submits its items as one unit (a request completing 100 jobs is one submission):
//! a batch is one or more whole submissions, in the order they arrived, so two writes to the
//! same row land in the order they were sent. If a statement of a batch fails (the transaction
//! rolls back), each of its submissions is written again on its own, so one bad write fails
//! alone and never its neighbours. If the database cannot be reached, every caller of the
//! batch is told so and nothing is retried: a commit cut off midway may have been applied.
//!
//! Written here rather than taken from a crate: the batching is a dozen lines around a tokio
//! channel, and the retry-alone rule is what makes it safe.

use std::sync::Arc;

use async_trait::async_trait;
use carafe_core::{StoreError, StoreResult};
use tokio::sync::{mpsc, oneshot};

/// Submissions waiting before callers wait for room.
const QUEUE: usize = 4096;

/// What writes a batch: `items` holds the submissions' items, one after another; the answer
/// holds one output per item, in the same order.
#[async_trait]
pub trait BatchWrite<I, O>: Send + Sync + 'static {
    async fn write(&self, items: &[I]) -> StoreResult<Vec<O>>;
}

struct Submission<I, O> {
    items: Vec<I>,
    reply: oneshot::Sender<StoreResult<Vec<O>>>,
}

/// A queue of writes and the task that commits them in batches (see the module docs). Cloning
/// shares the queue; the task ends when the last clone is dropped, after writing what was
/// queued. Submissions are never empty (`write` answers an empty one itself).
pub struct GroupCommit<I, O> {
    tx: mpsc::Sender<Submission<I, O>>,
}

impl<I, O> Clone for GroupCommit<I, O> {
    fn clone(&self) -> Self {
        GroupCommit {
            tx: self.tx.clone(),
        }
    }
}

impl<I: Send + 'static, O: Send + 'static> GroupCommit<I, O> {
    /// Starts the writing task on the current runtime. A batch takes whole submissions until it
    /// holds at least `max_items` items.
    pub fn spawn(name: &'static str, max_items: usize, writer: impl BatchWrite<I, O>) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(name, max_items.max(1), Arc::new(writer), rx));
        GroupCommit { tx }
    }

    /// Writes `items` in the next batch and answers once that batch has committed: one output
    /// per item, or the error that kept these items from being written.
    pub async fn write(&self, items: Vec<I>) -> StoreResult<Vec<O>> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Submission { items, reply })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

fn answer_all<I, O>(batch: &mut Vec<Submission<I, O>>, error: impl Fn() -> StoreError) {
    for s in batch.drain(..) {
        let _ = s.reply.send(Err(error()));
    }
}

fn stopped() -> StoreError {
    StoreError::Unavailable("the write queue has stopped".into())
}

async fn run<I: Send + 'static, O: Send + 'static>(
    name: &'static str,
    max_items: usize,
    writer: Arc<dyn BatchWrite<I, O>>,
    mut rx: mpsc::Receiver<Submission<I, O>>,
) {
    let mut batch: Vec<Submission<I, O>> = Vec::new();
    let mut items: Vec<I> = Vec::new();
    let mut lengths: Vec<usize> = Vec::new();
    while let Some(first) = rx.recv().await {
        batch.push(first);
        let mut held = batch[0].items.len();
        while held < max_items {
            match rx.try_recv() {
                Ok(next) => {
                    held += next.items.len();
                    batch.push(next);
                }
                Err(_) => break,
            }
        }
        metrics::histogram!("carafe_group_commit_items", "queue" => name).record(held as f64);
        if batch.len() == 1 {
            let only = batch.pop().expect("one submission");
            let out = writer.write(&only.items).await;
            let _ = only.reply.send(out);
            continue;
        }
        for s in &mut batch {
            lengths.push(s.items.len());
            items.append(&mut s.items);
        }
        match writer.write(&items).await {
            Ok(mut out) if out.len() == items.len() => {
                // Hand each submission its own outputs, from the back.
                for (s, len) in batch.drain(..).zip(lengths.drain(..)).rev() {
                    let mine = out.split_off(out.len() - len);
                    let _ = s.reply.send(Ok(mine));
                }
            }
            Ok(_) => {
                // A writer bug; what was written cannot be told apart, so nothing is retried.
                tracing::error!(
                    queue = name,
                    "a batch writer answered the wrong number of items"
                );
                answer_all(&mut batch, || StoreError::corrupt("batch answer"));
            }
            Err(e @ StoreError::Unavailable(_)) => {
                // The database is out of reach (and a commit cut off midway may have been
                // applied): retrying alone could apply a write twice. Everyone is told.
                tracing::warn!(queue = name, error = %e, "a batch could not reach the database");
                answer_all(&mut batch, || {
                    StoreError::Unavailable("database unavailable".into())
                });
            }
            Err(e) => {
                // A statement failed and the transaction rolled back: write each submission
                // alone, so that only the bad one fails.
                tracing::warn!(queue = name, error = %e, submissions = batch.len(),
                    "a batch failed; writing its submissions one by one");
                for (s, len) in batch.iter_mut().zip(lengths.drain(..)).rev() {
                    s.items = items.split_off(items.len() - len);
                }
                for s in batch.drain(..) {
                    let out = writer.write(&s.items).await;
                    let _ = s.reply.send(out);
                }
            }
        }
        lengths.clear();
        items.clear();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::sync::Semaphore;

    use super::*;

    /// Records every batch it is given; fails any batch holding a negative item. Each write
    /// waits for a permit, so a test can hold a commit open.
    #[derive(Clone)]
    struct Recorder {
        batches: Arc<Mutex<Vec<Vec<i64>>>>,
        entered: Arc<AtomicUsize>,
        permits: Arc<Semaphore>,
    }

    #[async_trait]
    impl BatchWrite<i64, i64> for Recorder {
        async fn write(&self, items: &[i64]) -> StoreResult<Vec<i64>> {
            self.entered.fetch_add(1, Ordering::SeqCst);
            self.permits.acquire().await.unwrap().forget();
            self.batches.lock().unwrap().push(items.to_vec());
            if items.iter().any(|i| *i < 0) {
                return Err(StoreError::Conflict("negative"));
            }
            Ok(items.iter().map(|i| i * 10).collect())
        }
    }

    fn recorder(permits: usize) -> Recorder {
        Recorder {
            batches: Default::default(),
            entered: Default::default(),
            permits: Arc::new(Semaphore::new(permits)),
        }
    }

    async fn until(mut ready: impl FnMut() -> bool) {
        while !ready() {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn writes_that_arrive_during_a_commit_share_the_next_and_each_gets_its_own_answer() {
        let rec = recorder(0);
        let group = GroupCommit::spawn("test", 100, rec.clone());
        // The first write goes out at once and is held in its commit...
        let first = tokio::spawn({
            let g = group.clone();
            async move { g.write(vec![1]).await }
        });
        until(|| rec.entered.load(Ordering::SeqCst) == 1).await;
        // ...while three more arrive: they go out together in the next batch.
        let mut later = Vec::new();
        for n in [2_i64, 3, 4] {
            let g = group.clone();
            later.push(tokio::spawn(async move { g.write(vec![n, n + 100]).await }));
            until(|| group.tx.capacity() == QUEUE - (n as usize - 1)).await;
        }
        rec.permits.add_permits(2);
        assert_eq!(first.await.unwrap().unwrap(), vec![10]);
        let mut answers = Vec::new();
        for h in later {
            answers.push(h.await.unwrap().unwrap());
        }
        assert_eq!(
            answers,
            vec![vec![20, 1020], vec![30, 1030], vec![40, 1040]]
        );
        let batches = rec.batches.lock().unwrap().clone();
        assert_eq!(batches, vec![vec![1], vec![2, 102, 3, 103, 4, 104]]);
    }

    #[tokio::test]
    async fn a_batch_closes_once_it_holds_max_items_and_never_splits_a_submission() {
        let rec = recorder(1000);
        let group = GroupCommit::spawn("test", 3, rec.clone());
        // Queued before the task runs: [1, 2] and [3, 4] reach the limit of 3; [5] waits.
        let (a, b, c) = tokio::join!(
            group.write(vec![1, 2]),
            group.write(vec![3, 4]),
            group.write(vec![5])
        );
        assert_eq!(
            (a.unwrap(), b.unwrap(), c.unwrap()),
            (vec![10, 20], vec![30, 40], vec![50])
        );
        let batches = rec.batches.lock().unwrap().clone();
        assert_eq!(batches, vec![vec![1, 2, 3, 4], vec![5]]);
    }

    #[tokio::test]
    async fn a_bad_write_fails_alone() {
        let rec = recorder(1000);
        let group = GroupCommit::spawn("test", 100, rec.clone());
        // Queue three submissions before the task runs, so they form one batch.
        let (a, b, c) = tokio::join!(
            group.write(vec![1]),
            group.write(vec![-2]),
            group.write(vec![3])
        );
        assert_eq!(a.unwrap(), vec![10]);
        assert!(matches!(b, Err(StoreError::Conflict("negative"))), "{b:?}");
        assert_eq!(c.unwrap(), vec![30]);
        let batches = rec.batches.lock().unwrap().clone();
        assert_eq!(
            batches,
            vec![vec![1, -2, 3], vec![1], vec![-2], vec![3]],
            "the failed batch is written again one submission at a time, in order"
        );
    }

    /// Fails every batch as the database being out of reach.
    struct Unreachable(Arc<AtomicUsize>);

    #[async_trait]
    impl BatchWrite<i64, i64> for Unreachable {
        async fn write(&self, _: &[i64]) -> StoreResult<Vec<i64>> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Err(StoreError::Unavailable("down".into()))
        }
    }

    #[tokio::test]
    async fn an_unreachable_database_fails_the_batch_without_retrying_it() {
        let calls = Arc::new(AtomicUsize::new(0));
        let group = GroupCommit::spawn("test", 100, Unreachable(calls.clone()));
        let (a, b) = tokio::join!(group.write(vec![1]), group.write(vec![2]));
        assert!(matches!(a, Err(StoreError::Unavailable(_))), "{a:?}");
        assert!(matches!(b, Err(StoreError::Unavailable(_))), "{b:?}");
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "one attempt: a cut-off commit may have landed"
        );
    }

    #[tokio::test]
    async fn an_idle_queue_writes_at_once() {
        let rec = recorder(1000);
        let group = GroupCommit::spawn("test", 100, rec.clone());
        for n in 0..5 {
            assert_eq!(group.write(vec![n]).await.unwrap(), vec![n * 10]);
        }
        assert_eq!(
            rec.batches.lock().unwrap().len(),
            5,
            "one batch per lone write"
        );
    }
}
