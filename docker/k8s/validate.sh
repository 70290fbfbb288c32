#!/usr/bin/env bash
# Validates the Kubernetes manifests in docker/k8s against the Kubernetes API schemas
# (kubernetes-validate from PyPI, strict: unknown fields are errors). The KServe
# InferenceService is a custom resource the validator has no schema for: its predictor
# container is validated as a core/v1 Pod's container, and its envelope checked here.
# A self-check first proves the validator refuses a broken Deployment.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
K8S_VERSION="${K8S_VERSION:-1.37.0}"
[ -x .venv/bin/python ] || bash scripts/setup.sh >/dev/null
if ! .venv/bin/python -c "import kubernetes_validate" 2>/dev/null; then
  echo "[k8s] installing kubernetes-validate into .venv" >&2
  .venv/bin/pip install --quiet --disable-pip-version-check "kubernetes-validate==1.37.0"
fi
VALIDATE=(.venv/bin/kubernetes-validate --strict --quiet -k "$K8S_VERSION")
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

# Self-check: a misspelled field and a wrong type must be refused.
sed -e 's/readinessProbe:/readinessProbes:/' -e 's/replicas: 3/replicas: "three"/' docker/k8s/deployment.yaml > "$WORK/broken.yaml"
if "${VALIDATE[@]}" "$WORK/broken.yaml" >"$WORK/broken.log" 2>&1; then
  echo "[k8s] the validator accepted a broken Deployment; it checks nothing" >&2
  exit 1
fi

"${VALIDATE[@]}" docker/k8s/models-pvc.yaml docker/k8s/deployment.yaml docker/k8s/service.yaml \
  docker/k8s/hpa.yaml docker/k8s/pdb.yaml

.venv/bin/python - docker/k8s/inferenceservice.yaml "$WORK/predictor-pod.yaml" <<'PY'
import json, sys
import yaml
isvc = yaml.safe_load(open(sys.argv[1]))
assert isvc["apiVersion"] == "serving.kserve.io/v1beta1", isvc["apiVersion"]
assert isvc["kind"] == "InferenceService", isvc["kind"]
predictor = isvc["spec"]["predictor"]
allowed = {"containers", "minReplicas", "maxReplicas", "scaleTarget", "scaleMetric", "serviceAccountName", "timeout", "volumes", "nodeSelector", "tolerations"}
unknown = set(predictor) - allowed
assert not unknown, f"unexpected predictor fields: {unknown}"
[container] = predictor["containers"]
assert container["name"] == "kserve-container", "KServe expects the predictor container to be named kserve-container"
pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": isvc["metadata"]["name"]},
       "spec": {"containers": [container], "volumes": predictor.get("volumes", [])}}
open(sys.argv[2], "w").write(json.dumps(pod))
PY
"${VALIDATE[@]}" "$WORK/predictor-pod.yaml"

# The PyTorchJob is a custom resource too (Kubeflow's training operator): its envelope is
# checked here and each replica's pod template validated as a core/v1 Pod.
"${VALIDATE[@]}" docker/k8s/training-volumes.yaml
.venv/bin/python - docker/k8s/pytorchjob.yaml "$WORK" <<'PY'
import json, sys
import yaml
job = yaml.safe_load(open(sys.argv[1]))
assert job["apiVersion"] == "kubeflow.org/v1", job["apiVersion"]
assert job["kind"] == "PyTorchJob", job["kind"]
assert set(job["spec"]) <= {"runPolicy", "pytorchReplicaSpecs", "elasticPolicy", "nprocPerNode"}, set(job["spec"])
specs = job["spec"]["pytorchReplicaSpecs"]
assert set(specs) <= {"Master", "Worker"} and "Master" in specs, set(specs)
assert specs["Master"]["replicas"] == 1, "a PyTorchJob has one Master (rank 0)"
for kind, spec in specs.items():
    assert set(spec) <= {"replicas", "restartPolicy", "template"}, (kind, set(spec))
    assert spec["restartPolicy"] in {"Always", "OnFailure", "Never", "ExitCode"}, spec["restartPolicy"]
    containers = spec["template"]["spec"]["containers"]
    main = [c for c in containers if c["name"] == "pytorch"]
    assert main, f"{kind}: the training operator expects a container named pytorch"
    env = {e["name"] for e in main[0].get("env", [])}
    assert not env & {"RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"}, "the operator sets these"
    assert any(p.get("name") == "pytorchjob-port" for p in main[0].get("ports", [])), "MASTER_PORT comes from pytorchjob-port"
    args = main[0]["args"]
    assert args[0] in {"train", "resume"}, args
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"kiln-train-{kind.lower()}"}, **{"spec": spec["template"]["spec"]}}
    open(f"{sys.argv[2]}/pytorchjob-{kind}.yaml", "w").write(json.dumps(pod))
PY
"${VALIDATE[@]}" "$WORK"/pytorchjob-*.yaml
echo "[k8s] docker/k8s manifests are valid for Kubernetes $K8S_VERSION"
