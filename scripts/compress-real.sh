#!/usr/bin/env bash
# Compressed pairwise exchanges with real worker processes (docs/results.md §8): ring of n = 8
# local workers, acid, digits (embedded, needs no download), MLP 64-64-10, batch 32, lr 0.1,
# partition dirichlet:0.3, --compress none | fp16 | lowrank:2 | lowrank:8.
# Runs are strictly sequential (never two runs at once).
#
#   scripts/compress-real.sh OUT_DIR      # ~16 runs, ~6 min on the 2-vCPU sandbox (llvmpipe)
#
# Block (a), equal rate: --rate-com 1, every codec, seeds from SEEDS_A (default "1 2").
# Block (b), about equal bytes: none at --rate-com 0.25 (BASE_RATE); every other codec at
#   BASE_RATE * (bytes per exchange of none) / (bytes per exchange of the codec), the bytes per
#   exchange measured in block (a) (mean of bytes_sent over the "exchange" events of
#   workers/rank*.jsonl, all (a) runs of that codec), capped at 4 (RATE_CAP); seeds SEEDS_B
#   (default "1 2"). The rates used are written to OUT_DIR/rates-b.tsv.
#
# Layout: OUT_DIR/a-<codec>-s<seed>/, OUT_DIR/b-<codec>-s<seed>/ (':' dropped from the codec);
# OUT_DIR/status.tsv records every run's exit status and wall seconds; a failed run is recorded,
# not hidden, and the script goes on. scripts/summarize-compress-real.py OUT_DIR prints the
# markdown tables. A2CID overrides the binary (default ./target/release/a2cid; copy it elsewhere
# if others may rebuild it while this runs).
set -uo pipefail

out=${1:?usage: scripts/compress-real.sh OUT_DIR}
bin=${A2CID:-./target/release/a2cid}
epochs=${EPOCHS:-200}
seeds_a=${SEEDS_A:-"1 2"}
seeds_b=${SEEDS_B:-"1 2"}
base_rate=${BASE_RATE:-0.25}
rate_cap=${RATE_CAP:-4}
codecs=(none fp16 lowrank:2 lowrank:8)
[[ -x $bin ]] || { echo "build first: cargo build --release ($bin missing)" >&2; exit 1; }
mkdir -p "$out"

common=(--workers 8 --graph ring --dataset digits --hidden 64 --batch-size 32 --lr 0.1
        --method acid --partition dirichlet:0.3 --epochs "$epochs" --no-progress)

run_one() { # name, then the run's flags
    local name=$1; shift
    local dir=$out/$name
    if [[ -f $dir/summary.json ]]; then echo "skip $name (done)"; return; fi
    rm -rf "$dir"
    echo "== $name: $bin run ${common[*]} $* --out $dir"
    local t0=$SECONDS
    "$bin" run "${common[@]}" "$@" --out "$dir" < /dev/null > "$out/$name.log" 2>&1
    local rc=$?
    printf '%s\t%s\t%ss\t%s\n' "$name" "$rc" "$((SECONDS - t0))" "$*" >> "$out/status.tsv"
    [[ $rc == 0 ]] || { echo "FAILED $name (exit $rc), see $out/$name.log"; tail -5 "$out/$name.log"; }
}

# (a) equal rate
for seed in $seeds_a; do
    for c in "${codecs[@]}"; do
        run_one "a-${c/:/}-s$seed" --compress "$c" --rate-com 1 --seed "$seed"
    done
done

# rates for (b) from the bytes per exchange measured in (a)
python3 - "$out" "$base_rate" "$rate_cap" "${codecs[@]}" > "$out/rates-b.tsv" <<'PY' || { echo "no rates for (b)" >&2; exit 1; }
import glob, json, sys
out, base, cap, codecs = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4:]
def bpe(c):
    n = s = 0
    for f in glob.glob(f"{out}/a-{c.replace(':', '')}-s*/workers/rank*.jsonl"):
        for line in open(f):
            if '"event":"exchange"' in line:
                s += json.loads(line)["bytes_sent"]; n += 1
    if n == 0:
        sys.exit(f"no exchanges measured for {c}")
    return s / n
b0 = bpe("none")
for c in codecs:
    b = bpe(c)
    r = min(cap, base * b0 / b)
    print(f"{c}\t{r:.3f}\t{b:.1f}")
PY
cat "$out/rates-b.tsv"

# (b) about equal bytes
for seed in $seeds_b; do
    while IFS=$'\t' read -r c r _; do
        run_one "b-${c/:/}-s$seed" --compress "$c" --rate-com "$r" --seed "$seed"
    done < "$out/rates-b.tsv"
done
echo "done: $(awk -F'\t' '$2 != 0' "$out/status.tsv" | wc -l) failed of $(wc -l < "$out/status.tsv")"
