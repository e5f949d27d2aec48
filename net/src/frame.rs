//! The wire format: a pure codec for typed, length-delimited frames, plus the two async helpers that
//! move whole frames on a socket (`read_frame`, `write_*`). Big payloads never go through an
//! intermediate buffer: `&[f32]` is viewed as bytes (bytemuck) and written with one `write_all`, and
//! received floats are `read_exact`-ed straight into a `Vec<f32>` viewed as bytes.
//!
//! Frame = 9-byte header `[kind: u8][body_len: u64 LE]` + body. Every body length is checked against a
//! hard cap *before* anything is allocated: small control messages are capped at [`CONTROL_CAP`],
//! payload frames at the model size (4 bytes per parameter plus a fixed sub-header).

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::error::FrameError;

/// First bytes each side sends on a fresh connection, followed by [`PROTOCOL_VERSION`] (u32 LE).
pub const MAGIC: [u8; 8] = *b"A2CIDNET";
/// Bump on any incompatible change of the wire format or the protocol.
pub const PROTOCOL_VERSION: u32 = 1;
/// Bytes of the frame header.
pub const HEADER_LEN: usize = 9;
/// Cap on the body of any non-payload frame.
pub const CONTROL_CAP: u64 = 1 << 20;
/// Sub-header of a snapshot frame: `seq: u64`.
pub const SNAPSHOT_SUB: u64 = 8;
/// Sub-header of a collective frame: `op: u64, phase: u32, step: u32, chunk: u32, pad: u32`.
pub const COLL_SUB: u64 = 24;
/// Longest run id accepted.
pub const MAX_RUN_ID: usize = 256;

/// Frame kinds on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    Hello = 1,
    Auth = 2,
    Verdict = 3,
    Propose = 10,
    Accept = 11,
    Busy = 12,
    Abort = 13,
    Snapshot = 20,
    Coll = 30,
    CollAbort = 31,
    PeerDown = 40,
    Goodbye = 41,
    Register = 50,
    Table = 51,
}

impl Kind {
    pub fn from_u8(b: u8) -> Result<Kind, FrameError> {
        Ok(match b {
            1 => Kind::Hello,
            2 => Kind::Auth,
            3 => Kind::Verdict,
            10 => Kind::Propose,
            11 => Kind::Accept,
            12 => Kind::Busy,
            13 => Kind::Abort,
            20 => Kind::Snapshot,
            30 => Kind::Coll,
            31 => Kind::CollAbort,
            40 => Kind::PeerDown,
            41 => Kind::Goodbye,
            50 => Kind::Register,
            51 => Kind::Table,
            other => return Err(FrameError::UnknownKind(other)),
        })
    }
    pub fn name(self) -> &'static str {
        match self {
            Kind::Hello => "hello",
            Kind::Auth => "auth",
            Kind::Verdict => "verdict",
            Kind::Propose => "propose",
            Kind::Accept => "accept",
            Kind::Busy => "busy",
            Kind::Abort => "abort",
            Kind::Snapshot => "snapshot",
            Kind::Coll => "collective",
            Kind::CollAbort => "collective-abort",
            Kind::PeerDown => "peer-down",
            Kind::Goodbye => "goodbye",
            Kind::Register => "register",
            Kind::Table => "table",
        }
    }
}

/// What the model looks like: a mismatch means two workers would average unrelated tensors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Fingerprint {
    /// Number of f32 parameters in the flat vector.
    pub params: u64,
    /// Hash of the layout (tensor names, shapes, order).
    pub layout_hash: u64,
}

impl Fingerprint {
    /// Fingerprint from the parameter count and any textual description of the layout
    /// (e.g. `"conv1.weight:64x3x3x3;conv1.bias:64;..."`).
    pub fn new(params: u64, layout: &str) -> Fingerprint {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(layout.as_bytes());
        let mut h = [0u8; 8];
        h.copy_from_slice(&digest[..8]);
        Fingerprint {
            params,
            layout_hash: u64::from_le_bytes(h),
        }
    }
}

