#!/usr/bin/env python3
"""PyTorch's side of kiln's TorchScript tests (tests/server/torchscript.rs): models written
and trained in PyTorch, saved as TorchScript, and the answers PyTorch gives for them.

  classic FASHION_MNIST_DIR OUT_DIR
      The classic recipe's MLP (its code as the recipe writes it: fc1 784-128, ReLU, fc2
      128-10, inputs normalised with mean 0.1307 and std 0.3081), trained 300 steps of SGD
      on Fashion-MNIST, then scripted: OUT_DIR/classic.pt. Also OUT_DIR/state_dict.pt, the
      same model saved the way the recipe pickles it (torch.save of the state_dict), and
      OUT_DIR/classic.json: the first 16 test images (pixels in 0..1, as kiln's requests
      carry them) with PyTorch's logits and probabilities for them.

  resnet FASHION_MNIST_DIR OUT_DIR
      A ResNet-style model with batch norm (a stem, two basic blocks, one downsampling),
      trained 150 steps of Adam so its running statistics are real, then traced in eval
      mode: OUT_DIR/resnet.pt and OUT_DIR/resnet.json as above (no normalisation).

  tensors FASHION_MNIST_DIR OUT_DIR
      A module of two inputs and three outputs (seeded, not trained): an image `image`
      FP32 [B, 1, 28, 28] and a variable-length list of tag ids `tags` INT64 [B, T] (an
      EmbeddingBag's mean) give `logits` FP32 [B, 10], `embedding` FP32 [B, 8] and `top`
      INT64 [B] (the argmax). Scripted, returning a dict: OUT_DIR/tensors.pt. The same
      model traced, returning the tuple (top, logits): OUT_DIR/tensors_tuple.pt. And
      OUT_DIR/tensors.json: requests (test images with tags of lengths 4, 4 and 2) with
      PyTorch's outputs for each, run one request at a time. Also three modules whose
      answer for a row depends on the other rows of its batch, which kiln refuses:
      OUT_DIR/centered.pt (a classifier of inputs centred on the batch's mean),
      OUT_DIR/centered_tensors.pt (the same with a named input and output) and
      OUT_DIR/resnet_train.pt (the ResNet traced in training mode: batch statistics).

  run MODULE INPUTS.json SHAPE OUT.json
      torch.jit.load(MODULE) on the samples in INPUTS.json reshaped to [-1, *SHAPE]
      (SHAPE like 1,28,28): OUT.json holds {"logits": [...]}.
"""
import gzip
import json
import os
import sys
from typing import Dict

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

torch.set_num_threads(1)


