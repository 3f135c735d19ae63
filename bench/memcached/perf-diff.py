#!/usr/bin/env python3
"""Where two servers' CPU per GET differs, function by function.

    bench/memcached/perf-diff.py STOCK.data PATCHED.data STOCK_US PATCHED_US [N]

STOCK.data and PATCHED.data are perf-servers.sh profiles of one run.sh
round; STOCK_US and PATCHED_US the servers' CPU us/GET in that round
(results.tsv, column cpu_us_per_get). Each function's share of its
server's samples (self time, as perf report --no-children) times that
server's us/GET gives us per GET; prints the N (default 15) functions that
are the most cheaper and the most dearer in PATCHED, and the totals.
"""
import subprocess
import sys


def self_shares(path):
    out = subprocess.run(["perf", "report", "-i", path, "--no-children", "--sort", "sym",
                          "-g", "none", "--percent-limit", "0"],
                         capture_output=True, text=True, check=True).stdout
    shares = {}
    for line in out.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        try:
            pct = float(fields[0].rstrip("%"))
        except ValueError:
            continue
        sym = " ".join(fields[2:])  # after the percentage and [k]/[.]
        shares[sym] = shares.get(sym, 0.0) + pct
    return shares


def main():
    if len(sys.argv) not in (5, 6):
        sys.exit(__doc__)
    a, b = self_shares(sys.argv[1]), self_shares(sys.argv[2])
    us_a, us_b = float(sys.argv[3]), float(sys.argv[4])
    n = int(sys.argv[5]) if len(sys.argv) == 6 else 15
    rows = sorted((b.get(s, 0.0) * us_b / 100 - a.get(s, 0.0) * us_a / 100, s)
                  for s in set(a) | set(b))
    print("us per GET, patched minus stock (%.2f - %.2f = %+.2f)" % (us_b, us_a, us_b - us_a))
    print("cheaper in patched:")
    for d, s in rows[:n]:
        print("  %+7.2f  %s" % (d, s))
    print("dearer in patched:")
    for d, s in reversed(rows[-n:]):
        print("  %+7.2f  %s" % (d, s))


if __name__ == "__main__":
    main()
