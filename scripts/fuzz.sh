#!/usr/bin/env bash
# Build the libFuzzer targets in tests/fuzz/ with clang (ASan + UBSan) and
# run each for SECONDS (default 60), at most FUZZ_JOBS (default 2) at once.
#
#   scripts/fuzz.sh [SECONDS]
#   FUZZ_TARGETS="protocol store_url" scripts/fuzz.sh 600
#
# Each target fuzzes a scratch corpus in build-fuzz/corpus/<target> (kept
# between runs) seeded from tests/fuzz/corpus/<target>; findings go to
# build-fuzz/crashes/<target>/ and logs to build-fuzz/logs/. Exits non-zero
# if any target found something. Add a fixed crasher to the checked-in
# corpus so the fuzz.replay.* ctests keep it fixed.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

secs=${1:-60}
case "$secs" in
'' | *[!0-9]*) echo "scripts/fuzz.sh: SECONDS must be a number" >&2; exit 2 ;;
esac
jobs=${FUZZ_JOBS:-2}
build_dir=${BUILD_DIR:-build-fuzz}
targets=${FUZZ_TARGETS:-"protocol safetensors delta_decode delta_roundtrip store_url"}
# For testing the script from a wrapper project; normally the repo root.
src=${FUZZ_CMAKE_SOURCE:-$root}

max_len() {
	case "$1" in
	protocol) echo 4096 ;;
	safetensors) echo 8192 ;;
	delta_decode) echo 16384 ;;
	delta_roundtrip) echo 4096 ;;
	store_url) echo 1024 ;;
	*) echo 4096 ;;
	esac
}

if [ "$src" = "$root" ] && ! grep -q '^add_subdirectory(fuzz)' tests/CMakeLists.txt; then
	echo "scripts/fuzz.sh: tests/CMakeLists.txt does not add_subdirectory(fuzz)" >&2
	exit 1
fi
# A build dir configured from another source tree would make cmake refuse.
if [ -f "$build_dir/CMakeCache.txt" ] &&
	! grep -qx "CMAKE_HOME_DIRECTORY:INTERNAL=$src" "$build_dir/CMakeCache.txt"; then
	rm -rf "$build_dir/CMakeCache.txt" "$build_dir/CMakeFiles"
fi

# Libraries get coverage instrumentation too (fuzzer-no-link), not just the
# target files, or libFuzzer would be blind inside the parsers.
CC=${CC:-clang} cmake -S "$src" -B "$build_dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	-DTP_FUZZ=ON -DTP_SANITIZE=ON -DTP_WERROR=ON \
	-DCMAKE_C_FLAGS="-fsanitize=fuzzer-no-link" >/dev/null
fuzzers=""
for t in $targets; do
	fuzzers="$fuzzers fuzz-$t"
done
# shellcheck disable=SC2086
cmake --build "$build_dir" -j "$(nproc)" --target $fuzzers >/dev/null

bin_of() {
	find "$build_dir" -type f -name "fuzz-$1" -perm -u+x | head -n 1
}

mkdir -p "$build_dir/logs" "$build_dir/tmp"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

run_one() {
	local t=$1 bin
	bin=$(bin_of "$t")
	# Findings of an earlier run are in its log; start this one clean.
	rm -rf "$build_dir/crashes/$t"
	mkdir -p "$build_dir/corpus/$t" "$build_dir/crashes/$t"
	# Temp files of the round trip stay inside the build dir.
	TMPDIR="$root/$build_dir/tmp" "$bin" "$build_dir/corpus/$t" "tests/fuzz/corpus/$t" \
		-max_total_time="$secs" -max_len="$(max_len "$t")" -timeout=30 \
		-rss_limit_mb=3072 -print_final_stats=1 \
		-artifact_prefix="$build_dir/crashes/$t/" >"$build_dir/logs/$t.log" 2>&1
}

pids=()
names=()
status_of=()
for t in $targets; do
	if [ -z "$(bin_of "$t")" ]; then
		echo "scripts/fuzz.sh: fuzz-$t was not built (is CC clang?)" >&2
		exit 1
	fi
	while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do
		wait -n || true
	done
	echo "fuzzing $t for ${secs}s"
	run_one "$t" &
	pids+=($!)
	names+=("$t")
done
for i in "${!pids[@]}"; do
	if wait "${pids[$i]}"; then status_of[i]=0; else status_of[i]=$?; fi
done

fail=0
printf '\n%-16s %6s %12s %8s %8s %8s %s\n' target exit execs cov corpus findings log
for i in "${!names[@]}"; do
	t=${names[$i]}
	log="$build_dir/logs/$t.log"
	execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
	cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 | cut -d' ' -f2)
	corpus=$(find "$build_dir/corpus/$t" -type f | wc -l)
	found=$(find "$build_dir/crashes/$t" -type f | wc -l)
	printf '%-16s %6s %12s %8s %8s %8s %s\n' "$t" "${status_of[$i]}" "${execs:-?}" \
		"${cov:-?}" "$corpus" "$found" "$log"
	if [ "${status_of[$i]}" != 0 ] || [ "$found" != 0 ]; then
		fail=1
	fi
done
if [ "$fail" != 0 ]; then
	echo "findings in $build_dir/crashes/ (see the logs)" >&2
	exit 1
fi
