# Server CPU per GET and GETs/s per server core relative to stock, from
# summarize.py's plot-PROTO.dat (columns per variant: cpu min max ratio;
# the variant order is the file's header line).
#   gnuplot -e "dat='OUT/plot-tcp.dat'; out='docs/memcached-tcp.png'; ttl='...'; nv=4" bench/memcached/mcbench.gp
if (!exists("nv")) nv = 4
if (!exists("ttl")) ttl = "memcached: stock vs zcopy"
set terminal pngcairo size 1100,460 font ",10" noenhanced
set output out
set multiplot layout 1,2 title ttl
set logscale x 2
set xlabel "value size (bytes)"
set grid
set key top left
hdr = system("head -1 ".dat)
name(i) = substr(word(hdr, 3 + 4 * (i - 1)), 1, strstrt(word(hdr, 3 + 4 * (i - 1)), "_cpu") - 1)
set ylabel "server CPU per GET (us), median and min..max"
set logscale y
plot for [i=1:nv] dat using ($1 * (1 + 0.04 * (i - 1))):(column(2 + 4 * (i - 1))):(column(3 + 4 * (i - 1))):(column(4 + 4 * (i - 1))) \
     with yerrorlines title name(i)
unset logscale y
set ylabel "GETs/s per server core, x stock"
set key top left
plot for [i=1:nv] dat using 1:(column(5 + 4 * (i - 1))) with linespoints title name(i), \
     1.20 with lines dt 2 lc rgb "gray" title "1.20x"
unset multiplot
