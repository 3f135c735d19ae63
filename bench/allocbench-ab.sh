#!/usr/bin/env bash
# allocbench-ab.sh: allocbench children of several builds of libzcopy, and of
# glibc malloc, interleaved round by round, so that a change is measured
# side by side with the library before it on this noisy machine.
#
#   bench/allocbench-ab.sh [-n ROUNDS] [-t THREADS] ALLOCBENCH LIBDIR...
#
# ALLOCBENCH is a built bench/allocbench; each LIBDIR holds a libzcopy.so.0
# (copy one from a build tree of the version to compare), taken through
# LD_LIBRARY_PATH, which wins over the binary's RUNPATH. Prints one line per
# round (Mops/s and RSS/live of each library, then glibc's Mops/s) and the
# medians with their ranges.
set -euo pipefail
usage() { echo "usage: $0 [-n ROUNDS] [-t THREADS] ALLOCBENCH LIBDIR..." >&2; exit 2; }
rounds=10 threads=2
while getopts n:t: opt; do
	case $opt in
	n) rounds=$OPTARG ;;
	t) threads=$OPTARG ;;
	*) usage ;;
	esac
done
shift $((OPTIND - 1))
[ $# -ge 2 ] || usage
[[ $rounds =~ ^[0-9]+$ && $rounds -ge 1 && $rounds -le 99 ]] || { echo "$0: 1..99 rounds" >&2; exit 2; }
bin=$1
shift
for d in "$@"; do
	[ -e "$d/libzcopy.so.0" ] || { echo "$0: no $d/libzcopy.so.0" >&2; exit 2; }
done

child() { # child KIND [LIBDIR]: prints "OPS RSS"
	local out
	out=$(env ${2:+LD_LIBRARY_PATH="$2"} timeout 120 "$bin" --child "$1" --threads "$threads")
	sed -n 's/^RESULT ops_per_s=\([0-9]*\) rss_over_live=\([0-9.]*\).*/\1 \2/p' <<<"$out"
}

results=$(mktemp)
trap 'rm -f "$results"' EXIT
echo "allocbench-ab: $threads threads, $rounds rounds; columns: $* glibc"
for ((r = 0; r < rounds; r++)); do
	line=
	for d in "$@"; do
		line+="$(child zcopy "$d") | "
	done
	line+=$(child malloc)
	echo "$line" | tee -a "$results"
done
awk -F'|' '{ for (i = 1; i <= NF; i++) { split($i, f, " "); v[i, NR] = f[1] } n = NF }
END {
	for (i = 1; i <= n; i++) {
		for (r = 1; r <= NR; r++) a[r] = v[i, r]
		# insertion sort: NR is at most 99
		for (r = 2; r <= NR; r++) { x = a[r]; k = r - 1; while (k >= 1 && a[k] > x) { a[k + 1] = a[k]; k-- } a[k + 1] = x }
		med = NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2
		printf "column %d: median %.3f Mops/s (%.3f..%.3f)\n", i, med / 1e6, a[1] / 1e6, a[NR] / 1e6
	}
}' "$results"
