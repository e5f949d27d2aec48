//! How the training set is dealt to the workers (`--partition`): `iid` shards (a seeded
//! permutation dealt round-robin), or label-skewed ones, the setting in which decentralized
//! methods differ most: `dirichlet:ALPHA` (each class split among the workers in proportions drawn
//! from a symmetric Dirichlet of concentration ALPHA; small ALPHA, few classes per worker) and
//! `classes:K` (each worker holds K classes, each class split evenly among its holders).
//!
//! Pure and seeded: every process computes the same shards from the labels, its rank and the
//! seed, so no shard is ever sent over the network.
use std::fmt;
use std::str::FromStr;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Gamma};
use serde::{Deserialize, Serialize};

/// A way of dealing the training rows to `world` workers.
#[derive(Clone, Copy, Debug, PartialEq, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Partition {
    /// Uniformly random shards of (nearly) equal size.
    #[default]
    Iid,
    /// Per class, proportions over the workers drawn from Dirichlet(alpha, …, alpha).
    Dirichlet { alpha: f64 },
    /// Worker r holds classes r·K, …, r·K + K − 1 (mod the number of classes).
    Classes { k: usize },
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PartitionError {
    #[error(
        "bad --partition `{spec}`: {problem} (expected iid, dirichlet:ALPHA with ALPHA > 0, or \
         classes:K with K >= 1)"
    )]
    Parse { spec: String, problem: String },
    #[error(
        "--partition {partition} gives worker {rank} of {world} an empty shard ({rows} rows, \
         {classes} classes): raise ALPHA, give each worker more classes or use fewer workers"
    )]
    EmptyShard {
        partition: Partition,
        rank: usize,
        world: usize,
        rows: usize,
        classes: usize,
    },
    #[error("--partition classes:{k} asks for more classes than the dataset's {classes}")]
    TooManyClasses { k: usize, classes: usize },
}

impl fmt::Display for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Partition::Iid => write!(f, "iid"),
            Partition::Dirichlet { alpha } => write!(f, "dirichlet:{alpha}"),
            Partition::Classes { k } => write!(f, "classes:{k}"),
        }
    }
}

impl FromStr for Partition {
    type Err = PartitionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |problem: &str| PartitionError::Parse {
            spec: s.to_string(),
            problem: problem.into(),
        };
        let (kind, arg) = match s.trim().split_once(':') {
            Some((k, a)) => (k, Some(a.trim())),
            None => (s.trim(), None),
        };
        match (kind.to_ascii_lowercase().as_str(), arg) {
            ("iid", None) => Ok(Partition::Iid),
            ("dirichlet", Some(a)) => match a.parse::<f64>() {
                Ok(alpha) if alpha.is_finite() && alpha > 0.0 => Ok(Partition::Dirichlet { alpha }),
                _ => Err(bad(&format!("ALPHA must be a positive number, got `{a}`"))),
            },
            ("classes", Some(a)) => match a.parse::<usize>() {
                Ok(k) if k >= 1 => Ok(Partition::Classes { k }),
                _ => Err(bad(&format!("K must be a whole number >= 1, got `{a}`"))),
            },
            ("dirichlet" | "classes", None) => Err(bad("it needs a parameter after `:`")),
            ("iid", Some(_)) => Err(bad("iid takes no parameter")),
            _ => Err(bad("unknown partition")),
        }
    }
}

impl TryFrom<String> for Partition {
    type Error = PartitionError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Partition> for String {
    fn from(p: Partition) -> String {
        p.to_string()
    }
}

impl Partition {
    /// Whether shards differ in their label distributions by design.
    pub fn is_skewed(self) -> bool {
        self != Partition::Iid
    }

