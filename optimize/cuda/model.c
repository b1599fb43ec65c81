/*
 * The model on the GPU: runtime/forward.c's forward pass step for step
 * (RMSNorm, q/k/v, RoPE, KV cache, causal GQA attention, o, SwiGLU MLP,
 * final norm, lm_head) with the kernels of kernels.cu, and the perplexity
 * and speed measurements of runtime/eval.c around it.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime_api.h>

#include "host.h"
/* struct tp_model: the final norm has no public accessor. */
#include "runtime_internal.h"

struct tp_cuda_model {
	tp_model_config cfg;
	float *embed;    /* device [vocab][hidden] fp32 */
	float *norms;    /* device [2 * layers + 1][hidden] */
	float *inv_freq; /* device [head_dim / 2] */
	size_t nlinear;
	tp_linear **linear; /* CUDA layers, tp_model_linear order */
	uint64_t weight_bytes;
};

struct tp_cuda_kv {
	const tp_cuda_model *g;
	size_t max_ctx, max_batch, pos;
	float *k, *v; /* device [layer][kv_head][max_ctx][head_dim] */
	float *x, *xn, *q, *kb, *vb, *att, *gt, *u, *tmp, *logits; /* device scratch */
	int32_t *ids;
	void *arena;
};

/* rope_frequencies of forward.c: HF's inv_freq, Llama-3 scaling. */
static void rope_frequencies(const tp_model_config *c, float *inv_freq)
{
	const double pi = 3.14159265358979323846;
	for (size_t i = 0; i < c->head_dim / 2; i++) {
		float f = 1.0f / powf((float)c->rope_theta, (float)(2 * i) / (float)c->head_dim);
		if (c->rope_scaling == TP_ROPE_SCALING_LLAMA3) {
			double wavelen = 2 * pi / f, old = c->rope_original_max;
			double lo = c->rope_low_freq_factor, hi = c->rope_high_freq_factor;
			if (wavelen > old / lo) {
				f = (float)(f / c->rope_factor);
			} else if (wavelen >= old / hi) {
				double smooth = (old / wavelen - lo) / (hi - lo);
				f = (float)((1 - smooth) * f / c->rope_factor + smooth * f);
			}
		}
		inv_freq[i] = f;
	}
}

void tp_cuda_model_free(tp_cuda_model *g)
{
	if (!g)
		return;
	for (size_t i = 0; g->linear && i < g->nlinear; i++)
		tp_linear_free(g->linear[i]);
	free(g->linear);
	cudaFree(g->embed);
	cudaFree(g->norms);
	cudaFree(g->inv_freq);
	free(g);
}

const tp_model_config *tp_cuda_model_config(const tp_cuda_model *g)
{
	return &g->cfg;
}

uint64_t tp_cuda_model_weight_bytes(const tp_cuda_model *g)
{
	return g->weight_bytes;
}

/* The embedding as fp32 rows (tp_model_embed widens bf16/fp16), uploaded a
 * chunk of ids at a time. */
static int upload_embed(tp_cuda_model *g, const tp_model *m)
{
	size_t V = g->cfg.vocab, H = g->cfg.hidden, chunk = 1024, cells;
	int32_t *ids = malloc(chunk * sizeof(int32_t));
	float *rows = malloc(chunk * H * sizeof(float));
	int rc = 0, e = 0;
	if (!ids || !rows) {
		rc = tp_error_set(TP_ENOMEM, "out of memory");
		goto done;
	}
	if (!tp_mul_ok(V, H, &cells) || cells > SIZE_MAX / sizeof(float)) {
		rc = tp_error_set(TP_ETOOBIG, "embedding too large");
		goto done;
	}
	if ((e = cudaMalloc((void **)&g->embed, cells * sizeof(float))))
		goto done;
	for (size_t i0 = 0; i0 < V && rc == 0; i0 += chunk) {
		size_t k = V - i0 < chunk ? V - i0 : chunk;
		for (size_t i = 0; i < k; i++)
			ids[i] = (int32_t)(i0 + i);
		if ((rc = tp_model_embed(m, ids, k, rows)) < 0)
			break;
		if ((e = cudaMemcpy(g->embed + i0 * H, rows, k * H * sizeof(float),
				    cudaMemcpyHostToDevice)))
			break;
	}
	g->weight_bytes += cells * sizeof(float);
done:
	free(ids);
	free(rows);
	return e ? tp_cuda_fail(e, "uploading the embedding") : rc;
}

