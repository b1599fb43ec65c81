/*
 * The model on the GPU: runtime/forward.c's forward pass step for step
 * (RMSNorm, q/k/v, RoPE, KV cache, causal GQA attention, o, SwiGLU MLP,
 * final norm, lm_head) with the kernels of kernels.cu; runtime/eval.c scores
 * its logits, and the speed is measured as tp_runtime_eval_speed does.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime_api.h>

#include "host.h"

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
	    (e = cudaMemcpy(g->norms, tp_model_norms(m), nnorm * sizeof(float), cudaMemcpyHostToDevice)) ||
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

/* Shown the device input of layer k (LQ for q/k/v, LGATE for gate/up, LO,
 * LDOWN) of n rows x cols before the products (calibration's captures);
 * returns a cudaError_t as int. */
typedef struct observer {
	int (*fn)(void *ctx, size_t k, const float *x, size_t n, size_t cols);
	void *ctx;
} observer;

static int attention_block(const tp_cuda_model *g, tp_cuda_kv *kv, size_t l, size_t n,
			   const observer *ob)
{
	const tp_model_config *c = &g->cfg;
	size_t base = l * LPER, hd = c->head_dim;
	size_t layer_off = l * c->kv_heads * kv->max_ctx * hd;
	double pos_div = c->rope_scaling == TP_ROPE_SCALING_LINEAR ? c->rope_factor : 1.0;
	int e;
	if ((e = tp_cuda_k_rms_norm(kv->x, g->norms + 2 * l * c->hidden, n, c->hidden, c->rms_eps,
				    kv->xn)) ||
	    (ob && (e = ob->fn(ob->ctx, LQ, kv->xn, n, c->hidden))) ||
	    (e = lin(g, base + LQ, kv->xn, n, kv->q)) || (e = lin(g, base + LK, kv->xn, n, kv->kb)) ||
	    (e = lin(g, base + LV, kv->xn, n, kv->vb)) ||
	    (e = tp_cuda_k_rope(kv->q, n, c->heads, hd, kv->pos, pos_div, g->inv_freq)) ||
	    (e = tp_cuda_k_rope(kv->kb, n, c->kv_heads, hd, kv->pos, pos_div, g->inv_freq)) ||
	    (e = tp_cuda_k_cache_store(kv->k + layer_off, kv->v + layer_off, kv->kb, kv->vb, n,
				       c->kv_heads, hd, kv->max_ctx, kv->pos)) ||
	    (e = tp_cuda_k_attention(kv->q, kv->k + layer_off, kv->v + layer_off, kv->att, n,
				     c->heads, c->kv_heads, hd, kv->max_ctx, kv->pos)) ||
	    (ob && (e = ob->fn(ob->ctx, LO, kv->att, n, c->heads * hd))) ||
	    (e = lin(g, base + LO, kv->att, n, kv->tmp)) ||
	    (e = tp_cuda_k_add(kv->x, kv->tmp, n * c->hidden)))
		return e;
	return 0;
}

