#!/usr/bin/env bash
# Benchmark `tenpak eval`: tokens/s of prefill (perplexity scoring) and of
# single-token decode with the KV cache, on 1 and on all cores.
#
#   scripts/bench-eval.sh [TOKENS]
#
# Models: the in-repo fixture (3.5M parameters, tests/data) and a generated
# Llama of ~100M parameters (hidden 768, 12 layers, MLP 2048, vocab 8192,
# BF16, random weights with a fixed seed: speed does not depend on them).
# Each row scores TOKENS tokens (default 16384) at ctx 512 in llama.cpp mode.
# Prints a table; it is a measurement, not a test.
#
# The binary is $BUILD/tenpak (BUILD defaults to build); override with
# TENPAK. THREADS (default: all cores) is the multi-threaded row.
set -euo pipefail

cd "$(dirname "$0")/.."
TOKENS=${1:-16384}
BUILD=${BUILD:-build}
TENPAK=${TENPAK:-$BUILD/tenpak}
THREADS=${THREADS:-$(nproc)}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/tp-bench-eval.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

if [ ! -x "$TENPAK" ]; then
	echo "bench-eval: $TENPAK not found (build first or set TENPAK)" >&2
	exit 1
fi

# The fixture model: config and tokenizer from tests/data/eval, BF16 weights.
mkdir -p "$WORK/fixture"
cp tests/data/eval/config.json tests/data/eval/tokenizer.json "$WORK/fixture/"
ln -s "$PWD/tests/data/fixtures/base-bf16.safetensors" "$WORK/fixture/model.safetensors"

# Text: the held-out text repeated; the byte-level tokenizer gives one token
# per byte.
python3 - "$WORK/text.txt" "$TOKENS" <<'PY'
import sys
src = open("tests/data/eval/heldout.txt", "rb").read()
n = int(sys.argv[2]) + 1
open(sys.argv[1], "wb").write((src * (n // len(src) + 1))[:n])
PY

# A ~100M-parameter Llama with the fixture's byte-level tokenizer.
python3 scripts/gen-model.py "$WORK/m100"

printf '%-10s %8s %7s %7s %8s %14s %13s %9s\n' model params threads ctx tokens \
	"prefill tok/s" "decode tok/s" "wall s"
for model in fixture m100; do
	for t in 1 "$THREADS"; do
		start=$(date +%s.%N)
		json=$("$TENPAK" eval "$WORK/$model" --text "$WORK/text.txt" --ctx 512 \
			--max-tokens "$TOKENS" --threads "$t" --decode 64 --json)
		end=$(date +%s.%N)
		python3 - "$model" "$t" "$start" "$end" <<PY
import json, sys
r = json.loads('''$json''')
s = r["speed"]
print("%-10s %7.1fM %7s %7d %8d %14.1f %13.1f %9.1f" % (sys.argv[1],
      r["parameters"] / 1e6, sys.argv[2], r["ctx"], r["tokens"],
      s["prefill_tokens_per_s"], s.get("decode_tokens_per_s", 0),
      float(sys.argv[4]) - float(sys.argv[3])))
PY
		[ "$t" = 1 ] && [ "$THREADS" = 1 ] && break
	done
done
echo "kernel: $("$TENPAK" eval "$WORK/fixture" --text "$WORK/text.txt" --ctx 64 \
	--max-tokens 64 --decode 0 --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["speed"]["kernel"])')," \
	"cores: $(nproc), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
