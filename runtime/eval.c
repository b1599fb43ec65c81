/* Perplexity, KL divergence and speed over a token stream. */
#include "runtime_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CTX_DEFAULT 512

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

const char *tp_ppl_mode_name(tp_ppl_mode m)
{
	return m == TP_PPL_MODE_STRIDED ? "strided" : "llamacpp";
}

int tp_ppl_mode_from_name(const char *s, tp_ppl_mode *out)
{
	if (strcmp(s, "llamacpp") == 0)
		*out = TP_PPL_MODE_LLAMACPP;
	else if (strcmp(s, "strided") == 0)
		*out = TP_PPL_MODE_STRIDED;
	else
		return tp_error_set(TP_EINVAL, "unknown perplexity mode '%s' (llamacpp, strided)", s);
	return 0;
}

int32_t tp_runtime_choose_bos(const tp_model_config *c, const tp_tokenizer *t)
{
	int32_t tok = tp_tokenizer_bos(t);
	if (tok < 0)
		return -1;
	return c->bos_id >= 0 ? (int32_t)c->bos_id : tok;
}

/* One window: tokens [begin, begin + len) of the stream, rows whose
 * logits score the next token: [first, last]. */
typedef struct window {
	size_t begin, len, first, last;
} window;

/* Running sums over scored positions. */
typedef struct acc {
	double nll, nll2, kl, kl2;
	size_t n, same_top;
	float *kls; /* every KL value, for the percentile */
} acc;

typedef struct run {
	const tp_model *m, *ref;
	const tp_eval_opts *o;
	int32_t *stream;
	size_t len, fed;
	tp_kv *kv, *kv_ref;
	float *logits, *logits_ref;
	double seconds;
	acc a;
} run;

static size_t count_windows(const run *r, window *w, size_t max)
{
	size_t ctx = r->o->ctx, n = 0;
	if (r->o->mode == TP_PPL_MODE_LLAMACPP) {
		for (size_t b = 0; b + ctx <= r->len; b += ctx, n++)
			if (w && n < max)
				w[n] = (window){ b, ctx - 1, ctx / 2, ctx - 2 };
		return n;
	}
	/* HF guide: each window scores the tokens past the previous end. */
	size_t prev_end = 0;
	for (size_t b = 0;; b += r->o->stride, n++) {
		size_t end = b + ctx < r->len ? b + ctx : r->len, trg = end - prev_end;
		size_t wlen = end - b, first_label = wlen - trg > 1 ? wlen - trg : 1;
		prev_end = end;
		if (wlen < 2) /* a lone last token predicts nothing */
			return n;
		if (w && n < max)
			w[n] = (window){ b, wlen, first_label - 1, wlen - 2 };
		if (end == r->len)
			return n + 1;
	}
}

static void score_row(run *r, const float *lg, const float *lg_ref, int32_t target,
		      float *lp, float *lp_ref)
{
	size_t V = r->m->cfg.vocab;
	tp_runtime_log_softmax(lg, V, lp);
	double nll = -(double)lp[target];
	r->a.nll += nll;
	r->a.nll2 += nll * nll;
	if (lg_ref) {
		tp_runtime_log_softmax(lg_ref, V, lp_ref);
		double kl = 0;
		size_t top = 0, top_ref = 0;
		for (size_t i = 0; i < V; i++) {
			kl += exp((double)lp_ref[i]) * ((double)lp_ref[i] - lp[i]);
			top = lp[i] > lp[top] ? i : top;
			top_ref = lp_ref[i] > lp_ref[top_ref] ? i : top_ref;
		}
		r->a.kl += kl;
		r->a.kl2 += kl * kl;
		r->a.kls[r->a.n] = (float)kl;
		r->a.same_top += top == top_ref;
	}
	r->a.n++;
}

