//! Compressed pairwise exchanges in the simulator (`--compress fp16|lowrank:R`, for `gossip` and
//! `acid`), with the runtime's codecs (`a2cid_engine::compress`) and the runtime's semantics
//! (docs/algorithm.md §9.4): at an averaging event both sides snapshot their x, the codec turns the
//! two snapshots into what each side averages with — its own snapshot and the peer's as it sees
//! it — and each side applies the §3.3 update against those.
//!
//! - `fp16`: each side sends fp16(s); both average the rounded values (own = fp16(s_own),
//!   peer = fp16(s_peer)), so the pair's sum is conserved as without compression. 2 bytes per
//!   parameter per side.
//! - `lowrank:R`: PowerGossip on every edge, one [`LowRankEdge`] per end (the same state bit for
//!   bit, seeded with [`edge_seed`] like the runtime's), own = s_own, peer = s_own − C(s_own −
//!   s_peer). Each side sends the edge's half-step message (R·m or R·n floats per weight matrix,
//!   vectors in full). Only for problems whose parameters have a layout with matrices (the model
//!   problem).

use std::collections::HashMap;

use a2cid_engine::arena::ParamLayout;
use a2cid_engine::compress::{decode_f16, edge_seed, encode_f16, LowRankEdge, LowRankPlan, Role};
use a2cid_schema::Compression;

use crate::problem::ExchangeViews;

/// A codec of pairwise exchanges and the state it keeps (the low-rank edges).
pub enum Codec {
    Fp16,
    LowRank {
        plan: LowRankPlan,
        seed: u64,
        /// Per edge (lower index, higher index): the First end's state and the Second end's.
        edges: HashMap<(usize, usize), (LowRankEdge, LowRankEdge)>,
    },
}

impl Codec {
    /// The codec of `compression` (`None` for `none`: exchanges stay exact f32). `layout` is the
    /// problem's parameter layout, which `lowrank:R` needs; `seed` seeds the edges.
    pub fn new(
        compression: Compression,
        layout: Option<&ParamLayout>,
        seed: u64,
    ) -> anyhow::Result<Option<Codec>> {
        Ok(match compression {
            Compression::None => None,
            Compression::Fp16 => Some(Codec::Fp16),
            Compression::LowRank(r) => {
                let layout = layout.ok_or_else(|| {
                    anyhow::anyhow!(
                        "--compress lowrank:{r} compresses weight matrices, and this problem's \
                         parameters are one vector: use --problem model, or --compress fp16"
                    )
                })?;
                Some(Codec::LowRank {
                    plan: LowRankPlan::new(layout, r)?,
                    seed,
                    edges: HashMap::new(),
                })
            }
        })
    }

