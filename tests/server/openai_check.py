#!/usr/bin/env python3
"""The official openai client against kiln-serve (tests/server/generation.rs).

Usage: openai_check.py BASE_URL (http://127.0.0.1:PORT/v1). Prints one JSON object of
what the client saw; the Rust test checks it.
"""
import json
import sys

import openai

client = openai.OpenAI(base_url=sys.argv[1], api_key="unused", max_retries=0, timeout=60)
out = {"models": [m.id for m in client.models.list()]}

c = client.completions.create(model="tiny", prompt="And God said", max_tokens=8, temperature=0, logprobs=2)
out["logprobs"] = len(c.choices[0].logprobs.token_logprobs)
out["completion"] = c.choices[0].text
out["completion_finish"] = c.choices[0].finish_reason
out["completion_tokens"] = c.usage.completion_tokens
out["streamed"] = "".join(
    chunk.choices[0].text
    for chunk in client.completions.create(model="tiny", prompt="And God said", max_tokens=8, temperature=0, stream=True)
    if chunk.choices
)

messages = [{"role": "user", "content": "Let there be light"}]
chat = client.chat.completions.create(model="tiny", messages=messages, max_tokens=8, temperature=0,
                                      logprobs=True, top_logprobs=2)
out["chat_logprobs"] = [len(t.top_logprobs) for t in chat.choices[0].logprobs.content]
out["chat"] = chat.choices[0].message.content
out["chat_streamed"] = "".join(
    chunk.choices[0].delta.content or ""
    for chunk in client.chat.completions.create(model="tiny", messages=messages, max_tokens=8, temperature=0, stream=True)
    if chunk.choices
)

# A stop string from the middle of the completion.
stop = out["completion"][len(out["completion"]) // 2:][:2]
s = client.completions.create(model="tiny", prompt="And God said", max_tokens=8, temperature=0, stop=[stop])
out["stopped"] = s.choices[0].text
out["stop_finish"] = s.choices[0].finish_reason

seeded = [client.completions.create(model="tiny", prompt="And", max_tokens=16, temperature=1.0, seed=5).choices[0].text
          for _ in range(2)]
out["seeded_a"], out["seeded_b"] = seeded

several = client.completions.create(model="tiny", prompt="And", max_tokens=6, temperature=1.0, seed=5, n=2)
out["n_choices"] = sorted(c.index for c in several.choices)

try:
    client.completions.create(model="nope", prompt="x", max_tokens=4)
except openai.NotFoundError as e:
    out["not_found"] = {"status": e.status_code, "message": e.message}
try:
    client.completions.create(model="tiny", prompt="x", max_tokens=4, temperature=3)
except openai.BadRequestError as e:
    out["bad_request"] = {"status": e.status_code, "message": e.message}

print(json.dumps(out))
