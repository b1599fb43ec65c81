/* `tenpak optimize`: what each quantization candidate costs in quality, speed
 * and price, and which one to serve. The run is optimize/run.c's
 * (tp_optimize_run); this parses the flags and prints. */
#include "cli.h"
#include "tp_common.h"
#include "tp_optimize.h"
#include "tp_runtime.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef TP_HAVE_CUDA
#include "tp_cuda.h"
#endif

#define TEXT_MAX (256u << 20)
#define EXIT_NONE_PASSES 3

static const char usage[] =
	"usage: tenpak optimize MODEL_DIR [--eval FILE] [--calib FILE] [--candidates LIST]\n"
	"                       [--ctx N] [--max-tokens N] [--threads N] [--json OUT]\n"
	"                       [--hardware NAME|FILE] [--max-ppl-delta PCT] [--max-kl X]\n"
	"                       [--min-compression X] [--max-latency-p99-ms MS]\n"
	"                       [--min-throughput TPS] [--max-memory-gb GB] [--batch N]\n"
	"                       [--io-ratio IN:OUT] [--usd-per-hour X] [--quick]\n"
	"                       [--budget SECONDS] [--report OUT.md] [--plot OUT.svg]\n"
	"                       [--compare HW,HW...] [--export DIR [--export-candidate NAME]]\n"
	"                       [--device cuda|cpu|auto]\n"
	"Measure what quantizing a Llama, Mistral or Qwen2 model (Hugging Face files in\n"
	"MODEL_DIR) costs in quality. Each candidate quantizes the 7 linear layers of\n"
	"every decoder block (q, k, v, o, gate, up, down); embeddings, norms and lm_head\n"
	"keep the stored precision. Every model is measured with its layers packed\n"
	"(the baseline in its stored bf16/fp16, candidates in their format), one\n"
	"model in memory at a time; the baseline's log-probs are computed once.\n"
	"Quality is measured with fp32 activations (the format's own error); speed\n"
	"with the serving kernels (q8_0, q4_0, q4_k, int8 round activations to 8\n"
	"bits as llama.cpp does).\n"
	"\n"
	"For each candidate: perplexity and its change against the unquantized model\n"
	"(llama.cpp's convention), KL(P_orig || P_candidate) mean ± error and 99th\n"
	"percentile, how often both pick the same top token, bits per weight of the\n"
	"quantized layers (scales and zeros included), compression of those layers\n"
	"against the stored dtype, and quantization time.\n"
	"\n"
	"  --eval FILE        evaluation text (default: the built-in eval text)\n"
	"  --calib FILE       calibration text for GPTQ/AWQ-style candidates; must\n"
	"                     differ from the evaluation text (default: built-in)\n"
	"  --candidates LIST  comma-separated names (default: every format built in,\n"
	"                     RTN). Methods, not in the default list because each\n"
	"                     runs the calibration text through every block 5\n"
	"                     times (GPTQ) or twice plus AWQ's loss passes: gptq4_g128,\n"
	"                     gptq3_g128, awq4_g128, awq4_g256, awq3_g128\n"
	"  --ctx N            window size (default 512, or the model's maximum)\n"
	"  --max-tokens N     use only the first N tokens of each text (also bounds\n"
	"                     the methods' calibration cost)\n"
	"  --threads N        worker threads (default: all cores)\n"
	"  --json OUT         also write the results as JSON to OUT\n"
	"  --device D         where candidates are measured: cuda, cpu or auto\n"
	"                     (default: cuda when this tenpak has CUDA and finds a\n"
	"                     GPU). On the GPU, quality and speed are measured there\n"
	"                     (the baseline's reference stays on the CPU) and its\n"
	"                     profile (t4 ... h200) is the default --hardware. Without\n"
	"                     a GPU (or CUDA not built in), cuda and auto fall back to\n"
	"                     the CPU, naming the reason on the table's device line\n"
	"                     and in the JSON's device_note (cuda: also on stderr)\n";

