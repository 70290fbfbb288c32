#!/usr/bin/env bash
# Soak: kiln-serve under a mix of good requests, bad requests and repository changes, with
# about twice the good requests it can serve, for DURATION seconds (default 600).
#   - the server runs on one core and the load generator (wrk) on the other (taskset), so
#     that the offered load does not depend on how the two share cores;
#   - first, what the server sustains: 15 s of good requests alone at concurrency 32;
#   - good: v2 infer of one Fashion-MNIST image, by 256 wrk connections sending as fast
#     as answers come back, against a queue of 8 (--queue-capacity), so that what the
#     server cannot take is shed with 429. wrk is a closed loop (each connection waits for
#     its answer), so the offered rate is the answered rate (200 + 429); the overload is
#     the good requests offered over those served (200), reported as a factor;
#   - bad: 32 wrk connections, together pacing themselves to about 15% of the sustained
#     rate, cycling through malformed JSON, an unknown model, a client-# Prints answered/429/4xx/failed counts (failed: 5xx or a socket error, i.e. a request
# lost), the good requests' p50/p99, the offered load against what was answered, and the
# server's RSS sampled every 5 s, with its growth from the end of warm-up (the first 60 s)
# to the end. Goal: no request lost, RSS growth < 5%.
# Usage: benches/soak.sh [DURATION_SECONDS]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DURATION="${1:-600}"
WARMUP=60
# One core for the server, another for the load generator (both the same on a 1-core box).
NCPU=$(nproc)
SERVER_CPU=0
LOAD_CPU=$(( NCPU > 1 ? 1 : 0 ))
bash scripts/setup.sh >/dev/null
if ! command -v wrk >/dev/null; then
  echo "[soak] installing wrk from Debian's packages" >&2
  apt-get update -qq && apt-get install -y -qq wrk >/dev/null
fi
cargo build --release -q -p kiln-trainer -p kiln-server
WORK="$(mktemp -d)"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

echo "[soak] training a small MLP for its package" >&2
./target/release/kiln-train train -q --out "$WORK/run" --epochs 1 --threads 1 \
  --set 'model={arch="mlp", hidden=[128]}' --set data.limit_train=5000 --set data.limit_test=100 >/dev/null
mkdir -p "$WORK/repo/fashion/1"
cp "$WORK/run/package/"* "$WORK/repo/fashion/1/"

DATA="${KILN_FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}"
python3 - "$DATA/t10k-images-idx3-ubyte.gz" "$WORK" <<'PY'
import gzip, json, struct, sys, zlib
raw = gzip.open(sys.argv[1]).read()
work = sys.argv[2]
px = [round(b / 255, 4) for b in raw[16:16 + 784]]
def v2(n, shape=None):
    return json.dumps({"inputs": [{"name": "input", "shape": shape or [n, 1, 28, 28], "datatype": "FP32", "data": px * n}]})
open(f"{work}/good.json", "w").write(v2(1))
# A PNG whose header declares 16,000 x 16,000 (CRC correct), a few hundred bytes long.
def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 16000, 16000, 8, 0, 0, 0, 0)) \
    + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")
open(f"{work}/huge.png", "wb").write(png)
open(f"{work}/big.json", "w").write(v2(40))
open(f"{work}/shape.json", "w").write(v2(1, [1, 28, 28]))
PY

