"""The classic recipe's server, for comparison with kiln-serve: Flask, a PyTorch MLP,
`POST /predict` taking {"image": [784 values]} and answering the class and the
probabilities. It serves the same weights as kiln: those of a kiln package, read from its
safetensors file, with the package's input normalisation.

Development server (as in the recipe):  python benches/flask_predict.py PACKAGE PORT
Under gunicorn:  KILN_PACKAGE=PACKAGE gunicorn -w 2 -b 127.0.0.1:PORT --chdir benches flask_predict:app
"""

import json
import os
import struct
import sys

import numpy as np
import torch
from flask import Flask, jsonify, request

torch.set_num_threads(1)


def load_package(path):
    manifest = json.load(open(os.path.join(path, "manifest.json")))
    raw = open(os.path.join(path, "weights.safetensors"), "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    tensors = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        assert meta["dtype"] == "F32", meta
        a, b = meta["data_offsets"]
        data = np.frombuffer(raw[8 + n + a : 8 + n + b], dtype=np.float32).reshape(meta["shape"])
        tensors[name] = torch.from_numpy(data.copy())
    # The MLP: hidden layers fc0, fc1, ... then out, each Linear, ReLU between.
    layers = sorted(k[: -len(".weight")] for k in tensors if k.endswith(".weight"))
    hidden = sorted((l for l in layers if not l.endswith("out")), key=lambda l: int(l.rsplit("fc", 1)[1]))
    order = hidden + [l for l in layers if l.endswith("out")]
    mods = []
    for i, name in enumerate(order):
        w = tensors[name + ".weight"]
        lin = torch.nn.Linear(w.shape[1], w.shape[0])
        lin.weight.data.copy_(w)
        lin.bias.data.copy_(tensors[name + ".bias"])
        mods.append(lin)
        if i < len(order) - 1:
            mods.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*mods).eval()
    norm = manifest["input"].get("normalize")
    mean = norm["mean"][0] if norm else 0.0
    std = norm["std"][0] if norm else 1.0
    return model, mean, std


model, MEAN, STD = load_package(os.environ.get("KILN_PACKAGE") or sys.argv[1])
app = Flask(__name__)


@app.route("/predict", methods=["POST"])
def predict():
    image = request.get_json()["image"]
    x = (torch.tensor(image, dtype=torch.float32).reshape(1, 784) - MEAN) / STD
    with torch.no_grad():
        probs = torch.softmax(model(x), dim=1)[0]
    return jsonify({"class": int(probs.argmax()), "probabilities": probs.tolist()})


if __name__ == "__main__":
    app.run(host="127.0.0.1", port=int(sys.argv[2]))
