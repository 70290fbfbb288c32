#!/usr/bin/env bash
# The same request measured the same way (v2 inference of one image, wrk at concurrency 64
# on the same machine, DURATION seconds each, default 10) against, one change at a time:
#   kiln-serve run on the host (the release binary)
#   the kiln-serve container with host networking (the container, without Docker's NAT)
#   the same container through a published port (adds Docker's port proxy)
#   three replicas behind HAProxy (docker/compose.yaml; adds the balancer and two replicas)
# On a 2-core machine all of them and the load generator share the same 2 cores, so the
# last row shows the balancer's overhead more than scaling.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DURATION="${DURATION:-10}"
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
bash docker/build.sh
cargo build --release -q -p kiln-trainer -p kiln-server
WORK="$(mktemp -d)"
PROJECT="kilnbench$$"
cleanup() {
  docker-compose -p "$PROJECT" -f docker/compose.yaml down -t 5 >/dev/null 2>&1 || true
  docker rm -f "$PROJECT-single" "$PROJECT-host" >/dev/null 2>&1 || true
  [ -n "${HOST_PID:-}" ] && kill "$HOST_PID" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

echo "[bench] training the MLP (1 epoch) for its weights" >&2
./target/release/kiln-train train -q --config configs/fashion-mlp.toml --out "$WORK/run" --epochs 1 >/dev/null
mkdir -p "$WORK/repo/fashion-mlp/1"
cp "$WORK/run/package/manifest.json" "$WORK/run/package/weights.safetensors" "$WORK/repo/fashion-mlp/1/"
chmod -R a+rX "$WORK/repo"
DATA="${KILN_FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}"
python3 - "$DATA/t10k-images-idx3-ubyte.gz" > "$WORK/body.json" <<'PY'
import gzip, json, sys
raw = gzip.open(sys.argv[1]).read()
data = [round(b / 255, 4) for b in raw[16:16 + 784]]
print(json.dumps({"inputs": [{"name": "input", "shape": [1, 1, 28, 28], "datatype": "FP32", "data": data}]}))
PY
cat > "$WORK/post.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = io.open("$WORK/body.json"):read("*a")
LUA
ready() { for _ in $(seq 1 600); do curl -sf -o /dev/null "$1/v2/health/ready" && return 0; sleep 0.1; done; return 1; }
measure() { # name url
  wrk -t2 -c64 -d"${DURATION}s" --latency -s "$WORK/post.lua" "$2/v2/models/fashion-mlp/infer" > "$WORK/wrk.txt" 2>&1
  python3 benches/wrk_summary.py "$WORK/wrk.txt" "$1"
}

echo "| set-up (concurrency 64, v2 infer) | requests/s | p50 ms | p99 ms | failed |"
echo "|---|---:|---:|---:|---:|"
./target/release/kiln-serve --model-repository "$WORK/repo" --bind 127.0.0.1:18604 2>/dev/null &
HOST_PID=$!
ready http://127.0.0.1:18604
measure "kiln-serve on the host" http://127.0.0.1:18604
kill "$HOST_PID"; wait "$HOST_PID" 2>/dev/null || true; HOST_PID=""
docker run -d --name "$PROJECT-host" --read-only --network host -e KILN_BIND=127.0.0.1:18603 \
  -v "$WORK/repo:/models:ro" kiln-serve:latest >/dev/null
ready http://127.0.0.1:18603
measure "1 container, host networking" http://127.0.0.1:18603
docker rm -f "$PROJECT-host" >/dev/null
docker run -d --name "$PROJECT-single" --read-only -p 127.0.0.1:18602:8080 \
  -v "$WORK/repo:/models:ro" kiln-serve:latest >/dev/null
ready http://127.0.0.1:18602
measure "1 container, published port (Docker's port proxy)" http://127.0.0.1:18602
docker rm -f "$PROJECT-single" >/dev/null
KILN_MODELS="$WORK/repo" KILN_PORT=18600 KILN_STATS_PORT=18601 \
  docker-compose -p "$PROJECT" -f docker/compose.yaml up -d >/dev/null 2>&1
ready http://127.0.0.1:18600
sleep 3
measure "3 replicas behind HAProxy, published port" http://127.0.0.1:18600
