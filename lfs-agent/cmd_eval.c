/* `tenpak eval`: perplexity, KL divergence and speed of a causal LM. */
#include "cli.h"
#include "tp_common.h"
#include "tp_runtime.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TEXT_MAX (256u << 20)
#define DECODE_DEFAULT 32

static const char usage[] =
	"usage: tenpak eval MODEL_DIR --text FILE [--ctx N] [--mode llamacpp|strided]\n"
	"                   [--stride N] [--max-tokens N] [--threads N] [--json]\n"
	"                   [--reference OTHER_MODEL_DIR] [--weights FILE] [--no-bos]\n"
	"                   [--decode N]\n"
	"Measure the perplexity of a Llama, Mistral or Qwen2 model (Hugging Face\n"
	"config.json, tokenizer.json and safetensors in MODEL_DIR) on FILE, on the CPU\n"
	"in fp32.\n"
	"\n"
	"  --mode llamacpp  (default) as llama.cpp's perplexity tool: windows of --ctx\n"
	"                   tokens, BOS first when the model has one, only the second\n"
	"                   half of each window scored.\n"
	"  --mode strided   as Hugging Face's perplexity guide: windows of --ctx tokens\n"
	"                   advancing by --stride (default ctx/2), each token scored once.\n"
	"  --ctx N          window size (default 512)\n"
	"  --max-tokens N   use only the first N tokens of FILE\n"
	"  --threads N      worker threads (default: all cores)\n"
	"  --reference DIR  also report KL(reference || model): mean, 99th percentile\n"
	"                   and how often both pick the same top token, as llama.cpp does\n"
	"  --weights FILE   safetensors file or shard index to use instead of MODEL_DIR's\n"
	"  --no-bos         never add a BOS token\n"
	"  --decode N       time N single-token decode steps with the KV cache (default\n"
	"                   32, 0 to skip)\n"
	"  --json           print the results as JSON\n"
	"Perplexity is printed with its mode and a ± one standard error.\n";

typedef struct args {
	const char *model, *text, *ctx, *mode, *stride, *max_tokens, *threads, *reference,
		*weights, *decode;
	bool json, no_bos;
} args;

/* Fill opts from the flags. Returns TP_CLI_PARSED, TP_CLI_HELP after
 * printing the help, or TP_EXIT_USAGE after printing why. */
static int parse_args(int argc, char **argv, args *a, tp_eval_opts *o, size_t *threads,
		      size_t *decode)
{
	const tp_cli_opt opts[] = {
		{ "--text", NULL, &a->text }, { "--ctx", NULL, &a->ctx },
		{ "--mode", NULL, &a->mode }, { "--stride", NULL, &a->stride },
		{ "--max-tokens", NULL, &a->max_tokens }, { "--threads", NULL, &a->threads },
		{ "--reference", NULL, &a->reference }, { "--weights", NULL, &a->weights },
		{ "--decode", NULL, &a->decode }, { "--json", &a->json, NULL },
		{ "--no-bos", &a->no_bos, NULL }, { 0 },
	};
	int npos = 0, rc = tp_cli_parse("eval", argc, argv, opts, &npos);
	if (rc == TP_CLI_HELP)
		fputs(usage, stdout);
	if (rc != TP_CLI_PARSED)
		return rc;
	if (npos != 1)
		return tp_cli_usage_error("eval", "expected one MODEL_DIR");
	a->model = argv[1];
	if (!a->text)
		return tp_cli_usage_error("eval", "--text FILE is required");
	*o = (tp_eval_opts){ .mode = TP_PPL_MODE_LLAMACPP, .ctx = 512 };
	*threads = 0;
	*decode = DECODE_DEFAULT;
	if (a->mode && tp_ppl_mode_from_name(a->mode, &o->mode) < 0)
		return tp_cli_usage_error("eval", "--mode must be llamacpp or strided");
	if (!tp_cli_parse_size(a->ctx, 4, 1u << 20, &o->ctx) ||
	    !tp_cli_parse_size(a->stride, 1, o->ctx, &o->stride) ||
	    !tp_cli_parse_size(a->max_tokens, 0, SIZE_MAX, &o->max_tokens) ||
	    !tp_cli_parse_size(a->threads, 1, 256, threads) ||
	    !tp_cli_parse_size(a->decode, 0, 1u << 16, decode))
		return tp_cli_usage_error("eval", "bad number in --ctx, --stride, --max-tokens, "
					  "--threads or --decode");
	return TP_CLI_PARSED;
}

