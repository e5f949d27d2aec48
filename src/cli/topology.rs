//! `a2cid topology`: a graph's size, degrees and A²CiD² constants, printed.
use a2cid_topology::{GraphSpec, Topology, TorusShape};
use serde::Serialize;

/// `a2cid topology`: print a graph's size, degrees and A²CiD² constants.
#[derive(clap::Args, Debug, Clone)]
pub struct TopologyArgs {
    /// ring, complete, exponential, torus, torus:RxC, star, hypercube, regular:D, erdos-renyi:P,
    /// file:PATH (one `i j` pair per line).
    #[arg(long, default_value = "ring")]
    pub graph: GraphSpec,
    /// Number of workers n.
    #[arg(long)]
    pub workers: usize,
    /// Expected pairwise averagings per worker per gradient (on regular graphs).
    #[arg(long, default_value_t = 1.0)]
    pub rate_com: f64,
    /// Torus shape RxC (R*C = workers); default: the most square factorisation.
    #[arg(long)]
    pub torus_shape: Option<TorusShape>,
    /// Seed of the random graph families (regular:D, erdos-renyi:P).
    #[arg(long, default_value_t = 0)]
    pub graph_seed: u64,
    /// Print one JSON object with keys workers, edges, chi_1, chi_2, eta, alpha, alpha_tilde and
    /// spanning_tree (edges, diameter).
    #[arg(long)]
    pub json: bool,
}

/// The `--json` output of `a2cid topology`: exactly these keys.
#[derive(Debug, Serialize)]
struct TopologyJson {
    workers: usize,
    edges: usize,
    chi_1: f64,
    chi_2: f64,
    eta: f64,
    alpha: f64,
    alpha_tilde: f64,
    spanning_tree: TreeJson,
}

/// The breadth-first spanning tree `relaysum` runs on.
#[derive(Debug, Serialize)]
struct TreeJson {
    edges: Vec<(usize, usize)>,
    diameter: usize,
}

/// Runs `a2cid topology`.
pub fn topology(args: &TopologyArgs) -> anyhow::Result<()> {
    let spec = args.graph.clone().with_torus_shape(args.torus_shape)?;
    let topology = Topology::from_spec(&spec, args.workers, args.rate_com, args.graph_seed)?;
    for warning in topology.warnings() {
        eprintln!("warning: {warning}");
    }
    let c = topology.constants();
    let tree = topology.spanning_tree();
    if args.json {
        let json = TopologyJson {
            workers: topology.workers(),
            edges: topology.edges().len(),
            chi_1: c.chi_1,
            chi_2: c.chi_2,
            eta: c.eta,
            alpha: c.alpha,
            alpha_tilde: c.alpha_tilde,
            spanning_tree: TreeJson {
                edges: tree.edges.clone(),
                diameter: tree.diameter,
            },
        };
        println!("{}", serde_json::to_string(&json)?);
        return Ok(());
    }
    let (dmin, dmax) = topology.degree_range();
    let per_worker: Vec<f64> = (0..topology.workers())
        .map(|i| topology.averagings_per_unit_time(i))
        .collect();
    let amin = per_worker.iter().copied().fold(f64::INFINITY, f64::min);
    let amax = per_worker.iter().copied().fold(0.0, f64::max);
    let amean = per_worker.iter().sum::<f64>() / per_worker.len() as f64;
    println!("graph        {spec}");
    println!("workers      {}", topology.workers());
    println!("edges        {}", topology.edges().len());
    if dmin == dmax {
        println!("degree       {dmin} (regular; each edge's rate = rate_com/{dmin})");
    } else {
        println!(
            "degree       {dmin}..{dmax} (irregular; Metropolis rates rate_com/max(deg_i, deg_j))"
        );
    }
    println!("rate_com     {}", args.rate_com);
    println!("chi_1        {:.6}", c.chi_1);
    println!("chi_2        {:.6}", c.chi_2);
    println!("eta          {:.6}", c.eta);
    println!("alpha        {:.6}", c.alpha);
    println!("alpha_tilde  {:.6}", c.alpha_tilde);
    if (amax - amin).abs() < 1e-12 {
        println!("averagings per worker per gradient  {amean:.4}");
    } else {
        println!(
            "averagings per worker per gradient  mean {amean:.4}, min {amin:.4}, max {amax:.4}"
        );
    }
    let shown: Vec<String> = tree.edges.iter().map(|(i, j)| format!("{i}-{j}")).collect();
    let list = if shown.len() > 24 {
        format!("{} … ({} edges)", shown[..24].join(" "), shown.len())
    } else {
        shown.join(" ")
    };
    println!(
        "spanning tree (relaysum; breadth-first from worker 0): diameter {}, edges {list}",
        tree.diameter
    );
    Ok(())
}
