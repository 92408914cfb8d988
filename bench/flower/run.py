#!/usr/bin/env python3
"""Runs Strata's Flower app (bench/flower/strata_flower) with Flower's Ray simulation.

    python run.py --split bench/fmnist-dir0.1-20clients-pfllib.json --rounds 5 \\
        --rounds-out w1-flower.jsonl [--fraction-train 1.0] [--fraction-evaluate 1.0] \\
        [--actors 2] [--summary-out FILE.json] [--secagg | --legacy-workflow]

One virtual SuperNode per client of the split file (node i holds client i). `--actors` Ray
actors of one CPU each run the ClientApps; Ray is started with exactly that many CPUs.
Needs the virtualenv scripts/bench-flower.sh installs (flwr[simulation]==1.42.0, torch).

Three modes, the same FedAvg round in each:
  (default)          flwr.serverapp.strategy.FedAvg, the message API (server_app.py,
                     client_app.py); what scripts/bench-flower.sh runs.
  --secagg           SecAgg+: flwr.server.workflow.DefaultWorkflow with SecAggPlusWorkflow over
                     the legacy flwr.server.strategy.FedAvg, and secaggplus_mod on the
                     ClientApp (strata_flower/legacy_app.py). Flower 1.42 has SecAgg+ only
                     on this legacy path. Its parameters: --num-shares,
                     --reconstruction-threshold, --clipping-range, --quantization-range,
                     --modulus-range, --max-weight.
  --legacy-workflow  the same legacy path without SecAgg+ (Flower's default fit workflow): the
                     matched baseline, so that secagg minus legacy-workflow is what SecAgg+
                     adds and nothing else.
"""

