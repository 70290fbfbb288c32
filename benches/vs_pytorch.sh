#!/usr/bin/env bash
# kiln-train against the same training in PyTorch, side by side in one run: training
# samples/s (training only: no validation or test time; the median over the epochs after
# the first when there are several) and the wall time from process start to the end of the
# first training step. Same model, optimizer, batch size, data (54,000 Fashion-MNIST
# images), 2 libtorch threads, same epochs. The rounds alternate kiln and PyTorch; the last
# lines give the median of each column over the rounds (this machine is noisy: read those).
#   MLP 784-128-10, SGD momentum 0.9, batch 64, 5 epochs
#   CNN (the default), Adam, batch 128, 1 epoch
# Usage: benches/vs_pytorch.sh [ROUNDS]   (each round runs all four; default 1;
#        ARCHS=mlp runs only the MLP)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh >/dev/null
cargo build --release -q -p kiln-trainer
ROUNDS="${1:-1}"
DATA="${KILN_FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

kiln() { # arch round -> "samples_per_sec seconds_to_first_step"
  local out="$WORK/kiln-$1-$2"
  local t0; t0=$(date +%s.%N)
  ./target/release/kiln-train train -q --config "benches/configs/$1.toml" --out "$out" >/dev/null 2>&1
  python3 - "$out/metrics.jsonl" "$t0" <<'PY'
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
epochs = [r for r in recs if r["kind"] == "epoch"]
start = [r for r in recs if r["kind"] == "start"][0]
rates = sorted(e["samples_per_sec"] for e in epochs[1:] or epochs)
print(rates[len(rates) // 2], start["first_step_unix_time"] - float(sys.argv[2]))
PY
}

torch_run() { # arch -> "samples_per_sec seconds_to_first_step"
  .venv/bin/python benches/pytorch_train.py "$1" "$DATA" \
    | python3 -c 'import json,sys; r=json.load(sys.stdin); s=sorted(r["samples_per_sec"][1:] or r["samples_per_sec"]); print(s[len(s)//2], r["seconds_to_first_step"])'
}

ROWS="$WORK/rows"
printf '%-5s %-6s %14s %15s %8s %16s %16s\n' model round "kiln samples/s" "torch samples/s" ratio "kiln 1st step s" "torch 1st step s"
for round in $(seq 1 "$ROUNDS"); do
  for arch in ${ARCHS:-mlp cnn}; do
    read -r ks kf < <(kiln "$arch" "$round")
    read -r ts tf < <(torch_run "$arch")
    echo "$arch $ks $ts $kf $tf" >> "$ROWS"
    python3 -c "import sys; a,r,ks,kf,ts,tf=sys.argv[1:]; print('%-5s %-6s %14.0f %15.0f %8.2f %16.2f %16.2f' % (a, r, float(ks), float(ts), float(ks)/float(ts), float(kf), float(tf)))" \
      "$arch" "$round" "$ks" "$kf" "$ts" "$tf"
  done
done
python3 - "$ROWS" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
for arch in dict.fromkeys(r[0] for r in rows):
    mine = [[float(x) for x in r[1:]] for r in rows if r[0] == arch]
    med = [statistics.median(c) for c in zip(*mine)]
    ratio = statistics.median(k / t for k, t, *_ in mine)
    print('%-5s %-6s %14.0f %15.0f %8.2f %16.2f %16.2f' % (arch, "median", med[0], med[1], ratio, med[2], med[3]))
PY
