#!/usr/bin/env bash
# tests/vm/run.sh - build zcopy.ko for Debian's kernels and run test binaries
# inside qemu (TCG) with a busybox initramfs, once per kernel.
#
#   tests/vm/run.sh [options] [test-binary ...]
#
#   --kernels LIST   6.1, 6.12, both, or a comma list (default: 6.1)
#   --build-dir DIR  scratch + download cache (default: <repo>/build/vm,
#                    or $ZC_VM_DIR)
#   --timeout SEC    hard limit per boot, qemu is killed after it (default 300)
#   --smp N          guest CPUs (default 1; the host CPU is shared)
#   --env K=V        environment for the test binaries (repeatable)
#   --expect REGEX   a line the guest must print (repeatable, ERE)
#   --extra FILE     put FILE (and the libraries of a dynamic binary) in the
#                    guest's /tests without running it (repeatable): for
#                    binaries a test script runs itself
#   --with-defaults  run the default binaries (below) before the given ones
#   --parallel       boot the kernels at the same time (one qemu each)
#   -h, --help
#
# Test binaries: statically linked, or dynamic (their libraries, found with
# ldd, are copied into the initramfs).  Each runs with its own time limit
# ($ZC_VM_TEST_TIMEOUT, default 240 s) as root, cwd /tmp, with ZCOPY_KO set
# to the module's path.  Without binaries the script builds (static) and runs
# tests/vm/kmod_selftest.c, kmod_veth_xdp.c and kmod_fuzz.c (100k calls).
# /init loads veth.ko from the same kernel package before zcopy.ko (with
# user_cap_mb=$ZC_VM_USER_CAP_MB if set; the module's own tests expect the
# default cap). Libraries of dynamic binaries go to their own paths and to
# /lib (LD_LIBRARY_PATH), so a build directory under /tmp works too.
#
# At the end, per kernel and in total: the tests counted from every
# "NAME: N passed, M failed" line (not /init's own), the fuzz calls
# ("kmod_fuzz: N ioctl calls") and the zero-copy completions (every
# "zero-copy completions N"), as "run.sh: counts: ..." lines.
#
# A run passes only if, for every kernel: the module builds without a
# warning, the guest prints "ZCOPY-VM-RESULT: PASS" (every binary exited 0),
# every "NAME: N passed, M failed" line has M = 0, every --expect matches,
# and no oops, BUG, WARNING or panic appears.  Timeout fails.
#
# Needs root for apt-get (packages are installed only when missing).  Kernel
# packages are only downloaded (apt-get download) and unpacked in the build
# dir; nothing is installed as a kernel on this host.  6.12 comes from
# bookworm-backports through a private apt configuration in the build dir,
# so the host's apt sources are left alone.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
moddir=${ZC_VM_MODDIR:-$repo/backends/kmod/module}	# override: testing a modified module

kernels=6.1
build=${ZC_VM_DIR:-$repo/build/vm}
timeout_s=300
smp=1
envs=()
expects=()
bins=()
extras=()
with_defaults=0
parallel=0

die() { echo "run.sh: $*" >&2; exit 2; }
log() { echo "run.sh: $*" >&2; }

while [ $# -gt 0 ]; do
	case $1 in
	--kernels) kernels=${2:?}; shift 2 ;;
	--kernels=*) kernels=${1#*=}; shift ;;
	--build-dir) build=${2:?}; shift 2 ;;
	--timeout) timeout_s=${2:?}; shift 2 ;;
	--smp) smp=${2:?}; shift 2 ;;
	--env) envs+=("${2:?}"); shift 2 ;;
	--expect) expects+=("${2:?}"); shift 2 ;;
	--extra) extras+=("${2:?}"); shift 2 ;;
	--with-defaults) with_defaults=1; shift ;;
	--parallel) parallel=1; shift ;;
	-h|--help) sed -n '2,/^set -euo/p' "$0" | sed 's/^# \{0,1\}//;$d'; exit 0 ;;
	--) shift; bins+=("$@"); break ;;
	-*) die "unknown option $1" ;;
	*) bins+=("$1"); shift ;;
	esac
