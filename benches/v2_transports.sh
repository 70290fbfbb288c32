#!/usr/bin/env bash
# KServe v2 inference over its three transports, side by side in one run: JSON over HTTP,
# Triton's binary tensor data over HTTP, and gRPC (raw_input_contents), for the CNN
# (configs/fashion-cnn.toml, one epoch) at batch 1 and 8, 8 requests in flight. HTTP is
# driven by wrk, gRPC by benches/grpc_load.rs (tonic), on the same 2 cores as the server.
# Usage: benches/v2_transports.sh   (DURATION=seconds per point, default 8; ROUNDS, default 3;
#   ARCH=mlp for configs/fashion-mlp.toml, a model cheap enough that the transport shows;
#   PIN=1 puts the server on core 0 and every load generator on core 1 (taskset), so that
#   a heavier client does not take the server's CPU: the server's own cost then sets the
#   throughput)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh >/dev/null
if ! command -v wrk >/dev/null; then
  apt-get update -qq && apt-get install -y -qq wrk >/dev/null
fi
cargo build --release -q -p kiln-trainer -p kiln-server
cargo build --release -q -p kiln-server --example grpc_load
DURATION="${DURATION:-8}"
ROUNDS="${ROUNDS:-3}"
WORK="$(mktemp -d)"
PID=""
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

ARCH="${ARCH:-cnn}"
echo "[bench] training the $ARCH (1 epoch, 6,000 images) for its weights" >&2
./target/release/kiln-train train -q --config "configs/fashion-$ARCH.toml" --out "$WORK/run" --epochs 1 \
  --set data.limit_train=6000 >/dev/null
mkdir -p "$WORK/repo/cnn/1"
cp "$WORK/run/package/manifest.json" "$WORK/run/package/weights.safetensors" "$WORK/repo/cnn/1/"

# Bodies for batch 1 and 8: the first test image, as JSON and as binary (JSON header + raw f32).
DATA="${KILN_FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}"
python3 - "$DATA/t10k-images-idx3-ubyte.gz" "$WORK" <<'PY'
import gzip, json, struct, sys
raw = gzip.open(sys.argv[1]).read()
pixels = [b / 255 for b in raw[16:16 + 784]]
work = sys.argv[2]
open(f"{work}/image.f32", "wb").write(struct.pack("<784f", *pixels))
for b in (1, 8):
    shape = [b, 1, 28, 28]
    body = {"inputs": [{"name": "input", "shape": shape, "datatype": "FP32", "data": pixels * b}],
            "outputs": [{"name": "probabilities"}]}
    open(f"{work}/json{b}.body", "w").write(json.dumps(body))
    header = json.dumps({"inputs": [{"name": "input", "shape": shape, "datatype": "FP32",
                                     "parameters": {"binary_data_size": 784 * 4 * b}}],
                         "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}]}).encode()
    open(f"{work}/binary{b}.body", "wb").write(header + struct.pack(f"<{784 * b}f", *(pixels * b)))
    open(f"{work}/binary{b}.len", "w").write(str(len(header)))
PY
for b in 1 8; do
  cat > "$WORK/json$b.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = io.open("$WORK/json$b.body", "rb"):read("*a")
LUA
  cat > "$WORK/binary$b.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/octet-stream"
wrk.headers["Inference-Header-Content-Length"] = "$(cat "$WORK/binary$b.len")"
wrk.body = io.open("$WORK/binary$b.body", "rb"):read("*a")
LUA
done

SERVER_CPU=(); CLIENT_CPU=()
if [ -n "${PIN:-}" ]; then SERVER_CPU=(taskset -c 0); CLIENT_CPU=(taskset -c 1); fi
"${SERVER_CPU[@]}" ./target/release/kiln-serve --model-repository "$WORK/repo" --bind 127.0.0.1:18700 --grpc-bind 127.0.0.1:18701 \
  --max-batch 64 2>"$WORK/kiln.log" &
PID=$!
for _ in $(seq 1 500); do curl -sf -o /dev/null 127.0.0.1:18700/v2/health/ready && break; sleep 0.02; done

# The server's user+system CPU per request: fair across load generators, which share the cores.
ticks() { awk '{print $14 + $15}' "/proc/$PID/stat"; }
per_request() { # ticks_before requests -> µs of server CPU per request
  python3 -c "print(f'{($(ticks) - $1) / $(getconf CLK_TCK) / max($2, 1) * 1e6:,.0f}')"
}
echo "| transport, batch | requests/s | p50 ms | p99 ms | server CPU µs/request | failed |"
echo "|---|---:|---:|---:|---:|---:|"
for round in $(seq 1 "$ROUNDS"); do
  for b in 1 8; do
    for t in json binary; do
      t0=$(ticks)
      "${CLIENT_CPU[@]}" wrk -t2 -c8 -d"${DURATION}s" --timeout 10s --latency -s "$WORK/$t$b.lua" http://127.0.0.1:18700/v2/models/cnn/infer \
        > "$WORK/wrk.txt" 2>&1 || true
      n=$(awk '/requests in/ {print $1}' "$WORK/wrk.txt")
      python3 benches/wrk_summary.py "$WORK/wrk.txt" "HTTP $t, $b" "$(per_request "$t0" "${n:-0}")"
    done
    t0=$(ticks)
    row=$("${CLIENT_CPU[@]}" ./target/release/examples/grpc_load 127.0.0.1:18701 cnn "$b" 8 "$DURATION" "$WORK/image.f32" "gRPC, $b")
    n=$(echo "$row" | awk -F'|' '{gsub(/ /, "", $3); print int($3 * '"$DURATION"')}')
    echo "$row" | awk -F'|' -v cpu="$(per_request "$t0" "$n")" 'BEGIN{OFS="|"} {$6 = " " cpu " |" $6; print}'
  done
done