impl std::fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} params, layout {:016x}",
            self.params, self.layout_hash
        )
    }
}

/// Why a connection is opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Purpose {
    /// A mesh link between two workers.
    Link = 1,
    /// A worker registering with the rank-0 rendezvous.
    Register = 2,
}

/// First frame after the magic: who I am.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    pub purpose: Purpose,
    pub rank: u32,
    pub world: u32,
    pub run_id: String,
    pub fingerprint: Fingerprint,
    pub nonce: [u8; 32],
}

/// Which phase of a collective a [`Kind::Coll`] frame belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CollHeader {
    pub op: u64,
    pub phase: u32,
    pub step: u32,
    pub chunk: u32,
}

/// Small typed messages (everything except float payloads).
#[derive(Clone, Debug, PartialEq)]
pub enum Msg {
    Hello(Hello),
    Auth {
        mac: [u8; 32],
    },
    /// Final word of a handshake: `ok`, or a refusal with a reason.
    Verdict {
        ok: bool,
        reason: String,
    },
    Propose {
        seq: u64,
    },
    Accept {
        seq: u64,
    },
    Busy {
        seq: u64,
    },
    Abort {
        seq: u64,
    },
    CollAbort {
        op: u64,
        rank: u32,
        why: String,
    },
    PeerDown {
        rank: u32,
    },
    Goodbye {
        reason: String,
    },
    Register {
        port: u16,
    },
    Table {
        addrs: Vec<String>,
    },
}

impl Msg {
    pub fn kind(&self) -> Kind {
        match self {
            Msg::Hello(_) => Kind::Hello,
            Msg::Auth { .. } => Kind::Auth,
            Msg::Verdict { .. } => Kind::Verdict,
            Msg::Propose { .. } => Kind::Propose,
            Msg::Accept { .. } => Kind::Accept,
            Msg::Busy { .. } => Kind::Busy,
            Msg::Abort { .. } => Kind::Abort,
            Msg::CollAbort { .. } => Kind::CollAbort,
            Msg::PeerDown { .. } => Kind::PeerDown,
            Msg::Goodbye { .. } => Kind::Goodbye,
            Msg::Register { .. } => Kind::Register,
            Msg::Table { .. } => Kind::Table,
        }
    }
}

/// A decoded frame.
#[derive(Debug)]
pub enum Incoming {
    Msg(Msg),
    Snapshot { seq: u64, data: Vec<f32> },
    Coll { hdr: CollHeader, data: Vec<f32> },
}

/// Caps derived from the model size.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Parameters of the model: a snapshot carries exactly this many floats, a chunk at most this many.
    pub params: u64,
}

impl Limits {
    /// Largest body accepted for frames of `kind`.
    pub fn cap(&self, kind: Kind) -> u64 {
        match kind {
            Kind::Snapshot => SNAPSHOT_SUB + 4 * self.params,
            Kind::Coll => COLL_SUB + 4 * self.params,
            _ => CONTROL_CAP,
        }
    }
}

/// A parsed header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub kind: Kind,
    pub len: u64,
}

/// Pure: parse and bound-check a header.
pub fn decode_header(bytes: &[u8; HEADER_LEN], limits: &Limits) -> Result<Header, FrameError> {
    let kind = Kind::from_u8(bytes[0])?;
    let mut l = [0u8; 8];
    l.copy_from_slice(&bytes[1..9]);
    let len = u64::from_le_bytes(l);
    let cap = limits.cap(kind);
    if len > cap {
        return Err(FrameError::Oversized {
            kind: kind.name(),
            len,
            cap,
        });
    }
    Ok(Header { kind, len })
}

pub fn encode_header(kind: Kind, len: u64) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0] = kind as u8;
    h[1..9].copy_from_slice(&len.to_le_bytes());
    h
}

