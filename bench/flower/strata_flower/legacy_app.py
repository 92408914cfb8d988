"""FedAvg through Flower's legacy workflow API, with or without SecAgg+ (run.py --secagg,
run.py --legacy-workflow).

Flower 1.42's secure aggregation exists only on the legacy side: `SecAggPlusWorkflow`
(flwr.server.workflow) is a fit workflow for `DefaultWorkflow`, which drives a legacy
`flwr.server.strategy.Strategy` through a `LegacyContext`, and its client half, the mod
`secaggplus_mod` (flwr.client.mod), reads the legacy FitIns/FitRes records. The message-API
strategies (flwr.serverapp.strategy, used by server_app.py) have no secure aggregation. So
this module is the same benchmark as server_app.py + client_app.py (same model, data,
training, evaluation, config, initial model), spoken in the legacy records:

- `make_server_app(settings, t_start, secagg)`: a ServerApp whose main runs
  `DefaultWorkflow(fit_workflow=...)` over `TimedLegacyFedAvg` (flwr.server.strategy.FedAvg,
  weighted by training samples). `secagg=None`: Flower's default fit workflow (the plain
  baseline on the same code path); otherwise `TimedSecAggPlusWorkflow` (SecAggPlusWorkflow
  with each of its four stages timed).
- `plain_client_app` / `secagg_client_app`: the same train and evaluate functions;
  the second with `secaggplus_mod` (wrapped to time the client's own share of the protocol
  and measure what it uploads).

Rows of the rounds file are server_app.py's (round, seconds, train_seconds, eval_seconds,
accuracy, ...) plus, under SecAgg+, `secagg` (per-stage seconds, the resolved neighbourhood
size and threshold, nodes still active after each stage, whether the protocol completed) and
the clients' own protocol seconds and upload sizes. A round's `seconds` runs from the strategy's
configure_fit (the first thing SecAgg+'s setup stage does) to aggregate_evaluate, as in
server_app.py: so under SecAgg+ `train_seconds` is all four stages, training included.
"""

import json
import random
import time
from dataclasses import dataclass

import numpy as np
import torch
from flwr.app import ConfigRecord, Context, Message
from flwr.client.mod import secaggplus_mod
from flwr.clientapp import ClientApp
from flwr.common import (
    Code,
    EvaluateRes,
    FitRes,
    Status,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key, Stage
from flwr.compat.common import recorddict_compat as compat
from flwr.server import LegacyContext, ServerConfig
from flwr.server.strategy import FedAvg
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
from flwr.serverapp import Grid, ServerApp

from . import task
from .server_app import Settings, _weighted


@dataclass
class SecAggSettings:
    """SecAggPlusWorkflow's parameters (Flower's names; ints are counts, floats fractions)."""

    num_shares: int | float = 7
    reconstruction_threshold: int | float = 5
    clipping_range: float = 8.0
    quantization_range: int = 1 << 22
    modulus_range: int = 1 << 32
    max_weight: float = 1000.0  # Flower's default
    timeout: float | None = None


# --- client ------------------------------------------------------------------------------

def _model(parameters) -> task.FedAvgCNN:
    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)
    model = task.FedAvgCNN()
    arrays = parameters_to_ndarrays(parameters)
    state = model.state_dict()
    if len(arrays) != len(state):
        raise ValueError(f"{len(arrays)} arrays for a model of {len(state)} tensors")
    # The aggregate comes back float64 from SecAgg+'s dequantization; the model is float32.
    model.load_state_dict({k: torch.tensor(np.asarray(a), dtype=torch.float32) for k, a in zip(state, arrays)})
    return model


def _ndarrays(model: torch.nn.Module) -> list[np.ndarray]:
    return [v.detach().cpu().numpy() for v in model.state_dict().values()]


