/* `tenpak optimize`: what each quantization candidate costs in quality. */
#include "cli.h"
#include "tp_common.h"
#include "tp_optimize.h"
#include "tp_runtime.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TEXT_MAX (256u << 20)
#define CANDIDATES_MAX 64

/* optimize/data, compiled in by optimize/embed_texts.cmake. */
extern const unsigned char tp_optimize_text_calib[], tp_optimize_text_eval[];
extern const size_t tp_optimize_text_calib_len, tp_optimize_text_eval_len;

static const char usage[] =
	"usage: tenpak optimize MODEL_DIR [--eval FILE] [--calib FILE] [--candidates LIST]\n"
	"                       [--ctx N] [--max-tokens N] [--threads N] [--json OUT]\n"
	"                       [--export DIR [--export-candidate NAME]]\n"
	"Measure what quantizing a Llama, Mistral or Qwen2 model (Hugging Face files in\n"
	"MODEL_DIR) costs in quality. Each candidate quantizes the 7 linear layers of\n"
	"every decoder block (q, k, v, o, gate, up, down); embeddings, norms and lm_head\n"
	"keep the stored precision. Every model is measured with its layers packed\n"
	"(the baseline in its stored bf16/fp16, candidates in their format), one\n"
	"model in memory at a time; the baseline's log-probs are computed once.\n"
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
	"                     times (GPTQ) or twice (AWQ): gptq4_g128,\n"
	"                     gptq3_g128, awq4_g128, awq4_g256, awq3_g128\n"
	"  --ctx N            window size (default 512, or the model's maximum)\n"
	"  --max-tokens N     use only the first N tokens of each text (also bounds\n"
	"                     the methods' calibration cost)\n"
	"  --threads N        worker threads (default: all cores)\n"
	"  --json OUT         also write the results as JSON to OUT\n"
	"  --export DIR       write the quantized model into DIR for serving stacks:\n"
	"                     q8_0, q4_0, q4_k as DIR/model-NAME.gguf (llama.cpp);\n"
	"                     rtnB_gG, gptqB_gG, awq3_gG as GPTQ safetensors\n"
	"                     (AutoGPTQ / transformers), awq4_gG as AutoAWQ GEMM\n"
	"                     safetensors, with config.json's quantization_config and\n"
	"                     the tokenizer files\n"
	"  --export-candidate NAME  the candidate --export writes (default: the only\n"
	"                     one in --candidates)\n"
	"A candidate that fails is reported with its reason and the others still run;\n"
	"the exit status is then 1.\n";

typedef struct args {
	const char *model, *eval, *calib, *candidates, *ctx, *max_tokens, *threads, *json;
	const char *export_dir, *export_candidate;
} args;

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
		{ "--export", NULL, &a->export_dir },
		{ "--export-candidate", NULL, &a->export_candidate },
		{ 0 },
	};
	int npos = 0, rc = tp_cli_parse("optimize", argc, argv, opts, &npos);
	if (rc == TP_CLI_HELP)
		fputs(usage, stdout);
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
	bool ok;
	char error[256];
	tp_candidate_stats st;
	tp_eval_result r;
	double seconds;
} outcome;

static int run_candidate(const args *a, const tp_model_opts *mo, const tp_eval_ref *base,
			 const text *ev, const tp_eval_opts *eo,
			 const tp_candidate_calib *calib, unsigned bits, outcome *oc)
{
	tp_model *m = NULL;
	int rc = tp_optimize_candidate_load(&m, a->model, mo, oc->name, calib, bits, &oc->st);
	if (rc == 0)
		rc = tp_runtime_eval_perplexity_ref(m, base, ev->ids, ev->n, eo, &oc->r);
	tp_model_free(m);
	if (rc < 0)
		snprintf(oc->error, sizeof(oc->error), "%s", tp_error_last());
	oc->ok = rc == 0;
	return rc;
}

