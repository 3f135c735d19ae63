#!/usr/bin/env python3
"""Paired ratios from zcbench's PREFIX-runs.txt: for every protocol and size,
the median over runs of A's CPU per message divided by B's in the same run
(each run measures every method back to back, so a slow phase of the machine
hits both), with the quartiles and the ratio of the means.

    bench/zcbench/paired.py [--col NAME] PREFIX-runs.txt [MORE-runs.txt ...] zc_iouring uring_zc_fixed

Several files pool their runs (each file's runs kept apart), e.g. the same
zcbench command run four times in a row.  --col compares another column of
the header (default cpu_us, the sender thread's CPU; cpu0_us is all of CPU 0's
busy time, sender and softirq together).
"""
import collections
import statistics
import sys


def main():
    args = sys.argv[1:]
    col = 'cpu_us'
    if len(args) >= 2 and args[0] == '--col':
        col, args = args[1], args[2:]
    if len(args) < 3:
        sys.exit(__doc__.strip())
    paths, (a, b) = args[:-2], args[-2:]
    cpu = collections.defaultdict(lambda: collections.defaultdict(dict))
    for n, path in enumerate(paths):
        with open(path) as f:
            names = f.readline().lstrip('#').split()
            if col not in names:
                sys.exit(f"{path}: no column {col} (has {' '.join(names)})")
            k = names.index(col)
            for line in f:
                if line.startswith('#'):
                    continue
                v = line.split()
                proto, size, method, run, ok = v[:5]
                if ok == '1' and v[k] not in ('nan', '-nan'):
                    cpu[(proto, int(size))][method][(n, int(run))] = float(v[k])
    print(f"proto size {a}/{b} ({col}): paired median [q1..q3] (ratio of means, runs)")
    for key in sorted(cpu):
        x, y = cpu[key].get(a, {}), cpu[key].get(b, {})
        ratios = sorted(x[r] / y[r] for r in x if r in y and y[r] > 0)
        if not ratios:
            continue
        n = len(ratios)
        print(f"{key[0]} {key[1]:>8} {statistics.median(ratios):.3f} "
              f"[{ratios[n // 4]:.3f}..{ratios[(3 * n) // 4]:.3f}] "
              f"({statistics.mean(x.values()) / statistics.mean(y.values()):.3f}, {n})")


if __name__ == '__main__':
    main()
