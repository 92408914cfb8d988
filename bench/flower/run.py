#!/usr/bin/env python3
"""Runs Strata's Flower app (bench/flower/strata_flower) with Flower's Ray simulation.

    python run.py --split bench/fmnist-dir0.1-20clients-pfllib.json --rounds 5 \\
        --rounds-out w1-flower.jsonl [--fraction-train 1.0] [--fraction-evaluate 1.0] \\
        [--actors 2] [--summary-out FILE.json]

One virtual SuperNode per client of the split file (node i holds client i). `--actors` Ray
actors of one CPU each run the ClientApps; Ray is started with exactly that many CPUs.
Needs the virtualenv scripts/bench-flower.sh installs (flwr[simulation]==1.42.0, torch).
"""

import argparse
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

    from strata_flower.client_app import app as client_app
    from strata_flower.task import REPO_ROOT
    from strata_flower.server_app import Settings, make_server_app, settings_dict

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
    return 0


if __name__ == "__main__":
    sys.exit(main())
