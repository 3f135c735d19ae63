#!/usr/bin/env python3
"""perf-stacks.py PERF_DATA SYM[,SYM...] [TOP]

Samples of `perf record -g` per process (comm and pid), and of those the
samples whose call stack holds each SYM (a substring of a frame's symbol):
where a thread's CPU time went, counted the same way for two recordings.
E.g. what softirq work (handle_softirqs, skb_defer_free_flush) landed on a
sender's thread. Prints the TOP (default 4) processes by samples."""
import collections
import subprocess
import sys


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    path, syms = sys.argv[1], sys.argv[2].split(",")
    top = int(sys.argv[3]) if len(sys.argv) > 3 else 4
    out = subprocess.run(["perf", "script", "-i", path, "-F", "comm,pid,ip,sym"],
                         capture_output=True, text=True, check=True).stdout
    total, hits = collections.Counter(), collections.Counter()
    proc, stack = None, []

    def flush():
        if proc is None:
            return
        total[proc] += 1
        for s in syms:
            if any(s in frame for frame in stack):
                hits[(proc, s)] += 1

    for line in out.split("\n"):
        if not line.strip():
            flush()
            proc, stack = None, []
        elif not line[0].isspace():
            proc, stack = " ".join(line.split()[:2]), []
        else:
            stack.append(line.strip())
    flush()
    print("process samples " + " ".join(syms))
    for p, n in total.most_common(top):
        print(p, n, " ".join(str(hits[(p, s)]) for s in syms))


if __name__ == "__main__":
    main()
