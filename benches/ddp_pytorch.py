#!/usr/bin/env python3
"""The PyTorch side of benches/ddp.sh: the MLP or CNN of benches/configs, trained with
DistributedDataParallel on the gloo backend when started by torchrun (one process and no
DDP otherwise), one thread per process, over in-memory Fashion-MNIST tensors sharded as
DistributedSampler does (the epoch's seeded permutation, rank r taking r::world).
Rank 0 prints one JSON object: global samples/s of each epoch, and the time of a bare
allreduce of a buffer the size of the model's gradients (gloo, the same process group).

Usage: ddp_pytorch.py {mlp|cnn} FASHION_MNIST_DIR BATCH_PER_RANK EPOCHS
"""
import json
import os
import sys
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pytorch_train import Cnn, load  # noqa: E402


def main() -> None:
    arch, data_dir, batch, epochs = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    torch.set_num_threads(1)
    torch.manual_seed(1)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1:
        dist.init_process_group("gloo")
    images = load(os.path.join(data_dir, "train-images-idx3-ubyte.gz"), 16).reshape(-1, 1, 28, 28)
    labels = load(os.path.join(data_dir, "train-labels-idx1-ubyte.gz"), 8)
    n = 54_000  # as kiln: 90% of the 60,000 (10% held out for validation)
    x = torch.from_numpy(images[:n].astype(np.float32) / 255.0)
    x = (x - x.mean()) / x.std()
    y = torch.from_numpy(labels[:n].astype(np.int64))
    if arch == "mlp":
        model = nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))
        opt_kind, lr = "sgd", 0.01
    else:
        model = Cnn()
        opt_kind, lr = "adam", 0.001
    if world > 1:
        model = nn.parallel.DistributedDataParallel(model)
    if opt_kind == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    rates = []
    per_rank = -(-n // world)
    for epoch in range(epochs):
        g = torch.Generator().manual_seed(1000 + epoch)
        perm = torch.randperm(n, generator=g)
        if world > 1:
            perm = torch.cat([perm, perm[: per_rank * world - n]])[rank::world]
        t0 = time.perf_counter()
        loss_sum, correct = 0.0, 0
        for i in range(0, per_rank, batch):
            idx = perm[i : i + batch]
            xb, yb = x[idx], y[idx]
            opt.zero_grad()
            logits = model(xb)
            loss = F.cross_entropy(logits, yb)
            loss.backward()
            opt.step()
            # The per-step bookkeeping kiln does too (loss and accuracy for its progress bar).
            loss_sum += loss.item() * len(yb)
            correct += (logits.argmax(1) == yb).sum().item()
        rates.append(per_rank * world / (time.perf_counter() - t0))
    allreduce_ms = None
    if world > 1:
        params = sum(p.numel() for p in model.parameters())
        buf = torch.zeros(params)
        for _ in range(20):
            dist.all_reduce(buf)
        dist.barrier()
        t0 = time.perf_counter()
        reps = 200
        for _ in range(reps):
            dist.all_reduce(buf)
        allreduce_ms = (time.perf_counter() - t0) / reps * 1e3
        dist.destroy_process_group()
    if rank == 0:
        print(json.dumps({"samples_per_sec": rates, "bare_allreduce_ms": allreduce_ms, "world": world}))


if __name__ == "__main__":
    main()
