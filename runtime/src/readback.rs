//! Read-backs of a worker's (x, x̃) at step boundaries, without waiting for the device: a gradient
//! step's submission also copies x (and x̃) into a free staging buffer, which is mapped
//! asynchronously; when the copy has landed, it becomes the boundary of the host's mirror
//! ([`a2cid_engine::acid::Mirror`]), from which exchanges take their snapshots at once. Two staging
//! buffers: while one is mapped or in flight, the next step can use the other; when both are
//! busy a step simply takes no read-back (the mirror stays one boundary older).
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use a2cid_engine::GpuContext;

use crate::shared::{lock, Shared};

const PENDING: u8 = 0;
const READY: u8 = 1;
const FAILED: u8 = 2;

enum Slot {
    Free,
    /// Recorded into a step's submission, not yet armed (mapped) or armed and in flight.
    Busy {
        seq: u64,
        tau: f64,
        status: Option<Arc<AtomicU8>>,
    },
}

/// The staging buffers of one worker's read-backs.
pub struct Readbacks {
    ctx: Arc<GpuContext>,
    n: usize,
    with_tilde: bool,
    buffers: Vec<wgpu::Buffer>,
    slots: Vec<Slot>,
    /// Read-backs delivered to the mirror (for tests and logs).
    pub delivered: u64,
}

impl Readbacks {
    pub fn new(ctx: Arc<GpuContext>, n: usize, with_tilde: bool) -> Readbacks {
        let floats = if with_tilde { 2 * n } else { n };
        let buffers = (0..2)
            .map(|k| {
                ctx.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some(if k == 0 {
                        "boundary read-back 0"
                    } else {
                        "boundary read-back 1"
                    }),
                    size: (floats.max(1) * 4) as u64,
                    usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                })
            })
            .collect();
        Readbacks {
            ctx,
            n,
            with_tilde,
            buffers,
            slots: vec![Slot::Free, Slot::Free],
            delivered: 0,
        }
    }

    /// Records the copies of a training state's x (and x̃) into a free staging buffer, as of
    /// submission `seq` at clock value `tau`; returns the slot to [`arm`](Self::arm) once
    /// submitted.
    pub fn record(
        &mut self,
        encoder: &mut wgpu::CommandEncoder,
        x: &wgpu::Buffer,
        x_tilde: Option<&wgpu::Buffer>,
        seq: u64,
        tau: f64,
    ) -> Option<usize> {
        let k = self.slots.iter().position(|s| matches!(s, Slot::Free))?;
        let bytes = (self.n * 4) as u64;
        encoder.copy_buffer_to_buffer(x, 0, &self.buffers[k], 0, bytes);
        if let (true, Some(t)) = (self.with_tilde, x_tilde) {
            encoder.copy_buffer_to_buffer(t, 0, &self.buffers[k], bytes, bytes);
        }
        self.slots[k] = Slot::Busy {
            seq,
            tau,
            status: None,
        };
        Some(k)
    }

    /// The submission holding slot `k`'s copies was made: map it when the device gets there.
    pub fn arm(&mut self, k: usize) {
        let Slot::Busy { status, .. } = &mut self.slots[k] else {
            return;
        };
        let flag = Arc::new(AtomicU8::new(PENDING));
        let done = flag.clone();
        self.buffers[k]
            .slice(..)
            .map_async(wgpu::MapMode::Read, move |r| {
                done.store(if r.is_ok() { READY } else { FAILED }, Ordering::Release);
            });
        *status = Some(flag);
    }

    /// Hands every read-back that has landed to the mirror (map callbacks run when the device is
    /// polled: the compute loop polls every step).
    pub fn collect(&mut self, shared: &Mutex<Shared>) {
        for k in 0..self.slots.len() {
            let Slot::Busy {
                seq,
                tau,
                status: Some(flag),
            } = &self.slots[k]
            else {
                continue;
            };
            match flag.load(Ordering::Acquire) {
                PENDING => continue,
                READY => {
                    let (seq, tau) = (*seq, *tau);
                    match self.buffers[k].slice(..).get_mapped_range() {
                        Ok(view) => {
                            let floats: &[f32] = bytemuck::cast_slice(&view);
                            let (x, rest) = floats.split_at(self.n);
                            let x_tilde = self.with_tilde.then(|| &rest[..self.n]);
                            lock(shared).mirror.set_boundary(seq, tau, x, x_tilde);
                            self.delivered += 1;
                        }
                        Err(e) => tracing::warn!("a read-back of the parameters failed: {e}"),
                    }
                    self.buffers[k].unmap();
                }
                _ => {
                    tracing::warn!(
                        "a read-back of the parameters failed; the mirror keeps its boundary"
                    );
                }
            }
            self.slots[k] = Slot::Free;
        }
    }

    /// Waits for every armed read-back and delivers it (before the mirror is needed exact, e.g.
    /// at the end).
    pub fn drain(&mut self, shared: &Mutex<Shared>) -> anyhow::Result<()> {
        self.ctx.sync()?;
        self.collect(shared);
        Ok(())
    }
}
