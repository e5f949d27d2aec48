//! The plain-Rust reference twins of the WGSL kernels, under one path. Each twin lives beside its
//! kernel, in `kernels::<family>::cpu`; the A²CiD² twins are [`crate::acid`]. They define what each
//! kernel computes and are the oracle of the GPU tests; they are written for clarity, not speed
//! (f64 accumulation where a kernel reduces).
pub use crate::kernels::bias::cpu::{bias_add, bias_grad};
pub use crate::kernels::channel::cpu::{
    channel_bias_add, channel_dot, group_norm_backward, group_norm_forward,
};
pub use crate::kernels::conv::cpu::{conv_forward, conv_input_grad, conv_weight_grad};
pub use crate::kernels::lowrank::cpu::{left_product, rank_update, right_product};
pub use crate::kernels::matmul::cpu::matmul;
pub use crate::kernels::pool::cpu::{pool_backward, pool_forward};
pub use crate::kernels::relu::cpu::{relu_backward, relu_forward};
pub use crate::kernels::sketch::cpu::sketch;
pub use crate::kernels::softmax_ce::cpu::softmax_ce;
pub use crate::kernels::softmax_ce::LossStats;
pub use crate::kernels::util::cpu::{axpy, copy, fill, sum_slices};