static int show_progress(void *ctx, uint64_t done, uint64_t total)
{
	(void)ctx;
	fprintf(stderr, "\rtenpak eval: window %llu/%llu", (unsigned long long)done,
		(unsigned long long)total);
	if (done == total)
		fputc('\n', stderr);
	return 0;
}

static int load_text_ids(const char *model_dir, const char *text_path, const tp_model *m,
			 bool no_bos, int32_t **ids, size_t *n, int32_t *bos)
{
	tp_tokenizer *tok = NULL;
	char *path = NULL;
	tp_buf text = TP_BUF_INIT(TEXT_MAX);
	int rc;
	if ((rc = tp_path_join(&path, model_dir, "tokenizer.json")) < 0 ||
	    (rc = tp_tokenizer_load(&tok, path)) < 0)
		goto done;
	if ((rc = tp_cli_read_text(text_path, &text)) < 0)
		goto done;
	/* Special-token text in the file is text, as in llama.cpp's perplexity. */
	rc = tp_tokenizer_encode(tok, text.ptr ? text.ptr : "", text.len, false, ids, n);
	*bos = no_bos ? -1 : tp_runtime_choose_bos(tp_model_get_config(m), tok);
done:
	tp_buf_free(&text);
	tp_tokenizer_free(tok);
	free(path);
	return rc;
}

static void print_text(const args *a, const tp_model *m, const tp_eval_result *r,
		       const tp_speed_result *s, int32_t bos, size_t threads)
{
	printf("model        %s (%.1fM parameters)\n", a->model,
	       (double)tp_model_params(m) / 1e6);
	if (bos < 0)
		printf("tokens       %zu, no BOS\n", r->tokens);
	else
		printf("tokens       %zu, BOS %d first\n", r->tokens, (int)bos);
	printf("perplexity   %.4f ± %.4f  (%s, ctx %zu", r->ppl, r->ppl_err,
	       tp_ppl_mode_name(r->mode), r->ctx);
	if (r->mode == TP_PPL_MODE_STRIDED)
		printf(", stride %zu", r->stride);
	printf(", %zu tokens scored in %zu windows)\n", r->scored, r->windows);
	if (r->has_kl) {
		printf("KL divergence mean %.6f ± %.6f, p99 %.6f, max %.6f  (vs %s)\n",
		       r->kl_mean, r->kl_err, r->kl_p99, r->kl_max, a->reference);
		printf("same top     %.3f ± %.3f %%\n", r->same_top_pct, r->same_top_err);
	}
	printf("speed        prefill %.1f tokens/s", r->tokens_per_s);
	if (s->decode_tokens)
		printf(", decode %.1f tokens/s", s->decode_tps);
	printf("  (%zu threads, %s kernel)\n", threads, tp_matmul_kernel());
}