int tp_cuda_model_new(tp_cuda_model **out, const tp_model *m)
{
	int rc = tp_cuda_init(), e = 0;
	if (rc < 0)
		return rc;
	const tp_model_config *c = tp_model_get_config(m);
	size_t nnorm = (2 * c->layers + 1) * c->hidden, half = c->head_dim / 2;
	float *freq = malloc((half ? half : 1) * sizeof(float));
	tp_cuda_model *g = calloc(1, sizeof(*g));
	if (!g || !freq) {
		free(g);
		free(freq);
		return tp_error_set(TP_ENOMEM, "out of memory");
	}
	g->cfg = *c;
	g->nlinear = tp_model_linear_count(m);
	if (c->heads % c->kv_heads || c->head_dim > 256) {
		rc = tp_error_set(TP_EUNSUPPORTED, "CUDA attention: %zu heads over %zu KV heads of "
				  "%zu dims", c->heads, c->kv_heads, c->head_dim);
		goto done;
	}
	if (!(g->linear = calloc(g->nlinear, sizeof(*g->linear)))) {
		rc = tp_error_set(TP_ENOMEM, "out of memory");
		goto done;
	}
	if ((rc = upload_embed(g, m)) < 0)
		goto done;
	rope_frequencies(c, freq);
	if ((e = cudaMalloc((void **)&g->norms, nnorm * sizeof(float))) ||
	    (e = cudaMemcpy(g->norms, m->norms, nnorm * sizeof(float), cudaMemcpyHostToDevice)) ||
	    (e = cudaMalloc((void **)&g->inv_freq, (half ? half : 1) * sizeof(float))) ||
	    (e = cudaMemcpy(g->inv_freq, freq, half * sizeof(float), cudaMemcpyHostToDevice)))
		goto done;
	g->weight_bytes += nnorm * sizeof(float);
	for (size_t i = 0; i < g->nlinear; i++) {
		if ((rc = tp_cuda_linear_new_pool(&g->linear[i], tp_model_linear(m, i),
						  tp_model_pool(m))) < 0) {
			rc = tp_error_wrap(rc, "%s", tp_model_linear_name(m, i));
			goto done;
		}
		const tp_linear_ops *ops = g->linear[i]->ops;
		g->weight_bytes += ops->weight_bytes(g->linear[i]);
	}
done:
	free(freq);
	if (e)
		rc = tp_cuda_fail(e, "uploading the norms");
	if (rc < 0) {
		tp_cuda_model_free(g);
		return rc;
	}
	*out = g;
	return 0;
}

/* ---- KV cache --------------------------------------------------------------- */

void tp_cuda_kv_free(tp_cuda_kv *kv)
{
	if (!kv)
		return;
	cudaFree(kv->arena);
	cudaFree(kv->k);
	cudaFree(kv->v);
	free(kv);
}

void tp_cuda_kv_reset(tp_cuda_kv *kv)
{
	kv->pos = 0;
}

