#!/usr/bin/env bash
# tests/vm/stage.sh - the VM stage of tools/test.sh: the kmod backend and the
# whole suite inside qemu, on Debian's 6.1 and bookworm-backports' 6.12.
#
#   tests/vm/stage.sh BUILD_DIR [run.sh options...]
#
# BUILD_DIR is a CMake build of this tree (tools/test.sh passes its gcc
# build). In each guest: the module's own tests (kmod_selftest,
# kmod_veth_xdp, kmod_fuzz: 100k ioctl calls), kmod_lib (the library on
# kmod, static), then suite.sh: zcopy-probe must report kmod available and
# chosen by auto, the cmocka suite (BUILD_DIR/tests/test_*) once per backend
# available in the guest, and test_integrity on kmod when it was built.
# Both kernels boot at the same time (one qemu each; ZC_VM_PARALLEL=0 boots
# them one after the other).
#
# Last line: "vm: N passed, M failed" (tests counted in the guests; a kernel
# that fails without a failed test adds one failure). Exit 0 on success,
# 77 if qemu cannot run at all on this machine (the stage is skipped), else 1.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
bdir=${1:?usage: stage.sh BUILD_DIR [run.sh options]}
shift
bdir=$(cd "$bdir" && pwd)
vmdir=${ZC_VM_DIR:-$repo/build/vm}
mkdir -p "$vmdir"

# qemu: install it if missing (root), skip only if it cannot run at all
if ! command -v qemu-system-x86_64 >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ]; then
	echo "vm: installing qemu-system-x86"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q qemu-system-x86 >"$vmdir/qemu-install.log" 2>&1 ||
		{ apt-get update -q >/dev/null 2>&1 &&
			DEBIAN_FRONTEND=noninteractive apt-get install -y -q qemu-system-x86 >"$vmdir/qemu-install.log" 2>&1; }
fi
if ! command -v qemu-system-x86_64 >/dev/null 2>&1; then
	echo "vm: skipped: qemu-system-x86_64 is not installed and could not be installed (not root, or apt failed)"
	exit 77
fi
if ! qemu-system-x86_64 -version >/dev/null 2>&1; then
	echo "vm: skipped: qemu-system-x86_64 does not run here"
	exit 77
fi

fail() { echo "vm: $*"; echo "vm: 0 passed, 1 failed"; exit 1; }

# binaries
lib=$bdir/libzcopy.so
[ -f "$lib" ] || fail "no $lib (build the tree first)"
[ -x "$bdir/tools/zcopy-probe" ] || fail "no $bdir/tools/zcopy-probe"
mkdir -p "$vmdir/bin"
gcc -std=gnu11 -O2 -g -Wall -Wextra -Werror -pthread -I"$repo/include" -I"$bdir/include" \
	-o "$vmdir/bin/kmod_lib" "$here/kmod_lib.c" -L"$bdir" -lzcopy -Wl,-rpath,"$bdir" || fail "building kmod_lib failed"
extras=(--extra "$bdir/tools/zcopy-probe")
# iproute2's ip for the veth+XDP paths of the suite (busybox's cannot do
# namespaces); suite.sh puts /tests first in PATH when it is there
ipbin=$(command -v ip || true)
[ -n "$ipbin" ] && ipbin=$(readlink -f "$ipbin")
[ -n "$ipbin" ] && [ "${ipbin##*/}" = ip ] && extras+=(--extra "$ipbin")
expects=(--expect '^zcopy-probe: 1 passed, 0 failed'
	--expect '^suite-kmod: [1-9][0-9]* passed, 0 failed'
	--expect '^suite-copy: [1-9][0-9]* passed, 0 failed'
	--expect '^kmod_lib: [0-9]+ passed, 0 failed')
n=0
for t in "$bdir"/tests/test_*; do
	[ -f "$t" ] && [ -x "$t" ] || continue
	extras+=(--extra "$t")
	n=$((n + 1))
done
[ $n -gt 0 ] || fail "no test binaries in $bdir/tests"
if [ -x "$bdir/tests/test_integrity" ]; then
	expects+=(--expect '^integrity-kmod: [1-9][0-9]* passed, 0 failed')
else
	echo "vm: tests/test_integrity not built: the integrity stress test is left out"
fi

par=(--parallel)
[ "${ZC_VM_PARALLEL:-1}" = 0 ] && par=()
log=$vmdir/stage.log
t0=$(date +%s)
# Limits sized for a slow day on a shared 2-core host: on 2026-12-02 a
# 50k-message TCP integrity run over veth+XDP in the TCG guests checked
# only 36124 and 45432 messages in 120 s (it had fit in 120 s before), and
# with these limits such runs took 127-157 s.
ZC_VM_DIR=$vmdir "$here/run.sh" --kernels 6.1,6.12 "${par[@]}" --timeout "${ZC_VM_TIMEOUT:-1800}" \
	--env ZC_VM_TEST_TIMEOUT=1600 --env ZC_VM_SUITE_TEST_TIMEOUT=300 --env ZC_VM_INTEGRITY_TIMEOUT=1300 \
	--env ZC_INTEGRITY_TIMEOUT=360 --env "ZC_INTEGRITY_MESSAGES=${ZC_VM_INTEGRITY_MESSAGES:-200000}" \
	--with-defaults "${extras[@]}" "${expects[@]}" "$@" \
	"$vmdir/bin/kmod_lib" "$here/suite.sh" >"$log" 2>&1
rc=$?
t1=$(date +%s)
# the guests' test lines and the summary
grep -aE '^(zcopy-vm: (kernel|running|.* exit=)|[A-Za-z0-9_.-]+: [0-9]+ passed, [0-9]+ failed|kmod_fuzz: [0-9]+ ioctl|.*zero-copy completions|======== |suite-[a-z]+: test_.*bad [1-9]|run\.sh: )' "$log" |
	grep -v '^zcopy-vm: [0-9]* passed'
if [ $rc -ne 0 ]; then
	# a kernel report first, whole (CI shows only the "vm: " lines): up to
	# 3 reports of 70 lines each, from their first line
	awk '/Oops|BUG:|WARNING:|Kernel panic|general protection fault|UBSAN|KASAN|invoked oom-killer|Out of memory/ && left == 0 && n < 3 {
		n++; left = 70; print "vm: kernel report " n ":" }
		left > 0 { print "vm: | " $0; left-- }' "$log"
	echo "vm: FAILED (log: $log); failing lines:"
	grep -aE '\| |FAIL|failed|Oops|BUG|WARNING|panic' "$log" | grep -vE ' 0 failed' | head -n 80
fi
read -r tests failed fuzz zc < <(sed -n 's/^run\.sh: counts: \([0-9]*\) tests, \([0-9]*\) failed, \([0-9]*\) fuzz calls, \([0-9]*\) zero-copy completions.*/\1 \2 \3 \4/p' "$log")
tests=${tests:-0} failed=${failed:-0} fuzz=${fuzz:-0} zc=${zc:-0}
if [ $rc -ne 0 ] && [ "$failed" -eq 0 ]; then
	failed=1
fi
echo "vm: $tests tests, $fuzz fuzz calls, $zc zero-copy completions on 6.1 + 6.12 in $((t1 - t0)) s"
echo "vm: $((tests - failed < 0 ? 0 : tests - failed)) passed, $failed failed"
[ $rc -eq 0 ]