/* The rest of --help (one string would pass C's 4095-byte limit). */
static const char usage_select[] =
	"\n"
	"Speed, price and the recommendation: each candidate's prefill and decode\n"
	"tokens/s and per-token decode latency (p50/p95/p99) are measured here;\n"
	"memory is its weights plus the KV cache at --ctx. On another --hardware they\n"
	"are projected (roofline x the efficiency reached here). The winner is the\n"
	"cheapest candidate in $ per 1M tokens that meets every constraint.\n"
	"  --hardware NAME|FILE  target: cpu-local (default, measured), t4, l4, a10g,\n"
	"                     l40s, a100-80gb, h100, h200, or a profile JSON file\n"
	"  --max-ppl-delta PCT, --max-kl X, --min-compression X,\n"
	"  --max-latency-p99-ms MS, --min-throughput TPS, --max-memory-gb GB\n"
	"                     constraints (throughput = decode tokens/s on the target)\n"
	"  --batch N          sequences decoded together (default 1)\n"
	"  --io-ratio IN:OUT  input:output tokens of the blended price (default 3:1)\n"
	"  --usd-per-hour X   the target's price instead of its profile's\n"
	"  --quick            1024 eval and calibration tokens (unless --max-tokens),\n"
	"                     16 timed decode steps instead of 64, --budget 120\n"
	"  --budget SECONDS   skip candidates that would not finish in time (listed)\n"
	"  --report OUT.md    a Markdown report; --plot OUT.svg: KL against $/1M\n"
	"  --compare LIST     also project every candidate on these hardware profiles\n"
	"                     (JSON \"compare\"; the selection uses --hardware only)\n"
	"  --export DIR       write the winner (or --export-candidate NAME) into DIR\n"
	"                     for serving stacks: q8_0, q4_0, q4_k as DIR/model-NAME.gguf\n"
	"                     (llama.cpp); rtnB_gG, gptqB_gG, awq3_gG as GPTQ\n"
	"                     safetensors (AutoGPTQ / transformers), awq4_gG as AutoAWQ\n"
	"                     GEMM safetensors, with config.json's quantization_config\n"
	"                     and the tokenizer files\n"
	"A candidate that fails is reported with its reason and the others still run;\n"
	"the exit status is then 1. When no candidate meets the constraints the exit\n"
	"status is 3 and the report names the constraint that binds.\n";

typedef struct args {
	const char *eval, *calib, *ctx, *max_tokens, *threads, *json;
	const char *batch, *io_ratio, *usd_per_hour, *budget, *report, *plot, *device;
	const char *limit[6]; /* the constraint flags, in limit_flags order */
} args;

static const char *const limit_flags[6] = { "--max-ppl-delta", "--max-kl",
					    "--min-compression", "--max-latency-p99-ms",
					    "--min-throughput", "--max-memory-gb" };

/* A positive number flag into *v (left as it is when the flag is absent). */
static bool parse_positive(const char *s, double *v)
{
	char *end = NULL;
	if (!s)
		return true;
	double x = strtod(s, &end);
	if (end == s || *end || !isfinite(x) || x <= 0)
		return false;
	*v = x;
	return true;
}

static int parse_args(int argc, char **argv, args *a, tp_optimize_request *q)
{
	const tp_cli_opt opts[] = {
		{ "--eval", NULL, &a->eval },	  { "--calib", NULL, &a->calib },
		{ "--candidates", NULL, &q->candidates },
		{ "--ctx", NULL, &a->ctx },	  { "--max-tokens", NULL, &a->max_tokens },
		{ "--threads", NULL, &a->threads }, { "--json", NULL, &a->json },
		{ "--hardware", NULL, &q->hardware }, { "--batch", NULL, &a->batch },
		{ "--io-ratio", NULL, &a->io_ratio }, { "--usd-per-hour", NULL, &a->usd_per_hour },
		{ "--budget", NULL, &a->budget },   { "--report", NULL, &a->report },
		{ "--plot", NULL, &a->plot },	    { "--quick", &q->quick, NULL },
		{ "--compare", NULL, &q->compare }, { "--device", NULL, &a->device },
		{ "--export", NULL, &q->export_dir },
		{ "--export-candidate", NULL, &q->export_candidate },
		{ limit_flags[0], NULL, &a->limit[0] }, { limit_flags[1], NULL, &a->limit[1] },
		{ limit_flags[2], NULL, &a->limit[2] }, { limit_flags[3], NULL, &a->limit[3] },
		{ limit_flags[4], NULL, &a->limit[4] }, { limit_flags[5], NULL, &a->limit[5] },
		{ 0 },
	};
	int npos = 0, rc = tp_cli_parse("optimize", argc, argv, opts, &npos);
	if (rc == TP_CLI_HELP) {
		fputs(usage, stdout);
		fputs(usage_select, stdout);
	}
	if (rc != TP_CLI_PARSED)
		return rc;
	if (npos != 1)
		return tp_cli_usage_error("optimize", "expected one MODEL_DIR");
	q->model = argv[1];
	size_t threads = 0;
	if (!tp_cli_parse_size(a->ctx, 4, 1u << 20, &q->ctx) ||
	    !tp_cli_parse_size(a->max_tokens, 0, SIZE_MAX, &q->max_tokens) ||
	    !tp_cli_parse_size(a->threads, 1, 256, &threads))
		return tp_cli_usage_error("optimize", "bad number in --ctx, --max-tokens or --threads");
	q->threads = (unsigned)threads;
	if (a->max_tokens && !q->max_tokens)
		q->max_tokens = SIZE_MAX; /* all, even with --quick */
	if (q->candidates && !*q->candidates)
		return tp_cli_usage_error("optimize", "--candidates is empty");
	if (a->eval && a->calib && strcmp(a->eval, a->calib) == 0)
		return tp_cli_usage_error("optimize", "--calib and --eval must be different texts");
	if (q->export_candidate && !q->export_dir)
		return tp_cli_usage_error("optimize", "--export-candidate needs --export DIR");
	for (int k = 0; k < 6; k++)
		if (a->limit[k] &&
		    tp_select_constraint_set(&q->constraints, limit_flags[k], a->limit[k]) < 0)
			return tp_cli_usage_error("optimize", "%s", tp_error_last());
	if (!tp_cli_parse_size(a->batch, 1, 4096, &q->batch))
		return tp_cli_usage_error("optimize", "bad number in --batch");
	if (a->io_ratio && !tp_cost_parse_ratio(a->io_ratio, &q->io_in, &q->io_out))
		return tp_cli_usage_error("optimize", "--io-ratio wants IN:OUT, e.g. 3:1");
	if (!parse_positive(a->usd_per_hour, &q->usd_per_hour))
		return tp_cli_usage_error("optimize", "bad number in --usd-per-hour");
	if (!parse_positive(a->budget, &q->budget_s))
		return tp_cli_usage_error("optimize", "bad number in --budget");
	if (!a->device || strcmp(a->device, "auto") == 0)
		q->device = TP_OPTIMIZE_DEVICE_AUTO;
	else if (strcmp(a->device, "cuda") == 0)
		q->device = TP_OPTIMIZE_DEVICE_CUDA;
	else if (strcmp(a->device, "cpu") == 0)
		q->device = TP_OPTIMIZE_DEVICE_CPU;
	else
		return tp_cli_usage_error("optimize", "--device wants cuda, cpu or auto");
#ifdef TP_HAVE_CUDA
	q->backend = tp_cuda_optimize_backend();
#endif
	return TP_CLI_PARSED;
}

