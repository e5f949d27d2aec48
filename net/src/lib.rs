//! a2cid-net: the TCP mesh between workers. Moves byte/f32 buffers; knows nothing about GPUs.
