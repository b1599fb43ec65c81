#!/usr/bin/python3
"""Model what a grid-aware delta transform could store for a sparsified model.

    /usr/bin/python3 scripts/model-qgrid.py BASE.safetensors OUT.safetensors [BITS [NCAND]]

OUT is `tenpak delta sparsify` output against BASE (BF16). Prints order-0
entropies per tensor, summed, as a fraction of OUT's size (a lower bound for
an order-0 coder; no tables, no framing):

  ulp joint   the zigzagged ULP difference as one 16-bit symbol
  ulp planes  the same split into the codec's two byte planes (what the
              codec's `ulp` xform pays before its own overheads)
  qgrid       a hypothetical transform that sees only BASE and OUT: per row
              an fp32 scale s (4 bytes), an int8 code q per weight and a
              residual in ULPs against round_bf16(b + q*s). s is found from
              the row's largest |OUT - BASE| (which sparsify puts at
              q = qmax = 2^(BITS-1) - 1; BITS defaults to 8)
              by trying NCAND (default 33) values across its rounding
              interval and keeping the one that leaves the fewest residuals.

Needs numpy. Nothing here is used by tenpak; it sizes a codec change.
"""
import json
import struct
import sys

import numpy as np


def load(path):
    with open(path, "rb") as f:
        b = f.read()
    n = struct.unpack("<Q", b[:8])[0]
    return b, 8 + n, json.loads(b[8:8 + n])


def ent(x):
    """Order-0 entropy of x in bytes."""
    if len(x) == 0:
        return 0.0
    _, c = np.unique(x, return_counts=True)
    return float(-(c * np.log2(c / c.sum())).sum() / 8)


def bf16_to_f32(u):
    return (u.astype(np.uint32) << 16).view(np.float32)


def f32_to_bf16(f):
    u = f.astype(np.float32).view(np.uint32).astype(np.uint64)
    return (((u + 0x7FFF + ((u >> 16) & 1)) >> 16) & 0xFFFF).astype(np.int64)


def ordv(x):
    """Sign-magnitude BF16 bits to integers in numeric order."""
    return np.where(x & 0x8000, 0x7FFF - (x & 0x7FFF) - 0x8000, x)


def qgrid(b, t, rows, cols, qmax, ncand):
    """Returns (q, residual, scale bytes) for one tensor."""
    bb, tt = b.reshape(rows, cols), t.reshape(rows, cols)
    bf = bf16_to_f32(bb)
    d = (bf16_to_f32(tt).astype(np.float64) - bf.astype(np.float64))
    amax = np.abs(d).max(1)
    i = np.abs(d).argmax(1)
    ulp = np.abs(bf16_to_f32(tt[np.arange(rows), i]).astype(np.float64)) * 2.0**-8
    best = None
    with np.errstate(invalid="ignore", divide="ignore"):
        for c in np.linspace(-1, 1, ncand):
            s = ((amax + c * ulp / 2) / qmax).astype(np.float32)[:, None]
            q = np.nan_to_num(np.clip(np.round(d / s), -127, 127))
            q[d == 0] = 0
            pred = np.where(q == 0, bb, f32_to_bf16(bf + (q * s).astype(np.float32)))
            bad = (pred != tt).sum(1)
            if best is None:
                best = (bad, s, q)
            else:
                m = bad < best[0]
                best = (np.where(m, bad, best[0]), np.where(m[:, None], s, best[1]),
                        np.where(m[:, None], q, best[2]))
    _, s, q = best
    pred = np.where(q == 0, bb, f32_to_bf16(bf + (q * s).astype(np.float32)))
    return q.astype(np.int64).ravel(), (ordv(tt) - ordv(pred)).ravel(), 4 * rows


def main():
    if len(sys.argv) not in (3, 4, 5):
        sys.exit(__doc__)
    qmax = (1 << (int(sys.argv[3]) - 1)) - 1 if len(sys.argv) > 3 else 127
    ncand = int(sys.argv[4]) if len(sys.argv) > 4 else 33
    B, ob, hdr = load(sys.argv[1])
    O, oo, ohdr = load(sys.argv[2])
    tot = dict(joint=0.0, planes=0.0, q=0.0, res=0.0, scales=0.0)
    n = nz = resnz = 0
    for name, v in hdr.items():
        if name == "__metadata__":
            continue
        if v["dtype"] != "BF16" or ohdr.get(name, {}).get("shape") != v["shape"]:
            sys.exit(f"{name}: BF16 tensors of equal shape only")
        a, e = v["data_offsets"]
        oa, oe = ohdr[name]["data_offsets"]
        b = np.frombuffer(B[ob + a:ob + e], dtype=np.uint16).astype(np.int64)
        t = np.frombuffer(O[oo + oa:oo + oe], dtype=np.uint16).astype(np.int64)
        if len(b) == 0:
            continue
        d = ordv(t) - ordv(b)
        z = np.where(d < 0, -2 * d - 1, 2 * d) & 0xFFFF
        tot["joint"] += ent(z)
        tot["planes"] += ent(z >> 8) + ent(z & 0xFF)
        cols = v["shape"][-1] if v["shape"] else 1
        q, res, sb = qgrid(b, t, len(b) // cols, cols, qmax, ncand)
        tot["q"] += ent(q)
        tot["res"] += ent(res)
        tot["scales"] += sb
        n += len(b)
        nz += int((d != 0).sum())
        resnz += int((res != 0).sum())
    size = len(O)
    pct = {k: 100 * x / size for k, x in tot.items()}
    print(f"{sys.argv[2]}: {n} weights, {100 * nz / n:.2f}% changed")
    print(f"  ulp joint  {pct['joint']:.2f}%   ulp planes {pct['planes']:.2f}%")
    print(f"  qgrid      {pct['q'] + pct['res'] + pct['scales']:.2f}% = q {pct['q']:.2f}% + "
          f"residual {pct['res']:.2f}% ({resnz} nonzero) + fp32 scales {pct['scales']:.2f}%")


if __name__ == "__main__":
    main()
