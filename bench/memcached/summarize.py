#!/usr/bin/env python3
"""Summarise bench/memcached/run.sh rows: medians with min..max per size,
protocol and variant, the ratio to stock, and gnuplot data.

    summarize.py RESULTS.tsv OUTDIR

GETs per second per server core is cmd_get over the server's own CPU
seconds (rusage user + system) in the same interval, i.e. 1 / CPU per GET:
the figure that does not depend on how fast the client is. A run whose
checks did not finish (wrong = ERR: memcaslap or mcverify printed no verdict)
is left out of the medians and counted under "failed". "paired" is the
median over runs of the per-run ratio to the stock run of the same round
(the variants run back to back in each round), and "paired 95%" the
percentile bootstrap interval of that median (4000 resamples of the rounds,
a fixed seed, so the same rows give the same interval; at least 5 rounds):
a ratio whose interval is wider than the effect asked about cannot show
it. Writes
OUTDIR/summary.txt (also printed) and OUTDIR/plot-PROTO.dat for mcbench.gp.
"""
import csv
import os
import random
import statistics
import sys


def boot_median_ci(values, resamples=4000, seed=1):
    """Percentile bootstrap 95% interval of the median of @values."""
    rng = random.Random(seed)
    n = len(values)
    meds = sorted(statistics.median(rng.choices(values, k=n)) for _ in range(resamples))
    return meds[int(0.025 * resamples)], meds[int(0.975 * resamples) - 1]


def med_range(values):
    return statistics.median(values), min(values), max(values)


def main():
    rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
    out = sys.argv[2]
    os.makedirs(out, exist_ok=True)
    groups = {}
    for r in rows:
        groups.setdefault((r["proto"], int(r["size"])), {}).setdefault(r["variant"], []).append(r)
    variants = sorted({r["variant"] for r in rows}, key=lambda v: (v != "stock", v))
    lines = ["size\tproto\tvariant\truns\tGETs/s median (min..max)\t"
             "CPU us/GET median (min..max)\tGETs/s per server core\tvs stock per core\t"
             "vs stock GETs/s\tpaired vs stock per core\tpaired 95%\twrong\tfailed"]
    dat = {}
    for (proto, size), vs in sorted(groups.items()):
        base_core = base_gets = None
        for v in variants:
            if v not in vs:
                continue
            ok = [r for r in vs[v] if r["wrong"].isdigit()]
            failed = len(vs[v]) - len(ok)
            if not ok:
                lines.append("%d\t%s\t%s\t0\t-\t-\t-\t-\t-\t-\t-\t-\t%d" % (size, proto, v, failed))
                continue
            g = [float(r["gets_per_s"]) for r in ok]
            c = [float(r["cpu_us_per_get"]) for r in ok]
            core = [1e6 / x for x in c if x > 0]
            wrong = sum(int(r["wrong"]) for r in ok)
            stock_cpu = {r["run"]: float(r["cpu_us_per_get"])
                         for r in vs.get("stock", []) if r["wrong"].isdigit()}
            pairs = [stock_cpu[r["run"]] / float(r["cpu_us_per_get"]) for r in ok
                     if r["run"] in stock_cpu and float(r["cpu_us_per_get"]) > 0]
            rp = "%.3f" % statistics.median(pairs) if pairs else "-"
            ci = "%.3f..%.3f" % boot_median_ci(pairs) if len(pairs) >= 5 and v != "stock" else "-"
            gm, gmin, gmax = med_range(g)
            cm, cmin, cmax = med_range(c)
            km = statistics.median(core) if core else float("nan")
            if v == "stock":
                base_core, base_gets = km, gm
            rc = "%.3f" % (km / base_core) if base_core else "-"
            rg = "%.3f" % (gm / base_gets) if base_gets else "-"
            lines.append("%d\t%s\t%s\t%d\t%.0f (%.0f..%.0f)\t%.2f (%.2f..%.2f)\t%.0f\t%s\t%s\t%s\t%s\t%d\t%d" % (
                size, proto, v, len(g), gm, gmin, gmax, cm, cmin, cmax, km, rc, rg, rp, ci, wrong,
                failed))
            dat.setdefault(proto, {}).setdefault(size, {})[v] = (cm, cmin, cmax, km / base_core if base_core else float("nan"))
    text = "\n".join(lines) + "\n"
    open(out + "/summary.txt", "w").write(text)
    sys.stdout.write(text)
    for proto, bysize in dat.items():
        with open("%s/plot-%s.dat" % (out, proto), "w") as f:
            f.write("# size " + " ".join("%s_cpu %s_min %s_max %s_ratio" % (v, v, v, v) for v in variants) + "\n")
            for size in sorted(bysize):
                cols = []
                for v in variants:
                    cols.extend("%.4f" % x for x in bysize[size].get(v, (float("nan"),) * 4))
                f.write("%d %s\n" % (size, " ".join(cols)))


if __name__ == "__main__":
    main()
