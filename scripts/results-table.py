#!/usr/bin/env python3
"""Markdown tables of several `a2cid run` directories (docs/results.md is made with it).

    scripts/results-table.py runs/mnist-n4-acid-s0 runs/mnist-n4-gossip-s0 ...

Runs are grouped by (workers, method); each group's seeds are aggregated (mean, and the spread
where there are several). Reads only summary.json, workers/rank*.json and workers/rank*.jsonl.
"""
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

METHODS = ["acid", "gossip", "allreduce"]


def jsonl(path):
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            pass  # a line cut by a crash
    return out


def load(run):
    run = Path(run)
    s = json.loads((run / "summary.json").read_text())
    n = s["workers"]
    results = [json.loads((run / f"workers/rank{r}.json").read_text()) for r in range(n)]
    metrics = [jsonl(run / f"workers/rank{r}.jsonl") for r in range(n)]
    evals = defaultdict(list)  # step -> [(own accuracy, train wall)]
    ends = []
    dist = []  # (train wall, dist2)
    for m in metrics:
        for e in m:
            if e["event"] == "eval":
                evals[e["step"]].append((e["test_accuracy"], e["train_wall"]))
            elif e["event"] == "end":
                ends.append(e["train_wall"])
            elif e["event"] == "exchange":
                dist.append((e.get("train_wall", e["wall"]), e["dist2"]))
    end = max(ends)
    dist.sort()
    early = [d for t, d in dist if t <= end / 4]
    late = [d for t, d in dist if t >= end / 2]
    grads = [r["grads"] for r in results]
    comms = [r["comms"] for r in results]
    return {
        "n": n,
        "method": s["method"],
        "acc": 100 * s["test_accuracy"],
        "loss": s["test_loss"],
        "own": [100 * r["test_accuracy"] for r in results],
        "train_wall": end,
        "grads": sum(grads),
        "grads_range": (min(grads), max(grads)),
        # distinct pairwise averagings (each is counted by both workers), or all-reduces
        "comms": max(comms) if s["method"] == "allreduce" else sum(comms) // 2,
        "rate": sum(comms) / sum(grads),
        "missed": sum(r["missed"] for r in results),
        "final_loss": statistics.mean(r["final_train_loss"] for r in results),
        "step_ms": 1000 * statistics.mean(r["step_seconds"] for r in results),
        "eval_s": statistics.mean(r.get("eval_seconds", 0.0) for r in results),
        "evals": {k: v for k, v in evals.items() if len(v) == n},
        "dist_early": statistics.mean(early) if early else float("nan"),
        "dist_late": statistics.mean(late) if late else float("nan"),
    }


def ms(values, fmt="{:.2f}"):
    """mean, or mean ± sample standard deviation."""
    if len(values) == 1:
        return fmt.format(values[0])
    return (fmt + " ± " + fmt).format(statistics.mean(values), statistics.stdev(values))


def main(runs):
    groups = defaultdict(list)
    for r in runs:
        d = load(r)
        groups[(d["n"], d["method"])].append(d)
    keys = sorted(groups, key=lambda k: (k[0], METHODS.index(k[1]) if k[1] in METHODS else 9))

    print("| n | method | runs | test acc. averaged (%) | own acc. min–max (%) | train loss (final, mean) "
          "| training wall s | gradients (min–max per worker) | averagings | per gradient per worker "
          "| missed | step ms |")
    print("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    for k in keys:
        g = groups[k]
        own_lo = min(min(d["own"]) for d in g)
        own_hi = max(max(d["own"]) for d in g)
        print(
            f"| {k[0]} | {k[1]} | {len(g)} | {ms([d['acc'] for d in g])} | {own_lo:.2f}–{own_hi:.2f} "
            f"| {ms([d['final_loss'] for d in g], '{:.4f}')} | {ms([d['train_wall'] for d in g], '{:.1f}')} "
            f"| {statistics.mean(d['grads'] for d in g):,.0f} ({min(d['grads_range'][0] for d in g)}–"
            f"{max(d['grads_range'][1] for d in g)}) | {statistics.mean(d['comms'] for d in g):,.0f} "
            f"| {ms([d['rate'] for d in g])} | "
            + ("—" if k[1] == "allreduce" else f"{statistics.mean(d['missed'] for d in g):,.0f}")
            + f" | {statistics.mean(d['step_ms'] for d in g):.0f} |"
        )

    print()
    print("Own-model test accuracy (%, mean over workers and runs) and training wall time (s) at "
          "equal gradients per worker:")
    print()
    for n in sorted({k[0] for k in keys}):
        ks = [k for k in keys if k[0] == n]
        steps = sorted(set.intersection(*(set(d["evals"]) for k in ks for d in groups[k])))
        if not steps:
            continue
        stride = -(-len(steps) // 7)  # at most 7 columns, always ending at the last one
        steps = steps[::-1][::stride][::-1]
        print("| n = %d: gradients per worker | " % n + " | ".join(str(s) for s in steps) + " |")
        print("|---|" + "--:|" * len(steps))
        for k in ks:
            cells = []
            for s in steps:
                acc = statistics.mean(a for d in groups[k] for a, _ in d["evals"][s])
                wall = statistics.mean(w for d in groups[k] for _, w in d["evals"][s])
                cells.append(f"{100 * acc:.2f} ({wall:.0f} s)")
            print(f"| {k[1]} | " + " | ".join(cells) + " |")
        print()

    print("Neighbour disagreement ‖s_i − s_j‖² (mean over the exchanges of the first quarter and of "
          "the second half of the training time):")
    print()
    print("| n | method | first quarter | second half |")
    print("|---|---|--:|--:|")
    for k in keys:
        if k[1] == "allreduce":
            continue
        g = groups[k]
        print(f"| {k[0]} | {k[1]} | {ms([d['dist_early'] for d in g], '{:.3f}')} "
              f"| {ms([d['dist_late'] for d in g], '{:.4f}')} |")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
