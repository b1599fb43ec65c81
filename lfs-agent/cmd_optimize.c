/* `tenpak optimize`: what each quantization candidate costs in quality, speed
 * and price, and which one to serve. */
#include "cli.h"
#include "tp_common.h"
#include "tp_optimize.h"
#include "tp_runtime.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define TEXT_MAX (256u << 20)
#define CANDIDATES_MAX 64
#define QUICK_TOKENS 1024 /* --quick: eval and calibration tokens */
#define QUICK_BUDGET 120  /* --quick: default --budget, seconds */
#define EXIT_NONE_PASSES 3
#define COMPARE_MAX 8

/* optimize/data, compiled in by optimize/embed_texts.cmake. */
extern const unsigned char tp_optimize_text_calib[], tp_optimize_text_eval[];
extern const size_t tp_optimize_text_calib_len, tp_optimize_text_eval_len;

static const char usage[] =
	"usage: tenpak optimize MODEL_DIR [--eval FILE] [--calib FILE] [--candidates LIST]\n"
	"                       [--ctx N] [--max-tokens N] [--threads N] [--json OUT]\n"
	"                       [--hardware NAME|FILE] [--max-ppl-delta PCT] [--max-kl X]\n"
	"                       [--min-compression X] [--max-latency-p99-ms MS]\n"
	"                       [--min-throughput TPS] [--max-memory-gb GB] [--batch N]\n"
	"                       [--io-ratio IN:OUT] [--usd-per-hour X] [--quick]\n"
	"                       [--budget SECONDS] [--report OUT.md] [--plot OUT.svg]\n"
	"                       [--compare HW,HW...] [--export DIR [--export-candidate NAME]]\n"
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
	"  --json OUT         also write the results as JSON to OUT\n";

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
	const char *model, *eval, *calib, *candidates, *ctx, *max_tokens, *threads, *json;
	const char *hardware, *batch, *io_ratio, *usd_per_hour, *budget, *report, *plot, *compare;
	const char *export_dir, *export_candidate;
	const char *limit[6]; /* the constraint flags, in limit_flags order */
	bool quick;
	tp_select_constraints cons;
	double io_in, io_out, usd, budget_s;
	size_t batch_n;
} args;

static const char *const limit_flags[6] = { "--max-ppl-delta", "--max-kl",
					    "--min-compression", "--max-latency-p99-ms",
					    "--min-throughput", "--max-memory-gb" };

typedef struct text {
	const char *label; /* the file, or "default:eval.txt" */
	int32_t *ids;
	size_t n;
} text;

