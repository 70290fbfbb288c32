#!/usr/bin/env bash
# Data-parallel training, kiln against PyTorch DDP (torchrun, gloo backend), side by side
# in one run on this machine: the MLP and the CNN of benches/configs, 1 and 2 ranks, one
# thread per rank, the same per-rank batch, data and epochs. Prints global samples/s, the
# speed-up over 1 rank, kiln's allreduce time per step (from its metrics) and a bare
# allreduce of the gradients' size in both, then an estimate for 8 ranks on 8 machines.
#
# This machine's collectives are noisy (a 400 KB allreduce over loopback took 0.3 to 4 ms
# from one run to the next), so each configuration runs ROUNDS times, alternating, and the
# table shows medians.
#
# Usage: benches/ddp.sh [EPOCHS] [ROUNDS]   (KILN_ARCHS="mlp cnn" by default)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
EPOCHS="${1:-1}"
ROUNDS="${2:-3}"
ARCHS="${KILN_ARCHS:-mlp cnn}"
DATA="${KILN_FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}"
OUT="runs/bench-ddp"
rm -rf "$OUT" && mkdir -p "$OUT"
cargo build -q --release -p kiln-trainer
K=./target/release/kiln-train
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
for arch in $ARCHS; do
  batch="$(sed -n 's/^batch_size = //p' "benches/configs/$arch.toml")"
  common=(train --quiet --config "benches/configs/$arch.toml" --threads 1 --epochs "$EPOCHS" --set data.prefetch=0)
  for round in $(seq "$ROUNDS"); do
    echo "[ddp] $arch round $round: kiln 1 rank, kiln 2 ranks (launch), PyTorch 1 process, PyTorch DDP 2 ranks (torchrun, gloo)" >&2
    "$K" "${common[@]}" --out "$OUT/kiln-$arch-1-$round" >/dev/null 2>&1
    "$K" launch --nproc 2 --master-port "$(port)" -- "${common[@]}" --out "$OUT/kiln-$arch-2-$round" >/dev/null 2>&1
    .venv/bin/python benches/ddp_pytorch.py "$arch" "$DATA" "$batch" "$EPOCHS" > "$OUT/torch-$arch-1-$round.json"
    OMP_NUM_THREADS=1 .venv/bin/torchrun --nproc-per-node 2 --master-port "$(port)" \
      benches/ddp_pytorch.py "$arch" "$DATA" "$batch" "$EPOCHS" 2>/dev/null > "$OUT/torch-$arch-2-$round.json"
  done
done
.venv/bin/python - "$OUT" "$EPOCHS" "$ROUNDS" $ARCHS <<'PY'
import json, statistics, sys
out, epochs, rounds, archs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
med = statistics.median
def kiln(arch, n):
    rates, ars, steps = [], [], 0
    for r in range(1, rounds + 1):
        recs = [json.loads(l) for l in open(f"{out}/kiln-{arch}-{n}-{r}/metrics.jsonl")]
        rates.append(max(x["samples_per_sec"] for x in recs if x["kind"] == "epoch"))
        st = [x for x in recs if x["kind"] == "step"]
        ar = [x["allreduce_seconds_per_step"] for x in st if "allreduce_seconds_per_step" in x]
        if ar:
            ars.append(sum(ar) / len(ar) * 1e3)
        steps = len(st) // epochs
    return med(rates), (med(ars) if ars else None), steps, rates
def torch(arch, n):
    rates, ars = [], []
    for r in range(1, rounds + 1):
        x = json.loads(open(f"{out}/torch-{arch}-{n}-{r}.json").read().strip().splitlines()[-1])
        rates.append(max(x["samples_per_sec"]))
        if x["bare_allreduce_ms"] is not None:
            ars.append(x["bare_allreduce_ms"])
    return med(rates), (med(ars) if ars else None), rates
print(f"\nMedian of {rounds} alternating rounds (best epoch of {epochs} in each), global samples/s; one thread per rank.\n")
print("| model | engine | ranks | samples/s | vs 1 rank | kiln ÷ PyTorch | allreduce per step |")
print("|---|---|---|---|---|---|---|")
for arch in archs:
    k1, _, steps1, _ = kiln(arch, 1)
    k2, ar2, steps2, k2s = kiln(arch, 2)
    t1, _, _ = torch(arch, 1)
    t2, tar, t2s = torch(arch, 2)
    print(f"| {arch} | kiln | 1 | {k1:,.0f} | 1.00x | {k1 / t1:.2f}x | - |")
    print(f"| {arch} | PyTorch | 1 | {t1:,.0f} | 1.00x | | - |")
    print(f"| {arch} | kiln | 2 | {k2:,.0f} | {k2 / k1:.2f}x | **{k2 / t2:.2f}x** | {ar2:.3f} ms (in the step) |")
    print(f"| {arch} | PyTorch DDP | 2 | {t2:,.0f} | {t2 / t1:.2f}x | | {tar:.3f} ms (bare, same size) |")
    # 8 ranks on 8 machines, from what was measured: the compute time per step of one
    # rank (1-rank run) plus a ring allreduce, whose bytes per rank grow from 2(N-1)/N = 1
    # (N=2) to 1.75 (N=8) of the gradients and whose latency terms from 2 to 14 hops.
    batch = 54000 / steps1
    t_step = batch / k1
    print(f"|  | (rounds) | 2 | kiln {', '.join(f'{x:,.0f}' for x in k2s)}; PyTorch {', '.join(f'{x:,.0f}' for x in t2s)} | | | |")
    print(f"|  | *estimate* | 8 | ~{8 * batch / (t_step + 1.75 * ar2 / 1e3):,.0f} | | | ~{1.75 * ar2:.3f} ms (bandwidth-bound) to ~{7 * ar2:.3f} ms (latency-bound) |")
PY
