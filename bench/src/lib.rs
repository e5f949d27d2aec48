//! Shared helpers for the a2cid criterion benchmarks.
