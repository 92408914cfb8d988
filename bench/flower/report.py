#!/usr/bin/env python3
"""Writes DIR/results.md from the files scripts/bench-flower.sh leaves in DIR/raw/:

  {w}-flower-rounds.jsonl   one line per Flower round r = 1..R (bench/flower/strata_flower/server_app.py)
  {w}-strata-rounds.jsonl   Strata's rounds.jsonl: rows r = 0..R, row R evaluation only
  {w}-{side}-memory.json    memwatch.py's summary (peak PSS / RSS sums of the process tree)
  {w}-{side}-run.json       what the script knew of the run: command, load average, versions

for the workloads w in w1, w2 that have them. Standard library only.

Alignment. Both sides count accuracy on the model after k aggregations: Flower's round k
evaluates the model it just aggregated, Strata's row k evaluates the model its clients receive
at the start of round k. Timing: training round i is Flower's round i (train, then evaluate)
and Strata's row i-1 (evaluate as received, then train); the same work. "s/round" is the
median over training rounds 2..R (the first carries the start-up: Ray and its actors, the
clients' joining and data loading); Strata's last row, evaluation only, is not a training round.
"""

import argparse
import json
import os
import statistics
import sys

WORKLOADS = {
    "w1": "W1: 20 clients, PFLlib Dir(0.1) split, every client trains and evaluates every round",
    "w2": "W2: 1,000 IID clients (52 train / 18 test), 10% train and 10% evaluate per round",
}
SIDES = ("flower", "strata")


def jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def load_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def strata_accuracy(row):
    for key in ("global_accuracy", "personalized_accuracy"):
        if row.get(key) is not None:
            return row[key]
    return None


def normalize(side, rows):
    """{"acc": {k: accuracy of the model after k aggregations}, "train_s": {i: seconds of training round i}, ...}."""
    acc, train_s, extra = {}, {}, {}
    if side == "flower":
        for r in rows:
            acc[r["round"]] = r.get("accuracy")
            train_s[r["round"]] = r["seconds"]
        extra["rounds"] = len(rows)
    else:
        rows = sorted(rows, key=lambda r: r["round"])
        last = rows[-1]["round"] if rows else None
        for r in rows:
            acc[r["round"]] = strata_accuracy(r)
            # The last row of a finished run evaluates only (nothing picked to train, nothing aggregated).
            if r["round"] == last and not r.get("aggregated") and not r.get("reported"):
                extra["final_eval_seconds"] = r["seconds"]
            else:
                train_s[r["round"] + 1] = r["seconds"]
        extra["rounds"] = len(train_s)
    return {"acc": acc, "train_s": train_s, **extra}


def median_steady(train_s):
    """(median seconds, the rounds it covers as text) over training rounds 2..R (all if R = 1)."""
    rounds = sorted(train_s)
    steady = [i for i in rounds if i >= 2] or rounds
    if not steady:
        return None, "—"
    label = f"{steady[0]}..{steady[-1]}" if len(steady) > 1 else f"{steady[0]}"
    return statistics.median(train_s[i] for i in steady), label


