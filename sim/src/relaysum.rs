//! RelaySum (docs/algorithm.md §9.2): the relay of models along a spanning tree that gives every
//! worker an exactly uniform average of all models, each delayed by its tree distance. Pure: one
//! call is one synchronous round, the contributions are passed in.
//!
//! Round t: worker i sends each tree neighbour j the message
//! m_{i→j} = y_i + Σ_{k ∈ N(i) \ j} m_{k→i} (last round's), with the count
//! c_{i→j} = 1 + Σ_{k ∈ N(i) \ j} c_{k→i}, where y_i is its contribution this round. Then its
//! estimate of the average is (y_i + Σ_j m_{j→i} + (n − 1 − Σ_j c_{j→i}) y_i) / n: the models
//! not yet arrived are replaced by its own. A worker at tree distance d contributes its value of
//! d − 1 rounds before, so after `diameter` rounds every worker's estimate has all n models.

use a2cid_topology::SpanningTree;

/// The messages in flight on a spanning tree.
#[derive(Debug, Clone)]
pub struct Relay {
    neighbors: Vec<Vec<usize>>,
    /// incoming[i][k]: the last message worker i received from its k-th tree neighbour (sum,
    /// count). Sums in f64, so a relayed sum of n models loses nothing to f32 rounding.
    incoming: Vec<Vec<(Vec<f64>, u64)>>,
}

impl Relay {
    /// No message received yet (zero sums, zero counts) on `tree`, for models of `dim` values.
    pub fn new(tree: &SpanningTree, dim: usize) -> Relay {
        let neighbors = tree.neighbors.clone();
        let incoming = neighbors
            .iter()
            .map(|list| list.iter().map(|_| (vec![0.0; dim], 0)).collect())
            .collect();
        Relay {
            neighbors,
            incoming,
        }
    }

    /// Messages each worker sends per round (its tree degree).
    pub fn messages_sent(&self, worker: usize) -> usize {
        self.neighbors[worker].len()
    }

    /// One round: every worker contributes `contributions[i]`; returns every worker's estimate
    /// of the average.
    pub fn round(&mut self, contributions: &[Vec<f32>]) -> Vec<Vec<f32>> {
        let n = self.neighbors.len();
        assert_eq!(contributions.len(), n, "one contribution per worker");
        // Outgoing messages from last round's incoming ones (all computed before any delivery).
        let mut outgoing: Vec<Vec<(Vec<f64>, u64)>> = Vec::with_capacity(n);
        for (own, incoming) in contributions.iter().zip(&self.incoming) {
            let mut out = Vec::with_capacity(incoming.len());
            for k in 0..incoming.len() {
                let mut sum: Vec<f64> = own.iter().map(|&v| f64::from(v)).collect();
                let mut count = 1;
                for (other, (relayed, c)) in incoming.iter().enumerate() {
                    if other != k {
                        sum.iter_mut().zip(relayed).for_each(|(s, r)| *s += r);
                        count += c;
                    }
                }
                out.push((sum, count));
            }
            outgoing.push(out);
        }
        // Delivery: j's message to i lands in i's slot for j.
        for (j, out) in outgoing.into_iter().enumerate() {
            for (k, message) in out.into_iter().enumerate() {
                let i = self.neighbors[j][k];
                let slot = self.neighbors[i]
                    .iter()
                    .position(|&v| v == j)
                    .expect("tree neighbours are symmetric");
                self.incoming[i][slot] = message;
            }
        }
        (0..n)
            .map(|i| {
                let received: u64 = self.incoming[i].iter().map(|(_, c)| c).sum();
                let missing = (n as u64 - 1 - received) as f64;
                let own = &contributions[i];
                let mut total: Vec<f64> = own
                    .iter()
                    .map(|&v| f64::from(v) * (1.0 + missing))
                    .collect();
                for (relayed, _) in &self.incoming[i] {
                    total.iter_mut().zip(relayed).for_each(|(t, r)| *t += r);
                }
                total.iter().map(|t| (t / n as f64) as f32).collect()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use a2cid_topology::{GraphSpec, Topology};

    fn tree(graph: &str, n: usize) -> SpanningTree {
        let spec: GraphSpec = graph.parse().unwrap();
        Topology::from_spec(&spec, n, 1.0, 0)
            .unwrap()
            .spanning_tree()
    }

    #[test]
    fn with_frozen_models_every_estimate_is_the_exact_mean_after_diameter_rounds() {
        for (graph, n) in [("ring", 16), ("torus", 16), ("star", 7), ("hypercube", 8)] {
            let tree = tree(graph, n);
            let models: Vec<Vec<f32>> = (0..n)
                .map(|i| vec![i as f32 * 0.37 - 1.0, (i * i) as f32 / 7.0])
                .collect();
            let exact: Vec<f64> = (0..2)
                .map(|k| models.iter().map(|m| f64::from(m[k])).sum::<f64>() / n as f64)
                .collect();
            let mut relay = Relay::new(&tree, 2);
            for round in 1..=tree.diameter {
                let estimates = relay.round(&models);
                let all_exact = estimates.iter().all(|e| {
                    e.iter()
                        .zip(&exact)
                        .all(|(&v, &x)| (f64::from(v) - x).abs() <= 1e-6 * x.abs().max(1.0))
                });
                // Before the diameter, the two workers farthest apart have not heard of each other.
                assert_eq!(all_exact, round == tree.diameter, "{graph}: round {round}");
            }
        }
    }

    #[test]
    fn every_estimate_is_the_uniform_average_delayed_by_tree_distance() {
        // Time-varying integer contributions: y_j(t) = 10 j + t. Worker i's estimate at round t
        // is (1/n) Σ_j y_j(t − d(i, j) + 1) over the workers j ≠ i already heard of
        // (d(i, j) − 1 <= t), its own y_i(t) for the others and itself: exact in f64.
        let tree = tree("torus", 12);
        let n = tree.workers();
        let mut relay = Relay::new(&tree, 1);
        for t in 0..tree.diameter + 3 {
            let contributions: Vec<Vec<f32>> = (0..n).map(|j| vec![(10 * j + t) as f32]).collect();
            let estimates = relay.round(&contributions);
            for (i, estimate) in estimates.iter().enumerate() {
                let distance = tree.distances_from(i);
                let sum: f64 = (0..n)
                    .map(|j| match distance[j] {
                        0 => (10 * i + t) as f64,
                        d if d - 1 <= t => (10 * j + t + 1 - d) as f64,
                        _ => (10 * i + t) as f64,
                    })
                    .sum();
                assert!(
                    (f64::from(estimate[0]) - sum / n as f64).abs() < 1e-4,
                    "i {i} t {t}"
                );
            }
        }
    }
}
