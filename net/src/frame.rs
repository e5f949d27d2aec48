//! The wire format: typed frames and their pure codec. No I/O here: [`crate::connection`] moves
//! whole frames on a socket, this module only says what the bytes mean.
//!
//! Frame = 9-byte header `[kind: u8][body_len: u64 LE]` + body. Every body length is checked against a
//! hard cap *before* anything is allocated: small control messages are capped at [`CONTROL_CAP`],
//! payload frames at the model size (4 bytes per parameter plus a fixed sub-header).
//!
//! [`PairMsg`] is the one definition of the pairing messages: the pure state machine
//! ([`crate::pairing`]) consumes and produces it and the codec carries it as [`Msg::Pair`].

use crate::error::FrameError;

/// First bytes each side sends on a fresh connection, followed by [`PROTOCOL_VERSION`] (u32 LE).
pub const MAGIC: [u8; 8] = *b"A2CIDNET";
/// Bump on any incompatible change of the wire format or the protocol.
pub const PROTOCOL_VERSION: u32 = 3;
/// Bytes of the preamble: [`MAGIC`] then the protocol version.
pub const PREAMBLE_LEN: usize = 12;
/// Bytes of the frame header.
pub const HEADER_LEN: usize = 9;
/// Cap on the body of any non-payload frame.
pub const CONTROL_CAP: u64 = 1 << 20;
/// Sub-header of a snapshot frame: `seq: u64`.
pub const SNAPSHOT_SUB: u64 = 8;
/// Sub-header of a collective frame: `op: u64, phase: u32, step: u32, chunk: u32, pad: u32`.
pub const COLL_SUB: u64 = 24;
/// Longest runtime description of a training state ([`Msg::State`]).
pub const MAX_STATE_META: usize = 1 << 16;
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
    Stop = 42,
    Refused = 43,
    Register = 50,
    Table = 51,
    State = 52,
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
            42 => Kind::Stop,
            41 => Kind::Goodbye,
            43 => Kind::Refused,
            50 => Kind::Register,
            51 => Kind::Table,
            52 => Kind::State,
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
            Kind::Stop => "stop",
            Kind::Goodbye => "goodbye",
            Kind::Refused => "refused",
            Kind::Register => "register",
            Kind::Table => "table",
            Kind::State => "state",
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
    /// (e.g. `"conv1.weight:64x3x3x3;conv1.bias:64;..."`): the first 8 bytes of its SHA-256.
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
    /// A restarted worker re-opening its link to a neighbour of a running mesh (either rank of
    /// the link dials: the one that comes back).
    Rejoin = 3,
    /// A restarted worker asking a neighbour for its current training state.
    State = 4,
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

/// The pairing messages: what [`crate::pairing::Pairing`] reads and writes, as they travel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PairMsg {
    Propose { seq: u64 },
    Accept { seq: u64 },
    Busy { seq: u64 },
    Abort { seq: u64 },
}

impl PairMsg {
    pub fn kind(self) -> Kind {
        match self {
            PairMsg::Propose { .. } => Kind::Propose,
            PairMsg::Accept { .. } => Kind::Accept,
            PairMsg::Busy { .. } => Kind::Busy,
            PairMsg::Abort { .. } => Kind::Abort,
        }
    }
    /// The proposal this message is about.
    pub fn seq(self) -> u64 {
        match self {
            PairMsg::Propose { seq }
            | PairMsg::Accept { seq }
            | PairMsg::Busy { seq }
            | PairMsg::Abort { seq } => seq,
        }
    }
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
    /// A pairing message: one frame kind per variant (`Propose` .. `Abort`), body `seq: u64`.
    Pair(PairMsg),
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
    /// The run is ending: rank `origin` reached its stop rule (flooded to every worker).
    Stop {
        origin: u32,
        reason: String,
    },
    /// This worker did not average the sender's snapshot of exchange `seq`, and why.
    Refused {
        seq: u64,
        why: String,
    },
    Register {
        port: u16,
    },
    Table {
        addrs: Vec<String>,
    },
    /// A worker's training state for a rejoining neighbour: its clock, the collectives done so
    /// far, what the runtime says about the state (`meta`, opaque here), then `buffers` snapshot
    /// frames (`seq` 0, 1, ...).
    State {
        clock: f64,
        ring_op: u64,
        buffers: u32,
        meta: String,
    },
}

impl Msg {
    pub fn kind(&self) -> Kind {
        match self {
            Msg::Hello(_) => Kind::Hello,
            Msg::Auth { .. } => Kind::Auth,
            Msg::Verdict { .. } => Kind::Verdict,
            Msg::Pair(p) => p.kind(),
            Msg::CollAbort { .. } => Kind::CollAbort,
            Msg::PeerDown { .. } => Kind::PeerDown,
            Msg::Goodbye { .. } => Kind::Goodbye,
            Msg::Stop { .. } => Kind::Stop,
            Msg::Refused { .. } => Kind::Refused,
            Msg::Register { .. } => Kind::Register,
            Msg::Table { .. } => Kind::Table,
            Msg::State { .. } => Kind::State,
        }
    }
}

