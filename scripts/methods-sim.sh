#!/usr/bin/env bash
# The neighbouring methods side by side in the simulator (docs/results.md §6): ring of n = 16,
# quadratic problem (the only problem on which every method runs: dadao is quadratic-only), 3
# seeds, T = 2000 gradients per worker, default lr 0.05, no momentum. The same comparison on a
# real model and dataset, iid and dirichlet:0.3, is scripts/methods-sim-model.sh (§6.1; ~80 min here).
#
#   scripts/methods-sim.sh OUT_DIR          # ~12 s on the 2-vCPU sandbox
#
# Layout: OUT_DIR/<setting>/<block>/{summary.csv,...}; the last step prints the markdown tables
# (scripts/summarize-methods-sim.py). A2CID overrides the binary (default ./target/release/a2cid).
set -euo pipefail

out=${1:?usage: scripts/methods-sim.sh OUT_DIR}
bin=${A2CID:-./target/release/a2cid}
[[ -x $bin ]] || { echo "build first: cargo build --release ($bin missing)" >&2; exit 1; }
mkdir -p "$out"

common=(--workers 16 --graph ring --problem quadratic --seed 0,1,2 --time 2000)

# The ring's constants (chi_1, chi_2, alpha_tilde) and RelaySum's BFS spanning tree.
"$bin" topology --graph ring --workers 16 > "$out/topology.txt"

# Data settings of the quadratic (it has no --partition; its heterogeneity knob is the spread
# of the workers' local optima w_i = w* + heterogeneity * N(0, I)):
#   hetero: heterogeneity 1 (default), noise 1
#   iid:    heterogeneity 0 (every worker has the same optimum), noise 1
for setting in hetero iid; do
    case $setting in
        hetero) data=(--heterogeneity 1 --noise 1) ;;
        iid) data=(--heterogeneity 0 --noise 1) ;;
    esac
    dir=$out/$setting

    # Reference: synchronous all-reduce SGD (one step per unit of time, waits for everyone).
    "$bin" simulate "${common[@]}" "${data[@]}" --method allreduce --out "$dir/allreduce"

    # Gossip and A²CiD² at rate_com 1 (one model sent per worker per gradient), 2 (the bytes
    # of RelaySum, ~1.9 models per gradient) and 5 (the lowest rate DADAO's analysis allows on
    # this ring, chi_1 chi_2 <= 1/2 needs rate_com >= 4.96).
    "$bin" simulate "${common[@]}" "${data[@]}" --method gossip,acid --rate-com 1,2,5 \
        --out "$dir/gossip-acid"

    # Local SGD: all-reduce average every H local steps. H = 2 sends about as many bytes per
    # unit of time as gossip at rate 1 would; H = 10 is the simulator's default.
    for h in 2 10; do
        "$bin" simulate "${common[@]}" "${data[@]}" --method lasgd --sync-every "$h" \
            --out "$dir/lasgd-H$h"
    done

    # DiLoCo: lasgd with a Nesterov outer step (lr 0.7, momentum 0.9, the value the CLI's
    # --outer help suggests), same H as lasgd.
    for h in 2 10; do
        "$bin" simulate "${common[@]}" "${data[@]}" --method lasgd --sync-every "$h" \
            --outer nesterov:0.7,0.9 --out "$dir/diloco-H$h"
    done

    # RelaySum on the ring's BFS spanning tree: one synchronous round per unit of time.
    "$bin" simulate "${common[@]}" "${data[@]}" --method relaysum --out "$dir/relaysum"

    # DADAO: rate_com 1 (equal to gossip@1; below its rate condition, it warns) and 5.
    # Its step sizes come from mu, L and chi_1, not from --lr.
    "$bin" simulate "${common[@]}" "${data[@]}" --method dadao --rate-com 1,5 \
        --out "$dir/dadao"
done

# Extra: exact gradients (noise 0, heterogeneity 1) for DADAO against gossip and A²CiD² at
# rate_com 5: what DADAO is built for (its analysis has no gradient noise).
"$bin" simulate "${common[@]}" --heterogeneity 1 --noise 0 --method gossip,acid,dadao \
    --rate-com 5 --out "$out/noise0/gossip-acid-dadao"

# One plot with the methods at about one model sent per worker per unit of time (heterogeneous
# data): allreduce, gossip and A²CiD² at rate 1, lasgd H = 2, RelaySum (DiLoCo and DADAO need
# their own invocation, --outer applies to every lasgd run of one call).
# docs/img/sim_methods_ring16.svg is a copy of OUT_DIR/plot/comparison.svg.
"$bin" simulate "${common[@]}" --method allreduce,gossip,acid,lasgd,relaysum --rate-com 1 \
    --sync-every 2 --out "$out/plot"

python3 "$(dirname "$0")/summarize-methods-sim.py" "$out" | tee "$out/tables.md"