    /// One exchange on edge (i, j) from the snapshots `s_i`, `s_j`: what each side averages with,
    /// and the bytes both sides sent together.
    pub fn exchange(
        &mut self,
        (i, j): (usize, usize),
        s_i: &[f32],
        s_j: &[f32],
    ) -> anyhow::Result<(ExchangeViews, f64)> {
        match self {
            Codec::Fp16 => {
                let (wire_i, wire_j) = (encode_f16(s_i)?, encode_f16(s_j)?);
                let bytes = (wire_i.len() + wire_j.len()) as f64;
                let (r_i, r_j) = (decode_f16(&wire_i)?, decode_f16(&wire_j)?);
                Ok((
                    ExchangeViews {
                        own_i: r_i.clone(),
                        peer_i: r_j.clone(),
                        own_j: r_j,
                        peer_j: r_i,
                    },
                    bytes,
                ))
            }
            Codec::LowRank { plan, seed, edges } => {
                let key = (i.min(j), i.max(j));
                let (first, second) = edges.entry(key).or_insert_with(|| {
                    let s = edge_seed(*seed, i, j, 0);
                    (
                        LowRankEdge::new(plan.clone(), Role::First, s, true),
                        LowRankEdge::new(plan.clone(), Role::Second, s, true),
                    )
                });
                // The lower index is the First end.
                let (s_lo, s_hi) = if i < j { (s_i, s_j) } else { (s_j, s_i) };
                let (m_lo, m_hi) = (first.message(s_lo)?, second.message(s_hi)?);
                let bytes = 4.0 * (m_lo.len() + m_hi.len()) as f64;
                let c_lo = first.finish(&m_lo, &m_hi)?;
                let c_hi = second.finish(&m_hi, &m_lo)?;
                let mut peer_lo = s_lo.to_vec();
                c_lo.apply(plan, &mut peer_lo, -1.0);
                let mut peer_hi = s_hi.to_vec();
                c_hi.apply(plan, &mut peer_hi, -1.0);
                let (own_lo, own_hi) = (s_lo.to_vec(), s_hi.to_vec());
                let views = if i < j {
                    ExchangeViews {
                        own_i: own_lo,
                        peer_i: peer_lo,
                        own_j: own_hi,
                        peer_j: peer_hi,
                    }
                } else {
                    ExchangeViews {
                        own_i: own_hi,
                        peer_i: peer_hi,
                        own_j: own_lo,
                        peer_j: peer_lo,
                    }
                };
                Ok((views, bytes))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> ParamLayout {
        let mut l = ParamLayout::new();
        l.push("w".to_string(), &[6, 5]);
        l.push("b".to_string(), &[6]);
        l
    }

    fn models() -> (Vec<f32>, Vec<f32>) {
        let a: Vec<f32> = (0..36).map(|k| (k as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..36).map(|k| (k as f32 * 0.11).cos()).collect();
        (a, b)
    }

    #[test]
    fn fp16_views_are_the_rounded_snapshots_and_half_the_bytes() {
        let (a, b) = models();
        let mut codec = Codec::new(Compression::Fp16, None, 0).unwrap().unwrap();
        let (v, bytes) = codec.exchange((3, 1), &a, &b).unwrap();
        assert_eq!(bytes, 2.0 * 2.0 * 36.0);
        let round = |x: &[f32]| decode_f16(&encode_f16(x).unwrap()).unwrap();
        assert_eq!(v.own_i, round(&a));
        assert_eq!(v.peer_i, round(&b));
        assert_eq!(v.own_j, v.peer_i);
        assert_eq!(v.peer_j, v.own_i);
        assert_ne!(v.own_i, a, "fp16 must round these values");
    }

    #[test]
    fn lowrank_views_conserve_the_pair_and_match_either_order() {
        let (a, b) = models();
        let new = || {
            Codec::new(Compression::LowRank(2), Some(&layout()), 7)
                .unwrap()
                .unwrap()
        };
        let (mut one, mut other) = (new(), new());
        for _ in 0..3 {
            let (v, bytes) = one.exchange((0, 4), &a, &b).unwrap();
            // Each side's correction C: own − peer; the two are exact negatives.
            for k in 0..36 {
                let c_i = v.own_i[k] - v.peer_i[k];
                let c_j = v.own_j[k] - v.peer_j[k];
                assert!((c_i + c_j).abs() < 1e-6, "{k}: {c_i} vs {c_j}");
            }
            // The bias is dense: each side sees the other's, to the rounding of s − (s − s_peer).
            for k in 30..36 {
                assert!((v.peer_i[k] - b[k]).abs() < 1e-6, "{k}");
                assert!((v.peer_j[k] - a[k]).abs() < 1e-6, "{k}");
            }
            // A half-step sends R·m or R·n floats of the 6×5 matrix, and the 6 biases.
            assert!(bytes == 2.0 * 4.0 * (12.0 + 6.0) || bytes == 2.0 * 4.0 * (10.0 + 6.0));
            // The same exchange seen with the pair in the other order gives the swapped views.
            let (w, _) = other.exchange((4, 0), &b, &a).unwrap();
            assert_eq!(w.own_i, v.own_j);
            assert_eq!(w.peer_i, v.peer_j);
            assert_eq!(w.peer_j, v.peer_i);
        }
        let refused = Codec::new(Compression::LowRank(2), None, 0).err().unwrap();
        assert!(
            refused.to_string().contains("use --problem model"),
            "{refused}"
        );
        assert!(Codec::new(Compression::None, None, 0).unwrap().is_none());
    }
}
