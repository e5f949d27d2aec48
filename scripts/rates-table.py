#!/usr/bin/env python3
"""Achieved averaging rates of real runs, from their summary.json files.

Usage: scripts/rates-table.py RUN_DIR [RUN_DIR ...]

One Markdown row per run: workers, asked rate, achieved rate (all workers, and its ratio to the
asked one), the per-edge coefficient of variation of the gaps between exchanges (1 for a Poisson
process), the largest Kolmogorov-Smirnov distance to the exponential of the asked rate against
its 5% critical value, and how far the per-edge counts are from the asked rate in Poisson
standard deviations.
"""
import json
import math
import sys


def row(run):
    s = json.load(open(f"{run}/summary.json"))
    r = s.get("rates")
    if not r:
        return f"| {run} | {s['workers']} | {s['method']} | - | - | - | - | - | - |"
    cvs, ks_over, zs = [], 0, []
    for e in r["edges"]:
        g = e.get("gaps")
        if not g:
            continue
        cvs.append(g["cv"])
        if g["ks"] > g["ks_critical"]:
            ks_over += 1
        span = g["events"] / g["achieved_rate"]
        expected = e["asked_rate"] * span
        zs.append((e["exchanges"] - expected) / math.sqrt(expected))
    asked, achieved = r["asked_rate"], r["achieved_rate"]
    return (
        f"| {s['workers']} | {s['method']} | {asked:g} | {achieved:.2f} | {achieved / asked:.2f} "
        f"| {min(cvs):.2f}–{max(cvs):.2f} | {ks_over}/{len(cvs)} "
        f"| {min(zs):+.1f}…{max(zs):+.1f} |"
    )


print("| n | method | asked | achieved | achieved / asked | per-edge CV | edges failing KS (5%) | per-edge counts (z) |")
print("|---|---|--:|--:|--:|--:|--:|--:|")
for run in sys.argv[1:]:
    print(row(run))
