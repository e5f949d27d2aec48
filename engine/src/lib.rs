//! a2cid-engine
pub mod acid;
