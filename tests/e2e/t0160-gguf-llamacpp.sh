#!/bin/sh
# The GGUF writer against a real engine: the fixture model written as GGUF
# by tp-gguf must give llama.cpp (node-llama-cpp, prebuilt CPU binary) the
# perplexity tenpak measures on the same tokens: within 0.1% in F32, within 1%
# with the block linear layers in Q8_0, Q4_0 or Q4_K (llama.cpp also rounds
# activations), against tenpak's perplexity of the same quantization. tp-gguf
# packs with tenpak's own formats, so this checks their bytes and tenpak's
# dequantization against llama.cpp's; the quantizers' rules themselves are
# checked against PyTorch in t0155.
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

# One tenpak optimize run measures every quantization on the same 8 windows.
test_expect_success 'tenpak optimize measures Q8_0, Q4_0 and Q4_K on the same tokens' '
	"$TENPAK" optimize model --eval text --ctx 128 --candidates q8_0,q4_0,q4_k \
		--json opt.json >opt.txt &&
	grep -q "\"scored\":[[:space:]]*504$" opt.json &&
	test "$(grep -c "\"fallbacks\":[[:space:]]*\[\]$" opt.json)" = 3 &&
	for q in q8_0 q4_0 q4_k
	do
		tenpak_ppl $q <opt.json >tenpak-$q.ppl || return 1
	done
'

# check_quant MODE MAX_SIZE: the MODE GGUF (smaller than MAX_SIZE bytes) gives
# llama.cpp a perplexity within 1% of tenpak's for MODE.
check_quant() {
	"$TP_GGUF" model $1.gguf $1 &&
	size=$(wc -c <$1.gguf) &&
	test "$size" -lt "$2" &&
	sh "$ROOT/scripts/llamacpp.sh" ppl $1.gguf text 128 >llama-$1.json &&
	grep -q "\"scored\":504," llama-$1.json &&
	sed -n "s/.*\"ppl\":\([0-9.eE+-]*\).*/\1/p" llama-$1.json >llama-$1.ppl &&
	close_to "$(cat llama-$1.ppl)" "$(cat tenpak-$1.ppl)" 0.01
}

test_expect_success 'llama.cpp on the Q8_0 GGUF stays within 1% of tenpak in Q8_0 and F32' '
	check_quant q8_0 $(($(wc -c <model.gguf) / 2)) &&
	close_to "$(cat llama-q8_0.ppl)" "$(cat tenpak.ppl)" 0.01
'

test_expect_success 'llama.cpp on the Q4_0 GGUF stays within 1% of tenpak in Q4_0' '
	check_quant q4_0 $(($(wc -c <model.gguf) / 4))
'

test_expect_success 'llama.cpp on the Q4_K GGUF stays within 1% of tenpak in Q4_K' '
	check_quant q4_k $(($(wc -c <model.gguf) / 4))
'

test_done
