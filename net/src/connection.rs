//! One socket, whole typed frames only (mini-redis's `Connection`). The read half sits behind a
//! buffer and yields complete [`Frame`]s; the write half writes complete frames. The codec itself,
//! with its size caps, is [`crate::frame`]; this module is the only place that touches socket bytes
//! after the handshake preamble.
//!
//! Big payloads never go through an intermediate buffer: `&[f32]` is viewed as bytes (bytemuck) and
//! written with one `write_all`, and received floats are read straight into a pooled `Vec<f32>`
//! viewed as bytes (the read buffer steps aside for reads larger than itself).

use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tracing::debug;

use crate::error::FrameError;
use crate::frame::{
    coll_head, decode_coll_sub, decode_header, decode_msg, decode_preamble, encode_msg,
    encode_preamble, floats_from_le, payload_floats, snapshot_head, Frame, Kind, Limits, Msg,
    COLL_SUB, HEADER_LEN, PREAMBLE_LEN, SNAPSHOT_SUB,
};
use crate::pool::BufPool;

/// Read buffer: many small control frames per system call; payloads bypass it.
const READ_BUFFER: usize = 1 << 16;

/// The read half: decodes whole frames, bounded by [`Limits`].
#[derive(Debug)]
pub struct FrameReader<R> {
    stream: BufReader<R>,
    limits: Limits,
    pool: BufPool,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// Starts with [`Limits::HANDSHAKE`]: no payload frame until [`set_limits`](Self::set_limits).
    pub fn new(stream: R, pool: BufPool) -> FrameReader<R> {
        FrameReader {
            stream: BufReader::with_capacity(READ_BUFFER, stream),
            limits: Limits::HANDSHAKE,
            pool,
        }
    }

    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// Read one whole frame. Errors are local to this connection; garbage never panics and a finite
    /// input always terminates. [`FrameError::Closed`] on a clean end of stream between frames.
    pub async fn read_frame(&mut self) -> Result<Frame, FrameError> {
        let mut hb = [0u8; HEADER_LEN];
        if !read_full(&mut self.stream, &mut hb).await? {
            return Err(FrameError::Closed);
        }
        let h = decode_header(&hb, &self.limits)?;
        match h.kind {
            Kind::Snapshot => {
                let floats = payload_floats(h, SNAPSHOT_SUB)?;
                if floats != self.limits.params {
                    return Err(FrameError::WrongPayloadLen {
                        got: floats,
                        want: self.limits.params,
                    });
                }
                let mut sub = [0u8; SNAPSHOT_SUB as usize];
                read_body(&mut self.stream, &mut sub).await?;
                let seq = u64::from_le_bytes(sub);
                let data = self.read_floats(floats as usize).await?;
                Ok(Frame::Snapshot { seq, data })
            }
            Kind::Coll => {
                let floats = payload_floats(h, COLL_SUB)?;
                let mut sub = [0u8; COLL_SUB as usize];
                read_body(&mut self.stream, &mut sub).await?;
                let hdr = decode_coll_sub(&sub)?;
                let data = self.read_floats(floats as usize).await?;
                Ok(Frame::Coll { hdr, data })
            }
            kind => {
                // len <= CONTROL_CAP was checked by decode_header.
                let mut body = vec![0u8; h.len as usize];
                read_body(&mut self.stream, &mut body).await?;
                Ok(Frame::Msg(decode_msg(kind, &body)?))
            }
        }
    }

    /// The peer's preamble: its protocol version, or `None` if it is not an a2cid worker.
    pub async fn read_preamble(&mut self) -> Result<Option<u32>, FrameError> {
        let mut pre = [0u8; PREAMBLE_LEN];
        match read_full(&mut self.stream, &mut pre).await {
            Ok(true) => Ok(decode_preamble(&pre)),
            // A peer that hangs up inside the preamble never was a worker we could talk to.
            Ok(false) | Err(FrameError::Truncated) => Err(FrameError::Closed),
            Err(e) => Err(e),
        }
    }

    /// Read `n` floats straight into a pooled buffer (viewed as bytes), in host byte order.
    async fn read_floats(&mut self, n: usize) -> Result<Vec<f32>, FrameError> {
        let mut data = self.pool.take(n);
        if let Err(e) = read_body(&mut self.stream, bytemuck::cast_slice_mut(&mut data)).await {
            self.pool.give(data);
            return Err(e);
        }
        floats_from_le(&mut data);
        Ok(data)
    }
}

