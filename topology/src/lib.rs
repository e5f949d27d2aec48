//! # a2cid-topology — communication graphs and the A²CiD² constants they imply
//!
//! **Owns:** the graph families (`GraphSpec`, parsed from `--graph`), building an edge list for n
//! workers, neighbour lists and connectivity, the per-edge Poisson rates, the weighted Laplacian
//! and its spectral constants chi_1, chi_2, eta, alpha, alpha_tilde (`Topology`,
//! docs/algorithm.md §5). The runtime, the mesh's pairing and the simulator take their edge lists,
//! rates and constants from here; nothing else computes them.
//!
//! **Must not touch:** I/O of any kind (the `a2cid topology` command that prints these lives in
//! the binary), the A²CiD² update itself (`a2cid_engine::acid`), scheduling, the network, GPUs.

use std::collections::{BTreeSet, VecDeque};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use nalgebra::{DMatrix, SymmetricEigen};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

/// The most workers whose constants are computed (dense eigendecomposition: 32 MiB and a few
/// seconds at this size).
pub const MAX_WORKERS: usize = 2048;

/// Everything that can go wrong when describing or building a topology.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TopologyError {
    #[error(
        "{n} workers: the A²CiD² constants come from the eigenvalues of the dense {n}×{n} \
         Laplacian ({gib:.1} GiB and about {n}³ operations), which this version computes for up to \
         {max} workers; use at most {max}"
    )]
    TooManyWorkers { n: usize, max: usize, gib: f64 },
    #[error(
        "unknown graph `{0}`: expected one of ring, complete, exponential, torus, torus:RxC, star, \
         hypercube, regular:D, erdos-renyi:P, file:PATH"
    )]
    UnknownGraph(String),
    #[error("graph `{graph}`: {problem}")]
    BadGraphParameter { graph: String, problem: String },
    #[error("torus shape `{0}` is not of the form RxC with positive integers (e.g. 4x8)")]
    BadTorusShape(String),
    #[error(
        "--torus-shape {shape} was given but the graph is `{graph}`: drop it or use --graph torus"
    )]
    TorusShapeWithoutTorus { shape: TorusShape, graph: String },
    #[error(
        "torus shapes disagree: the graph says {in_graph}, --torus-shape says {in_flag}; give one"
    )]
    ConflictingTorusShape {
        in_graph: TorusShape,
        in_flag: TorusShape,
    },
    #[error("graph `{graph}` needs at least {min} workers, got {n}")]
    TooFewWorkers { graph: String, min: usize, n: usize },
    #[error(
        "torus shape {shape} has {cells} cells but there are {n} workers: give --torus-shape RxC \
         with R*C = {n}"
    )]
    TorusShapeMismatch {
        shape: TorusShape,
        cells: usize,
        n: usize,
    },
    #[error(
        "a torus needs both sides >= 2 but {n} workers only factor as 1x{n}: use --graph ring, or \
         another worker count"
    )]
    TorusPrime { n: usize },
    #[error(
        "a hypercube needs a power-of-two number of workers, got {n} (nearest: {below} or {above})"
    )]
    HypercubeNotPowerOfTwo {
        n: usize,
        below: usize,
        above: usize,
    },
    #[error("no {degree}-regular graph on {n} vertices: need degree < n and n*degree even")]
    ImpossibleRegular { n: usize, degree: usize },
    #[error(
        "could not sample a simple {degree}-regular graph on {n} vertices in {attempts} attempts: \
         try another --graph-seed or a smaller degree"
    )]
    RegularSamplingFailed {
        n: usize,
        degree: usize,
        attempts: usize,
    },
    #[error(
        "the {graph} graph on {n} workers is disconnected ({components} components; worker \
         {isolated_example} cannot reach worker 0): {hint}"
    )]
    Disconnected {
        graph: String,
        n: usize,
        components: usize,
        isolated_example: usize,
        hint: String,
    },
    #[error("cannot read edge list {path}: {message}")]
    EdgeFileUnreadable { path: PathBuf, message: String },
    #[error("{path}:{line}: {message}")]
    EdgeFileSyntax {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("rate_com must be a positive finite number, got {0}")]
    BadRate(f64),
    #[error("the Laplacian eigendecomposition gave no positive eigenvalue (numerical failure on n = {n})")]
    Spectrum { n: usize },
}

/// Rows × columns of a 2-D torus, parsed from `RxC`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TorusShape {
    pub rows: usize,
    pub cols: usize,
}

impl fmt::Display for TorusShape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{}", self.rows, self.cols)
    }
}

impl FromStr for TorusShape {
    type Err = TopologyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || TopologyError::BadTorusShape(s.to_string());
        let (r, c) = s.trim().split_once(['x', 'X', '×']).ok_or_else(bad)?;
        let rows: usize = r.trim().parse().map_err(|_| bad())?;
        let cols: usize = c.trim().parse().map_err(|_| bad())?;
        if rows == 0 || cols == 0 {
            return Err(bad());
        }
        Ok(TorusShape { rows, cols })
    }
}

impl TorusShape {
    /// The most square factorisation rows × cols = n with rows <= cols.
    pub fn most_square(n: usize) -> TorusShape {
        let mut rows = (n as f64).sqrt() as usize;
        while rows > 1 && !n.is_multiple_of(rows) {
            rows -= 1;
        }
        let rows = rows.max(1);
        TorusShape {
            rows,
            cols: n / rows,
        }
    }
}

/// A graph family, as given on the command line (`--graph`).
#[derive(Debug, Clone, PartialEq)]
pub enum GraphSpec {
    /// The cycle 0-1-...-(n-1)-0.
    Ring,
    /// Every pair of workers.
    Complete,
    /// i ~ i ± 2^k (mod n) for every k with 2^k < n.
    Exponential,
    /// 2-D torus, rows × cols with wrap-around; `None` takes the most square factorisation of n.
    Torus(Option<TorusShape>),
    /// Worker 0 linked to every other worker.
    Star,
    /// i ~ i xor 2^b; n must be a power of two.
    Hypercube,
    /// A uniformly random simple d-regular graph (seeded).
    RandomRegular { degree: usize },
    /// Each pair linked independently with probability p (seeded).
    ErdosRenyi { p: f64 },
    /// An edge list read from a file: one `i j` pair per line, `#` comments.
    File(PathBuf),
}