static int eval_window(run *r, const window *w)
{
	size_t V = r->m->cfg.vocab;
	const int32_t *ids = r->stream + w->begin;
	int32_t *fixed = NULL;
	int rc;
	if (r->o->mode == TP_PPL_MODE_LLAMACPP && r->o->bos >= 0) {
		/* llama.cpp starts every window with BOS, replacing a token. */
		if (!(fixed = malloc(w->len * sizeof(*fixed))))
			return tp_error_set(TP_ENOMEM, "out of memory");
		memcpy(fixed, ids, w->len * sizeof(*fixed));
		fixed[0] = r->o->bos;
		ids = fixed;
	}
	double t0 = now_s();
	tp_kv_reset(r->kv);
	rc = tp_model_forward(r->m, r->kv, ids, w->len, w->first, r->logits);
	if (rc == 0 && r->ref) {
		tp_kv_reset(r->kv_ref);
		rc = tp_model_forward(r->ref, r->kv_ref, ids, w->len, w->first, r->logits_ref);
	}
	r->seconds += now_s() - t0;
	r->fed += w->len * (r->ref ? 2 : 1);
	/* The scratch rows are reused as log-prob buffers once scored. */
	for (size_t i = w->first; rc == 0 && i <= w->last; i++) {
		float *lg = r->logits + (i - w->first) * V;
		float *lgr = r->ref ? r->logits_ref + (i - w->first) * V : NULL;
		score_row(r, lg, lgr, r->stream[w->begin + i + 1], lg, lgr);
	}
	free(fixed);
	return rc;
}

static int cmp_float(const void *a, const void *b)
{
	float x = *(const float *)a, y = *(const float *)b;
	return (x > y) - (x < y);
}

static void finish(const run *r, size_t nwin, tp_eval_result *out)
{
	const acc *a = &r->a;
	double n = (double)a->n, mean = a->nll / n;
	double var = a->nll2 / n - mean * mean;
	out->windows = nwin;
	out->scored = a->n;
	out->nll_mean = mean;
	out->ppl = exp(mean);
	out->ppl_err = a->n > 1 && var > 0 ? out->ppl * sqrt(var / (n - 1)) : 0;
	out->seconds = r->seconds;
	out->tokens_per_s = r->seconds > 0 ? (double)r->fed / r->seconds : 0;
	if (!r->ref)
		return;
	double klm = a->kl / n, klv = a->kl2 / n - klm * klm, p = (double)a->same_top / n;
	qsort(a->kls, a->n, sizeof(float), cmp_float);
	double at = 0.99 * (n - 1);
	size_t lo = (size_t)at, hi = lo + 1 < a->n ? lo + 1 : lo;
	out->has_kl = true;
	out->kl_mean = klm;
	out->kl_err = a->n > 1 && klv > 0 ? sqrt(klv / (n - 1)) : 0;
	out->kl_p99 = a->kls[lo] + (at - (double)lo) * (a->kls[hi] - a->kls[lo]);
	out->kl_max = a->kls[a->n - 1];
	out->same_top_pct = 100.0 * p;
	out->same_top_err = a->n > 1 ? 100.0 * sqrt(p * (1 - p) / (n - 1)) : 0;
}

static int check_opts(const tp_model *m, const tp_model *ref, tp_eval_opts *o)
{
	if (o->ctx == 0)
		o->ctx = CTX_DEFAULT;
	if (o->stride == 0)
		o->stride = o->ctx / 2;
	if (o->ctx < 4 || o->stride > o->ctx)
		return tp_error_set(TP_EINVAL, "bad context %zu / stride %zu", o->ctx, o->stride);
	if (ref && ref->cfg.vocab != m->cfg.vocab)
		return tp_error_set(TP_EINVAL, "reference vocabulary %zu differs from %zu",
				    ref->cfg.vocab, m->cfg.vocab);
	if (o->bos >= 0 && (size_t)o->bos >= m->cfg.vocab)
		return tp_error_set(TP_EINVAL, "BOS %d outside the vocabulary", (int)o->bos);
	return 0;
}

static int run_setup(run *r, const int32_t *ids, size_t n)
{
	const tp_eval_opts *o = r->o;
	size_t V = r->m->cfg.vocab, cells;
	if (o->max_tokens && n > o->max_tokens)
		n = o->max_tokens;
	size_t pre = o->bos >= 0 ? 1 : 0;
	if (!(r->stream = malloc((n + pre) * sizeof(int32_t))))
		return tp_error_set(TP_ENOMEM, "out of memory");
	if (pre)
		r->stream[0] = o->bos;
	memcpy(r->stream + pre, ids, n * sizeof(int32_t));
	r->len = n + pre;
	if (r->len < 2 || (o->mode == TP_PPL_MODE_LLAMACPP && r->len < o->ctx))
		return tp_error_set(TP_EINVAL, "%zu tokens are too few for a context of %zu",
				    r->len, o->ctx);
	if (!tp_mul_ok(o->ctx, V, &cells) || cells > SIZE_MAX / sizeof(float))
		return tp_error_set(TP_ETOOBIG, "context x vocabulary too large");
	int rc = tp_kv_new(&r->kv, r->m, o->ctx, o->ctx);
	if (rc == 0 && r->ref)
		rc = tp_kv_new(&r->kv_ref, r->ref, o->ctx, o->ctx);
	if (rc < 0)
		return rc;
	r->logits = malloc(cells * sizeof(float));
	r->logits_ref = r->ref ? malloc(cells * sizeof(float)) : NULL;
	r->a.kls = r->ref ? malloc(r->len * sizeof(float)) : NULL;
	if (!r->logits || (r->ref && (!r->logits_ref || !r->a.kls)))
		return tp_error_set(TP_ENOMEM, "out of memory for logits");
	return 0;
}