/// Bounds-checked little-endian reader over a frame body.
struct Rd<'a> {
    buf: &'a [u8],
    kind: &'static str,
}

impl<'a> Rd<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], FrameError> {
        if self.buf.len() < n {
            return Err(FrameError::malformed(self.kind, "body too short"));
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, FrameError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, FrameError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, FrameError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, FrameError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }
    fn arr32(&mut self) -> Result<[u8; 32], FrameError> {
        let mut a = [0u8; 32];
        a.copy_from_slice(self.take(32)?);
        Ok(a)
    }
    fn string(&mut self, max: usize) -> Result<String, FrameError> {
        let n = self.u32()? as usize;
        if n > max {
            return Err(FrameError::malformed(
                self.kind,
                format!("string of {n} bytes, at most {max} allowed"),
            ));
        }
        let b = self.take(n)?;
        String::from_utf8(b.to_vec())
            .map_err(|_| FrameError::malformed(self.kind, "string is not UTF-8"))
    }
    fn end(&self) -> Result<(), FrameError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(FrameError::malformed(
                self.kind,
                format!("{} trailing bytes", self.buf.len()),
            ))
        }
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Pure: encode a control message as a whole frame (header included).
pub fn encode_msg(msg: &Msg) -> Vec<u8> {
    let mut b = Vec::with_capacity(64);
    match msg {
        Msg::Hello(h) => {
            b.push(h.purpose as u8);
            b.extend_from_slice(&h.rank.to_le_bytes());
            b.extend_from_slice(&h.world.to_le_bytes());
            put_str(&mut b, &h.run_id);
            b.extend_from_slice(&h.fingerprint.params.to_le_bytes());
            b.extend_from_slice(&h.fingerprint.layout_hash.to_le_bytes());
            b.extend_from_slice(&h.nonce);
        }
        Msg::Auth { mac } => b.extend_from_slice(mac),
        Msg::Verdict { ok, reason } => {
            b.push(u8::from(*ok));
            put_str(&mut b, reason);
        }
        Msg::Propose { seq } | Msg::Accept { seq } | Msg::Busy { seq } | Msg::Abort { seq } => {
            b.extend_from_slice(&seq.to_le_bytes())
        }
        Msg::CollAbort { op, rank, why } => {
            b.extend_from_slice(&op.to_le_bytes());
            b.extend_from_slice(&rank.to_le_bytes());
            put_str(&mut b, why);
        }
        Msg::PeerDown { rank } => b.extend_from_slice(&rank.to_le_bytes()),
        Msg::Goodbye { reason } => put_str(&mut b, reason),
        Msg::Register { port } => b.extend_from_slice(&port.to_le_bytes()),
        Msg::Table { addrs } => {
            b.extend_from_slice(&(addrs.len() as u32).to_le_bytes());
            for a in addrs {
                put_str(&mut b, a);
            }
        }
    }
    let mut frame = Vec::with_capacity(HEADER_LEN + b.len());
    frame.extend_from_slice(&encode_header(msg.kind(), b.len() as u64));
    frame.extend_from_slice(&b);
    frame
}