impl fmt::Display for GraphSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GraphSpec::Ring => write!(f, "ring"),
            GraphSpec::Complete => write!(f, "complete"),
            GraphSpec::Exponential => write!(f, "exponential"),
            GraphSpec::Torus(None) => write!(f, "torus"),
            GraphSpec::Torus(Some(shape)) => write!(f, "torus:{shape}"),
            GraphSpec::Star => write!(f, "star"),
            GraphSpec::Hypercube => write!(f, "hypercube"),
            GraphSpec::RandomRegular { degree } => write!(f, "regular:{degree}"),
            GraphSpec::ErdosRenyi { p } => write!(f, "erdos-renyi:{p}"),
            GraphSpec::File(path) => write!(f, "file:{}", path.display()),
        }
    }
}

impl FromStr for GraphSpec {
    type Err = TopologyError;

    /// Accepts `ring` (or `cycle`), `complete`, `exponential`, `torus`, `torus:RxC`, `star`,
    /// `hypercube`, `regular:D`, `erdos-renyi:P` (or `er:P`), `file:PATH`. Names are case-insensitive.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (name, arg) = match s.split_once(':') {
            Some((name, arg)) => (name.trim().to_ascii_lowercase(), Some(arg)),
            None => (s.to_ascii_lowercase(), None),
        };
        let bad = |problem: &str| TopologyError::BadGraphParameter {
            graph: s.to_string(),
            problem: problem.to_string(),
        };
        let no_arg = |spec: GraphSpec| match arg {
            None => Ok(spec),
            Some(_) => Err(bad("this graph takes no parameter")),
        };
        match name.as_str() {
            "ring" | "cycle" => no_arg(GraphSpec::Ring),
            "complete" | "full" => no_arg(GraphSpec::Complete),
            "exponential" | "exp" => no_arg(GraphSpec::Exponential),
            "star" => no_arg(GraphSpec::Star),
            "hypercube" => no_arg(GraphSpec::Hypercube),
            "torus" => match arg {
                None => Ok(GraphSpec::Torus(None)),
                Some(shape) => Ok(GraphSpec::Torus(Some(shape.parse()?))),
            },
            "regular" => {
                let arg = arg.ok_or_else(|| bad("give the degree, e.g. regular:3"))?;
                let degree: usize = arg
                    .trim()
                    .parse()
                    .map_err(|_| bad("the degree must be a positive integer, e.g. regular:3"))?;
                if degree == 0 {
                    return Err(bad("the degree must be at least 1"));
                }
                Ok(GraphSpec::RandomRegular { degree })
            }
            "erdos-renyi" | "erdos_renyi" | "er" => {
                let arg =
                    arg.ok_or_else(|| bad("give the edge probability, e.g. erdos-renyi:0.3"))?;
                let p: f64 = arg
                    .trim()
                    .parse()
                    .map_err(|_| bad("the edge probability must be a number in (0, 1]"))?;
                if !(p > 0.0 && p <= 1.0) {
                    return Err(bad("the edge probability must be in (0, 1]"));
                }
                Ok(GraphSpec::ErdosRenyi { p })
            }
            "file" => {
                let path = arg
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .ok_or_else(|| bad("give a path, e.g. file:edges.txt"))?;
                Ok(GraphSpec::File(PathBuf::from(path)))
            }
            _ => Err(TopologyError::UnknownGraph(s.to_string())),
        }
    }
}

impl GraphSpec {
    /// Merges a separate `--torus-shape` flag into the spec (an error if it does not apply).
    pub fn with_torus_shape(self, shape: Option<TorusShape>) -> Result<GraphSpec, TopologyError> {
        match (self, shape) {
            (spec, None) => Ok(spec),
            (GraphSpec::Torus(None), Some(shape)) => Ok(GraphSpec::Torus(Some(shape))),
            (GraphSpec::Torus(Some(in_graph)), Some(in_flag)) if in_graph == in_flag => {
                Ok(GraphSpec::Torus(Some(in_graph)))
            }
            (GraphSpec::Torus(Some(in_graph)), Some(in_flag)) => {
                Err(TopologyError::ConflictingTorusShape { in_graph, in_flag })
            }
            (spec, Some(shape)) => Err(TopologyError::TorusShapeWithoutTorus {
                shape,
                graph: spec.to_string(),
            }),
        }
    }

    /// Builds the edge list of this graph on `n` workers. `seed` drives the random families only.
    pub fn build(&self, n: usize, seed: u64) -> Result<Graph, TopologyError> {
        let too_few = |min: usize| {
            if n < min {
                Err(TopologyError::TooFewWorkers {
                    graph: self.to_string(),
                    min,
                    n,
                })
            } else {
                Ok(())
            }
        };
        let mut edges = EdgeSet::default();
        match self {
            GraphSpec::Ring => {
                too_few(3)?;
                for i in 0..n {
                    edges.insert(i, ring_neighbours(i, n).1);
                }
            }
            GraphSpec::Complete => {
                too_few(2)?;
                for i in 0..n {
                    for j in i + 1..n {
                        edges.insert(i, j);
                    }
                }
            }
            GraphSpec::Exponential => {
                too_few(2)?;
                let mut hop = 1;
                while hop < n {
                    for i in 0..n {
                        edges.insert(i, (i + hop) % n);
                    }
                    hop *= 2;
                }
            }
            GraphSpec::Torus(shape) => {
                too_few(4)?;
                let shape = match shape {
                    Some(shape) => *shape,
                    None => {
                        let shape = TorusShape::most_square(n);
                        if shape.rows < 2 {
                            return Err(TopologyError::TorusPrime { n });
                        }
                        shape
                    }
                };
                let cells = shape.rows * shape.cols;
                if cells != n {
                    return Err(TopologyError::TorusShapeMismatch { shape, cells, n });
                }
                if shape.rows < 2 || shape.cols < 2 {
                    return Err(TopologyError::BadGraphParameter {
                        graph: format!("torus:{shape}"),
                        problem: "both sides must be at least 2 (a 1xN torus is --graph ring)"
                            .into(),
                    });
                }
                let at = |r: usize, c: usize| r * shape.cols + c;
                for r in 0..shape.rows {
                    for c in 0..shape.cols {
                        edges.insert(at(r, c), at(r, (c + 1) % shape.cols));
                        edges.insert(at(r, c), at((r + 1) % shape.rows, c));
                    }
                }
            }
            GraphSpec::Star => {
                too_few(2)?;
                for i in 1..n {
                    edges.insert(0, i);
                }
            }
            GraphSpec::Hypercube => {
                too_few(2)?;
                if !n.is_power_of_two() {
                    let above = n.next_power_of_two();
                    return Err(TopologyError::HypercubeNotPowerOfTwo {
                        n,
                        below: above / 2,
                        above,
                    });
                }
                for i in 0..n {
                    let mut bit = 1;
                    while bit < n {
                        edges.insert(i, i ^ bit);
                        bit <<= 1;
                    }
                }
            }
            GraphSpec::RandomRegular { degree } => {
                too_few(2)?;
                for (i, j) in random_regular(n, *degree, seed)? {
                    edges.insert(i, j);
                }
            }
            GraphSpec::ErdosRenyi { p } => {
                too_few(2)?;
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                for i in 0..n {
                    for j in i + 1..n {
                        if rng.random::<f64>() < *p {
                            edges.insert(i, j);
                        }
                    }
                }
            }
            GraphSpec::File(path) => {
                too_few(2)?;
                for (i, j) in read_edge_file(path, n)? {
                    edges.insert(i, j);
                }
            }
        }
        Ok(Graph {
            name: self.to_string(),
            n,
            edges: edges.0.into_iter().collect(),
        })
    }

