#!/usr/bin/env python3
"""Markdown tables of scripts/methods-sim.sh: per data setting and method, mean ± sd over seeds
(sample sd, as `a2cid simulate`'s summary_over_seeds.tsv) of the excess loss and consensus
distance (time averages over [T/2, T]), and the means of gradients, messages and bytes per
worker and wall seconds per run.

    scripts/summarize-methods-sim.py OUT_DIR            # scripts/methods-sim.sh (quadratic)
    scripts/summarize-methods-sim.py OUT_DIR model      # scripts/methods-sim-model.sh

The model tables (--problem model) give, per partition and method, mean ± sd over seeds of the
test accuracy of the average model x̄ and of the workers' own models (end of the run), the
final training loss (mean over workers, on the fixed evaluation subset), and the consensus
distance (time average over [T/2, T] and final).
"""
import csv
import json
import math
import statistics
import sys
from pathlib import Path

SETTINGS = {
    "hetero": "heterogeneous (--heterogeneity 1 --noise 1)",
    "iid": "iid (--heterogeneity 0 --noise 1)",
    "noise0": "exact gradients (--heterogeneity 1 --noise 0)",
}


def fmt_ms(xs):
    if any(math.isnan(x) for x in xs):
        return "NaN (diverged)"
    m = statistics.fmean(xs)
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{m:.3g} ± {sd:.2g}"


def label(block, row):
    if block.startswith(("lasgd", "diloco")):
        return block.split("-")[0], "H=" + block.split("-H")[1]
    if row["method"] in ("allreduce", "relaysum"):
        return row["method"], "1 round / unit"
    return row["method"], f"rate {row['rate_com']}"


def main(out):
    out = Path(out)
    for setting, title in SETTINGS.items():
        if not (out / setting).is_dir():
            continue
        groups = {}
        for summary in sorted((out / setting).glob("*/summary.csv")):
            with open(summary) as f:
                for row in csv.DictReader(f):
                    key = label(summary.parent.name, row)
                    groups.setdefault(key, []).append(row)
        print(f"\n### {title}, ring n = 16, T = 2000, seeds 0,1,2\n")
        print("| method | schedule | excess loss | consensus distance | gradients / worker "
              "| messages / worker | kB / worker | wall s / run |")
        print("|---|---|---|---|---|---|---|---|")
        order = ["allreduce", "gossip", "acid", "lasgd", "diloco", "relaysum", "dadao"]
        for key in sorted(groups, key=lambda k: (order.index(k[0]), float(k[1].split('=')[-1].split()[-1]) if k[1][-1].isdigit() else 0.0)):
            rows = groups[key]
            n = int(rows[0]["workers"])
            f = lambda c: [float(r[c]) for r in rows]
            print(f"| {key[0]} | {key[1]} | {fmt_ms(f('excess_loss'))} "
                  f"| {fmt_ms(f('consensus_distance'))} "
                  f"| {statistics.fmean(f('gradients')) / n:.0f} "
                  f"| {statistics.fmean(f('messages_per_worker')):.0f} "
                  f"| {statistics.fmean(f('bytes_per_worker')) / 1000:.0f} "
                  f"| {statistics.fmean(f('wall_seconds')):.2f} |")


PARTITIONS = {"iid": "iid", "dirichlet0.3": "dirichlet:0.3"}
ORDER = ["allreduce", "gossip", "acid", "lasgd", "diloco", "relaysum"]


def model_key(run):
    if run["method"] == "lasgd":
        return ("diloco" if run.get("outer") else "lasgd"), f"H={run['sync_every']}"
    if run["method"] in ("allreduce", "relaysum"):
        return run["method"], "1 round / unit"
    return run["method"], f"rate {run['rate_com']:g}"


def main_model(out):
    out = Path(out)
    for part, title in PARTITIONS.items():
        if not (out / part).is_dir():
            continue
        groups = {}
        for summary in sorted((out / part).glob("*/summary.json")):
            runs = json.loads(summary.read_text())
            for run in runs if isinstance(runs, list) else [runs]:
                groups.setdefault(model_key(run), []).append(run)
        any_run = next(iter(groups.values()))[0]
        seeds = sorted({r["seed"] for rs in groups.values() for r in rs})
        print(f"\n#### {title}, ring n = {any_run['workers']}, model problem, "
              f"T = {any_run['time']:g}, seeds {','.join(map(str, seeds))}\n")
        print("| method | schedule | test acc. of x̄ | mean test acc. of the x_i | final loss "
              "| consensus (T/2..T) | final consensus | gradients / worker | messages / worker "
              "| kB / worker | wall s / run |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for key in sorted(groups, key=lambda k: (ORDER.index(k[0]), k[1])):
            rows = groups[key]
            n = rows[0]["workers"]
            f = lambda c: [float("nan") if r[c] is None else float(r[c]) for r in rows]
            pct = lambda xs: [100 * x for x in xs]
            print(f"| {key[0]} | {key[1]} | {fmt_ms(pct(f('test_accuracy')))} % "
                  f"| {fmt_ms(pct(f('mean_worker_test_accuracy')))} % "
                  f"| {fmt_ms(f('final_loss'))} "
                  f"| {fmt_ms(f('consensus_distance'))} "
                  f"| {fmt_ms(f('final_consensus_distance'))} "
                  f"| {statistics.fmean(f('gradients')) / n:.0f} "
                  f"| {statistics.fmean(f('messages_per_worker')):.0f} "
                  f"| {statistics.fmean(f('bytes_per_worker')) / 1000:.0f} "
                  f"| {statistics.fmean(f('wall_seconds')):.1f} |")


if __name__ == "__main__":
    if sys.argv[2:] == ["model"]:
        main_model(sys.argv[1])
    else:
        main(sys.argv[1])
