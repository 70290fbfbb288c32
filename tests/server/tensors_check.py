"""Drives a kiln-serve model of named tensors with Triton's own clients from PyPI:
`tritonclient.http` with JSON and with binary tensor data, and `tritonclient.grpc`, and
compares every answer with PyTorch's (tests/parity/torchscript_models.py tensors).
Prints one JSON object: the metadata each client read, and for each transport the
largest difference of the float outputs from PyTorch's and whether the integer outputs
were equal.

Usage: tensors_check.py HTTP_HOST:PORT GRPC_HOST:PORT MODEL EXPECTED.json OUTPUTS
where OUTPUTS names the outputs to ask for, comma-separated, with their dtypes as
NAME:DTYPE (e.g. logits:FP32,embedding:FP32,top:INT64).
"""

import json
import sys

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

http_url, grpc_url, model, expected_path, outputs = sys.argv[1:6]
outputs = [o.split(":") for o in outputs.split(",")]
expected = json.load(open(expected_path))["requests"]
http = httpclient.InferenceServerClient(url=http_url)
grpc = grpcclient.InferenceServerClient(url=grpc_url)
report = {
    "http_metadata": http.get_model_metadata(model),
    "grpc_metadata": grpc.get_model_metadata(model, as_json=True),
}


def compare(results):
    """Largest float difference and whether integers matched, over all requests."""
    worst, exact = 0.0, True
    for got, want in zip(results, expected):
        for name, dtype in outputs:
            g, w = got[name], np.asarray(want[name])
            assert g.shape == w.shape, f"{name}: shape {g.shape}, PyTorch's {w.shape}"
            if dtype.startswith("FP"):
                worst = max(worst, float(np.abs(g.astype(np.float64) - w).max()))
            else:
                exact = exact and g.dtype == np.int64 and bool((g == w).all())
    return {"max_diff": worst, "integers_equal": exact}


def via(client, module, binary):
    results = []
    for r in expected:
        image = np.asarray(r["image"], dtype=np.float32)
        tags = np.asarray(r["tags"], dtype=np.int64)
        # The inputs in the reverse of forward's order: kiln matches them by name.
        inputs = [module.InferInput("tags", list(tags.shape), "INT64"), module.InferInput("image", list(image.shape), "FP32")]
        kw = {"binary_data": binary} if binary is not None else {}
        inputs[0].set_data_from_numpy(tags, **kw)
        inputs[1].set_data_from_numpy(image, **kw)
        wanted = [module.InferRequestedOutput(n, **kw) for n, _ in outputs]
        answer = client.infer(model, inputs, outputs=wanted)
        results.append({n: answer.as_numpy(n) for n, _ in outputs})
    return compare(results)


report["http_json"] = via(http, httpclient, False)
report["http_binary"] = via(http, httpclient, True)
report["grpc"] = via(grpc, grpcclient, None)
print(json.dumps(report))
