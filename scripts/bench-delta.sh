#!/usr/bin/env bash
# Benchmark tenpak's delta codec against the BitX baseline and generic tools.
#
#   scripts/bench-delta.sh [SIZE_MIB]
#
# Prints one table per pair: size ratio (output / target), compress and
# apply wall time and CPU time (user + sys), and peak RSS of the larger of
# the two steps. Every row is checked to round-trip bit-exactly. Pairs: the
# fixture models in FIXTURES (default ../shared/fixtures/models; skipped with
# a message if absent) and a generated bf16 pair of SIZE_MIB MiB (default
# 256; fixed seed).
#
# Binaries come from BUILD (default: build): $BUILD/tenpak,
# $BUILD/delta/tp-bitx and $BUILD/delta/tp-genpair; override with TENPAK,
# BITX, GENPAIR. THREADS (default: all cores) is used for the multi-threaded
# tenpak row. zstd -19 --patch-from and xdelta3 -9 run at about 0.5 MiB/s,
# so they are skipped for targets over SLOW_MAX_MIB (default 64).
#
# BEFORE=path/to/an/older/tenpak adds its 1-thread row to each table, for
# before/after comparisons in one run. tenpak fsyncs what it writes and
# zstd does not, so each table also has zstd rows followed by `sync FILE`.
# Under each table, one line gives the 1-thread time ratios measured in that
# run: tenpak / zstd (compress vs zstd -3 -T1, apply vs zstd -d), with and
# without the fsync, after / before when BEFORE is set, and the THREADS-row
# speedup over one thread (wall time: meaningful only on an otherwise idle
# machine with at least THREADS free cores).
set -euo pipefail

cd "$(dirname "$0")/.."
SIZE_MIB=${1:-256}
BUILD=${BUILD:-build}
TENPAK=${TENPAK:-$BUILD/tenpak}
BITX=${BITX:-$BUILD/delta/tp-bitx}
GENPAIR=${GENPAIR:-$BUILD/delta/tp-genpair}
THREADS=${THREADS:-$(nproc)}
SLOW_MAX_MIB=${SLOW_MAX_MIB:-64}
BEFORE=${BEFORE:-}
FIXTURES=${FIXTURES:-../shared/fixtures/models}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/tp-bench.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

