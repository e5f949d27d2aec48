//! A worker's training state (x, x̃, momentum, snapshot, received, partials) and its fused
//! dispatches (docs/algorithm.md §2–3).
