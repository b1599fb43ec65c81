/* Helpers shared by the runtime tests: fixture paths and reference data. */
#ifndef TP_EVALTEST_H
#define TP_EVALTEST_H

#include "tp_delta.h"
#include "tp_runtime.h"

#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Not every test uses every helper. */
#define TPT_UNUSED __attribute__((unused))

/* Exit status of a test whose data is absent (a file not kept in the repo,
 * or no shared fixtures next to the checkout): ctest's SKIP_RETURN_CODE, so
 * it reports "skipped", never "passed". */
#define TPT_SKIP 77

/* True when path is readable; otherwise says what is missing. */
TPT_UNUSED static bool tpt_have(const char *path, const char *what)
{
	if (access(path, R_OK) == 0)
		return true;
	fprintf(stderr, "skipped: no %s (%s)\n", what, path);
	return false;
}

static char *tpt_path(const char *fmt, ...) __attribute__((format(printf, 1, 2), unused));
static char *tpt_path(const char *fmt, ...)
{
	static char buf[8][1024];
	static int next;
	char *b = buf[next++ % 8];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(b, sizeof(buf[0]), fmt, ap);
	va_end(ap);
	return b;
}

/* A whole F32 tensor from a safetensors file; NULL if absent. */
TPT_UNUSED static float *tpt_read_f32(const char *path, const char *name, size_t *n)
{
	tp_safetensors *st = NULL;
	float *out = NULL;
	if (tp_safetensors_open(&st, path) < 0)
		return NULL;
	const tp_st_tensor *t = tp_safetensors_find(st, name);
	int fd = open(path, O_RDONLY);
	if (t && t->dtype == TP_DTYPE_F32 && fd >= 0 && (out = malloc((size_t)t->size)) &&
	    pread(fd, out, (size_t)t->size, (off_t)t->offset) != (ssize_t)t->size) {
		free(out);
		out = NULL;
	}
	if (out)
		*n = (size_t)t->size / sizeof(float);
	if (fd >= 0)
		close(fd);
	tp_safetensors_free(st);
	return out;
}

/* The in-repo BF16 model: config from data/eval, weights from data/fixtures. */
TPT_UNUSED static tp_model *tpt_repo_model(const char *data, const char *variant, unsigned threads)
{
	tp_model *m = NULL;
	tp_model_opts o = { .threads = threads,
			    .weights = tpt_path("%s/fixtures/%s-bf16.safetensors", data, variant) };
	if (tp_model_load(&m, tpt_path("%s/eval", data), &o) < 0)
		fprintf(stderr, "loading %s: %s\n", variant, tp_error_last());
	return m;
}

/* The fixture text's bytes are its token ids (byte-level, no merges). */
TPT_UNUSED static int32_t *tpt_heldout_ids(const char *data, size_t *n)
{
	FILE *f = fopen(tpt_path("%s/eval/heldout.txt", data), "rb");
	static char text[1 << 16];
	int32_t *ids = NULL;
	if (!f)
		return NULL;
	size_t len = fread(text, 1, sizeof(text), f);
	fclose(f);
	tp_tokenizer *t = NULL;
	if (tp_tokenizer_load(&t, tpt_path("%s/eval/tokenizer.json", data)) < 0 ||
	    tp_tokenizer_encode(t, text, len, true, &ids, n) < 0)
		fprintf(stderr, "tokenizing: %s\n", tp_error_last());
	tp_tokenizer_free(t);
	return ids;
}

#endif
