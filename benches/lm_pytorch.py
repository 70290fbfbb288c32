#!/usr/bin/env python3
"""PyTorch eager training of the same language model on the same data as a kiln run, for
side-by-side curves and throughput (benches/lm_train.sh runs both).

Usage: lm_pytorch.py CONFIG.toml RUN_DIR OUT.jsonl [--epochs N] [--threads N] [--bf16] [--steps N]

CONFIG.toml is the kiln config (configs/kjv-lm.toml); RUN_DIR a kiln run of it, whose
tokenizer.json this script uses, so that both train on identical token ids. The data is
what kiln trains on, rebuilt here independently of kiln's code: the corpus folder's
documents in path order, the same held-out books (kiln's SplitMix64 split, reimplemented
below), each document as [BOS] tokens [EOS], packed into sequences of seq_len + 1 tokens
overlapping by one, batches in kiln's seeded order per epoch. The model is the decoder of
the config (Llama layout: RMSNorm, rotary halves, grouped-query attention through
scaled_dot_product_attention, SwiGLU, tied embeddings), initialised as kiln does (normal
0.02, residual projections / sqrt(2 layers)); torch.optim.AdamW with kiln's warm-up +
cosine schedule, global-norm clipping and no weight decay on parameters matching the
config's groups. Writes one JSON object per logged step ({"step", "loss",
"tokens_per_sec"}) and an evaluation per epoch ({"epoch", "val_loss", "val_bits_per_byte"}).
"""
import argparse
import hashlib
import json
import math
import os
import sys
import time
import tomllib

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer
from torch import nn

M = (1 << 64) - 1


class SplitMix64:
    def __init__(self, seed):
        self.x = seed & M

    def next(self):
        self.x = (self.x + 0x9E3779B97F4A7C15) & M
        z = self.x
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M
        return z ^ (z >> 31)

    def below(self, n):
        return (self.next() * n) >> 64


def for_stream(seed, stream):
    g = SplitMix64(seed)
    for s in stream:
        g = SplitMix64(g.next() ^ ((s * 0x9E3779B97F4A7C15) & M))
    return g


def permutation(n, rng):
    v = list(range(n))
    for i in range(n - 1, 0, -1):
        j = rng.below(i + 1)
        v[i], v[j] = v[j], v[i]
    return v


def byte_lengths(tok):
    """Bytes each token stands for (GPT-2 byte-level symbols; 0 for special tokens)."""
    printable = list(range(0x21, 0x7F)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    chars = set(chr(b) for b in printable) | set(chr(256 + i) for i in range(68))
    special = {t.content for t in tok.get_added_tokens_decoder().values() if t.special}
    out = []
    for i in range(tok.get_vocab_size()):
        t = tok.id_to_token(i)
        out.append(0 if t in special else (len(t) if all(c in chars for c in t) else len(t.encode())))
    return out


class RMSNorm(nn.Module):
    def __init__(self, width, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(width))
        self.eps = eps

    def forward(self, x):
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)


class Block(nn.Module):
    def __init__(self, m):
        super().__init__()
        w, h, kv = m["width"], m["heads"], m["kv_heads"]
        d = w // h
        self.h, self.kv, self.d = h, kv, d
        self.input_layernorm = RMSNorm(w, m["norm_eps"])
        self.post_attention_layernorm = RMSNorm(w, m["norm_eps"])
        self.q_proj = nn.Linear(w, h * d, bias=False)
        self.k_proj = nn.Linear(w, kv * d, bias=False)
        self.v_proj = nn.Linear(w, kv * d, bias=False)
        self.o_proj = nn.Linear(h * d, w, bias=False)
        self.gate_proj = nn.Linear(w, m["ffn_width"], bias=False)
        self.up_proj = nn.Linear(w, m["ffn_width"], bias=False)
        self.down_proj = nn.Linear(m["ffn_width"], w, bias=False)

    def forward(self, x, cos, sin):
        b, t, _ = x.shape
        y = self.input_layernorm(x)
        q = self.q_proj(y).view(b, t, self.h, self.d).transpose(1, 2)
        k = self.k_proj(y).view(b, t, self.kv, self.d).transpose(1, 2)
        v = self.v_proj(y).view(b, t, self.kv, self.d).transpose(1, 2)
        q, k = rotate(q, cos, sin), rotate(k, cos, sin)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=self.h != self.kv)
        x = x + self.o_proj(a.transpose(1, 2).reshape(b, t, -1))
        y = self.post_attention_layernorm(x)
        return x + self.down_proj(F.silu(self.gate_proj(y)) * self.up_proj(y))