    /// A short hint on how to get a connected graph of this family.
    fn disconnected_hint(&self) -> String {
        match self {
            GraphSpec::ErdosRenyi { .. } => {
                "raise the edge probability (connected w.h.p. above ln(n)/n) or change --graph-seed"
                    .into()
            }
            GraphSpec::RandomRegular { .. } => {
                "use degree >= 3 (random 1- and 2-regular graphs are almost never connected) or \
                 change --graph-seed"
                    .into()
            }
            GraphSpec::File(_) => {
                "add edges so every worker 0..n-1 is reachable, or lower --workers".into()
            }
            _ => "this family should be connected; please report it".into(),
        }
    }
}

/// Undirected simple edges, stored once as (min, max).
#[derive(Default)]
struct EdgeSet(BTreeSet<(usize, usize)>);

impl EdgeSet {
    fn insert(&mut self, i: usize, j: usize) {
        if i != j {
            self.0.insert((i.min(j), i.max(j)));
        }
    }
}

/// Samples a simple d-regular graph by the pairing model, restarting when it gets stuck
/// (Steger–Wormald style: asymptotically uniform for fixed d).
fn random_regular(
    n: usize,
    degree: usize,
    seed: u64,
) -> Result<Vec<(usize, usize)>, TopologyError> {
    if degree >= n || !(n * degree).is_multiple_of(2) {
        return Err(TopologyError::ImpossibleRegular { n, degree });
    }
    const ATTEMPTS: usize = 1000;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    'attempt: for _ in 0..ATTEMPTS {
        let mut points: Vec<usize> = (0..n)
            .flat_map(|v| std::iter::repeat_n(v, degree))
            .collect();
        let mut edges = BTreeSet::new();
        while !points.is_empty() {
            // Try a few random pairs of the remaining points before giving up on this attempt.
            let mut paired = false;
            for _ in 0..100 {
                let a = rng.random_range(0..points.len());
                let b = rng.random_range(0..points.len());
                let (u, v) = (points[a], points[b]);
                if a != b && u != v && !edges.contains(&(u.min(v), u.max(v))) {
                    edges.insert((u.min(v), u.max(v)));
                    let (hi, lo) = (a.max(b), a.min(b));
                    points.swap_remove(hi);
                    points.swap_remove(lo);
                    paired = true;
                    break;
                }
            }
            if !paired {
                continue 'attempt;
            }
        }
        return Ok(edges.into_iter().collect());
    }
    Err(TopologyError::RegularSamplingFailed {
        n,
        degree,
        attempts: ATTEMPTS,
    })
}

/// Reads `i j` pairs (0-based worker indices), one per line; `#` starts a comment.
fn read_edge_file(path: &Path, n: usize) -> Result<Vec<(usize, usize)>, TopologyError> {
    let text = std::fs::read_to_string(path).map_err(|err| TopologyError::EdgeFileUnreadable {
        path: path.to_path_buf(),
        message: err.to_string(),
    })?;
    let mut seen: std::collections::HashMap<(usize, usize), usize> = Default::default();
    let mut edges = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let syntax = |message: String| TopologyError::EdgeFileSyntax {
            path: path.to_path_buf(),
            line,
            message,
        };
        let content = raw.split('#').next().unwrap_or("").trim();
        if content.is_empty() {
            continue;
        }
        let fields: Vec<&str> = content
            .split(|c: char| c.is_whitespace() || c == ',')
            .filter(|f| !f.is_empty())
            .collect();
        if fields.len() != 2 {
            return Err(syntax(format!(
                "expected two worker indices `i j`, found {} field(s) in `{content}`",
                fields.len()
            )));
        }
        let parse = |field: &str| -> Result<usize, TopologyError> {
            let v: usize = field.parse().map_err(|_| {
                syntax(format!(
                    "`{field}` is not a worker index (a non-negative integer)"
                ))
            })?;
            if v >= n {
                return Err(syntax(format!(
                    "worker {v} is out of range: there are {n} workers (0..={})",
                    n - 1
                )));
            }
            Ok(v)
        };
        let (i, j) = (parse(fields[0])?, parse(fields[1])?);
        if i == j {
            return Err(syntax(format!(
                "self-loop {i} {j}: an edge needs two different workers"
            )));
        }
        let key = (i.min(j), i.max(j));
        if let Some(first) = seen.insert(key, line) {
            return Err(syntax(format!(
                "duplicate edge {} {} (first given on line {first})",
                key.0, key.1
            )));
        }
        edges.push(key);
    }
    if edges.is_empty() {
        return Err(TopologyError::EdgeFileSyntax {
            path: path.to_path_buf(),
            line: text.lines().count(),
            message: "the file holds no edges".into(),
        });
    }
    Ok(edges)
}

/// An undirected simple graph on workers 0..n: the edge list, each edge once as (i, j) with i < j,
/// sorted.
#[derive(Debug, Clone, PartialEq)]
pub struct Graph {
    /// The family it came from, for messages.
    pub name: String,
    pub n: usize,
    pub edges: Vec<(usize, usize)>,
}

impl Graph {
    /// Number of connected components and, if more than one, a worker outside 0's component.
    fn components(&self) -> (usize, Option<usize>) {
        let parts = components(self.n, self.edges.iter().copied(), |_| true);
        let outside = parts.get(1).map(|part| part[0]);
        (parts.len(), outside)
    }
}

