#!/usr/bin/env bash
# Build memcached 1.6.18 (Debian bookworm's source) twice from one tree:
# patched with zcopy.patch and linked against zcopy through pkg-config, and
# unpatched, with the same configure options (the patched build adds only
# the zcopy flags).
#
#   examples/memcached/build.sh [ZCOPY_PREFIX]
#
# ZCOPY_PREFIX is an installed zcopy (its lib/pkgconfig/zcopy.pc is used).
# Without it, zcopy is built from this repository and installed into
# $MC_BUILD_DIR/zcopy-prefix. Results (MC_BUILD_DIR defaults to
# build/memcached in the repository):
#   $MC_BUILD_DIR/memcached-zcopy   patched server (-o zcopy enables zcopy)
#   $MC_BUILD_DIR/memcached-stock   unpatched server
#   $MC_BUILD_DIR/zcopy-src/        patched tree (run its `make test`, see README.md)
#   $MC_BUILD_DIR/stock-src/        unpatched tree
# The source comes from `apt-get source memcached`; a deb-src entry for
# bookworm is added when none is there. Needs root for apt-get (as the rest
# of the project's scripts do) unless the build dependencies are installed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${MC_BUILD_DIR:-$root/build/memcached}
version=1.6.18
jobs=$(nproc)
mkdir -p "$out"
out=$(cd "$out" && pwd)

need_pkgs=()
for p in dpkg-dev libevent-dev pkg-config patch make gcc perl; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need_pkgs+=("$p")
done

src_list=/etc/apt/sources.list.d/zcopy-memcached-src.sources
if ! grep -rqsE '^(deb-src .*bookworm|Types:.*deb-src)' /etc/apt/sources.list /etc/apt/sources.list.d/; then
  echo "adding a deb-src entry for bookworm ($src_list)"
  cat >"$src_list" <<'SRC'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  apt-get update -qq
elif [ ! -d "$out/src/memcached-$version" ]; then
  apt-get update -qq || true
fi
if ((${#need_pkgs[@]})); then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi

# The source, fetched once into $out/src.
if [ ! -d "$out/src/memcached-$version" ]; then
  rm -rf "$out/src"
  mkdir -p "$out/src"
  (cd "$out/src" && { apt-get source -q "memcached=$version-1" || apt-get source -q memcached; } >apt-source.log 2>&1) || {
    cat "$out/src/apt-source.log"; exit 1; }
  [ -d "$out/src/memcached-$version" ] || { echo "apt-get source did not give memcached $version" >&2; exit 1; }
fi

# zcopy: an installed prefix, or this repository built and installed here.
if [ $# -ge 1 ]; then
  zc_prefix=$(cd "$1" && pwd)
else
  zc_prefix=$out/zcopy-prefix
  cmake -S "$root" -B "$out/zcopy-build" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DZCOPY_BUILD_BENCH=OFF >"$out/zcopy-build.log"
  cmake --build "$out/zcopy-build" -j"$jobs" >>"$out/zcopy-build.log" 2>&1 ||
    { tail -n 30 "$out/zcopy-build.log"; exit 1; }
  rm -rf "$zc_prefix"
  cmake --install "$out/zcopy-build" --prefix "$zc_prefix" >>"$out/zcopy-build.log"
fi
pc_dir=$zc_prefix/lib/pkgconfig
[ -f "$pc_dir/zcopy.pc" ] || pc_dir=$(dirname "$(ls "$zc_prefix"/lib*/pkgconfig/zcopy.pc "$zc_prefix"/lib/*/pkgconfig/zcopy.pc 2>/dev/null | head -n 1)")
[ -f "$pc_dir/zcopy.pc" ] || { echo "no zcopy.pc under $zc_prefix" >&2; exit 1; }
zc_cflags=$(PKG_CONFIG_PATH=$pc_dir pkg-config --cflags zcopy)
zc_libs=$(PKG_CONFIG_PATH=$pc_dir pkg-config --libs zcopy)
zc_libdir=$(PKG_CONFIG_PATH=$pc_dir pkg-config --variable=libdir zcopy)

configure_opts=(--disable-dependency-tracking)

build_tree() { # build_tree NAME PATCH|"" CONFIGURE_ENV...
  local name=$1 patchfile=$2
  shift 2
  local dir=$out/$name-src
  rm -rf "$dir"
  cp -a "$out/src/memcached-$version" "$dir"
  if [ -n "$patchfile" ]; then
    patch -d "$dir" -p1 --quiet <"$patchfile"
  fi
  echo "== memcached $version ($name): configure and make"
  (cd "$dir" && env "$@" ./configure "${configure_opts[@]}" >configure.log 2>&1) ||
    { tail -n 30 "$dir/configure.log"; exit 1; }
  (cd "$dir" && make -j"$jobs" >make.log 2>&1) || { grep -E "error:|warning:" "$dir/make.log" | head -n 40; exit 1; }
}

build_tree stock ""
build_tree zcopy "$here/zcopy.patch" \
  CPPFLAGS="-DENABLE_ZCOPY $zc_cflags" LIBS="$zc_libs" LDFLAGS="-Wl,-rpath,$zc_libdir"

cp "$out/stock-src/memcached" "$out/memcached-stock"
cp "$out/zcopy-src/memcached" "$out/memcached-zcopy"
echo "$zc_prefix" >"$out/zcopy-prefix.txt"
echo "built $out/memcached-zcopy and $out/memcached-stock (zcopy from $zc_prefix)"
