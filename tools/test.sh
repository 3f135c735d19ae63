#!/usr/bin/env bash
# The whole test suite: gcc and clang builds with -Werror and their tests,
# an ASan+UBSan build, a TSan build of the threaded tests, the docs, and a
# consumer project built against the installed library (CMake and
# pkg-config). Ends with one summary line.
set -euo pipefail
cd "$(dirname "$0")/.."
./tools/install-deps.sh
root=$PWD
out=${ZC_TEST_DIR:-$root/build-test}
rm -rf "$out"
mkdir -p "$out"
jobs=$(nproc)
passed=0
failed=0

count_ctest() { # adds a ctest log's counts to the totals
  local line p t f
  line=$(grep -E "tests passed, [0-9]+ tests failed out of [0-9]+" "$1" | tail -n 1 || true)
  if [ -z "$line" ]; then
    failed=$((failed + 1))
    return
  fi
  t=$(sed -E 's/.* out of ([0-9]+).*/\1/' <<<"$line")
  f=$(sed -E 's/.*passed, ([0-9]+) tests failed.*/\1/' <<<"$line")
  p=$((t - f))
  passed=$((passed + p))
  failed=$((failed + f))
}

stage() { # stage NAME CC CMAKE_ARGS... -- CTEST_ARGS...
  local name=$1 cc=$2
  shift 2
  local cargs=() targs=()
  while (($#)) && [ "$1" != "--" ]; do cargs+=("$1"); shift; done
  (($#)) && shift
  targs=("$@")
  echo "== $name"
  CC=$cc cmake -S "$root" -B "$out/$name" -DZCOPY_WERROR=ON "${cargs[@]}" >"$out/$name.cmake.log"
  if ! cmake --build "$out/$name" -j"$jobs" >"$out/$name.build.log" 2>&1; then
    tail -n 40 "$out/$name.build.log"
    failed=$((failed + 1))
    return
  fi
  (cd "$out/$name" && ctest --output-on-failure -j"$jobs" "${targs[@]}") | tee "$out/$name.ctest.log" || true
  count_ctest "$out/$name.ctest.log"
}

stage gcc gcc -DCMAKE_BUILD_TYPE=RelWithDebInfo --
stage clang clang -DCMAKE_BUILD_TYPE=RelWithDebInfo -- -LE integrity
stage asan-ubsan gcc -DCMAKE_BUILD_TYPE=Debug -DZCOPY_SANITIZE=address,undefined \
  -DZCOPY_BUILD_BENCH=OFF --
stage tsan gcc -DCMAKE_BUILD_TYPE=RelWithDebInfo -DZCOPY_SANITIZE=thread \
  -DZCOPY_BUILD_BENCH=OFF -DZCOPY_BUILD_EXAMPLES=OFF -- -L threaded

check() { # check NAME COMMAND...: one more pass or fail
  echo "== $1"
  shift
  if "$@"; then passed=$((passed + 1)); else echo "FAILED"; failed=$((failed + 1)); fi
}

check docs cmake --build "$out/gcc" --target docs

consumer() {
  local stage=$out/stage
  rm -rf "$stage"
  DESTDIR="" cmake --install "$out/gcc" --prefix "$stage/a" >/dev/null
  mv "$stage/a" "$stage/b" # the installed tree must be relocatable
  local p=$stage/b
  cmake -S tests/consumer -B "$out/consumer" -DCMAKE_PREFIX_PATH="$p" >/dev/null &&
    cmake --build "$out/consumer" >/dev/null &&
    LD_LIBRARY_PATH="$p/lib" "$out/consumer/consumer" cmake &&
    PKG_CONFIG_PATH="$p/lib/pkgconfig" gcc -std=c11 -Wall -Wextra -Werror \
      tests/consumer/main.c $(PKG_CONFIG_PATH="$p/lib/pkgconfig" pkg-config --cflags --libs zcopy) \
      -o "$out/consumer-pc" &&
    LD_LIBRARY_PATH="$p/lib" "$out/consumer-pc" pkg-config
}
check consumer consumer

demo() { # demo BACKEND: the README's demo (tools/demo.sh) on one backend
  local ex=$out/gcc/examples portfile server rc=0
  portfile=$(mktemp)
  ZC_BACKEND=$1 timeout 60 "$ex/zc-blobserver" --synthetic 32 --port-file "$portfile" &
  server=$!
  for _ in $(seq 100); do [ -s "$portfile" ] && break; sleep 0.05; done
  timeout 60 "$ex/zc-blobclient" --port "$(cat "$portfile")" --synthetic 32 --rounds 20 \
    --connections 4 --shutdown || rc=1
  wait "$server" || rc=1
  rm -f "$portfile"
  return $rc
}
for b in copy iouring msgzc; do
  check "demo ZC_BACKEND=$b" demo "$b"
done

memcached_stage() { # patched memcached against the installed library
  echo "== memcached"
  local mc=$out/memcached line files
  if ! MC_BUILD_DIR=$mc examples/memcached/build.sh "$out/stage/b" >"$out/memcached.build.log" 2>&1; then
    tail -n 40 "$out/memcached.build.log"
    failed=$((failed + 1))
    return
  fi
  MC_BUILD_DIR=$mc tests/memcached/run.sh | tee "$out/memcached.test.log" || true
  line=$(grep -E '^memcached tests: [0-9]+ passed, [0-9]+ failed$' "$out/memcached.test.log" | tail -n 1 || true)
  if [ -z "$line" ]; then
    failed=$((failed + 1))
  else
    passed=$((passed + $(awk '{ print $3 }' <<<"$line")))
    failed=$((failed + $(awk '{ print $5 }' <<<"$line")))
  fi
  # a subset of memcached's own suite with -o zcopy (the whole suite takes
  # about 9 minutes: examples/memcached/make-test.sh)
  MC_BUILD_DIR=$mc examples/memcached/make-test.sh --subset >"$out/memcached.prove.log" 2>&1 || true
  files=$(sed -nE 's/^Files=([0-9]+),.*/\1/p' "$out/memcached.prove.log" | tail -n 1)
  if grep -q '^Result: PASS' "$out/memcached.prove.log" && [ -n "$files" ]; then
    echo "memcached make-test subset: $files test files passed"
    passed=$((passed + files))
  else
    grep -aE '^(t/.*\.t|Failed|Result)' "$out/memcached.prove.log" | tail -n 20
    failed=$((failed + 1))
  fi
}
memcached_stage

# The kmod backend and the whole suite inside qemu on Debian's 6.1 and
# bookworm-backports' 6.12 kernels (tests/vm/stage.sh; needs root for apt,
# downloads the kernel packages once into build/vm). Skipped, with the reason,
# only if qemu cannot run at all here.
vm_stage() {
  echo "== vm (kmod, qemu: 6.1 + 6.12)"
  local log=$out/vm.log rc=0 line p f
  "$root/tests/vm/stage.sh" "$out/gcc" >"$log" 2>&1 || rc=$?
  if [ $rc -eq 77 ]; then
    grep -aE '^vm: skipped' "$log" || echo "vm: skipped"
    return
  fi
  grep -aE '^(vm: |run\.sh: (6\.|counts|all|FAILED))' "$log" || true
  line=$(grep -aE '^vm: [0-9]+ passed, [0-9]+ failed$' "$log" | tail -n 1 || true)
  if [ -z "$line" ]; then
    tail -n 40 "$log"
    failed=$((failed + 1))
    return
  fi
  p=$(sed -E 's/^vm: ([0-9]+) passed.*/\1/' <<<"$line")
  f=$(sed -E 's/.*passed, ([0-9]+) failed$/\1/' <<<"$line")
  if [ $rc -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
  if [ "$f" -ne 0 ]; then
    echo "vm: failing lines (whole log: $log):"
    grep -aE '\| |FAIL' "$log" | grep -vE ' 0 failed|^vm: ' | head -n 60 || true
  fi
  passed=$((passed + p))
  failed=$((failed + f))
}
vm_stage

echo "zcopy tests: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