class MLP(nn.Module):
    """The classic recipe's model, as it is written there."""

    def __init__(self):
        super(MLP, self).__init__()
        self.fc1 = nn.Linear(784, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = x.view(-1, 784)
        x = F.relu(self.fc1(x))
        x = self.fc2(x)
        return x


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        skip = x if self.down is None else self.down(x)
        return F.relu(y + skip)


class ResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.blocks = nn.Sequential(Block(8, 8, 1), Block(8, 16, 2))
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = self.blocks(self.stem(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class ImageAndTags(nn.Module):
    """Two inputs of different dtypes and shapes, three named outputs."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, stride=2)
        self.tags = nn.EmbeddingBag(50, 6, mode="mean")
        self.mix = nn.Linear(4 * 13 * 13 + 6, 8)
        self.head = nn.Linear(8, 10)

    def forward(self, image: torch.Tensor, tags: torch.Tensor) -> Dict[str, torch.Tensor]:
        x = torch.flatten(F.relu(self.conv(image)), 1)
        embedding = torch.tanh(self.mix(torch.cat([x, self.tags(tags)], dim=1)))
        logits = self.head(embedding)
        return {"logits": logits, "embedding": embedding, "top": torch.argmax(logits, dim=1)}


class Centered(nn.Module):
    """A classifier whose answer for a row depends on its batch: inputs centred on the
    batch's mean."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(784, 10)

    def forward(self, x):
        x = x.view(-1, 784)
        return self.fc(x - x.mean(0, keepdim=True))


class CenteredTensors(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = Centered()

    def forward(self, image: torch.Tensor) -> Dict[str, torch.Tensor]:
        return {"logits": self.inner(image)}


class TopAndLogits(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, image, tags):
        out = self.inner(image, tags)
        return out["top"], out["logits"]


def idx(path):
    with gzip.open(path) as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def fashion(data_dir, split, n):
    prefix = "train" if split == "train" else "t10k"
    x = torch.tensor(idx(os.path.join(data_dir, f"{prefix}-images-idx3-ubyte.gz"))[:n], dtype=torch.float32) / 255.0
    y = torch.tensor(idx(os.path.join(data_dir, f"{prefix}-labels-idx1-ubyte.gz"))[:n], dtype=torch.int64)
    return x.unsqueeze(1), y


def train(model, opt, x, y, steps, batch, prepare):
    model.train()
    for step in range(steps):
        i = (step * batch) % (len(x) - batch)
        opt.zero_grad()
        loss = F.cross_entropy(model(prepare(x[i : i + batch])), y[i : i + batch])
        loss.backward()
        opt.step()
    model.eval()


def answers(model, images, prepare, out):
    with torch.no_grad():
        logits = model(prepare(images))
    json.dump(
        {
            "inputs": images.reshape(len(images), -1).tolist(),
            "logits": logits.tolist(),
            "probabilities": torch.softmax(logits, dim=1).tolist(),
        },
        open(out, "w"),
    )


def classic(data_dir, out_dir):
    torch.manual_seed(0)
    x, y = fashion(data_dir, "train", 20000)
    normalize = lambda t: (t - 0.1307) / 0.3081  # transforms.Normalize((0.1307,), (0.3081,))
    model = MLP()
    train(model, torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.5), x, y, 300, 64, normalize)
    os.makedirs(out_dir, exist_ok=True)
    torch.jit.script(model).save(os.path.join(out_dir, "classic.pt"))
    torch.save(model.state_dict(), os.path.join(out_dir, "state_dict.pt"))
    test, _ = fashion(data_dir, "test", 16)
    answers(model, test, normalize, os.path.join(out_dir, "classic.json"))


def resnet(data_dir, out_dir):
    torch.manual_seed(0)
    x, y = fashion(data_dir, "train", 10000)
    model = ResNet()
    train(model, torch.optim.Adam(model.parameters(), lr=0.003), x, y, 150, 32, lambda t: t)
    os.makedirs(out_dir, exist_ok=True)
    torch.jit.trace(model, torch.zeros(1, 1, 28, 28)).save(os.path.join(out_dir, "resnet.pt"))
    test, _ = fashion(data_dir, "test", 16)
    answers(model, test, lambda t: t, os.path.join(out_dir, "resnet.json"))


def tensors(data_dir, out_dir):
    torch.manual_seed(0)
    model = ImageAndTags().eval()
    os.makedirs(out_dir, exist_ok=True)
    torch.jit.script(model).save(os.path.join(out_dir, "tensors.pt"))
    images, _ = fashion(data_dir, "test", 6)
    example = (images[:1], torch.zeros(1, 4, dtype=torch.int64))
    torch.jit.trace(TopAndLogits(model), example).save(os.path.join(out_dir, "tensors_tuple.pt"))
    torch.jit.script(Centered().eval()).save(os.path.join(out_dir, "centered.pt"))
    torch.jit.script(CenteredTensors().eval()).save(os.path.join(out_dir, "centered_tensors.pt"))
    torch.jit.trace(ResNet().train(), torch.zeros(2, 1, 28, 28)).save(os.path.join(out_dir, "resnet_train.pt"))
    g = torch.Generator().manual_seed(1)
    requests = []
    for lo, hi, length in [(0, 3, 4), (3, 5, 4), (5, 6, 2)]:
        image = images[lo:hi]
        tags = torch.randint(0, 50, (hi - lo, length), generator=g)
        with torch.no_grad():
            out = model(image, tags)
        requests.append(
            {
                "image": image.tolist(),
                "tags": tags.tolist(),
                **{k: v.tolist() for k, v in out.items()},
            }
        )
    json.dump({"requests": requests}, open(os.path.join(out_dir, "tensors.json"), "w"))


def run(module, inputs, shape, out):
    model = torch.jit.load(module)
    model.eval()
    x = torch.tensor(json.load(open(inputs)), dtype=torch.float32).reshape([-1] + [int(d) for d in shape.split(",")])
    with torch.no_grad():
        logits = model(x)
    json.dump({"logits": logits.tolist()}, open(out, "w"))


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] in ("classic", "resnet", "tensors"):
        {"classic": classic, "resnet": resnet, "tensors": tensors}[sys.argv[1]](*sys.argv[2:])
    elif len(sys.argv) == 6 and sys.argv[1] == "run":
        run(*sys.argv[2:])
    else:
        raise SystemExit(__doc__)
