//! How a worker learns its peers' addresses: an explicit list, a rank-0 rendezvous at `HOST:PORT`
//! (like torchrun's master address), or SLURM's environment. Pure parsing, tested on its own; the
//! network half (rank 0 collects registrations and sends the table, the others register and
//! receive it) is [`crate::address_book`].

use crate::error::NetError;

/// Default rendezvous port under SLURM when `A2CID_MASTER_PORT` is unset: derived from the job id so
/// two jobs sharing a node do not collide.
pub const SLURM_PORT_BASE: u16 = 20000;

/// Where the address table comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rendezvous {
    /// `addrs[r]` is rank r's `HOST:PORT`; this worker listens on its own entry's port.
    Explicit(Vec<String>),
    /// Rank 0 listens at `addr` (its mesh port doubles as the rendezvous); every other worker listens
    /// on a free port of `MeshConfig::bind_host`, registers with rank 0 and receives the table.
    Rank0 { addr: String },
}

impl Rendezvous {
    /// Whether every address it names is on this machine's loopback (a local run, which then
    /// listens on loopback only).
    pub fn is_loopback(&self) -> bool {
        let local = |addr: &str| {
            let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
            let host = host.trim_start_matches('[').trim_end_matches(']');
            host == "localhost"
                || host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        };
        match self {
            Rendezvous::Explicit(list) => list.iter().all(|a| local(a)),
            Rendezvous::Rank0 { addr } => local(addr),
        }
    }
}

/// What SLURM tells a task about the launch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlurmLaunch {
    pub rank: usize,
    pub world: usize,
    pub nodes: Vec<String>,
    /// Rank 0's rendezvous address (first node of the allocation).
    pub rendezvous: Rendezvous,
}

/// Pure: read a SLURM launch from an environment lookup (`std::env::var` in production).
/// Uses `SLURM_PROCID`, `SLURM_NTASKS`, `SLURM_JOB_NODELIST` (or `SLURM_NODELIST`), and for the
/// port `A2CID_MASTER_PORT`, else `SLURM_PORT_BASE + SLURM_JOB_ID % 10000`.
pub fn slurm_from_env(get: impl Fn(&str) -> Option<String>) -> Result<SlurmLaunch, NetError> {
    let num = |k: &str| -> Result<usize, NetError> {
        let v = get(k).ok_or_else(|| NetError::Slurm(format!("{k} is not set")))?;
        v.trim()
            .parse::<usize>()
            .map_err(|_| NetError::Slurm(format!("{k}='{v}' is not a number")))
    };
    let rank = num("SLURM_PROCID")?;
    let world = num("SLURM_NTASKS")?;
    if world == 0 || rank >= world {
        return Err(NetError::Slurm(format!(
            "SLURM_PROCID={rank} is not below SLURM_NTASKS={world}"
        )));
    }
    let list = get("SLURM_JOB_NODELIST")
        .or_else(|| get("SLURM_NODELIST"))
        .ok_or_else(|| NetError::Slurm("SLURM_JOB_NODELIST is not set".into()))?;
    let nodes = expand_nodelist(&list)
        .map_err(|e| NetError::Slurm(format!("SLURM_JOB_NODELIST='{list}': {e}")))?;
    let master = nodes
        .first()
        .cloned()
        .ok_or_else(|| NetError::Slurm("empty node list".into()))?;
    let port = match get("A2CID_MASTER_PORT") {
        Some(p) => p.trim().parse::<u16>().map_err(|_| {
            NetError::Slurm(format!("A2CID_MASTER_PORT='{p}' is not a port number"))
        })?,
        None => {
            let job = get("SLURM_JOB_ID")
                .and_then(|j| j.trim().parse::<u64>().ok())
                .unwrap_or(0);
            SLURM_PORT_BASE + (job % 10000) as u16
        }
    };
    Ok(SlurmLaunch {
        rank,
        world,
        nodes,
        rendezvous: Rendezvous::Rank0 {
            addr: format!("{master}:{port}"),
        },
    })
}

/// Most hosts a node list may expand to (protects against `n[0-999999999]`).
pub const MAX_NODES: usize = 1 << 16;

/// Pure: expand SLURM's compressed host list, e.g. `node[01-04,07],gpu3` →
/// `node01 node02 node03 node04 node07 gpu3`. Several bracket groups multiply
/// (`r[1-2]n[1-2]` → `r1n1 r1n2 r2n1 r2n2`); zero padding follows the written width.
pub fn expand_nodelist(list: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for item in split_top_level(list)? {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        expand_item(item, &mut out)?;
    }
    if out.is_empty() {
        return Err("the node list is empty".into());
    }
    Ok(out)
}

fn split_top_level(s: &str) -> Result<Vec<&str>, String> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in s.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => {
                depth -= 1;
                if depth < 0 {
                    return Err(format!("unmatched ']' at byte {i}"));
                }
            }
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err("unmatched '['".into());
    }
    parts.push(&s[start..]);
    Ok(parts)
}

