"""Drives a kiln-serve over KServe v2 gRPC with independent clients: Triton's
`tritonclient.grpc` from PyPI (raw tensor bytes) and the protocol's own generated stubs
that tritonclient ships (typed `contents`), and prints what it got as one JSON object.

Usage: tritonclient_grpc_check.py HOST:PORT MODEL ADMIN_TOKEN BODY_LIMIT < images.json
where images.json is a list of 28x28 images with values in 0..1.
"""

import json
import sys

import grpc
import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

url, model, token, limit = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
images = np.asarray(json.load(sys.stdin), dtype=np.float32).reshape(-1, 1, 28, 28)
client = grpcclient.InferenceServerClient(url=url)
out = {
    "live": client.is_server_live(),
    "ready": client.is_server_ready(),
    "server": client.get_server_metadata(as_json=True),
    "model": client.get_model_metadata(model, as_json=True),
    "model_ready": client.is_model_ready(model),
}


def infer(data, datatype, outputs=("probabilities", "class"), version=""):
    inp = grpcclient.InferInput("input", list(data.shape), datatype)
    inp.set_data_from_numpy(data)
    wanted = [grpcclient.InferRequestedOutput(o) for o in outputs]
    r = client.infer(model, [inp], model_version=version, outputs=wanted, request_id="g-1")
    resp = r.get_response(as_json=True)
    return {
        "id": resp.get("id"),
        "model_version": resp.get("model_version"),
        **{o: r.as_numpy(o).tolist() for o in outputs},
    }


def error(f):
    try:
        f()
        return None
    except InferenceServerException as e:
        return {"status": e.status(), "message": e.message()}


out["fp32"] = infer(images, "FP32", outputs=("probabilities", "class", "logits"))
out["fp64"] = infer(images.astype(np.float64), "FP64", outputs=("logits",), version="1")
out["uint8"] = infer(np.round(images * 255).astype(np.uint8), "UINT8", outputs=("class",))

# Typed contents (fp32_contents), through the protocol's generated stub.
stub = service_pb2_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(url))
req = service_pb2.ModelInferRequest(model_name=model, id="typed")
tensor = req.inputs.add(name="input", datatype="FP32", shape=list(images.shape))
tensor.contents.fp32_contents.extend(images.reshape(-1).tolist())
req.outputs.add(name="probabilities")
resp = stub.ModelInfer(req)
out["typed"] = {
    "id": resp.id,
    "probabilities": np.frombuffer(resp.raw_output_contents[0], dtype="<f4").tolist(),
    "shape": list(resp.outputs[0].shape),
}
# Typed contents in the field of another datatype.
bad = service_pb2.ModelInferRequest(model_name=model)
t = bad.inputs.add(name="input", datatype="FP32", shape=[1, 1, 28, 28])
t.contents.int64_contents.extend([0] * 784)
try:
    stub.ModelInfer(bad)
    out["wrong_field"] = None
except grpc.RpcError as e:
    out["wrong_field"] = {"code": e.code().name, "message": e.details()}

# An output asked for twice, an output parameter of an extension kiln lacks, no rows.
def rpc_error(request):
    try:
        stub.ModelInfer(request)
        return None
    except grpc.RpcError as e:
        return {"code": e.code().name, "message": e.details()}


def request(rows=1):
    r = service_pb2.ModelInferRequest(model_name=model)
    r.inputs.add(name="input", datatype="FP32", shape=[rows, 1, 28, 28])
    r.raw_input_contents.append(np.zeros((rows, 1, 28, 28), dtype="<f4").tobytes())
    return r


twice = request()
twice.outputs.add(name="class")
twice.outputs.add(name="class")
out["output_twice"] = rpc_error(twice)
classification = request()
classification.outputs.add(name="probabilities").parameters["classification"].int64_param = 3
out["classification"] = rpc_error(classification)
out["no_rows"] = rpc_error(request(rows=0))

out["unknown_model"] = error(lambda: client.get_model_metadata("no-such-model"))
out["bad_shape"] = error(lambda: infer(images[:, :, :27, :], "FP32"))
big = np.zeros((limit // (784 * 4) + 1, 1, 28, 28), dtype=np.float32)
out["too_large"] = error(lambda: infer(big, "FP32"))

# The model repository extension, with the management token as metadata.
auth = {"authorization": f"Bearer {token}"}
out["index_without_token"] = error(lambda: client.get_model_repository_index())
out["index"] = client.get_model_repository_index(headers=auth, as_json=True)
client.unload_model(model, headers=auth)
out["ready_after_unload"] = client.is_model_ready(model)
client.load_model(model, headers=auth)
out["ready_after_load"] = client.is_model_ready(model)
print(json.dumps(out))