/// One whole frame, as read from or written to a connection.
#[derive(Debug, PartialEq)]
pub enum Frame {
    Msg(Msg),
    Snapshot { seq: u64, data: Vec<f32> },
    Coll { hdr: CollHeader, data: Vec<f32> },
}

impl Frame {
    pub fn kind(&self) -> Kind {
        match self {
            Frame::Msg(m) => m.kind(),
            Frame::Snapshot { .. } => Kind::Snapshot,
            Frame::Coll { .. } => Kind::Coll,
        }
    }
}

/// Caps derived from the model size.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Parameters of the model: a snapshot carries exactly this many floats, a chunk at most this many.
    pub params: u64,
}

impl Limits {
    /// Before authentication: no payload frame is accepted, so an unauthenticated peer cannot make
    /// this worker allocate a model-sized buffer.
    pub const HANDSHAKE: Limits = Limits { params: 0 };

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

/// The preamble this build sends.
pub fn encode_preamble() -> [u8; PREAMBLE_LEN] {
    let mut pre = [0u8; PREAMBLE_LEN];
    pre[..8].copy_from_slice(&MAGIC);
    pre[8..].copy_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    pre
}

/// Pure: the protocol version a peer's preamble announces, or `None` if it does not start with
/// [`MAGIC`] (not an a2cid worker).
pub fn decode_preamble(bytes: &[u8; PREAMBLE_LEN]) -> Option<u32> {
    if bytes[..8] != MAGIC {
        return None;
    }
    Some(u32::from_le_bytes([
        bytes[8], bytes[9], bytes[10], bytes[11],
    ]))
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

/// Pure: header and sub-header of a snapshot frame carrying `floats` floats.
pub fn snapshot_head(seq: u64, floats: usize) -> [u8; HEADER_LEN + SNAPSHOT_SUB as usize] {
    let mut head = [0u8; HEADER_LEN + SNAPSHOT_SUB as usize];
    head[..HEADER_LEN].copy_from_slice(&encode_header(
        Kind::Snapshot,
        SNAPSHOT_SUB + 4 * floats as u64,
    ));
    head[HEADER_LEN..].copy_from_slice(&seq.to_le_bytes());
    head
}

/// Pure: header and sub-header of a collective frame carrying `floats` floats.
pub fn coll_head(hdr: CollHeader, floats: usize) -> [u8; HEADER_LEN + COLL_SUB as usize] {
    let mut head = [0u8; HEADER_LEN + COLL_SUB as usize];
    head[..HEADER_LEN].copy_from_slice(&encode_header(Kind::Coll, COLL_SUB + 4 * floats as u64));
    let sub = &mut head[HEADER_LEN..];
    sub[0..8].copy_from_slice(&hdr.op.to_le_bytes());
    sub[8..12].copy_from_slice(&hdr.phase.to_le_bytes());
    sub[12..16].copy_from_slice(&hdr.step.to_le_bytes());
    sub[16..20].copy_from_slice(&hdr.chunk.to_le_bytes());
    // sub[20..24] is padding, left zero.
    head
}

/// Pure: the collective sub-header.
pub fn decode_coll_sub(sub: &[u8; COLL_SUB as usize]) -> Result<CollHeader, FrameError> {
    let mut rd = Rd {
        buf: sub,
        kind: "collective",
    };
    Ok(CollHeader {
        op: rd.u64()?,
        phase: rd.u32()?,
        step: rd.u32()?,
        chunk: rd.u32()?,
    })
}

/// Pure: how many floats follow the `sub`-byte sub-header of a payload frame.
pub fn payload_floats(h: Header, sub: u64) -> Result<u64, FrameError> {
    if h.len < sub || !(h.len - sub).is_multiple_of(4) {
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

/// Pure: floats received as little-endian bytes, in host order (a no-op on little-endian hosts).
pub fn floats_from_le(data: &mut [f32]) {
    #[cfg(target_endian = "big")]
    for x in data.iter_mut() {
        *x = f32::from_bits(u32::from_le(x.to_bits()));
    }
    #[cfg(target_endian = "little")]
    let _ = data;
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
        Msg::Pair(p) => b.extend_from_slice(&p.seq().to_le_bytes()),
        Msg::CollAbort { op, rank, why } => {
            b.extend_from_slice(&op.to_le_bytes());
            b.extend_from_slice(&rank.to_le_bytes());
            put_str(&mut b, why);
        }
        Msg::PeerDown { rank } => b.extend_from_slice(&rank.to_le_bytes()),
        Msg::Goodbye { reason } => put_str(&mut b, reason),
        Msg::Stop { origin, reason } => {
            b.extend_from_slice(&origin.to_le_bytes());
            put_str(&mut b, reason);
        }
        Msg::Refused { seq, why } => {
            b.extend_from_slice(&seq.to_le_bytes());
            put_str(&mut b, why);
        }
        Msg::Register { port } => b.extend_from_slice(&port.to_le_bytes()),
        Msg::Table { addrs } => {
            b.extend_from_slice(&(addrs.len() as u32).to_le_bytes());
            for a in addrs {
                put_str(&mut b, a);
            }
        }
        Msg::State {
            clock,
            ring_op,
            buffers,
            meta,
        } => {
            b.extend_from_slice(&clock.to_bits().to_le_bytes());
            b.extend_from_slice(&ring_op.to_le_bytes());
            b.extend_from_slice(&buffers.to_le_bytes());
            put_str(&mut b, meta);
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
                3 => Purpose::Rejoin,
                4 => Purpose::State,
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
        Kind::Propose => Msg::Pair(PairMsg::Propose { seq: r.u64()? }),
        Kind::Accept => Msg::Pair(PairMsg::Accept { seq: r.u64()? }),
        Kind::Busy => Msg::Pair(PairMsg::Busy { seq: r.u64()? }),
        Kind::Abort => Msg::Pair(PairMsg::Abort { seq: r.u64()? }),
        Kind::CollAbort => Msg::CollAbort {
            op: r.u64()?,
            rank: r.u32()?,
            why: r.string(4096)?,
        },
        Kind::PeerDown => Msg::PeerDown { rank: r.u32()? },
        Kind::Goodbye => Msg::Goodbye {
            reason: r.string(4096)?,
        },
        Kind::Stop => Msg::Stop {
            origin: r.u32()?,
            reason: r.string(4096)?,
        },
        Kind::Refused => Msg::Refused {
            seq: r.u64()?,
            why: r.string(4096)?,
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
        Kind::State => Msg::State {
            clock: f64::from_bits(r.u64()?),
            ring_op: r.u64()?,
            buffers: r.u32()?,
            meta: r.string(MAX_STATE_META)?,
        },
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
            Msg::Pair(PairMsg::Propose { seq: 1 }),
            Msg::Pair(PairMsg::Accept { seq: 2 }),
            Msg::Pair(PairMsg::Busy { seq: 3 }),
            Msg::Pair(PairMsg::Abort { seq: 4 }),
            Msg::CollAbort {
                op: 5,
                rank: 2,
                why: "eof".into(),
            },
            Msg::PeerDown { rank: 9 },
            Msg::Goodbye {
                reason: "done".into(),
            },
            Msg::Stop {
                origin: 3,
                reason: "the epochs are done".into(),
            },
            Msg::Refused {
                seq: 7,
                why: "value 3 is NaN".into(),
            },
            Msg::Register { port: 4242 },
            Msg::Table {
                addrs: vec!["127.0.0.1:1".into(), "h:2".into()],
            },
            Msg::State {
                clock: 12.5,
                ring_op: 3,
                buffers: 2,
                meta: "{\"grads\":[1,2]}".into(),
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

    /// The pairing messages kept the bytes they had when they were a separate enum (protocol 1).
    #[test]
    fn pairing_messages_keep_their_wire_bytes() {
        let seq = 0x0102_0304_0506_0708;
        for (msg, kind) in [
            (PairMsg::Propose { seq }, 10u8),
            (PairMsg::Accept { seq }, 11),
            (PairMsg::Busy { seq }, 12),
            (PairMsg::Abort { seq }, 13),
        ] {
            assert_eq!(
                encode_msg(&Msg::Pair(msg)),
                vec![kind, 8, 0, 0, 0, 0, 0, 0, 0, 8, 7, 6, 5, 4, 3, 2, 1],
                "{msg:?}"
            );
        }
    }

    /// Pinned before the codec was reorganised: fingerprints must not change between builds that
    /// are meant to talk to each other.
    #[test]
    fn fingerprint_is_stable() {
        let f = Fingerprint::new(11_200_000, "conv1.weight:64x3x3x3;conv1.bias:64");
        assert_eq!(f.layout_hash, 0x3efc_bb1d_a7d3_64ef);
        assert_eq!(f.params, 11_200_000);
    }

    #[test]
    fn preamble_round_trips_and_rejects_strangers() {
        assert_eq!(decode_preamble(&encode_preamble()), Some(PROTOCOL_VERSION));
        assert_eq!(decode_preamble(b"GET / HTTP/1"), None);
    }

    #[test]
    fn coll_head_round_trips() {
        let hdr = CollHeader {
            op: 9,
            phase: 2,
            step: 3,
            chunk: 4,
        };
        let head = coll_head(hdr, 5);
        let mut hb = [0u8; HEADER_LEN];
        hb.copy_from_slice(&head[..HEADER_LEN]);
        let h = decode_header(&hb, &limits()).expect("header");
        assert_eq!(payload_floats(h, COLL_SUB).expect("floats"), 5);
        let mut sub = [0u8; COLL_SUB as usize];
        sub.copy_from_slice(&head[HEADER_LEN..]);
        assert_eq!(decode_coll_sub(&sub).expect("sub"), hdr);
    }

    #[test]
    fn oversized_snapshot_is_refused_before_allocation() {
        let h = encode_header(Kind::Snapshot, u64::MAX);
        let e = decode_header(&h, &limits()).unwrap_err();
        assert!(matches!(e, FrameError::Oversized { .. }), "{e}");
        let e = decode_header(&encode_header(Kind::Snapshot, 12), &Limits::HANDSHAKE).unwrap_err();
        assert!(matches!(e, FrameError::Oversized { .. }), "{e}");
    }
}