# good.lua and bad.lua pause DELAY_MS (from the environment) between a connection's
# requests, so that the offered rate is set rather than as fast as answers come back.
cat > "$WORK/good.lua" <<LUA
local pause = tonumber(os.getenv("DELAY_MS") or "0")
function delay() return pause end
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = io.open("$WORK/good.json"):read("*a")
local threads = {}
function setup(t) table.insert(threads, t) end
function init() counts = {} end
function response(status) counts[status] = (counts[status] or 0) + 1 end
function done(summary, latency, requests)
  local total = {}
  for _, t in ipairs(threads) do
    local c = t:get("counts")
    for s, n in pairs(c) do total[s] = (total[s] or 0) + n end
  end
  for s, n in pairs(total) do io.write(string.format("status %d %d\n", s, n)) end
  io.write(string.format("p50_ms %.3f\np99_ms %.3f\n", latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
LUA
cat > "$WORK/bad.lua" <<LUA
local pause = tonumber(os.getenv("DELAY_MS") or "0")
function delay() return pause end
local function read(name) return io.open("$WORK/" .. name, "rb"):read("*a") end
local reqs = {
  {"/v2/models/fashion/infer", "application/json", '{"inputs": ['},
  {"/v2/models/nope/infer", "application/json", read("good.json")},
  {"RANDOM", "application/json", read("good.json")},
  {"/v2/models/fashion/infer", "application/json", read("big.json")},
  {"/v2/models/fashion/infer", "application/json", read("shape.json")},
  {"/predict", "image/png", read("huge.png")},
}
local i = 0
local threads = {}
function setup(t) table.insert(threads, t) end
function init() counts = {} end
request = function()
  i = i + 1
  local r = reqs[(i % #reqs) + 1]
  local path = r[1]
  if path == "RANDOM" then path = "/v2/models/m" .. math.random(1, 1000000000) .. "/infer" end
  return wrk.format("POST", path, {["Content-Type"] = r[2]}, r[3])
end
function response(status) counts[status] = (counts[status] or 0) + 1 end
function done(summary, latency, requests)
  local total = {}
  for _, t in ipairs(threads) do
    local c = t:get("counts")
    for s, n in pairs(c) do total[s] = (total[s] or 0) + n end
  end
  for s, n in pairs(total) do io.write(string.format("status %d %d\n", s, n)) end
end
LUA

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
taskset -c "$SERVER_CPU" ./target/release/kiln-serve --model-repository "$WORK/repo" --bind "127.0.0.1:$PORT" \
  --poll-interval 1s --queue-capacity 8 --max-batch 32 --http-workers 2 2>"$WORK/server.log" &
SERVER=$!
PIDS+=("$SERVER")
for _ in $(seq 1 600); do curl -sf -o /dev/null "http://127.0.0.1:$PORT/v2/health/ready" && break; sleep 0.1; done
URL="http://127.0.0.1:$PORT"
echo "[soak] kiln-serve pid $SERVER on $URL; ${DURATION}s of load" >&2

# RSS every 5 s.
( while kill -0 "$SERVER" 2>/dev/null; do
    echo "$(date +%s) $(awk '/VmRSS/ {print $2}' /proc/$SERVER/status)"; sleep 5
  done ) > "$WORK/rss.txt" &
PIDS+=($!)
# Repository changes every 15 s: a new version in, the oldest out.
( v=1; while sleep 15; do
    v=$((v + 1)); mkdir -p "$WORK/stage"; cp "$WORK/repo/fashion/1/"* "$WORK/stage/" 2>/dev/null \
      || cp "$WORK/run/package/"* "$WORK/stage/"
    mv "$WORK/stage" "$WORK/repo/fashion/$v"
    old=$(ls "$WORK/repo/fashion" | sort -n | head -1)
    [ "$(ls "$WORK/repo/fashion" | wc -l)" -gt 2 ] && rm -rf "$WORK/repo/fashion/$old"
  done ) &
PIDS+=($!)

# What it sustains: good requests alone, no overload.
taskset -c "$LOAD_CPU" wrk -t1 -c32 -d15s --timeout 10s -s "$WORK/good.lua" "$URL/v2/models/fashion/infer" > "$WORK/sustain.txt" 2>&1
SUSTAINED=$(awk '/Requests\/sec/ {print $2}' "$WORK/sustain.txt")
# Each of the 32 bad connections pauses DELAY ms between requests, so together they offer
# at most 32 * 1000 / DELAY requests per second: 15% of the sustained rate.
BAD_DELAY=$(python3 -c "print(max(1, round(32 * 1000 / (0.15 * $SUSTAINED))))")
echo "[soak] sustained $SUSTAINED req/s alone; bad connections pause ${BAD_DELAY} ms" >&2
T0=$(date +%s)
DELAY_MS=0 taskset -c "$LOAD_CPU" wrk -t1 -c256 -d"${DURATION}s" --timeout 10s -s "$WORK/good.lua" "$URL/v2/models/fashion/infer" > "$WORK/good.txt" 2>&1 &
G=$!
DELAY_MS=$BAD_DELAY taskset -c "$LOAD_CPU" wrk -t1 -c32 -d"${DURATION}s" --timeout 10s -s "$WORK/bad.lua" "$URL/" > "$WORK/bad.txt" 2>&1 &
B=$!
wait "$G" "$B" || true
ELAPSED=$(( $(date +%s) - T0 ))
kill -0 "$SERVER" 2>/dev/null && ALIVE=yes || ALIVE=no

python3 - "$WORK" "$ELAPSED" "$WARMUP" "$ALIVE" <<'PY'
import re, sys
work, elapsed, warmup, alive = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
def parse(name):
    text = open(f"{work}/{name}.txt").read()
    st = {int(s): int(n) for s, n in re.findall(r"status (\d+) (\d+)", text)}
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    errors = sum(map(int, sock.groups())) if sock else 0
    p = dict(re.findall(r"(p\d+)_ms ([\d.]+)", text))
    return st, errors, p, text
gs, ge, gp, gtext = parse("good")
bs, be, _, btext = parse("bad")
ok = sum(n for s, n in gs.items() if 200 <= s < 300)
shed = gs.get(429, 0)
good_other = {s: n for s, n in gs.items() if not (200 <= s < 300 or s == 429)}
bad_expected = {s: n for s, n in bs.items() if s in (400, 404, 413, 429)}
bad_other = {s: n for s, n in bs.items() if s not in (400, 404, 413, 429)}
lost = ge + be + sum(good_other.values()) + sum(bad_other.values())
rss = [tuple(map(int, l.split())) for l in open(f"{work}/rss.txt") if len(l.split()) == 2]
t0 = rss[0][0]
after = [kb for t, kb in rss if t - t0 >= warmup]
base, end, peak = after[0] / 1024, after[-1] / 1024, max(after) / 1024
offered = (sum(gs.values()) + sum(bs.values())) / elapsed
good_offered = sum(gs.values()) / elapsed
sustained = float(re.search(r"Requests/sec:\s+([\d.]+)", open(f"{work}/sustain.txt").read()).group(1))
log = open(f"{work}/server.log").read()
loads, unloads = log.count("serving fashion version"), log.count("unloaded fashion version")
print(f"duration {elapsed} s; server alive at the end: {alive}")
print(f"good requests: {ok:,} answered 200, {shed:,} shed with 429, other statuses {good_other}, socket errors {ge}")
print(f"bad requests: documented 4xx {bad_expected}, other statuses {bad_other}, socket errors {be}")
print(f"requests lost (5xx, unexpected status or socket error): {lost}")
print(f"good latency: p50 {float(gp.get('p50', 'nan')):.2f} ms, p99 {float(gp.get('p99', 'nan')):.2f} ms")
print(f"sustained alone (good requests, concurrency 32, 15 s): {sustained:,.0f} req/s")
print(f"good requests offered {good_offered:,.0f} req/s, served (200) {ok / elapsed:,.0f} req/s: "
      f"offered {good_offered / max(ok / elapsed, 1e-9):.1f}x what it served, {100 * shed / max(sum(gs.values()), 1):.0f}% shed with 429")
print(f"all requests (good and bad) answered {offered:,.0f} req/s")
print(f"repository changes: {loads} version loads, {unloads} unloads while under load")
print(f"RSS: {rss[0][1] / 1024:.1f} MiB at start, {base:.1f} MiB after {warmup} s warm-up, {end:.1f} MiB at the end (peak {peak:.1f}); growth after warm-up {100 * (end - base) / base:+.1f}%")
print("RSS samples (MiB, every 5 s): " + " ".join(f"{kb / 1024:.0f}" for _, kb in rss))
sys.exit(0 if lost == 0 and alive == "yes" else 1)
PY
