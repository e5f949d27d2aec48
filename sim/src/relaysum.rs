//! RelaySum (docs/algorithm.md §9.2) in the simulator: every worker's [`RelayNode`] (the engine's,
//! which the runtime uses too) in one process. Pure: one call is one synchronous round, the
//! contributions are passed in.

use a2cid_engine::relay::RelayNode;
use a2cid_topology::SpanningTree;

/// Every worker's side of the relay ([`RelayNode`], the one the runtime uses too), delivered in
/// one process.
#[derive(Debug, Clone)]
pub struct Relay {
    nodes: Vec<RelayNode>,
}

impl Relay {
    /// No message received yet (zero sums, zero counts) on `tree`, for models of `dim` values.
    pub fn new(tree: &SpanningTree, dim: usize) -> Relay {
        let n = tree.neighbors.len();
        Relay {
            nodes: tree
                .neighbors
                .iter()
                .map(|nb| RelayNode::new(nb, n, dim))
                .collect(),
        }
    }

    /// Messages each worker sends per round (its tree degree).
    pub fn messages_sent(&self, worker: usize) -> usize {
        self.nodes[worker].neighbors().len()
    }

    /// One round: every worker contributes `contributions[i]`; returns every worker's estimate
    /// of the average.
    pub fn round(&mut self, contributions: &[Vec<f32>]) -> Vec<Vec<f32>> {
        assert_eq!(
            contributions.len(),
            self.nodes.len(),
            "one contribution per worker"
        );
        // Every outgoing message from last round's incoming ones, before any delivery.
        let outgoing: Vec<_> = self
            .nodes
            .iter()
            .zip(contributions)
            .map(|(node, own)| node.outgoing(own))
            .collect();
        for (j, out) in outgoing.into_iter().enumerate() {
            let to: Vec<usize> = self.nodes[j].neighbors().to_vec();
            for (i, message) in to.into_iter().zip(out) {
                let delivered = self.nodes[i].deliver(j, message);
                assert!(delivered, "tree neighbours are symmetric");
            }
        }
        self.nodes
            .iter()
            .zip(contributions)
            .map(|(node, own)| node.estimate(own))
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
