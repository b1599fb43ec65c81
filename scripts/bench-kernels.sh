#!/usr/bin/env bash
# Benchmark the packed-format kernels (optimize/kernels_*.c), then tenpak
# against llama.cpp on the same weights.
#
#   scripts/bench-kernels.sh [kernels|peer|all]   (default all)
#
# kernels: tp-kernel-bench's table for every format with a kernel: GEMV
#   GB/s of packed bytes (4096x4096 and 11008x4096, repeated to MIB MiB,
#   default 1024, past the last-level cache, so each pass reads DRAM) and
#   its fraction of a STREAM-style read, the two interleaved KREPS times
#   (default 5), best and median; GEMM GFLOP/s at n = 64/512. Then a
#   summary: the median and best fraction of STREAM per format and thread
#   count on the 11008x4096 layers.
# peer: a generated ~100M Llama (scripts/gen-model.py, vocab 256 to match
#   the byte-level tokenizer that the GGUF export writes), exported by
#   tp-gguf to q8_0, q4_0 and q4_k; tenpak (packed layers through their
#   kernels) and llama.cpp (node-llama-cpp 3.21.1, scripts/llamacpp.sh,
#   CPU only) prefill PREFILL tokens and decode DECODE, best of REPS, at 1
#   and 2 threads, interleaved so both see the same machine load. Two
#   llama.cpp rows: its default CPU variant (on a CPU with AVX-512/AMX it
#   picks those) and its AVX2 variant ("haswell", a copy of the package
#   with the other CPU variants left out), the same instruction set as
#   tenpak's kernels. tok/s is wall clock; tok/cpu-s is tokens per CPU
#   second of the process, which a busy machine disturbs less. Then the
#   ratios tenpak / llama.cpp per format and thread count.
# The load average (uptime) is printed before and after each part: the
# figures mean little on a busy machine.
# Prints tables; it is a measurement, not a test.
set -euo pipefail

cd "$(dirname "$0")/.."
WHAT=${1:-all}
BUILD=${BUILD:-build}
BENCH=${BENCH:-$BUILD/tp-kernel-bench}
GGUF=${GGUF:-$BUILD/tp-gguf}
MIB=${MIB:-1024}
KREPS=${KREPS:-5}
PREFILL=${PREFILL:-128}
DECODE=${DECODE:-32}
REPS=${REPS:-3}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/tp-bench-kernels.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

for b in "$BENCH" "$GGUF"; do
	if [ ! -x "$b" ]; then
		echo "bench-kernels: $b not found (build first)" >&2
		exit 1
	fi
done

load() { echo "# load: $(uptime | sed 's/.*load average/load average/')"; }

if [ "$WHAT" = kernels ] || [ "$WHAT" = all ]; then
	echo "== kernels (tp-kernel-bench kernels --mib $MIB --reps $KREPS)"
	load
	nice "$BENCH" kernels --threads 1,2 --mib "$MIB" --reps "$KREPS" | tee "$WORK/kernels.txt"
	load
	echo "== GEMV fraction of STREAM (11008x4096, same-run STREAM read): median / best"
	awk '/^[a-z0-9_]+ +[a-z0-9_]+ x / {
		thr = $(NF - 12); f[$1] = 1; m[$1, thr] = $(NF - 2); b[$1, thr] = $(NF - 3)
		if (!(($1) in seen)) { order[++n] = $1; seen[$1] = 1 }
	}
	END {
		printf "%-20s %15s %15s\n", "format", "1 thread", "2 threads"
		for (i = 1; i <= n; i++)
			printf "%-20s %7s / %5s %7s / %5s\n", order[i], m[order[i], 1], b[order[i], 1],
			       m[order[i], 2], b[order[i], 2]
	}' "$WORK/kernels.txt"
fi

[ "$WHAT" = peer ] || [ "$WHAT" = all ] || exit 0