static int print_json(const args *a, const tp_model *m, const tp_eval_result *r,
		      const tp_speed_result *s, int32_t bos, size_t threads)
{
	cJSON *o = cJSON_CreateObject();
	cJSON_AddStringToObject(o, "model", a->model);
	cJSON_AddNumberToObject(o, "parameters", (double)tp_model_params(m));
	cJSON_AddStringToObject(o, "mode", tp_ppl_mode_name(r->mode));
	cJSON_AddNumberToObject(o, "ctx", (double)r->ctx);
	if (r->mode == TP_PPL_MODE_STRIDED)
		cJSON_AddNumberToObject(o, "stride", (double)r->stride);
	cJSON_AddNumberToObject(o, "bos", bos);
	cJSON_AddNumberToObject(o, "tokens", (double)r->tokens);
	cJSON_AddNumberToObject(o, "windows", (double)r->windows);
	cJSON_AddNumberToObject(o, "scored", (double)r->scored);
	cJSON_AddNumberToObject(o, "nll", r->nll_mean);
	cJSON_AddNumberToObject(o, "ppl", r->ppl);
	cJSON_AddNumberToObject(o, "ppl_err", r->ppl_err);
	if (r->has_kl) {
		cJSON *kl = cJSON_AddObjectToObject(o, "kl");
		cJSON_AddStringToObject(kl, "reference", a->reference);
		cJSON_AddNumberToObject(kl, "mean", r->kl_mean);
		cJSON_AddNumberToObject(kl, "err", r->kl_err);
		cJSON_AddNumberToObject(kl, "p99", r->kl_p99);
		cJSON_AddNumberToObject(kl, "max", r->kl_max);
		cJSON_AddNumberToObject(kl, "same_top_pct", r->same_top_pct);
		cJSON_AddNumberToObject(kl, "same_top_err", r->same_top_err);
	}
	cJSON *sp = cJSON_AddObjectToObject(o, "speed");
	cJSON_AddNumberToObject(sp, "threads", (double)threads);
	cJSON_AddStringToObject(sp, "kernel", tp_matmul_kernel());
	cJSON_AddNumberToObject(sp, "prefill_tokens_per_s", r->tokens_per_s);
	if (s->decode_tokens)
		cJSON_AddNumberToObject(sp, "decode_tokens_per_s", s->decode_tps);
	char *txt = cJSON_Print(o);
	cJSON_Delete(o);
	if (!txt)
		return tp_error_set(TP_ENOMEM, "out of memory");
	puts(txt);
	free(txt);
	return 0;
}

/* Decode speed: a short prefill, then single tokens with the KV cache. */
static int measure_decode(const tp_model *m, const int32_t *ids, size_t n, size_t decode,
			  tp_speed_result *s)
{
	size_t prefill = n > decode + 64 ? 64 : n > decode ? n - decode : 0;
	*s = (tp_speed_result){ 0 };
	if (decode == 0 || prefill == 0)
		return 0;
	return tp_runtime_eval_speed(m, ids, prefill, decode, s);
}

int tp_cmd_eval(int argc, char **argv)
{
	args a = { 0 };
	tp_eval_opts o = { 0 };
	size_t threads = 0, decode = 0, n = 0;
	int rc = parse_args(argc, argv, &a, &o, &threads, &decode);
	if (rc != TP_CLI_PARSED)
		return rc == TP_CLI_HELP ? TP_EXIT_OK : rc;
	tp_model *m = NULL, *ref = NULL;
	int32_t *ids = NULL;
	tp_eval_result r;
	tp_speed_result s;
	tp_model_opts mo = { .weights = a.weights, .threads = (unsigned)threads };
	if ((rc = tp_model_load(&m, a.model, &mo)) < 0)
		goto done;
	mo.weights = NULL;
	if (a.reference && (rc = tp_model_load(&ref, a.reference, &mo)) < 0)
		goto done;
	if ((rc = load_text_ids(a.model, a.text, m, a.no_bos, &ids, &n, &o.bos)) < 0)
		goto done;
	if (isatty(STDERR_FILENO))
		o.progress = show_progress;
	if ((rc = tp_runtime_eval_perplexity(m, ref, ids, n, &o, &r)) < 0 ||
	    (rc = measure_decode(m, ids, n, decode, &s)) < 0)
		goto done;
	threads = tp_pool_threads(tp_model_pool(m));
	if (a.json)
		rc = print_json(&a, m, &r, &s, o.bos, threads);
	else
		print_text(&a, m, &r, &s, o.bos, threads);
done:
	free(ids);
	tp_model_free(m);
	tp_model_free(ref);
	return rc < 0 ? tp_cli_fail("eval") : TP_EXIT_OK;
}
