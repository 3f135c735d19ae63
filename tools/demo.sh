#!/usr/bin/env bash
# The main demo: build zcopy, load synthetic blobs into a pool, seal them,
# serve them over TCP on 127.0.0.1 and fetch them back, checking every byte.
set -euo pipefail
cd "$(dirname "$0")/.."
./tools/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)" >/dev/null
./build/tools/zcopy-probe
portfile=$(mktemp)
trap 'rm -f "$portfile"; kill "$server" 2>/dev/null || true' EXIT
./build/examples/zc-blobserver --synthetic 32 --port-file "$portfile" &
server=$!
for _ in $(seq 100); do [ -s "$portfile" ] && break; sleep 0.05; done
./build/examples/zc-blobclient --port "$(cat "$portfile")" --synthetic 32 --rounds 20 \
  --connections 4 --shutdown
wait "$server"
