//! Connection handshake: magic + protocol version, `Hello` (run id, rank, world, model fingerprint,
//! nonce), mutual HMAC-SHA256 challenge-response over the cluster secret, then a verdict each way.
//! Every check is made by *both* sides, so a mismatch is refused on both ends with an error naming it.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::connection::Connection;
use crate::error::{FrameError, HandshakeError, NetError};
use crate::frame::{encode_msg, Fingerprint, Frame, Hello, Msg, Purpose, PROTOCOL_VERSION};

/// Environment variable holding the shared cluster secret.
pub const SECRET_ENV: &str = "A2CID_SECRET";

/// The shared cluster secret. Never printed.
#[derive(Clone)]
pub struct Secret(Arc<Vec<u8>>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Secret {
    /// The shortest secret accepted, in bytes: a shorter one could be guessed.
    pub const MIN_LEN: usize = 16;

    /// A secret from raw bytes (refuses one shorter than [`Secret::MIN_LEN`]).
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<Secret, NetError> {
        let b = bytes.into();
        if b.len() < Secret::MIN_LEN {
            return Err(NetError::Secret(format!(
                "the cluster secret is {} bytes, shorter than the {} it must have: set \
                 {SECRET_ENV} (or the secret file) to a long random value, e.g. the output of \
                 `openssl rand -hex 32`",
                b.len(),
                Secret::MIN_LEN
            )));
        }
        Ok(Secret(Arc::new(b)))
    }
    /// A fresh random secret (64 hex chars), for a local launch that spawns its own workers: pass
    /// [`Secret::as_env_value`] to the children in `A2CID_SECRET`.
    pub fn generate() -> Secret {
        let mut raw = [0u8; 32];
        rand::rng().fill_bytes(&mut raw);
        let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        Secret(Arc::new(hex.into_bytes()))
    }
    /// The value to put in `A2CID_SECRET` for child processes.
    pub fn as_env_value(&self) -> String {
        String::from_utf8_lossy(&self.0).into_owned()
    }
    /// Read the secret from a file (surrounding whitespace ignored).
    pub fn from_file(path: &Path) -> Result<Secret, NetError> {
        let text = std::fs::read(path).map_err(|e| {
            NetError::Secret(format!(
                "cannot read secret file {}: {e}; check the path and its permissions",
                path.display()
            ))
        })?;
        let trimmed = String::from_utf8_lossy(&text).trim().as_bytes().to_vec();
        Secret::new(trimmed).map_err(|e| match e {
            NetError::Secret(why) => {
                NetError::Secret(format!("secret file {}: {why}", path.display()))
            }
            other => other,
        })
    }
    /// The secret from `file` if given, else from `A2CID_SECRET`.
    pub fn resolve(file: Option<&Path>) -> Result<Secret, NetError> {
        if let Some(p) = file {
            return Secret::from_file(p);
        }
        match std::env::var(SECRET_ENV) {
            Ok(v) if !v.is_empty() => Secret::new(v.into_bytes()),
            _ => Err(NetError::Secret(format!(
                "no cluster secret: set {SECRET_ENV} to the same value on every worker or pass a secret file"
            ))),
        }
    }
    fn mac(&self, label: &[u8], transcript: &[u8]) -> Option<HmacSha256> {
        let mut m = HmacSha256::new_from_slice(&self.0).ok()?;
        m.update(label);
        m.update(transcript);
        Some(m)
    }
}

type HmacSha256 = Hmac<Sha256>;

/// Who this worker is, as told to peers.
#[derive(Clone, Debug)]
pub struct Identity {
    pub rank: u32,
    pub world: u32,
    pub run_id: String,
    pub fingerprint: Fingerprint,
    pub secret: Secret,
}

/// Which end of the TCP connection we are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Connector,
    Acceptor,
}

impl Role {
    fn label(self) -> &'static [u8] {
        match self {
            Role::Connector => b"a2cid-auth-v1/connector",
            Role::Acceptor => b"a2cid-auth-v1/acceptor",
        }
    }
    fn other(self) -> Role {
        match self {
            Role::Connector => Role::Acceptor,
            Role::Acceptor => Role::Connector,
        }
    }
}

/// Run the handshake on a fresh connection. `purpose` is what the connector asks for (the
/// acceptor's value is ignored; the peer's is returned). `check_peer` adds role-specific checks (e.g.
/// "this rank is a neighbour of mine"). Bounded by `timeout`. The connection still refuses payload
/// frames afterwards: the caller raises its limits once it decides to keep it.
pub async fn handshake<R, W>(
    conn: &mut Connection<R, W>,
    me: &Identity,
    role: Role,
    purpose: Purpose,
    peer_label: &str,
    check_peer: &(dyn Fn(&Hello) -> Result<(), String> + Sync),
    timeout: Duration,
) -> Result<Hello, HandshakeError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    match tokio::time::timeout(
        timeout,
        handshake_inner(conn, me, role, purpose, peer_label, check_peer),
    )
    .await
    {
        Ok(r) => r,
        Err(_) => Err(HandshakeError::Timeout {
            peer: peer_label.to_string(),
            secs: timeout.as_secs_f64(),
        }),
    }
}

