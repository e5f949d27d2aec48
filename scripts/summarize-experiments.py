#!/usr/bin/env python3
"""Tables of an experiment grid (scripts/experiments.sh): per configuration and method, the mean
and spread over seeds of the averaged model's accuracy, the workers' own models' accuracy, the
consensus distance, the achieved averaging rate, the wall time and the time to each target.

    scripts/summarize-experiments.py RUNS_DIR [--markdown]
"""
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path


def mean_sd(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return None, None
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def fmt(m, sd, scale=1.0, digits=2):
    if m is None:
        return "—"
    return f"{m * scale:.{digits}f} ± {sd * scale:.{digits}f}"


def main():
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/experiments")
    groups = defaultdict(list)
    for s_path in sorted(root.glob("*/summary.json")):
        s = json.loads(s_path.read_text())
        # The seed from the run's name (scripts/experiments.sh: ...-s<seed>), to pair runs.
        seed = s_path.parent.name.rsplit("-s", 1)
        s["_seed"] = seed[1] if len(seed) == 2 else s_path.parent.name
        cfg = (s["workers"], s.get("partition", "iid"), s.get("worker_speeds", "homogeneous"))
        groups[(cfg, s["method"])].append(s)
    if not groups:
        sys.exit(f"no summary.json under {root}")
    order = {"acid": 0, "gossip": 1, "allreduce": 2, "local": 3}
    targets = sorted({t["target"] for runs in groups.values() for s in runs
                      for t in s.get("time_to_accuracy", [])})
    head = ["n", "partition", "speeds", "method", "seeds", "averaged acc %", "own acc %",
            "consensus (2nd half)", "achieved rate", "wall s"]
    head += [f"time to {100 * t:g}% (s)" for t in targets]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for (cfg, method) in sorted(groups, key=lambda k: (k[0], order.get(k[1], 9))):
        runs = groups[(cfg, method)]
        avg = mean_sd([s["test_accuracy"] for s in runs])
        own = mean_sd([statistics.fmean(w["test_accuracy"] for w in s["per_worker"]) for s in runs])
        cons = mean_sd([s["consensus"]["second_half"]["value"] if s.get("consensus") else None
                        for s in runs])
        rate = mean_sd([s["rates"]["achieved_rate"] if s.get("rates") else None for s in runs])
        wall = mean_sd([s["wall_seconds"] for s in runs])
        row = [str(cfg[0]), cfg[1], cfg[2], method, str(len(runs)), fmt(*avg, 100), fmt(*own, 100),
               "—" if cons[0] is None else f"{cons[0]:.3g} ± {cons[1]:.2g}",
               fmt(*rate), fmt(*wall, digits=1)]
        for t in targets:
            times = []
            for s in runs:
                hit = [x for x in s.get("time_to_accuracy", []) if x["target"] == t]
                times.append(hit[0]["train_wall"] if hit else None)
            reached = [x for x in times if x is not None]
            m, sd = mean_sd(reached)
            cell = fmt(m, sd, digits=1)
            if len(reached) < len(runs):
                cell += f" ({len(reached)}/{len(runs)} reached)"
            row.append(cell)
        print("| " + " | ".join(row) + " |")
    ratios(groups, targets)


def target_time(s, t):
    hit = [x for x in s.get("time_to_accuracy", []) if x["target"] == t]
    return hit[0]["train_wall"] if hit else None


def ratios(groups, targets):
    """acid's time to each target over allreduce's, per configuration: the ratio of the seed
    means, and each seed's own ratio (same seed, same shards and straggler)."""
    rows = []
    for (cfg, method) in sorted(groups):
        if method != "acid" or (cfg, "allreduce") not in groups:
            continue
        acid = {s["_seed"]: s for s in (groups[(cfg, "acid")])}
        ar = {s["_seed"]: s for s in (groups[(cfg, "allreduce")])}
        for t in targets:
            a = [target_time(s, t) for s in acid.values()]
            r = [target_time(s, t) for s in ar.values()]
            if any(x is None for x in a + r):
                rows.append((cfg, t, None, "not every run reached it"))
                continue
            per_seed = [target_time(acid[k], t) / target_time(ar[k], t)
                        for k in sorted(acid) if k in ar]
            rows.append((cfg, t, statistics.fmean(a) / statistics.fmean(r),
                         " ".join(f"{x:.2f}" for x in per_seed)))
    if not rows:
        return
    print()
    print("| n | partition | speeds | target | acid / allreduce time to target | per seed |")
    print("|---|---|---|---|---|---|")
    for cfg, t, ratio, per_seed in rows:
        cell = "—" if ratio is None else f"{ratio:.2f}"
        print(f"| {cfg[0]} | {cfg[1]} | {cfg[2]} | {100 * t:g}% | {cell} | {per_seed} |")


if __name__ == "__main__":
    main()