need_tools() {
	local missing=()
	command -v zstd >/dev/null || missing+=(zstd)
	command -v xdelta3 >/dev/null || missing+=(xdelta3)
	[ -x /usr/bin/time ] || missing+=(time)
	[ ${#missing[@]} -eq 0 ] && return
	if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
		apt-get install -y -qq "${missing[@]}" >/dev/null ||
			{ apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null; }
	else
		echo "missing tools: ${missing[*]} (install them, or run as root)" >&2
		exit 1
	fi
}

for bin in "$TENPAK" "$BITX" "$GENPAIR" ${BEFORE:+"$BEFORE"}; do
	[ -x "$bin" ] || { echo "missing $bin: build first (cmake --build $BUILD)" >&2; exit 1; }
done
need_tools

# run OUTVAR CMD...: time CMD, storing "wall_s rss_kib user_s sys_s" in OUTVAR;
# "" on failure.
run() {
	local __out=$1 tf="$WORK/time"
	shift
	if /usr/bin/time -f "%e %M %U %S" -o "$tf" "$@" >/dev/null 2>"$WORK/err"; then
		printf -v "$__out" '%s' "$(tail -1 "$tf")"
	else
		printf -v "$__out" '%s' ""
	fi
}

# Seconds of the rows of the current table, by row key (for the ratios).
declare -A CSEC ASEC

# row NAME TARGET "COMPRESS CMD" "APPLY CMD" [KEY]: commands use $OUT (the
# compressed file) and $RES (the rebuilt file); KEY records the times.
row() {
	local name=$1 target=$2 ccmd=$3 acmd=$4 key=${5:-} c a
	export OUT="$WORK/out" RES="$WORK/res"
	rm -f "$OUT" "$RES"
	run c bash -c "$ccmd"
	[ -n "$c" ] && run a bash -c "$acmd" || a=""
	if [ -z "$c" ] || [ -z "$a" ] || ! cmp -s "$target" "$RES"; then
		printf '| %-26s | %8s | %10s | %5s | %7s | %5s | %7s |\n' "$name" "failed" "-" "-" "-" "-" "-"
		return
	fi
	if [ -n "$key" ]; then
		CSEC[$key]=$(echo "$c" | awk '{ print $1, $3 + $4 }')
		ASEC[$key]=$(echo "$a" | awk '{ print $1, $3 + $4 }')
	fi
	local tsize osize
	tsize=$(stat -c %s "$target")
	osize=$(stat -c %s "$OUT")
	awk -v n="$name" -v t="$tsize" -v o="$osize" -v c="$c" -v a="$a" 'BEGIN {
		split(c, cc, " "); split(a, aa, " ");
		rss = (cc[2] > aa[2] ? cc[2] : aa[2]) / 1024;
		printf "| %-26s | %8.4f | %10.2f | %5.2f | %7.2f | %5.2f | %7.1f |\n", n, o / t, cc[1],
			cc[3] + cc[4], aa[1], aa[3] + aa[4], rss }'
}

# ratios: the 1-thread time ratios of the current table (see the top), for
# wall time and, in parentheses, CPU time (user + sys), which other load on
# the machine disturbs less.
ratios() {
	[ -n "${CSEC[t1]:-}" ] && [ -n "${CSEC[z]:-}" ] || return 0
	awk -v c="${CSEC[t1]}" -v a="${ASEC[t1]}" -v zc="${CSEC[z]}" -v za="${ASEC[z]}" \
		-v sc="${CSEC[zs]:-}" -v sa="${ASEC[zs]:-}" -v bc="${CSEC[before]:-}" \
		-v ba="${ASEC[before]:-}" -v nc="${CSEC[tn]:-}" -v na="${ASEC[tn]:-}" -v nt="$THREADS" '
		function r(x, y,  p, q) {
			split(x, p, " "); split(y, q, " ")
			if (q[1] <= 0 || q[2] <= 0) return "-"
			return sprintf("%.2f (%.2f)", p[1] / q[1], p[2] / q[2])
		}
		function sp(x, y,  p, q) {
			split(x, p, " "); split(y, q, " ")
			return q[1] > 0 ? sprintf("%.2fx", p[1] / q[1]) : "-"
		}
		BEGIN { printf "\n1 thread, time ratios (cpu): compress/zstd %s, apply/zstd %s", r(c, zc), r(a, za)
		if (sc != "") printf "; vs zstd + sync: %s, %s", r(c, sc), r(a, sa)
		if (bc != "") printf "; after/before: compress %s, apply %s", r(c, bc), r(a, ba)
		if (nc != "") printf "; %s-thread speedup (1 thread / %s threads, wall): compress %s, apply %s", nt, nt, sp(c, nc), sp(a, na)
		printf "\n" }'
}

header() {
	local tsize
	tsize=$(stat -c %s "$1")
	echo
	echo "### $2 ($(awk -v s="$tsize" 'BEGIN { printf "%.1f MiB", s / 1048576 }'))"
	echo
	echo "| tool                       |    ratio | compress s |   cpu | apply s |   cpu | RSS MiB |"
	echo "|----------------------------|----------|------------|-------|---------|-------|---------|"
	CSEC=() ASEC=()
}

# bench_pair TITLE BASE TARGET
bench_pair() {
	local title=$1 base=$2 target=$3
	export base target TENPAK BITX THREADS
	header "$target" "$title"
	row "tenpak (1 thread)" "$target" \
		'"$TENPAK" delta compress --threads 1 --base "$base" "$target" -o "$OUT"' \
		'"$TENPAK" delta apply --threads 1 --base "$base" "$OUT" -o "$RES"' t1
	[ -z "$BEFORE" ] || row "tenpak before (1 thread)" "$target" \
		'"$BEFORE" delta compress --threads 1 --base "$base" "$target" -o "$OUT"' \
		'"$BEFORE" delta apply --threads 1 --base "$base" "$OUT" -o "$RES"' before
	row "tenpak ($THREADS threads)" "$target" \
		'"$TENPAK" delta compress --threads "$THREADS" --base "$base" "$target" -o "$OUT"' \
		'"$TENPAK" delta apply --threads "$THREADS" --base "$base" "$OUT" -o "$RES"' tn
	row "BitX baseline" "$target" \
		'"$BITX" compress "$base" "$target" "$OUT"' \
		'"$BITX" apply "$base" "$OUT" "$RES"'
	zstd_rows "$target"
	if [ "$(stat -c %s "$target")" -gt $((SLOW_MAX_MIB << 20)) ]; then
		echo "| (zstd -19 --patch-from and xdelta3 -9 skipped: target over SLOW_MAX_MIB=$SLOW_MAX_MIB MiB) |"
		ratios
		return
	fi
	row "zstd -19 --long --patch-from" "$target" \
		'zstd -q -19 -T1 --long=31 -f --patch-from="$base" "$target" -o "$OUT"' \
		'zstd -q -d --long=31 -f --patch-from="$base" "$OUT" -o "$RES"'
	row "xdelta3 -9" "$target" \
		'xdelta3 -9 -e -f -s "$base" "$target" "$OUT"' \
		'xdelta3 -d -f -s "$base" "$OUT" "$RES"'
	ratios
}

# zstd_rows TARGET: the zstd -3 reference, plain and with its output synced.
zstd_rows() {
	row "zstd -3 -T1" "$1" \
		'zstd -q -3 -T1 -f "$target" -o "$OUT"' \
		'zstd -q -d -f "$OUT" -o "$RES"' z
	row "zstd -3 -T1 + sync" "$1" \
		'zstd -q -3 -T1 -f "$target" -o "$OUT" && sync "$OUT"' \
		'zstd -q -d -f "$OUT" -o "$RES" && sync "$RES"' zs
}

bench_nobase() {
	local title=$1 target=$2
	export target TENPAK THREADS
	header "$target" "$title"
	row "tenpak no-base (1 thread)" "$target" \
		'"$TENPAK" delta compress --threads 1 "$target" -o "$OUT"' \
		'"$TENPAK" delta apply --threads 1 "$OUT" -o "$RES"' t1
	[ -z "$BEFORE" ] || row "before no-base (1 thread)" "$target" \
		'"$BEFORE" delta compress --threads 1 "$target" -o "$OUT"' \
		'"$BEFORE" delta apply --threads 1 "$OUT" -o "$RES"' before
	row "tenpak no-base ($THREADS thr)" "$target" \
		'"$TENPAK" delta compress --threads "$THREADS" "$target" -o "$OUT"' \
		'"$TENPAK" delta apply --threads "$THREADS" "$OUT" -o "$RES"' tn
	zstd_rows "$target"
	ratios
}

# The 2-byte split/merge kernels depend on the CPU (delta/planes16.c: AVX-512
# BW+VBMI+VBMI2 when present, else portable C), so the header names them.
simd=portable
grep -qw avx512_vbmi2 /proc/cpuinfo 2>/dev/null && grep -qw avx512vbmi /proc/cpuinfo &&
	grep -qw avx512bw /proc/cpuinfo && simd=avx512
echo "# tenpak delta benchmark ($(date -u +%Y-%m-%d), $(nproc) cores, split/merge kernels: $simd, zstd $(zstd -V | grep -o 'v[0-9.]*'), load:$(uptime | sed 's/.*load average://'))"
if [ -d "$FIXTURES" ]; then
	for pair in full_ft/BF16 full_ft/F16 full_ft/F32 partial_ft/BF16 lora_merged/BF16 \
		next_ckpt/BF16 unrelated/BF16; do
		variant=${pair%/*} dtype=${pair#*/}
		bench_pair "$variant $dtype vs base" "$FIXTURES/base/$dtype/model.safetensors" \
			"$FIXTURES/$pair/model.safetensors"
	done
	bench_nobase "base BF16, no base" "$FIXTURES/base/BF16/model.safetensors"
else
	echo "(fixtures not found at $FIXTURES: skipping the fixture pairs)"
fi

"$GENPAIR" "$SIZE_MIB" "$WORK/gen-base.safetensors" "$WORK/gen-ft.safetensors"
bench_pair "generated bf16 pair, N(0,0.02) + N(0,2e-4)" "$WORK/gen-base.safetensors" \
	"$WORK/gen-ft.safetensors"
bench_nobase "generated bf16 base, no base" "$WORK/gen-base.safetensors"
[ "${WITH_SPARSIFY:-0}" = 0 ] || scripts/bench-sparsify.sh # lossy sparse deltas (README, Performance)
echo
echo "load at the end:$(uptime | sed 's/.*load average://')"
