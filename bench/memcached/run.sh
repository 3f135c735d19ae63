#!/usr/bin/env bash
# Stock vs zcopy-patched memcached on one machine, on the veth+XDP topology
# (bench/topology/topology.sh): the server in namespace zc-tx pinned to CPU 0
# with one worker thread (-t 1), the clients in zc-rx pinned to CPU 1 (where
# the topology also pins the receiving veth's NAPI thread).
#
#   bench/memcached/run.sh [-r RUNS] [-d SECONDS] [-z "SIZES"] [-b "BACKENDS"] [-u UDP_MAX] [-o OUT]
#
# For every value size, RUNS times, stock and patched (one server per zcopy
# backend) interleaved, each on a fresh server: filled to its -m (mem_mib
# below) so that it evicts, then memcaslap
# (GET:SET 9:1, fixed value size, every GET reply checked against what it set:
# --verify=1.0) for SECONDS over TCP (and over UDP for sizes up to UDP_MAX),
# then mcverify (this directory's client) reads for 1 s and checks every value
# byte for byte; wrong = memcaslap's verify_failed + mcverify's wrong (must
# be 0). The server's own rusage (stats rusage_user + rusage_system) and
# cmd_get around the memcaslap
# run give GETs per second and server CPU per GET (its inverse: GETs per second
# per server core). Rows go to OUT/results.tsv; summarize.py writes medians with
# min..max and ratios to stock to OUT/summary.txt, and with gnuplot the plots
# OUT/memcached-tcp.png and OUT/memcached-udp.png (mcbench.gp).
#
# A backend written BACKEND@DIR compares builds side by side: the patched
# server is DIR/memcached-zcopy if DIR has one (a build.sh MC_BUILD_DIR), and
# a DIR holding libzcopy.so.0 is put on LD_LIBRARY_PATH (the server's RUNPATH
# yields to it); e.g. -b "iouring@/tmp/mc-a iouring@/tmp/mc-b".
#
# Defaults: RUNS=5, SECONDS=10, SIZES="256 512 4096 16384 65536 262144",
# BACKENDS from zcopy-probe, UDP_MAX=1024, OUT=build/memcached/bench.
# Needs root (namespaces), memcaslap (libmemcached-tools) and the servers
# from examples/memcached/build.sh (MC_BUILD_DIR as there).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
mc=${MC_BUILD_DIR:-$root/build/memcached}
runs=5 secs=10 udp_max=1024
sizes="256 512 4096 16384 65536 262144"
backends=""
out=$mc/bench
while getopts "r:d:z:b:u:o:" o; do
  case $o in
    r) runs=$OPTARG ;; d) secs=$OPTARG ;; z) sizes=$OPTARG ;; b) backends=$OPTARG ;;
    u) udp_max=$OPTARG ;; o) out=$OPTARG ;;
    *) sed -n '2,30p' "$0"; exit 2 ;;
  esac
done
[ "$(id -u)" -eq 0 ] || { echo "run as root (network namespaces)" >&2; exit 1; }
for b in memcached-stock memcached-zcopy; do
  [ -x "$mc/$b" ] || { echo "no $mc/$b: run examples/memcached/build.sh" >&2; exit 1; }
done
command -v memcaslap >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q libmemcached-tools >/dev/null
mkdir -p "$out"
gcc -std=c11 -O2 -Wall -Wextra -Werror -o "$out/mcverify" "$here/mcverify.c"
if [ -z "$backends" ]; then
  prefix=$(cat "$mc/zcopy-prefix.txt")
  backends=$(LD_LIBRARY_PATH=$prefix/lib "$prefix/bin/zcopy-probe" | awk '$2 == "available" { print $1 }' | tr '\n' ' ')
fi
"$root/bench/topology/topology.sh" up >/dev/null

SRV=198.18.0.1
PORT=11311
TX="ip netns exec zc-tx"
RX="ip netns exec zc-rx"
pid=""