/// Pure: decode the body of a control frame.
pub fn decode_msg(kind: Kind, body: &[u8]) -> Result<Msg, FrameError> {
    let mut r = Rd {
        buf: body,
        kind: kind.name(),
    };
    let msg = match kind {
        Kind::Hello => {
            let purpose = match r.u8()? {
                1 => Purpose::Link,
                2 => Purpose::Register,
                p => {
                    return Err(FrameError::malformed(
                        "hello",
                        format!("unknown purpose {p}"),
                    ))
                }
            };
            let rank = r.u32()?;
            let world = r.u32()?;
            let run_id = r.string(MAX_RUN_ID)?;
            let params = r.u64()?;
            let layout_hash = r.u64()?;
            let nonce = r.arr32()?;
            Msg::Hello(Hello {
                purpose,
                rank,
                world,
                run_id,
                fingerprint: Fingerprint {
                    params,
                    layout_hash,
                },
                nonce,
            })
        }
        Kind::Auth => Msg::Auth { mac: r.arr32()? },
        Kind::Verdict => {
            let ok = match r.u8()? {
                0 => false,
                1 => true,
                v => return Err(FrameError::malformed("verdict", format!("bad flag {v}"))),
            };
            Msg::Verdict {
                ok,
                reason: r.string(4096)?,
            }
        }
        Kind::Propose => Msg::Propose { seq: r.u64()? },
        Kind::Accept => Msg::Accept { seq: r.u64()? },
        Kind::Busy => Msg::Busy { seq: r.u64()? },
        Kind::Abort => Msg::Abort { seq: r.u64()? },
        Kind::CollAbort => Msg::CollAbort {
            op: r.u64()?,
            rank: r.u32()?,
            why: r.string(4096)?,
        },
        Kind::PeerDown => Msg::PeerDown { rank: r.u32()? },
        Kind::Goodbye => Msg::Goodbye {
            reason: r.string(4096)?,
        },
        Kind::Register => Msg::Register { port: r.u16()? },
        Kind::Table => {
            let n = r.u32()? as usize;
            // Each entry takes at least 4 bytes: refuse counts the body cannot hold before allocating.
            if n > body.len() / 4 {
                return Err(FrameError::malformed(
                    "table",
                    format!("{n} entries cannot fit in {} bytes", body.len()),
                ));
            }
            let mut addrs = Vec::with_capacity(n);
            for _ in 0..n {
                addrs.push(r.string(512)?);
            }
            Msg::Table { addrs }
        }
        Kind::Snapshot | Kind::Coll => {
            return Err(FrameError::malformed(
                kind.name(),
                "payload frame decoded as a control message",
            ))
        }
    };
    r.end()?;
    Ok(msg)
}

/// Recycles large f32 buffers so a 45 MB exchange does not fault in fresh pages every time.
#[derive(Clone, Debug, Default)]
pub struct BufPool {
    inner: Arc<Mutex<Vec<Vec<f32>>>>,
}

const POOL_MAX: usize = 8;

impl BufPool {
    /// A buffer of exactly `len` floats (contents unspecified: the caller overwrites all of it).
    pub fn take(&self, len: usize) -> Vec<f32> {
        if let Ok(mut v) = self.inner.lock() {
            if let Some(i) = v.iter().position(|b| b.len() == len) {
                return v.swap_remove(i);
            }
        }
        vec![0.0; len]
    }
    /// Give a buffer back for reuse.
    pub fn give(&self, buf: Vec<f32>) {
        if buf.is_empty() {
            return;
        }
        if let Ok(mut v) = self.inner.lock() {
            if v.len() < POOL_MAX {
                v.push(buf);
            }
        }
    }
}

/// Read exactly `buf.len()` bytes. `Ok(false)` on a clean end of stream before the first byte.
async fn read_full<R: AsyncRead + Unpin>(r: &mut R, buf: &mut [u8]) -> Result<bool, FrameError> {
    let mut got = 0;
    while got < buf.len() {
        let n = r.read(&mut buf[got..]).await?;
        if n == 0 {
            return if got == 0 {
                Ok(false)
            } else {
                Err(FrameError::Truncated)
            };
        }
        got += n;
    }
    Ok(true)
}

async fn read_body<R: AsyncRead + Unpin>(r: &mut R, buf: &mut [u8]) -> Result<(), FrameError> {
    if buf.is_empty() || read_full(r, buf).await? {
        Ok(())
    } else {
        Err(FrameError::Truncated)
    }
}

/// Read floats straight into `out` (viewed as bytes), then fix the byte order on big-endian hosts.
async fn read_floats<R: AsyncRead + Unpin>(r: &mut R, out: &mut [f32]) -> Result<(), FrameError> {
    read_body(r, bytemuck::cast_slice_mut(out)).await?;
    #[cfg(target_endian = "big")]
    for x in out.iter_mut() {
        *x = f32::from_bits(u32::from_le(x.to_bits()));
    }
    Ok(())
}

