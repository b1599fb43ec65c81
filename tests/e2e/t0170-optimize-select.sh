#!/bin/sh
# tenpak optimize: speed, price, constraints, the winner, exit code 3, the
# quick run's budget, and the Markdown and SVG reports on the fixture model.
DATA=$(cd "$(dirname "$0")/../data" && pwd)
. "$(dirname "$0")/lib.sh"

# The plot is rendered to PNG to check that it is an image a viewer draws.
command -v rsvg-convert >/dev/null ||
	{ echo "skip: rsvg-convert (Debian librsvg2-bin) renders the plot"; exit 77; }

mkdir model &&
cp "$DATA/eval/config.json" "$DATA/eval/tokenizer.json" model/ &&
ln -s "$DATA/fixtures/base-bf16.safetensors" model/model.safetensors || exit 1

# check.py OUT.JSON: the speed, price and selection fields hang together.
cat >check.py <<'PY'
import json, math, sys
r = json.load(open(sys.argv[1]))
cons = r["constraints"]
hw = r["hardware"]
assert hw["usd_per_hour"] > 0, hw
assert hw["measured"] or hw["name"] == "tiny" or hw["price_source"].startswith("https://"), hw
io_in, io_out = r["settings"]["io_in"], r["settings"]["io_out"]
keys = ("compression", "latency_p50_ms", "latency_p95_ms", "latency_p99_ms",
        "throughput_tps", "prefill_tps", "memory_gb", "cost_per_1m_tokens", "speed_source")

def broken(c):
    """The constraints c breaks, by the JSON's own figures."""
    out = []
    checks = (("max-ppl-delta", c["ppl_delta_pct"], 1), ("max-kl", c["kl_mean"], 1),
              ("min-compression", c["compression"], -1),
              ("max-latency-p99-ms", c["latency_p99_ms"], 1),
              ("min-throughput", c["throughput_tps"], -1),
              ("max-memory-gb", c["memory_gb"], 1))
    for name, v, sign in checks:
        if name in cons and (v - cons[name]) * sign > 0:
            out.append(name)
    if hw["memory_gb"] > 0 and c["memory_gb"] > hw["memory_gb"]:
        out.append("hardware memory")
    return out

label = {"max-ppl-delta": "ΔPPL", "max-kl": "KL", "min-compression": "compression",
         "max-latency-p99-ms": "p99 latency", "min-throughput": "throughput",
         "max-memory-gb": "memory", "hardware memory": "memory"}
cands = {c["codec"]: c for c in r["all_candidates"]}
for c in cands.values():
    for k in keys:
        assert k in c, (c["codec"], k)
    assert c["speed_source"] in ("measured", "projected")
    assert c["latency_p50_ms"] <= c["latency_p95_ms"] <= c["latency_p99_ms"], c
    assert c["throughput_tps"] > 0 and c["memory_gb"] > 0 and c["cost_per_1m_tokens"] > 0
    # $/1M = $/hour / (tokens/s x 3600) x 1e6, blended by the io ratio.
    out_cost = hw["usd_per_hour"] / (c["throughput_tps"] * 3600) * 1e6
    assert abs(c["cost_per_1m_output"] - out_cost) < 1e-9 * out_cost, c
    if c["prefill_tps"] > 0:
        in_cost = hw["usd_per_hour"] / (c["prefill_tps"] * 3600) * 1e6
        blended = (io_in * in_cost + io_out * out_cost) / (io_in + io_out)
    else:
        blended = out_cost
    assert abs(c["cost_per_1m_tokens"] - blended) < 1e-9 * blended, c
    assert c["passed"] == (not broken(c)), (c["codec"], broken(c))
rejected = {x["codec"]: x["reason"] for x in r["rejected"]}
for name, c in cands.items():
    if not c["passed"]:
        b = broken(c)
        assert name in rejected and rejected[name].startswith(name + ": "), name
        assert all(label[k] in rejected[name] for k in b), (rejected[name], b)
