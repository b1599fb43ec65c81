#!/usr/bin/env bash
# Benchmark `tenpak delta sparsify` (LOSSY sparse deltas) on the fixtures.
#
#   scripts/bench-sparsify.sh
#
# For the fixture full fine-tune and LoRA merge (BF16) against their base:
# density 1/5/10/25% x bits 4/8 x selection dare/magnitude, each row with
# the bytes `tenpak delta compress` stores for OUT against BASE (a real
# delta, not the estimate) as a fraction of OUT, and |ΔPPL| and KL of OUT
# against FT on tests/data/eval/heldout.txt (ctx 128, 8192 tokens). Then the
# three selection rules side by side at 10% / 8 bits, and dense 2- and
# 3-bit rounding of Δ against sparse 8-bit at the same stored size.
# The full fine-tune comes from tests/data (with its config from
# tests/data/eval); the LoRA merge from ../shared/fixtures (skipped, with a
# message, when absent). BUILD (default build) holds tenpak.
#
#   STORED_ONLY=1 [BEFORE=OLD_TENPAK] scripts/bench-sparsify.sh
#
# prints only the stored fraction for full_ft at 10% density, 8 and 4 bits,
# magnitude and dare (no quality; a minute), and with BEFORE also what that
# older tenpak stores for the same OUT (e.g. a format-1-only build).
set -euo pipefail

cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
TENPAK=${TENPAK:-$BUILD/tenpak}
EVAL=tests/data/eval/heldout.txt
SHARED=../shared/fixtures/models
WORK=$(mktemp -d "${TMPDIR:-/tmp}/tp-bench-sparsify.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
command -v python3 >/dev/null || { echo "python3 is needed to read --json" >&2; exit 1; }
[ -x "$TENPAK" ] || { echo "build tenpak first ($TENPAK)" >&2; exit 1; }

# model DIR WEIGHTS: DIR with WEIGHTS as model.safetensors and the fixture
# config and tokenizer.
model() {
	mkdir -p "$1"
	ln -sf "$(realpath "$2")" "$1/model.safetensors"
	cp tests/data/eval/config.json tests/data/eval/tokenizer.json "$1/"
}
model "$WORK/base" tests/data/fixtures/base-bf16.safetensors
model "$WORK/full_ft" tests/data/fixtures/full_ft-bf16.safetensors
PAIRS="full_ft"
if [ -f "$SHARED/lora_merged/BF16/model.safetensors" ]; then
	model "$WORK/lora_merged" "$SHARED/lora_merged/BF16/model.safetensors"
	PAIRS="full_ft lora_merged"
else
	echo "(no $SHARED: the LoRA-merge pair is skipped)"
fi

# run PAIR SELECT DENSITY BITS [--no-eval]: sparsify into $WORK/out, then
# store OUT against BASE with tenpak's codec; prints "stored kl dppl kl_base".
run() {
	local pair=$1 sel=$2 d=$3 bits=$4 eval=(--eval "$EVAL" --ctx 128)
	[ "${5:-}" = --no-eval ] && eval=(--no-eval)
	rm -rf "$WORK/out"
	"$TENPAK" delta sparsify --base "$WORK/base" "$WORK/$pair" -o "$WORK/out" \
		--density "$d" --bits "$bits" --select "$sel" "${eval[@]}" --no-estimate \
		--json "$WORK/r.json" >/dev/null 2>"$WORK/err" || { cat "$WORK/err" >&2; exit 1; }
	"$TENPAK" delta compress --base "$WORK/base/model.safetensors" \
		"$WORK/out/model.safetensors" -o "$WORK/out.tpd" >/dev/null
	# The stored delta must give OUT back exactly.
	"$TENPAK" delta apply --base "$WORK/base/model.safetensors" "$WORK/out.tpd" \
		-o "$WORK/back" >/dev/null
	cmp -s "$WORK/back" "$WORK/out/model.safetensors" || { echo "round trip failed" >&2; exit 1; }
	python3 - "$WORK/r.json" "$(stat -c %s "$WORK/out.tpd")" <<'PY'
import json, sys
d = json.load(open(sys.argv[1])); stored = int(sys.argv[2]) / d["out_bytes"]
q = d.get("quality", {})
print("%.4f %s %s %s" % (stored, q.get("kl", "nan"), abs(q.get("ppl_delta_pct", float("nan"))),
                         q.get("kl_base", "nan")))
PY
}

row() { # PAIR SELECT DENSITY BITS
	local r
	read -r stored kl dppl klb < <(run "$@")
	printf "| %-11s | %-10s | %5.0f%% | %4s | %7.2f%% | %7.2f | %8.4f |\n" "$1" "$2" \
		"$(python3 -c "print($3 * 100)")" "$4" "$(python3 -c "print($stored * 100)")" \
		"$dppl" "$kl"
	KLB=$klb
}

header() {
	echo "| pair        | select     | density | bits | stored  | |ΔPPL| % | KL nats  |"
	echo "|-------------|------------|--------:|-----:|--------:|--------:|---------:|"
}

# stored_by TP: fraction of $WORK/out that TP's delta against BASE takes
# (checked to apply back exactly).
stored_by() {
	"$1" delta compress --base "$WORK/base/model.safetensors" \
		"$WORK/out/model.safetensors" -o "$WORK/by.tpd" >/dev/null
	"$1" delta apply --base "$WORK/base/model.safetensors" "$WORK/by.tpd" \
		-o "$WORK/by.back" >/dev/null
	cmp -s "$WORK/by.back" "$WORK/out/model.safetensors" || { echo "round trip failed" >&2; exit 1; }
	python3 -c "print('%.2f%%' % (100 * $(stat -c %s "$WORK/by.tpd") / \
		$(stat -c %s "$WORK/out/model.safetensors")))"
}

if [ -n "${STORED_ONLY:-}" ]; then
	echo "| pair    | select    | density | bits |${BEFORE:+ stored (BEFORE) |} stored |"
	echo "|---------|-----------|--------:|-----:|${BEFORE:+---------------:|}-------:|"
	for sel in magnitude dare; do
		for bits in 8 4; do
			run full_ft "$sel" 0.10 "$bits" --no-eval >/dev/null
			printf "| full_ft | %-9s |     10%% | %4s |" "$sel" "$bits"
			[ -z "${BEFORE:-}" ] || printf " %15s |" "$(stored_by "$BEFORE")"
			printf " %6s |\n" "$(stored_by "$TENPAK")"
		done
	done
	exit 0
fi

echo "## density x bits (stored: tenpak delta compress of OUT against BASE / OUT)"
echo
header
for pair in $PAIRS; do
	for sel in dare magnitude; do
		for d in 0.01 0.05 0.10 0.25; do
			for bits in 4 8; do
				row "$pair" "$sel" "$d" "$bits"
			done
		done
	done
	echo "| $pair: the base itself against FT: KL $KLB nats |"
done
echo
echo "## selection rules at 10%, 8 bits"
echo
header
for pair in $PAIRS; do
	for sel in dare magnitude activation; do
		row "$pair" "$sel" 0.10 8
	done
done
echo
echo "## dense low-bit rounding of Δ vs sparse 8-bit (magnitude, dare) at the same stored size"
echo
header
for pair in $PAIRS; do
	for bits in 2 3; do
		row "$pair" magnitude 1 "$bits"
		target=$(run "$pair" magnitude 1 "$bits" --no-eval | cut -d' ' -f1)
		for sel in magnitude dare; do
			# Bisection on the density whose stored fraction matches.
			lo=0.001 hi=1
			for _ in 1 2 3 4 5 6 7 8; do
				mid=$(python3 -c "print(($lo * $hi) ** 0.5)")
				s=$(run "$pair" "$sel" "$mid" 8 --no-eval | cut -d' ' -f1)
				if python3 -c "import sys; sys.exit(0 if $s <= $target else 1)"; then
					lo=$mid
				else
					hi=$mid
				fi
			done
			row "$pair" "$sel" "$(python3 -c "print(round($lo, 4))")" 8
		done
	done
done