async fn handshake_inner<R, W>(
    conn: &mut Connection<R, W>,
    me: &Identity,
    role: Role,
    purpose: Purpose,
    peer_label: &str,
    check_peer: &(dyn Fn(&Hello) -> Result<(), String> + Sync),
) -> Result<Hello, HandshakeError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let peer = peer_label.to_string();
    let ferr = |source: FrameError| HandshakeError::Frame {
        peer: peer.clone(),
        source,
    };
    let io = |e: std::io::Error| HandshakeError::Frame {
        peer: peer.clone(),
        source: FrameError::Io(e),
    };

    // 1. magic + version, both ways.
    conn.write_preamble().await.map_err(io)?;
    match conn.read_preamble().await.map_err(ferr)? {
        None => return Err(HandshakeError::NotA2cid { peer }),
        Some(theirs) if theirs != PROTOCOL_VERSION => {
            return Err(HandshakeError::Version {
                peer,
                ours: PROTOCOL_VERSION,
                theirs,
            })
        }
        Some(_) => {}
    }

    // 2. hellos.
    let mut nonce = [0u8; 32];
    rand::rng().fill_bytes(&mut nonce);
    let my_hello = Hello {
        purpose,
        rank: me.rank,
        world: me.world,
        run_id: me.run_id.clone(),
        fingerprint: me.fingerprint,
        nonce,
    };
    conn.write_msg(&Msg::Hello(my_hello.clone()))
        .await
        .map_err(io)?;
    let their_hello = match conn.read_frame().await.map_err(ferr)? {
        Frame::Msg(Msg::Hello(h)) => h,
        other => {
            return Err(ferr(FrameError::malformed(
                "hello",
                format!("expected a hello, got {}", describe(&other)),
            )))
        }
    };
    let peer = format!("{peer_label} (rank {})", their_hello.rank);
    let (first, second) = match role {
        Role::Connector => (&my_hello, &their_hello),
        Role::Acceptor => (&their_hello, &my_hello),
    };
    let mut transcript = encode_msg(&Msg::Hello(first.clone()));
    transcript.extend_from_slice(&encode_msg(&Msg::Hello(second.clone())));

    // 3. mutual challenge-response: each side MACs the transcript (which holds both nonces) under
    // its role. The connector proves first; the acceptor answers with its own MAC only to a
    // connector that proved it holds the secret, so a stranger who connects learns nothing it
    // could use to guess a weak secret offline.
    let my_mac: [u8; 32] = match me.secret.mac(role.label(), &transcript) {
        Some(m) => m.finalize().into_bytes().into(),
        None => return Err(HandshakeError::Secret { peer }),
    };
    let verify = |mac: &[u8; 32]| {
        me.secret
            .mac(role.other().label(), &transcript)
            .map(|m| m.verify_slice(mac).is_ok())
            .unwrap_or(false)
    };
    let read_mac = |frame: Frame| match frame {
        Frame::Msg(Msg::Auth { mac }) => Ok(mac),
        Frame::Msg(Msg::Verdict { ok: false, reason }) => Err(HandshakeError::RefusedByPeer {
            peer: peer.clone(),
            reason,
        }),
        other => Err(ferr(FrameError::malformed(
            "auth",
            format!("expected auth, got {}", describe(&other)),
        ))),
    };
    let authentic = match role {
        Role::Connector => {
            conn.write_msg(&Msg::Auth { mac: my_mac })
                .await
                .map_err(io)?;
            verify(&read_mac(conn.read_frame().await.map_err(ferr)?)?)
        }
        Role::Acceptor => {
            let theirs = read_mac(conn.read_frame().await.map_err(ferr)?)?;
            if verify(&theirs) {
                conn.write_msg(&Msg::Auth { mac: my_mac })
                    .await
                    .map_err(io)?;
                true
            } else {
                false
            }
        }
    };

    // 4. my verdict on the peer, sent either way, then theirs on me.
    let mine = if !authentic {
        Err(HandshakeError::Secret { peer: peer.clone() })
    } else {
        check_hello(me, &their_hello, &peer, check_peer)
    };
    let verdict = match &mine {
        Ok(()) => Msg::Verdict {
            ok: true,
            reason: String::new(),
        },
        Err(e) => Msg::Verdict {
            ok: false,
            reason: format!("rank {} says: {e}", me.rank),
        },
    };
    let sent = conn.write_msg(&verdict).await;
    mine?;
    sent.map_err(io)?;
    match conn.read_frame().await.map_err(ferr)? {
        Frame::Msg(Msg::Verdict { ok: true, .. }) => Ok(their_hello),
        Frame::Msg(Msg::Verdict { ok: false, reason }) => {
            Err(HandshakeError::RefusedByPeer { peer, reason })
        }
        other => Err(ferr(FrameError::malformed(
            "verdict",
            format!("expected a verdict, got {}", describe(&other)),
        ))),
    }
}