stats() { # prints "cmd_get rusage_user rusage_system evictions zc_bytes copied_bytes minflt"
  $RX python3 - "$SRV" "$PORT" <<'EOF'
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), 5)
def ask(cmd):  # a stats command's STAT lines; none where the server does not know it
    s.sendall(cmd + b"\r\n")
    buf = b""
    while not buf.endswith((b"END\r\n", b"ERROR\r\n")):
        chunk = s.recv(65536)
        if not chunk:
            break
        buf += chunk
    return dict(l.split()[1:3] for l in buf.decode().splitlines() if l.startswith("STAT "))
st = ask(b"stats")
st.update(ask(b"stats zcopy"))
# a patched server's reply bytes by zcopy (0 0 for stock)
print(st["cmd_get"], st["rusage_user"], st["rusage_system"], st["evictions"],
      st.get("zcopy_bytes_zerocopy", 0), st.get("zcopy_bytes_copied", 0), end=" ")
EOF
  # the server's minor page faults (field 10 of /proc/PID/stat; its comm has no spaces)
  awk '{ print $10 }' "/proc/$pid/stat"
}

start_server() { # start_server stock|zcopy BACKEND MEMORY_MIB
  local bin=$mc/memcached-$1 extra=()
  local backend=${2%%@*} dir="" lib=${LD_LIBRARY_PATH:-}
  [ "$1" = zcopy ] && extra=(-o zcopy)
  [[ "$2" == *@* ]] && dir=${2#*@}
  if [ -n "$dir" ]; then
    [ -x "$dir/memcached-zcopy" ] && bin=$dir/memcached-zcopy
    [ -e "$dir/libzcopy.so.0" ] && lib=$dir
  fi
  ZC_BACKEND=$backend LD_LIBRARY_PATH=$lib $TX taskset -c 0 "$bin" -u root -t 1 -l "$SRV" -p "$PORT" -U "$PORT" \
    -m "$3" -I 2m -c 4096 "${extra[@]}" >"$out/server.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 50); do
    # ip netns exec and taskset exec the server: wait until $pid is it
    [ "$(readlink "/proc/$pid/exe")" = "$(readlink -f "$bin")" ] || { sleep 0.1; continue; }
    stats >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "server $1/$2 did not start:" >&2
  cat "$out/server.log" >&2
  return 1
}

stop_server() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  pid=""
}
trap stop_server EXIT

results=$out/results.tsv
printf 'size\tproto\tvariant\trun\tgets_per_s\tcpu_us_per_get\twrong\tverify_gets\tverify_lost\tevictions\tminflt_per_get\tzc_share\n' >"$results"

# The cache size (-m, MiB) for a value size: the server is filled to it
# before the measured window, so SETs in the window evict and reuse memory
# (a cache in service is full) instead of growing the slab, which stock
# memcached zeroes page by page; and it is large enough that what
# memcaslap adds in a window of up to 10 s (about a ninth of its GETs, about
# 1.4 GB at 64 KiB and 256 KiB here) does not evict memcaslap's own keys.
mem_mib() {
  if [ "$1" -le 1024 ]; then echo 128
  elif [ "$1" -le 4096 ]; then echo 512
  elif [ "$1" -le 16384 ]; then echo 1024
  else echo 2048
  fi
}