def fmt(x, digits=2, scale=1.0, suffix=""):
    return "—" if x is None else f"{x * scale:.{digits}f}{suffix}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="the benchmark's directory (holds raw/)")
    ap.add_argument("--fact", action="append", default=[], metavar="KEY=VALUE",
                    help="a run-wide fact for the list under the title (date, machine, versions); repeatable")
    args = ap.parse_args()
    raw = os.path.join(args.out, "raw")

    o = ["# FedAvg: Flower 1.42 and Strata side by side\n"]
    for fact in args.fact:
        key, _, value = fact.partition("=")
        o.append(f"- {key}: {value}")
    if args.fact:
        o.append("")
    o.append(
        "Same model (PFLlib's FedAvgCNN), data (Fashion-MNIST, the same split file), SGD lr 0.005, "
        "batch 10, one local epoch, FedAvg weighted by training samples, evaluation batch 100, "
        "one libtorch thread per concurrent client. Runs one after the other, never at once. "
        "s/round: median over training rounds 2..R (the first round carries the start-up; with R = 1, "
        "round 1 itself). "
        "Peak PSS: the largest sum of proportional set sizes over the whole process tree (Ray's "
        "daemons and actors included), sampled every 0.5 s; the RSS sum counts shared pages once per "
        "process. Final accuracy: the model after R aggregations, weighted by the evaluating "
        "clients' test samples.\n"
    )
    o.append("| workload | side | rounds | s/round | median of rounds | rounds/min | peak PSS GiB | peak RSS sum GiB "
             "| final accuracy % | wall s |")
    o.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    details = []
    found = 0
    for w, title in WORKLOADS.items():
        data = {}
        for side in SIDES:
            path = os.path.join(raw, f"{w}-{side}-rounds.jsonl")
            if not os.path.exists(path):
                continue
            found += 1
            d = normalize(side, jsonl(path))
            d["mem"] = load_json(os.path.join(raw, f"{w}-{side}-memory.json")) or {}
            d["run"] = load_json(os.path.join(raw, f"{w}-{side}-run.json")) or {}
            data[side] = d
        for side, d in data.items():
            med, over = median_steady(d["train_s"])
            R = max(d["train_s"], default=0)
            final = d["acc"].get(R)
            mem = d["mem"]
            o.append(
                f"| {w.upper()} | {side.capitalize()} | {d['rounds']} | {fmt(med)} | {over} | "
                f"{fmt(None if not med else 60 / med)} | {fmt(mem.get('peak_pss_bytes'), 3, 2**-30)} | "
                f"{fmt(mem.get('peak_rss_bytes'), 3, 2**-30)} | {fmt(final, 2, 100)} | "
                f"{fmt(mem.get('wall_seconds'), 1)} |"
            )
        if not data:
            continue
        details.append(f"\n## {title}\n")
        for side, d in data.items():
            run = d["run"]
            details.append(f"- {side.capitalize()}: " + (f"`{run['command']}`" if run.get("command") else "(command not recorded)"))
            if run.get("load_before") or run.get("load_after"):
                details.append(f"  - load average (1, 5, 15 min) before: {run.get('load_before', '?')}; "
                               f"after: {run.get('load_after', '?')}")
            mem = d["mem"]
            if mem.get("peak_breakdown"):
                top = ", ".join(f"{p['name']} {p['pss_bytes'] / 2**20:.0f}" for p in mem["peak_breakdown"][:8])
                details.append(f"  - at the PSS peak ({mem.get('peak_processes', '?')} processes at most), MiB: {top}")
            if d.get("final_eval_seconds") is not None:
                details.append(f"  - Strata's final, evaluation-only row: {d['final_eval_seconds']:.2f} s")
        def per_round(caption, column, key, *scale):
            """One row per round, one column per side, of `key` (formatted by fmt(value, *scale))."""
            details.append(f"\n{caption}:\n")
            details.append(f"| {column} | " + " | ".join(s.capitalize() for s in data) + " |")
            details.append("|---:|" + "---:|" * len(data))
            for r in sorted(set().union(*(d[key] for d in data.values()))):
                details.append(f"| {r} | " + " | ".join(fmt(d[key].get(r), *scale) for d in data.values()) + " |")

        per_round("Accuracy % of the global model after k aggregations (Flower: round k's evaluation; "
                  "Strata: row k)", "k", "acc", 2, 100)
        per_round("Seconds per training round (Flower: round i, training then evaluation; Strata: row i-1, "
                  "evaluation then training)", "i", "train_s")
    if not found:
        print(f"report.py: no {{w1,w2}}-{{flower,strata}}-rounds.jsonl in {raw}", file=sys.stderr)
        return 1
    o.extend(details)
    text = "\n".join(o) + "\n"
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(text)
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