/// The write half: writes whole frames, each with as few `write_all`s as its layout allows.
#[derive(Debug)]
pub struct FrameWriter<W> {
    stream: W,
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    pub fn new(stream: W) -> FrameWriter<W> {
        FrameWriter { stream }
    }

    /// The underlying stream (tests write into a `Vec<u8>` and read it back).
    pub fn into_inner(self) -> W {
        self.stream
    }

    pub async fn write_frame(&mut self, frame: &Frame) -> io::Result<()> {
        match frame {
            Frame::Msg(m) => self.write_msg(m).await,
            Frame::Snapshot { seq, data } => {
                self.write_floats(&snapshot_head(*seq, data.len()), data)
                    .await
            }
            Frame::Coll { hdr, data } => {
                self.write_floats(&coll_head(*hdr, data.len()), data).await
            }
        }
    }

    /// Write a control message (no payload) without wrapping it in a [`Frame`].
    pub async fn write_msg(&mut self, msg: &Msg) -> io::Result<()> {
        self.stream.write_all(&encode_msg(msg)).await
    }

    pub async fn write_preamble(&mut self) -> io::Result<()> {
        self.stream.write_all(&encode_preamble()).await
    }

    /// Close the write direction (the peer reads a clean end of stream after the last frame).
    pub async fn shutdown(&mut self) -> io::Result<()> {
        self.stream.shutdown().await
    }

    /// `head`, then `data` as raw little-endian f32: one `write_all` of the whole slice.
    async fn write_floats(&mut self, head: &[u8], data: &[f32]) -> io::Result<()> {
        self.stream.write_all(head).await?;
        #[cfg(target_endian = "little")]
        {
            self.stream.write_all(bytemuck::cast_slice(data)).await
        }
        #[cfg(target_endian = "big")]
        {
            for part in data.chunks(1 << 16) {
                let le: Vec<u8> = part.iter().flat_map(|x| x.to_le_bytes()).collect();
                self.stream.write_all(&le).await?;
            }
            Ok(())
        }
    }
}

/// One connection to a peer: a buffered [`FrameReader`] and a [`FrameWriter`]. It goes through the
/// handshake whole, then splits so a link can read and write at the same time.
#[derive(Debug)]
pub struct Connection<R = OwnedReadHalf, W = OwnedWriteHalf> {
    reader: FrameReader<R>,
    writer: FrameWriter<W>,
    peer_addr: Option<SocketAddr>,
}

impl Connection {
    /// Wrap a TCP stream (Nagle off: pairing messages are small and latency-bound).
    pub fn from_tcp(stream: TcpStream, pool: BufPool) -> Connection {
        if let Err(e) = stream.set_nodelay(true) {
            debug!("could not disable Nagle's algorithm: {e}");
        }
        let peer_addr = stream.peer_addr().ok();
        let (r, w) = stream.into_split();
        let mut c = Connection::new(r, w, pool);
        c.peer_addr = peer_addr;
        c
    }
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> Connection<R, W> {
    /// A connection over any pair of halves (tests use in-memory pipes).
    pub fn new(reader: R, writer: W, pool: BufPool) -> Connection<R, W> {
        Connection {
            reader: FrameReader::new(reader, pool),
            writer: FrameWriter::new(writer),
            peer_addr: None,
        }
    }

    /// The peer's socket address, when this is a TCP connection.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer_addr
    }

    /// Accept payload frames up to `limits` from now on (after authentication).
    pub fn set_limits(&mut self, limits: Limits) {
        self.reader.set_limits(limits);
    }

    pub async fn read_frame(&mut self) -> Result<Frame, FrameError> {
        self.reader.read_frame().await
    }
    pub async fn read_preamble(&mut self) -> Result<Option<u32>, FrameError> {
        self.reader.read_preamble().await
    }
    pub async fn write_frame(&mut self, frame: &Frame) -> io::Result<()> {
        self.writer.write_frame(frame).await
    }
    pub async fn write_msg(&mut self, msg: &Msg) -> io::Result<()> {
        self.writer.write_msg(msg).await
    }
    pub async fn write_preamble(&mut self) -> io::Result<()> {
        self.writer.write_preamble().await
    }
    pub async fn shutdown(&mut self) -> io::Result<()> {
        self.writer.shutdown().await
    }