one_run() { # one_run SIZE PROTO VARIANT BACKEND RUN
  local size=$1 proto=$2 variant=$3 backend=$4 run=$5 keys fill mem cfg before after vline wrong vgets vlost
  keys=$((64 * 1024 * 1024 / size))
  [ "$keys" -gt 20000 ] && keys=20000
  [ "$keys" -lt 64 ] && keys=64
  mem=$(mem_mib "$size")
  # enough keys to hold 5% more than -m even at 80 bytes of item overhead:
  # the cache is full (evicting) before memcaslap starts
  fill=$((mem * 1024 * 1024 / (size + 80) * 21 / 20))
  start_server "$variant" "$backend" "$mem" || return 1
  # the fill first, then mcverify's keys again, so they are the newest
  $RX taskset -c 1 "$out/mcverify" -s "$SRV" -p "$PORT" -k "$fill" -z "$size" -w 64 -P >/dev/null
  $RX taskset -c 1 "$out/mcverify" -s "$SRV" -p "$PORT" -k "$keys" -z "$size" -w 64 -P >/dev/null
  cfg=$out/memcaslap-$size.cfg
  printf 'key\n16 16 1\nvalue\n%s %s 1\ncmd\n0 0.1\n1 0.9\n' "$size" "$size" >"$cfg"
  local udp=()
  [ "$proto" = udp ] && udp=(-U)
  before=$(stats)
  $RX taskset -c 1 memcaslap -s "$SRV:$PORT" -T 1 -c 16 -X "$size" -F "$cfg" -t "${secs}s" \
    --verify=1.0 "${udp[@]}" >"$out/memcaslap.log" 2>&1 || true
  after=$(stats)
  local u=()
  [ "$proto" = udp ] && u=(-u)
  vline=$($RX taskset -c 1 "$out/mcverify" -s "$SRV" -p "$PORT" -k "$keys" -z "$size" -t 1 -r 0 "${u[@]}" 2>>"$out/verify.err" || true)
  stop_server
  wrong=$(sed -nE 's/.* wrong=([0-9]+).*/\1/p' <<<"$vline")
  # memcaslap checked every GET reply against what it set (--verify=1.0)
  local vfail
  vfail=$(sed -nE 's/^verify_failed: ([0-9]+)/\1/p' "$out/memcaslap.log")
  [ -n "$wrong" ] && [ -n "$vfail" ] && wrong=$((wrong + vfail)) || wrong=""
  # a run without both verdicts is a failed run (summarize.py counts it apart): keep its logs
  local failed_log=$out/failed-$size-$proto-$variant${backend:+-${backend//\//_}}-$run.log
  [ -n "$wrong" ] || { cp "$out/memcaslap.log" "$failed_log"; printf 'mcverify: %s\n' "$vline" >>"$failed_log"; }
  vgets=$(sed -nE 's/.* gets=([0-9]+).*/\1/p' <<<"$vline")
  vlost=$(sed -nE 's/.* lost=([0-9]+).*/\1/p' <<<"$vline")
  python3 - "$before" "$after" "$secs" "$size" "$proto" "$variant${backend:+:$backend}" "$run" \
    "${wrong:-ERR}" "${vgets:-0}" "${vlost:-0}" >>"$results" <<'EOF'
import sys
b = [float(x) for x in sys.argv[1].split()]
a = [float(x) for x in sys.argv[2].split()]
secs = float(sys.argv[3])
gets = a[0] - b[0]
cpu = (a[1] - b[1]) + (a[2] - b[2])
nan = float("nan")
# zc_share: of the reply bytes zcopy sent in the window, the share it sent without a copy
zc, cp = a[4] - b[4], a[5] - b[5]
share = "%.3f" % (zc / (zc + cp)) if zc + cp > 0 else "-"
print("%s\t%s\t%s\t%s\t%.0f\t%.3f\t%s\t%s\t%s\t%d\t%.3f\t%s" % (sys.argv[4], sys.argv[5], sys.argv[6], sys.argv[7],
      gets / secs, cpu / gets * 1e6 if gets else nan, sys.argv[8], sys.argv[9], sys.argv[10],
      a[3] - b[3], (a[6] - b[6]) / gets if gets else nan, share))
EOF
  tail -n 1 "$results"
}

for size in $sizes; do
  protos=tcp
  [ "$size" -le "$udp_max" ] && protos="tcp udp"
  for proto in $protos; do
    for run in $(seq 1 "$runs"); do
      one_run "$size" "$proto" stock "" "$run"
      for b in $backends; do
        one_run "$size" "$proto" zcopy "$b" "$run"
      done
    done
  done
done

"$here/summarize.py" "$results" "$out" >/dev/null
if command -v gnuplot >/dev/null; then
  nv=$(awk 'NR == 1 { print (NF - 2) / 4 }' "$out/plot-tcp.dat")
  for proto in tcp udp; do
    [ -s "$out/plot-$proto.dat" ] || continue
    gnuplot -e "dat='$out/plot-$proto.dat'; out='$out/memcached-$proto.png'; ttl='memcached 1.6.18 on veth+XDP, $proto: stock vs zcopy'; nv=$nv" "$here/mcbench.gp"
  done
fi
cat "$out/summary.txt"
