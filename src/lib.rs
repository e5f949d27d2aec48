//! a2cid: the root package. CLI, launcher, worker runtime, simulator and reports live here; it joins
//! the GPU engine (`a2cid-engine`) and the TCP mesh (`a2cid-net`), which never import each other.
pub mod cli;
pub mod data;
pub mod report;
pub mod runtime;
pub mod sim;
pub mod topology;
pub mod train;
