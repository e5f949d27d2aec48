//! The simulator's single event queue: a min-heap of timed events, ties broken by insertion order
//! so that a run is reproducible bit for bit.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// What happens at an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// Worker `0` finishes a gradient.
    Gradient(usize),
    /// Edge number `0` (an index into `Topology::edges()`) fires a pairwise averaging.
    Averaging(usize),
    /// A synchronous all-reduce step of every worker.
    AllReduce,
    /// A synchronous RelaySum round: every worker steps, then relays along the spanning tree.
    RelayRound,
}

#[derive(Debug, Clone, Copy)]
pub struct Event {
    pub time: f64,
    pub kind: EventKind,
    sequence: u64,
}

impl PartialEq for Event {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Event {}
impl PartialOrd for Event {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Event {
    /// Reversed, so that `BinaryHeap` (a max-heap) pops the earliest event first.
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .time
            .total_cmp(&self.time)
            .then_with(|| other.sequence.cmp(&self.sequence))
    }
}

/// Pending events, earliest first.
#[derive(Debug, Default)]
pub struct EventQueue {
    heap: BinaryHeap<Event>,
    next_sequence: u64,
}

impl EventQueue {
    pub fn push(&mut self, time: f64, kind: EventKind) {
        self.heap.push(Event {
            time,
            kind,
            sequence: self.next_sequence,
        });
        self.next_sequence += 1;
    }

    pub fn pop(&mut self) -> Option<Event> {
        self.heap.pop()
    }

    pub fn peek_time(&self) -> Option<f64> {
        self.heap.peek().map(|event| event.time)
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_in_time_order_and_ties_in_insertion_order() {
        let mut queue = EventQueue::default();
        queue.push(2.0, EventKind::Gradient(0));
        queue.push(0.5, EventKind::Averaging(3));
        queue.push(2.0, EventKind::Gradient(1));
        queue.push(1.0, EventKind::AllReduce);
        let order: Vec<_> = std::iter::from_fn(|| queue.pop())
            .map(|e| (e.time, e.kind))
            .collect();
        assert_eq!(
            order,
            vec![
                (0.5, EventKind::Averaging(3)),
                (1.0, EventKind::AllReduce),
                (2.0, EventKind::Gradient(0)),
                (2.0, EventKind::Gradient(1)),
            ]
        );
        assert!(queue.is_empty());
    }
}
