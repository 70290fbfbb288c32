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
echo "[k8s] docker/k8s manifests are valid for Kubernetes $K8S_VERSION"