/// The connected components of the graph on workers `0..n` restricted to those `keep` accepts
/// (edges touching a dropped worker are ignored): each component sorted, components in order of
/// their smallest worker. The one connectivity check of the project: topologies use it to refuse
/// disconnected graphs, the mesh to notice that losing workers split the graph.
pub fn components(
    n: usize,
    edges: impl IntoIterator<Item = (usize, usize)>,
    keep: impl Fn(usize) -> bool,
) -> Vec<Vec<usize>> {
    let kept = |v: usize| v < n && keep(v);
    let edges: Vec<(usize, usize)> = edges
        .into_iter()
        .filter(|&(i, j)| i != j && kept(i) && kept(j))
        .collect();
    let adjacency = adjacency(n, &edges);
    let mut seen = vec![false; n];
    let mut parts = Vec::new();
    for start in (0..n).filter(|&v| kept(v)) {
        if seen[start] {
            continue;
        }
        seen[start] = true;
        let mut part = vec![start];
        let mut queue = VecDeque::from([start]);
        while let Some(v) = queue.pop_front() {
            for &w in &adjacency[v] {
                if !seen[w] {
                    seen[w] = true;
                    part.push(w);
                    queue.push_back(w);
                }
            }
        }
        part.sort_unstable();
        parts.push(part);
    }
    parts
}

/// The neighbours of `v` in an edge list: sorted, each once, never `v` itself.
pub fn neighbours_of(v: usize, edges: impl IntoIterator<Item = (usize, usize)>) -> Vec<usize> {
    let touching: Vec<(usize, usize)> = edges
        .into_iter()
        .filter(|&(i, j)| (i == v) != (j == v))
        .collect();
    let n = touching
        .iter()
        .map(|&(i, j)| i.max(j) + 1)
        .max()
        .unwrap_or(0);
    if v >= n {
        return Vec::new();
    }
    let mut list = adjacency(n, &touching).swap_remove(v);
    list.dedup();
    list
}

/// The two ring neighbours of `rank` among `world` workers, `(left, right)` = `(rank − 1, rank + 1)`
/// modulo `world`: the `ring` family's edges and the path the mesh's collectives take.
pub fn ring_neighbours(rank: usize, world: usize) -> (usize, usize) {
    let world = world.max(1);
    ((rank + world - 1) % world, (rank + 1) % world)
}

/// A spanning tree of a connected graph (RelaySGD's relay structure): its edges, each worker's
/// tree neighbours, and the hop distances in the tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SpanningTree {
    /// The tree's n − 1 edges, each once as (i, j) with i < j, sorted.
    pub edges: Vec<(usize, usize)>,
    /// Each worker's neighbours in the tree, sorted.
    pub neighbors: Vec<Vec<usize>>,
    /// The longest hop distance between two workers in the tree.
    pub diameter: usize,
}

impl SpanningTree {
    /// The breadth-first tree of `n` workers' `edges` from `root`, visiting neighbours in rank
    /// order (deterministic): each worker hangs from the first visited neighbour that reached it,
    /// so its depth is its hop distance from `root` in the graph. `None` if the graph is
    /// disconnected or `root` is out of range.
    pub fn breadth_first(n: usize, edges: &[(usize, usize)], root: usize) -> Option<SpanningTree> {
        if root >= n {
            return None;
        }
        let graph = adjacency(n, edges);
        let mut parent = vec![usize::MAX; n];
        parent[root] = root;
        let mut queue = VecDeque::from([root]);
        let mut tree_edges = Vec::with_capacity(n.saturating_sub(1));
        while let Some(v) = queue.pop_front() {
            for &w in &graph[v] {
                if parent[w] == usize::MAX {
                    parent[w] = v;
                    tree_edges.push((v.min(w), v.max(w)));
                    queue.push_back(w);
                }
            }
        }
        if tree_edges.len() + 1 != n {
            return None;
        }
        tree_edges.sort_unstable();
        let neighbors = adjacency(n, &tree_edges);
        let mut tree = SpanningTree {
            edges: tree_edges,
            neighbors,
            diameter: 0,
        };
        // The diameter of a tree: the farthest worker from any worker, then the farthest from it.
        let far = tree.distances_from(root);
        let (end, _) = far.iter().enumerate().max_by_key(|&(_, d)| *d)?;
        tree.diameter = tree.distances_from(end).into_iter().max().unwrap_or(0);
        Some(tree)
    }

    /// Number of workers.
    pub fn workers(&self) -> usize {
        self.neighbors.len()
    }

    /// Hop distances in the tree from `source` to every worker.
    pub fn distances_from(&self, source: usize) -> Vec<usize> {
        let mut distance = vec![usize::MAX; self.neighbors.len()];
        distance[source] = 0;
        let mut queue = VecDeque::from([source]);
        while let Some(v) = queue.pop_front() {
            for &w in &self.neighbors[v] {
                if distance[w] == usize::MAX {
                    distance[w] = distance[v] + 1;
                    queue.push_back(w);
                }
            }
        }
        distance
    }
}

/// Every worker's neighbours, sorted: the one neighbour-list builder.
fn adjacency(n: usize, edges: &[(usize, usize)]) -> Vec<Vec<usize>> {
    let mut adjacency = vec![Vec::new(); n];
    for &(i, j) in edges {
        adjacency[i].push(j);
        adjacency[j].push(i);
    }
    for list in &mut adjacency {
        list.sort_unstable();
    }
    adjacency
}

/// The spectral constants of docs/algorithm.md §5 for one weighted graph.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct AcidConstants {
    /// 1 / (smallest positive eigenvalue of the rate-weighted Laplacian).
    pub chi_1: f64,
    /// 1/2 · max over edges of the effective resistance (e_i - e_j)^T L^+ (e_i - e_j).
    pub chi_2: f64,
    /// Mixing rate between x and x̃: 1 / (2 sqrt(chi_1 chi_2)).
    pub eta: f64,
    /// Weight of the pairwise average on x: 1/2.
    pub alpha: f64,
    /// Weight of the pairwise average on x̃: 1/2 sqrt(chi_1 / chi_2).
    pub alpha_tilde: f64,
}