fn check_hello(
    me: &Identity,
    h: &Hello,
    peer: &str,
    check_peer: &(dyn Fn(&Hello) -> Result<(), String> + Sync),
) -> Result<(), HandshakeError> {
    let peer = peer.to_string();
    if h.run_id != me.run_id {
        return Err(HandshakeError::RunId {
            peer,
            ours: me.run_id.clone(),
            theirs: h.run_id.clone(),
        });
    }
    // The world size first: the fingerprint depends on it (a snapshot carries the gradient
    // counts of every worker), so a different world would read as a different model.
    if h.world != me.world {
        return Err(HandshakeError::World {
            peer,
            ours: me.world,
            theirs: h.world,
        });
    }
    if h.fingerprint != me.fingerprint {
        return Err(HandshakeError::Fingerprint {
            peer,
            ours: me.fingerprint.to_string(),
            theirs: h.fingerprint.to_string(),
        });
    }
    if h.rank >= me.world {
        return Err(HandshakeError::UnexpectedRank {
            peer,
            rank: h.rank,
            why: format!("world is {}", me.world),
        });
    }
    if h.rank == me.rank {
        return Err(HandshakeError::UnexpectedRank {
            peer,
            rank: h.rank,
            why: "that is this worker's own rank".into(),
        });
    }
    check_peer(h).map_err(|why| HandshakeError::UnexpectedRank {
        peer,
        rank: h.rank,
        why,
    })
}

