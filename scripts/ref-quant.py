#!/usr/bin/python3
"""Independent PyTorch reference for tenpak's deterministic quantizers.

Fake-quantizes the 7 linear layers of every decoder block of a Llama model
(q, k, v, o, gate, up, down; not the embeddings, norms or lm_head) with
rtn4_g128, q8_0 and q4_0, and measures each model's perplexity on a text
with the runtime's llama.cpp convention, in fp32 on the CPU. Written with
plain PyTorch (Debian's python3-torch) and no other package, so nothing is
shared with the C code it checks.

  /usr/bin/python3 scripts/ref-quant.py [--weights F] [--config F] [--text F]
        [--ctx N] [--out JSON]

Definitions (x is one row of w[out][in], fp32; fp16() rounds to the nearest
fp16, ties to even, as GGML_FP32_TO_FP16 and torch's .half() do; roundf()
rounds halves away from zero, as C's roundf):
- rtn4_g128 (optimize/README.md, rtnB_gG): groups of 128 along the input
  dimension (the last group of a row may be shorter). The range includes 0:
  min = min(0, smallest), max = max(0, largest).
  s = fp16(max(max - min, 1e-5) / 15), computed in fp32 and rounded to fp16
  BEFORE it is used: zero = clamp(rint(-min / s), 0, 15),
  q = clamp(rint(x / s) + zero, 0, 15), x' = (q - zero) * s, where rint
  rounds halves to even (C rintf, torch.round).
- q8_0 (ggml quantize_row_q8_0_ref): blocks of 32; d = amax / 127 (fp32),
  id = d ? 1 / d : 0, q = roundf(x * id); x' = q * fp16(d).
- q4_0 (ggml quantize_row_q4_0_ref): blocks of 32; m = the first value of
  largest |x| (signed), d = m / -8 (fp32), id = d ? 1 / d : 0,
  q = min(15, trunc(x * id + 8.5)); x' = (q - 8) * fp16(d).
Perplexity: the text's bytes are the token ids (byte-level vocabulary), no
BOS, non-overlapping windows of ctx tokens, the logits of positions
ctx/2 .. ctx-2 of each window score the next token.
"""
import argparse
import json
import math
import os
import struct
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LINEAR = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
          "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")


def load_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    head = json.loads(raw[8:8 + n])
    base = 8 + n
    out = {}
    for name, t in head.items():
        if name == "__metadata__":
            continue
        a, b = t["data_offsets"]
        buf = bytearray(raw[base + a:base + b])
        if t["dtype"] == "BF16":
            v = torch.frombuffer(buf, dtype=torch.int16).to(torch.int32) << 16
            v = v.view(torch.float32)
        elif t["dtype"] == "F16":
            v = torch.frombuffer(buf, dtype=torch.float16).float()
        elif t["dtype"] == "F32":
            v = torch.frombuffer(buf, dtype=torch.float32).clone()
        else:
            sys.exit("ref-quant.py: %s: dtype %s" % (name, t["dtype"]))
        out[name] = v.reshape(t["shape"])
    return out


def roundf(x):
    """C roundf: halves away from zero (torch.round rounds them to even)."""
    return torch.sign(x) * torch.floor(torch.abs(x) + 0.5)


def fp16(x):
    return x.half().float()


def rtn_groups(w, bits, group):
    qmax = float((1 << bits) - 1)
    out = torch.empty_like(w)
    for c in range(0, w.shape[1], group):
        x = w[:, c:c + group]
        # The range always includes 0 (AutoGPTQ's rule, tp_quant_group_params).
        mn = torch.clamp(x.min(dim=1, keepdim=True).values, max=0.0)
        mx = torch.clamp(x.max(dim=1, keepdim=True).values, min=0.0)
        s = fp16(torch.clamp(mx - mn, min=1e-5) / qmax)
        # torch.round: halves to even, as the C side's rintf.
        zero = torch.clamp(torch.round(-mn / s), 0, qmax)
        q = torch.clamp(torch.round(x / s) + zero, 0, qmax)
        out[:, c:c + group] = (q - zero) * s
    return out


def q8_0(w):
    x = w.reshape(-1, 32)
    d = x.abs().max(dim=1, keepdim=True).values / 127
    inv = torch.where(d != 0, 1.0 / d, torch.zeros_like(d))
    return (roundf(x * inv) * fp16(d)).reshape(w.shape)


def q4_0(w):
    x = w.reshape(-1, 32)
    idx = x.abs().argmax(dim=1, keepdim=True)  # first of the largest |x|
    m = torch.gather(x, 1, idx)
    d = m / -8
    inv = torch.where(d != 0, 1.0 / d, torch.zeros_like(d))
    q = torch.clamp(torch.trunc(x * inv + 8.5), max=15)
    return ((q - 8) * fp16(d)).reshape(w.shape)


FORMATS = {
    "rtn4_g128": lambda w: rtn_groups(w, 4, 128),
    "q8_0": q8_0,
    "q4_0": q4_0,
}


