#!/usr/bin/env bash
# Smoke and concurrent tests of memcached patched with zcopy, one server per
# zcopy backend that works on this machine (zcopy-probe), each on 127.0.0.1
# only, with -o zcopy; then the smoke test again on a server with
# -o zcopy_min=0 (every value in the pool, the small ones too). Build the
# server first: examples/memcached/build.sh.
#
#   tests/memcached/run.sh [MEMCACHED_BINARY]
#
# Environment: MC_BUILD_DIR (default build/memcached), MC_TEST_SECONDS
# (length of each concurrent run, default 10), MC_BACKENDS (space-separated
# list instead of what zcopy-probe reports). Ends with 'N passed, N failed'.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${MC_BUILD_DIR:-$root/build/memcached}
bin=${1:-$out/memcached-zcopy}
seconds=${MC_TEST_SECONDS:-10}
passed=0
failed=0

if [ ! -x "$bin" ]; then
  echo "no server at $bin: run examples/memcached/build.sh first"
  echo "memcached tests: 0 passed, 1 failed"
  exit 1
fi

if [ -n "${MC_BACKENDS:-}" ]; then
  backends=$MC_BACKENDS
else
  prefix=$(cat "$out/zcopy-prefix.txt" 2>/dev/null || true)
  probe=$prefix/bin/zcopy-probe
  if [ -x "$probe" ]; then
    # lines look like "  copy     available     "
    backends=$(LD_LIBRARY_PATH=$prefix/lib "$probe" | awk '$2 == "available" { print $1 }' | tr '\n' ' ')
  fi
  backends=${backends:-copy}
fi
echo "backends: $backends"

free_port() { # free_port tcp|udp
  python3 -c 'import socket,sys
s=socket.socket(socket.AF_INET, socket.SOCK_STREAM if sys.argv[1]=="tcp" else socket.SOCK_DGRAM)
s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' "$1"
}

add_counts() { # add_counts LOGFILE: adds its last 'N passed, N failed' line
  local line
  line=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$1" | tail -n 1)
  if [ -z "$line" ]; then
    failed=$((failed + 1))
    return
  fi
  passed=$((passed + $(cut -d' ' -f1 <<<"$line")))
  failed=$((failed + $(cut -d' ' -f3 <<<"$line")))
}

user_args=()
[ "$(id -u)" -eq 0 ] && user_args=(-u root)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

for backend in $backends; do
for variant in default min0; do
  extra=() modes="smoke concurrent" name=$backend
  if [ "$variant" = min0 ]; then
    extra=(-o zcopy_min=0) modes=smoke name=$backend-min0
  fi
  port=$(free_port tcp)
  udp=$(free_port udp)
  ZC_BACKEND=$backend "$bin" "${user_args[@]}" -l 127.0.0.1 -p "$port" -U "$udp" \
    -m 256 -I 2m -t 4 -o zcopy "${extra[@]}" >"$tmp/server-$name.log" 2>&1 &
  pid=$!
  up=0
  for _ in $(seq 1 50); do
    if python3 -c 'import socket,sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 0.2)' "$port" 2>/dev/null; then
      up=1
      break
    fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if [ "$up" -ne 1 ]; then
    echo "== $name: server did not start"
    cat "$tmp/server-$name.log"
    failed=$((failed + 1))
    kill "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    continue
  fi
  for mode in $modes; do
    echo "== $mode, ZC_BACKEND=$backend ${extra[*]}"
    timeout $((seconds + 180)) python3 "$here/mctest.py" "$mode" --port "$port" --udp-port "$udp" \
      --seconds "$seconds" --expect-zcopy --backend "$backend" 2>&1 | tee "$tmp/$mode-$name.log" | tail -n 25
    add_counts "$tmp/$mode-$name.log"
  done
  kill "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
  if grep -qiE "assert|sanitizer|segmentation" "$tmp/server-$name.log"; then
    echo "server log of $name shows a crash:"
    cat "$tmp/server-$name.log"
    failed=$((failed + 1))
  fi
done
done

echo "memcached tests: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