w = r["winner"]
if w is None:
    assert not any(c["passed"] for c in cands.values())
    assert r["binding"]["why"], r["binding"]
    print("none", r["binding"]["constraint"])
    sys.exit(0)
for k in ("codec", "compression", "ppl_delta", "latency_p99_ms", "throughput_tps",
          "cost_per_1m_tokens"):
    assert k in w, k
c = cands[w["codec"]]
assert c["passed"] and not broken(c)
for k in keys:
    assert w[k] == c[k], k
cheapest = min(x["cost_per_1m_tokens"] for x in cands.values() if x["passed"])
assert w["cost_per_1m_tokens"] == cheapest, (w, cheapest)
print("winner", w["codec"])
PY

test_expect_success 'a constraint set with a winner, projected on an A10G' '
	"$TENPAK" optimize model --candidates rtn4_g128,q8_0,q4_0,rtn3_g128 \
		--max-tokens 512 --ctx 128 --threads 2 --hardware a10g \
		--max-ppl-delta 0.5 --max-kl 0.002 --json w.json >out 2>err &&
	python3 check.py w.json >verdict &&
	grep -q "^winner " verdict &&
	python3 -c "import json,sys; r=json.load(open(\"w.json\")); \
		sys.exit(not (r[\"hardware\"][\"name\"] == \"a10g\" and \
		all(c[\"speed_source\"] == \"projected\" for c in r[\"all_candidates\"])))" &&
	grep -q "^winner   [a-z0-9_]*: \\$[0-9.e-]* per 1M tokens on a10g" out &&
	grep -q "^rejected rtn3_g128: .*KL [0-9.e-]* > 0.002" out
'

test_expect_success 'measured on cpu-local by default, with the device named' '
	"$TENPAK" optimize model --candidates q8_0 --max-tokens 512 --ctx 128 \
		--threads 2 --compare cpu-local,h100 --json m.json >out 2>err &&
	python3 check.py m.json >verdict &&
	python3 -c "import json,sys; r=json.load(open(\"m.json\")); c=r[\"all_candidates\"][0]; \
		sys.exit(not (c[\"speed_source\"] == \"measured\" and \
		c[\"speed_device\"].startswith(\"cpu-local (this machine: \") and \
		c[\"throughput_tps\"] == c[\"measured_local\"][\"decode_tps\"] and \
		r[\"hardware\"][\"bandwidth_gbs\"] > 0 and r[\"hardware\"][\"peak_tflops\"] > 0 and \
		c[\"compare\"][\"cpu-local\"][\"cost_per_1m_tokens\"] == c[\"cost_per_1m_tokens\"] and \
		c[\"compare\"][\"h100\"][\"speed_source\"] == \"projected\"))"
'

test_expect_success 'no candidate passing exits 3 and names the binding constraint' '
	test_expect_code 3 "$TENPAK" optimize model --candidates rtn4_g128,q4_0 \
		--max-tokens 512 --ctx 128 --threads 2 --max-kl 1e-9 \
		--json none.json --report none.md >out 2>err &&
	python3 check.py none.json >verdict &&
	test "$(cat verdict)" = "none --max-kl" &&
	grep -q "^winner   none: --max-kl 1e-09 binds: .* meets every other constraint but has KL" out &&
	grep -q "No candidate meets the constraints.*--max-kl" none.md &&
	test ! -s err
'

test_expect_success 'a hardware that is too small binds too' '
	cat >tiny.json <<-\JSON &&
	{"name": "tiny", "memory_gb": 0.001, "bandwidth_gbs": 10, "peak_tflops": 1,
	 "usd_per_hour": 0.01}
	JSON
	test_expect_code 3 "$TENPAK" optimize model --candidates q4_0 --max-tokens 512 \
		--ctx 128 --threads 2 --hardware tiny.json --json tiny-out.json >out 2>err &&
	python3 check.py tiny-out.json &&
	grep -q "^winner   none: the hardware.s memory binds: q4_0 needs" out
'