def rms_norm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def forward(wt, cfg, ids):
    """Logits [B, T, vocab] of a Llama model (fp32, rotate-half RoPE)."""
    H = cfg["hidden_size"]
    nh = cfg["num_attention_heads"]
    nkv = cfg.get("num_key_value_heads", nh)
    hd = cfg.get("head_dim") or H // nh
    eps = cfg["rms_norm_eps"]
    theta = cfg.get("rope_theta", 10000.0)
    B, T = ids.shape
    inv = 1.0 / (theta ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd))
    ang = torch.arange(T, dtype=torch.float32)[:, None] * inv[None, :]
    emb = torch.cat([ang, ang], dim=-1)
    cos, sin = emb.cos(), emb.sin()

    def rope(x):
        x1, x2 = x[..., :hd // 2], x[..., hd // 2:]
        return x * cos + torch.cat([-x2, x1], dim=-1) * sin

    mask = torch.full((T, T), float("-inf")).triu(1)
    h = wt["model.embed_tokens.weight"][ids]
    for i in range(cfg["num_hidden_layers"]):
        p = "model.layers.%d." % i
        x = rms_norm(h, wt[p + "input_layernorm.weight"], eps)
        q = (x @ wt[p + "self_attn.q_proj.weight"].T).view(B, T, nh, hd).transpose(1, 2)
        k = (x @ wt[p + "self_attn.k_proj.weight"].T).view(B, T, nkv, hd).transpose(1, 2)
        v = (x @ wt[p + "self_attn.v_proj.weight"].T).view(B, T, nkv, hd).transpose(1, 2)
        q, k = rope(q), rope(k)
        if nkv != nh:
            k = k.repeat_interleave(nh // nkv, dim=1)
            v = v.repeat_interleave(nh // nkv, dim=1)
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd) + mask, dim=-1)
        o = (att @ v).transpose(1, 2).reshape(B, T, nh * hd)
        h = h + o @ wt[p + "self_attn.o_proj.weight"].T
        x = rms_norm(h, wt[p + "post_attention_layernorm.weight"], eps)
        g = x @ wt[p + "mlp.gate_proj.weight"].T
        u = x @ wt[p + "mlp.up_proj.weight"].T
        h = h + (torch.nn.functional.silu(g) * u) @ wt[p + "mlp.down_proj.weight"].T
    h = rms_norm(h, wt["model.norm.weight"], eps)
    return h @ wt["lm_head.weight"].T


def perplexity(wt, cfg, ids, ctx):
    """(ppl, scored, log-probs of the scored positions [N, ctx/2 - 1, vocab])."""
    n = len(ids) // ctx
    x = torch.tensor(ids[:n * ctx], dtype=torch.long).view(n, ctx)
    first = ctx // 2
    with torch.no_grad():
        lp = torch.log_softmax(forward(wt, cfg, x), dim=-1)[:, first:ctx - 1]
    tgt = x[:, first + 1:]
    nll = -lp.gather(-1, tgt.unsqueeze(-1)).squeeze(-1).double()
    return math.exp(nll.mean().item()), nll.numel(), lp


def kl_stats(ref_lp, lp):
    """KL(P_ref || P) per scored position in nats: mean and same-top-token %."""
    kl = (ref_lp.exp() * (ref_lp - lp)).sum(-1).double().flatten()
    same = (ref_lp.argmax(-1) == lp.argmax(-1)).double().mean().item()
    return kl.mean().item(), 100 * same


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--weights", default="tests/data/fixtures/base-bf16.safetensors")
    ap.add_argument("--config", default="tests/data/eval/config.json")
    ap.add_argument("--text", default="tests/data/eval/heldout.txt")
    ap.add_argument("--ctx", type=int, default=128)
    ap.add_argument("--out", default="tests/data/optimize/ref-quant.json")
    a = ap.parse_args()
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    with open(a.config) as f:
        cfg = json.load(f)
    with open(a.text, "rb") as f:
        ids = list(f.read())
    base = load_safetensors(a.weights)
    ppl, scored, base_lp = perplexity(base, cfg, ids, a.ctx)
    res = {
        "tool": "scripts/ref-quant.py",
        "command": "/usr/bin/python3 scripts/ref-quant.py --weights %s --config %s --text %s "
                   "--ctx %d --out %s" % (a.weights, a.config, a.text, a.ctx, a.out),
        "torch": torch.__version__,
        "weights": a.weights,
        "text": a.text,
        "tokens": len(ids),
        "ctx": a.ctx,
        "bos": None,
        "mode": "llamacpp",
        "scored": scored,
        "quantized": "the 7 linear layers of every decoder block (q, k, v, o, gate, up, "
                     "down); embeddings, norms and lm_head unchanged",
        "rounding": "scale (rtn) or d (q8_0, q4_0) rounded to fp16 ties-to-even; rtn's "
                    "range includes 0 and it rounds zero and q half to even with the fp16 "
                    "scale; q8_0 rounds half away from zero (roundf), q4_0 truncates "
                    "x/d + 8.5; both compute q with 1/d of the fp32 d and dequantize with "
                    "fp16(d)",
        "baseline": {"codec": "source", "ppl": ppl},
        "kl": "KL(P_baseline || P_candidate) per scored position, nats, mean",
        "weight_rel_err": "sqrt(sum (w' - w)^2 / sum w^2) over all quantized layers",
        "candidates": [],
    }
    print("baseline ppl %.10f (%d scored)" % (ppl, scored), file=sys.stderr)
    for name, fn in FORMATS.items():
        wt = dict(base)
        err2 = ref2 = 0.0
        for k in sorted(wt):
            if k.startswith("model.layers.") and any(k.endswith(s + ".weight") for s in LINEAR):
                wt[k] = fn(base[k])
                err2 += (wt[k].double() - base[k].double()).pow(2).sum().item()
                ref2 += base[k].double().pow(2).sum().item()
        p, _, lp = perplexity(wt, cfg, ids, a.ctx)
        kl, same = kl_stats(base_lp, lp)
        print("%-10s ppl %.10f (%+.4f%%) kl %.3e same-top %.2f%% weight err %.5f"
              % (name, p, 100 * (p / ppl - 1), kl, same, math.sqrt(err2 / ref2)), file=sys.stderr)
        res["candidates"].append({"codec": name, "ppl": p,
                                  "ppl_delta_pct": 100 * (p / ppl - 1),
                                  "kl_mean": kl, "same_top_pct": same,
                                  "weight_rel_err": math.sqrt(err2 / ref2)})
    os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(res, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()