static int mlp_block(const tp_cuda_model *g, tp_cuda_kv *kv, size_t l, size_t n,
		     const observer *ob)
{
	const tp_model_config *c = &g->cfg;
	size_t base = l * LPER;
	int e;
	if ((e = tp_cuda_k_rms_norm(kv->x, g->norms + (2 * l + 1) * c->hidden, n, c->hidden,
				    c->rms_eps, kv->xn)) ||
	    (ob && (e = ob->fn(ob->ctx, LGATE, kv->xn, n, c->hidden))) ||
	    (e = lin(g, base + LGATE, kv->xn, n, kv->gt)) ||
	    (e = lin(g, base + LUP, kv->xn, n, kv->u)) ||
	    (e = tp_cuda_k_swiglu(kv->gt, kv->u, n * c->intermediate)) ||
	    (ob && (e = ob->fn(ob->ctx, LDOWN, kv->gt, n, c->intermediate))) ||
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
		if ((e = attention_block(g, kv, l, n, NULL)) || (e = mlp_block(g, kv, l, n, NULL)))
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

/* ---- one block for calibration ---------------------------------------------- */

/* Block b of a CPU model as a one-layer tp_cuda_model (its norms, the
 * inner layers of its captures, no embedding or lm_head) with a cache of
 * max_n positions; the inputs of captured layers come back to the host for
 * their statistics (tp_quant_capture_observe). */
struct tp_cuda_block {
	tp_model *m;
	size_t base;
	tp_cuda_model *g;
	tp_cuda_kv *kv;
	float *host; /* [max_n][widest input] */
};

void tp_cuda_block_free(tp_cuda_block *b)
{
	if (!b)
		return;
	tp_cuda_kv_free(b->kv);
	tp_cuda_model_free(b->g);
	free(b->host);
	free(b);
}

int tp_cuda_block_new(tp_cuda_block **out, tp_model *m, size_t blk, size_t max_n)
{
	int rc = tp_cuda_init(), e = 0;
	if (rc < 0)
		return rc;
	const tp_model_config *c = tp_model_get_config(m);
	size_t H = c->hidden, half = c->head_dim / 2, qd = c->heads * c->head_dim;
	size_t widest = H > qd ? H : qd;
	widest = widest > c->intermediate ? widest : c->intermediate;
	if (blk >= c->layers || max_n == 0)
		return tp_error_set(TP_EINVAL, "block %zu of %zu, %zu positions", blk, c->layers,
				    max_n);
	if (c->heads % c->kv_heads || c->head_dim > 256 || max_n > tp_cuda_k_attention_max_ctx())
		return tp_error_set(TP_EUNSUPPORTED, "CUDA attention: %zu heads over %zu KV heads of "
				    "%zu dims, %zu positions", c->heads, c->kv_heads, c->head_dim,
				    max_n);
	tp_cuda_block *b = calloc(1, sizeof(*b));
	float *freq = malloc((half ? half : 1) * sizeof(float));
	if (!b || !freq || !(b->g = calloc(1, sizeof(*b->g))) ||
	    !(b->host = malloc(max_n * widest * sizeof(float))) ||
	    !(b->g->linear = calloc(LPER, sizeof(*b->g->linear)))) {
		rc = tp_error_set(TP_ENOMEM, "out of memory");
		goto done;
	}
	b->m = m;
	b->base = blk * LPER;
	tp_cuda_model *g = b->g;
	g->cfg = *c;
	g->cfg.layers = 1;
	g->cfg.vocab = 1; /* no logits: the cache's logits slot stays small */
	g->nlinear = LPER;
	rope_frequencies(c, freq);
	/* norms [3][H]: the block's two, then an unused final one */
	if ((e = cudaMalloc((void **)&g->norms, 3 * H * sizeof(float))) ||
	    (e = cudaMemset(g->norms, 0, 3 * H * sizeof(float))) ||
	    (e = cudaMemcpy(g->norms, tp_model_norms(m) + 2 * blk * H, 2 * H * sizeof(float),
			    cudaMemcpyHostToDevice)) ||
	    (e = cudaMalloc((void **)&g->inv_freq, (half ? half : 1) * sizeof(float))) ||
	    (e = cudaMemcpy(g->inv_freq, freq, half * sizeof(float), cudaMemcpyHostToDevice))) {
		rc = tp_cuda_fail(e, "uploading a block's norms");
		goto done;
	}
	for (size_t k = 0; k < LPER; k++) {
		tp_linear *l = tp_quant_capture_inner(tp_model_linear(m, b->base + k));
		if ((rc = tp_cuda_linear_new_pool(&g->linear[k], l, tp_model_pool(m))) < 0) {
			rc = tp_error_wrap(rc, "%s", tp_model_linear_name(m, b->base + k));
			goto done;
		}
	}
	rc = tp_cuda_kv_new(&b->kv, g, max_n, max_n);
done:
	free(freq);
	if (rc < 0) {
		tp_cuda_block_free(b);
		return rc;
	}
	*out = b;
	return 0;
}

/* The observer of a block run: the input of layer k and of those that
 * share it, to their captures. */
static int block_observe(void *ctx, size_t k, const float *x, size_t n, size_t cols)
{
	tp_cuda_block *b = ctx;
	size_t count = k == LQ ? 3 : k == LGATE ? 2 : 1;
	bool any = false;
	for (size_t i = 0; i < count; i++) {
		tp_linear *l = tp_model_linear(b->m, b->base + k + i);
		any |= tp_quant_capture_inner(l) != l;
	}
	if (!any)
		return 0;
	int e = cudaMemcpy(b->host, x, n * cols * sizeof(float), cudaMemcpyDeviceToHost);
	if (e)
		return e;
	for (size_t i = 0; i < count; i++)
		tp_quant_capture_observe(tp_model_linear(b->m, b->base + k + i), b->host, n);
	return 0;
}

int tp_cuda_block_run(tp_cuda_block *b, float *x, size_t n)
{
	const tp_model_config *c = &b->g->cfg;
	observer ob = { block_observe, b };
	int e;
	if (n == 0 || n > b->kv->max_batch)
		return tp_error_set(TP_EINVAL, "%zu rows for a block of %zu", n, b->kv->max_batch);
	tp_cuda_kv_reset(b->kv);
	if ((e = cudaMemcpy(b->kv->x, x, n * c->hidden * sizeof(float), cudaMemcpyHostToDevice)) ||
	    (e = attention_block(b->g, b->kv, 0, n, &ob)) || (e = mlp_block(b->g, b->kv, 0, n, &ob)) ||
	    (e = cudaMemcpy(x, b->kv->x, n * c->hidden * sizeof(float), cudaMemcpyDeviceToHost)))
		return tp_cuda_fail(e, "a calibration block");
	return 0;
}

/* ---- perplexity and speed ----------------------------------------------------- */

/* The GPU forward pass as runtime/eval.c's tp_eval_forward: eval.c cuts
 * the windows and scores the logits (in double, on the host), so the GPU's
 * figures differ from the CPU's only by the forward pass. */
typedef struct gpu_fwd {
	const tp_cuda_model *g;
	tp_cuda_kv *kv;
	size_t cap;
} gpu_fwd;

static int gpu_run(void *ctx, const int32_t *ids, size_t n, size_t logits_from, float *logits)
{
	gpu_fwd *f = ctx;
	if (!f->kv || n > f->cap) {
		tp_cuda_kv_free(f->kv);
		f->kv = NULL;
		int rc = tp_cuda_kv_new(&f->kv, f->g, n, n);
		if (rc < 0)
			return rc;
		f->cap = n;
	}
	tp_cuda_kv_reset(f->kv);
	return tp_cuda_model_forward(f->g, f->kv, ids, n, logits_from, logits);
}

int tp_cuda_eval_perplexity(const tp_cuda_model *g, const int32_t *ids, size_t n,
			    const tp_eval_opts *opts, tp_eval_result *out)
{
	gpu_fwd f = { .g = g };
	tp_eval_forward ef = { g->cfg.vocab, gpu_run, &f };
	int rc = tp_runtime_eval_forward(&ef, NULL, ids, n, opts, out);
	tp_cuda_kv_free(f.kv);
	return rc;
}

int tp_cuda_eval_perplexity_ref(const tp_cuda_model *g, const tp_eval_ref *ref,
				const int32_t *ids, size_t n, const tp_eval_opts *opts,
				tp_eval_result *out)
{
	if (!ref)
		return tp_error_set(TP_EINVAL, "no reference log-probs");
	gpu_fwd f = { .g = g };
	tp_eval_forward ef = { g->cfg.vocab, gpu_run, &f };
	int rc = tp_runtime_eval_forward(&ef, ref, ids, n, opts, out);
	tp_cuda_kv_free(f.kv);
	return rc;
}

int tp_cuda_eval_reference(tp_eval_ref **ref, const tp_cuda_model *g, const int32_t *ids,
			   size_t n, const tp_eval_opts *opts, tp_eval_result *out)
{
	gpu_fwd f = { .g = g };
	tp_eval_forward ef = { g->cfg.vocab, gpu_run, &f };
	int rc = tp_runtime_eval_forward_reference(ref, &ef, ids, n, opts, out);
	tp_cuda_kv_free(f.kv);
	return rc;
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
