//! Worker checkpoints: x, x̃, the momentum and the counters in one safetensors file per worker,
//! written atomically (temporary file, then rename) so a crash never leaves a torn checkpoint.
//!
//! Two generations are kept: before a new checkpoint replaces `rankR.safetensors`, the one it
//! replaces becomes `rankR.prev.safetensors`, and loading falls back to it when the newest is
//! missing, torn or corrupt. A checkpoint holding a non-finite value (a diverged run) is never
//! written, so the last good one is never replaced by a worse one; one that holds such values
//! anyway (written by an older version, or edited) is refused at load like a corrupt one.
use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};

use a2cid_schema::write_atomic;

/// Everything but the tensors: enough to continue exactly where the worker was.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckpointState {
    pub rank: usize,
    pub world: usize,
    pub method: String,
    /// Model fingerprint (layout hash) the tensors belong to.
    pub fingerprint: u64,
    pub parameters: usize,
    pub grads: u64,
    pub comms: u64,
    pub missed: u64,
    /// Data position: the next batch is batch `batch` of epoch `epoch` (the shuffles are seeded
    /// by seed and epoch, so this is the whole state of the data RNG).
    pub epoch: usize,
    pub batch: usize,
    pub seed: u64,
    /// Worker clock and the time of the last event that touched (x, x̃).
    pub tau: f64,
    pub t_last: f64,
    pub step_seconds: Option<f64>,
    /// Training seconds before this checkpoint (over all previous sessions).
    pub wall: f64,
    /// This worker's view of every worker's gradient count.
    pub counts: Vec<u64>,
    /// How many times the run was resumed (seeds the next session's Poisson clocks).
    pub generation: u64,
    pub final_train_loss: f64,
    /// Written at the end of training (not a periodic checkpoint).
    pub finished: bool,
    /// Seconds of `wall` spent evaluating on the test set (paused training; not on the clock).
    #[serde(default)]
    pub eval_seconds: f64,
}

/// A checkpoint in memory.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    pub state: CheckpointState,
    pub x: Vec<f32>,
    pub x_tilde: Option<Vec<f32>>,
    pub momentum: Vec<f32>,
}

fn view<'a>(v: &'a [f32]) -> anyhow::Result<TensorView<'a>> {
    Ok(TensorView::new(
        Dtype::F32,
        vec![v.len()],
        bytemuck::cast_slice(v),
    )?)
}

/// `(name, index of the first non-finite value, how many)` of the first tensor of `c` holding a
/// NaN or an infinity.
fn first_non_finite(c: &Checkpoint) -> Option<(&'static str, usize, usize)> {
    let mut tensors = vec![("x", &c.x), ("momentum", &c.momentum)];
    if let Some(t) = &c.x_tilde {
        tensors.push(("x_tilde", t));
    }
    tensors.into_iter().find_map(|(name, v)| {
        let first = v.iter().position(|f| !f.is_finite())?;
        Some((name, first, v.iter().filter(|f| !f.is_finite()).count()))
    })
}

/// The previous generation of the checkpoint at `path` (`rankR.prev.safetensors`).
pub fn previous_generation(path: &Path) -> std::path::PathBuf {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!("{stem}.prev.safetensors"))
}

