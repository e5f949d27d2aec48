//! a2cid