fn describe(f: &Frame) -> String {
    format!("a {} frame", f.kind().name())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ident(rank: u32, secret: &str, run: &str, params: u64) -> Identity {
        Identity {
            rank,
            world: 4,
            run_id: run.into(),
            fingerprint: Fingerprint::new(params, "layout"),
            secret: Secret::new(format!("{secret}-and-enough-bytes").into_bytes()).expect("secret"),
        }
    }

    type Pipe = Connection<
        tokio::io::ReadHalf<tokio::io::DuplexStream>,
        tokio::io::WriteHalf<tokio::io::DuplexStream>,
    >;

    fn conn(s: tokio::io::DuplexStream) -> Pipe {
        let (r, w) = tokio::io::split(s);
        Connection::new(r, w, crate::pool::BufPool::default())
    }

    async fn pair(
        a: Identity,
        b: Identity,
    ) -> (Result<Hello, HandshakeError>, Result<Hello, HandshakeError>) {
        let (x, y) = tokio::io::duplex(1 << 16);
        let (mut x, mut y) = (conn(x), conn(y));
        let ok = |_: &Hello| Ok(());
        let t = Duration::from_secs(5);
        tokio::join!(
            handshake(
                &mut x,
                &a,
                Role::Connector,
                Purpose::Link,
                "acceptor",
                &ok,
                t
            ),
            handshake(
                &mut y,
                &b,
                Role::Acceptor,
                Purpose::Link,
                "connector",
                &ok,
                t
            ),
        )
    }

    #[tokio::test]
    async fn matching_peers_shake_hands() {
        let (a, b) = pair(ident(1, "s", "r", 10), ident(0, "s", "r", 10)).await;
        assert_eq!(a.expect("a").rank, 0);
        assert_eq!(b.expect("b").rank, 1);
    }

    #[tokio::test]
    async fn wrong_secret_refused_on_both_sides() {
        let (a, b) = pair(ident(1, "s1", "r", 10), ident(0, "s2", "r", 10)).await;
        // The acceptor finds the connector's proof wrong; the connector is told why.
        let (connector, acceptor) = (a.unwrap_err(), b.unwrap_err());
        assert!(
            matches!(acceptor, HandshakeError::Secret { .. }),
            "{acceptor}"
        );
        assert!(
            matches!(connector, HandshakeError::RefusedByPeer { .. }),
            "{connector}"
        );
        for e in [connector, acceptor] {
            assert!(
                e.to_string().contains("different cluster secret")
                    && e.to_string().contains("A2CID_SECRET"),
                "{e}"
            );
        }
    }

    #[tokio::test]
    async fn a_different_world_size_is_named_as_such_not_as_another_model() {
        // The fingerprint depends on the world size too; the world is checked first.
        let mut a = ident(1, "s", "r", 10);
        a.world = 8;
        a.fingerprint = Fingerprint::new(14, "layout");
        let (a, b) = pair(a, ident(0, "s", "r", 10)).await;
        let e = b.unwrap_err();
        assert!(matches!(e, HandshakeError::World { .. }), "{e}");
        assert!(a.is_err());
    }

    #[tokio::test]
    async fn the_acceptor_reveals_no_mac_to_a_connector_without_the_secret() {
        let (x, y) = tokio::io::duplex(1 << 16);
        let (mut x, mut y) = (conn(x), conn(y));
        let me = ident(0, "s", "r", 10);
        let ok = |_: &Hello| Ok(());
        // A stranger: a valid preamble and hello, then a made-up proof.
        let stranger = async move {
            x.write_preamble().await.unwrap();
            let _ = x.read_preamble().await.unwrap();
            let hello = Hello {
                purpose: Purpose::Link,
                rank: 1,
                world: 4,
                run_id: "r".into(),
                fingerprint: Fingerprint::new(10, "layout"),
                nonce: [7; 32],
            };
            x.write_msg(&Msg::Hello(hello)).await.unwrap();
            let _theirs = x.read_frame().await.unwrap();
            x.write_msg(&Msg::Auth { mac: [0; 32] }).await.unwrap();
            x.read_frame().await.unwrap()
        };
        let acceptor = handshake(
            &mut y,
            &me,
            Role::Acceptor,
            Purpose::Link,
            "stranger",
            &ok,
            Duration::from_secs(5),
        );
        let (answer, result) = tokio::join!(stranger, acceptor);
        assert!(matches!(result, Err(HandshakeError::Secret { .. })));
        match answer {
            Frame::Msg(Msg::Verdict { ok: false, .. }) => {}
            other => panic!(
                "the acceptor answered a failed proof with {}",
                describe(&other)
            ),
        }
    }

    #[test]
    fn short_secrets_are_refused_naming_the_fix() {
        let e = Secret::new(b"0123456789abcde".to_vec())
            .unwrap_err()
            .to_string();
        assert!(e.contains("15 bytes") && e.contains("openssl rand"), "{e}");
        assert!(Secret::new(b"0123456789abcdef".to_vec()).is_ok());
        assert!(Secret::generate().as_env_value().len() >= Secret::MIN_LEN);
    }

    #[tokio::test]
    async fn wrong_fingerprint_and_run_refused() {
        let (a, b) = pair(ident(1, "s", "r", 10), ident(0, "s", "r", 11)).await;
        assert!(matches!(a.unwrap_err(), HandshakeError::Fingerprint { .. }));
        assert!(matches!(b.unwrap_err(), HandshakeError::Fingerprint { .. }));
        let (a, b) = pair(ident(1, "s", "r1", 10), ident(0, "s", "r2", 10)).await;
        assert!(matches!(a.unwrap_err(), HandshakeError::RunId { .. }));
        assert!(matches!(b.unwrap_err(), HandshakeError::RunId { .. }));
    }

    #[tokio::test]
    async fn wrong_version_refused() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut x, y) = tokio::io::duplex(1 << 16);
        let mut y = conn(y);
        let me = ident(0, "s", "r", 10);
        let ok = |_: &Hello| Ok(());
        let fake = async move {
            let mut pre = [0u8; 12];
            pre[..8].copy_from_slice(&crate::frame::MAGIC);
            pre[8..].copy_from_slice(&(PROTOCOL_VERSION + 1).to_le_bytes());
            let _ = x.write_all(&pre).await;
            let mut sink = Vec::new();
            let _ = x.read_to_end(&mut sink).await;
        };
        let (r, ()) = tokio::join!(
            async {
                let r = handshake(
                    &mut y,
                    &me,
                    Role::Acceptor,
                    Purpose::Link,
                    "peer",
                    &ok,
                    Duration::from_secs(5),
                )
                .await;
                drop(y);
                r
            },
            fake
        );
        let e = r.unwrap_err();
        assert!(matches!(e, HandshakeError::Version { .. }), "{e}");
        assert!(e.to_string().contains("same a2cid version"), "{e}");
    }

    #[tokio::test(start_paused = true)]
    async fn silent_peer_times_out() {
        let (_x, y) = tokio::io::duplex(1 << 16);
        let mut y = conn(y);
        let me = ident(0, "s", "r", 10);
        let ok = |_: &Hello| Ok(());
        let e = handshake(
            &mut y,
            &me,
            Role::Acceptor,
            Purpose::Link,
            "peer",
            &ok,
            Duration::from_secs(3),
        )
        .await
        .unwrap_err();
        assert!(matches!(e, HandshakeError::Timeout { .. }), "{e}");
    }
}
