#!/usr/bin/env bash
# kiln-serve against the classic recipe's server, side by side in one run: single-image
# `POST /predict` with the default MLP (784-128-10, configs/fashion-mlp.toml, trained one
# epoch: speed does not depend on accuracy), at concurrency 1, 8 and 64, with wrk as the
# load generator on the same 2 cores. Servers, each given the same weights:
#   kiln-serve (release build, default flags)
#   Flask's development server, as in the recipe (benches/flask_predict.py, PyTorch eager)
#   the same Flask app under gunicorn with two workers
#   ceiling: a bare actix-web + serde_json + tch model-thread loop (benches/predict_ceiling.rs),
#     the least a Rust server can do for this request: kiln-serve's target is 0.9x of it
# Prints requests/s, p50 and p99 latency and failed requests for each, then kiln's cold
# start (process start to ready) and memory (peak RSS). "server CPU µs/request" is the
# user+system CPU time of the server's processes over the requests answered: steadier than
# requests/s on a shared machine, where other tenants take cycles.
# Usage: benches/serve.sh   (DURATION=seconds per point, default 10; SERVERS="kiln flask gunicorn";
#   ROUNDS=N repeats the servers in turn N times, for figures taken side by side)
#   e.g. SERVERS="kiln ceiling" ROUNDS=3 DURATION=5 bash benches/serve.sh
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh >/dev/null
if ! command -v wrk >/dev/null; then
  echo "[bench] installing wrk (the load generator) from Debian's packages" >&2
  apt-get update -qq && apt-get install -y -qq wrk >/dev/null
fi
if ! .venv/bin/python -c "import flask, gunicorn" 2>/dev/null; then
  echo "[bench] installing flask and gunicorn into .venv" >&2
  .venv/bin/pip install --quiet --disable-pip-version-check flask gunicorn
fi
cargo build --release -q -p kiln-trainer -p kiln-server
cargo build --release -q -p kiln-server --example predict_ceiling
DURATION="${DURATION:-10}"
SERVERS="${SERVERS:-kiln flask gunicorn}"
ROUNDS="${ROUNDS:-1}"
WORK="$(mktemp -d)"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

echo "[bench] training the MLP (1 epoch) for its weights" >&2
./target/release/kiln-train train -q --config configs/fashion-mlp.toml --out "$WORK/run" --epochs 1 >/dev/null
PKG="$WORK/run/package"
mkdir -p "$WORK/repo/fashion-mlp/1"
cp "$PKG"/manifest.json "$PKG"/weights.safetensors "$WORK/repo/fashion-mlp/1/"

# The request body: the first Fashion-MNIST test image, pixel values in 0..1.
DATA="${KILN_FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}"
python3 - "$DATA/t10k-images-idx3-ubyte.gz" > "$WORK/body.json" <<'PY'
import gzip, json, sys
raw = gzip.open(sys.argv[1]).read()
print(json.dumps({"image": [round(b / 255, 4) for b in raw[16:16 + 784]]}))
PY
cat > "$WORK/post.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = io.open("$WORK/body.json"):read("*a")
LUA

wait_ready() { # url -> seconds waited
  local t0; t0=$(date +%s.%N)
  for _ in $(seq 1 3000); do
    if curl -sf -o /dev/null -X POST -H 'Content-Type: application/json' --data @"$WORK/body.json" "$1"; then
      python3 -c "import sys; print(round($(date +%s.%N) - $t0, 3))"; return 0
    fi
    sleep 0.01
  done
  echo "server at $1 did not come up" >&2; return 1
}

cpu_ticks() { # pids... -> user+system clock ticks of these processes and their children
  local total=0
  for p in "$@"; do
    for q in $p $(pgrep -P "$p" || true); do
      total=$((total + $(awk '{print $14 + $15}' "/proc/$q/stat" 2>/dev/null || echo 0)))
    done
  done
  echo "$total"
}

run_wrk() { # name url concurrency pid
  local c=$3 t=$(( $3 < 2 ? 1 : 2 ))
  local t0; t0=$(cpu_ticks "$4")
  wrk -t"$t" -c"$c" -d"${DURATION}s" --timeout 10s --latency -s "$WORK/post.lua" "$2" > "$WORK/wrk.txt" 2>&1 || true
  local t1; t1=$(cpu_ticks "$4")
  local total cpu
  total=$(awk '/requests in/ {print $1}' "$WORK/wrk.txt")
  cpu=$(python3 -c "print(f'{$((t1 - t0)) / $(getconf CLK_TCK) / max(${total:-0}, 1) * 1e6:,.0f}')")
  python3 benches/wrk_summary.py "$WORK/wrk.txt" "$1|$c" "$cpu"
}

PORT=18500
echo "| server | concurrency | requests/s | p50 ms | p99 ms | server CPU µs/request | failed |"
echo "|---|---:|---:|---:|---:|---:|---:|"
for round in $(seq 1 "$ROUNDS"); do
for server in $SERVERS; do
  PORT=$((PORT + 1))
  case "$server" in
    kiln)
      ./target/release/kiln-serve --model-repository "$WORK/repo" --bind "127.0.0.1:$PORT" ${KILN_FLAGS:-} 2>"$WORK/kiln.log" &
      ;;
    flask)
      .venv/bin/python benches/flask_predict.py "$PKG" "$PORT" 2>"$WORK/flask.log" &
      ;;
    gunicorn)
      KILN_PACKAGE="$PKG" .venv/bin/gunicorn -w 2 -b "127.0.0.1:$PORT" --chdir benches flask_predict:app 2>"$WORK/gunicorn.log" &
      ;;
    ceiling)
      ./target/release/examples/predict_ceiling "$PKG" "127.0.0.1:$PORT" 2 2>"$WORK/ceiling.log" &
      ;;
  esac
  PID=$!
  PIDS+=("$PID")
  READY=$(wait_ready "http://127.0.0.1:$PORT/predict")
  [ "$server" = kiln ] && KILN_READY=$READY && KILN_PID=$PID
  for c in 1 8 64; do
    run_wrk "$server" "http://127.0.0.1:$PORT/predict" "$c" "$PID"
  done
  if [ "$server" = kiln ]; then
    KILN_RSS=$(awk '/VmHWM/ {print $2}' "/proc/$KILN_PID/status")
  fi
  kill "$PID" 2>/dev/null || true
  wait "$PID" 2>/dev/null || true
done
done
if [ -n "${KILN_READY:-}" ]; then
  echo
  echo "kiln-serve cold start (process start to first answered /predict): ${KILN_READY} s"
  echo "kiln-serve peak RSS after the runs: $((KILN_RSS / 1024)) MiB"
fi
