#!/usr/bin/env python3
"""Prepares the King James Bible corpus from the output of Debian's `bible` command.

Usage: bible -f "Gen1:1-Rev22:21" | prepare.py OUT_DIR

Checks the input against the checksum of bible-kjv 4.x's text, then writes one file per
book, OUT_DIR/NN-Abbrev.txt (66 files, in canonical order), each holding its verses' text
one verse per line, without the references, and a blank line between chapters. The folder
is written beside OUT_DIR and renamed into place, so OUT_DIR is either complete or absent.
"""
import hashlib
import os
import re
import shutil
import sys

INPUT_SHA256 = "cd45f0c9cedab8e4439bd6486c8952c77cc8b0ecc5d1f6ae3513f2039f47229d"
VERSES = 31102
BOOKS = 66
VERSE = re.compile(r"^([1-3]?[A-Za-z]+)(\d+):(\d+) (.*)$")


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    data = sys.stdin.buffer.read()
    got = hashlib.sha256(data).hexdigest()
    if got != INPUT_SHA256:
        sys.exit(
            f"prepare.py: the input's sha256 is {got}, not {INPUT_SHA256}: "
            'expected the output of `bible -f "Gen1:1-Rev22:21"` from Debian\'s bible-kjv package'
        )
    books = []  # [(abbrev, [(chapter, text)])]
    for n, line in enumerate(data.decode("ascii").splitlines(), 1):
        m = VERSE.match(line)
        if not m:
            sys.exit(f"prepare.py: line {n} is not a verse: {line[:60]!r}")
        book, chapter, text = m.group(1), int(m.group(2)), m.group(4)
        if not books or books[-1][0] != book:
            books.append((book, []))
        books[-1][1].append((chapter, text))
    verses = sum(len(v) for _, v in books)
    if len(books) != BOOKS or verses != VERSES:
        sys.exit(f"prepare.py: found {len(books)} books and {verses} verses, expected {BOOKS} and {VERSES}")
    tmp = out.rstrip("/") + ".tmp-prepare"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    for i, (book, verses) in enumerate(books, 1):
        lines, last = [], None
        for chapter, text in verses:
            if last is not None and chapter != last:
                lines.append("")
            lines.append(text)
            last = chapter
        with open(os.path.join(tmp, f"{i:02d}-{book}.txt"), "w", encoding="ascii") as f:
            f.write("\n".join(lines) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    os.rename(tmp, out)
    total = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out))
    print(f"prepare.py: wrote {BOOKS} books, {VERSES} verses, {total} bytes to {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