fn expand_item(item: &str, out: &mut Vec<String>) -> Result<(), String> {
    let Some(open) = item.find('[') else {
        if item.contains(']') {
            return Err(format!("unmatched ']' in '{item}'"));
        }
        push(out, item.to_string())?;
        return Ok(());
    };
    let close = item[open..]
        .find(']')
        .map(|c| c + open)
        .ok_or_else(|| format!("unmatched '[' in '{item}'"))?;
    let prefix = &item[..open];
    let inner = &item[open + 1..close];
    let rest = &item[close + 1..];
    if inner.contains('[') {
        return Err(format!("nested brackets in '{item}'"));
    }
    let mut tails = Vec::new();
    expand_item_or_empty(rest, &mut tails)?;
    for range in inner.split(',') {
        let range = range.trim();
        let (a, b) = match range.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (range, range),
        };
        if a.is_empty()
            || !a.bytes().all(|c| c.is_ascii_digit())
            || !b.bytes().all(|c| c.is_ascii_digit())
            || b.is_empty()
        {
            return Err(format!("bad range '{range}' in '{item}'"));
        }
        let lo: u64 = a.parse().map_err(|_| format!("bad number '{a}'"))?;
        let hi: u64 = b.parse().map_err(|_| format!("bad number '{b}'"))?;
        if hi < lo {
            return Err(format!("descending range '{range}' in '{item}'"));
        }
        if hi - lo >= MAX_NODES as u64 {
            return Err(format!(
                "range '{range}' expands to more than {MAX_NODES} hosts"
            ));
        }
        let width = a.len();
        for v in lo..=hi {
            for t in &tails {
                push(out, format!("{prefix}{v:0width$}{t}"))?;
            }
        }
    }
    Ok(())
}

fn expand_item_or_empty(rest: &str, out: &mut Vec<String>) -> Result<(), String> {
    if rest.is_empty() {
        out.push(String::new());
        Ok(())
    } else {
        expand_item(rest, out)
    }
}

fn push(out: &mut Vec<String>, s: String) -> Result<(), String> {
    if out.len() >= MAX_NODES {
        return Err(format!(
            "the node list expands to more than {MAX_NODES} hosts"
        ));
    }
    out.push(s);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_rendezvous_are_recognised() {
        let r0 = |a: &str| Rendezvous::Rank0 { addr: a.into() };
        assert!(r0("127.0.0.1:29500").is_loopback());
        assert!(r0("localhost:1").is_loopback());
        assert!(r0("[::1]:1").is_loopback());
        assert!(!r0("10.0.0.5:29500").is_loopback());
        assert!(!r0("node12:29500").is_loopback());
        let list = |v: &[&str]| Rendezvous::Explicit(v.iter().map(|s| s.to_string()).collect());
        assert!(list(&["127.0.0.1:1", "127.0.0.1:2"]).is_loopback());
        assert!(!list(&["127.0.0.1:1", "10.0.0.2:2"]).is_loopback());
    }
    use std::collections::HashMap;

    #[test]
    fn expands_slurm_lists() {
        assert_eq!(
            expand_nodelist("node[01-04,07]").expect("ok"),
            vec!["node01", "node02", "node03", "node04", "node07"]
        );
        assert_eq!(
            expand_nodelist("a,b[8-10],c").expect("ok"),
            vec!["a", "b8", "b9", "b10", "c"]
        );
        assert_eq!(
            expand_nodelist("r[1-2]n[1-2]").expect("ok"),
            vec!["r1n1", "r1n2", "r2n1", "r2n2"]
        );
        assert_eq!(
            expand_nodelist("gpu[009-011]").expect("ok"),
            vec!["gpu009", "gpu010", "gpu011"]
        );
        for bad in ["n[1-", "n]1", "n[3-1]", "n[a-b]", "", "n[1-99999999]"] {
            assert!(expand_nodelist(bad).is_err(), "{bad} should fail");
        }
    }

    #[test]
    fn reads_slurm_environment() {
        let env: HashMap<&str, &str> = [
            ("SLURM_PROCID", "5"),
            ("SLURM_NTASKS", "8"),
            ("SLURM_JOB_NODELIST", "node[01-02]"),
            ("SLURM_JOB_ID", "123456"),
        ]
        .into_iter()
        .collect();
        let l = slurm_from_env(|k| env.get(k).map(|v| v.to_string())).expect("ok");
        assert_eq!((l.rank, l.world), (5, 8));
        assert_eq!(
            l.rendezvous,
            Rendezvous::Rank0 {
                addr: "node01:23456".into()
            }
        );
        let e = slurm_from_env(|_| None).unwrap_err().to_string();
        assert!(e.contains("SLURM_PROCID"), "{e}");
    }

    proptest::proptest! {
        #[test]
        fn nodelist_never_panics(s in "[a-z0-9\\[\\],\\- ]{0,40}") {
            let _ = expand_nodelist(&s);
        }

        #[test]
        fn compressed_ranges_expand_exactly(lo in 0u32..500, len in 0u32..50, width in 1usize..5) {
            let hi = lo + len;
            let list = format!("n[{lo:0width$}-{hi}]");
            let got = expand_nodelist(&list).expect("valid");
            proptest::prop_assert_eq!(got.len() as u32, len + 1);
            proptest::prop_assert_eq!(&got[0], &format!("n{lo:0width$}"));
        }
    }
}
