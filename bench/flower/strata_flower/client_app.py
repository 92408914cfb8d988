"""The ClientApp: trains or evaluates the model a message carries on this node's share of the split.

Node `partition-id` (Flower's simulation gives node i partition i) is client i of the split
file. The server's config record names the split file, the data directory and the
hyper-parameters, so the app needs no settings of its own. Each Ray actor reads the dataset
(uint8, 55 MB) and the split file once and keeps them; a client's float tensors are built
per message from them, as a data loader would.
"""

import time

import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from . import task

app = ClientApp()


def _setup(msg: Message, context: Context):
    # One libtorch thread per actor, as Strata gives each of its concurrent clients.
    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)
    cfg = msg.content["config"]
    client = int(context.node_config["partition-id"])
    model = task.FedAvgCNN()
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    return cfg, client, model


@app.train()
def train(msg: Message, context: Context) -> Message:
    cfg, client, model = _setup(msg, context)
    train_x, train_y, _, _ = task.client_data(str(cfg["split-file"]), client, str(cfg["data-dir"]))
    # Mini-batch order from (seed, round, client): reproducible, different per client and round.
    gen = torch.Generator().manual_seed(int(cfg["seed"]) * 1_000_003 + int(cfg["server-round"]) * 10_007 + client)
    t0 = time.perf_counter()
    loss = task.train(model, train_x, train_y, float(cfg["lr"]), int(cfg["batch-size"]), int(cfg["local-epochs"]), gen)
    metrics = {"train-loss": loss, "train-seconds": time.perf_counter() - t0, "num-examples": len(train_y)}
    content = RecordDict({"arrays": ArrayRecord(model.state_dict()), "metrics": MetricRecord(metrics)})
    return Message(content=content, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    cfg, client, model = _setup(msg, context)
    _, _, test_x, test_y = task.client_data(str(cfg["split-file"]), client, str(cfg["data-dir"]))
    accuracy, loss = task.evaluate(model, test_x, test_y, int(cfg["eval-batch"]))
    metrics = {"accuracy": accuracy, "eval-loss": loss, "num-examples": len(test_y)}
    return Message(content=RecordDict({"metrics": MetricRecord(metrics)}), reply_to=msg)