    /// The rows of every worker's shard (`labels[i]` in `0..classes`), seeded; an error when a
    /// shard would be empty. `iid` deals a seeded permutation round-robin (shard sizes differ by
    /// at most one).
    pub fn shards(
        self,
        labels: &[u32],
        classes: usize,
        world: usize,
        seed: u64,
    ) -> Result<Vec<Vec<usize>>, PartitionError> {
        assert!(world > 0, "a partition among no worker");
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5ba2_d5a2_7e11_0001);
        let mut shards = vec![Vec::new(); world];
        match self {
            Partition::Iid => {
                let mut perm: Vec<usize> = (0..labels.len()).collect();
                perm.shuffle(&mut rng);
                for (i, row) in perm.into_iter().enumerate() {
                    shards[i % world].push(row);
                }
            }
            Partition::Dirichlet { alpha } => {
                let gamma = Gamma::new(alpha, 1.0).expect("alpha was checked positive");
                for rows in by_class(labels, classes, &mut rng) {
                    let mut p: Vec<f64> = (0..world).map(|_| gamma.sample(&mut rng)).collect();
                    let total: f64 = p.iter().sum();
                    if total > 0.0 {
                        p.iter_mut().for_each(|v| *v /= total);
                    } else {
                        // Every draw underflowed (tiny alpha): the class goes to one worker.
                        let w = rows.len() % world;
                        p.iter_mut()
                            .enumerate()
                            .for_each(|(i, v)| *v = f64::from(i == w));
                    }
                    deal(&rows, &p, &mut shards);
                }
            }
            Partition::Classes { k } => {
                if k > classes {
                    return Err(PartitionError::TooManyClasses { k, classes });
                }
                let mut holders = vec![Vec::new(); classes];
                for r in 0..world {
                    for j in 0..k {
                        holders[(r * k + j) % classes].push(r);
                    }
                }
                for (c, rows) in by_class(labels, classes, &mut rng).into_iter().enumerate() {
                    let h = &holders[c];
                    if h.is_empty() {
                        continue; // a class no worker holds (fewer workers·K than classes)
                    }
                    let mut p = vec![0.0; world];
                    for &r in h {
                        p[r] += 1.0 / h.len() as f64;
                    }
                    deal(&rows, &p, &mut shards);
                }
            }
        }
        if let Some(rank) = shards.iter().position(Vec::is_empty) {
            return Err(PartitionError::EmptyShard {
                partition: self,
                rank,
                world,
                rows: labels.len(),
                classes,
            });
        }
        Ok(shards)
    }
}

/// The rows of each class, each list shuffled.
fn by_class(labels: &[u32], classes: usize, rng: &mut ChaCha8Rng) -> Vec<Vec<usize>> {
    let mut rows = vec![Vec::new(); classes];
    for (i, &l) in labels.iter().enumerate() {
        rows[l as usize].push(i);
    }
    for r in &mut rows {
        r.shuffle(rng);
    }
    rows
}

/// Deals `rows` to the shards in proportions `p` (summing to 1): consecutive runs, the cut points
/// rounded from the cumulative proportions, so every row goes to exactly one shard.
fn deal(rows: &[usize], p: &[f64], shards: &mut [Vec<usize>]) {
    let n = rows.len();
    let mut cum = 0.0;
    let mut start = 0;
    for (w, &pw) in p.iter().enumerate() {
        cum += pw;
        let end = if w + 1 == p.len() {
            n
        } else {
            ((cum * n as f64).round() as usize).clamp(start, n)
        };
        shards[w].extend_from_slice(&rows[start..end]);
        start = end;
    }
}

/// How many rows of each class `shard` holds.
pub fn label_histogram(labels: &[u32], shard: &[usize], classes: usize) -> Vec<u64> {
    let mut h = vec![0u64; classes];
    for &r in shard {
        h[labels[r] as usize] += 1;
    }
    h
}