import argparse
import dataclasses
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)  # Flower hands sys.path to Ray's workers as PYTHONPATH


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--split", required=True, help="split file (JSON with clients[].train/test)")
    ap.add_argument("--rounds", type=int, required=True)
    ap.add_argument("--rounds-out", required=True, help="JSON lines, one per round")
    ap.add_argument("--summary-out", help="JSON: settings, versions, wall time")
    ap.add_argument("--fraction-train", type=float, default=1.0)
    ap.add_argument("--fraction-evaluate", type=float, default=1.0)
    ap.add_argument("--actors", type=int, default=2, help="Ray actors (one CPU each)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--lr", type=float, default=0.005)
    ap.add_argument("--batch-size", type=int, default=10)
    ap.add_argument("--local-epochs", type=int, default=1)
    ap.add_argument("--eval-batch", type=int, default=100)
    ap.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--secagg", action="store_true",
                      help="FedAvg under Flower's SecAgg+ (legacy DefaultWorkflow + SecAggPlusWorkflow)")
    mode.add_argument("--legacy-workflow", action="store_true",
                      help="FedAvg on the same legacy path without SecAgg+ (the baseline for --secagg)")
    sa = ap.add_argument_group("SecAgg+ (with --secagg; SecAggPlusWorkflow's parameters)")
    sa.add_argument("--num-shares", type=_count_or_fraction, default=7,
                    help="neighbourhood size k, the client included; a float is a fraction of the round's clients (7)")
    sa.add_argument("--reconstruction-threshold", type=_count_or_fraction, default=5,
                    help="shares needed to rebuild a secret; a float is a fraction of k (5)")
    sa.add_argument("--clipping-range", type=float, default=8.0, help="weighted values clipped to [-c, c] (8.0)")
    sa.add_argument("--quantization-range", type=int, default=1 << 22, help="values quantized to 0..Q-1 (4194304 = 2^22)")
    sa.add_argument("--modulus-range", type=int, default=1 << 32, help="mask ring size, a power of 2 (4294967296 = 2^32)")
    sa.add_argument("--max-weight", type=float, default=1000.0,
                    help="a client's weight is its training samples / max-weight (Flower's default 1000)")
    sa.add_argument("--secagg-timeout", type=float, default=None,
                    help="seconds to wait for each stage's replies (default: wait for all)")
    args = ap.parse_args()

    # The benchmark runs offline: no usage reports from Flower or Ray (each would try the network).
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    t_start = time.perf_counter()
    # Import after the clock starts: importing flwr, ray and torch is part of the run.
    import flwr
    import ray
    import torch
    from flwr.simulation import run_simulation

    from strata_flower.task import REPO_ROOT
    from strata_flower.server_app import Settings, settings_dict

    if args.secagg or args.legacy_workflow:
        from strata_flower import legacy_app

        secagg = None
        if args.secagg:
            secagg = legacy_app.SecAggSettings(
                num_shares=args.num_shares,
                reconstruction_threshold=args.reconstruction_threshold,
                clipping_range=args.clipping_range,
                quantization_range=args.quantization_range,
                modulus_range=args.modulus_range,
                max_weight=args.max_weight,
                timeout=args.secagg_timeout,
            )
        client_app = legacy_app.secagg_client_app if args.secagg else legacy_app.plain_client_app

        def make_server_app(settings, t_start):
            return legacy_app.make_server_app(settings, t_start, secagg)
    else:
        secagg = None
        from strata_flower.client_app import app as client_app
        from strata_flower.server_app import make_server_app

    with open(args.split) as f:
        num_clients = len(json.load(f)["clients"])
    settings = Settings(
        split_file=os.path.relpath(os.path.abspath(args.split), REPO_ROOT),
        rounds=args.rounds,
        # The ServerApp runs in this process, in this directory.
        rounds_out=args.rounds_out,
        fraction_train=args.fraction_train,
        fraction_evaluate=args.fraction_evaluate,
        num_clients=num_clients,
        seed=args.seed,
        lr=args.lr,
        batch_size=args.batch_size,
        local_epochs=args.local_epochs,
        eval_batch=args.eval_batch,
        data_dir=args.data_dir,
    )
    torch.set_num_threads(1)  # the ServerApp only initialises and averages
    backend_config = {
        "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
        "init_args": {"num_cpus": args.actors, "num_gpus": 0},
    }
    run_simulation(
        server_app=make_server_app(settings, t_start),
        client_app=client_app,
        num_supernodes=num_clients,
        backend_config=backend_config,
    )
    wall = time.perf_counter() - t_start

    with open(settings.rounds_out) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    if args.summary_out:
        summary = {
            "settings": settings_dict(settings),
            "mode": "secagg" if args.secagg else "legacy-workflow" if args.legacy_workflow else "message-api",
            "secagg": None if secagg is None else dataclasses.asdict(secagg),
            "actors": args.actors,
            "backend_config": backend_config,
            "versions": {"flwr": flwr.__version__, "ray": ray.__version__, "torch": torch.__version__,
                         "python": sys.version.split()[0]},
            "rounds_completed": len(rows),
            "wall_seconds": wall,
            "first_round_started_after_seconds": (rows[0]["elapsed"] - rows[0]["seconds"]) if rows else None,
        }
        with open(args.summary_out, "w") as f:
            json.dump(summary, f, indent=2)
            f.write("\n")
    if len(rows) != args.rounds:
        print(f"run.py: {len(rows)} of {args.rounds} rounds recorded in {settings.rounds_out}", file=sys.stderr)
        return 1
    halted = [r["round"] for r in rows if "secagg" in r and not r["secagg"].get("completed")]
    if halted:
        # SecAggPlusWorkflow logs "Secure aggregation halted." and leaves the model as it was.
        print(f"run.py: SecAgg+ did not complete in round(s) {halted} ({settings.rounds_out})", file=sys.stderr)
        return 1
    return 0


def _count_or_fraction(text: str) -> int | float:
    """Flower's int-or-float parameters: "7" is a count, "0.5" a fraction."""
    return float(text) if any(c in text for c in ".eE") else int(text)


if __name__ == "__main__":
    sys.exit(main())
