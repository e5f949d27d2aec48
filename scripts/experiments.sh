#!/usr/bin/env bash
# Where asynchrony and A²CiD² matter (docs/results.md §5): ring graphs, acid / gossip / allreduce /
# local, iid and label-skewed shards, with and without one emulated straggler, 3 seeds.
#
#   scripts/experiments.sh [OUT_DIR] [GRID]     (GRID: all | n8 | n16; default all)
#
# Each run goes to OUT_DIR/<n>-<partition>-<speeds>-<method>-s<seed>; a run whose summary.json
# exists is skipped, so the script can be stopped and started again. Every run on this machine's
# adapter (A2CID_ADAPTER to choose). Then: scripts/summarize-experiments.py OUT_DIR.
set -euo pipefail
out=${1:-runs/experiments}
grid=${2:-all}
bin=${A2CID_BIN:-target/release/a2cid}
[ -x "$bin" ] || cargo build --release -p a2cid
mkdir -p "$out"
sizes="8 16"
case "$grid" in
  n8) sizes=8 ;;
  n16) sizes=16 ;;
  all) ;;
  *) echo "unknown grid $grid (all, n8 or n16)" >&2; exit 2 ;;
esac
for n in $sizes; do
  # n = 16: only the label-skewed shards (the iid case at n = 8 already shows the straggler).
  partitions="iid dirichlet:0.3"
  [ "$n" = 16 ] && partitions="dirichlet:0.3"
  for partition in $partitions; do
    for speeds in homogeneous straggler:2; do
      for seed in 0 1 2; do
        for method in acid gossip allreduce local; do
          name="n$n-${partition/:/}-${speeds/:/}-$method-s$seed"
          dir="$out/$name"
          [ -f "$dir/summary.json" ] && continue
          rm -rf "$dir"
          echo "== $name"
          "$bin" run --workers "$n" --graph ring --method "$method" --dataset digits \
            --partition "$partition" --worker-speeds "$speeds" --seed "$seed" \
            --epochs 30 --batch-size 16 --eval-every 10 --target-accuracy 0.9,0.95 \
            --no-progress --out "$dir" > "$dir.log" 2>&1 || { echo "failed: see $dir.log"; tail -5 "$dir.log"; }
        done
      done
    done
  done
done