/// A connected communication graph with its per-edge Poisson rates and A²CiD² constants.
#[derive(Debug, Clone)]
pub struct Topology {
    graph: Graph,
    rate_com: f64,
    rates: Vec<f64>,
    neighbors: Vec<Vec<usize>>,
    constants: AcidConstants,
}

impl Topology {
    /// Builds `spec` on `n` workers (`seed` for the random families) with `rate_com` expected
    /// averagings per worker per unit of time on regular graphs.
    pub fn from_spec(
        spec: &GraphSpec,
        n: usize,
        rate_com: f64,
        seed: u64,
    ) -> Result<Topology, TopologyError> {
        if n > MAX_WORKERS {
            return Err(TopologyError::TooManyWorkers {
                n,
                max: MAX_WORKERS,
                gib: (n as f64).powi(2) * 8.0 / f64::from(1u32 << 30),
            });
        }
        let graph = spec.build(n, seed)?;
        let (components, isolated) = graph.components();
        if components > 1 {
            return Err(TopologyError::Disconnected {
                graph: spec.to_string(),
                n,
                components,
                isolated_example: isolated.unwrap_or(0),
                hint: spec.disconnected_hint(),
            });
        }
        Topology::new(graph, rate_com)
    }

    /// Weights a connected graph with Metropolis rates rate_com / max(deg_i, deg_j) (= rate_com / d
    /// on a d-regular graph) and computes its constants.
    pub fn new(graph: Graph, rate_com: f64) -> Result<Topology, TopologyError> {
        if !(rate_com.is_finite() && rate_com > 0.0) {
            return Err(TopologyError::BadRate(rate_com));
        }
        let (components, isolated) = graph.components();
        if components > 1 {
            return Err(TopologyError::Disconnected {
                graph: graph.name.clone(),
                n: graph.n,
                components,
                isolated_example: isolated.unwrap_or(0),
                hint: "add edges so every worker is reachable".into(),
            });
        }
        let neighbors = adjacency(graph.n, &graph.edges);
        let rates = graph
            .edges
            .iter()
            .map(|&(i, j)| rate_com / neighbors[i].len().max(neighbors[j].len()) as f64)
            .collect::<Vec<_>>();
        let constants = spectral_constants(graph.n, &graph.edges, &rates)?;
        Ok(Topology {
            graph,
            rate_com,
            rates,
            neighbors,
            constants,
        })
    }

    /// Number of workers.
    pub fn workers(&self) -> usize {
        self.graph.n
    }

    /// The graph family's name, as `--graph` spells it.
    pub fn name(&self) -> &str {
        &self.graph.name
    }

    /// The edges, each once as (i, j) with i < j, sorted; `rates()[k]` is the rate of `edges()[k]`.
    pub fn edges(&self) -> &[(usize, usize)] {
        &self.graph.edges
    }

    /// The Poisson rate lambda_ij of each edge, aligned with `edges()`.
    pub fn rates(&self) -> &[f64] {
        &self.rates
    }

    /// The rate of edge (i, j) in either order, or `None` if they are not neighbours.
    pub fn rate(&self, i: usize, j: usize) -> Option<f64> {
        let key = (i.min(j), i.max(j));
        self.graph
            .edges
            .binary_search(&key)
            .ok()
            .map(|k| self.rates[k])
    }

    /// The constants the same graph would have with other per-edge rates, aligned with
    /// `edges()` (e.g. the rates a run achieved). An edge with rate 0 is absent; if the rest
    /// falls apart there are no constants (an error naming the graph).
    pub fn constants_with_rates(&self, rates: &[f64]) -> Result<AcidConstants, TopologyError> {
        if rates.len() != self.rates.len() || rates.iter().any(|r| !(r.is_finite() && *r >= 0.0)) {
            return Err(TopologyError::BadRate(
                rates
                    .iter()
                    .copied()
                    .find(|r| !r.is_finite())
                    .unwrap_or(-1.0),
            ));
        }
        let live = self
            .graph
            .edges
            .iter()
            .zip(rates)
            .filter(|&(_, &r)| r > 0.0)
            .map(|(&e, _)| e);
        let parts = components(self.graph.n, live, |_| true);
        if parts.len() > 1 {
            return Err(TopologyError::Disconnected {
                graph: self.graph.name.clone(),
                n: self.graph.n,
                components: parts.len(),
                isolated_example: parts[1][0],
                hint: "every edge of a spanning tree needs a positive rate".into(),
            });
        }
        spectral_constants(self.graph.n, &self.graph.edges, rates)
    }

    /// The `rate_com` the rates were derived from.
    pub fn rate_com(&self) -> f64 {
        self.rate_com
    }

    /// Worker i's neighbours, sorted.
    pub fn neighbors(&self, i: usize) -> &[usize] {
        &self.neighbors[i]
    }

    pub fn degree(&self, i: usize) -> usize {
        self.neighbors[i].len()
    }

    /// (min, max) degree over workers.
    pub fn degree_range(&self) -> (usize, usize) {
        let degrees = self.neighbors.iter().map(Vec::len);
        (
            degrees.clone().min().unwrap_or(0),
            degrees.max().unwrap_or(0),
        )
    }

    /// Expected pairwise averagings worker i takes part in per unit of time (per gradient):
    /// the sum of its edges' rates.
    pub fn averagings_per_unit_time(&self, i: usize) -> f64 {
        self.neighbors[i]
            .iter()
            .filter_map(|&j| self.rate(i, j))
            .sum()
    }

    pub fn constants(&self) -> &AcidConstants {
        &self.constants
    }

    /// True if every pair of workers is linked (there A²CiD² reduces to plain gossip).
    pub fn is_complete(&self) -> bool {
        let n = self.graph.n;
        self.graph.edges.len() == n * (n - 1) / 2
    }

    /// Human-readable cautions about using A²CiD² on this graph.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if self.is_complete() {
            warnings.push(format!(
                "on the complete graph chi_1 = chi_2, so alpha_tilde = alpha = {:.3} and x̃ stays \
                 equal to x: method `acid` is exactly `gossip` here (A²CiD² is for poorly \
                 connected graphs such as a ring)",
                self.constants.alpha
            ));
        }
        warnings
    }

    /// RelaySGD's spanning tree: the breadth-first tree from worker 0 (docs/algorithm.md §9), with
    /// its diameter (the rounds after which every worker's relayed average is complete).
    pub fn spanning_tree(&self) -> SpanningTree {
        SpanningTree::breadth_first(self.graph.n, &self.graph.edges, 0)
            .expect("a Topology is connected, so it has a spanning tree")
    }

    /// The rate-weighted Laplacian L = Σ lambda_ij (e_i - e_j)(e_i - e_j)^T.
    pub fn laplacian(&self) -> DMatrix<f64> {
        laplacian(self.graph.n, &self.graph.edges, &self.rates)
    }
}