int tp_cuda_kv_new(tp_cuda_kv **out, const tp_cuda_model *g, size_t max_ctx, size_t max_batch)
{
	const tp_model_config *c = &g->cfg;
	if (max_ctx == 0 || max_batch == 0 || max_ctx > tp_cuda_k_attention_max_ctx())
		return tp_error_set(TP_EINVAL, "CUDA KV cache: context %zu (1..%zu)", max_ctx,
				    (size_t)tp_cuda_k_attention_max_ctx());
	if (c->sliding_window && max_ctx > c->sliding_window)
		return tp_error_set(TP_EUNSUPPORTED, "context %zu exceeds the sliding window "
				    "(%zu), which is not implemented", max_ctx, c->sliding_window);
	tp_cuda_kv *kv = calloc(1, sizeof(*kv));
	if (!kv)
		return tp_error_set(TP_ENOMEM, "out of memory");
	kv->g = g;
	kv->max_ctx = max_ctx;
	kv->max_batch = max_batch < max_ctx ? max_batch : max_ctx;
	size_t B = kv->max_batch, qd = c->heads * c->head_dim, kvd = c->kv_heads * c->head_dim;
	size_t sizes[] = {B * c->hidden, B * c->hidden, B * qd, B * kvd, B * kvd, B * qd,
			  B * c->intermediate, B * c->intermediate, B * c->hidden, B * c->vocab,
			  B};
	float *ids_slot = NULL;
	float **slots[] = {&kv->x, &kv->xn, &kv->q, &kv->kb, &kv->vb, &kv->att, &kv->gt,
			   &kv->u, &kv->tmp, &kv->logits, &ids_slot};
	size_t total = 0, cache;
	int e = 0;
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		/* every slot starts 256-byte aligned */
		size_t s = (sizes[i] + 63) / 64 * 64;
		if (!tp_add_ok(total, s, &total)) {
			tp_cuda_kv_free(kv);
			return tp_error_set(TP_ETOOBIG, "batch too large");
		}
	}
	if (!tp_mul_ok(c->layers * kvd, max_ctx, &cache) || cache > SIZE_MAX / sizeof(float) ||
	    total > SIZE_MAX / sizeof(float)) {
		tp_cuda_kv_free(kv);
		return tp_error_set(TP_ETOOBIG, "KV cache of %zu positions too large", max_ctx);
	}
	if ((e = cudaMalloc(&kv->arena, total * sizeof(float))) ||
	    (e = cudaMalloc((void **)&kv->k, cache * sizeof(float))) ||
	    (e = cudaMalloc((void **)&kv->v, cache * sizeof(float)))) {
		tp_cuda_kv_free(kv);
		return tp_cuda_fail(e, "allocating a KV cache");
	}
	float *p = kv->arena;
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		*slots[i] = p;
		p += (sizes[i] + 63) / 64 * 64;
	}
	kv->ids = (int32_t *)(void *)ids_slot; /* B int32 in a slot of B floats */
	*out = kv;
	return 0;
}

/* ---- forward ------------------------------------------------------------------ */

static int lin(const tp_cuda_model *g, size_t i, const float *x, size_t n, float *y)
{
	const float *bias = NULL;
	const tp_cuda_wfmt *f = tp_cuda_linear_wfmt(g->linear[i], &bias);
	return tp_cuda_k_linear(f, bias, x, n, y, f->rows);
}

enum { LQ, LK, LV, LO, LGATE, LUP, LDOWN, LPER };

static int attention_block(const tp_cuda_model *g, tp_cuda_kv *kv, size_t l, size_t n)
{
	const tp_model_config *c = &g->cfg;
	size_t base = l * LPER, hd = c->head_dim;
	size_t layer_off = l * c->kv_heads * kv->max_ctx * hd;
	double pos_div = c->rope_scaling == TP_ROPE_SCALING_LINEAR ? c->rope_factor : 1.0;
	int e;
	if ((e = tp_cuda_k_rms_norm(kv->x, g->norms + 2 * l * c->hidden, n, c->hidden, c->rms_eps,
				    kv->xn)) ||
	    (e = lin(g, base + LQ, kv->xn, n, kv->q)) || (e = lin(g, base + LK, kv->xn, n, kv->kb)) ||
	    (e = lin(g, base + LV, kv->xn, n, kv->vb)) ||
	    (e = tp_cuda_k_rope(kv->q, n, c->heads, hd, kv->pos, pos_div, g->inv_freq)) ||
	    (e = tp_cuda_k_rope(kv->kb, n, c->kv_heads, hd, kv->pos, pos_div, g->inv_freq)) ||
	    (e = tp_cuda_k_cache_store(kv->k + layer_off, kv->v + layer_off, kv->kb, kv->vb, n,
				       c->kv_heads, hd, kv->max_ctx, kv->pos)) ||
	    (e = tp_cuda_k_attention(kv->q, kv->k + layer_off, kv->v + layer_off, kv->att, n,
				     c->heads, c->kv_heads, hd, kv->max_ctx, kv->pos)) ||
	    (e = lin(g, base + LO, kv->att, n, kv->tmp)) ||
	    (e = tp_cuda_k_add(kv->x, kv->tmp, n * c->hidden)))
		return e;
	return 0;
}

