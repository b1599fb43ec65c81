#!/usr/bin/env python3
"""Write a ~100M-parameter Llama model directory for benchmarks.

    scripts/gen-model.py OUTDIR [VOCAB]

hidden 768, 12 layers, MLP 2048, 12 heads, vocab 8192, BF16 weights drawn
from N(0, 0.02) with a fixed seed (one 64 Ki-value block repeated, so pure
Python makes it in seconds), norms 1; config.json and the byte-level
tokenizer.json come from tests/data/eval. Speed does not depend on the
values; quality figures on these random weights only compare candidates.
VOCAB (default 8192) = 256 matches the byte-level tokenizer exactly, as
llama.cpp requires of a GGUF export (scripts/bench-kernels.sh). Run from the
repository root.
"""
import json, os, random, struct, sys
out = sys.argv[1]
os.makedirs(out)
H, I, L, NH, V = 768, 2048, 12, 12, int(sys.argv[2]) if len(sys.argv) > 2 else 8192
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
