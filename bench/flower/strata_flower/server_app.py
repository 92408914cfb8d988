"""The ServerApp: Flower's own message-API FedAvg (flwr.serverapp.strategy.FedAvg), timed.

Each round, as Flower's `Strategy.start` runs it: sample `fraction_train` of the nodes, send
them the global model, aggregate their models weighted by training samples (`num-examples`),
then sample `fraction_evaluate` of the nodes and have them evaluate the aggregated model.
`TimedFedAvg` only observes: it stamps the round's start (configure_train) and end
(aggregate_evaluate) and writes one JSON line per round:

  round, seconds (train + evaluate, what Strata's `seconds` covers), train_seconds,
  eval_seconds, accuracy (the evaluating clients' accuracies weighted by their test samples),
  eval_clients, eval_samples, train_clients, train_samples, train_loss (weighted by train
  samples), elapsed (seconds since the ServerApp started).

Round r's accuracy is the model after r aggregations: Strata's row r of rounds.jsonl.
"""

import json
import random
import time
from dataclasses import asdict, dataclass

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from . import task


@dataclass
class Settings:
    split_file: str
    rounds: int
    rounds_out: str
    fraction_train: float = 1.0
    fraction_evaluate: float = 1.0
    num_clients: int = 20
    seed: int = 1
    lr: float = 0.005
    batch_size: int = 10
    local_epochs: int = 1
    eval_batch: int = 100
    data_dir: str = task.DEFAULT_DATA_DIR


def _weighted(pairs):
    pairs = list(pairs)
    weight = sum(w for _, w in pairs)
    return sum(v * w for v, w in pairs) / weight if weight else None


class TimedFedAvg(FedAvg):
    def __init__(self, rounds_out: str, t_start: float, **kwargs) -> None:
        super().__init__(**kwargs)
        self.rounds_out = rounds_out
        self.t_start = t_start
        self.round_start = self.train_end = 0.0
        self.train_stats: dict = {}
        open(rounds_out, "w").close()

    def configure_train(self, server_round, arrays, config, grid):
        self.round_start = time.perf_counter()
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round, replies):
        replies = list(replies)
        ok = [m.content["metrics"] for m in replies if not m.has_error()]
        result = super().aggregate_train(server_round, replies)
        self.train_end = time.perf_counter()
        self.train_stats = {
            "train_clients": len(ok),
            "train_errors": len(replies) - len(ok),
            "train_samples": int(sum(m["num-examples"] for m in ok)),
            "train_loss": _weighted((m["train-loss"], m["num-examples"]) for m in ok),
            "client_train_seconds": sum(m["train-seconds"] for m in ok),
        }
        return result

    def aggregate_evaluate(self, server_round, replies):
        replies = list(replies)
        ok = [m.content["metrics"] for m in replies if not m.has_error()]
        result = super().aggregate_evaluate(server_round, replies)
        end = time.perf_counter()
        row = {
            "round": server_round,
            "seconds": end - self.round_start,
            "train_seconds": self.train_end - self.round_start,
            "eval_seconds": end - self.train_end,
            "accuracy": _weighted((m["accuracy"], m["num-examples"]) for m in ok),
            "eval_loss": _weighted((m["eval-loss"], m["num-examples"]) for m in ok),
            "eval_clients": len(ok),
            "eval_errors": len(replies) - len(ok),
            "eval_samples": int(sum(m["num-examples"] for m in ok)),
            **self.train_stats,
            "elapsed": end - self.t_start,
        }
        with open(self.rounds_out, "a") as f:
            f.write(json.dumps(row) + "\n")
        return result


def make_server_app(settings: Settings, t_start: float | None = None) -> ServerApp:
    app = ServerApp()
    t_start = time.perf_counter() if t_start is None else t_start

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        random.seed(settings.seed)  # FedAvg samples nodes with `random.sample`
        torch.manual_seed(settings.seed)
        initial = ArrayRecord(task.FedAvgCNN().state_dict())
        config = ConfigRecord({
            "split-file": settings.split_file,
            "data-dir": settings.data_dir,
            "seed": settings.seed,
            "lr": settings.lr,
            "batch-size": settings.batch_size,
            "local-epochs": settings.local_epochs,
            "eval-batch": settings.eval_batch,
        })
        strategy = TimedFedAvg(
            settings.rounds_out,
            t_start,
            fraction_train=settings.fraction_train,
            fraction_evaluate=settings.fraction_evaluate,
            min_train_nodes=1,
            min_evaluate_nodes=1,
            min_available_nodes=settings.num_clients,
        )
        strategy.start(
            grid=grid,
            initial_arrays=initial,
            num_rounds=settings.rounds,
            train_config=config,
            evaluate_config=ConfigRecord(dict(config)),
        )

    return app


def settings_dict(settings: Settings) -> dict:
    return asdict(settings)