static int mlp_block(const tp_cuda_model *g, tp_cuda_kv *kv, size_t l, size_t n)
{
	const tp_model_config *c = &g->cfg;
	size_t base = l * LPER;
	int e;
	if ((e = tp_cuda_k_rms_norm(kv->x, g->norms + (2 * l + 1) * c->hidden, n, c->hidden,
				    c->rms_eps, kv->xn)) ||
	    (e = lin(g, base + LGATE, kv->xn, n, kv->gt)) ||
	    (e = lin(g, base + LUP, kv->xn, n, kv->u)) ||
	    (e = tp_cuda_k_swiglu(kv->gt, kv->u, n * c->intermediate)) ||
	    (e = lin(g, base + LDOWN, kv->gt, n, kv->tmp)) ||
	    (e = tp_cuda_k_add(kv->x, kv->tmp, n * c->hidden)))
		return e;
	return 0;
}

static int forward_batch(const tp_cuda_model *g, tp_cuda_kv *kv, const int32_t *ids, size_t n,
			 size_t logits_from, float *logits)
{
	const tp_model_config *c = &g->cfg;
	int e;
	if ((e = cudaMemcpy(kv->ids, ids, n * sizeof(int32_t), cudaMemcpyHostToDevice)) ||
	    (e = tp_cuda_k_embed(g->embed, kv->ids, n, c->hidden, kv->x)))
		return e;
	for (size_t l = 0; l < c->layers; l++)
		if ((e = attention_block(g, kv, l, n)) || (e = mlp_block(g, kv, l, n)))
			return e;
	kv->pos += n;
	if (logits_from >= n)
		return cudaDeviceSynchronize();
	size_t rows = n - logits_from;
	if ((e = tp_cuda_k_rms_norm(kv->x + logits_from * c->hidden,
				    g->norms + 2 * c->layers * c->hidden, rows, c->hidden,
				    c->rms_eps, kv->xn)) ||
	    (e = lin(g, g->nlinear - 1, kv->xn, rows, kv->logits)) ||
	    (e = cudaMemcpy(logits, kv->logits, rows * c->vocab * sizeof(float),
			    cudaMemcpyDeviceToHost)))
		return e;
	return 0;
}

int tp_cuda_model_forward(const tp_cuda_model *g, tp_cuda_kv *kv, const int32_t *ids, size_t n,
			  size_t logits_from, float *logits)
{
	if (kv->g != g)
		return tp_error_set(TP_EINVAL, "KV cache belongs to another model");
	if (n > kv->max_ctx - kv->pos)
		return tp_error_set(TP_ETOOBIG, "%zu tokens overflow the %zu-position KV cache", n,
				    kv->max_ctx);
	for (size_t i = 0; i < n; i++)
		if (ids[i] < 0 || (size_t)ids[i] >= g->cfg.vocab)
			return tp_error_set(TP_EINVAL, "token id %d outside the vocabulary",
					    (int)ids[i]);
	for (size_t done = 0; done < n;) {
		size_t b = n - done < kv->max_batch ? n - done : kv->max_batch;
		size_t from = logits_from > done ? logits_from - done : 0;
		float *o = NULL;
		if (from < b)
			o = logits + (done + from - logits_from) * g->cfg.vocab;
		int e = forward_batch(g, kv, ids + done, b, from, o);
		if (e)
			return tp_cuda_fail(e, "forward pass");
		done += b;
	}
	return 0;
}