/* --eval / --calib: the file's text (the built-in one when not given). */
static int read_text(const char *path, tp_buf *keep, tp_optimize_text *t)
{
	int rc;
	if (!path)
		return 0;
	if ((rc = tp_cli_read_text(path, keep)) < 0)
		return rc;
	*t = (tp_optimize_text){ path, keep->ptr ? keep->ptr : "", keep->len };
	return 0;
}

/* Progress on stderr: failures always, the rest on a terminal. */
typedef struct progress {
	bool tty;
	bool device_asked; /* --device cuda: its fallback is always shown */
} progress;

static int on_baseline(void *ctx, const tp_optimize_outcome *o)
{
	if (((const progress *)ctx)->tty)
		fprintf(stderr, "tenpak optimize: %s ppl %.4f (%zu tokens, ctx %zu)\n",
			o->baseline_codec, o->baseline.ppl, o->baseline.tokens, o->baseline.ctx);
	return 0;
}

static int on_candidate(void *ctx, const tp_optimize_outcome *o, size_t i)
{
	bool tty = ((const progress *)ctx)->tty;
	const tp_optimize_candidate *c = &o->candidates[i];
	size_t n = o->ncandidates;
	double base = o->baseline.ppl;
	if (c->skipped) {
		if (tty)
			fprintf(stderr, "tenpak optimize: [%zu/%zu] %s skipped: %s\n", i + 1, n,
				c->name, c->error);
	} else if (!c->ok) {
		fprintf(stderr, "tenpak: optimize: [%zu/%zu] %s failed: %s\n", i + 1, n, c->name,
			c->error);
	} else if (tty) {
		fprintf(stderr, "tenpak optimize: [%zu/%zu] %s: %.3f bpw, ppl %.4f (%+.3f%%), "
			"KL %.6f, same top %.2f%%, quantized in %.2f s\n", i + 1, n, c->name,
			c->st.bpw, c->r.ppl, 100.0 * (c->r.ppl - base) / base, c->r.kl_mean,
			c->r.same_top_pct, c->st.quant_seconds);
	}
	return 0;
}

/* The device fallback on stderr when --device cuda was asked for; with the
 * default (auto) the table's device line and the JSON's device_note say it. */
static void on_note(void *ctx, const char *msg)
{
	if (((const progress *)ctx)->device_asked)
		fprintf(stderr, "tenpak optimize: %s\n", msg);
}

