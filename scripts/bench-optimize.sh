#!/usr/bin/env bash
# Benchmark `tenpak optimize`: every candidate's bits per weight, quality
# loss, quantization time, speed, memory and price, on the fixture model and
# on a generated ~100M-parameter model.
#
#   scripts/bench-optimize.sh [CANDIDATES]
#
# CANDIDATES is a comma-separated list (default: tenpak optimize's default,
# every candidate it knows). The fixture (3.5M parameters, trained) is scored
# on tests/data/eval/heldout.txt at ctx 128 with the default calibration
# text; the generated model (scripts/gen-model.py: random N(0, 0.02) BF16
# weights, so only its times and the candidates' relative KL mean anything)
# on the first TOKENS tokens (default 2048) of the held-out text and of the
# default calibration text, at ctx 512. Prints two tables (quality, then
# speed and price); it is a measurement, not a test.
#
# Speed: decode tokens/s and p99 ms per token are measured on this machine
# (cpu-local, batch 1); memory is the weights at the candidate's bits per
# weight plus the KV cache at the context; $/1M tokens (blended 3:1) on
# cpu-local is measured, on A10G and H100 projected by the roofline
# (tenpak optimize --compare). The quick run's wall time (--quick on the
# fixture, every default candidate) is printed last.
#
# Each run's wall time and peak RSS (tp-peak-rss: the process's ru_maxrss)
# with its ratio to the model file's size are printed too (issue 13: at
# most 1.5 x the file for a BF16 model).
#
# The binary is $BUILD/tenpak (BUILD defaults to build); override with
# TENPAK; the RSS meter is $BUILD/tp-peak-rss (TP_PEAK_RSS). THREADS
# defaults to all cores.
set -euo pipefail

cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
TENPAK=${TENPAK:-$BUILD/tenpak}
TP_PEAK_RSS=${TP_PEAK_RSS:-$BUILD/tp-peak-rss}
THREADS=${THREADS:-$(nproc)}
TOKENS=${TOKENS:-2048}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/tp-bench-optimize.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

for bin in "$TENPAK" "$TP_PEAK_RSS"; do
	if [ ! -x "$bin" ]; then
		echo "bench-optimize: $bin not found (build first or set TENPAK / TP_PEAK_RSS)" >&2
		exit 1
	fi
done
candidates=()
[ $# -gt 0 ] && candidates=(--candidates "$1")

mkdir -p "$WORK/fixture"
cp tests/data/eval/config.json tests/data/eval/tokenizer.json "$WORK/fixture/"
ln -s "$PWD/tests/data/fixtures/base-bf16.safetensors" "$WORK/fixture/model.safetensors"
python3 scripts/gen-model.py "$WORK/m100"

# run MODEL JSON ARGS...: one optimize run, its wall time and peak RSS on
# stderr.
run() {
	local model=$1 json=$2
	shift 2
	local start end rss
	start=$(date +%s.%N)
	rss=$("$TP_PEAK_RSS" --file "$WORK/$model/model.safetensors" -- \
		"$TENPAK" optimize "$WORK/$model" ${candidates[@]+"${candidates[@]}"} \
		--threads "$THREADS" --compare cpu-local,a10g,h100 --json "$json" "$@" | grep '^peak_kib=')
	end=$(date +%s.%N)
	python3 -c "
import sys
kv = dict(f.split('=') for f in sys.argv[2].split())
print('%s: %.1f s wall for all candidates, peak RSS %.1f MiB = %.2f x the %.1f MiB model file'
      % (sys.argv[1], float(sys.argv[3]), int(kv['peak_kib']) / 1024, float(kv['ratio']),
         int(kv['file_kib']) / 1024))" "$model" "$rss" "$(python3 -c "print($end - $start)")" >&2
}

run fixture "$WORK/fixture.json" --eval tests/data/eval/heldout.txt --ctx 128
run m100 "$WORK/m100.json" --eval tests/data/eval/heldout.txt --ctx 512 \
	--max-tokens "$TOKENS"

python3 - "$WORK/fixture.json" "$WORK/m100.json" <<'PY'
import json, sys
print("%-8s %-20s %7s %9s %10s %8s %8s" % ("model", "candidate", "bpw", "dPPL %",
      "KL mean", "top %", "quant s"))
for path, name in zip(sys.argv[1:], ("fixture", "m100")):
    r = json.load(open(path))
    print("%-8s %-20s %7s %9s %10s %8s %8s   (ppl %.4f, %d eval tokens)" % (
          name, r["baseline"]["codec"], "16", "", "", "", "", r["baseline"]["ppl"],
          r["eval"]["tokens"]))
    for c in r["all_candidates"]:
        print("%-8s %-20s %7.3f %+9.3f %10.6f %8.2f %8.2f" % (name, c["codec"], c["bpw"],
              c["ppl_delta_pct"], c["kl_mean"], c["same_top_pct"], c["quant_seconds"]))
    for f in r.get("failed", []):
        print("%-8s %-20s failed: %s" % (name, f["codec"], f["error"]))
print()
print("%-8s %-20s %7s %9s %10s %9s %8s %9s %10s %10s %10s" % ("model", "candidate", "bpw",
      "dPPL %", "KL mean", "dec tok/s", "p99 ms", "mem MB", "$/1M cpu", "$/1M A10G",
      "$/1M H100"))
for path, name in zip(sys.argv[1:], ("fixture", "m100")):
    r = json.load(open(path))
    for c in r["all_candidates"]:
        cmp = c["compare"]
        print("%-8s %-20s %7.3f %+9.3f %10.6f %9.1f %8.3f %9.2f %10.4g %10.4g %10.4g" % (
              name, c["codec"], c["bpw"], c["ppl_delta_pct"], c["kl_mean"],
              cmp["cpu-local"]["throughput_tps"], cmp["cpu-local"]["latency_p99_ms"],
              1e3 * c["memory_gb"], cmp["cpu-local"]["cost_per_1m_tokens"],
              cmp["a10g"]["cost_per_1m_tokens"], cmp["h100"]["cost_per_1m_tokens"]))
    hw = r["measured_on"]
    print("%-8s cpu-local: %.2f GB/s read, %.1f GFLOP/s fp32 GEMM, $%.4g/hour (assumed)" % (
          name, hw["bandwidth_gbs"], 1e3 * hw["peak_tflops"], hw["usd_per_hour"]))
PY
start=$(date +%s.%N)
"$TENPAK" optimize "$WORK/fixture" --quick --threads "$THREADS" --json "$WORK/quick.json" \
	--eval tests/data/eval/heldout.txt --ctx 128 >/dev/null || [ $? -eq 3 ]
end=$(date +%s.%N)
python3 - "$WORK/quick.json" "$start" "$end" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print("quick run (fixture, --quick, default candidates): %.1f s wall, budget %.0f s, "
      "%d eval tokens, %d measured, %d skipped" % (float(sys.argv[3]) - float(sys.argv[2]),
      r["settings"]["budget_s"], r["eval"]["tokens"], len(r["all_candidates"]),
      len(r["skipped"])))
PY
echo "cores: $(nproc), threads: $THREADS, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