/* ---- perplexity and speed (runtime/eval.c's rules) ----------------------------- */

typedef struct window {
	size_t begin, len, first, last;
} window;

static size_t count_windows(const tp_eval_opts *o, size_t len, window *w, size_t max)
{
	size_t ctx = o->ctx, n = 0;
	if (o->mode == TP_PPL_MODE_LLAMACPP) {
		for (size_t b = 0; b + ctx <= len; b += ctx, n++)
			if (w && n < max)
				w[n] = (window){b, ctx - 1, ctx / 2, ctx - 2};
		return n;
	}
	size_t prev_end = 0;
	for (size_t b = 0;; b += o->stride, n++) {
		size_t end = b + ctx < len ? b + ctx : len, trg = end - prev_end;
		size_t wlen = end - b, first_label = wlen - trg > 1 ? wlen - trg : 1;
		prev_end = end;
		if (wlen < 2)
			return n;
		if (w && n < max)
			w[n] = (window){b, wlen, first_label - 1, wlen - 2};
		if (end == len)
			return n + 1;
	}
}

/* KL of one scored row, as runtime/eval.c's score_row: lp and lp_ref are
 * log-probs; the top tokens' agreement into *same. */
static double kl_row(const float *lp, const float *lp_ref, size_t V, bool *same)
{
	double kl = 0;
	size_t top = 0, top_ref = 0;
	for (size_t i = 0; i < V; i++) {
		kl += exp((double)lp_ref[i]) * ((double)lp_ref[i] - lp[i]);
		top = lp[i] > lp[top] ? i : top;
		top_ref = lp_ref[i] > lp_ref[top_ref] ? i : top_ref;
	}
	*same = top == top_ref;
	return kl;
}

static int cmp_float(const void *a, const void *b)
{
	float x = *(const float *)a, y = *(const float *)b;
	return (x > y) - (x < y);
}

/* The KL statistics of runtime/eval.c's finish over kls[n] (sorted here). */
static void kl_finish(float *kls, size_t scored, double kl, double kl2, size_t same,
		      tp_eval_result *out)
{
	double n = (double)scored, klm = kl / n, klv = kl2 / n - klm * klm;
	double p = (double)same / n;
	qsort(kls, scored, sizeof(float), cmp_float);
	double at = 0.99 * (n - 1);
	size_t lo = (size_t)at, hi = lo + 1 < scored ? lo + 1 : lo;
	out->has_kl = true;
	out->kl_mean = klm;
	out->kl_err = scored > 1 && klv > 0 ? sqrt(klv / (n - 1)) : 0;
	out->kl_p99 = kls[lo] + (at - (double)lo) * (kls[hi] - kls[lo]);
	out->kl_max = kls[scored - 1];
	out->same_top_pct = 100.0 * p;
	out->same_top_err = scored > 1 ? 100.0 * sqrt(p * (1 - p) / (n - 1)) : 0;
}

/* One scoring pass on the GPU; with ref, KL against its log-probs (read
 * back a window at a time, as on the CPU). Logits come back to the host and
 * are scored there in double, as runtime/eval.c scores them: the same
 * arithmetic, so GPU and CPU figures differ only by the forward pass. */
