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
python3 - "$WORK/m100" <<'PY'
import json, os, random, struct, sys
out = sys.argv[1]
os.makedirs(out)
H, I, L, NH, V = 768, 2048, 12, 12, 8192
cfg = json.load(open("tests/data/eval/config.json"))
cfg.update(hidden_size=H, intermediate_size=I, num_hidden_layers=L,
           num_attention_heads=NH, num_key_value_heads=NH, vocab_size=V,
           max_position_embeddings=2048, _name_or_path="bench/m100")
json.dump(cfg, open(os.path.join(out, "config.json"), "w"), indent=2)
open(os.path.join(out, "tokenizer.json"), "w").write(
    open("tests/data/eval/tokenizer.json").read())
shapes = {"model.embed_tokens.weight": [V, H], "model.norm.weight": [H],
          "lm_head.weight": [V, H]}
for l in range(L):
    p = "model.layers.%d." % l
    shapes[p + "input_layernorm.weight"] = [H]
    shapes[p + "post_attention_layernorm.weight"] = [H]
    for n in ("q", "k", "v", "o"):
        shapes[p + "self_attn.%s_proj.weight" % n] = [H, H]
    shapes[p + "mlp.gate_proj.weight"] = [I, H]
    shapes[p + "mlp.up_proj.weight"] = [I, H]
    shapes[p + "mlp.down_proj.weight"] = [H, I]
# One block of N(0, 0.02) bf16 values, repeated: cheap to make in pure Python.
rng = random.Random(7)
block = b"".join(struct.pack("<f", rng.gauss(0, 0.02))[2:] for _ in range(1 << 16))
ones = struct.pack("<f", 1.0)[2:]
header, off = {}, 0
for name in sorted(shapes):
    n = 1
    for d in shapes[name]:
        n *= d
    header[name] = {"dtype": "BF16", "shape": shapes[name], "data_offsets": [off, off + 2 * n]}
    off += 2 * n
h = json.dumps(header).encode()
h += b" " * (-len(h) % 8)
with open(os.path.join(out, "model.safetensors"), "wb") as f:
    f.write(struct.pack("<Q", len(h)) + h)
    for name in sorted(shapes):
        n = header[name]["data_offsets"][1] // 2 - header[name]["data_offsets"][0] // 2
        if name.endswith("norm.weight"):
            f.write(ones * n)
            continue
        reps, rest = divmod(n * 2, len(block))
        f.write(block * reps + block[:rest])
PY

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