scripts/llamacpp.sh install
PREFIX=$PWD/.cache/node-llama-cpp
# The AVX2-only copy: node_modules of links, but node-llama-cpp and its
# linux-x64 binaries copied (node resolves a package's binaries from its
# real path) without the CPU variants other than haswell.
AVX2=$WORK/nlc-avx2
mkdir -p "$AVX2/node_modules/@node-llama-cpp"
for e in "$PREFIX"/node_modules/* "$PREFIX"/node_modules/@node-llama-cpp/*; do
	n=${e#"$PREFIX"/node_modules/}
	case $n in
	node-llama-cpp | @node-llama-cpp | @node-llama-cpp/linux-x64) ;;
	*) ln -s "$e" "$AVX2/node_modules/$n" ;;
	esac
done
cp -r "$PREFIX/node_modules/node-llama-cpp" "$AVX2/node_modules/"
cp -r "$PREFIX/node_modules/@node-llama-cpp/linux-x64" "$AVX2/node_modules/@node-llama-cpp/"
find "$AVX2/node_modules/@node-llama-cpp/linux-x64" -name 'libggml-cpu-*.so' \
	! -name 'libggml-cpu-haswell.so' -delete

/usr/bin/env python3 scripts/gen-model.py "$WORK/m100" 256 >/dev/null
echo "== tenpak vs llama.cpp: generated 100M Llama (vocab 256), prefill $PREFILL," \
	"decode $DECODE, best of $REPS"
printf '%-6s %-20s %3s %12s %12s %14s %14s\n' format engine thr "prefill t/s" "decode t/s" \
	"prefill t/cpus" "decode t/cpus"
load
row() {
	printf '%s\t%s\t%s\n' "$2" "$3" "$1" >>"$WORK/peer.txt"
	python3 -c '
import json, sys
r = json.loads(sys.argv[1])
print("%-6s %-20s %3d %12.1f %12.1f %14.1f %14.1f" % (sys.argv[2], sys.argv[3], r["threads"],
      r["prefill_tps"], r["decode_tps"], r["prefill_tpcpus"], r["decode_tpcpus"]))' "$@"
}
for f in q8_0 q4_0 q4_k; do
	nice "$GGUF" "$WORK/m100" "$WORK/m100-$f.gguf" "$f" >/dev/null
	for t in 1 2; do
		j=$(nice "$BENCH" speed "$WORK/m100" --format "$f" --threads "$t" \
			--prefill "$PREFILL" --decode "$DECODE" --reps "$REPS")
		row "$j" "$f" "tenpak" "$t"
		j=$(nice node scripts/llamacpp-speed.mjs "$PREFIX" "$WORK/m100-$f.gguf" "$t" \
			"$PREFILL" "$DECODE" "$REPS")
		row "$j" "$f" "llama.cpp default" "$t"
		j=$(nice node scripts/llamacpp-speed.mjs "$AVX2" "$WORK/m100-$f.gguf" "$t" \
			"$PREFILL" "$DECODE" "$REPS")
		row "$j" "$f" "llama.cpp avx2" "$t"
	done
done
load
echo "== tenpak / llama.cpp (tok/s wall; tok per CPU-second in brackets)"
python3 -c '
import json, sys
rows = {}
for line in open(sys.argv[1]):
    f, eng, j = line.rstrip("\n").split("\t")
    r = json.loads(j)
    rows[(f, eng, r["threads"])] = r
print("%-6s %3s %-20s %19s %19s" % ("format", "thr", "vs", "prefill", "decode"))
for (f, eng, t), r in rows.items():
    if eng != "tenpak":
        continue
    for peer in ("llama.cpp default", "llama.cpp avx2"):
        p = rows.get((f, peer, t))
        if not p:
            continue
        q = lambda k: r[k] / p[k] if p[k] else float("nan")
        print("%-6s %3d %-20s %8.2f [%8.2f] %8.2f [%8.2f]" % (f, t, peer, q("prefill_tps"),
              q("prefill_tpcpus"), q("decode_tps"), q("decode_tpcpus")))
' "$WORK/peer.txt"
