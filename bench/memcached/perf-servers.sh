#!/usr/bin/env bash
# Profiles the servers of one run.sh round: start it first, then run.sh.
#
#   bench/memcached/perf-servers.sh [OUTDIR] &
#   bench/memcached/run.sh -r 1 -d 12 -z 65536 -b iouring -u 0
#
# For memcached-stock, then memcached-zcopy: waits (at most 30 s) for the
# server, then (at most 120 s) for memcaslap to start, which is after the
# fill, lets PERF_DELAY (default 1) seconds pass, records 4 s of the server
# with call graphs into OUTDIR/perf-NAME.data (default /tmp), and waits (at
# most 120 s) for it to exit. Read with perf report -i ... --no-children.
set -u
out=${1:-/tmp}
for name in memcached-stock memcached-zcopy; do
  pid=""
  for _ in $(seq 1 300); do
    pid=$(pgrep -f "$name -u root" | head -n 1)
    [ -n "$pid" ] && break
    sleep 0.1
  done
  [ -n "$pid" ] || { echo "no $name within 30 s" >&2; continue; }
  for _ in $(seq 1 1200); do
    pgrep -x memcaslap >/dev/null && break
    sleep 0.1
  done
  pgrep -x memcaslap >/dev/null || { echo "no memcaslap within 120 s" >&2; continue; }
  sleep "${PERF_DELAY:-1}"
  perf record -F 2000 -e cpu-clock -g -p "$pid" -o "$out/perf-$name.data" -- sleep 4 >/dev/null 2>&1
  for _ in $(seq 1 600); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.2
  done
done