    /// The two halves, for a reader task and a writer task. Bytes already buffered stay with the
    /// reader, so nothing read ahead during the handshake is lost.
    pub fn into_split(self) -> (FrameReader<R>, FrameWriter<W>) {
        (self.reader, self.writer)
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

/// The rest of a frame whose header was read: any end of stream here truncates the frame.
async fn read_body<R: AsyncRead + Unpin>(r: &mut R, buf: &mut [u8]) -> Result<(), FrameError> {
    if buf.is_empty() || read_full(r, buf).await? {
        Ok(())
    } else {
        Err(FrameError::Truncated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{CollHeader, PairMsg};

    fn reader(bytes: &[u8], params: u64) -> FrameReader<&[u8]> {
        let mut r = FrameReader::new(bytes, BufPool::default());
        r.set_limits(Limits { params });
        r
    }

    async fn wire(frames: &[Frame]) -> Vec<u8> {
        let mut w = FrameWriter::new(Vec::new());
        for f in frames {
            w.write_frame(f).await.expect("write");
        }
        w.into_inner()
    }

    #[tokio::test]
    async fn whole_frames_round_trip_with_exact_bits() {
        let data: Vec<f32> = (0..16)
            .map(|i| f32::from_bits(0x3f80_0000 ^ (i * 0x0123_4567)))
            .collect();
        let frames = vec![
            Frame::Msg(Msg::Pair(PairMsg::Propose { seq: 5 })),
            Frame::Snapshot {
                seq: 77,
                data: data.clone(),
            },
            Frame::Coll {
                hdr: CollHeader {
                    op: 1,
                    phase: 2,
                    step: 3,
                    chunk: 4,
                },
                data: data[..3].to_vec(),
            },
        ];
        let bytes = wire(&frames).await;
        let mut r = reader(&bytes, 16);
        for want in &frames {
            let got = r.read_frame().await.expect("frame");
            match (&got, want) {
                (Frame::Snapshot { data: a, .. }, Frame::Snapshot { data: b, .. })
                | (Frame::Coll { data: a, .. }, Frame::Coll { data: b, .. }) => assert_eq!(
                    bytemuck::cast_slice::<f32, u32>(a),
                    bytemuck::cast_slice::<f32, u32>(b)
                ),
                _ => {}
            }
            assert_eq!(got.kind(), want.kind());
        }
        assert!(matches!(r.read_frame().await, Err(FrameError::Closed)));
    }

    #[tokio::test]
    async fn truncated_payload_is_an_error() {
        let mut bytes = wire(&[Frame::Snapshot {
            seq: 1,
            data: vec![1.0; 16],
        }])
        .await;
        bytes.truncate(bytes.len() - 3);
        let e = reader(&bytes, 16).read_frame().await.unwrap_err();
        assert!(matches!(e, FrameError::Truncated), "{e}");
    }

    #[tokio::test]
    async fn payloads_are_refused_before_authentication() {
        let bytes = wire(&[Frame::Snapshot {
            seq: 1,
            data: vec![1.0; 16],
        }])
        .await;
        let mut r = FrameReader::new(&bytes[..], BufPool::default());
        let e = r.read_frame().await.unwrap_err();
        assert!(matches!(e, FrameError::Oversized { .. }), "{e}");
    }

    #[tokio::test]
    async fn preamble_of_a_stranger_or_a_hang_up() {
        let pre = encode_preamble();
        let mut ok = FrameReader::new(&pre[..], BufPool::default());
        assert_eq!(
            ok.read_preamble().await.expect("preamble"),
            Some(crate::frame::PROTOCOL_VERSION)
        );
        let mut http = FrameReader::new(&b"GET / HTTP/1.1\r\n"[..], BufPool::default());
        assert_eq!(http.read_preamble().await.expect("bytes"), None);
        let mut short = FrameReader::new(&b"A2CI"[..], BufPool::default());
        assert!(matches!(
            short.read_preamble().await,
            Err(FrameError::Closed)
        ));
    }
}