def rotate(x, cos, sin):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


class Decoder(nn.Module):
    def __init__(self, m):
        super().__init__()
        self.embed_tokens = nn.Embedding(m["vocab"], m["width"])
        self.layers = nn.ModuleList(Block(m) for _ in range(m["layers"]))
        self.norm = RMSNorm(m["width"], m["norm_eps"])
        d = m["width"] // m["heads"]
        inv = 1.0 / (m["rope_theta"] ** (torch.arange(d // 2, dtype=torch.float64) * 2.0 / d))
        ang = torch.outer(torch.arange(m["context"], dtype=torch.float64), inv)
        self.register_buffer("cos", ang.cos().float(), persistent=False)
        self.register_buffer("sin", ang.sin().float(), persistent=False)
        for name, p in self.named_parameters():
            if name.endswith("proj.weight") or name.endswith("embed_tokens.weight"):
                std = 0.02 / math.sqrt(2 * m["layers"]) if name.split(".")[-2] in ("o_proj", "down_proj") else 0.02
                nn.init.normal_(p, 0.0, std)

    def forward(self, ids):
        t = ids.shape[1]
        cos, sin = self.cos[:t], self.sin[:t]
        x = self.embed_tokens(ids)
        for layer in self.layers:
            x = layer(x, cos, sin)
        return self.norm(x) @ self.embed_tokens.weight.T


def lr_at(cfg, step, total, per_epoch):
    base = cfg["lr"]
    s = cfg.get("schedule", {"kind": "constant"})
    if s["kind"] != "cosine":
        return base
    warmup = round(s.get("warmup_epochs", 0.0) * per_epoch)
    if step < warmup:
        return base * (step + 1) / warmup
    span = max(total - warmup - 1, 1)
    t = min((step - warmup) / span, 1.0)
    mf = s.get("min_factor", 0.0)
    return base * (mf + (1 - mf) * 0.5 * (1 + math.cos(math.pi * t)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("config")
    ap.add_argument("run")
    ap.add_argument("out")
    ap.add_argument("--epochs", type=int)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--bf16", action="store_true", help="autocast the forward pass to bfloat16 on the CPU")
    ap.add_argument("--steps", type=int, default=0, help="stop after this many steps (0: all), for speed checks")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    cfg = tomllib.load(open(a.config, "rb"))
    seed, text, m, opt_cfg = cfg["seed"], cfg["text"], dict(cfg["model"]), cfg["optimizer"]
    epochs = a.epochs or cfg["epochs"]
    tok = Tokenizer.from_file(os.path.join(a.run, "tokenizer.json"))
    m.setdefault("norm_eps", 1e-5)
    m.setdefault("rope_theta", 10000.0)
    m["vocab"] = tok.get_vocab_size()
    bos, eos = tok.token_to_id("<|bos|>"), tok.token_to_id("<|eos|>")
    folder = text["corpus"]["path"]
    names = sorted(f for f in os.listdir(folder) if f.endswith(".txt"))
    docs = [open(os.path.join(folder, f), encoding="utf-8").read() for f in names]
    order = permutation(len(docs), for_stream(seed, [0x5B17D0C5]))
    held = round(len(docs) * text["validation"]) or 1
    val_ids, train_ids = sorted(order[:held]), sorted(order[held:])
    enc = [e.ids for e in tok.encode_batch(docs, add_special_tokens=False)]

    def pack(ids):
        stream = []
        for i in ids:
            stream += [bos] + enc[i] + [eos]
        return torch.tensor(stream, dtype=torch.long)

    T, B = text["seq_len"], cfg["batch_size"]
    train, val = pack(train_ids), pack(val_ids)
    n_train = (len(train) - 1) // T
    per_epoch = -(-n_train // B)
    total = per_epoch * epochs
    torch.manual_seed(seed)
    model = Decoder(m)
    groups = [g["match"] for g in opt_cfg.get("groups", [])]
    decay = [p for n, p in model.named_parameters() if not any(g in n for g in groups)]
    no_decay = [p for n, p in model.named_parameters() if any(g in n for g in groups)]
    betas = tuple(opt_cfg.get("betas", (0.9, 0.999)))
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": opt_cfg.get("weight_decay", 0.0)}, {"params": no_decay, "weight_decay": 0.0}],
        lr=opt_cfg["lr"], betas=betas, eps=opt_cfg.get("eps", 1e-8),
    )
    lens = torch.tensor(byte_lengths(tok), dtype=torch.long)
    log = open(a.out, "w")
    print(f"pytorch {torch.__version__}: {sum(p.numel() for p in model.parameters())} parameters, "
          f"{n_train} sequences, {per_epoch} steps per epoch, {a.threads} threads", file=sys.stderr)
    step = 0
    for epoch in range(epochs):
        model.train()
        perm = permutation(n_train, for_stream(seed, [epoch, 0x70CE5EED]))
        started, tokens = time.perf_counter(), 0
        for b in range(per_epoch):
            rows = perm[b * B:(b + 1) * B]
            seqs = torch.stack([train[r * T:r * T + T + 1] for r in rows])
            x, y = seqs[:, :-1], seqs[:, 1:]
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.bf16):
                logits = model(x)
            loss = F.cross_entropy(logits.float().reshape(-1, m["vocab"]), y.reshape(-1))
            loss.backward()
            if opt_cfg.get("clip_grad_norm"):
                torch.nn.utils.clip_grad_norm_(model.parameters(), opt_cfg["clip_grad_norm"])
            for g in opt.param_groups:
                g["lr"] = lr_at(opt_cfg, step, total, per_epoch)
            opt.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            tokens += x.numel()
            if a.steps and step >= a.steps:
                print(json.dumps({"steps": step, "bf16": a.bf16, "tokens_per_sec": tokens / (time.perf_counter() - started)}))
                return
            if step % cfg.get("log_every_steps", 1) == 0:
                rate = tokens / (time.perf_counter() - started)
                log.write(json.dumps({"kind": "step", "step": step, "loss": loss.item(), "tokens_per_sec": rate}) + "\n")
                log.flush()
        model.eval()
        nats, nbytes, count, n_val = 0.0, 0, 0, (len(val) - 1) // T
        limit = text.get("eval_sequences", 0) or n_val
        with torch.no_grad():
            for s in range(0, min(n_val, limit), cfg["eval_batch_size"]):
                rows = range(s, min(s + cfg["eval_batch_size"], n_val, limit))
                seqs = torch.stack([val[r * T:r * T + T + 1] for r in rows])
                logits = model(seqs[:, :-1]).float()
                y = seqs[:, 1:].reshape(-1)
                nats += F.cross_entropy(logits.reshape(-1, m["vocab"]), y, reduction="sum").item()
                nbytes += lens[y].sum().item()
                count += y.numel()
        rec = {"kind": "epoch", "epoch": epoch + 1, "val_loss": nats / count,
               "val_bits_per_byte": nats / math.log(2) / nbytes,
               "tokens_per_sec": tokens / (time.perf_counter() - started)}
        log.write(json.dumps(rec) + "\n")
        log.flush()
        print(json.dumps(rec), file=sys.stderr)


if __name__ == "__main__":
    main()
