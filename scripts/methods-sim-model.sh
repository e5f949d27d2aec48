#!/usr/bin/env bash
# The neighbouring methods side by side in the simulator on a real model and dataset
# (docs/results.md §6.1): ring of n = 16, `--problem model` (MLP 64-64-10 on the embedded UCI
# digits, batch 32, lr 0.1, no momentum; every worker's training state on the GPU adapter, the
# runtime's TrainState and fused kernels), partitions iid and dirichlet:0.3, seeds 0,1,2,
# T = 600 gradients per (speed-1) worker (16 × 600 × 32 rows ≈ 213 epochs of the 1438 training
# rows, the budget of the real-process runs of §7).
#
#   scripts/methods-sim-model.sh OUT_DIR     # 54 runs, ~80 min on the 2-vCPU sandbox (llvmpipe)
#
# Layout: OUT_DIR/<partition>/<block>/{summary.json,...}; the last step prints the markdown
# tables (scripts/summarize-methods-sim.py OUT_DIR model). A2CID overrides the binary (default
# ./target/release/a2cid). dadao has no model problem (its constants need mu and L).
set -euo pipefail

out=${1:?usage: scripts/methods-sim-model.sh OUT_DIR}
bin=${A2CID:-./target/release/a2cid}
time=${TIME:-600}
[[ -x $bin ]] || { echo "build first: cargo build --release ($bin missing)" >&2; exit 1; }
mkdir -p "$out"

common=(--workers 16 --graph ring --problem model --dataset digits --hidden 64 --batch-size 32
    --lr 0.1 --seed 0,1,2 --time "$time" --sample-every $((time / 30)))

for partition in iid dirichlet:0.3; do
    dir=$out/${partition/:/}
    sim() { # block, then flags
        local block=$1; shift
        if [[ -f $dir/$block/summary.json ]]; then echo "skip $dir/$block (done)"; return; fi
        echo "== $dir/$block"
        "$bin" simulate "${common[@]}" --partition "$partition" "$@" --out "$dir/$block" \
            > "$dir.$block.log" 2>&1 || { echo "FAILED $dir/$block, see $dir.$block.log"; exit 1; }
    }
    mkdir -p "$dir"
    # One call for the plot: all-reduce, gossip and A²CiD² at rate 1 (one model sent per worker
    # per gradient), lasgd H = 10, RelaySum (one relay round per unit of time).
    sim main --method allreduce,gossip,acid,lasgd,relaysum --rate-com 1 --sync-every 10
    # Gossip and A²CiD² at rate 2, about RelaySum's bytes.
    sim rate2 --method gossip,acid --rate-com 2
    # lasgd H = 2 (more synchronisations) and DiLoCo (lasgd H = 10 with a Nesterov outer step,
    # lr 0.7, momentum 0.9: the DiLoCo paper's values, as in §6 and §7).
    sim lasgd-H2 --method lasgd --sync-every 2
    sim diloco-H10 --method lasgd --sync-every 10 --outer nesterov:0.7,0.9
done

python3 "$(dirname "$0")/summarize-methods-sim.py" "$out" model | tee "$out/tables.md"
