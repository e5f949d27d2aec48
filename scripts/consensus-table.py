#!/usr/bin/env python3
"""Real runs grouped by (method, asked rate): achieved rate, consensus, accuracies over seeds.

Usage: scripts/consensus-table.py RUN_DIR [RUN_DIR ...] [--sim SIM_DIR]

Reads each run's summary.json (`a2cid run`), groups the runs by method and asked rate_com and
prints one Markdown row per group: seeds, achieved averagings per gradient per worker, the
consensus distance averaged over the second half of the run (from the workers' sketches), the
final test accuracy of the averaged model and the mean of the workers' own models, each as
mean ± standard deviation over the seeds. With --sim, the simulator's runs in SIM_DIR (its
summary.json files, `a2cid simulate --out`) add the simulated second-half consensus distance of
the same method and rate, and each group's consensus relative to gossip at rate 1.
"""
import json
import math
import os
import statistics
import sys


def mean_sd(values):
    if not values:
        return "-"
    m = statistics.fmean(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    scale = max(abs(m), 1e-12)
    digits = max(0, 2 - int(math.floor(math.log10(scale))))
    return f"{m:.{digits}f} ± {sd:.{digits}f}"


def real_groups(runs):
    groups = {}
    for run in runs:
        s = json.load(open(os.path.join(run, "summary.json")))
        key = (s["method"], s["rates"]["asked_rate"] if s.get("rates") else 0.0)
        g = groups.setdefault(key, {"rate": [], "cd": [], "avg": [], "own": [], "n": s["workers"]})
        if s.get("rates"):
            g["rate"].append(s["rates"]["achieved_rate"])
        if s.get("consensus"):
            g["cd"].append(s["consensus"]["second_half"]["value"])
        if s.get("test_accuracy") is not None:
            g["avg"].append(s["test_accuracy"])
        own = [w["test_accuracy"] for w in s["per_worker"] if w.get("test_accuracy") is not None]
        if own:
            g["own"].append(statistics.fmean(own))
    return groups


def sim_groups(folder):
    groups = {}
    for root, _, files in os.walk(folder):
        if "summary.json" not in files:
            continue
        data = json.load(open(os.path.join(root, "summary.json")))
        for s in data if isinstance(data, list) else [data]:
            if "consensus_distance" not in s:
                continue
            key = (s["method"], float(s["rate_com"]))
            groups.setdefault(key, []).append(s["consensus_distance"])
    return groups


def main(argv):
    sim = None
    if "--sim" in argv:
        i = argv.index("--sim")
        sim = sim_groups(argv[i + 1])
        argv = argv[:i] + argv[i + 2:]
    real = real_groups(argv)
    base_real = statistics.fmean(real[("gossip", 1.0)]["cd"]) if ("gossip", 1.0) in real else None
    base_sim = statistics.fmean(sim[("gossip", 1.0)]) if sim and ("gossip", 1.0) in sim else None
    head = "| method | asked rate | seeds | achieved rate | consensus distance (2nd half) | vs gossip@1 |"
    head += " averaged model acc. | own models acc. (mean) |"
    rule = "|---|--:|--:|--:|--:|--:|--:|--:|"
    if sim is not None:
        head += " simulator: consensus | simulator: vs gossip@1 |"
        rule += "--:|--:|"
    print(head)
    print(rule)
    for key in sorted(real, key=lambda k: (k[0] != "acid", k[1])):
        g = real[key]
        rel = f"{statistics.fmean(g['cd']) / base_real:.2f}" if base_real and g["cd"] else "-"
        row = (
            f"| {key[0]} | {key[1]:g} | {len(g['avg'])} | {mean_sd(g['rate'])} | {mean_sd(g['cd'])} "
            f"| {rel} | {mean_sd(g['avg'])} | {mean_sd(g['own'])} |"
        )
        if sim is not None:
            cds = sim.get(key, [])
            srel = f"{statistics.fmean(cds) / base_sim:.2f}" if base_sim and cds else "-"
            row += f" {mean_sd(cds)} | {srel} |"
        print(row)


if __name__ == "__main__":
    main(sys.argv[1:])
