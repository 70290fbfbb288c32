"""Drives a kiln-serve over the KServe v2 protocol with an independent client, Triton's
`tritonclient.http` from PyPI, and prints what it got as one JSON object.

Usage: tritonclient_check.py HOST:PORT MODEL ADMIN_TOKEN < images.json
where images.json is a list of 28x28 images with values in 0..1.
Exits non-zero, with the client's own error, when the client rejects an answer.
"""

import json
import sys

import numpy as np
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

url, model, token = sys.argv[1], sys.argv[2], sys.argv[3]
images = np.asarray(json.load(sys.stdin), dtype=np.float32).reshape(-1, 1, 28, 28)
client = httpclient.InferenceServerClient(url=url)
out = {
    "live": client.is_server_live(),
    "ready": client.is_server_ready(),
    "server": client.get_server_metadata(),
    "model": client.get_model_metadata(model),
    "model_ready": client.is_model_ready(model),
}


def infer(data, datatype, outputs=("probabilities", "class"), version="", binary_in=False, binary_out=False):
    inp = httpclient.InferInput("input", list(data.shape), datatype)
    inp.set_data_from_numpy(data, binary_data=binary_in)
    wanted = [httpclient.InferRequestedOutput(o, binary_data=binary_out) for o in outputs]
    r = client.infer(model, [inp], model_version=version, outputs=wanted, request_id="tc-1")
    resp = r.get_response()
    return {
        "id": resp.get("id"),
        "model_version": resp.get("model_version"),
        **{o: r.as_numpy(o).tolist() for o in outputs},
    }


out["fp32"] = infer(images, "FP32")
out["fp64"] = infer(images.astype(np.float64), "FP64", outputs=("logits",), version="1")
out["uint8"] = infer(np.round(images * 255).astype(np.uint8), "UINT8", outputs=("class",))
# Triton's binary tensor data extension: raw bytes after the JSON header, both ways.
both = ("probabilities", "class", "logits")
out["binary"] = infer(images, "FP32", outputs=both, binary_in=True, binary_out=True)
out["binary_in"] = infer(images, "FP32", outputs=("probabilities",), binary_in=True)
out["binary_out"] = infer(images, "FP32", outputs=("class",), binary_out=True)
out["binary_uint8"] = infer(np.round(images * 255).astype(np.uint8), "UINT8", outputs=("class",), binary_in=True)

# Errors surface as the client's exception, carrying the server's message.
try:
    client.get_model_metadata("no-such-model")
    out["unknown_model"] = None
except InferenceServerException as e:
    out["unknown_model"] = {"status": e.status(), "message": e.message()}
try:
    infer(images[:, :, :27, :], "FP32")
    out["bad_shape"] = None
except InferenceServerException as e:
    out["bad_shape"] = {"status": e.status(), "message": e.message()}

# The model repository extension, with the management token.
auth = {"Authorization": f"Bearer {token}"}
out["index"] = client.get_model_repository_index(headers=auth)
client.unload_model(model, headers=auth)
out["ready_after_unload"] = client.is_model_ready(model)
client.load_model(model, headers=auth)
out["ready_after_load"] = client.is_model_ready(model)
print(json.dumps(out))
