//! a2cid-engine
