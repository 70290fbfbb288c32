#!/usr/bin/env python3
"""The `transformers` anchor of benches/lm_serve.sh: a plain `generate` loop behind a minimal
OpenAI-compatible HTTP server (POST /v1/completions, streamed with TextIteratorStreamer),
one request at a time, as people serve a model with transformers and nothing else.

Usage: lm_serve_hf.py MODEL PORT [--threads N]
MODEL is a .gguf file or a kiln language-model package folder (loaded as
benches/lm_generate_hf.py does: its safetensors into LlamaForCausalLM, its tokenizer.json).
"""
import argparse
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast, TextIteratorStreamer

ap = argparse.ArgumentParser()
ap.add_argument("model")
ap.add_argument("port", type=int)
ap.add_argument("--threads", type=int, default=os.cpu_count())
a = ap.parse_args()
torch.set_num_threads(a.threads)
if a.model.endswith(".gguf"):
    folder, name = os.path.split(os.path.abspath(a.model))
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32).eval()
else:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from lm_generate_hf import load  # noqa: E402

    tok = PreTrainedTokenizerFast(tokenizer_file=os.path.join(a.model, "tokenizer.json"))
    model = load(a.model).eval()
lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_POST(self):
        req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        ids = tok(req["prompt"], return_tensors="pt").input_ids
        streamer = TextIteratorStreamer(tok, skip_prompt=True, skip_special_tokens=True)
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

        def send(obj):
            data = f"data: {obj}\n\n".encode()
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

        with lock:
            kw = dict(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=req.get("max_tokens", 16),
                      do_sample=False, streamer=streamer, pad_token_id=tok.eos_token_id or 0)
            result = {}
            t = threading.Thread(target=lambda: result.update(out=torch.no_grad()(model.generate)(**kw)))
            t.start()
            for piece in streamer:
                if piece:
                    send(json.dumps({"choices": [{"index": 0, "text": piece, "finish_reason": None}]}))
            t.join()
        made = result["out"].shape[1] - ids.shape[1]
        send(json.dumps({"choices": [], "usage": {"completion_tokens": made}}))
        send("[DONE]")
        self.wfile.write(b"0\r\n\r\n")


ThreadingHTTPServer(("127.0.0.1", a.port), Handler).serve_forever()