test_expect_success '--quick uses 1024 tokens and 16 decode steps; --budget skips' '
	"$TENPAK" optimize model --quick --candidates rtn4_g128,q8_0 --ctx 128 \
		--threads 2 --json q.json >out 2>err &&
	python3 -c "import json,sys; r=json.load(open(\"q.json\")); s=r[\"settings\"]; \
		sys.exit(not (s[\"quick\"] and s[\"budget_s\"] == 120 and \
		r[\"eval\"][\"tokens\"] == 1024 and s[\"decode_steps\"] == 16 and \
		r[\"skipped\"] == [] and len(r[\"all_candidates\"]) == 2))" &&
	test_expect_code 3 "$TENPAK" optimize model --quick --budget 0.001 \
		--candidates rtn4_g128,q8_0 --ctx 128 --threads 2 --json b.json >out 2>err &&
	python3 -c "import json,sys; r=json.load(open(\"b.json\")); \
		sys.exit(not ([x[\"codec\"] for x in r[\"skipped\"]] == [\"rtn4_g128\", \"q8_0\"] and \
		all(\"budget\" in x[\"reason\"] for x in r[\"skipped\"]) and \
		r[\"all_candidates\"] == [] and r[\"winner\"] is None))" &&
	grep -q "^rtn4_g128 *skipped: estimated .* of the 0 s budget" out
'

# The Pareto front is drawn as a line when it has two points or more: a
# candidate that is both the cheapest and the best (measured speeds decide)
# makes a front of one.
test_expect_success 'the Markdown report and the SVG plot, rendered to PNG' '
	"$TENPAK" optimize model --candidates rtn4_g128,q8_0,q4_0,rtn3_g128,bf16 \
		--max-tokens 512 --ctx 128 --threads 2 --hardware h100 --max-kl 0.002 \
		--report r.md --plot p.svg --json rp.json >out 2>err &&
	grep -q "^## Recommendation" r.md &&
	grep -q "^Serve \*\*[a-z0-9_]*\*\* on \*\*h100\*\*" r.md &&
	grep -q "^| rtn3_g128 | .* | projected | rejected |$" r.md &&
	grep -q "^- rtn3_g128: KL" r.md &&
	grep -q "huggingface.co/docs/inference-endpoints/pricing" r.md &&
	grep -q "^## How each figure was obtained" r.md &&
	python3 -c "import json, sys, xml.etree.ElementTree as E; \
		c=sorted((x[\"cost_per_1m_tokens\"], x[\"kl_mean\"]) \
			for x in json.load(open(\"rp.json\"))[\"all_candidates\"]); \
		front=[k for i, (_, k) in enumerate(c) if all(k < b for _, b in c[:i])]; \
		t=E.parse(\"p.svg\").getroot(); n=\"{http://www.w3.org/2000/svg}\"; \
		sys.exit(not (t.get(\"width\") == \"800\" and t.get(\"height\") == \"500\" and \
		len(t.findall(n + \"polyline\")) == (len(front) > 1) and \
		any(\"(winner)\" in (x.text or \"\") for x in t.iter(n + \"text\"))))" &&
	rsvg-convert -w 800 -h 500 p.svg -o p.png &&
	python3 -c "import struct,sys; d=open(\"p.png\",\"rb\").read(24); \
		sys.exit(not (d[:8] == b\"\\x89PNG\\r\\n\\x1a\\n\" and \
		struct.unpack(\">II\", d[16:24]) == (800, 500)))"
'

test_expect_success 'bad selection arguments are usage errors' '
	test_usage_errors optimize optimize "m --max-kl x" "m --max-ppl-delta -1" \
		"m --batch 0" "m --io-ratio 3:0" "m --io-ratio x" "m --budget 0" \
		"m --usd-per-hour -2" "m --min-throughput"
'

test_expect_success 'an unknown hardware names the built-in profiles' '
	test_expect_code 1 "$TENPAK" optimize model --hardware nope --max-tokens 512 \
		--ctx 128 >out 2>err &&
	grep -q "no hardware profile or file .nope. (built in: a100-80gb, a10g, cpu-local, h100, h200, l4, l40s, t4)" err
'

test_done
