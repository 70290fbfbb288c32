#!/usr/bin/env python3
"""The PyTorch side of benches/vs_pytorch.sh: the same model, optimizer, batch size, data,
thread count and epochs as benches/configs/{mlp,cnn}.toml, written as idiomatic eager
PyTorch over in-memory tensors. Prints one JSON object: samples/s of each epoch and the
wall time from process start to the end of the first training step.

Usage: pytorch_train.py {mlp|cnn} FASHION_MNIST_DIR
"""
import gzip
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

ARCH = {
    "mlp": dict(batch=64, epochs=5, opt="sgd", lr=0.01),
    "cnn": dict(batch=128, epochs=1, opt="adam", lr=0.001),
}


def process_start_unix() -> float:
    """When this process started, from /proc (Linux), so start-up time counts."""
    with open("/proc/self/stat") as f:
        start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
    with open("/proc/uptime") as f:
        uptime = float(f.read().split()[0])
    return time.time() - uptime + start_ticks / os.sysconf("SC_CLK_TCK")


def load(path: str, offset: int) -> np.ndarray:
    with gzip.open(path) as f:
        return np.frombuffer(f.read(), dtype=np.uint8, offset=offset)


class Cnn(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv0 = nn.Conv2d(1, 32, 3, padding=1, bias=False)
        self.bn0 = nn.BatchNorm2d(32)
        self.conv1 = nn.Conv2d(32, 64, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.fc = nn.Linear(64 * 7 * 7, 128)
        self.out = nn.Linear(128, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn0(self.conv0(x))), 2)
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        x = F.dropout(x.flatten(1), 0.25, self.training)
        x = F.dropout(F.relu(self.fc(x)), 0.25, self.training)
        return self.out(x)


def main() -> None:
    arch, data_dir = sys.argv[1], sys.argv[2]
    cfg = ARCH[arch]
    started = process_start_unix()
    torch.set_num_threads(2)
    torch.manual_seed(1)
    images = load(os.path.join(data_dir, "train-images-idx3-ubyte.gz"), 16).reshape(-1, 1, 28, 28)
    labels = load(os.path.join(data_dir, "train-labels-idx1-ubyte.gz"), 8)
    n = 54_000  # kiln trains on 90% of the 60,000 (10% held out for validation)
    x = torch.from_numpy(images[:n].astype(np.float32) / 255.0)
    x = (x - x.mean()) / x.std()
    y = torch.from_numpy(labels[:n].astype(np.int64))
    if arch == "mlp":
        model = nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))
    else:
        model = Cnn()
    if cfg["opt"] == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=cfg["lr"], momentum=0.9)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=cfg["lr"])
    model.train()
    first_step = None
    rates = []
    for _ in range(cfg["epochs"]):
        t0 = time.perf_counter()
        perm = torch.randperm(n)
        loss_sum, correct = 0.0, 0
        for i in range(0, n, cfg["batch"]):
            idx = perm[i : i + cfg["batch"]]
            xb, yb = x[idx], y[idx]
            opt.zero_grad()
            logits = model(xb)
            loss = F.cross_entropy(logits, yb)
            loss.backward()
            opt.step()
            # The same per-step bookkeeping kiln does (loss and accuracy for the progress bar).
            loss_sum += loss.item() * len(yb)
            correct += (logits.argmax(1) == yb).sum().item()
            if first_step is None:
                first_step = time.time() - started
        rates.append(n / (time.perf_counter() - t0))
    print(json.dumps({"samples_per_sec": rates, "seconds_to_first_step": first_step, "train_accuracy": correct / n}))


if __name__ == "__main__":
    main()