fn laplacian(n: usize, edges: &[(usize, usize)], rates: &[f64]) -> DMatrix<f64> {
    let mut l = DMatrix::zeros(n, n);
    for (&(i, j), &rate) in edges.iter().zip(rates) {
        l[(i, i)] += rate;
        l[(j, j)] += rate;
        l[(i, j)] -= rate;
        l[(j, i)] -= rate;
    }
    l
}

/// chi_1, chi_2 and the derived parameters from one symmetric eigendecomposition of L.
/// The graph must be connected: then exactly one eigenvalue is zero (eigenvector 1/sqrt(n)).
fn spectral_constants(
    n: usize,
    edges: &[(usize, usize)],
    rates: &[f64],
) -> Result<AcidConstants, TopologyError> {
    let eigen = SymmetricEigen::new(laplacian(n, edges, rates));
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| eigen.eigenvalues[a].total_cmp(&eigen.eigenvalues[b]));
    // Connected: drop the single (numerically ~0) eigenvalue of the constant vector.
    let positive = &order[1..];
    let lambda_2 = positive
        .first()
        .map(|&k| eigen.eigenvalues[k])
        .unwrap_or(0.0);
    if lambda_2.is_nan() || lambda_2 <= 0.0 {
        return Err(TopologyError::Spectrum { n });
    }
    let chi_1 = 1.0 / lambda_2;
    // Effective resistance of edge (i, j): Σ_k (v_k[i] - v_k[j])^2 / lambda_k over positive k.
    let max_resistance = edges
        .iter()
        .map(|&(i, j)| {
            positive
                .iter()
                .map(|&k| {
                    let v = eigen.eigenvectors.column(k);
                    let diff = v[i] - v[j];
                    diff * diff / eigen.eigenvalues[k]
                })
                .sum::<f64>()
        })
        .fold(0.0_f64, f64::max);
    let chi_2 = 0.5 * max_resistance;
    Ok(AcidConstants {
        chi_1,
        chi_2,
        eta: 1.0 / (2.0 * (chi_1 * chi_2).sqrt()),
        alpha: 0.5,
        alpha_tilde: 0.5 * (chi_1 / chi_2).sqrt(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constants_follow_the_rates_they_are_given() {
        let t = Topology::from_spec(&GraphSpec::Ring, 16, 1.0, 0).unwrap();
        let same = t.constants_with_rates(t.rates()).unwrap();
        assert_eq!(&same, t.constants());
        // Half the rate on every edge: eta halves, alpha_tilde does not move (§5).
        let half: Vec<f64> = t.rates().iter().map(|r| r / 2.0).collect();
        let c = t.constants_with_rates(&half).unwrap();
        assert!((c.eta - t.constants().eta / 2.0).abs() < 1e-12);
        assert!((c.alpha_tilde - t.constants().alpha_tilde).abs() < 1e-9);
        // Two dead edges split the ring: no constants.
        let mut cut = t.rates().to_vec();
        cut[0] = 0.0;
        cut[5] = 0.0;
        assert!(t.constants_with_rates(&cut).is_err());
        assert!(t.constants_with_rates(&[1.0]).is_err());
    }

    #[test]
    fn components_neighbours_and_ring_neighbours() {
        let ring: Vec<(usize, usize)> = (0..6).map(|i| (i, ring_neighbours(i, 6).1)).collect();
        assert_eq!(components(6, ring.iter().copied(), |_| true).len(), 1);
        assert_eq!(
            components(6, ring.iter().copied(), |v| v != 1 && v != 4),
            vec![vec![0, 5], vec![2, 3]]
        );
        assert_eq!(components(3, [], |_| true), vec![vec![0], vec![1], vec![2]]);
        assert_eq!(neighbours_of(0, ring.iter().copied()), vec![1, 5]);
        assert_eq!(neighbours_of(3, [(3, 1), (1, 3), (0, 2)]), vec![1]);
        assert_eq!(neighbours_of(9, ring.iter().copied()), Vec::<usize>::new());
        assert_eq!(ring_neighbours(0, 4), (3, 1));
        assert_eq!(ring_neighbours(3, 4), (2, 0));
    }
    use std::f64::consts::PI;

    fn topo(spec: &str, n: usize, rate: f64) -> Topology {
        Topology::from_spec(&spec.parse().unwrap(), n, rate, 7).unwrap()
    }

    fn close(a: f64, b: f64, rel: f64) -> bool {
        (a - b).abs() <= rel * b.abs().max(1e-300)
    }

    #[test]
    fn ring_64_matches_the_spec_check_values() {
        let c = *topo("ring", 64, 1.0).constants();
        assert!((c.chi_1 - 207.7).abs() < 0.05, "chi_1 = {}", c.chi_1);
        assert!((c.chi_2 - 0.984).abs() < 0.0005, "chi_2 = {}", c.chi_2);
        assert!((c.eta - 0.0350).abs() < 0.00005, "eta = {}", c.eta);
        assert!(
            (c.alpha_tilde - 7.26).abs() < 0.005,
            "alpha_tilde = {}",
            c.alpha_tilde
        );
        assert_eq!(c.alpha, 0.5);
    }

    #[test]
    fn ring_closed_forms() {
        // Eigenvalues 2 (1 - cos(2 pi k / n)) * lambda with lambda = rate/2; the effective
        // resistance of one ring edge is (1/lambda) (n-1)/n.
        for &(n, rate) in &[(5usize, 1.0), (16, 2.0), (33, 0.5)] {
            let t = topo("ring", n, rate);
            let lambda = rate / 2.0;
            let lambda_2 = 2.0 * (1.0 - (2.0 * PI / n as f64).cos()) * lambda;
            let c = t.constants();
            assert!(
                close(c.chi_1, 1.0 / lambda_2, 1e-9),
                "n={n}: {} vs {}",
                c.chi_1,
                1.0 / lambda_2
            );
            let resistance = (n as f64 - 1.0) / n as f64 / lambda;
            assert!(close(c.chi_2, 0.5 * resistance, 1e-9));
            let mut spectrum: Vec<f64> = SymmetricEigen::new(t.laplacian())
                .eigenvalues
                .iter()
                .copied()
                .collect();
            spectrum.sort_by(f64::total_cmp);
            let mut expected: Vec<f64> = (0..n)
                .map(|k| 2.0 * (1.0 - (2.0 * PI * k as f64 / n as f64).cos()) * lambda)
                .collect();
            expected.sort_by(f64::total_cmp);
            for (got, want) in spectrum.iter().zip(&expected) {
                assert!((got - want).abs() < 1e-10, "{got} vs {want}");
            }
        }
    }

    #[test]
    fn complete_graph_has_chi_1_equal_chi_2_and_warns() {
        for n in [2usize, 5, 12] {
            let t = topo("complete", n, 1.0);
            let c = t.constants();
            // L = lambda (n I - J), lambda = 1/(n-1): every positive eigenvalue is lambda n.
            let lambda_n = n as f64 / (n as f64 - 1.0);
            assert!(close(c.chi_1, 1.0 / lambda_n, 1e-10));
            assert!(close(c.chi_2, c.chi_1, 1e-10));
            assert!(close(c.alpha_tilde, c.alpha, 1e-10));
            assert_eq!(t.edges().len(), n * (n - 1) / 2);
            assert!(t.warnings().iter().any(|w| w.contains("exactly `gossip`")));
        }
        assert!(topo("ring", 8, 1.0).warnings().is_empty());
    }

    #[test]
    fn the_spanning_tree_spans_the_graph_with_tree_edges_and_its_diameter() {
        // Ring: the breadth-first tree from 0 drops the edge opposite 0; a path of n − 1 hops.
        let t = topo("ring", 16, 1.0).spanning_tree();
        assert_eq!(t.edges.len(), 15);
        assert_eq!(t.diameter, 15);
        assert!(!t.edges.contains(&(8, 9)) && t.edges.contains(&(0, 15)));
        // Star from the hub: diameter 2. Complete graph: the star around 0.
        assert_eq!(topo("star", 9, 1.0).spanning_tree().diameter, 2);
        let complete = topo("complete", 6, 1.0).spanning_tree();
        assert_eq!(complete.edges, (1..6).map(|j| (0, j)).collect::<Vec<_>>());
        // Torus 4x4 and the hypercube: every tree edge is a graph edge, n − 1 edges, connected,
        // depth from 0 = graph distance, diameter <= 2 · eccentricity of 0.
        for (name, n) in [("torus", 16), ("hypercube", 16), ("exponential", 12)] {
            let topology = topo(name, n, 1.0);
            let tree = topology.spanning_tree();
            assert_eq!(tree.edges.len(), n - 1, "{name}");
            assert!(
                tree.edges.iter().all(|e| topology.edges().contains(e)),
                "{name}"
            );
            let depth = tree.distances_from(0);
            assert!(depth.iter().all(|&d| d < n), "{name}: spans");
            let eccentricity = *depth.iter().max().unwrap();
            assert!(tree.diameter <= 2 * eccentricity && tree.diameter >= eccentricity);
            let farthest = (0..n).map(|v| *tree.distances_from(v).iter().max().unwrap());
            assert_eq!(farthest.max(), Some(tree.diameter), "{name}");
        }
        assert!(SpanningTree::breadth_first(4, &[(0, 1), (2, 3)], 0).is_none());
        assert!(SpanningTree::breadth_first(2, &[(0, 1)], 5).is_none());
    }

    #[test]
    fn eta_is_linear_in_rate_and_alpha_tilde_is_not() {
        let a = *topo("torus", 24, 1.0).constants();
        let b = *topo("torus", 24, 3.0).constants();
        assert!(close(b.eta, 3.0 * a.eta, 1e-10));
        assert!(close(b.alpha_tilde, a.alpha_tilde, 1e-10));
        assert!(close(b.chi_1, a.chi_1 / 3.0, 1e-10));
    }

    #[test]
    fn families_have_the_expected_shape() {
        let t = topo("torus", 12, 1.0); // most square: 3x4, 4-regular
        assert_eq!(t.edges().len(), 24);
        assert_eq!(t.degree_range(), (4, 4));
        let t = topo("torus:2x4", 8, 1.0); // 2 rows: vertical wrap edge is the same edge
        assert_eq!(t.degree_range(), (3, 3));
        let t = topo("hypercube", 16, 1.0);
        assert_eq!(t.degree_range(), (4, 4));
        assert_eq!(t.edges().len(), 32);
        let t = topo("exponential", 16, 1.0); // hops 1, 2, 4, 8 (8 is its own inverse)
        assert_eq!(t.degree_range(), (7, 7));
        let t = topo("exponential", 12, 1.0); // hops 1, 2, 4, 8 = -4
        assert_eq!(t.degree_range(), (6, 6));
        let t = topo("star", 6, 1.0);
        assert_eq!(t.degree_range(), (1, 5));
        assert_eq!(t.neighbors(0), &[1, 2, 3, 4, 5]);
        let t = topo("regular:3", 20, 1.0);
        assert_eq!(t.degree_range(), (3, 3));
        assert_eq!(t.edges().len(), 30);
        let t = topo("erdos-renyi:0.5", 20, 1.0);
        assert!(t.edges().len() > 50 && t.edges().len() < 140);
    }

    #[test]
    fn random_graphs_are_reproducible_from_their_seed() {
        let spec: GraphSpec = "regular:4".parse().unwrap();
        let a = spec.build(30, 11).unwrap();
        assert_eq!(a, spec.build(30, 11).unwrap());
        assert_ne!(a, spec.build(30, 12).unwrap());
        let spec: GraphSpec = "erdos-renyi:0.3".parse().unwrap();
        assert_eq!(spec.build(30, 5).unwrap(), spec.build(30, 5).unwrap());
    }

    #[test]
    fn rates_are_metropolis_and_regular_rates_give_rate_com_per_worker() {
        let t = topo("ring", 10, 2.0);
        assert!(t.rates().iter().all(|&r| close(r, 1.0, 1e-15)));
        assert!((0..10).all(|i| close(t.averagings_per_unit_time(i), 2.0, 1e-12)));
        let t = topo("star", 5, 1.0); // every edge touches the hub of degree 4
        assert!(t.rates().iter().all(|&r| close(r, 0.25, 1e-15)));
        assert!(close(t.averagings_per_unit_time(0), 1.0, 1e-12));
        assert!(close(t.averagings_per_unit_time(3), 0.25, 1e-12));
        assert_eq!(t.rate(3, 0), Some(0.25));
        assert_eq!(t.rate(3, 1), None);
        // Symmetric Laplacian with zero row sums.
        let l = t.laplacian();
        assert_eq!(l.clone(), l.transpose());
        assert!(l.row_iter().all(|row| row.sum().abs() < 1e-12));
    }

    #[test]
    fn chi_2_is_half_the_largest_effective_resistance_by_pseudo_inverse() {
        // Cross-check the spectral formula against an explicit pseudo-inverse on an irregular graph.
        let t = topo("erdos-renyi:0.4", 15, 1.5);
        let l = t.laplacian();
        let n = 15;
        let j = DMatrix::from_element(n, n, 1.0 / n as f64);
        let pinv = (l + &j).try_inverse().unwrap() - j; // L^+ = (L + J/n)^-1 - J/n
        let max_r = t
            .edges()
            .iter()
            .map(|&(a, b)| pinv[(a, a)] + pinv[(b, b)] - 2.0 * pinv[(a, b)])
            .fold(0.0, f64::max);
        assert!(close(t.constants().chi_2, 0.5 * max_r, 1e-9));
    }

    #[test]
    fn parsing_round_trips_and_rejects_nonsense() {
        for s in [
            "ring",
            "complete",
            "exponential",
            "torus",
            "torus:4x8",
            "star",
            "hypercube",
            "regular:3",
            "erdos-renyi:0.3",
            "file:edges.txt",
        ] {
            let spec: GraphSpec = s.parse().unwrap();
            assert_eq!(spec.to_string(), s);
        }
        assert_eq!("Cycle".parse::<GraphSpec>().unwrap(), GraphSpec::Ring);
        assert!(matches!(
            "mesh".parse::<GraphSpec>(),
            Err(TopologyError::UnknownGraph(_))
        ));
        for bad in [
            "regular",
            "regular:x",
            "regular:0",
            "erdos-renyi:1.5",
            "erdos-renyi",
            "ring:3",
            "file:",
            "torus:4",
        ] {
            assert!(bad.parse::<GraphSpec>().is_err(), "{bad} should not parse");
        }
        let msg = "regular".parse::<GraphSpec>().unwrap_err().to_string();
        assert!(msg.contains("regular:3"), "{msg}");
    }

    #[test]
    fn bad_worker_counts_and_shapes_are_errors() {
        let err = |spec: &str, n: usize| {
            Topology::from_spec(&spec.parse().unwrap(), n, 1.0, 0).unwrap_err()
        };
        assert!(matches!(
            err("ring", 2),
            TopologyError::TooFewWorkers { min: 3, .. }
        ));
        assert!(matches!(
            err("complete", 1),
            TopologyError::TooFewWorkers { .. }
        ));
        assert!(matches!(
            err("torus:3x4", 16),
            TopologyError::TorusShapeMismatch { cells: 12, .. }
        ));
        assert!(matches!(
            err("torus", 13),
            TopologyError::TorusPrime { n: 13 }
        ));
        assert!(matches!(
            err("hypercube", 12),
            TopologyError::HypercubeNotPowerOfTwo {
                below: 8,
                above: 16,
                ..
            }
        ));
        assert!(matches!(
            err("regular:3", 7),
            TopologyError::ImpossibleRegular { .. }
        ));
        assert!(matches!(
            err("erdos-renyi:0.01", 30),
            TopologyError::Disconnected { .. }
        ));
        let merged = GraphSpec::Ring.with_torus_shape(Some("2x2".parse().unwrap()));
        assert!(matches!(
            merged,
            Err(TopologyError::TorusShapeWithoutTorus { .. })
        ));
        let merged = GraphSpec::Torus(Some("2x8".parse().unwrap()))
            .with_torus_shape(Some("4x4".parse().unwrap()));
        assert!(matches!(
            merged,
            Err(TopologyError::ConflictingTorusShape { .. })
        ));
        assert_eq!(
            GraphSpec::Torus(None).with_torus_shape(Some("4x4".parse().unwrap())),
            Ok(GraphSpec::Torus(Some(TorusShape { rows: 4, cols: 4 })))
        );
        assert!(Topology::from_spec(&GraphSpec::Ring, 8, 0.0, 0).is_err());
        assert!(Topology::from_spec(&GraphSpec::Ring, 8, f64::NAN, 0).is_err());
    }

    #[test]
    fn edge_files_parse_with_comments_and_report_line_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("edges.txt");
        std::fs::write(&path, "# a path 0-1-2-3\n0 1\n\n1 2 # middle\n2,3\n").unwrap();
        let t = Topology::from_spec(&GraphSpec::File(path.clone()), 4, 1.0, 0).unwrap();
        assert_eq!(t.edges(), &[(0, 1), (1, 2), (2, 3)]);
        assert_eq!(t.degree_range(), (1, 2));

        let line_of = |text: &str, n: usize| {
            std::fs::write(&path, text).unwrap();
            match Topology::from_spec(&GraphSpec::File(path.clone()), n, 1.0, 0) {
                Err(TopologyError::EdgeFileSyntax { line, message, .. }) => (line, message),
                other => panic!("expected a syntax error, got {other:?}"),
            }
        };
        assert_eq!(line_of("0 1\n1 x\n", 4).0, 2);
        assert_eq!(line_of("0 1\n1 2 3\n", 4).0, 2);
        let (line, message) = line_of("0 1\n1 2\n\n2 7\n", 4);
        assert_eq!(line, 4);
        assert!(message.contains("out of range"), "{message}");
        let (line, message) = line_of("0 1\n1 2\n2 1\n", 4);
        assert_eq!(line, 3);
        assert!(message.contains("first given on line 2"), "{message}");
        assert!(line_of("3 3\n", 4).1.contains("self-loop"));
        // Worker 3 never appears: disconnected, not a crash.
        std::fs::write(&path, "0 1\n1 2\n").unwrap();
        assert!(matches!(
            Topology::from_spec(&GraphSpec::File(path.clone()), 4, 1.0, 0),
            Err(TopologyError::Disconnected {
                isolated_example: 3,
                ..
            })
        ));
        let missing = Topology::from_spec(&GraphSpec::File(dir.path().join("nope")), 4, 1.0, 0);
        assert!(matches!(
            missing,
            Err(TopologyError::EdgeFileUnreadable { .. })
        ));
    }
}