done
case $kernels in both|all) kernels=6.1,6.12 ;; esac
[[ $timeout_s =~ ^[0-9]+$ ]] || die "--timeout needs seconds"
[[ $smp =~ ^[0-9]+$ ]] || die "--smp needs a number"
for e in "${envs[@]+"${envs[@]}"}"; do
	[[ $e =~ ^[A-Za-z_][A-Za-z0-9_]*=[^\'\"\\$\`]*$ ]] || die "bad --env '$e' (K=V, no quotes or \$)"
done

mkdir -p "$build"
build=$(cd "$build" && pwd)

# ---------------------------------------------------------------- host tools
apt_updated=0
apt_install() {
	local missing=() p
	for p in "$@"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	log "installing ${missing[*]}"
	if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >"$build/apt-install.log" 2>&1; then
		[ $apt_updated = 1 ] && { cat "$build/apt-install.log" >&2; die "apt-get install failed"; }
		apt-get update -q >/dev/null && apt_updated=1
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >"$build/apt-install.log" 2>&1 ||
			{ cat "$build/apt-install.log" >&2; die "apt-get install failed"; }
	fi
}
apt_install qemu-system-x86 busybox-static cpio make gcc libc6-dev xz-utils zstd dwarves linux-headers-amd64

# private apt view of bookworm-backports (the host's sources stay untouched)
bpo=$build/apt-bpo
bpo_apt() {
	apt-get -o Dir::Etc::SourceList="$bpo/sources.list" -o Dir::Etc::SourceParts="$bpo/none" \
		-o Dir::State::Lists="$bpo/lists" -o Dir::Cache="$bpo/cache" \
		-o Dir::State::status="$bpo/status" -q "$@"
}
bpo_cache() {
	apt-cache -o Dir::Etc::SourceList="$bpo/sources.list" -o Dir::Etc::SourceParts="$bpo/none" \
		-o Dir::State::Lists="$bpo/lists" -o Dir::Cache="$bpo/cache" \
		-o Dir::State::status="$bpo/status" -q "$@"
}
bpo_setup() {
	mkdir -p "$bpo/lists/partial" "$bpo/cache/archives/partial"
	touch "$bpo/status"
	local key=/usr/share/keyrings/debian-archive-keyring.gpg opt=
	[ -f $key ] && opt="[signed-by=$key] "
	echo "deb ${opt}http://deb.debian.org/debian bookworm-backports main" >"$bpo/sources.list"
	# refresh the lists at most once a day
	if [ -z "$(find "$bpo/lists" -name '*Packages*' -mtime -1 2>/dev/null | head -1)" ]; then
		bpo_apt update >/dev/null || die "apt-get update for bookworm-backports failed"
	fi
}

# the candidate linux-image-amd64's dependency = the ABI package, e.g.
# linux-image-6.1.0-56-amd64 (apt-cache depends uses the candidate version)
abi_of() { sed -n 's/^ *Depends: linux-image-\([^ ]*\).*/\1/p' | head -1; }

# ------------------------------------------------------------ per-kernel prep
debs=$build/debs
mkdir -p "$debs"

extract_vmlinux() { # vmlinuz out: the plain ELF vmlinux if it can be found, else copy vmlinuz
	local z=$1 out=$2 off magic tool
	for magic in "xz:\xfd7zXZ\x00" "zstd:\x28\xb5\x2f\xfd" "gzip:\x1f\x8b\x08"; do
		tool=${magic%%:*}
		for off in $(LC_ALL=C grep -obUaP "${magic#*:}" "$z" 2>/dev/null | cut -d: -f1 | head -5); do
			case $tool in
			xz) tail -c +$((off + 1)) "$z" | xz -dcq >"$out.tmp" 2>/dev/null || true ;;
			zstd) tail -c +$((off + 1)) "$z" | zstd -dcq >"$out.tmp" 2>/dev/null || true ;;
			gzip) tail -c +$((off + 1)) "$z" | gzip -dcq >"$out.tmp" 2>/dev/null || true ;;
			esac
			if [ "$(head -c 4 "$out.tmp" 2>/dev/null | od -An -c | tr -d ' ')" = '177ELF' ]; then
				mv "$out.tmp" "$out"
				return 0
			fi
		done
	done
	rm -f "$out.tmp"
	cp "$z" "$out"
}