static int parse_args(int argc, char **argv, args *a, size_t *ctx, size_t *max_tokens,
		      size_t *threads)
{
	const tp_cli_opt opts[] = {
		{ "--eval", NULL, &a->eval },	  { "--calib", NULL, &a->calib },
		{ "--candidates", NULL, &a->candidates },
		{ "--ctx", NULL, &a->ctx },	  { "--max-tokens", NULL, &a->max_tokens },
		{ "--threads", NULL, &a->threads }, { "--json", NULL, &a->json },
		{ "--hardware", NULL, &a->hardware }, { "--batch", NULL, &a->batch },
		{ "--io-ratio", NULL, &a->io_ratio }, { "--usd-per-hour", NULL, &a->usd_per_hour },
		{ "--budget", NULL, &a->budget },   { "--report", NULL, &a->report },
		{ "--plot", NULL, &a->plot },	    { "--quick", &a->quick, NULL },
		{ "--compare", NULL, &a->compare },
		{ "--export", NULL, &a->export_dir },
		{ "--export-candidate", NULL, &a->export_candidate },
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
	a->model = argv[1];
	*ctx = 0;
	*max_tokens = 0;
	*threads = 0;
	if (!tp_cli_parse_size(a->ctx, 4, 1u << 20, ctx) ||
	    !tp_cli_parse_size(a->max_tokens, 0, SIZE_MAX, max_tokens) ||
	    !tp_cli_parse_size(a->threads, 1, 256, threads))
		return tp_cli_usage_error("optimize", "bad number in --ctx, --max-tokens or --threads");
	if (a->candidates && !*a->candidates)
		return tp_cli_usage_error("optimize", "--candidates is empty");
	if (a->eval && a->calib && strcmp(a->eval, a->calib) == 0)
		return tp_cli_usage_error("optimize", "--calib and --eval must be different texts");
	if (a->export_candidate && !a->export_dir)
		return tp_cli_usage_error("optimize", "--export-candidate needs --export DIR");
	a->cons = tp_select_constraints_none();
	for (int k = 0; k < 6; k++)
		if (a->limit[k] && tp_select_constraint_set(&a->cons, limit_flags[k], a->limit[k]) < 0)
			return tp_cli_usage_error("optimize", "%s", tp_error_last());
	a->batch_n = 1;
	a->io_in = 3;
	a->io_out = 1;
	if (!tp_cli_parse_size(a->batch, 1, 4096, &a->batch_n))
		return tp_cli_usage_error("optimize", "bad number in --batch");
	if (a->io_ratio && !tp_cost_parse_ratio(a->io_ratio, &a->io_in, &a->io_out))
		return tp_cli_usage_error("optimize", "--io-ratio wants IN:OUT, e.g. 3:1");
	char *end = NULL;
	a->usd = a->usd_per_hour ? strtod(a->usd_per_hour, &end) : 0;
	if (a->usd_per_hour && (end == a->usd_per_hour || *end || !isfinite(a->usd) || a->usd <= 0))
		return tp_cli_usage_error("optimize", "bad number in --usd-per-hour");
	a->budget_s = a->quick ? QUICK_BUDGET : 0;
	if (a->budget) {
		a->budget_s = strtod(a->budget, &end);
		if (end == a->budget || *end || !isfinite(a->budget_s) || a->budget_s <= 0)
			return tp_cli_usage_error("optimize", "bad number in --budget");
	}
	if (a->quick && !a->max_tokens)
		*max_tokens = QUICK_TOKENS;
	return TP_CLI_PARSED;
}

/* Tokenize path's text, or the built-in one when path is NULL. */
static int load_text(const tp_tokenizer *tok, const char *path, const unsigned char *dflt,
		     size_t dflt_len, const char *dflt_label, text *t, tp_buf *keep)
{
	int rc;
	const char *s = (const char *)dflt;
	size_t len = dflt_len;
	t->label = dflt_label;
	if (path) {
		if ((rc = tp_cli_read_text(path, keep)) < 0)
			return rc;
		s = keep->ptr ? keep->ptr : "";
		len = keep->len;
		t->label = path;
	}
	return tp_tokenizer_encode(tok, s, len, false, &t->ids, &t->n);
}

static bool same_text(const text *a, const text *b)
{
	return a->n == b->n && memcmp(a->ids, b->ids, a->n * sizeof(*a->ids)) == 0;
}

/* One candidate's outcome. */
typedef struct outcome {
	char *name;
	bool ok, skipped;
	char error[256];
	tp_candidate_stats st;
	tp_eval_result r;
	tp_speed_result sp;
	double seconds;
	long fig; /* index into the figures, -1 when none */
} outcome;

/* How the speed is timed: a prefill, then single-token decode steps. */
typedef struct speed_plan {
	size_t prefill, decode;
} speed_plan;

static int run_candidate(const args *a, const tp_model_opts *mo, const tp_eval_ref *base,
			 const text *ev, const tp_eval_opts *eo,
			 const tp_candidate_calib *calib, unsigned bits, const speed_plan *sp,
			 outcome *oc)
{
	tp_model *m = NULL;
	int rc = tp_optimize_candidate_load(&m, a->model, mo, oc->name, calib, bits, &oc->st);
	/* Quality is the format's (fp32 activations, as PyTorch fake-quant),
	 * speed the serving kernels' (8-bit activations where llama.cpp uses
	 * them). */
	bool exact = tp_quant_kernel_exact(true);
	if (rc == 0)
		rc = tp_runtime_eval_perplexity_ref(m, base, ev->ids, ev->n, eo, &oc->r);
	tp_quant_kernel_exact(exact);
	if (rc == 0)
		rc = tp_runtime_eval_speed(m, ev->ids, sp->prefill, sp->decode, &oc->sp);
	tp_model_free(m);
	if (rc < 0)
		snprintf(oc->error, sizeof(oc->error), "%s", tp_error_last());
	oc->ok = rc == 0;
	return rc;
}

/* The speed, memory and price fields of a candidate and of the winner. */
static void add_speed_json(cJSON *c, const tp_candidate_figures *f, const char *device)
{
	cJSON_AddNumberToObject(c, "latency_p50_ms", f->latency_p50_ms);
	cJSON_AddNumberToObject(c, "latency_p95_ms", f->latency_p95_ms);
	cJSON_AddNumberToObject(c, "latency_p99_ms", f->latency_p99_ms);
	cJSON_AddNumberToObject(c, "throughput_tps", f->throughput_tps);
	cJSON_AddNumberToObject(c, "prefill_tps", f->prefill_tps);
	cJSON_AddNumberToObject(c, "memory_gb", f->memory_gb);
	cJSON_AddNumberToObject(c, "cost_per_1m_tokens", f->cost_per_1m);
	cJSON_AddNumberToObject(c, "cost_per_1m_input", f->cost_prefill);
	cJSON_AddNumberToObject(c, "cost_per_1m_output", f->cost_decode);
	cJSON_AddStringToObject(c, "speed_source", f->projected ? "projected" : "measured");
	cJSON_AddStringToObject(c, "speed_device", device);
	if (f->projected) {
		cJSON *e = cJSON_AddObjectToObject(c, "efficiency");
		cJSON_AddNumberToObject(e, "decode", f->eff_decode);
		cJSON_AddNumberToObject(e, "prefill", f->eff_prefill);
	}
}

static void add_candidate_json(cJSON *arr, const outcome *oc, double base_ppl,
			       const tp_candidate_figures *f, const char *device)
{
	cJSON *c = cJSON_CreateObject();
	const tp_eval_result *r = &oc->r;
	cJSON_AddStringToObject(c, "codec", oc->name);
	cJSON_AddNumberToObject(c, "bpw", oc->st.bpw);
	cJSON_AddNumberToObject(c, "compression", oc->st.compression);
	cJSON_AddNumberToObject(c, "ppl", r->ppl);
	cJSON_AddNumberToObject(c, "ppl_err", r->ppl_err);
	cJSON_AddNumberToObject(c, "ppl_delta", r->ppl - base_ppl);
	cJSON_AddNumberToObject(c, "ppl_delta_pct", 100.0 * (r->ppl - base_ppl) / base_ppl);
	cJSON_AddNumberToObject(c, "kl_mean", r->kl_mean);
	cJSON_AddNumberToObject(c, "kl_err", r->kl_err);
	cJSON_AddNumberToObject(c, "kl_p99", r->kl_p99);
	cJSON_AddNumberToObject(c, "kl_max", r->kl_max);
	cJSON_AddNumberToObject(c, "same_top_pct", r->same_top_pct);
	cJSON_AddNumberToObject(c, "same_top_err", r->same_top_err);
	cJSON_AddNumberToObject(c, "quant_seconds", oc->st.quant_seconds);
	cJSON_AddNumberToObject(c, "layers", (double)oc->st.layers);
	cJSON_AddNumberToObject(c, "weights", (double)oc->st.weights);
	cJSON_AddNumberToObject(c, "packed_bytes", (double)oc->st.packed_bytes);
	cJSON *m = cJSON_AddObjectToObject(c, "measured_local");
	cJSON_AddNumberToObject(m, "prefill_tokens", (double)oc->sp.prefill_tokens);
	cJSON_AddNumberToObject(m, "decode_tokens", (double)oc->sp.decode_tokens);
	cJSON_AddNumberToObject(m, "prefill_tps", oc->sp.prefill_tps);
	cJSON_AddNumberToObject(m, "decode_tps", oc->sp.decode_tps);
	cJSON_AddNumberToObject(m, "latency_p50_ms", oc->sp.latency_p50_ms);
	cJSON_AddNumberToObject(m, "latency_p95_ms", oc->sp.latency_p95_ms);
	cJSON_AddNumberToObject(m, "latency_p99_ms", oc->sp.latency_p99_ms);
	add_speed_json(c, f, device);
	cJSON_AddBoolToObject(c, "passed", f->passed);
	/* Last, as in part 1 (t0160 reads the layout line by line). */
	cJSON_AddArrayToObject(c, "fallbacks");
	cJSON_AddItemToArray(arr, c);
}


typedef struct report {
	const args *a;
	const char *codec;
	const tp_eval_result *base;
	const text *ev, *cal;
	const tp_quant_calib_set *calib;
	const outcome *oc;
	size_t noc;
	const tp_candidate_figures *fig;
	const tp_select_result *sel;
	const tp_report_info *info;
	const char *device; /* where measured figures come from */
	const tp_hw_profile *cmp; /* --compare's profiles */
	size_t ncmp;
	tp_figures_in fin; /* the run's settings; per candidate fields set when used */
} report;

/* The candidate's figures on each --compare profile. */
static void add_compare_json(cJSON *c, const report *p, const outcome *oc)
{
	if (!p->ncmp)
		return;
	cJSON *cmp = cJSON_AddObjectToObject(c, "compare");
	for (size_t k = 0; k < p->ncmp; k++) {
		tp_figures_in fi = p->fin;
		fi.codec = oc->name;
		fi.st = &oc->st;
		fi.r = &oc->r;
		fi.sp = &oc->sp;
		fi.target = &p->cmp[k];
		tp_candidate_figures f;
		tp_figures_compute(&fi, &f);
		add_speed_json(cJSON_AddObjectToObject(cmp, p->cmp[k].name), &f, p->device);
	}
}

static void add_hardware_json(cJSON *o, const char *key, const tp_hw_profile *h)
{
	cJSON *j = cJSON_AddObjectToObject(o, key);
	cJSON_AddStringToObject(j, "name", h->name);
	cJSON_AddStringToObject(j, "description", h->description);
	cJSON_AddBoolToObject(j, "measured", h->measured);
	cJSON_AddNumberToObject(j, "memory_gb", h->memory_gb);
	cJSON_AddNumberToObject(j, "bandwidth_gbs", h->bandwidth_gbs);
	cJSON_AddNumberToObject(j, "peak_tflops", h->peak_tflops);
	cJSON_AddNumberToObject(j, "int8_tops", h->int8_tops);
	cJSON_AddNumberToObject(j, "usd_per_hour", h->usd_per_hour);
	cJSON_AddStringToObject(j, "price_source", h->price_source);
	cJSON_AddStringToObject(j, "price_read", h->price_read);
	cJSON_AddStringToObject(j, "spec_source", h->spec_source);
}

/* Constraints, hardware, rejected, skipped and the winner. */
static void add_selection_json(cJSON *o, const report *p)
{
	const tp_select_constraints *c = p->info->constraints;
	const double lim[6] = { c->max_ppl_delta_pct, c->max_kl, c->min_compression,
				c->max_latency_p99_ms, c->min_throughput_tps, c->max_memory_gb };
	cJSON *cj = cJSON_AddObjectToObject(o, "constraints");
	for (int k = 0; k < 6; k++)
		if (!isnan(lim[k]))
			cJSON_AddNumberToObject(cj, limit_flags[k] + 2, lim[k]);
	add_hardware_json(o, "hardware", p->info->hw);
	add_hardware_json(o, "measured_on", p->info->local);
	cJSON *s = cJSON_AddObjectToObject(o, "settings");
	cJSON_AddNumberToObject(s, "batch", (double)p->info->batch);
	cJSON_AddNumberToObject(s, "io_in", p->info->io_in);
	cJSON_AddNumberToObject(s, "io_out", p->info->io_out);
	cJSON_AddNumberToObject(s, "ctx", (double)p->info->ctx);
	cJSON_AddNumberToObject(s, "prefill_tokens", (double)p->info->prompt);
	cJSON_AddNumberToObject(s, "decode_steps", (double)p->info->decode_steps);
	cJSON_AddBoolToObject(s, "quick", p->info->quick);
	cJSON_AddNumberToObject(s, "budget_s", p->info->budget_s);
	cJSON_AddNumberToObject(s, "elapsed_s", p->info->elapsed_s);
	cJSON *rej = cJSON_AddArrayToObject(o, "rejected");
	cJSON *skip = cJSON_AddArrayToObject(o, "skipped");
	for (size_t i = 0; i < p->noc; i++) {
		const outcome *x = &p->oc[i];
		if (x->skipped) {
			cJSON *j = cJSON_CreateObject();
			cJSON_AddStringToObject(j, "codec", x->name);
			cJSON_AddStringToObject(j, "reason", x->error);
			cJSON_AddItemToArray(skip, j);
		} else if (x->fig >= 0 && !p->fig[x->fig].passed) {
			cJSON *j = cJSON_CreateObject();
			cJSON_AddStringToObject(j, "codec", x->name);
			cJSON_AddStringToObject(j, "reason", p->fig[x->fig].reason);
			cJSON_AddItemToArray(rej, j);
		}
	}
	if (p->sel->winner < 0) {
		cJSON_AddNullToObject(o, "winner");
		cJSON *b = cJSON_AddObjectToObject(o, "binding");
		cJSON_AddStringToObject(b, "constraint", p->sel->binding_flag);
		cJSON_AddStringToObject(b, "why", p->sel->binding);
		return;
	}
	const tp_candidate_figures *w = &p->fig[p->sel->winner];
	cJSON *j = cJSON_AddObjectToObject(o, "winner");
	cJSON_AddStringToObject(j, "codec", w->codec);
	cJSON_AddNumberToObject(j, "compression", w->compression);
	cJSON_AddNumberToObject(j, "ppl_delta", w->ppl - p->base->ppl);
	cJSON_AddNumberToObject(j, "ppl_delta_pct", w->ppl_delta_pct);
	cJSON_AddNumberToObject(j, "kl_mean", w->kl_mean);
	add_speed_json(j, w, p->device);
}

static int write_json(const report *p)
{
	cJSON *o = cJSON_CreateObject();
	cJSON_AddStringToObject(o, "model", p->a->model);
	cJSON *b = cJSON_AddObjectToObject(o, "baseline");
	cJSON_AddStringToObject(b, "codec", p->codec);
	cJSON_AddNumberToObject(b, "ppl", p->base->ppl);
	cJSON_AddNumberToObject(b, "ppl_err", p->base->ppl_err);
	cJSON *e = cJSON_AddObjectToObject(o, "eval");
	cJSON_AddStringToObject(e, "text", p->ev->label);
	cJSON_AddNumberToObject(e, "tokens", (double)p->base->tokens);
	cJSON_AddNumberToObject(e, "ctx", (double)p->base->ctx);
	cJSON_AddStringToObject(e, "mode", tp_ppl_mode_name(p->base->mode));
	cJSON_AddNumberToObject(e, "scored", (double)p->base->scored);
	cJSON *c = cJSON_AddObjectToObject(o, "calib");
	cJSON_AddStringToObject(c, "text", p->cal->label);
	cJSON_AddNumberToObject(c, "tokens", (double)p->calib->tokens);
	cJSON *all = cJSON_AddArrayToObject(o, "all_candidates");
	cJSON *failed = cJSON_AddArrayToObject(o, "failed");
	for (size_t i = 0; i < p->noc; i++) {
		if (p->oc[i].skipped)
			continue;
		if (p->oc[i].ok) {
			add_candidate_json(all, &p->oc[i], p->base->ppl, &p->fig[p->oc[i].fig],
					   p->device);
			cJSON *last = cJSON_GetArrayItem(all, cJSON_GetArraySize(all) - 1);
			/* "compare" goes before "fallbacks", which stays last. */
			cJSON *fb = cJSON_DetachItemFromObjectCaseSensitive(last, "fallbacks");
			add_compare_json(last, p, &p->oc[i]);
			cJSON_AddItemToObject(last, "fallbacks", fb);
			continue;
		}
		cJSON *f = cJSON_CreateObject();
		cJSON_AddStringToObject(f, "codec", p->oc[i].name);
		cJSON_AddStringToObject(f, "error", p->oc[i].error);
		cJSON_AddItemToArray(failed, f);
	}
	add_selection_json(o, p);
	char *txt = cJSON_Print(o);
	cJSON_Delete(o);
	if (!txt)
		return tp_error_set(TP_ENOMEM, "out of memory");
	FILE *f = fopen(p->a->json, "w");
	int rc = 0;
	if (!f || fputs(txt, f) == EOF || fputc('\n', f) == EOF)
		rc = tp_error_set_errno(TP_EIO, errno, "writing %s", p->a->json);
	if (f && fclose(f) != 0 && rc == 0)
		rc = tp_error_set_errno(TP_EIO, errno, "writing %s", p->a->json);
	free(txt);
	return rc;
}

static void print_table(const report *p)
{
	printf("model     %s (%s), eval %s: %zu tokens, ctx %zu; calib %s: %zu tokens\n",
	       p->a->model, p->codec, p->ev->label, p->base->tokens, p->base->ctx,
	       p->cal->label, p->calib->tokens);
	printf("%-20s %7s %7s %10s %9s %10s %10s %8s %8s %9s %8s %8s %9s\n", "codec", "bpw",
	       "compr", "ppl", "dppl%", "kl_mean", "kl_p99", "same%", "quant_s", "tok/s", "p99_ms",
	       "mem_GB", "usd/1M");
	printf("%-20s %7s %7s %10.4f %9s %10s %10s %8s %8s\n", p->codec, "", "1.00",
	       p->base->ppl, "", "", "", "", "");
	for (size_t i = 0; i < p->noc; i++) {
		const outcome *o = &p->oc[i];
		if (!o->ok) {
			printf("%-20s %s: %s\n", o->name, o->skipped ? "skipped" : "failed", o->error);
			continue;
		}
		const tp_candidate_figures *f = &p->fig[o->fig];
		printf("%-20s %7.4f %7.2f %10.4f %+9.3f %10.6f %10.6f %8.3f %8.2f %9.1f %8.3f %8.4f "
		       "%9.4g\n", o->name, o->st.bpw, o->st.compression, o->r.ppl,
		       100.0 * (o->r.ppl - p->base->ppl) / p->base->ppl, o->r.kl_mean,
		       o->r.kl_p99, o->r.same_top_pct, o->st.quant_seconds, f->throughput_tps,
		       f->latency_p99_ms, f->memory_gb, f->cost_per_1m);
	}
	const tp_report_info *in = p->info;
	printf("speed    %s on %s (%s), batch %zu; $/1M at $%.4g/hour, blended %g:%g\n",
	       in->hw->measured && in->batch == 1 ? "measured" : "projected", in->hw->name,
	       in->hw->description, in->batch, in->hw->usd_per_hour, in->io_in, in->io_out);
	for (size_t i = 0; i < p->noc; i++)
		if (p->oc[i].ok && !p->fig[p->oc[i].fig].passed)
			printf("rejected %s\n", p->fig[p->oc[i].fig].reason);
	if (p->sel->winner >= 0) {
		const tp_candidate_figures *w = &p->fig[p->sel->winner];
		printf("winner   %s: $%.4g per 1M tokens on %s, compression %.2fx, ΔPPL %+.3f%%, "
		       "KL %.6f, p99 %.3f ms, %.1f tokens/s (%s)\n", w->codec, w->cost_per_1m,
		       in->hw->name, w->compression, w->ppl_delta_pct, w->kl_mean,
		       w->latency_p99_ms, w->throughput_tps, w->projected ? "projected" : "measured");
	} else {
		printf("winner   none: %s\n", p->sel->binding);
	}
}

/* --export: load candidate name with packed layers (a format: RTN into
 * that format; a method: tp_optimize_candidate_load) and write it into
 * a->export_dir (optimize/README.md, "Export"). */
static int export_candidate(const args *a, const tp_model_opts *mo, const char *name,
			    const tp_candidate_calib *calib, unsigned bits)
{
	tp_export_plan plan;
	tp_model *m = NULL;
	tp_candidate_stats st;
	char *written = NULL;
	int rc = tp_optimize_export_plan(name, &plan);
	if (rc < 0)
		return rc;
	if (tp_optimize_is_method(name)) {
		rc = tp_optimize_candidate_load(&m, a->model, mo, name, calib, bits, &st);
	} else {
		tp_optimize_packed_ctx pc = { .format = plan.format };
		tp_model_opts po = *mo;
		po.make_linear = tp_optimize_make_linear_packed;
		po.make_linear_ctx = &pc;
		rc = tp_model_load(&m, a->model, &po);
	}
	if (rc == 0 && (rc = tp_optimize_export(m, a->model, mo->weights, name, a->export_dir,
					       &written)) == 0)
		fprintf(stderr, "tenpak optimize: exported %s to %s\n", name, written);
	free(written);
	tp_model_free(m);
	return rc;
}

/* --export, checked before the long run: the named candidate can be
 * exported, or (the winner's export) at least one of the candidates. */
static int export_check(const args *a, const outcome *oc, size_t n)
{
	tp_export_plan plan;
	if (!a->export_dir)
		return 0;
	if (a->export_candidate)
		return tp_optimize_export_plan(a->export_candidate, &plan);
	int rc = 0;
	for (size_t i = 0; i < n; i++)
		if ((rc = tp_optimize_export_plan(oc[i].name, &plan)) == 0)
			return 0;
	return n == 1 ? rc : tp_error_wrap(rc, "--export: none of the candidates");
}

/* Split the comma list (or every format's name) into oc. */
static int list_candidates(const char *list, outcome *oc, size_t *n)
{
	*n = 0;
	if (!list) {
		const tp_quant_format *const *f = tp_quant_formats();
		for (size_t i = 0; f[i] && *n < CANDIDATES_MAX; i++)
			if (!(oc[(*n)++].name = strdup(f[i]->name)))
				return tp_error_set(TP_ENOMEM, "out of memory");
		return 0;
	}
	for (const char *s = list; *s;) {
		size_t len = strcspn(s, ",");
		if (*n == CANDIDATES_MAX)
			return tp_error_set(TP_EINVAL, "more than %d candidates", CANDIDATES_MAX);
		if (len && !(oc[(*n)++].name = strndup(s, len)))
			return tp_error_set(TP_ENOMEM, "out of memory");
		s += len + (s[len] == ',');
	}
	return *n ? 0 : tp_error_set(TP_EINVAL, "no candidate in '%s'", list);
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Seconds candidate name is expected to take: the slowest of its kind
 * (method or format) so far, else a guess from the baseline's evaluation
 * (methods calibrate again block by block: 4 times a format's guess). */
static double estimate_s(const outcome *oc, size_t done, const char *name, double base_s)
{
	bool method = tp_optimize_is_method(name);
	double est = 0;
	for (size_t i = 0; i < done; i++)
		if (oc[i].ok && tp_optimize_is_method(oc[i].name) == method && oc[i].seconds > est)
			est = oc[i].seconds;
	if (est > 0)
		return est;
	return (method ? 4.0 : 1.0) * 2.0 * base_s;
}

/* "name: why" for the reports (NULL when out of memory: left out). */
static char *note(const outcome *o)
{
	size_t len = strlen(o->name) + strlen(o->error) + 3;
	char *s = malloc(len);
	if (s)
		snprintf(s, len, "%s: %s", o->name, o->error);
	return s;
}

/* The speed run fits in the eval text and in ctx positions. */
static speed_plan plan_speed(const args *a, size_t ctx, size_t ntok)
{
	speed_plan p = { ctx / 2 < 256 ? ctx / 2 : 256, a->quick ? 16 : 64 };
	if (p.decode > ctx - p.prefill)
		p.decode = ctx - p.prefill;
	if (p.prefill + p.decode > ntok) {
		p.prefill = ntok / 2;
		p.decode = ntok - p.prefill;
	}
	return p;
}

int tp_cmd_optimize(int argc, char **argv)
{
	args a = { 0 };
	size_t ctx = 0, max_tokens = 0, threads = 0, noc = 0, failed = 0, nfig = 0, nskip = 0;
	int rc = parse_args(argc, argv, &a, &ctx, &max_tokens, &threads);
	if (rc != TP_CLI_PARSED)
		return rc == TP_CLI_HELP ? TP_EXIT_OK : rc;
	double t_start = now_s();
	tp_model *m = NULL;
	tp_tokenizer *tok = NULL;
	char *tok_path = NULL;
	tp_buf eb = TP_BUF_INIT(TEXT_MAX), cb = TP_BUF_INIT(TEXT_MAX);
	text ev = { 0 }, cal = { 0 };
	tp_quant_calib_set calib = { 0 };
	tp_eval_result base;
	outcome *oc = calloc(CANDIDATES_MAX, sizeof(*oc));
	tp_candidate_figures *fig = calloc(CANDIDATES_MAX, sizeof(*fig));
	char **notes = calloc(2 * CANDIDATES_MAX, sizeof(*notes)); /* skipped, then failed */
	const char *codec = NULL;
	unsigned bits = 0;
	tp_model_opts mo = { .threads = (unsigned)threads };
	tp_eval_ref *ref = NULL;
	tp_hw_profile hw, local, cmp[COMPARE_MAX];
	size_t ncmp = 0;
	tp_select_result sel = { .winner = -1 };
	bool none_passes = false;
	if (!oc || !fig || !notes) {
		rc = tp_error_set(TP_ENOMEM, "out of memory");
		goto done;
	}
	if ((rc = list_candidates(a.candidates, oc, &noc)) < 0 ||
	    (rc = export_check(&a, oc, noc)) < 0 ||
	    (rc = tp_hw_profile_load(a.hardware ? a.hardware : "cpu-local", &hw)) < 0 ||
	    (rc = tp_hw_profile_load("cpu-local", &local)) < 0 ||
	    (rc = tp_optimize_source_dtype(a.model, NULL, &codec, &bits)) < 0 ||
	    (rc = tp_optimize_baseline_load(&m, a.model, &mo)) < 0 ||
	    (rc = tp_path_join(&tok_path, a.model, "tokenizer.json")) < 0 ||
	    (rc = tp_tokenizer_load(&tok, tok_path)) < 0 ||
	    (rc = load_text(tok, a.eval, tp_optimize_text_eval, tp_optimize_text_eval_len,
			    "default:eval.txt", &ev, &eb)) < 0 ||
	    (rc = load_text(tok, a.calib, tp_optimize_text_calib, tp_optimize_text_calib_len,
			    "default:calib.txt", &cal, &cb)) < 0)
		goto done;
	if (same_text(&ev, &cal)) {
		rc = tp_error_set(TP_EINVAL, "the calibration text %s is the evaluation text %s",
				  cal.label, ev.label);
		goto done;
	}
	for (const char *s = a.compare; s && *s;) {
		size_t len = strcspn(s, ",");
		char name[256];
		snprintf(name, sizeof(name), "%.*s", (int)(len < 255 ? len : 255), s);
		if (ncmp == COMPARE_MAX) {
			rc = tp_error_set(TP_EINVAL, "--compare: more than %d profiles", COMPARE_MAX);
			goto done;
		}
		if (len && (rc = tp_hw_profile_load(name, &cmp[ncmp++])) < 0)
			goto done;
		s += len + (s[len] == ',');
	}
	if (a.usd > 0)
		hw.usd_per_hour = a.usd;
	/* The local profile calibrates every projection: its bandwidth and
	 * GEMM are measured (a 1 GiB read) only when something is projected. */
	bool project = !hw.measured || a.batch_n != 1 || ncmp > 0;
	if ((rc = tp_hw_measure_local(&local, tp_model_pool(m), project)) < 0)
		goto done;
	for (size_t k = 0; k < ncmp; k++)
		if (cmp[k].measured)
			cmp[k] = local;
	if (hw.measured) {
		double usd = hw.usd_per_hour;
		hw = local;
		if (a.usd > 0)
			hw.usd_per_hour = usd;
	}
	/* Kept: the baseline is freed once scored and calibrated. */
	const tp_model_config cfgv = *tp_model_get_config(m), *cfg = &cfgv;
	uint64_t params = params;
	if (!ctx)
		ctx = cfg->max_positions && cfg->max_positions < 512 ? cfg->max_positions : 512;
	int32_t bos = tp_runtime_choose_bos(cfg, tok);
	tp_eval_opts eo = { .mode = TP_PPL_MODE_LLAMACPP, .ctx = ctx, .max_tokens = max_tokens,
			    .bos = bos };
	tp_calib_opts co = { .ctx = ctx, .max_tokens = max_tokens, .bos = bos };
	double t_base = now_s();
	bool exact = tp_quant_kernel_exact(true);
	rc = tp_runtime_eval_reference(&ref, m, ev.ids, ev.n, &eo, &base);
	tp_quant_kernel_exact(exact);
	if (rc < 0)
		goto done;
	t_base = now_s() - t_base;
	if ((rc = tp_optimize_calibrate(m, cal.ids, cal.n, &co, &calib)) < 0)
		goto done;
	/* Its log-probs and statistics are all candidates need of the baseline:
	 * one model in memory at a time. */
	tp_model_free(m);
	m = NULL;
	tp_candidate_calib cc = { &calib, cal.ids, cal.n, co };
	speed_plan sp = plan_speed(&a, ctx, ev.n);
	bool tty = isatty(STDERR_FILENO);
	if (tty)
		fprintf(stderr, "tenpak optimize: %s ppl %.4f (%zu tokens, ctx %zu)\n", codec,
			base.ppl, base.tokens, base.ctx);
	for (size_t i = 0; i < noc; i++) {
		oc[i].fig = -1;
		double left = a.budget_s - (now_s() - t_start);
		double est = estimate_s(oc, i, oc[i].name, t_base);
		if (a.budget_s > 0 && est > left) {
			oc[i].skipped = true;
			snprintf(oc[i].error, sizeof(oc[i].error),
				 "estimated %.1f s, %.1f s left of the %.0f s budget", est,
				 left > 0 ? left : 0, a.budget_s);
			notes[nskip++] = note(&oc[i]);
			if (tty)
				fprintf(stderr, "tenpak optimize: [%zu/%zu] %s skipped: %s\n", i + 1,
					noc, oc[i].name, oc[i].error);
			continue;
		}
		double t0 = now_s();
		if (run_candidate(&a, &mo, ref, &ev, &eo, &cc, bits, &sp, &oc[i]) < 0) {
			failed++;
			fprintf(stderr, "tenpak: optimize: [%zu/%zu] %s failed: %s\n", i + 1, noc,
				oc[i].name, oc[i].error);
		} else if (tty) {
			fprintf(stderr, "tenpak optimize: [%zu/%zu] %s: %.3f bpw, ppl %.4f (%+.3f%%), "
				"KL %.6f, same top %.2f%%, quantized in %.2f s\n", i + 1, noc,
				oc[i].name, oc[i].st.bpw, oc[i].r.ppl,
				100.0 * (oc[i].r.ppl - base.ppl) / base.ppl, oc[i].r.kl_mean,
				oc[i].r.same_top_pct, oc[i].st.quant_seconds);
		}
		oc[i].seconds = now_s() - t0;
	}
	/* Figures of every measured candidate, then the selection. */
	for (size_t i = 0; i < noc; i++) {
		if (!oc[i].ok)
			continue;
		tp_figures_in fi = { oc[i].name, &oc[i].st, &oc[i].r, base.ppl, &oc[i].sp, cfg,
				     params, bits, ctx, a.batch_n, a.io_in, a.io_out,
				     &hw, &local };
		tp_figures_compute(&fi, &fig[nfig]);
		oc[i].fig = (long)nfig++;
	}
	a.cons.hw_memory_gb = hw.memory_gb;
	tp_select_run(fig, nfig, &a.cons, &sel);
	none_passes = sel.winner < 0;
	size_t nfail = 0;
	for (size_t i = 0; i < noc; i++)
		if (!oc[i].ok && !oc[i].skipped)
			notes[CANDIDATES_MAX + nfail++] = note(&oc[i]);
	tp_report_info info = { .model = a.model, .baseline_codec = codec, .baseline_ppl = base.ppl,
				.eval_text = ev.label, .eval_tokens = base.tokens, .ctx = ctx,
				.prompt = sp.prefill, .decode_steps = sp.decode, .batch = a.batch_n,
				.io_in = a.io_in, .io_out = a.io_out, .quick = a.quick,
				.budget_s = a.budget_s, .elapsed_s = now_s() - t_start, .hw = &hw,
				.local = &local, .constraints = &a.cons, .sel = &sel,
				.skipped = (const char *const *)notes, .nskipped = nskip,
				.failed = (const char *const *)notes + CANDIDATES_MAX,
				.nfailed = nfail };
	char device[200];
	snprintf(device, sizeof(device), "%s (%s)", local.name, local.description);
	report p = { &a, codec, &base, &ev, &cal, &calib, oc, noc, fig, &sel, &info, device, cmp,
		     ncmp, { NULL, NULL, NULL, base.ppl, NULL, cfg, params, bits, ctx,
			     a.batch_n, a.io_in, a.io_out, &hw, &local } };
	print_table(&p);
	if ((a.json && (rc = write_json(&p)) < 0) ||
	    (a.report && (rc = tp_report_markdown_write(a.report, &info, fig, nfig)) < 0) ||
	    (a.plot && (rc = tp_svg_plot_write(a.plot, &info, fig, nfig)) < 0))
		goto done;
	if (a.export_dir) {
		const char *name = a.export_candidate;
		if (!name && sel.winner >= 0)
			name = fig[sel.winner].codec;
		if (!name)
			rc = tp_error_set(TP_EINVAL, "--export: no candidate meets the constraints, so "
					  "there is no winner to export (--export-candidate NAME)");
		else
			rc = export_candidate(&a, &mo, name, &cc, bits);
	}
done:
	for (size_t i = 0; oc && i < noc; i++)
		free(oc[i].name);
	for (size_t i = 0; notes && i < 2 * CANDIDATES_MAX; i++)
		free(notes[i]);
	free(notes);
	free(oc);
	free(fig);
	tp_quant_calib_set_free(&calib);
	tp_runtime_eval_ref_free(ref);
	free(ev.ids);
	free(cal.ids);
	tp_buf_free(&eb);
	tp_buf_free(&cb);
	tp_tokenizer_free(tok);
	free(tok_path);
	tp_model_free(m);
	if (rc < 0)
		return tp_cli_fail("optimize");
	if (none_passes)
		return EXIT_NONE_PASSES;
	return failed ? TP_EXIT_FAIL : TP_EXIT_OK;
}