static int eval_run(const tp_cuda_model *g, const tp_eval_ref *ref, const int32_t *ids, size_t n,
		    const tp_eval_opts *opts, tp_eval_result *out)
{
	tp_eval_opts o = *opts;
	size_t V = g->cfg.vocab, len, cells, nwin = 0, scored = 0, fed = 0, same = 0;
	int32_t *stream = NULL;
	float *logits = NULL, *lp_ref = NULL, *kls = NULL;
	window *w = NULL;
	tp_cuda_kv *kv = NULL;
	double nll = 0, nll2 = 0, seconds = 0, kl = 0, kl2 = 0;
	int rc = 0;
	if (o.ctx == 0)
		o.ctx = 512;
	if (o.stride == 0)
		o.stride = o.ctx / 2;
	if (o.ctx < 4 || o.stride > o.ctx)
		return tp_error_set(TP_EINVAL, "bad context %zu / stride %zu", o.ctx, o.stride);
	if (o.bos >= 0 && (size_t)o.bos >= V)
		return tp_error_set(TP_EINVAL, "BOS %d outside the vocabulary", (int)o.bos);
	if (o.max_tokens && n > o.max_tokens)
		n = o.max_tokens;
	size_t pre = o.bos >= 0 ? 1 : 0;
	if (!(stream = malloc((n + pre) * sizeof(int32_t)))) {
		rc = tp_error_set(TP_ENOMEM, "out of memory");
		goto done;
	}
	if (pre)
		stream[0] = o.bos;
	memcpy(stream + pre, ids, n * sizeof(int32_t));
	len = n + pre;
	if (len < 2 || (o.mode == TP_PPL_MODE_LLAMACPP && len < o.ctx)) {
		rc = tp_error_set(TP_EINVAL, "%zu tokens are too few for a context of %zu", len,
				  o.ctx);
		goto done;
	}
	if (!tp_mul_ok(o.ctx, V, &cells) || cells > SIZE_MAX / sizeof(float)) {
		rc = tp_error_set(TP_ETOOBIG, "context x vocabulary too large");
		goto done;
	}
	nwin = count_windows(&o, len, NULL, 0);
	if (!(w = calloc(nwin ? nwin : 1, sizeof(*w))) || !(logits = malloc(cells * sizeof(float)))) {
		rc = tp_error_set(TP_ENOMEM, "out of memory for logits");
		goto done;
	}
	count_windows(&o, len, w, nwin);
	if (ref) {
		size_t rows = 0;
		for (size_t i = 0; i < nwin; i++)
			rows += w[i].last + 1 - w[i].first;
		if ((rc = tp_runtime_eval_ref_check(ref, V, &o, stream, len, rows)) < 0)
			goto done;
		if (!(lp_ref = malloc(cells * sizeof(float))) ||
		    !(kls = malloc(len * sizeof(float)))) {
			rc = tp_error_set(TP_ENOMEM, "out of memory for logits");
			goto done;
		}
	}
	if ((rc = tp_cuda_kv_new(&kv, g, o.ctx, o.ctx)) < 0)
		goto done;
	for (size_t i = 0; i < nwin && rc == 0; i++) {
		const window *wi = &w[i];
		int32_t first_tok = stream[wi->begin];
		/* llama.cpp starts every window with BOS, replacing a token. */
		if (o.mode == TP_PPL_MODE_LLAMACPP && o.bos >= 0)
			stream[wi->begin] = o.bos;
		double t0 = tp_cuda_now_s();
		tp_cuda_kv_reset(kv);
		rc = tp_cuda_model_forward(g, kv, stream + wi->begin, wi->len, wi->first, logits);
		seconds += tp_cuda_now_s() - t0;
		stream[wi->begin] = first_tok;
		fed += wi->len;
		if (rc == 0 && ref)
			rc = tp_runtime_eval_ref_read(ref, scored, wi->last + 1 - wi->first, lp_ref);
		for (size_t r = wi->first; rc == 0 && r <= wi->last; r++) {
			float *lg = logits + (r - wi->first) * V;
			tp_runtime_log_softmax(lg, V, lg);
			double x = -(double)lg[stream[wi->begin + r + 1]];
			nll += x;
			nll2 += x * x;
			if (ref) {
				bool st;
				double k = kl_row(lg, lp_ref + (r - wi->first) * V, V, &st);
				kl += k;
				kl2 += k * k;
				kls[scored] = (float)k;
				same += st;
			}
			scored++;
		}
		if (rc == 0 && o.progress)
			rc = o.progress(o.progress_ctx, i + 1, nwin);
	}
	if (rc == 0 && scored == 0)
		rc = tp_error_set(TP_EINVAL, "no token was scored");
	if (rc < 0)
		goto done;
	double sn = (double)scored, mean = nll / sn, var = nll2 / sn - mean * mean;
	*out = (tp_eval_result){.mode = o.mode, .ctx = o.ctx, .stride = o.stride,
				.tokens = len - pre, .windows = nwin, .scored = scored,
				.nll_mean = mean, .ppl = exp(mean), .seconds = seconds};
	out->ppl_err = scored > 1 && var > 0 ? out->ppl * sqrt(var / (sn - 1)) : 0;
	out->tokens_per_s = seconds > 0 ? (double)fed / seconds : 0;
	if (ref)
		kl_finish(kls, scored, kl, kl2, same, out);
done:
	tp_cuda_kv_free(kv);
	free(stream);
	free(logits);
	free(lp_ref);
	free(kls);
	free(w);
	return rc;
}

