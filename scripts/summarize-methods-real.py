#!/usr/bin/env python3
"""Markdown table of scripts/methods-real.sh's runs (docs/results.md §7).

    scripts/summarize-methods-real.py OUT_DIR

One row per (method, partition[, budget]) over the seeds found: averaged-model test accuracy
(mean ± sample standard deviation, then min–max over seeds), mean over workers of their own
model's accuracy, consensus distance over the second half of the run (the sketches' estimate),
bytes sent per worker (workers/rank*.json bytes_sent, MB = 10^6 bytes; for allreduce/lasgd,
whose ring all-reduce the runtime did not count, computed from the rounds and marked *;
relaysum's, relay messages and collectives included, are measured), averagings per worker
(per_worker[].comms: pairwise averagings for acid/gossip, all-reduces for allreduce/lasgd, relay
rounds for relaysum), total gradients (all workers) and the run's wall time. Accuracies are
truncated (never rounded up) to two decimals of a percent, and so are the other numbers (loss,
consensus to 3 significant digits, MB, averagings, gradients, wall time). Failed runs (status.tsv exit status
!= 0 or no summary.json) are listed.
"""
import decimal
import glob
import json
import math
import os
import re
import statistics
import sys

ORDER = ["acid", "gossip", "allreduce", "lasgd", "diloco", "relaysum"]
LABEL = {
    "acid": "acid (rate 1)",
    "gossip": "gossip (rate 1)",
    "allreduce": "allreduce",
    "lasgd": "lasgd H=10",
    "diloco": "DiLoCo H=10, nesterov:0.7,0.9",
    "relaysum": "relaysum (BFS tree)",
}


def trunc(x, d=2):
    f = 10 ** d
    return math.floor(x * f) / f


def down(x, fmt):
    """x written with fmt ("3f": 3 decimals, "3g": 3 significant digits, "0f": integer),
    truncated toward zero from its shortest decimal form, never rounded up."""
    d = decimal.Decimal(repr(float(x)))
    n = int(fmt[:-1])
    if fmt.endswith("g"):
        if d == 0:
            return "0"
        e = d.adjusted() - n + 1
        q = d.quantize(decimal.Decimal(1).scaleb(e), rounding=decimal.ROUND_DOWN)
        return f"{float(q):.{n}g}"
    q = d.quantize(decimal.Decimal(1).scaleb(-n), rounding=decimal.ROUND_DOWN)
    return f"{q:.{n}f}"


def pct(x):
    return f"{trunc(100 * x):.2f}"


