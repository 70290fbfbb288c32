"""One Markdown table row from wrk's output (run with --latency):
requests/s, p50 and p99 in ms, then any extra columns given, then failed requests
(non-2xx answers and socket errors).

Usage: wrk_summary.py WRK_OUTPUT_FILE LABEL [EXTRA_COLUMN ...]
"""

import re
import sys


def ms(v):
    n, unit = re.match(r"([\d.]+)(us|ms|s)", v).groups()
    return float(n) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]


text = open(sys.argv[1]).read()
labels, extra = sys.argv[2].split("|"), sys.argv[3:]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
p50 = ms(re.search(r"\s50%\s+(\S+)", text).group(1))
p99 = ms(re.search(r"\s99%\s+(\S+)", text).group(1))
failed = sum(int(x) for x in re.findall(r"Non-2xx or 3xx responses: (\d+)", text))
sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
failed += sum(int(x) for x in sock.groups()) if sock else 0
cells = labels + [f"{rps:,.0f}", f"{p50:.2f}", f"{p99:.2f}"] + extra + [str(failed)]
print("| " + " | ".join(cells) + " |")
