#!/usr/bin/env bash
# memcached's own test suite against the patched build, with every test
# server started with -o zcopy (T_MEMD_ZCOPY=1, see README.md).
#
#   examples/memcached/make-test.sh           # the whole `make test` (about 9 min)
#   examples/memcached/make-test.sh --subset  # a quick subset (about 40 s)
#
# Run examples/memcached/build.sh first. MC_BUILD_DIR as for build.sh;
# ZC_BACKEND picks the zcopy backend as usual.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${MC_BUILD_DIR:-$root/build/memcached}
tree=$out/zcopy-src
[ -x "$tree/memcached-debug" ] || { echo "no patched build in $tree: run build.sh first" >&2; exit 1; }
cd "$tree"
export T_MEMD_ZCOPY=1
if [ "${1:-}" = "--subset" ]; then
  make -s memcached-debug timedrun >/dev/null
  exec prove t/getset.t t/incrdecr.t t/cas.t t/udp.t t/noreply.t t/flags.t \
    t/multiversioning.t t/issue_70.t t/chunked-items.t t/64bit.t t/dash-M.t \
    t/evictions.t t/dyn-maxbytes.t
fi
exec make test