/// Read one whole frame. Errors are local to this connection; garbage never panics and a finite
/// input always terminates.
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    limits: &Limits,
    pool: &BufPool,
) -> Result<Incoming, FrameError> {
    let mut hb = [0u8; HEADER_LEN];
    if !read_full(r, &mut hb).await? {
        return Err(FrameError::Closed);
    }
    let h = decode_header(&hb, limits)?;
    match h.kind {
        Kind::Snapshot => {
            let floats = payload_floats(h, SNAPSHOT_SUB)?;
            if floats != limits.params {
                return Err(FrameError::WrongPayloadLen {
                    got: floats,
                    want: limits.params,
                });
            }
            let mut sub = [0u8; SNAPSHOT_SUB as usize];
            read_body(r, &mut sub).await?;
            let seq = u64::from_le_bytes(sub);
            let mut data = pool.take(floats as usize);
            if let Err(e) = read_floats(r, &mut data).await {
                pool.give(data);
                return Err(e);
            }
            Ok(Incoming::Snapshot { seq, data })
        }
        Kind::Coll => {
            let floats = payload_floats(h, COLL_SUB)?;
            let mut sub = [0u8; COLL_SUB as usize];
            read_body(r, &mut sub).await?;
            let mut rd = Rd {
                buf: &sub,
                kind: "collective",
            };
            let hdr = CollHeader {
                op: rd.u64()?,
                phase: rd.u32()?,
                step: rd.u32()?,
                chunk: rd.u32()?,
            };
            let mut data = pool.take(floats as usize);
            if let Err(e) = read_floats(r, &mut data).await {
                pool.give(data);
                return Err(e);
            }
            Ok(Incoming::Coll { hdr, data })
        }
        kind => {
            // len <= CONTROL_CAP was checked by decode_header.
            let mut body = vec![0u8; h.len as usize];
            read_body(r, &mut body).await?;
            Ok(Incoming::Msg(decode_msg(kind, &body)?))
        }
    }
}

fn payload_floats(h: Header, sub: u64) -> Result<u64, FrameError> {
    if h.len < sub || (h.len - sub) % 4 != 0 {
        return Err(FrameError::malformed(
            h.kind.name(),
            format!(
                "body of {} bytes is not a sub-header plus whole floats",
                h.len
            ),
        ));
    }
    Ok((h.len - sub) / 4)
}

/// Write a control message.
pub async fn write_msg<W: AsyncWrite + Unpin>(w: &mut W, msg: &Msg) -> std::io::Result<()> {
    w.write_all(&encode_msg(msg)).await
}

/// Write `data` as raw little-endian f32 after a small header: one `write_all` of the whole slice.
async fn write_floats<W: AsyncWrite + Unpin>(
    w: &mut W,
    head: &[u8],
    data: &[f32],
) -> std::io::Result<()> {
    w.write_all(head).await?;
    #[cfg(target_endian = "little")]
    {
        w.write_all(bytemuck::cast_slice(data)).await
    }
    #[cfg(target_endian = "big")]
    {
        for part in data.chunks(1 << 16) {
            let le: Vec<u8> = part.iter().flat_map(|x| x.to_le_bytes()).collect();
            w.write_all(&le).await?;
        }
        Ok(())
    }
}

/// Write a snapshot frame.
pub async fn write_snapshot<W: AsyncWrite + Unpin>(
    w: &mut W,
    seq: u64,
    data: &[f32],
) -> std::io::Result<()> {
    let mut head = [0u8; HEADER_LEN + SNAPSHOT_SUB as usize];
    head[..HEADER_LEN].copy_from_slice(&encode_header(
        Kind::Snapshot,
        SNAPSHOT_SUB + 4 * data.len() as u64,
    ));
    head[HEADER_LEN..].copy_from_slice(&seq.to_le_bytes());
    write_floats(w, &head, data).await
}

