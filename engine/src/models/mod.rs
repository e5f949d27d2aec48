//! Models on the flat parameter arena.
pub mod mlp;
