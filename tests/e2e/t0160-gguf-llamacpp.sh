#!/bin/sh
# The GGUF writer against a real engine: the fixture model written as GGUF
# by tp-gguf must give llama.cpp (node-llama-cpp, prebuilt CPU binary) the
# perplexity tenpak measures on the same tokens: within 0.1% in F32, within 1%
# with the block linear layers in Q8_0 (llama.cpp also rounds activations).
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DATA=$(cd "$(dirname "$0")/../data" && pwd)
command -v npm >/dev/null && command -v node >/dev/null || {
	echo "1..0 # SKIP npm/node missing (node-llama-cpp comes from the npm registry)"
	exit 77
}
. "$(dirname "$0")/lib.sh"

TP_GGUF=${TP_GGUF:-$(dirname "$TENPAK")/tp-gguf}
# 8 windows of 128 tokens keep llama.cpp's per-token probability maps quick.
TOKENS=1024

# close_to A B TOL: |A - B| / B < TOL (B a perplexity, so > 1).
close_to() {
	echo "llama.cpp $1 tenpak $2" &&
	awk -v a="$1" -v b="$2" -v tol="$3" "BEGIN {
		d = (a - b) / b; if (d < 0) d = -d;
		printf \"relative difference %.3g\n\", d;
		exit !(b > 1 && d < tol) }"
}

test_expect_success 'node-llama-cpp installs from the npm registry' '
	sh "$ROOT/scripts/llamacpp.sh" install
'

test_expect_success 'tp-gguf writes the fixture as GGUF v3' '
	mkdir model &&
	cp "$DATA/eval/config.json" "$DATA/eval/tokenizer.json" model/ &&
	cp "$DATA/fixtures/base-bf16.safetensors" model/model.safetensors &&
	"$TP_GGUF" model model.gguf &&
	head -c 8 model.gguf | od -An -tx1 >magic &&
	echo " 47 47 55 46 03 00 00 00" >want &&
	cmp want magic
'

test_expect_success 'llama.cpp and tenpak agree on the F32 perplexity' '
	head -c $TOKENS "$DATA/eval/heldout.txt" >text &&
	sh "$ROOT/scripts/llamacpp.sh" ppl model.gguf text 128 >llama.json &&
	"$TENPAK" eval model --text text --ctx 128 --decode 0 --json >tenpak.json &&
	sed -n "s/.*\"ppl\":\([0-9.eE+-]*\).*/\1/p" llama.json >llama.ppl &&
	sed -n "s/^[[:space:]]*\"ppl\":[[:space:]]*\([0-9.eE+-]*\),*$/\1/p" tenpak.json >tenpak.ppl &&
	grep -q "\"scored\":504," llama.json &&
	grep -q "\"scored\":[[:space:]]*504," tenpak.json &&
	close_to "$(cat llama.ppl)" "$(cat tenpak.ppl)" 0.001
'

test_expect_success 'llama.cpp on the Q8_0 GGUF stays within 1% of tenpak in F32' '
	"$TP_GGUF" model q8.gguf q8_0 &&
	size=$(wc -c <q8.gguf) && f32=$(wc -c <model.gguf) &&
	test "$size" -lt $((f32 / 2)) &&
	sh "$ROOT/scripts/llamacpp.sh" ppl q8.gguf text 128 >llama-q8.json &&
	sed -n "s/.*\"ppl\":\([0-9.eE+-]*\).*/\1/p" llama-q8.json >llama-q8.ppl &&
	close_to "$(cat llama-q8.ppl)" "$(cat tenpak.ppl)" 0.01
'

test_done
