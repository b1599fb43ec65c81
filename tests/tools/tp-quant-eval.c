/*
 * tp-quant-eval: load a model with its decoder linear layers packed in a
 * quant format (or dense fp32), score a text, and report perplexity and
 * peak memory. A test tool for the packed path's memory (optimize/README.md).
 *
 *   tp-quant-eval MODEL_DIR --text FILE [--format F|fp32] [--weights FILE]
 *                 [--ctx N] [--max-tokens N] [--threads N]
 *                 [--max-growth FACTOR:ALLOW_KIB]
 *
 * Prints one line of key=value pairs. growth_kib is the peak resident set
 * (getrusage ru_maxrss) at the end minus the peak before loading: what
 * loading and evaluating added (load_growth_kib: loading alone). --max-growth fails with exit status 3 when
 * growth_kib > FACTOR * (weights file size) + ALLOW_KIB, and exits 77
 * (skipped) in an AddressSanitizer build, whose shadow memory makes resident
 * sizes meaningless. Exit 1 on errors, 2 on usage.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tp_common.h"
#include "tp_optimize.h"
#include "tp_runtime.h"

#if defined(__SANITIZE_ADDRESS__)
#define ASAN_BUILD 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define ASAN_BUILD 1
#endif
#endif

static long peak_kib(void)
{
	struct rusage u;
	if (getrusage(RUSAGE_SELF, &u) != 0)
		return -1;
	return u.ru_maxrss; /* KiB on Linux */
}

static int usage(void)
{
	fprintf(stderr, "usage: tp-quant-eval MODEL_DIR --text FILE [--format F|fp32] "
			"[--weights FILE] [--ctx N] [--max-tokens N] [--threads N] "
			"[--max-growth FACTOR:ALLOW_KIB]\n");
	return 2;
}

static int read_ids(const char *dir, const char *text_path, int32_t **ids, size_t *n,
		    tp_tokenizer **tok)
{
	char *path = NULL;
	tp_buf text = TP_BUF_INIT(64u << 20);
	int rc;
	if ((rc = tp_path_join(&path, dir, "tokenizer.json")) < 0 ||
	    (rc = tp_tokenizer_load(tok, path)) < 0 ||
	    (rc = tp_fs_read_regular(text_path, &text)) < 0)
		goto done;
	rc = tp_tokenizer_encode(*tok, text.ptr ? text.ptr : "", text.len, false, ids, n);
done:
	tp_buf_free(&text);
	free(path);
	return rc;
}

int main(int argc, char **argv)
{
	const char *dir = NULL, *text = NULL, *format = "fp32", *weights = NULL, *cap = NULL;
	unsigned long ctx = 128, max_tokens = 0, threads = 0;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (a[0] != '-') {
			if (dir)
				return usage();
			dir = a;
			continue;
		}
		if (!v)
			return usage();
		i++;
		if (strcmp(a, "--text") == 0)
			text = v;
		else if (strcmp(a, "--format") == 0)
			format = v;
		else if (strcmp(a, "--weights") == 0)
			weights = v;
		else if (strcmp(a, "--max-growth") == 0)
			cap = v;
		else if (strcmp(a, "--ctx") == 0)
			ctx = strtoul(v, NULL, 10);
		else if (strcmp(a, "--max-tokens") == 0)
			max_tokens = strtoul(v, NULL, 10);
		else if (strcmp(a, "--threads") == 0)
			threads = strtoul(v, NULL, 10);
		else
			return usage();
	}
	double factor = 0;
	long allow = 0;
	if (!dir || !text || ctx < 2 ||
	    (cap && sscanf(cap, "%lf:%ld", &factor, &allow) != 2))
		return usage();
#ifdef ASAN_BUILD
	if (cap) {
		fprintf(stderr, "tp-quant-eval: --max-growth skipped under AddressSanitizer\n");
		return 77;
	}
#endif
	tp_optimize_packed_ctx pc = {.format = NULL};
	if (strcmp(format, "fp32") != 0 && !(pc.format = tp_quant_format_find(format))) {
		fprintf(stderr, "tp-quant-eval: unknown format %s\n", format);
		return 2;
	}

	long before = peak_kib();
	tp_model *m = NULL;
	tp_tokenizer *tok = NULL;
	int32_t *ids = NULL;
	size_t n = 0;
	char *wpath = NULL;
	struct stat st;
	tp_eval_result r;
	tp_model_opts mo = {.weights = weights, .threads = threads};
	if (pc.format) {
		mo.make_linear = tp_optimize_make_linear_packed;
		mo.make_linear_ctx = &pc;
	}
	int rc = tp_model_load(&m, dir, &mo);
	long loaded = peak_kib();
	if (rc < 0 || (rc = read_ids(dir, text, &ids, &n, &tok)) < 0)
		goto done;
	tp_eval_opts o = {.mode = TP_PPL_MODE_LLAMACPP, .ctx = ctx, .max_tokens = max_tokens};
	o.bos = tp_runtime_choose_bos(tp_model_get_config(m), tok);
	if ((rc = tp_runtime_eval_perplexity(m, NULL, ids, n, &o, &r)) < 0)
		goto done;
	if (!weights && (rc = tp_path_join(&wpath, dir, "model.safetensors")) < 0)
		goto done;
	if (stat(weights ? weights : wpath, &st) != 0) {
		rc = tp_error_set_errno(TP_EIO, errno, "stat %s", weights ? weights : wpath);
		goto done;
	}
	uint64_t linear_bytes = 0;
	for (size_t i = 0; i < tp_model_linear_count(m); i++) {
		const tp_linear *l = tp_model_linear(m, i);
		linear_bytes += l->ops->weight_bytes ? l->ops->weight_bytes(l) : 0;
	}
	long after = peak_kib(), growth = after - before;
	long file_kib = (long)(st.st_size / 1024);
	printf("format=%s params=%llu file_kib=%ld linear_kib=%llu packed_layers=%zu ppl=%.4f "
	       "tokens=%zu peak_kib=%ld start_kib=%ld load_growth_kib=%ld growth_kib=%ld\n",
	       format, (unsigned long long)tp_model_params(m), file_kib,
	       (unsigned long long)(linear_bytes / 1024), pc.made, r.ppl, r.tokens, after, before,
	       loaded - before, growth);
	if (cap && (double)growth > factor * (double)file_kib + (double)allow) {
		fprintf(stderr,
			"tp-quant-eval: growth %ld KiB > %.2f x %ld KiB file + %ld KiB allowance\n",
			growth, factor, file_kib, allow);
		rc = 3;
	}
done:
	free(ids);
	free(wpath);
	tp_tokenizer_free(tok);
	tp_model_free(m);
	if (rc < 0) {
		fprintf(stderr, "tp-quant-eval: %s\n", tp_error_last());
		return 1;
	}
	return rc;
}