prep_kernel() { # sets KVER KDIR KIMG for $1 in {6.1,6.12}
	local series=$1 root dl
	case $series in
	6.1)
		KVER=$(apt-cache depends linux-image-amd64 2>/dev/null | abi_of)
		if [ -z "$KVER" ] || [[ $KVER != 6.1.* ]]; then
			apt-get update -q >/dev/null
			KVER=$(apt-cache depends linux-image-amd64 | abi_of)
		fi
		[[ $KVER == 6.1.* ]] || die "linux-image-amd64 does not point at a 6.1 kernel ($KVER)"
		apt_install "linux-headers-$KVER"
		KDIR=/usr/src/linux-headers-$KVER
		root=$build/k/$KVER
		mkdir -p "$root"
		if ! ls "$debs"/linux-image-"$KVER"_*.deb >/dev/null 2>&1; then
			(cd "$debs" && apt-get download -q "linux-image-$KVER" >/dev/null) ||
				die "apt-get download linux-image-$KVER failed"
		fi
		;;
	6.12)
		bpo_setup
		KVER=$(bpo_cache depends linux-image-amd64 2>/dev/null | abi_of)
		[[ $KVER == 6.12.* ]] || die "bookworm-backports linux-image-amd64 is not 6.12 ($KVER)"
		local base=${KVER%-amd64}
		root=$build/k/$KVER
		mkdir -p "$root"
		for p in "linux-image-$KVER" "linux-headers-$KVER" "linux-headers-$base-common" "linux-kbuild-$base"; do
			if ! ls "$debs/${p}"_*.deb >/dev/null 2>&1; then
				(cd "$debs" && bpo_apt download "$p" >/dev/null) || die "apt-get download $p failed"
			fi
		done
		if [ ! -f "$root/headers/.done" ]; then
			rm -rf "$root/headers"
			mkdir -p "$root/headers"
			for p in "linux-headers-$KVER" "linux-headers-$base-common" "linux-kbuild-$base"; do
				dpkg-deb -x "$(ls "$debs/${p}"_*.deb | head -1)" "$root/headers"
			done
			# the arch Makefile includes the common one by absolute path
			sed -i "s#^include /usr/src/#include $root/headers/usr/src/#" \
				"$root/headers/usr/src/linux-headers-$KVER/Makefile"
			touch "$root/headers/.done"
		fi
		KDIR=$root/headers/usr/src/linux-headers-$KVER
		;;
	*) die "unknown kernel series '$series' (6.1 or 6.12)" ;;
	esac
	KIMG=$root/vmlinux
	if [ ! -s "$KIMG" ]; then
		dl=$(ls "$debs"/linux-image-"$KVER"_*.deb | head -1)
		rm -rf "$root/img"
		mkdir -p "$root/img"
		dpkg-deb --fsys-tarfile "$dl" | tar -x -C "$root/img" "./boot/vmlinuz-$KVER"
		extract_vmlinux "$root/img/boot/vmlinuz-$KVER" "$KIMG"
		rm -rf "$root/img"
	fi
	# veth.ko for the in-guest veth + XDP test (loaded by /init if present)
	if [ ! -f "$root/veth.ko" ]; then
		dl=$(ls "$debs"/linux-image-"$KVER"_*.deb | head -1)
		rm -rf "$root/img"
		mkdir -p "$root/img"
		dpkg-deb --fsys-tarfile "$dl" | tar -x -C "$root/img" --wildcards \
			"./lib/modules/$KVER/kernel/drivers/net/veth.ko*" 2>/dev/null || true
		for f in "$root/img/lib/modules/$KVER/kernel/drivers/net/"veth.ko*; do
			case $f in
			*.xz) xz -dc "$f" >"$root/veth.ko" ;;
			*.zst) zstd -dcq "$f" >"$root/veth.ko" ;;
			*.ko) cp "$f" "$root/veth.ko" ;;
			esac
		done
		rm -rf "$root/img"
	fi
	KROOT=$root
}