/// Batches of `batch_size` in one epoch of every shard together, given the shards' sizes (each
/// shard's last batch may be short).
pub fn batches_in_shards(sizes: &[usize], batch_size: usize) -> usize {
    sizes.iter().map(|s| s.div_ceil(batch_size)).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(n: usize, classes: usize) -> Vec<u32> {
        (0..n).map(|i| (i * 7 % classes) as u32).collect()
    }

    fn all_rows(shards: &[Vec<usize>]) -> Vec<usize> {
        let mut all: Vec<usize> = shards.iter().flatten().copied().collect();
        all.sort_unstable();
        all
    }

    #[test]
    fn specs_parse_print_and_refuse_with_the_grammar() {
        for s in ["iid", "dirichlet:0.3", "classes:2"] {
            assert_eq!(s.parse::<Partition>().unwrap().to_string(), s);
        }
        for bad in [
            "dirichlet",
            "dirichlet:0",
            "dirichlet:-1",
            "classes:0",
            "noniid",
            "iid:3",
        ] {
            let e = bad.parse::<Partition>().unwrap_err().to_string();
            assert!(e.contains("expected iid, dirichlet:ALPHA"), "{bad}: {e}");
        }
    }

    #[test]
    fn every_partition_deals_every_row_once_deterministically() {
        let y = labels(1000, 10);
        for p in [
            "iid",
            "dirichlet:0.3",
            "dirichlet:100",
            "classes:2",
            "classes:10",
        ] {
            let p: Partition = p.parse().unwrap();
            let shards = p.shards(&y, 10, 8, 3).unwrap();
            assert_eq!(all_rows(&shards), (0..1000).collect::<Vec<_>>(), "{p}");
            assert_eq!(
                shards,
                p.shards(&y, 10, 8, 3).unwrap(),
                "{p}: deterministic"
            );
            if p != (Partition::Classes { k: 10 }) {
                assert_ne!(shards, p.shards(&y, 10, 8, 4).unwrap(), "{p}: seeded");
            }
            assert!(shards.iter().all(|s| !s.is_empty()), "{p}");
        }
    }

    #[test]
    fn iid_shards_have_equal_sizes_and_similar_histograms() {
        let y = labels(1000, 10);
        let shards = Partition::Iid.shards(&y, 10, 4, 1).unwrap();
        assert!(shards.iter().all(|s| s.len() == 250));
        for s in &shards {
            let h = label_histogram(&y, s, 10);
            assert!(h.iter().all(|&c| (10..=40).contains(&c)), "{h:?}");
        }
        let sizes: Vec<usize> = shards.iter().map(Vec::len).collect();
        assert_eq!(batches_in_shards(&sizes, 32), 4 * 8);
    }

    #[test]
    fn classes_k_gives_each_worker_exactly_its_k_classes() {
        let y = labels(1000, 10);
        let shards = Partition::Classes { k: 2 }.shards(&y, 10, 5, 1).unwrap();
        for (r, s) in shards.iter().enumerate() {
            let h = label_histogram(&y, s, 10);
            let held: Vec<usize> = (0..10).filter(|&c| h[c] > 0).collect();
            assert_eq!(held, vec![2 * r, 2 * r + 1], "worker {r}: {h:?}");
        }
        let e = Partition::Classes { k: 11 }
            .shards(&y, 10, 5, 1)
            .unwrap_err();
        assert!(
            e.to_string().contains("more classes than the dataset's 10"),
            "{e}"
        );
    }

    #[test]
    fn small_alpha_skews_the_histograms_and_large_alpha_does_not() {
        let y = labels(6000, 10);
        // Mean over workers of the largest class's share of the shard.
        let skew = |alpha: f64| {
            let shards = Partition::Dirichlet { alpha }.shards(&y, 10, 8, 2).unwrap();
            shards
                .iter()
                .map(|s| {
                    let h = label_histogram(&y, s, 10);
                    *h.iter().max().unwrap() as f64 / s.len() as f64
                })
                .sum::<f64>()
                / 8.0
        };
        let (skewed, flat) = (skew(0.1), skew(1000.0));
        assert!(
            skewed > 0.5,
            "dirichlet:0.1 should concentrate shards: {skewed}"
        );
        assert!(flat < 0.15, "dirichlet:1000 should be near iid: {flat}");
    }

    #[test]
    fn an_empty_shard_is_an_error_naming_the_worker_and_the_fix() {
        let y = labels(20, 10);
        let e = Partition::Dirichlet { alpha: 0.01 }
            .shards(&y, 10, 16, 0)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("an empty shard") && e.contains("raise ALPHA"),
            "{e}"
        );
        let e = Partition::Iid
            .shards(&y, 10, 21, 0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("worker 20 of 21"), "{e}");
    }
}
