#!/usr/bin/env bash
# Where asynchrony and A²CiD² matter (docs/results.md §5): ring graphs, acid / gossip / allreduce /
# local, iid and label-skewed shards, with and without one emulated straggler, 3 seeds.
#
#   scripts/experiments.sh [OUT_DIR] [GRID]     (GRID: all | n8 | n16 | paced; default all)
#
# GRID=paced (§5.1): the straggler comparison with every step paced (--step-time: 0.25 s at
# n = 8, 0.5 s at n = 16, as if each worker had a device of its own; on a 2-core box the pace
# holds there and not below), methods $METHODS (default "acid allreduce"), speeds $SPEEDS
# (default "straggler:2"), each run capped at 60 s (n = 8) or 90 s (n = 16) of training;
# n = 8 iid and dirichlet:0.3, n = 16 dirichlet:0.3.
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
  paced)
    for n in 8 16; do
      pace=0.25; cap=60; partitions="iid dirichlet:0.3"
      [ "$n" = 16 ] && { pace=0.5; cap=90; partitions="dirichlet:0.3"; }
      for partition in $partitions; do
        for speeds in ${SPEEDS:-straggler:2}; do
          for seed in 0 1 2; do
            for method in ${METHODS:-acid allreduce}; do
              name="n$n-${partition/:/}-${speeds/:/}-paced$pace-$method-s$seed"
              dir="$out/$name"
              [ -f "$dir/summary.json" ] && continue
              rm -rf "$dir"
              echo "== $name"
              "$bin" run --workers "$n" --graph ring --method "$method" --dataset digits \
                --partition "$partition" --worker-speeds "$speeds" --step-time "$pace" \
                --seed "$seed" --epochs 30 --max-seconds "$cap" --batch-size 16 \
                --eval-every 10 --target-accuracy 0.9,0.95 --no-progress --out "$dir" \
                > "$dir.log" 2>&1 || { echo "failed: see $dir.log"; tail -5 "$dir.log"; }
            done
          done
        done
      done
    done
    exit 0 ;;
  *) echo "unknown grid $grid (all, n8, n16 or paced)" >&2; exit 2 ;;
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
