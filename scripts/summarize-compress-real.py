#!/usr/bin/env python3
"""Markdown tables for scripts/compress-real.sh OUT_DIR (docs/results.md §8).

Rows: one per block ((a) equal rate, (b) about equal bytes) and codec, mean over the seeds
present. Accuracies are truncated (not rounded) to 0.01 points; MB = 10^6 bytes, truncated.
  bytes / exchange: mean of bytes_sent over the "exchange" events of workers/rank*.jsonl
                    (min-max over the events in brackets when they differ)
  MB sent / worker: mean over workers of workers/rank*.json bytes_sent (everything the worker
                    sent, exchanges and the rest)
  B / gradient:     all workers' bytes_sent over summary.json total_grads
  averagings:       mean over workers of per_worker[].comms
  consensus:        summary.json consensus.second_half.value
  acc.:             summary.json test_accuracy (averaged model), mean ± sample sd and per seed
  own acc.:         mean over workers of per_worker[].test_accuracy
  wall s:           summary.json wall_seconds
"""
import glob, json, math, os, re, statistics, sys

out = sys.argv[1]
CODECS = ["none", "fp16", "lowrank8", "lowrank2"]
LABEL = {"none": "none", "fp16": "fp16", "lowrank8": "lowrank:8", "lowrank2": "lowrank:2"}


def trunc(x, d=2):
    f = 10 ** d
    return math.floor(x * f + 1e-9) / f


def load(d):
    s = json.load(open(f"{d}/summary.json"))
    ranks = [json.load(open(f)) for f in sorted(glob.glob(f"{d}/workers/rank*.json"))]
    ex = []
    for f in glob.glob(f"{d}/workers/rank*.jsonl"):
        for line in open(f):
            if '"event":"exchange"' in line:
                ex.append(json.loads(line)["bytes_sent"])
    cmd = open(f"{d}/config.toml").read() if os.path.exists(f"{d}/config.toml") else ""
    total_bytes = sum(r["bytes_sent"] for r in ranks)
    return {
        "asked": s["rates"]["asked_rate"],
        "achieved": s["rates"]["achieved_rate"],
        "bpe": statistics.mean(ex), "bpe_min": min(ex), "bpe_max": max(ex),
        "mb": total_bytes / len(ranks) / 1e6,
        "bpg": total_bytes / s["total_grads"],
        "comms": statistics.mean(w["comms"] for w in s["per_worker"]),
        "cons": s["consensus"]["second_half"]["value"],
        "acc": 100 * s["test_accuracy"],
        "own": 100 * statistics.mean(w["test_accuracy"] for w in s["per_worker"]),
        "grads": s["total_grads"],
        "wall": s["wall_seconds"],
    }


def fmt_g(x):
    return f"{x:.3g}"


for block, title in [("a", "(a) equal rate"), ("b", "(b) about equal bytes")]:
    print(f"### {title}\n")
    print("| codec | asked rate | achieved rate | seeds | bytes / exchange | MB sent / worker | "
          "B sent / gradient | averagings / worker | consensus dist. (2nd half) | "
          "averaged-model acc. % (mean ± sd; per seed) | mean own-model acc. % | total gradients | wall s |")
    print("|---|--:|--:|---|--:|--:|--:|--:|--:|---|--:|--:|--:|")
    for c in CODECS:
        runs = {}
        for d in sorted(d for d in glob.glob(f"{out}/{block}-{c}-s*") if os.path.isdir(d)):
            if not os.path.exists(f"{d}/summary.json"):
                continue
            runs[int(re.search(r"-s(\d+)$", d).group(1))] = load(d)
        if not runs:
            continue
        seeds = sorted(runs)
        m = lambda k: statistics.mean(runs[s][k] for s in seeds)
        accs = [runs[s]["acc"] for s in seeds]
        sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
        lo = min(runs[s]["bpe_min"] for s in seeds)
        hi = max(runs[s]["bpe_max"] for s in seeds)
        bpe = f"{m('bpe'):.0f}" + ("" if lo == hi else f" ({lo}–{hi})")
        per_seed = ", ".join(f"s{s} {trunc(runs[s]['acc']):.2f}" for s in seeds)
        print(f"| {LABEL[c]} | {fmt_g(m('asked'))} | {trunc(m('achieved')):.2f} | "
              f"{','.join(map(str, seeds))} | {bpe} | {trunc(m('mb')):.2f} | {m('bpg'):.0f} | "
              f"{m('comms'):.0f} | {fmt_g(m('cons'))} | {trunc(statistics.mean(accs)):.2f} ± "
              f"{trunc(sd):.2f} ({per_seed}) | {trunc(m('own')):.2f} | {m('grads'):.0f} | "
              f"{trunc(m('wall'), 1):.1f} |")
    print()
    print("Per seed (consensus, MB sent / worker, achieved rate, wall s):\n")
    for c in CODECS:
        ds = sorted(d for d in glob.glob(f"{out}/{block}-{c}-s*") if os.path.isdir(d))
        parts = []
        for d in ds:
            if not os.path.exists(f"{d}/summary.json"):
                parts.append(f"{os.path.basename(d)} no summary (failed?)")
                continue
            r = load(d)
            seed = re.search(r"-s(\d+)$", d).group(1)
            parts.append(f"s{seed} {fmt_g(r['cons'])}, "
                         f"{trunc(r['mb']):.2f} MB, {trunc(r['achieved']):.2f}, {trunc(r['wall'], 1):.1f} s")
        if parts:
            print(f"- {LABEL[c]}: " + "; ".join(parts))
    print()