static void add_candidate_json(cJSON *arr, const outcome *oc, double base_ppl)
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
} report;

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
		if (p->oc[i].ok) {
			add_candidate_json(all, &p->oc[i], p->base->ppl);
			continue;
		}
		cJSON *f = cJSON_CreateObject();
		cJSON_AddStringToObject(f, "codec", p->oc[i].name);
		cJSON_AddStringToObject(f, "error", p->oc[i].error);
		cJSON_AddItemToArray(failed, f);
	}
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
	printf("%-20s %7s %7s %10s %9s %10s %10s %8s %8s\n", "codec", "bpw", "compr", "ppl",
	       "dppl%", "kl_mean", "kl_p99", "same%", "quant_s");
	printf("%-20s %7s %7s %10.4f %9s %10s %10s %8s %8s\n", p->codec, "", "1.00",
	       p->base->ppl, "", "", "", "", "");
	for (size_t i = 0; i < p->noc; i++) {
		const outcome *o = &p->oc[i];
		if (!o->ok) {
			printf("%-20s failed: %s\n", o->name, o->error);
			continue;
		}
		printf("%-20s %7.4f %7.2f %10.4f %+9.3f %10.6f %10.6f %8.3f %8.2f\n", o->name,
		       o->st.bpw, o->st.compression, o->r.ppl,
		       100.0 * (o->r.ppl - p->base->ppl) / p->base->ppl, o->r.kl_mean,
		       o->r.kl_p99, o->r.same_top_pct, o->st.quant_seconds);
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

/* The candidate --export writes, checked before the long run. */
static int export_check(const args *a, const outcome *oc, size_t n, const char **name)
{
	tp_export_plan plan;
	if (!a->export_dir)
		return 0;
	*name = a->export_candidate ? a->export_candidate : n == 1 ? oc[0].name : NULL;
	if (!*name)
		return tp_error_set(TP_EINVAL, "--export: say which of the %zu candidates with "
				    "--export-candidate NAME", n);
	return tp_optimize_export_plan(*name, &plan);
}

int tp_cmd_optimize(int argc, char **argv)
{
	args a = { 0 };
	size_t ctx = 0, max_tokens = 0, threads = 0, noc = 0, failed = 0;
	int rc = parse_args(argc, argv, &a, &ctx, &max_tokens, &threads);
	if (rc != TP_CLI_PARSED)
		return rc == TP_CLI_HELP ? TP_EXIT_OK : rc;
	tp_model *m = NULL;
	tp_tokenizer *tok = NULL;
	char *tok_path = NULL;
	tp_buf eb = TP_BUF_INIT(TEXT_MAX), cb = TP_BUF_INIT(TEXT_MAX);
	text ev = { 0 }, cal = { 0 };
	tp_quant_calib_set calib = { 0 };
	tp_eval_result base;
	tp_eval_ref *ref = NULL;
	outcome *oc = calloc(CANDIDATES_MAX, sizeof(*oc));
	const char *codec = NULL, *export_name = NULL;
	unsigned bits = 0;
	tp_model_opts mo = { .threads = (unsigned)threads };
	if (!oc) {
		rc = tp_error_set(TP_ENOMEM, "out of memory");
		goto done;
	}
	if ((rc = list_candidates(a.candidates, oc, &noc)) < 0 ||
	    (rc = export_check(&a, oc, noc, &export_name)) < 0 ||
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
	const tp_model_config *cfg = tp_model_get_config(m);
	if (!ctx)
		ctx = cfg->max_positions && cfg->max_positions < 512 ? cfg->max_positions : 512;
	int32_t bos = tp_runtime_choose_bos(cfg, tok);
	tp_eval_opts eo = { .mode = TP_PPL_MODE_LLAMACPP, .ctx = ctx, .max_tokens = max_tokens,
			    .bos = bos };
	tp_calib_opts co = { .ctx = ctx, .max_tokens = max_tokens, .bos = bos };
	if ((rc = tp_runtime_eval_reference(&ref, m, ev.ids, ev.n, &eo, &base)) < 0 ||
	    (rc = tp_optimize_calibrate(m, cal.ids, cal.n, &co, &calib)) < 0)
		goto done;
	/* Its log-probs and statistics are all candidates need of the baseline. */
	tp_model_free(m);
	m = NULL;
	tp_candidate_calib cc = { &calib, cal.ids, cal.n, co };
	bool tty = isatty(STDERR_FILENO);
	if (tty)
		fprintf(stderr, "tenpak optimize: %s ppl %.4f (%zu tokens, ctx %zu)\n", codec,
			base.ppl, base.tokens, base.ctx);
	for (size_t i = 0; i < noc; i++) {
		if (run_candidate(&a, &mo, ref, &ev, &eo, &cc, bits, &oc[i]) < 0) {
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
	}
	report p = { &a, codec, &base, &ev, &cal, &calib, oc, noc };
	print_table(&p);
	if (a.json)
		rc = write_json(&p);
	if (rc == 0 && a.export_dir)
		rc = export_candidate(&a, &mo, export_name, &cc, bits);
done:
	for (size_t i = 0; oc && i < noc; i++)
		free(oc[i].name);
	free(oc);
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
	return failed ? TP_EXIT_FAIL : TP_EXIT_OK;
}