int tp_cuda_eval_perplexity(const tp_cuda_model *g, const int32_t *ids, size_t n,
			    const tp_eval_opts *opts, tp_eval_result *out)
{
	return eval_run(g, NULL, ids, n, opts, out);
}

int tp_cuda_eval_perplexity_ref(const tp_cuda_model *g, const tp_eval_ref *ref,
				const int32_t *ids, size_t n, const tp_eval_opts *opts,
				tp_eval_result *out)
{
	if (!ref)
		return tp_error_set(TP_EINVAL, "no reference log-probs");
	return eval_run(g, ref, ids, n, opts, out);
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

static double quantile(const double *v, size_t n, double q)
{
	double at = q * (double)(n - 1);
	size_t lo = (size_t)at, hi = lo + 1 < n ? lo + 1 : lo;
	return v[lo] + (at - (double)lo) * (v[hi] - v[lo]);
}

int tp_cuda_measure_speed(const tp_cuda_model *g, const int32_t *ids, size_t n_prefill,
			  size_t n_decode, tp_speed_result *out)
{
	tp_cuda_kv *kv = NULL;
	float *logits = malloc(g->cfg.vocab * sizeof(float));
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
	if ((rc = tp_cuda_kv_new(&kv, g, n_prefill + n_decode, n_prefill)) < 0)
		goto done;
	double t0 = tp_cuda_now_s();
	if ((rc = tp_cuda_model_forward(g, kv, ids, n_prefill, n_prefill - 1, logits)) < 0)
		goto done;
	double t1 = tp_cuda_now_s(), t = t1;
	for (size_t i = 0; i < n_decode && rc == 0; i++) {
		rc = tp_cuda_model_forward(g, kv, ids + n_prefill + i, 1, 0, logits);
		double t_end = tp_cuda_now_s();
		step[i] = t_end - t;
		t = t_end;
	}
	if (rc < 0)
		goto done;
	*out = (tp_speed_result){n_prefill, n_decode, (double)n_prefill / (t1 - t0),
				 n_decode ? (double)n_decode / (t - t1) : 0, 0, 0, 0, 0};
	if (n_decode) {
		qsort(step, n_decode, sizeof(*step), cmp_double);
		out->latency_p50_ms = 1e3 * quantile(step, n_decode, 0.50);
		out->latency_p95_ms = 1e3 * quantile(step, n_decode, 0.95);
		out->latency_p99_ms = 1e3 * quantile(step, n_decode, 0.99);
		out->latency_mean_ms = 1e3 * (t - t1) / (double)n_decode;
	}
done:
	tp_cuda_kv_free(kv);
	free(logits);
	free(step);
	return rc;
}