impl Checkpoint {
    /// Writes the checkpoint atomically, keeping the one it replaces as the previous generation.
    /// Refuses (and writes nothing) when a tensor holds a non-finite value.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        if let Some((name, first, count)) = first_non_finite(self) {
            bail!(
                "the training diverged by step {}: {count} values of {name} are not finite (the \
                 first at index {first}); not checkpointing them — {} keeps the last good \
                 parameters. Lower --lr or add --warmup-steps",
                self.state.grads,
                path.display()
            );
        }
        let mut tensors = vec![("x", view(&self.x)?), ("momentum", view(&self.momentum)?)];
        if let Some(t) = &self.x_tilde {
            tensors.push(("x_tilde", view(t)?));
        }
        let meta = HashMap::from([(
            "a2cid_state".to_string(),
            serde_json::to_string(&self.state)?,
        )]);
        let bytes = safetensors::serialize(tensors, Some(meta))?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        if path.exists() {
            let prev = previous_generation(path);
            std::fs::rename(path, &prev).with_context(|| {
                format!(
                    "keeping {} as the previous generation {}",
                    path.display(),
                    prev.display()
                )
            })?;
        }
        write_atomic(path, &bytes)
    }

    /// The newest usable checkpoint at `path`: the file itself, or, when it is missing, torn,
    /// corrupt or holds non-finite values, its previous generation (a warning says so). The error
    /// names both files and why each was refused.
    pub fn load(path: &Path) -> anyhow::Result<Checkpoint> {
        match Checkpoint::load_one(path) {
            Ok(c) => Ok(c),
            Err(newest) => {
                let prev = previous_generation(path);
                match Checkpoint::load_one(&prev) {
                    Ok(c) => {
                        tracing::warn!(
                            "{newest:#}; using the previous generation {} (step {})",
                            prev.display(),
                            c.state.grads
                        );
                        Ok(c)
                    }
                    Err(older) if prev.exists() => {
                        Err(newest.context(format!("and the previous generation: {older:#}")))
                    }
                    Err(_) => Err(newest),
                }
            }
        }
    }

    /// The checkpoint in exactly this file.
    fn load_one(path: &Path) -> anyhow::Result<Checkpoint> {
        let bytes = std::fs::read(path).with_context(|| {
            format!(
                "reading checkpoint {} (was the run started with this run directory?)",
                path.display()
            )
        })?;
        let bad = |why: String| {
            anyhow::anyhow!(
                "checkpoint {} is not usable: {why} (start the run afresh, without --resume, if \
                 no generation of it is usable)",
                path.display()
            )
        };
        let (_, meta) = SafeTensors::read_metadata(&bytes)
            .map_err(|e| bad(format!("not a safetensors file ({e})")))?;
        let state_json = meta
            .metadata()
            .as_ref()
            .and_then(|m| m.get("a2cid_state"))
            .ok_or_else(|| bad("no a2cid_state metadata".into()))?;
        let state: CheckpointState = serde_json::from_str(state_json)
            .map_err(|e| bad(format!("bad a2cid_state metadata ({e})")))?;
        let st = SafeTensors::deserialize(&bytes)
            .map_err(|e| bad(format!("not a safetensors file ({e})")))?;
        let read = |name: &str| -> anyhow::Result<Option<Vec<f32>>> {
            let t = match st.tensor(name) {
                Ok(t) => t,
                Err(_) => return Ok(None),
            };
            if t.dtype() != Dtype::F32 || t.shape() != [state.parameters] {
                return Err(bad(format!(
                    "tensor {name} is {:?} {:?}, expected F32 [{}]",
                    t.dtype(),
                    t.shape(),
                    state.parameters
                )));
            }
            Ok(Some(
                t.data()
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect(),
            ))
        };
        let x = read("x")?.ok_or_else(|| bad("tensor x is missing".into()))?;
        let momentum = read("momentum")?.ok_or_else(|| bad("tensor momentum is missing".into()))?;
        let x_tilde = read("x_tilde")?;
        let c = Checkpoint {
            state,
            x,
            x_tilde,
            momentum,
        };
        if let Some((name, first, count)) = first_non_finite(&c) {
            return Err(bad(format!(
                "{count} values of {name} are not finite (the first at index {first}): it was \
                 written after the training diverged"
            )));
        }
        Ok(c)
    }

    /// Refuses a checkpoint of another model, method, rank or world.
    pub fn check_matches(
        &self,
        rank: usize,
        world: usize,
        method: &str,
        fingerprint: u64,
    ) -> anyhow::Result<()> {
        let s = &self.state;
        if s.rank != rank || s.world != world {
            bail!(
                "the checkpoint is rank {} of {} but this worker is rank {rank} of {world}: resume \
                 with the same number of workers",
                s.rank,
                s.world
            );
        }
        if s.method != method {
            bail!(
                "the checkpoint was written by method {} but this run uses {method}: resume with \
                 the run directory's own config.toml",
                s.method
            );
        }
        if s.fingerprint != fingerprint {
            bail!(
                "the checkpoint holds another model (layout fingerprint {:016x}, this model \
                 {fingerprint:016x}): resume with the run directory's own config.toml",
                s.fingerprint
            );
        }
        Ok(())
    }

    /// Worker `rank`'s checkpoint (either generation), or, for a pairwise method (`acid`,
    /// `gossip`) when neither generation is usable, the checkpoint of the first of its graph
    /// `neighbours` that has a usable one, taken over as this rank's: the neighbour's parameters,
    /// x̃ and momentum are its current state at the resume (the same state a live neighbour would
    /// send), and this rank continues from the gradient count the neighbour knew of it. The second
    /// value names the neighbour. The error names every file tried and why it was refused.
    pub fn load_or_neighbours(
        run: &a2cid_schema::RunDir,
        rank: usize,
        neighbours: &[usize],
        pairwise: bool,
    ) -> anyhow::Result<(Checkpoint, Option<usize>)> {
        let own = match Checkpoint::load(&run.checkpoint(rank)) {
            Ok(c) => return Ok((c, None)),
            Err(e) if !pairwise => return Err(e),
            Err(e) => e,
        };
        let mut tried = Vec::new();
        for &p in neighbours {
            match Checkpoint::load(&run.checkpoint(p)) {
                Ok(c) => return Ok((c.taken_over_by(rank), Some(p))),
                Err(e) => tried.push(format!("neighbour {p}: {e:#}")),
            }
        }
        Err(own.context(format!(
            "and no neighbour's checkpoint can stand in for it ({})",
            tried.join("; ")
        )))
    }

    /// Neighbour's checkpoint as rank `rank`'s: its state, this rank's gradient count as the
    /// neighbour knew it, the neighbour's epoch from its first batch (shards differ), no averaging
    /// or missed count of its own yet.
    fn taken_over_by(mut self, rank: usize) -> Checkpoint {
        let s = &mut self.state;
        s.rank = rank;
        s.grads = s.counts.get(rank).copied().unwrap_or(0);
        s.batch = 0;
        s.comms = 0;
        s.missed = 0;
        s.finished = false;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Checkpoint {
        Checkpoint {
            state: CheckpointState {
                rank: 2,
                world: 4,
                method: "acid".into(),
                fingerprint: 0xdead_beef,
                parameters: 5,
                grads: 123,
                comms: 45,
                missed: 6,
                epoch: 3,
                batch: 7,
                seed: 9,
                tau: 130.5,
                t_last: 130.25,
                step_seconds: Some(0.01),
                wall: 1.5,
                counts: vec![120, 119, 123, 121],
                generation: 0,
                final_train_loss: 0.25,
                finished: false,
                eval_seconds: 0.75,
            },
            x: vec![1.0, -2.0, 3.5, 0.0, f32::MIN_POSITIVE],
            x_tilde: Some(vec![0.5; 5]),
            momentum: vec![-0.25; 5],
        }
    }

    #[test]
    fn round_trips_exactly_and_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let p = a2cid_schema::RunDir::new(dir.path()).checkpoint(2);
        let c = sample();
        c.save(&p).unwrap();
        let back = Checkpoint::load(&p).unwrap();
        assert_eq!(back.state, c.state);
        assert_eq!(back.x, c.x);
        assert_eq!(back.x_tilde, c.x_tilde);
        assert_eq!(back.momentum, c.momentum);
        // No temporary file is left next to it.
        let names: Vec<_> = std::fs::read_dir(p.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("rank2.safetensors")]);
        // A second save keeps the first as the previous generation.
        let mut later = sample();
        later.state.grads = 200;
        later.save(&p).unwrap();
        assert_eq!(Checkpoint::load(&p).unwrap().state.grads, 200);
        let prev = Checkpoint::load(&previous_generation(&p)).unwrap();
        assert_eq!(prev.state.grads, 123);
        // Gossip checkpoints have no x̃.
        let mut g = sample();
        g.x_tilde = None;
        g.save(&p).unwrap();
        assert_eq!(Checkpoint::load(&p).unwrap().x_tilde, None);
    }

    #[test]
    fn corrupt_or_mismatched_checkpoints_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = a2cid_schema::RunDir::new(dir.path()).checkpoint(2);
        let e = format!("{:#}", Checkpoint::load(&p).unwrap_err());
        assert!(e.contains("reading checkpoint"), "{e}");
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, b"garbage, not a checkpoint").unwrap();
        let e = format!("{:#}", Checkpoint::load(&p).unwrap_err());
        assert!(
            e.contains("is not usable") && e.contains("without --resume"),
            "{e}"
        );
        let c = sample();
        assert!(c.check_matches(2, 4, "acid", 0xdead_beef).is_ok());
        let e = c.check_matches(2, 8, "acid", 0xdead_beef).unwrap_err();
        assert!(e.to_string().contains("same number of workers"), "{e}");
        let e = c.check_matches(2, 4, "gossip", 0xdead_beef).unwrap_err();
        assert!(e.to_string().contains("method acid"), "{e}");
        let e = c.check_matches(2, 4, "acid", 1).unwrap_err();
        assert!(e.to_string().contains("another model"), "{e}");
    }

    #[test]
    fn a_diverged_state_never_replaces_the_last_good_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let p = a2cid_schema::RunDir::new(dir.path()).checkpoint(2);
        let good = sample();
        good.save(&p).unwrap();
        let mut bad = sample();
        bad.state.grads = 400;
        bad.x[3] = f32::NAN;
        bad.momentum[0] = f32::INFINITY;
        let e = bad.save(&p).unwrap_err().to_string();
        assert!(
            e.contains("diverged by step 400") && e.contains("1 values of x are not finite"),
            "{e}"
        );
        assert!(e.contains("Lower --lr"), "{e}");
        let back = Checkpoint::load(&p).unwrap();
        assert_eq!(back.state.grads, 123, "the good checkpoint is still there");
        assert!(!previous_generation(&p).exists(), "nothing was rotated");
    }

    #[test]
    fn a_torn_or_non_finite_newest_checkpoint_falls_back_to_the_previous_generation() {
        let dir = tempfile::tempdir().unwrap();
        let p = a2cid_schema::RunDir::new(dir.path()).checkpoint(2);
        sample().save(&p).unwrap();
        let mut newer = sample();
        newer.state.grads = 300;
        newer.save(&p).unwrap();
        // The newest is torn: the previous generation is used.
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
        assert_eq!(Checkpoint::load(&p).unwrap().state.grads, 123);
        // The newest holds a NaN (written by hand, say): refused, the previous one is used.
        let mut tensors = bytes.clone();
        let nan = f32::NAN.to_le_bytes();
        let at = tensors.len() - 4;
        tensors[at..].copy_from_slice(&nan);
        std::fs::write(&p, &tensors).unwrap();
        assert_eq!(Checkpoint::load(&p).unwrap().state.grads, 123);
        // Neither usable: the error names both.
        std::fs::write(previous_generation(&p), b"junk").unwrap();
        let e = format!("{:#}", Checkpoint::load(&p).unwrap_err());
        assert!(
            e.contains("not finite") && e.contains("previous generation"),
            "{e}"
        );
    }
}