build_module() { # into $KROOT/mod; fails on any warning
	local out=$KROOT/mod
	rm -rf "$out"
	mkdir -p "$out"
	cp -r "$moddir"/. "$out"/
	if ! make -C "$out" KDIR="$KDIR" W=1 >"$out/build.log" 2>&1; then
		cat "$out/build.log" >&2
		die "module build failed for $KVER"
	fi
	if grep -qiE 'warning:|error:' "$out/build.log"; then
		grep -iE -B2 -A3 'warning:|error:' "$out/build.log" >&2
		die "module build for $KVER has warnings"
	fi
	[ -f "$out/zcopy.ko" ] || die "no zcopy.ko for $KVER"
}

# ------------------------------------------------------------- test binaries
if [ ${#bins[@]} -eq 0 ] || [ $with_defaults = 1 ]; then
	mkdir -p "$build/bin"
	defaults=()
	for t in kmod_selftest kmod_veth_xdp kmod_fuzz; do
		gcc -std=gnu11 -O2 -g -Wall -Wextra -Werror -static -pthread -I"$moddir/include" \
			-o "$build/bin/$t" "$here/$t.c" || die "building $t failed"
		defaults+=("$build/bin/$t")
		expects+=("^$t: [0-9]+ passed, 0 failed")
	done
	expects+=('^kmod_fuzz: [0-9]+ ioctl calls')
	bins=("${defaults[@]}" "${bins[@]+"${bins[@]}"}")
fi
for b in "${bins[@]}"; do
	[ -f "$b" ] && [ -x "$b" ] || die "test binary '$b' is not an executable file"
done
for b in "${extras[@]+"${extras[@]}"}"; do
	[ -f "$b" ] || die "extra file '$b' does not exist"
done

make_initramfs() { # $1 = output cpio
	local ir=$KROOT/initramfs b lib name
	rm -rf "$ir"
	mkdir -p "$ir"/{bin,sbin,dev,proc,sys,tmp,lib,tests,etc}
	cp /bin/busybox "$ir/bin/busybox"
	# users for the tests that drop privileges (test_backend's setuid copy)
	printf 'root:x:0:0:root:/tmp:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' \
		>"$ir/etc/passwd"
	printf 'root:x:0:\nnogroup:x:65534:\n' >"$ir/etc/group"
	cp "$KROOT/mod/zcopy.ko" "$ir/lib/zcopy.ko"
	[ -s "$KROOT/veth.ko" ] && cp "$KROOT/veth.ko" "$ir/lib/veth.ko"
	: >"$ir/tests/list"
	for b in "${bins[@]}" "${extras[@]+"${extras[@]}"}"; do
		name=$(basename "$b")
		cp "$b" "$ir/tests/$name"
		# shared libraries and the interpreter of dynamic binaries
		if ldd "$b" >/dev/null 2>&1; then
			for lib in $(ldd "$b" | grep -oE '(/[^ ]+)' | sort -u); do
				[ -e "$lib" ] || continue
				cp -L --parents "$lib" "$ir/"
				[ -e "$ir/lib/${lib##*/}" ] || cp -L "$lib" "$ir/lib/"
			done
		fi
	done
	for b in "${bins[@]}"; do
		basename "$b" >>"$ir/tests/list"
	done
	{
		echo "#!/bin/busybox sh"
		echo "export PATH=/bin:/sbin ZCOPY_KO=/lib/zcopy.ko HOME=/tmp LD_LIBRARY_PATH=/lib"
		echo "modparams='${ZC_VM_USER_CAP_MB:+user_cap_mb=$ZC_VM_USER_CAP_MB}'"
		for e in "${envs[@]+"${envs[@]}"}"; do echo "export '${e%%=*}'='${e#*=}'"; done
		cat <<'EOF'
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
ip link set lo up 2>/dev/null || ifconfig lo 127.0.0.1 up
echo "zcopy-vm: kernel $(uname -r), $(nproc) cpu(s), $(sed -n 's/MemTotal: *//p' /proc/meminfo)"
[ -f /lib/veth.ko ] && insmod /lib/veth.ko
if insmod /lib/zcopy.ko $modparams; then
	echo "zcopy-vm: zcopy.ko loaded"
else
	echo "zcopy-vm: insmod zcopy.ko failed"
fi
pass=0
fail=0
tlim=${ZC_VM_TEST_TIMEOUT:-240}
while read -r t; do
	[ -n "$t" ] || continue
	echo "zcopy-vm: running $t"
	s=$(cut -d' ' -f1 /proc/uptime)
	cd /tmp
	timeout -s KILL "$tlim" "/tests/$t" </dev/null
	rc=$?
	e=$(cut -d' ' -f1 /proc/uptime)
	echo "zcopy-vm: $t exit=$rc time=$(awk "BEGIN{print $e-$s}")s"
	if [ $rc -eq 0 ]; then pass=$((pass + 1)); else fail=$((fail + 1)); fi
done </tests/list
echo "zcopy-vm: $pass passed, $fail failed"
if [ $fail -eq 0 ] && [ $pass -gt 0 ]; then
	echo "ZCOPY-VM-RESULT: PASS"
else
	echo "ZCOPY-VM-RESULT: FAIL"
fi
sync
poweroff -f
sleep 5
echo o >/proc/sysrq-trigger
EOF
	} >"$ir/init"
	chmod 755 "$ir/init"
	(cd "$ir" && find . | LC_ALL=C sort | cpio -o -H newc --quiet) >"$1"
}

# ------------------------------------------------------------------ boot
[[ ${ZC_VM_USER_CAP_MB:-1} =~ ^[0-9]+$ ]] || die "ZC_VM_USER_CAP_MB needs a number (MiB)"

# The guest CPU has no CMPXCHG16B: QEMU 7.2's TCG (Debian 12) once left
# pointer bits in RFLAGS after the cmpxchg16b of 6.12's SLUB fast path and
# the guest died of a double fault in __kmalloc_node (2026-12-03, 1 boot in
# 6); without cx16 the kernel takes its non-cmpxchg16b paths.
cpu=${ZC_VM_CPU:-qemu64,-cx16}

boot() { # series kver kimg kroot: qemu; console to $kroot/console.log; rc in $kroot/qemu.rc
	local series=$1 kver=$2 kimg=$3 kroot=$4 kind=bzImage qrc
	[ "$(head -c 4 "$kimg" | od -An -c | tr -d ' ')" = '177ELF' ] && kind="plain vmlinux"
	log "$series: kernel $kver ($kind), booting"
	local qemu=(timeout -k 5 "$timeout_s" qemu-system-x86_64 -accel tcg -cpu "$cpu" -m 1G -smp "$smp"
		-nographic -no-reboot -kernel "$kimg" -initrd "$kroot/initramfs.cpio"
		-append "console=ttyS0 panic=-1 oops=panic loglevel=4")
	set +e
	if [ $parallel = 1 ]; then
		"${qemu[@]}" </dev/null 2>&1 | tr -d '\r' >"$kroot/console.log"
	else
		"${qemu[@]}" </dev/null 2>&1 | tr -d '\r' | tee "$kroot/console.log"
	fi
	qrc=${PIPESTATUS[0]}
	set -e
	echo "$qrc" >"$kroot/qemu.rc"
}

# counts from a console log: tests passed failed fuzz zc
counts() {
	awk '
	/^[A-Za-z0-9_.\/-]+: [0-9]+ passed, [0-9]+ failed/ && $1 != "zcopy-vm:" { p += $2; f += $4 }
	/^kmod_fuzz: [0-9]+ ioctl calls/ { z += $2 }
	{ s = $0; while (match(s, /zero-copy completions [0-9]+/)) { t = substr(s, RSTART, RLENGTH); sub(/.* /, "", t); c += t; s = substr(s, RSTART + RLENGTH) } }
	END { printf "%d %d %d %d\n", p + f, f, z, c }' "$1"
}

overall=0
summary=()
IFS=, read -r -a series_list <<<"$kernels"
declare -A S_KVER S_KIMG S_KROOT S_T0 S_T1
for series in "${series_list[@]}"; do
	t0=$(date +%s)
	prep_kernel "$series"
	build_module
	make_initramfs "$KROOT/initramfs.cpio"
	t1=$(date +%s)
	log "$series: kernel $KVER, module built and initramfs packed in $((t1 - t0)) s"
	S_KVER[$series]=$KVER S_KIMG[$series]=$KIMG S_KROOT[$series]=$KROOT S_T0[$series]=$t0 S_T1[$series]=$t1
done

tb=$(date +%s)
if [ $parallel = 1 ]; then
	pids=()
	for series in "${series_list[@]}"; do
		boot "$series" "${S_KVER[$series]}" "${S_KIMG[$series]}" "${S_KROOT[$series]}" &
		pids+=($!)
	done
	for p in "${pids[@]}"; do wait "$p" || true; done
	for series in "${series_list[@]}"; do
		echo "======== $series (${S_KVER[$series]}) console ========"
		cat "${S_KROOT[$series]}/console.log"
	done
else
	for series in "${series_list[@]}"; do
		boot "$series" "${S_KVER[$series]}" "${S_KIMG[$series]}" "${S_KROOT[$series]}"
	done
fi
te=$(date +%s)

tot_t=0 tot_f=0 tot_z=0 tot_c=0
for series in "${series_list[@]}"; do
	KVER=${S_KVER[$series]}
	consolelog=${S_KROOT[$series]}/console.log
	qrc=$(cat "${S_KROOT[$series]}/qemu.rc" 2>/dev/null || echo 1)
	why=()
	case $qrc in
	0) ;;
	124 | 137) why+=("timeout after ${timeout_s}s") ;;
	*) why+=("qemu exit $qrc") ;;
	esac
	grep -aq '^ZCOPY-VM-RESULT: PASS$' "$consolelog" || why+=("no PASS line")
	if grep -aqE 'Oops|BUG:|Kernel panic|WARNING:|general protection fault|Call Trace:|UBSAN|KASAN' "$consolelog"; then
		why+=("kernel oops/BUG/WARNING/panic in the log")
	fi
	if grep -aE '^[A-Za-z0-9_./-]+: [0-9]+ passed, [0-9]+ failed' "$consolelog" | grep -vqE ' 0 failed'; then
		why+=("a test reported failures")
	fi
	for x in "${expects[@]+"${expects[@]}"}"; do
		grep -aqE -- "$x" "$consolelog" || why+=("missing line /$x/")
	done
	read -r n_t n_f n_z n_c < <(counts "$consolelog")
	tot_t=$((tot_t + n_t)) tot_f=$((tot_f + n_f)) tot_z=$((tot_z + n_z)) tot_c=$((tot_c + n_c))
	cnt="$n_t tests ($n_f failed), $n_z fuzz calls, $n_c zero-copy completions"
	prep=$((S_T1[$series] - S_T0[$series]))
	if [ ${#why[@]} -eq 0 ]; then
		summary+=("$series ($KVER): PASS, build $prep s; $cnt")
	else
		overall=1
		summary+=("$series ($KVER): FAIL: $(IFS=';'; echo "${why[*]}"); $cnt")
	fi
done

echo
for s in "${summary[@]}"; do echo "run.sh: $s"; done
echo "run.sh: counts: $tot_t tests, $tot_f failed, $tot_z fuzz calls, $tot_c zero-copy completions; boots took $((te - tb)) s"
if [ $overall -eq 0 ]; then
	echo "run.sh: all kernels passed"
else
	echo "run.sh: FAILED"
fi
exit $overall