def train(msg: Message, context: Context) -> Message:
    fitins = compat.recorddict_to_fitins(msg.content, keep_input=True)
    cfg = fitins.config
    client = int(context.node_config["partition-id"])
    model = _model(fitins.parameters)
    train_x, train_y, _, _ = task.client_data(str(cfg["split-file"]), client, str(cfg["data-dir"]))
    # Mini-batch order from (seed, round, client), as client_app.py.
    gen = torch.Generator().manual_seed(int(cfg["seed"]) * 1_000_003 + int(cfg["server-round"]) * 10_007 + client)
    t0 = time.perf_counter()
    loss = task.train(model, train_x, train_y, float(cfg["lr"]), int(cfg["batch-size"]), int(cfg["local-epochs"]), gen)
    metrics = {"train-loss": loss, "train-seconds": time.perf_counter() - t0, "num-examples": len(train_y)}
    fitres = FitRes(Status(Code.OK, ""), ndarrays_to_parameters(_ndarrays(model)), len(train_y), metrics)
    return Message(compat.fitres_to_recorddict(fitres, keep_input=False), reply_to=msg)


def evaluate(msg: Message, context: Context) -> Message:
    evalins = compat.recorddict_to_evaluateins(msg.content, keep_input=True)
    cfg = evalins.config
    client = int(context.node_config["partition-id"])
    model = _model(evalins.parameters)
    _, _, test_x, test_y = task.client_data(str(cfg["split-file"]), client, str(cfg["data-dir"]))
    accuracy, loss = task.evaluate(model, test_x, test_y, int(cfg["eval-batch"]))
    res = EvaluateRes(Status(Code.OK, ""), float(loss), len(test_y),
                      {"accuracy": accuracy, "eval-loss": loss, "num-examples": len(test_y)})
    return Message(compat.evaluateres_to_recorddict(res), reply_to=msg)


_TIMING = "strata.secagg-timing"


def _upload_bytes(record: ConfigRecord) -> int:
    """Bytes of the bytes values in a SecAgg+ reply (keys, ciphertexts, shares, masked arrays)."""
    total = 0
    for value in record.values():
        items = value if isinstance(value, list) else [value]
        total += sum(len(v) for v in items if isinstance(v, bytes))
    return total


def timed_secaggplus_mod(msg: Message, ctxt: Context, call_next) -> Message:
    """Flower's `secaggplus_mod`, unchanged, with the client's protocol time and upload measured.

    Its seconds (the whole mod, less the training it calls in the masked-vector stage) and the
    bytes values it uploads, summed over the setup, share-keys and masked-vector stages, go
    into the masked-vector stage's FitRes metrics as `secagg-client-seconds`,
    `secagg-mask-seconds` (that stage alone: quantizing and masking), `secagg-masked-bytes`
    (the serialized masked vector) and `secagg-upload-bytes` (all three stages). The unmask
    stage (sending shares) comes after the FitRes and is not counted.
    """
    if msg.metadata.message_type != "train" or RECORD_KEY_CONFIGS not in msg.content.config_records:
        return secaggplus_mod(msg, ctxt, call_next)
    stage = str(msg.content.config_records[RECORD_KEY_CONFIGS].get(Key.STAGE, ""))
    inner = 0.0

    def timed_next(m: Message, c: Context) -> Message:
        nonlocal inner
        t = time.perf_counter()
        out = call_next(m, c)
        inner += time.perf_counter() - t
        return out

    t0 = time.perf_counter()
    out = secaggplus_mod(msg, ctxt, timed_next)
    own = time.perf_counter() - t0 - inner
    if out.has_error() or stage == Stage.UNMASK:
        return out
    sent = _upload_bytes(out.content.config_records[RECORD_KEY_CONFIGS])
    if stage == Stage.SETUP:
        ctxt.state.config_records[_TIMING] = ConfigRecord({"seconds": own, "bytes": sent})
        return out
    timing = ctxt.state.config_records.get(_TIMING) or ConfigRecord({"seconds": 0.0, "bytes": 0})
    seconds, uploaded = float(timing["seconds"]) + own, int(timing["bytes"]) + sent
    if stage == Stage.SHARE_KEYS:
        ctxt.state.config_records[_TIMING] = ConfigRecord({"seconds": seconds, "bytes": uploaded})
        return out
    metrics = out.content.config_records["fitres.metrics"]
    metrics["secagg-client-seconds"] = seconds
    metrics["secagg-mask-seconds"] = own
    metrics["secagg-masked-bytes"] = sent
    metrics["secagg-upload-bytes"] = uploaded
    return out


