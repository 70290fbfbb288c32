#!/usr/bin/env python3
"""Hugging Face transformers' side of the SmolLM2 parity test (tests/trainer/smollm2.rs),
independent of kiln's code.

Usage: smollm2_reference.py GGUF OUT_DIR

Loads the GGUF file with transformers (which dequantises it to float32 with the `gguf`
package), tokenizes each prompt with transformers' tokenizer built from the same file, and
writes OUT_DIR/reference.safetensors (logits_<i>: the float32 logits [T, vocab] of prompt
i at every position) and OUT_DIR/reference.json ({"prompts": [...], "ids": [[...]],
"greedy": [[...]]}: the token ids and the greedy continuation of 32 tokens, not stopped
at any end token). Files are written under temporary names and renamed into place.
"""
import json
import os
import sys

import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, AutoTokenizer

PROMPTS = [
    "The capital of France is",
    "In the beginning God created the heaven and the earth. And the earth was",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return",
    "<|im_start|>user\nWhat is 17 + 25?<|im_end|>\n<|im_start|>assistant\n",
    "Rust is a systems programming language that",
    # Bytes whose byte-level symbols the vocabulary lacks (0x04, and 0xF1 leading a
    # character of plane 5): both tokenizers must make each the unknown token.
    "A control byte \x04 here, and a rare character: \U00050000 there. 42 + 7 = 49",
]

torch.set_num_threads(2)


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    gguf, out = sys.argv[1], sys.argv[2]
    folder, name = os.path.split(os.path.abspath(gguf))
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    model.eval()
    tensors, ids, greedy = {}, [], []
    with torch.no_grad():
        for i, prompt in enumerate(PROMPTS):
            x = tok(prompt, return_tensors="pt", add_special_tokens=False).input_ids
            tensors[f"logits_{i}"] = model(x).logits[0].float().contiguous()
            # Greedy decoding of exactly 32 tokens (not stopping at any end token), with
            # transformers' own KV cache.
            step = model(x, use_cache=True)
            past, g = step.past_key_values, []
            for _ in range(32):
                nxt = step.logits[0, -1].argmax().item()
                g.append(nxt)
                step = model(torch.tensor([[nxt]]), past_key_values=past, use_cache=True)
                past = step.past_key_values
            ids.append(x[0].tolist())
            greedy.append(g)
    os.makedirs(out, exist_ok=True)
    save_file(tensors, os.path.join(out, "reference.safetensors.tmp"))
    with open(os.path.join(out, "reference.json.tmp"), "w") as f:
        json.dump({"prompts": PROMPTS, "ids": ids, "greedy": greedy}, f)
    os.replace(os.path.join(out, "reference.safetensors.tmp"), os.path.join(out, "reference.safetensors"))
    os.replace(os.path.join(out, "reference.json.tmp"), os.path.join(out, "reference.json"))
    for p, g in zip(PROMPTS, greedy):
        print(repr(p[-30:]), "->", repr(tok.decode(g)), file=sys.stderr)


if __name__ == "__main__":
    main()
