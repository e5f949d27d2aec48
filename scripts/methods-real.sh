#!/usr/bin/env bash
# The neighbouring methods side by side with real worker processes (docs/results.md §7): ring of
# n = 8 local workers, digits (embedded, needs no download), MLP 64-64-10, batch 32, lr 0.1.
# Methods: acid and gossip (--rate-com 1), allreduce, lasgd --sync-every 10, DiLoCo
# (lasgd --sync-every 10 --outer nesterov:0.7,0.9) and relaysum (RelaySGD on the breadth-first
# spanning tree); partitions iid and dirichlet:0.3; seeds from SEEDS (default "1 2 3"); METHODS
# (default all: "acid gossip allreduce lasgd diloco relaysum") restricts the methods run. Runs are
# strictly sequential (never two runs at once).
#
#   scripts/methods-real.sh OUT_DIR        # ~20 min on the 2-vCPU sandbox (llvmpipe), 48 runs
#
# --epochs E is not the same number of gradients for every method (docs/running.md "Stop"):
# for acid/gossip it is a global budget of E epochs of every shard (~E * 1438 / 32 gradients in
# all), for allreduce/lasgd/relaysum (lockstep) it is E epochs of the *largest* shard on every
# worker, which under dirichlet:0.3 is much more. So a second block re-runs allreduce, lasgd,
# DiLoCo and relaysum on dirichlet:0.3 with --grad-budget G, G = ceil(E * 1438 / 32) (and
# --epochs 0), the budget the acid/gossip runs get.
#
# Layout: OUT_DIR/<method>-<partition>-s<seed>/ (the budget block: <method>-dirichlet0.3-budget-s<seed>);
# OUT_DIR/status.tsv records every run's exit status; a failed run is recorded, not hidden,
# and the script goes on. scripts/summarize-methods-real.py OUT_DIR prints the markdown tables.
# A2CID overrides the binary (default ./target/release/a2cid; copy it elsewhere if others may
# rebuild it while this runs).
set -uo pipefail

out=${1:?usage: scripts/methods-real.sh OUT_DIR}
bin=${A2CID:-./target/release/a2cid}
epochs=${EPOCHS:-200}
seeds=${SEEDS:-"1 2 3"}
[[ -x $bin ]] || { echo "build first: cargo build --release ($bin missing)" >&2; exit 1; }
mkdir -p "$out"
budget=$(( (epochs * 1438 + 31) / 32 ))

common=(--workers 8 --graph ring --dataset digits --batch-size 32 --lr 0.1 --hidden 64 --no-progress)

methods=(
    "acid|--method acid --rate-com 1"
    "gossip|--method gossip --rate-com 1"
    "allreduce|--method allreduce"
    "lasgd|--method lasgd --sync-every 10"
    "diloco|--method lasgd --sync-every 10 --outer nesterov:0.7,0.9"
    "relaysum|--method relaysum"
)
wanted=" ${METHODS:-acid gossip allreduce lasgd diloco relaysum} "

run_one() { # name, then the run's flags
    local name=$1; shift
    local dir=$out/$name
    if [[ -f $dir/summary.json ]]; then echo "skip $name (done)"; return; fi
    rm -rf "$dir"
    echo "== $name: $bin run ${common[*]} $* --out $dir"
    local t0=$SECONDS
    "$bin" run "${common[@]}" "$@" --out "$dir" > "$out/$name.log" 2>&1
    local rc=$?
    printf '%s\t%s\t%ss\t%s\n' "$name" "$rc" "$((SECONDS - t0))" "$*" >> "$out/status.tsv"
    [[ $rc == 0 ]] || { echo "FAILED $name (exit $rc), see $out/$name.log"; tail -5 "$out/$name.log"; }
}

for seed in $seeds; do
    for part in iid dirichlet:0.3; do
        for m in "${methods[@]}"; do
            name=${m%%|*}; read -ra flags <<< "${m#*|}"
            [[ $wanted == *" $name "* ]] || continue
            run_one "$name-${part/:/}-s$seed" "${flags[@]}" --partition "$part" --seed "$seed" --epochs "$epochs"
        done
    done
    # Equal gradients under dirichlet:0.3: the synchronous methods on acid/gossip's budget.
    for m in "${methods[@]:2}"; do
        name=${m%%|*}; read -ra flags <<< "${m#*|}"
        [[ $wanted == *" $name "* ]] || continue
        run_one "$name-dirichlet0.3-budget-s$seed" "${flags[@]}" --partition dirichlet:0.3 --seed "$seed" --epochs 0 --grad-budget "$budget"
    done
done

echo "done; status in $out/status.tsv"
