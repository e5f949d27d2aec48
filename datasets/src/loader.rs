//! Batches. Every worker takes a disjoint shard of the training set (`crate::partition`),
//! reshuffles it each epoch, and a background
//! thread assembles batches ahead of the GPU so that the compute loop never waits for them.
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::datasets::Split;

/// One batch, row-major inputs and labels.
#[derive(Clone, Debug)]
pub struct Batch {
    pub epoch: usize,
    /// Index of the batch within its epoch.
    pub index: usize,
    pub batches_in_epoch: usize,
    pub x: Vec<f32>,
    pub y: Vec<u32>,
}

/// Batches of a shard, produced on a background thread, epoch after epoch (without end when
/// `epochs` is `None`).
pub struct BatchLoader {
    rx: Receiver<Batch>,
    handle: Option<JoinHandle<()>>,
    pub batches_per_epoch: usize,
}

impl BatchLoader {
    /// A background thread batching `shard` of `data` (rows of `features` values), shuffled
    /// by `seed` and the epoch, for `epochs` epochs (`None`: forever), starting at batch
    /// `start.1` of epoch `start.0` (`(0, 0)` for a fresh run; a resumed one continues exactly: the
    /// order of every epoch depends only on the seed and the epoch number).
    pub fn spawn(
        data: Arc<Split>,
        features: usize,
        shard: Vec<usize>,
        batch_size: usize,
        seed: u64,
        epochs: Option<usize>,
        start: (usize, usize),
    ) -> BatchLoader {
        assert!(
            batch_size > 0 && !shard.is_empty(),
            "empty shard or zero batch size"
        );
        let batches_per_epoch = shard.len().div_ceil(batch_size);
        let (tx, rx) = sync_channel(4);
        let handle = std::thread::Builder::new()
            .name("a2cid-batches".into())
            .spawn(move || {
                let mut order = shard;
                // Each epoch reshuffles the previous order: replay the shuffles from epoch 0.
                let mut epoch = 0;
                while epochs.is_none_or(|e| epoch < e) {
                    order.shuffle(&mut ChaCha8Rng::seed_from_u64(
                        seed.wrapping_add(epoch as u64 * 0x9e37_79b9),
                    ));
                    for (index, rows) in order.chunks(batch_size).enumerate() {
                        if (epoch, index) < start {
                            continue;
                        }
                        let mut x = Vec::with_capacity(rows.len() * features);
                        for &r in rows {
                            x.extend_from_slice(&data.x[r * features..(r + 1) * features]);
                        }
                        let y = rows.iter().map(|&r| data.y[r]).collect();
                        let batch = Batch {
                            epoch,
                            index,
                            batches_in_epoch: batches_per_epoch,
                            x,
                            y,
                        };
                        if tx.send(batch).is_err() {
                            return; // the consumer is gone
                        }
                    }
                    epoch += 1;
                }
            })
            .expect("spawning the batch thread");
        BatchLoader {
            rx,
            handle: Some(handle),
            batches_per_epoch,
        }
    }

    /// The next batch, or `None` after the last epoch.
    pub fn next_batch(&self) -> Option<Batch> {
        self.rx.recv().ok()
    }
}

impl Drop for BatchLoader {
    fn drop(&mut self) {
        // Closing the channel stops the producer at its next send.
        let (_tx, rx) = sync_channel(0);
        drop(std::mem::replace(&mut self.rx, rx));
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loader_yields_every_row_once_per_epoch_in_a_new_order() {
        let data = Arc::new(Split {
            x: (0..10).flat_map(|i| [i as f32, -(i as f32)]).collect(),
            y: (0..10).collect(),
        });
        let loader = BatchLoader::spawn(data, 2, (0..10).collect(), 4, 1, Some(2), (0, 0));
        assert_eq!(loader.batches_per_epoch, 3);
        let batches: Vec<Batch> = std::iter::from_fn(|| loader.next_batch()).collect();
        assert_eq!(batches.len(), 6);
        let epoch = |e: usize| -> Vec<u32> {
            batches
                .iter()
                .filter(|b| b.epoch == e)
                .flat_map(|b| b.y.clone())
                .collect()
        };
        let (e0, e1) = (epoch(0), epoch(1));
        assert_ne!(e0, e1, "epochs must be reshuffled");
        for e in [e0, e1] {
            let mut s = e.clone();
            s.sort();
            assert_eq!(s, (0..10).collect::<Vec<_>>());
        }
        for b in &batches {
            for (i, &l) in b.y.iter().enumerate() {
                assert_eq!(b.x[2 * i], l as f32, "inputs travel with their labels");
            }
        }
        // Resuming at (epoch 1, batch 1) replays exactly the rest of the sequence.
        let data = Arc::new(Split {
            x: (0..10).flat_map(|i| [i as f32, -(i as f32)]).collect(),
            y: (0..10).collect(),
        });
        let resumed = BatchLoader::spawn(data, 2, (0..10).collect(), 4, 1, Some(2), (1, 1));
        let rest: Vec<Vec<u32>> = std::iter::from_fn(|| resumed.next_batch())
            .map(|b| b.y)
            .collect();
        let want: Vec<Vec<u32>> = batches[4..].iter().map(|b| b.y.clone()).collect();
        assert_eq!(rest, want);
    }
}
