#!/usr/bin/env bash
# The GPU path end to end (optimize/cuda/): on a machine with an NVIDIA GPU,
# generate a ~1.1B-parameter Llama (hidden 2048, 16 layers, MLP 8192, 32
# heads, 8 KV heads, vocab 32000; BF16 weights drawn from N(0, 0.02), one
# block repeated as scripts/gen-model.py does) and, when the GPU has 40 GiB
# free and the host 64 GiB of memory, a 7B-shaped one (hidden 4096, 32
# layers, MLP 11008, 32 heads, vocab 32000), and run tp-cuda-bench on each:
# per candidate, prefill and decode tok/s on the GPU, the whole model's
# weight read rate while decoding, the single-token product (GEMV) of the
# largest layer in GB/s and as a fraction of the copy bandwidth measured in
# the same run and of the datasheet peak (goal for 4-bit formats: >= 70%),
# and the total time (CPU load and quantization, upload, measurements).
#
#   scripts/bench-cuda.sh            (BUILD=build, PREFILL=512, DECODE=128,
#                                     CANDIDATES, CANDIDATES_7B, SKIP_7B=1)
#
# Without a GPU (or without the CUDA build) it says so and prints "skipped".
# It is a measurement, not a test.
set -euo pipefail

cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
BENCH=${BENCH:-$BUILD/optimize/cuda/tp-cuda-bench}
PREFILL=${PREFILL:-512}
DECODE=${DECODE:-128}
CANDIDATES=${CANDIDATES:-"baseline int8 q8_0 nf4 rtn4_g128 q4_k rtn3_g128"}
CANDIDATES_7B=${CANDIDATES_7B:-"baseline rtn4_g128 q4_k"}
PY=${PY:-python3}

if [ ! -x "$BENCH" ]; then
	echo "bench-cuda: $BENCH not found (configure with TENPAK_CUDA=AUTO or ON where nvcc is installed, then build)"
	echo "skipped"
	exit 0
fi
set +e
"$BENCH" --query
rc=$?
set -e
if [ $rc -eq 77 ]; then
	echo "bench-cuda: no CUDA device on this machine"
	echo "skipped"
	exit 0
elif [ $rc -ne 0 ]; then
	exit $rc
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/tp-bench-cuda.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# gen OUT HIDDEN LAYERS MLP HEADS KV_HEADS VOCAB
gen() {
	"$PY" - "$@" <<'PYEOF'
import json, os, random, struct, sys
out = sys.argv[1]
H, L, I, NH, KV, V = (int(a) for a in sys.argv[2:8])
os.makedirs(out)
cfg = json.load(open("tests/data/eval/config.json"))
cfg.update(hidden_size=H, intermediate_size=I, num_hidden_layers=L, num_attention_heads=NH,
           num_key_value_heads=KV, vocab_size=V, max_position_embeddings=4096,
           _name_or_path="bench/cuda")
json.dump(cfg, open(os.path.join(out, "config.json"), "w"), indent=2)
hd = H // NH
shapes = {"model.embed_tokens.weight": [V, H], "model.norm.weight": [H], "lm_head.weight": [V, H]}
for l in range(L):
    p = "model.layers.%d." % l
    shapes[p + "input_layernorm.weight"] = [H]
    shapes[p + "post_attention_layernorm.weight"] = [H]
    shapes[p + "self_attn.q_proj.weight"] = [H, H]
    shapes[p + "self_attn.k_proj.weight"] = [KV * hd, H]
    shapes[p + "self_attn.v_proj.weight"] = [KV * hd, H]
    shapes[p + "self_attn.o_proj.weight"] = [H, H]
    shapes[p + "mlp.gate_proj.weight"] = [I, H]
    shapes[p + "mlp.up_proj.weight"] = [I, H]
    shapes[p + "mlp.down_proj.weight"] = [H, I]
rng = random.Random(11)
block = b"".join(struct.pack("<f", rng.gauss(0, 0.02))[2:] for _ in range(1 << 16))
one = struct.pack("<f", 1.0)[2:]
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
        a, b = header[name]["data_offsets"]
        if name.endswith("norm.weight"):
            f.write(one * ((b - a) // 2))
            continue
        reps, rest = divmod(b - a, len(block))
        for _ in range(reps):
            f.write(block)
        f.write(block[:rest])
print("generated %s: %.2fB parameters" % (out, off / 2 / 1e9))
PYEOF
}

run() { # run DIR CANDIDATES
	local t0=$SECONDS
	# shellcheck disable=SC2086
	"$BENCH" "$1" $2 --prefill "$PREFILL" --decode "$DECODE"
	echo "# $(basename "$1"): $((SECONDS - t0)) s in all"
}

echo "== ~1.1B Llama"
gen "$WORK/m1b" 2048 16 8192 32 8 32000
run "$WORK/m1b" "$CANDIDATES"
rm -rf "$WORK/m1b"

free_gib=$("$BENCH" --query | awk -F'\t' '$1 == "free_gib" { print int($2) }')
host_gib=$(awk '/MemTotal/ { print int($2 / 1048576) }' /proc/meminfo)
if [ "${SKIP_7B:-0}" = 1 ]; then
	echo "== 7B-shaped Llama: skipped (SKIP_7B=1)"
elif [ "${free_gib:-0}" -ge 40 ] && [ "$host_gib" -ge 64 ]; then
	echo "== 7B-shaped Llama"
	gen "$WORK/m7b" 4096 32 11008 32 32 32000
	run "$WORK/m7b" "$CANDIDATES_7B"
else
	echo "== 7B-shaped Llama: skipped (GPU ${free_gib:-?} GiB free, host $host_gib GiB; needs 40 and 64)"
fi