int tp_runtime_eval_perplexity(const tp_model *m, const tp_model *ref, const int32_t *ids,
			       size_t n, const tp_eval_opts *opts, tp_eval_result *out)
{
	tp_eval_opts o = *opts;
	run r = { .m = m, .ref = ref, .o = &o };
	window *w = NULL;
	size_t nwin = 0;
	int rc;
	if ((rc = check_opts(m, ref, &o)) < 0 || (rc = run_setup(&r, ids, n)) < 0)
		goto done;
	nwin = count_windows(&r, NULL, 0);
	if (!(w = calloc(nwin, sizeof(*w)))) {
		rc = tp_error_set(TP_ENOMEM, "out of memory");
		goto done;
	}
	count_windows(&r, w, nwin);
	for (size_t i = 0; i < nwin && rc == 0; i++) {
		rc = eval_window(&r, &w[i]);
		if (rc == 0 && o.progress)
			rc = o.progress(o.progress_ctx, i + 1, nwin);
	}
	if (rc == 0 && r.a.n == 0)
		rc = tp_error_set(TP_EINVAL, "no token was scored");
	if (rc < 0)
		goto done;
	*out = (tp_eval_result){ .mode = o.mode, .ctx = o.ctx, .stride = o.stride,
				 .tokens = r.len - (o.bos >= 0) };
	finish(&r, nwin, out);
done:
	free(w);
	free(r.stream);
	free(r.logits);
	free(r.logits_ref);
	free(r.a.kls);
	tp_kv_free(r.kv);
	tp_kv_free(r.kv_ref);
	return rc;
}

/* The q-quantile of sorted v[n] (n > 0), linear interpolation. */
static double quantile(const double *v, size_t n, double q)
{
	double at = q * (double)(n - 1);
	size_t lo = (size_t)at, hi = lo + 1 < n ? lo + 1 : lo;
	return v[lo] + (at - (double)lo) * (v[hi] - v[lo]);
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

int tp_runtime_eval_speed(const tp_model *m, const int32_t *ids, size_t n_prefill,
			  size_t n_decode, tp_speed_result *out)
{
	tp_kv *kv = NULL;
	float *logits = malloc(m->cfg.vocab * sizeof(float));
	double *step = malloc((n_decode ? n_decode : 1) * sizeof(double));
	int rc;
	if (!logits || !step) {
		rc = tp_error_set(TP_ENOMEM, "out of memory");
		goto done;
	}
	if (n_prefill == 0) {
		rc = tp_error_set(TP_EINVAL, "nothing to prefill");
		goto done;
	}
	if ((rc = tp_kv_new(&kv, m, n_prefill + n_decode, n_prefill)) < 0)
		goto done;
	double t0 = now_s();
	if ((rc = tp_model_forward(m, kv, ids, n_prefill, n_prefill - 1, logits)) < 0)
		goto done;
	double t1 = now_s(), t = t1;
	for (size_t i = 0; i < n_decode && rc == 0; i++) {
		rc = tp_model_forward(m, kv, ids + n_prefill + i, 1, 0, logits);
		double t_end = now_s();
		step[i] = t_end - t;
		t = t_end;
	}
	double t2 = t;
	if (rc < 0)
		goto done;
	*out = (tp_speed_result){ n_prefill, n_decode, (double)n_prefill / (t1 - t0),
				  n_decode ? (double)n_decode / (t2 - t1) : 0, 0, 0, 0, 0 };
	if (n_decode) {
		qsort(step, n_decode, sizeof(*step), cmp_double);
		out->latency_p50_ms = 1e3 * quantile(step, n_decode, 0.50);
		out->latency_p95_ms = 1e3 * quantile(step, n_decode, 0.95);
		out->latency_p99_ms = 1e3 * quantile(step, n_decode, 0.99);
		out->latency_mean_ms = 1e3 * (t2 - t1) / (double)n_decode;
	}
done:
	tp_kv_free(kv);
	free(logits);
	free(step);
	return rc;
}
