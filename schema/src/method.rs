//! The training methods (docs/algorithm.md §4) and the parameters each gives the update rules.
use a2cid_engine::acid::AcidParams;
use a2cid_topology::Topology;
use serde::{Deserialize, Serialize};

/// How workers combine their models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// A²CiD²: asynchronous pairwise averaging plus the continuous momentum x̃.
    Acid,
    /// Asynchronous pairwise gossip (eta = 0, no x̃).
    Gossip,
    /// Synchronous SGD, gradients averaged by all-reduce every step.
    #[serde(rename = "allreduce")]
    AllReduce,
    /// Each worker trains alone, no averaging (the floor every method must beat); the final
    /// models are still averaged.
    Local,
    /// Locally asynchronous SGD: local steps without waiting, an all-reduce average of the models
    /// every H local steps (with an outer optimizer on the averaged change: DiLoCo).
    Lasgd,
    /// RelaySGD: on a spanning tree, relayed sums of models with counts give every worker an
    /// exactly uniform average with distance-dependent delays. Simulator only for now.
    #[serde(rename = "relaysum")]
    RelaySum,
    /// DADAO: decoupled accelerated asynchronous primal-dual method for smooth strongly convex
    /// problems (the simulator's quadratic only).
    Dadao,
}

impl Method {
    pub const ALL: [Method; 7] = [
        Method::Acid,
        Method::Gossip,
        Method::AllReduce,
        Method::Local,
        Method::Lasgd,
        Method::RelaySum,
        Method::Dadao,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Method::Acid => "acid",
            Method::Gossip => "gossip",
            Method::AllReduce => "allreduce",
            Method::Local => "local",
            Method::Lasgd => "lasgd",
            Method::RelaySum => "relaysum",
            Method::Dadao => "dadao",
        }
    }

    /// Whether workers keep the companion x̃.
    pub fn uses_x_tilde(self) -> bool {
        self == Method::Acid
    }

    /// Whether workers train without waiting for each other (all but allreduce).
    pub fn is_asynchronous(self) -> bool {
        self != Method::AllReduce
    }

    /// Whether `a2cid simulate` is the only place this method runs (dadao, on the simulator's
    /// convex problem): the real runtime refuses it.
    pub fn simulator_only(self) -> bool {
        matches!(self, Method::Dadao)
    }

    /// Whether every worker meets the others in a collective (allreduce at every step, lasgd
    /// every `sync_every` local steps, relaysum's relay round at every step), so they step in
    /// lockstep and none goes on without the others.
    pub fn synchronises_by_allreduce(self) -> bool {
        matches!(self, Method::AllReduce | Method::Lasgd | Method::RelaySum)
    }

    /// Whether workers average pairwise at Poisson times (acid, gossip).
    pub fn is_pairwise(self) -> bool {
        matches!(self, Method::Acid | Method::Gossip)
    }

    /// The parameters of the update rules for this method on `topology`: the graph's A²CiD²
    /// constants for `acid` (docs/algorithm.md §5), plain gossip's for the others.
    pub fn acid_params(self, topology: &Topology) -> AcidParams {
        match self {
            Method::Acid => {
                let c = topology.constants();
                AcidParams {
                    eta: c.eta,
                    alpha: c.alpha,
                    alpha_tilde: c.alpha_tilde,
                }
            }
            Method::Gossip
            | Method::AllReduce
            | Method::Local
            | Method::Lasgd
            | Method::RelaySum
            | Method::Dadao => AcidParams::GOSSIP,
        }
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Method {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Method::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| {
                format!(
                    "unknown method `{s}`: expected acid, gossip, allreduce, local, lasgd, \
                     relaysum or dadao"
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_say_what_is_expected() {
        for m in Method::ALL {
            assert_eq!(m.name().parse::<Method>(), Ok(m));
            assert_eq!(
                serde_json::to_string(&m).unwrap(),
                format!("\"{}\"", m.name())
            );
        }
        let e = "adam".parse::<Method>().unwrap_err();
        assert!(e.contains("local, lasgd, relaysum or dadao"), "{e}");
        assert!(Method::ALL
            .iter()
            .all(|m| m.simulator_only() == matches!(m.name(), "dadao")));
    }
}
