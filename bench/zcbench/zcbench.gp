# zcbench.gp: sender CPU per message vs message size, log-log, one line per
# method, from the data files `zcbench -o PREFIX` writes (PREFIX-tcp.dat,
# PREFIX-udp.dat: a header line naming the columns, then per size the median,
# min and max of every method; PREFIX-tcp-cpu0.dat and PREFIX-udp-cpu0.dat the
# same for CPU 0 busy time).  Error bars: min..max over the runs.
#
#   gnuplot -e "dat='/tmp/zcb-out/A-tcp.dat'; out='docs/zcbench-tcp.png'; ttl='...'" \
#           bench/zcbench/zcbench.gp
if (!exists("dat")) dat = 'zcbench-tcp.dat'
if (!exists("out")) out = 'zcbench-tcp.png'
if (!exists("ttl")) ttl = 'zcbench: sender CPU per message'
set terminal pngcairo noenhanced size 1100,700 font ",11"
set output out
set title ttl
set logscale xy
set xlabel 'message size (bytes)'
if (!exists("ylab")) ylab = (strstrt(dat, "-cpu0") > 0) ? \
    'CPU 0 busy per message (us: sender thread + softirq, median)' : \
    'sender CPU per message (us, CLOCK_THREAD_CPUTIME_ID, median)'
set ylabel ylab
if (strstrt(dat, "udp") > 0) {
    set xtics ("256" 256, "1K" 1024, "4K" 4096, "16K" 16384, "60K" 61440)
} else {
    set xtics ("256" 256, "1K" 1024, "4K" 4096, "16K" 16384, "64K" 65536, "256K" 262144, "1M" 1048576)
}
set grid xtics ytics mytics
set key top left
set datafile missing 'NaN'
# number of methods: (columns - 1) / 3, taken from the header line
ncol = int(system(sprintf("awk '!/^#/ {print NF; exit}' '%s'", dat)))
nm = (ncol - 1) / 3
set offsets graph 0.02, graph 0.02, 0, 0
plot for [i=0:nm-1] dat using 1:(column(2+3*i)):(column(3+3*i)):(column(4+3*i)) \
     with yerrorlines lw 2 pt 7 ps 0.8 title columnheader(2+3*i)
