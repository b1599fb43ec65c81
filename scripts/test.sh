#!/bin/sh
# Build tenpak and run every test (unit and end-to-end) through ctest.
# Installs missing Debian packages first when run as root.
#
#   scripts/test.sh              Release build in build/
#   scripts/test.sh --sanitize   ASan + UBSan build in build-sanitize/
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

build_dir=${BUILD_DIR:-build}
cmake_flags="-DCMAKE_BUILD_TYPE=Release -DTP_WERROR=ON"
for arg in "$@"; do
	case "$arg" in
	--sanitize)
		build_dir=${BUILD_DIR:-build-sanitize}
		cmake_flags="-DCMAKE_BUILD_TYPE=RelWithDebInfo -DTP_WERROR=ON -DTP_SANITIZE=ON"
		export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
		export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
		;;
	-h | --help)
		sed -n '2,7s/^# \{0,1\}//p' "$0"
		exit 0
		;;
	*)
		echo "scripts/test.sh: unknown option '$arg'" >&2
		exit 2
		;;
	esac
done

sh scripts/deps.sh
jobs=$(nproc 2>/dev/null || echo 2)
# shellcheck disable=SC2086
cmake -S . -B "$build_dir" $cmake_flags
cmake --build "$build_dir" -j "$jobs"
ctest --test-dir "$build_dir" --output-on-failure -j "$jobs"
