#!/bin/sh
# Peak memory of tenpak optimize on the fixture (6.8 MiB BF16 file): one
# model in memory at a time, packed (optimize/README.md, "Memory"). The cap
# is P0 + 1.5 x the file + the state the run needs besides weights, where P0
# is the peak of `tenpak optimize --help` measured here (binary, libraries,
# built-in texts: ~9 MiB), so the test is about what grows with the model.
# State at ctx 128 (~3.3 MiB measured): KV cache 4 layers x 2 x 128 x 256
# floats (1 MiB), activation scratch for 128 tokens (~1.6 MiB), logits and
# the reference's log-probs for one window (0.25 MiB): 4 MiB allowed. GPTQ
# adds its working set for the widest layer (down_proj, 768 inputs): the
# captured Hessian and GPTQ's copy, 2 x 768^2 doubles (9 MiB), the block
# widened to fp32 (3.3 MiB) and one layer's fp32 work buffers (1.5 MiB),
# 14 MiB, plus the KV cache and activations of the block-by-block captures
# (~3 MiB, held through the pipeline): 17 MiB more, 21 MiB in all.
# Holding the baseline next to a candidate (+6.8 MiB) or any fp32 copy
# of the decoder layers (13.3 MiB) breaks the caps; before the packed path
# the RTN run peaked at 45.2 MiB and the GPTQ one at 65.0 MiB.
DATA=$(cd "$(dirname "$0")/../data" && pwd)
TP_PEAK_RSS=${TP_PEAK_RSS:-$(dirname "$TENPAK")/tp-peak-rss}
WEIGHTS=$DATA/fixtures/base-bf16.safetensors
"$TP_PEAK_RSS" --file "$WEIGHTS" -- true >/dev/null 2>&1
if [ $? = 77 ]; then
	echo "1..0 # SKIP resident sizes mean nothing under AddressSanitizer"
	exit 77
fi
. "$(dirname "$0")/lib.sh"

test_expect_success 'setup: the fixture model and the fixed overhead' '
	mkdir model &&
	cp "$DATA/eval/config.json" "$DATA/eval/tokenizer.json" model/ &&
	ln -s "$WEIGHTS" model/model.safetensors &&
	"$TP_PEAK_RSS" --file "$WEIGHTS" -- "$TENPAK" optimize --help >out &&
	sed -n "s/^peak_kib=\([0-9]*\) .*/\1/p" out >p0 &&
	test "$(cat p0)" -gt 0
'

test_expect_success 'RTN candidates: peak <= P0 + 1.5 x file + 4 MiB' '
	"$TP_PEAK_RSS" --file "$WEIGHTS" --max "1.5:$(($(cat p0) + 4096))" -- \
		"$TENPAK" optimize model --eval "$DATA/eval/heldout.txt" --ctx 128 \
		--max-tokens 512 --threads 2 --candidates bf16,int8,rtn4_g128,q4_k >out &&
	grep "^peak_kib=" out &&
	grep -q "^rtn4_g128 " out
'

test_expect_success 'GPTQ: peak <= P0 + 1.5 x file + 21 MiB' '
	"$TP_PEAK_RSS" --file "$WEIGHTS" --max "1.5:$(($(cat p0) + 21504))" -- \
		"$TENPAK" optimize model --eval "$DATA/eval/heldout.txt" --ctx 128 \
		--max-tokens 256 --threads 2 --candidates gptq4_g128 >out &&
	grep "^peak_kib=" out &&
	grep -q "^gptq4_g128 " out
'

test_done