def mean_sd(xs):
    m = statistics.mean(xs)
    sd = statistics.stdev(xs) if len(xs) > 1 else float("nan")
    return m, sd


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "runs/methods-real"
    groups = {}
    failed = []
    status = {}
    sfile = os.path.join(out, "status.tsv")
    if os.path.exists(sfile):
        for line in open(sfile):
            parts = line.rstrip("\n").split("\t")
            status[parts[0]] = parts
    for d in sorted(glob.glob(os.path.join(out, "*-s[0-9]*"))):
        if not os.path.isdir(d):
            continue
        name = os.path.basename(d)
        m = re.fullmatch(r"([a-z]+)-(iid|dirichlet[0-9.]+)(-budget)?-s(\d+)", name)
        if not m:
            continue
        method, part, budget, seed = m.group(1), m.group(2), bool(m.group(3)), int(m.group(4))
        sp = os.path.join(d, "summary.json")
        if name in status and status[name][1] != "0":
            failed.append((name, f"exit {status[name][1]}"))
            continue
        if not os.path.exists(sp):
            failed.append((name, "no summary.json (still running or killed)"))
            continue
        s = json.load(open(sp))
        ranks = [json.load(open(f)) for f in sorted(glob.glob(os.path.join(d, "workers", "rank*.json")))]
        pw = s["per_worker"]
        mb = statistics.mean(r["bytes_sent"] for r in ranks) / 1e6 if ranks else float("nan")
        computed = False
        if method in ("allreduce", "lasgd", "diloco") and mb == 0:
            # The runtime's bytes_sent counts the pairwise exchanges only, not the ring
            # all-reduce (a2cid-net's collectives keep their own CollStats, not reported). Its
            # payload per round and worker is 2 (n - 1) / n of the buffer (parameters or gradient,
            # plus one float, the stop vote), 4 bytes a float; headers not counted.
            n = s["workers"]
            per_round = 2 * (n - 1) / n * (s["parameters"] + 1) * 4
            mb = statistics.mean(w["comms"] for w in pw) * per_round / 1e6
            computed = True
        row = {
            "seed": seed,
            "acc": s["test_accuracy"],
            "loss": s["test_loss"],
            "own": statistics.mean(w["test_accuracy"] for w in pw),
            "cons": (s.get("consensus") or {}).get("second_half", {}).get("value"),
            "mb": mb,
            "computed": computed,
            "avg": statistics.mean(w["comms"] for w in pw),
            "grads": s["total_grads"],
            "wall": s["wall_seconds"],
            "rate": (s.get("rates") or {}).get("achieved_rate"),
        }
        groups.setdefault((part, budget, method), []).append(row)

    def key(k):
        part, budget, method = k
        return (part != "iid", budget, ORDER.index(method) if method in ORDER else 99)

    print("| method | partition | stop | seeds | averaged-model acc. % (mean ± sd; min–max) "
          "| averaged-model test loss | mean own-model acc. % | consensus dist. (2nd half) | MB sent / worker "
          "| averagings / worker | total gradients | wall s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for k in sorted(groups, key=key):
        part, budget, method = k
        rows = sorted(groups[k], key=lambda r: r["seed"])
        accs = [r["acc"] for r in rows]
        m, sd = mean_sd(accs)
        sd_s = f"{trunc(100 * sd):.2f}" if not math.isnan(sd) else "–"
        cons = [r["cons"] for r in rows if r["cons"] is not None]
        cons_s = down(statistics.mean(cons), "3g") if cons else "–"
        star = "*" if any(r["computed"] for r in rows) else ""
        partition = "dirichlet:0.3" if part.startswith("dirichlet") else part
        stop = "grad budget" if budget else "epochs"
        print(
            f"| {LABEL.get(method, method)} | {partition} | {stop} "
            f"| {','.join(str(r['seed']) for r in rows)} "
            f"| {pct(m)} ± {sd_s} ({pct(min(accs))}–{pct(max(accs))}) "
            f"| {down(statistics.mean(r['loss'] for r in rows), '3f')} "
            f"| {pct(statistics.mean(r['own'] for r in rows))} "
            f"| {cons_s} "
            f"| {down(statistics.mean(r['mb'] for r in rows), '2f')}{star} "
            f"| {down(statistics.mean(r['avg'] for r in rows), '0f')} "
            f"| {down(statistics.mean(r['grads'] for r in rows), '0f')} "
            f"| {down(statistics.mean(r['wall'] for r in rows), '1f')} |"
        )
    print()
    print("\\* computed, not measured: averagings (all-reduce rounds) × 2(n − 1)/n × (parameters + 1) × 4 B;"
          " the runtime's bytes_sent does not count the ring all-reduce.")
    print()
    print("Per seed (averaged-model accuracy %, total gradients, consensus distance):")
    print()
    for k in sorted(groups, key=key):
        part, budget, method = k
        rows = sorted(groups[k], key=lambda r: r["seed"])
        tag = f"{LABEL.get(method, method)}, {part}{' (grad budget)' if budget else ''}"
        print(f"- {tag}: " + ", ".join(f"s{r['seed']} {pct(r['acc'])} ({r['grads']} grads, consensus {down(r['cons'], '3g')})" for r in rows))
    if failed:
        print()
        print("Failed or unfinished runs: " + ", ".join(f"{n} ({why})" for n, why in failed))


if __name__ == "__main__":
    main()
