#!/bin/sh
# tenpak optimize --device: without a usable GPU (no GPU here, or CUDA not
# built in) cuda and auto fall back to the CPU, say why in one line, and
# measure what --device cpu measures; a bad device is a usage error.
DATA=$(cd "$(dirname "$0")/../data" && pwd)
. "$(dirname "$0")/lib.sh"

mkdir model &&
cp "$DATA/eval/config.json" "$DATA/eval/tokenizer.json" model/ &&
ln -s "$DATA/fixtures/base-bf16.safetensors" model/model.safetensors || exit 1

# This test checks the fallback: a machine with a GPU takes the other path.
if "$TENPAK" optimize model --candidates q8_0 --max-tokens 256 --ctx 64 --threads 2 \
	--device cuda --json probe.json >/dev/null 2>&1 &&
	grep -q '"device":[^,]*"cuda"' probe.json; then
	echo "skip: a CUDA GPU is here (the GPU path is tests/unit/cuda)"; exit 77
fi

# same.py A.JSON B.JSON: same candidates, same quality figures (speed is timed).
cat >same.py <<'PY'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
assert a["device"] == b["device"] == "cpu", (a["device"], b["device"])
assert a["baseline"]["ppl"] == b["baseline"]["ppl"]
ca, cb = a["all_candidates"], b["all_candidates"]
assert [c["codec"] for c in ca] == [c["codec"] for c in cb]
for x, y in zip(ca, cb):
    for k in ("ppl", "kl_mean", "kl_p99", "same_top_pct", "bpw", "compression"):
        assert x[k] == y[k], (x["codec"], k, x[k], y[k])
assert a["hardware"]["name"] == b["hardware"]["name"] == "cpu-local"
print(a.get("device_note", ""))
PY

run() {
	"$TENPAK" optimize model --candidates rtn4_g128,q8_0 --max-tokens 512 --ctx 128 \
		--threads 2 "$@"
}

test_expect_success '--device cpu: measured on the CPU, no note' '
	run --device cpu --json cpu.json >cpu.out 2>cpu.err &&
	test ! -s cpu.err &&
	grep -q "^device   cpu$" cpu.out &&
	! grep -q device_note cpu.json
'

test_expect_success '--device cuda without a GPU: one line saying why, the CPU result' '
	run --device cuda --json cuda.json >cuda.out 2>cuda.err &&
	test "$(wc -l <cuda.err)" -eq 1 &&
	grep -Eq "^tenpak optimize: (CUDA not built into this tenpak|no CUDA GPU found \(.+\)): measuring on the CPU" cuda.err &&
	grep -q "^device   cpu: .*measuring on the CPU" cuda.out &&
	python3 same.py cuda.json cpu.json >note &&
	grep -q "measuring on the CPU" note
'

test_expect_success '--device auto (the default): the same, said on the device line' '
	run --json auto.json >auto.out 2>auto.err &&
	test ! -s auto.err &&
	grep -q "^device   cpu: .*measuring on the CPU" auto.out &&
	python3 same.py auto.json cpu.json >note &&
	grep -q "measuring on the CPU" note
'

test_expect_success '--device bogus is a usage error; --help documents --device' '
	test_expect_code 2 "$TENPAK" optimize model --device bogus >out 2>err &&
	grep -q "device wants cuda, cpu or auto" err &&
	"$TENPAK" optimize --help >help &&
	grep -q "^  --device D " help
'

test_done
