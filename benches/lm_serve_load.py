#!/usr/bin/env python3
"""Load generator for OpenAI-compatible completion servers (benches/lm_serve.sh).

Usage: lm_serve_load.py BASE_URL MODEL PROMPT_FILE --streams 1 4 16 [--max-tokens 128] [--label NAME]

After one warm-up request, for each concurrency N, N clients each stream one completion of
the same prompt (greedy, max_tokens new tokens) at once. Prints one JSON line per N: time to first token (median, p90), inter-token
latency (median, p99, over every gap between streamed chunks), single-stream tokens/s
(each stream's tokens after the first over its decoding time, median) and aggregate
tokens/s (all tokens generated over the round's wall time).
"""
import argparse
import json
import statistics
import threading
import time
import urllib.request


def stream_one(url, model, prompt, max_tokens, out):
    body = json.dumps({"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0,
                       "stream": True, "stream_options": {"include_usage": True}}).encode()
    req = urllib.request.Request(url + "/completions", data=body, headers={"Content-Type": "application/json"})
    start = time.perf_counter()
    stamps, tokens = [], None
    with urllib.request.urlopen(req, timeout=600) as r:
        for raw in r:
            line = raw.decode().strip()
            if not line.startswith("data: "):
                continue
            data = line[6:]
            if data == "[DONE]":
                break
            chunk = json.loads(data)
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            if chunk.get("choices") and chunk["choices"][0].get("text"):
                stamps.append(time.perf_counter())
    out.append({"start": start, "stamps": stamps, "tokens": tokens if tokens is not None else len(stamps),
                "end": time.perf_counter()})


def round_(url, model, prompt, n, max_tokens):
    out = []
    threads = [threading.Thread(target=stream_one, args=(url, model, prompt, max_tokens, out)) for _ in range(n)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out, time.perf_counter() - t0


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))] if values else float("nan")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("model")
    ap.add_argument("prompt_file")
    ap.add_argument("--streams", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--label", default="")
    a = ap.parse_args()
    prompt = open(a.prompt_file).read()
    round_(a.url, a.model, prompt, 1, 8)
    for n in a.streams:
        out, wall = round_(a.url, a.model, prompt, n, a.max_tokens)
        ttft = [r["stamps"][0] - r["start"] for r in out if r["stamps"]]
        gaps = [b - a_ for r in out for a_, b in zip(r["stamps"], r["stamps"][1:])]
        single = [(r["tokens"] - 1) / (r["stamps"][-1] - r["stamps"][0]) for r in out if len(r["stamps"]) > 1]
        total = sum(r["tokens"] for r in out)
        print(json.dumps({
            "server": a.label, "streams": n, "tokens": total, "wall_s": wall,
            "aggregate_tokens_per_s": total / wall,
            "ttft_median_s": statistics.median(ttft), "ttft_p90_s": pct(ttft, 0.9),
            "itl_median_ms": 1000 * statistics.median(gaps) if gaps else None,
            "itl_p99_ms": 1000 * pct(gaps, 0.99) if gaps else None,
            "single_stream_tokens_per_s": statistics.median(single) if single else None,
        }), flush=True)


if __name__ == "__main__":
    main()
