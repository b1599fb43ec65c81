#!/bin/sh
# tenpak optimize against the independent PyTorch reference
# (scripts/ref-quant.py, output committed as tests/data/optimize/ref-quant.json):
# the same fixture, text, ctx and quantizers must give the same perplexity
# within 0.05% (issue 12's bound), the same mean KL within 0.1% and the same
# top-token agreement within 0.5 points. PPL alone cannot tell a broken
# quantizer on this fixture (q4_0 moves it by 0.03%); KL can: 0.1% is 5x the
# worst agreement measured (q8_0, 2e-4) and catches a rounding rule that
# differs only at ties (0.18%).
DATA=$(cd "$(dirname "$0")/../data" && pwd)
command -v python3 >/dev/null || {
	echo "1..0 # SKIP python3 missing (the comparison reads JSON)"
	exit 77
}
. "$(dirname "$0")/lib.sh"

CANDIDATES=rtn4_g128,q8_0,q4_0

# compare.py REF.JSON OUT.JSON LIST: every candidate of LIST within bounds.
cat >compare.py <<'PY'
import json, sys
ref = json.load(open(sys.argv[1]))
out = json.load(open(sys.argv[2]))
assert out["eval"]["ctx"] == ref["ctx"] and out["eval"]["tokens"] == ref["tokens"], out["eval"]
assert out["eval"]["scored"] == ref["scored"] and out["eval"]["mode"] == ref["mode"], out["eval"]
rc = {c["codec"]: c for c in ref["candidates"]}
oc = {c["codec"]: c for c in out["all_candidates"]}
ok = True
def check(name, what, a, b, rel=None, absd=None):
    global ok
    d = abs(a - b)
    good = d <= rel * abs(b) if rel is not None else d <= absd
    print("%-10s %-12s tenpak %.10g reference %.10g %s" % (name, what, a, b,
          "ok" if good else "OUT OF BOUNDS"))
    ok = ok and good
check("baseline", "ppl", out["baseline"]["ppl"], ref["baseline"]["ppl"], rel=5e-4)
for name in sys.argv[3].split(","):
    t, r = oc[name], rc[name]
    check(name, "ppl", t["ppl"], r["ppl"], rel=5e-4)
    check(name, "kl_mean", t["kl_mean"], r["kl_mean"], rel=1e-3)
    check(name, "same_top_pct", t["same_top_pct"], r["same_top_pct"], absd=0.5)
sys.exit(0 if ok else 1)
PY

test_expect_success 'the reference covers the candidates at ctx 128' '
	json_true "d[\"ctx\"] == 128 and {c[\"codec\"] for c in d[\"candidates\"]} >= {\"rtn4_g128\", \"q8_0\", \"q4_0\"}" \
		<"$DATA/optimize/ref-quant.json"
'

test_expect_success 'tenpak optimize matches the PyTorch reference' '
	mkdir model &&
	cp "$DATA/eval/config.json" "$DATA/eval/tokenizer.json" model/ &&
	cp "$DATA/fixtures/base-bf16.safetensors" model/model.safetensors &&
	"$TENPAK" optimize model --eval "$DATA/eval/heldout.txt" --ctx 128 \
		--candidates $CANDIDATES --json out.json >report &&
	python3 compare.py "$DATA/optimize/ref-quant.json" out.json $CANDIDATES
'

test_done