plain_client_app = ClientApp()
plain_client_app.train()(train)
plain_client_app.evaluate()(evaluate)

secagg_client_app = ClientApp()
secagg_client_app.train(mods=[timed_secaggplus_mod])(train)
secagg_client_app.evaluate()(evaluate)


# --- server ------------------------------------------------------------------------------

class TimedSecAggPlusWorkflow(SecAggPlusWorkflow):
    """SecAggPlusWorkflow with each stage timed; `last` describes the latest round."""

    STAGES = ("setup", "share_keys", "collect_masked_vectors", "unmask")

    def __call__(self, grid: Grid, context: Context) -> None:
        self.last = {"stage_seconds": {}, "active_after": {}, "completed": False}
        super().__call__(grid, context)

    def _timed(self, name, stage, grid, context, state) -> bool:
        t = time.perf_counter()
        ok = stage(grid, context, state)
        self.last["stage_seconds"][name] = time.perf_counter() - t
        self.last["active_after"][name] = len(state.active_node_ids)
        if name == "setup":
            self.last["sampled"] = len(state.sampled_node_ids)
            self.last["num_shares"] = state.num_shares  # as sent to the clients
            # The ring neighbourhood actually built (the node included): min(num_shares, sampled).
            self.last["neighbourhood"] = max((len(v) for v in state.nid_to_neighbours.values()), default=0)
            self.last["threshold"] = state.threshold
        if name == "unmask":
            self.last["completed"] = bool(ok)
        return ok

    def setup_stage(self, grid, context, state):
        return self._timed("setup", super().setup_stage, grid, context, state)

    def share_keys_stage(self, grid, context, state):
        return self._timed("share_keys", super().share_keys_stage, grid, context, state)

    def collect_masked_vectors_stage(self, grid, context, state):
        return self._timed("collect_masked_vectors", super().collect_masked_vectors_stage, grid, context, state)

    def unmask_stage(self, grid, context, state):
        return self._timed("unmask", super().unmask_stage, grid, context, state)


