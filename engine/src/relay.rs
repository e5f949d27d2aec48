//! RelaySum's relay along a spanning tree (docs/algorithm.md §9.2), one worker's side; pure. The
//! simulator runs every worker's [`RelayNode`] in one process, the runtime one per worker with the
//! messages on the mesh.
//!
//! Round t: worker i sends each tree neighbour j the message
//! m_{i→j} = y_i + Σ_{k ∈ N(i) \ j} m_{k→i} (last round's), with the count
//! c_{i→j} = 1 + Σ_{k ∈ N(i) \ j} c_{k→i}, where y_i is its contribution this round. Then its
//! estimate of the average is (y_i + Σ_j m_{j→i} + (n − 1 − Σ_j c_{j→i}) y_i) / n: the models
//! not yet arrived are replaced by its own. A worker at tree distance d contributes its value of
//! d − 1 rounds before, so after `diameter` rounds every worker's estimate has all n models.

/// One relayed message: the sum of the models it carries and how many.
#[derive(Debug, Clone, PartialEq)]
pub struct RelayMessage {
    pub sum: Vec<f64>,
    pub count: u64,
}

/// One worker's side of the relay: its tree neighbours and the last message from each.
#[derive(Debug, Clone)]
pub struct RelayNode {
    world: usize,
    neighbors: Vec<usize>,
    /// The last message from each tree neighbour, in `neighbors`' order (zero before the first).
    /// Sums in f64, so a relayed sum of n models loses nothing to f32 rounding here.
    incoming: Vec<RelayMessage>,
}

impl RelayNode {
    /// A worker with tree `neighbors` in a run of `world` workers, models of `dim` values.
    pub fn new(neighbors: &[usize], world: usize, dim: usize) -> RelayNode {
        RelayNode {
            world,
            neighbors: neighbors.to_vec(),
            incoming: neighbors
                .iter()
                .map(|_| RelayMessage {
                    sum: vec![0.0; dim],
                    count: 0,
                })
                .collect(),
        }
    }

    pub fn neighbors(&self) -> &[usize] {
        &self.neighbors
    }

    /// This round's messages, one per tree neighbour (in `neighbors()` order), from the own
    /// contribution `own` and last round's incoming messages.
    pub fn outgoing(&self, own: &[f32]) -> Vec<RelayMessage> {
        (0..self.neighbors.len())
            .map(|k| {
                let mut sum: Vec<f64> = own.iter().map(|&v| f64::from(v)).collect();
                let mut count = 1;
                for (other, m) in self.incoming.iter().enumerate() {
                    if other != k {
                        sum.iter_mut().zip(&m.sum).for_each(|(s, r)| *s += r);
                        count += m.count;
                    }
                }
                RelayMessage { sum, count }
            })
            .collect()
    }

    /// Stores this round's message from tree neighbour `from`. `false` if `from` is not one.
    pub fn deliver(&mut self, from: usize, message: RelayMessage) -> bool {
        match self.neighbors.iter().position(|&v| v == from) {
            Some(k) => {
                self.incoming[k] = message;
                true
            }
            None => false,
        }
    }

    /// The estimate of the workers' average after this round's deliveries, `own` standing in for
    /// the models not yet arrived.
    pub fn estimate(&self, own: &[f32]) -> Vec<f32> {
        let n = self.world as u64;
        let received: u64 = self.incoming.iter().map(|m| m.count).sum();
        let missing = n.saturating_sub(1 + received) as f64;
        let mut total: Vec<f64> = own
            .iter()
            .map(|&v| f64::from(v) * (1.0 + missing))
            .collect();
        for m in &self.incoming {
            total.iter_mut().zip(&m.sum).for_each(|(t, r)| *t += r);
        }
        total.iter().map(|t| (t / n as f64) as f32).collect()
    }

    /// A message as f32 slots for the wire: the sum (rounded to f32), then the count.
    pub fn to_wire(message: &RelayMessage) -> Vec<f32> {
        let mut out: Vec<f32> = message.sum.iter().map(|&v| v as f32).collect();
        out.push(message.count as f32);
        out
    }

    /// A message from its f32 slots ([`RelayNode::to_wire`]); `None` on a wrong length or a
    /// non-finite value.
    pub fn from_wire(slots: &[f32], dim: usize) -> Option<RelayMessage> {
        if slots.len() != dim + 1 || slots.iter().any(|v| !v.is_finite()) {
            return None;
        }
        Some(RelayMessage {
            sum: slots[..dim].iter().map(|&v| f64::from(v)).collect(),
            count: slots[dim] as u64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_of_three_has_the_exact_mean_after_two_rounds_and_messages_survive_the_wire() {
        // 0 - 1 - 2, frozen models 0, 3, 9: mean 4.
        let mut nodes = [
            RelayNode::new(&[1], 3, 1),
            RelayNode::new(&[0, 2], 3, 1),
            RelayNode::new(&[1], 3, 1),
        ];
        let models = [[0.0f32], [3.0], [9.0]];
        let mut estimates = Vec::new();
        for _ in 0..2 {
            let out: Vec<_> = nodes
                .iter()
                .zip(&models)
                .map(|(n, m)| n.outgoing(m))
                .collect();
            for (j, msgs) in out.into_iter().enumerate() {
                let to = nodes[j].neighbors().to_vec();
                for (i, m) in to.into_iter().zip(msgs) {
                    let wire = RelayNode::to_wire(&m);
                    assert!(nodes[i].deliver(j, RelayNode::from_wire(&wire, 1).unwrap()));
                }
            }
            estimates = nodes
                .iter()
                .zip(&models)
                .map(|(n, m)| n.estimate(m))
                .collect();
        }
        assert_eq!(estimates, vec![vec![4.0f32]; 3]);
        assert!(!nodes[0].deliver(2, nodes[2].outgoing(&[1.0])[0].clone()));
        assert!(RelayNode::from_wire(&[f32::NAN, 1.0], 1).is_none());
        assert!(RelayNode::from_wire(&[1.0], 1).is_none());
    }
}