/// Write a collective chunk frame.
pub async fn write_coll<W: AsyncWrite + Unpin>(
    w: &mut W,
    hdr: CollHeader,
    data: &[f32],
) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(HEADER_LEN + COLL_SUB as usize);
    head.extend_from_slice(&encode_header(Kind::Coll, COLL_SUB + 4 * data.len() as u64));
    head.extend_from_slice(&hdr.op.to_le_bytes());
    head.extend_from_slice(&hdr.phase.to_le_bytes());
    head.extend_from_slice(&hdr.step.to_le_bytes());
    head.extend_from_slice(&hdr.chunk.to_le_bytes());
    head.extend_from_slice(&0u32.to_le_bytes());
    write_floats(w, &head, data).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits { params: 16 }
    }

    #[test]
    fn control_messages_round_trip() {
        let msgs = vec![
            Msg::Hello(Hello {
                purpose: Purpose::Link,
                rank: 3,
                world: 8,
                run_id: "run-x".into(),
                fingerprint: Fingerprint::new(11_200_000, "resnet18"),
                nonce: [7; 32],
            }),
            Msg::Auth { mac: [9; 32] },
            Msg::Verdict {
                ok: false,
                reason: "nope".into(),
            },
            Msg::Propose { seq: 1 },
            Msg::Accept { seq: 2 },
            Msg::Busy { seq: 3 },
            Msg::Abort { seq: 4 },
            Msg::CollAbort {
                op: 5,
                rank: 2,
                why: "eof".into(),
            },
            Msg::PeerDown { rank: 9 },
            Msg::Goodbye {
                reason: "done".into(),
            },
            Msg::Register { port: 4242 },
            Msg::Table {
                addrs: vec!["127.0.0.1:1".into(), "h:2".into()],
            },
        ];
        for m in msgs {
            let f = encode_msg(&m);
            let mut hb = [0u8; HEADER_LEN];
            hb.copy_from_slice(&f[..HEADER_LEN]);
            let h = decode_header(&hb, &limits()).expect("header");
            assert_eq!(h.len as usize, f.len() - HEADER_LEN);
            assert_eq!(decode_msg(h.kind, &f[HEADER_LEN..]).expect("body"), m);
        }
    }

    #[test]
    fn oversized_snapshot_is_refused_before_allocation() {
        let h = encode_header(Kind::Snapshot, u64::MAX);
        let e = decode_header(&h, &limits()).unwrap_err();
        assert!(matches!(e, FrameError::Oversized { .. }), "{e}");
    }

    #[tokio::test]
    async fn snapshot_round_trip_exact_bits() {
        let data: Vec<f32> = (0..16)
            .map(|i| f32::from_bits(0x3f80_0000 ^ (i * 0x0123_4567)))
            .collect();
        let mut wire = Vec::new();
        write_snapshot(&mut wire, 77, &data).await.expect("write");
        let pool = BufPool::default();
        match read_frame(&mut wire.as_slice(), &limits(), &pool)
            .await
            .expect("read")
        {
            Incoming::Snapshot { seq, data: got } => {
                assert_eq!(seq, 77);
                assert_eq!(
                    bytemuck::cast_slice::<f32, u32>(&got),
                    bytemuck::cast_slice::<f32, u32>(&data)
                );
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test]
    async fn truncated_payload_is_an_error() {
        let data = vec![1.0f32; 16];
        let mut wire = Vec::new();
        write_snapshot(&mut wire, 1, &data).await.expect("write");
        wire.truncate(wire.len() - 3);
        let e = read_frame(&mut wire.as_slice(), &limits(), &BufPool::default())
            .await
            .unwrap_err();
        assert!(matches!(e, FrameError::Truncated), "{e}");
    }
}