class TimedLegacyFedAvg(FedAvg):
    """flwr.server.strategy.FedAvg that only observes, writing server_app.py's rows."""

    def __init__(self, rounds_out: str, t_start: float, secagg: TimedSecAggPlusWorkflow | None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.rounds_out = rounds_out
        self.t_start = t_start
        self.secagg = secagg
        self.round_start = 0.0
        self.train_end: float | None = None
        self.train_stats: dict = {}
        open(rounds_out, "w").close()

    def configure_fit(self, server_round, parameters, client_manager):
        self.round_start = time.perf_counter()
        self.train_end = None
        self.train_stats = {}
        return super().configure_fit(server_round, parameters, client_manager)

    def aggregate_fit(self, server_round, results, failures):
        ok = [res.metrics for _, res in results]
        parameters, metrics = super().aggregate_fit(server_round, results, failures)
        if parameters is not None:
            # SecAgg+ hands FedAvg its float64 dequantized sum; the global model stays float32
            # (as in the plain runs), so that the next broadcast is the same size.
            arrays = parameters_to_ndarrays(parameters)
            if any(a.dtype != np.float32 for a in arrays):
                parameters = ndarrays_to_parameters([a.astype(np.float32) for a in arrays])
        self.train_end = time.perf_counter()
        self.train_stats = {
            "train_clients": len(ok),
            "train_errors": len(failures),
            "train_samples": int(sum(m["num-examples"] for m in ok)),
            "train_loss": _weighted((m["train-loss"], m["num-examples"]) for m in ok),
            "client_train_seconds": sum(m["train-seconds"] for m in ok),
        }
        if ok and "secagg-masked-bytes" in ok[0]:
            masked = [int(m["secagg-masked-bytes"]) for m in ok]
            self.train_stats.update({
                "client_secagg_seconds": sum(float(m["secagg-client-seconds"]) for m in ok),
                "client_mask_seconds": sum(float(m["secagg-mask-seconds"]) for m in ok),
                "masked_bytes_per_client": max(masked),
                "secagg_upload_bytes": sum(int(m["secagg-upload-bytes"]) for m in ok),
            })
        return parameters, metrics

    def aggregate_evaluate(self, server_round, results, failures):
        ok = [res.metrics for _, res in results]
        result = super().aggregate_evaluate(server_round, results, failures)
        end = time.perf_counter()
        train_end = self.train_end
        row = {
            "round": server_round,
            "seconds": end - self.round_start,
            "train_seconds": None if train_end is None else train_end - self.round_start,
            "eval_seconds": None if train_end is None else end - train_end,
            "accuracy": _weighted((m["accuracy"], m["num-examples"]) for m in ok),
            "eval_loss": _weighted((m["eval-loss"], m["num-examples"]) for m in ok),
            "eval_clients": len(ok),
            "eval_errors": len(failures),
            "eval_samples": int(sum(m["num-examples"] for m in ok)),
            **self.train_stats,
            "elapsed": end - self.t_start,
        }
        if self.secagg is not None:
            row["secagg"] = dict(getattr(self.secagg, "last", {"completed": False}))
        with open(self.rounds_out, "a") as f:
            f.write(json.dumps(row) + "\n")
        return result


def make_server_app(settings: Settings, t_start: float | None = None,
                    secagg: SecAggSettings | None = None) -> ServerApp:
    app = ServerApp()
    t_start = time.perf_counter() if t_start is None else t_start

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        random.seed(settings.seed)  # FedAvg samples nodes with `random.sample`
        torch.manual_seed(settings.seed)
        initial = ndarrays_to_parameters(_ndarrays(task.FedAvgCNN()))
        config = {
            "split-file": settings.split_file,
            "data-dir": settings.data_dir,
            "seed": settings.seed,
            "lr": settings.lr,
            "batch-size": settings.batch_size,
            "local-epochs": settings.local_epochs,
            "eval-batch": settings.eval_batch,
        }
        workflow = None
        if secagg is not None:
            workflow = TimedSecAggPlusWorkflow(
                num_shares=secagg.num_shares,
                reconstruction_threshold=secagg.reconstruction_threshold,
                max_weight=secagg.max_weight,
                clipping_range=secagg.clipping_range,
                quantization_range=secagg.quantization_range,
                modulus_range=secagg.modulus_range,
                timeout=secagg.timeout,
            )
        strategy = TimedLegacyFedAvg(
            settings.rounds_out,
            t_start,
            workflow,
            fraction_fit=settings.fraction_train,
            fraction_evaluate=settings.fraction_evaluate,
            # SecAgg+ needs two clients at least; FedAvg's own default minimum is 2 as well.
            min_fit_clients=2 if secagg is not None else 1,
            min_evaluate_clients=1,
            min_available_clients=settings.num_clients,
            on_fit_config_fn=lambda rnd: {**config, "server-round": rnd},
            on_evaluate_config_fn=lambda rnd: {**config, "server-round": rnd},
            initial_parameters=initial,
        )
        legacy = LegacyContext(context, config=ServerConfig(num_rounds=settings.rounds), strategy=strategy)
        DefaultWorkflow(fit_workflow=workflow)(grid, legacy)

    return app
