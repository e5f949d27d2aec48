//! The rank-0 rendezvous over the network: rank 0 serves it (waits for every other rank to
//! register its port, then sends each the whole address table); the others register with it. With
//! an explicit address list there is nothing to exchange. What a rendezvous *is* (parsing, SLURM)
//! lives in [`crate::rendezvous`], which does no I/O.
use std::net::SocketAddr;
use std::time::Instant;

use tracing::{info, warn};

use crate::auth::{handshake, Identity, Role};
use crate::config::MeshConfig;
use crate::connect::{connect_retry, Acceptor};
use crate::connection::Connection;
use crate::error::NetError;
use crate::frame::{Frame, Hello, Msg, Purpose};
use crate::pool::BufPool;
use crate::rendezvous::Rendezvous;

/// The address of every rank (`HOST:PORT`, indexed by rank), from the configured rendezvous.
pub(crate) async fn address_table(
    cfg: &MeshConfig,
    me: &Identity,
    local: SocketAddr,
    acceptor: &mut Acceptor,
    deadline: Instant,
) -> Result<Vec<String>, NetError> {
    match &cfg.rendezvous {
        Rendezvous::Explicit(list) if list.len() != cfg.world => Err(NetError::Config(format!(
            "the explicit address list has {} entries for a world of {}",
            list.len(),
            cfg.world
        ))),
        Rendezvous::Explicit(list) => Ok(list.clone()),
        Rendezvous::Rank0 { addr } if cfg.rank == 0 => {
            serve(cfg, addr, local, acceptor, deadline).await
        }
        Rendezvous::Rank0 { addr } => register(cfg, me, addr, local, deadline).await,
    }
}

/// Rank 0: wait for every other rank to register its port, then send each the whole table.
async fn serve(
    cfg: &MeshConfig,
    addr: &str,
    local: SocketAddr,
    acceptor: &mut Acceptor,
    deadline: Instant,
) -> Result<Vec<String>, NetError> {
    let mut table: Vec<Option<String>> = vec![None; cfg.world];
    table[0] = Some(if local.port() != 0 && addr.ends_with(":0") {
        format!("{}:{}", addr.trim_end_matches(":0"), local.port())
    } else {
        addr.to_string()
    });
    let mut waiting: Vec<Connection> = Vec::new();
    while table.iter().any(|t| t.is_none()) {
        let Some((h, mut conn)) = acceptor.next(Purpose::Register, deadline).await else {
            return Err(NetError::RendezvousIncomplete {
                secs: cfg.connect_timeout.as_secs_f64(),
                joined: table.iter().filter(|t| t.is_some()).count(),
                world: cfg.world,
                refused: acceptor.refusals(),
            });
        };
        let port = match tokio::time::timeout(cfg.handshake_timeout, conn.read_frame()).await {
            Ok(Ok(Frame::Msg(Msg::Register { port }))) => port,
            _ => {
                warn!(
                    "rank 0: rank {} opened a rendezvous connection but did not register",
                    h.rank
                );
                continue;
            }
        };
        let ip = conn
            .peer_addr()
            .map(|a| a.ip().to_string())
            .unwrap_or_else(|| "127.0.0.1".into());
        let host = if ip.contains(':') {
            format!("[{ip}]")
        } else {
            ip
        };
        let rank = h.rank as usize;
        let newcomer = format!("{host}:{port}");
        if let Some(first) = &table[rank] {
            // Two workers started with one rank: the first keeps it, the second is told why.
            let why = format!(
                "rank {rank} is already taken by the worker at {first}: two workers were started \
                 with the same rank; give each worker its own --rank (or SLURM_PROCID)"
            );
            warn!("rank 0: refused a second worker claiming rank {rank} (from {newcomer})");
            let _ = conn
                .write_msg(&Msg::Verdict {
                    ok: false,
                    reason: why,
                })
                .await;
            let _ = conn.shutdown().await;
            continue;
        }
        table[rank] = Some(newcomer);
        waiting.push(conn);
    }
    let addrs: Vec<String> = table.into_iter().map(|t| t.unwrap_or_default()).collect();
    let reply = Msg::Table {
        addrs: addrs.clone(),
    };
    for mut conn in waiting {
        // A rank that cannot be told fails its own start-up with a clear error; rank 0 goes on.
        let _ = conn.write_msg(&reply).await;
        let _ = conn.shutdown().await;
    }
    info!("rank 0: rendezvous complete, {} workers", cfg.world);
    Ok(addrs)
}

/// Any other rank: register this worker's port with rank 0 and wait for the table.
async fn register(
    cfg: &MeshConfig,
    me: &Identity,
    addr: &str,
    local: SocketAddr,
    deadline: Instant,
) -> Result<Vec<String>, NetError> {
    let secs = cfg.connect_timeout.as_secs_f64();
    let failed = |last: String| NetError::Rendezvous {
        addr: addr.to_string(),
        secs,
        last,
    };
    let stream = connect_retry(addr, deadline).await.map_err(failed)?;
    let check = |h: &Hello| -> Result<(), String> {
        if h.rank == 0 {
            Ok(())
        } else {
            Err("the rendezvous must be served by rank 0".into())
        }
    };
    let mut conn = Connection::from_tcp(stream, BufPool::default());
    let label = format!("rendezvous {addr}");
    handshake(
        &mut conn,
        me,
        Role::Connector,
        Purpose::Register,
        &label,
        &check,
        cfg.handshake_timeout,
    )
    .await?;
    conn.write_msg(&Msg::Register { port: local.port() })
        .await?;
    let left = deadline.saturating_duration_since(Instant::now());
    match tokio::time::timeout(left, conn.read_frame()).await {
        Ok(Ok(Frame::Msg(Msg::Table { mut addrs }))) if addrs.len() == cfg.world => {
            // Reach rank 0 the way we reached the rendezvous.
            addrs[0] = addr.to_string();
            Ok(addrs)
        }
        Ok(Ok(Frame::Msg(Msg::Verdict { ok: false, reason }))) => Err(NetError::Config(format!(
            "rank 0 refused this worker: {reason}"
        ))),
        Ok(Ok(_)) => Err(failed("malformed address table".into())),
        Ok(Err(e)) => Err(failed(e.to_string())),
        Err(_) => Err(NetError::RendezvousIncomplete {
            secs,
            joined: 0,
            world: cfg.world,
            refused: String::new(),
        }),
    }
}