static void print_table(const tp_optimize_outcome *o)
{
	const tp_eval_result *b = &o->baseline;
	printf("model     %s (%s), eval %s: %zu tokens, ctx %zu; calib %s: %zu tokens\n",
	       o->model, o->baseline_codec, o->eval_text, b->tokens, b->ctx, o->calib_text,
	       o->calib_tokens);
	printf("%-20s %7s %7s %10s %9s %10s %10s %8s %8s %9s %8s %8s %9s\n", "codec", "bpw",
	       "compr", "ppl", "dppl%", "kl_mean", "kl_p99", "same%", "quant_s", "tok/s", "p99_ms",
	       "mem_GB", "usd/1M");
	printf("%-20s %7s %7s %10.4f %9s %10s %10s %8s %8s\n", o->baseline_codec, "", "1.00",
	       b->ppl, "", "", "", "", "");
	for (size_t i = 0; i < o->ncandidates; i++) {
		const tp_optimize_candidate *c = &o->candidates[i];
		if (!c->ok) {
			printf("%-20s %s: %s\n", c->name, c->skipped ? "skipped" : "failed", c->error);
			continue;
		}
		const tp_candidate_figures *f = &o->figures[c->fig];
		printf("%-20s %7.4f %7.2f %10.4f %+9.3f %10.6f %10.6f %8.3f %8.2f %9.1f %8.3f %8.4f "
		       "%9.4g\n", c->name, c->st.bpw, c->st.compression, c->r.ppl,
		       100.0 * (c->r.ppl - b->ppl) / b->ppl, c->r.kl_mean, c->r.kl_p99,
		       c->r.same_top_pct, c->st.quant_seconds, f->throughput_tps, f->latency_p99_ms,
		       f->memory_gb, f->cost_per_1m);
	}
	const tp_hw_profile *hw = &o->hw;
	if (o->device == TP_OPTIMIZE_DEVICE_CUDA)
		printf("device   cuda: %s (candidates measured on the GPU)\n", o->device_name);
	else
		printf("device   cpu%s%s\n", o->device_note[0] ? ": " : "", o->device_note);
	printf("speed    %s on %s (%s), batch %zu; $/1M at $%.4g/hour, blended %g:%g\n",
	       hw->measured && o->batch == 1 ? "measured" : "projected", hw->name,
	       hw->description, o->batch, hw->usd_per_hour, o->io_in, o->io_out);
	for (size_t i = 0; i < o->ncandidates; i++) {
		const tp_optimize_candidate *c = &o->candidates[i];
		if (c->ok && !o->figures[c->fig].passed)
			printf("rejected %s\n", o->figures[c->fig].reason);
	}
	if (o->sel.winner >= 0) {
		const tp_candidate_figures *w = &o->figures[o->sel.winner];
		printf("winner   %s: $%.4g per 1M tokens on %s, compression %.2fx, ΔPPL %+.3f%%, "
		       "KL %.6f, p99 %.3f ms, %.1f tokens/s (%s)\n", w->codec, w->cost_per_1m,
		       hw->name, w->compression, w->ppl_delta_pct, w->kl_mean, w->latency_p99_ms,
		       w->throughput_tps, w->projected ? "projected" : "measured");
	} else {
		printf("winner   none: %s\n", o->sel.binding);
	}
}

int tp_cmd_optimize(int argc, char **argv)
{
	args a = { 0 };
	tp_optimize_request q;
	tp_optimize_request_init(&q);
	int rc = parse_args(argc, argv, &a, &q);
	if (rc != TP_CLI_PARSED)
		return rc == TP_CLI_HELP ? TP_EXIT_OK : rc;
	tp_buf eb = TP_BUF_INIT(TEXT_MAX), cb = TP_BUF_INIT(TEXT_MAX);
	tp_optimize_outcome *o = NULL;
	progress pr = { isatty(STDERR_FILENO), q.device == TP_OPTIMIZE_DEVICE_CUDA };
	tp_optimize_progress pg = { &pr, on_baseline, on_candidate, on_note };
	const char *name = NULL;
	char *written = NULL;
	if ((rc = read_text(a.eval, &eb, &q.eval)) < 0 ||
	    (rc = read_text(a.calib, &cb, &q.calib)) < 0 ||
	    (rc = tp_optimize_run(&q, &pg, &o)) < 0)
		goto done;
	print_table(o);
	if ((a.json && (rc = tp_optimize_outcome_write_json(o, a.json)) < 0) ||
	    (a.report && (rc = tp_optimize_outcome_write_markdown(o, a.report)) < 0) ||
	    (a.plot && (rc = tp_optimize_outcome_write_svg(o, a.plot)) < 0) ||
	    (rc = tp_optimize_outcome_export(o, &name, &written)) < 0)
		goto done;
	if (written)
		fprintf(stderr, "tenpak optimize: exported %s to %s\n", name, written);
done:
	free(written);
	tp_buf_free(&eb);
	tp_buf_free(&cb);
	if (rc < 0) {
		tp_optimize_outcome_free(o);
		return tp_cli_fail("optimize");
	}
	rc = o->sel.winner < 0 ? EXIT_NONE_PASSES : o->nfailed ? TP_EXIT_FAIL : TP_EXIT_OK;
	tp_optimize_outcome_free(o);
	return rc;
}
