#!/usr/bin/env python3
"""PyTorch's side of kiln's parity tests (tests/server/parity.rs), independent of kiln's code.

  forward PACKAGE INPUTS.json OUT.json
      Rebuilds the package's MLP or CNN in PyTorch from its manifest.json, loads its
      weights.safetensors with the `safetensors` library, and writes the logits of the
      inputs (samples as a dataset gives them, pixels in 0..1), normalised as the manifest
      says, in eval mode (dropout off, batch norm on its running statistics).

  classic FASHION_MNIST_DIR OUT_DIR
      The classic recipe: an MLP 784-128-10 trained with SGD on Fashion-MNIST (the first
      6,000 training images, one epoch, seed 0), saved as OUT_DIR/weights.safetensors with
      the tensor names kiln's MLP uses, and the softmax of the first 32 test images as
      OUT_DIR/expected.json ({"inputs": [...], "probabilities": [...]}).
"""
import gzip
from collections import OrderedDict
import json
import os
import sys

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

torch.set_num_threads(1)


def build(spec):
    """The architecture kiln's model crate builds for `spec`, with the same layer names."""
    arch = spec["arch"]
    if arch == "mlp":
        act = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}[spec.get("activation", "relu")]
        layers, width = [("flatten", nn.Flatten())], int(np.prod(spec["input"]))
        for i, h in enumerate(spec["hidden"]):
            layers += [(f"fc{i}", nn.Linear(width, h)), (f"act{i}", act()), (f"drop{i}", nn.Dropout(spec["dropout"]))]
            width = h
        layers.append(("out", nn.Linear(width, spec["classes"])))
        return nn.Sequential(OrderedDict(layers))
    if arch == "cnn":
        cin, h, w = spec["input"]
        bn = spec["batch_norm"]
        layers = []
        for i, cout in enumerate(spec["channels"]):
            layers.append((f"conv{i}", nn.Conv2d(cin, cout, 3, padding=1, bias=not bn)))
            if bn:
                layers.append((f"bn{i}", nn.BatchNorm2d(cout)))
            layers += [(f"relu{i}", nn.ReLU()), (f"pool{i}", nn.MaxPool2d(2))]
            cin, h, w = cout, h // 2, w // 2
        layers += [
            ("flatten", nn.Flatten()),
            ("drop_a", nn.Dropout(spec["dropout"])),
            ("fc", nn.Linear(cin * h * w, spec["hidden"])),
            ("relu_fc", nn.ReLU()),
            ("drop_b", nn.Dropout(spec["dropout"])),
            ("out", nn.Linear(spec["hidden"], spec["classes"])),
        ]
        return nn.Sequential(OrderedDict(layers))
    raise SystemExit(f"parity: architecture {arch!r} is not rebuilt here")


def forward(package, inputs_path, out_path):
    manifest = json.load(open(os.path.join(package, "manifest.json")))
    spec = manifest["model"]
    model = build(spec)
    state = load_file(os.path.join(package, manifest["weights"]["file"]))
    # PyTorch's batch norm also counts batches; kiln's does not store that counter.
    for name, module in model.named_modules():
        if isinstance(module, nn.BatchNorm2d):
            state[f"{name}.num_batches_tracked"] = torch.tensor(0)
    model.load_state_dict(state, strict=True)
    model.eval()
    x = torch.tensor(json.load(open(inputs_path)), dtype=torch.float32)
    x = x.reshape([-1] + spec["input"])
    norm = manifest["input"].get("normalize")
    if norm:
        c = len(norm["mean"])
        mean = torch.tensor(norm["mean"]).reshape([1, c] + [1] * (x.dim() - 2))
        std = torch.tensor(norm["std"]).reshape([1, c] + [1] * (x.dim() - 2))
        if x.dim() == 2:  # one channel per feature
            mean, std = mean.reshape(1, c), std.reshape(1, c)
        x = (x - mean) / std
    with torch.no_grad():
        logits = model(x)
    json.dump({"logits": logits.tolist()}, open(out_path, "w"))


def idx(path):
    with gzip.open(path) as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def classic(data_dir, out_dir):
    torch.manual_seed(0)
    x = torch.tensor(idx(os.path.join(data_dir, "train-images-idx3-ubyte.gz"))[:6000], dtype=torch.float32) / 255.0
    y = torch.tensor(idx(os.path.join(data_dir, "train-labels-idx1-ubyte.gz"))[:6000], dtype=torch.int64)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for i in range(0, len(x), 64):
        opt.zero_grad()
        loss = loss_fn(model(x[i : i + 64]), y[i : i + 64])
        loss.backward()
        opt.step()
    model.eval()
    test = torch.tensor(idx(os.path.join(data_dir, "t10k-images-idx3-ubyte.gz"))[:32], dtype=torch.float32) / 255.0
    with torch.no_grad():
        probs = torch.softmax(model(test), dim=1)
    os.makedirs(out_dir, exist_ok=True)
    names = {"1.weight": "fc0.weight", "1.bias": "fc0.bias", "3.weight": "out.weight", "3.bias": "out.bias"}
    save_file({names[k]: v.contiguous() for k, v in model.state_dict().items()}, os.path.join(out_dir, "weights.safetensors"))
    json.dump(
        {"inputs": test.reshape(32, 784).tolist(), "probabilities": probs.tolist()},
        open(os.path.join(out_dir, "expected.json"), "w"),
    )


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "forward":
        forward(*sys.argv[2:])
    elif len(sys.argv) == 4 and sys.argv[1] == "classic":
        classic(*sys.argv[2:])
    else:
        raise SystemExit(__doc__)
