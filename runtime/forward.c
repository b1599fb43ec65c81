/* The transformer forward pass with a KV cache, fp32 throughout. */
#include "runtime_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Multiply-adds of attention below which one thread does it all. */
#define ATTN_MIN_PARALLEL (128u << 10)
/* Floats touched by a per-token step (norm, RoPE, SiLU, residual add) below
 * which one thread does it all: a decoded token's steps cost less than
 * waking the pool. */
#define ROWS_MIN_PARALLEL (16u << 10)

struct tp_kv {
	const tp_model *m;
	size_t max_ctx, max_batch, pos;
	float *k, *v;       /* [layer][kv_head][max_ctx][head_dim] */
	float *inv_freq;    /* [head_dim / 2] */
	/* scratch for one batch */
	float *x, *xn, *q, *kb, *vb, *att, *g, *u, *tmp;
	float *scores;      /* [heads][max_ctx] */
	float *arena;
};

/* Carve the scratch buffers out of one allocation. */
static int kv_alloc(tp_kv *kv, const tp_model_config *c)
{
	size_t B = kv->max_batch, qd = c->heads * c->head_dim, kvd = c->kv_heads * c->head_dim;
	size_t sizes[] = { B * c->hidden, B * c->hidden, B * qd, B * kvd, B * kvd, B * qd,
			   B * c->intermediate, B * c->intermediate, B * c->hidden,
			   c->heads * kv->max_ctx, c->head_dim / 2 };
	float **slots[] = { &kv->x, &kv->xn, &kv->q, &kv->kb, &kv->vb, &kv->att, &kv->g,
			    &kv->u, &kv->tmp, &kv->scores, &kv->inv_freq };
	size_t total = 0, cache, cache_bytes;
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
		if (!tp_add_ok(total, sizes[i], &total))
			return tp_error_set(TP_ETOOBIG, "batch too large");
	if (!tp_mul_ok(c->layers * kvd, kv->max_ctx, &cache) ||
	    !tp_mul_ok(cache, sizeof(float), &cache_bytes) || total > SIZE_MAX / sizeof(float))
		return tp_error_set(TP_ETOOBIG, "KV cache of %zu positions too large", kv->max_ctx);
	kv->arena = malloc(total * sizeof(float));
	kv->k = malloc(cache_bytes);
	kv->v = malloc(cache_bytes);
	if (!kv->arena || !kv->k || !kv->v)
		return tp_error_set(TP_ENOMEM, "out of memory for a KV cache");
	float *p = kv->arena;
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		*slots[i] = p;
		p += sizes[i];
	}
	return 0;
}

/*
 * inv_freq as HF computes it (fp32 exponent and reciprocal). Llama-3's
 * scaling keeps short wavelengths, divides long ones by the factor and
 * blends linearly in between.
 */
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

int tp_kv_new(tp_kv **out, const tp_model *m, size_t max_ctx, size_t max_batch)
{
	const tp_model_config *c = &m->cfg;
	if (max_ctx == 0 || max_batch == 0 || max_ctx > (1u << 24))
		return tp_error_set(TP_EINVAL, "bad context size %zu", max_ctx);
	if (c->sliding_window && max_ctx > c->sliding_window)
		return tp_error_set(TP_EUNSUPPORTED, "context %zu exceeds the sliding window "
				    "(%zu), which is not implemented", max_ctx, c->sliding_window);
	tp_kv *kv = calloc(1, sizeof(*kv));
	if (!kv)
		return tp_error_set(TP_ENOMEM, "out of memory");
	kv->m = m;
	kv->max_ctx = max_ctx;
	kv->max_batch = max_batch < max_ctx ? max_batch : max_ctx;
	int rc = kv_alloc(kv, c);
	if (rc < 0) {
		tp_kv_free(kv);
		return rc;
	}
	rope_frequencies(c, kv->inv_freq);
	*out = kv;
	return 0;
}

void tp_kv_free(tp_kv *kv)
{
	if (!kv)
		return;
	free(kv->arena);
	free(kv->k);
	free(kv->v);
	free(kv);
}

void tp_kv_reset(tp_kv *kv)
{
	kv->pos = 0;
}

size_t tp_kv_pos(const tp_kv *kv)
{
	return kv->pos;
}

static void rms_norm(const float *x, const float *w, size_t n, size_t dim, double eps,
		     float *out)
{
	for (size_t t = 0; t < n; t++) {
		const float *xr = x + t * dim;
		float *o = out + t * dim;
		double ss = 0;
		for (size_t i = 0; i < dim; i++)
			ss += (double)xr[i] * xr[i];
		float r = (float)(1.0 / sqrt((float)(ss / (double)dim) + eps));
		for (size_t i = 0; i < dim; i++)
			o[i] = w[i] * (xr[i] * r);
	}
}

/* HF rotate-half: pairs (i, i + d/2) of each head rotate by pos * inv_freq[i]. */
static void rope(const tp_kv *kv, float *v, size_t n, size_t nheads, size_t pos0)
{
	const tp_model_config *c = &kv->m->cfg;
	size_t hd = c->head_dim, half = hd / 2;
	for (size_t t = 0; t < n; t++) {
		double scale = c->rope_scaling == TP_ROPE_SCALING_LINEAR ? c->rope_factor : 1.0;
		float pos = (float)((double)(pos0 + t) / scale);
		for (size_t i = 0; i < half; i++) {
			float ang = pos * kv->inv_freq[i], cs = cosf(ang), sn = sinf(ang);
			for (size_t h = 0; h < nheads; h++) {
				float *p = v + (t * nheads + h) * hd;
				float a = p[i], b = p[i + half];
				p[i] = a * cs - b * sn;
				p[i + half] = b * cs + a * sn;
			}
		}
	}
}

/* Eight partial sums let the compiler vectorize without -ffast-math. */
static float dot_portable(const float *a, const float *b, size_t n)
{
	float s[8] = { 0 };
	size_t i = 0;
	for (; i + 8 <= n; i += 8)
		for (size_t j = 0; j < 8; j++)
			s[j] += a[i + j] * b[i + j];
	float r = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
	for (; i < n; i++)
		r += a[i] * b[i];
	return r;
}

static void axpy_portable(float w, const float *x, float *y, size_t n)
{
	for (size_t i = 0; i < n; i++)
		y[i] += w * x[i];
}

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define AVX2_TARGET __attribute__((target("avx2,fma")))

AVX2_TARGET static float dot_avx2(const float *a, const float *b, size_t n)
{
	__m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
	size_t i = 0;
	for (; i + 16 <= n; i += 16) {
		s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
		s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
	}
	float lanes[8];
	_mm256_storeu_ps(lanes, _mm256_add_ps(s0, s1));
	float r = ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) +
		  ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
	for (; i < n; i++)
		r += a[i] * b[i];
	return r;
}

AVX2_TARGET static void axpy_avx2(float w, const float *x, float *y, size_t n)
{
	__m256 vw = _mm256_set1_ps(w);
	size_t i = 0;
	for (; i + 8 <= n; i += 8)
		_mm256_storeu_ps(y + i, _mm256_fmadd_ps(vw, _mm256_loadu_ps(x + i),
							_mm256_loadu_ps(y + i)));
	for (; i < n; i++)
		y[i] += w * x[i];
}
#endif

typedef struct attn_kernels {
	float (*dot)(const float *a, const float *b, size_t n);
	void (*axpy)(float w, const float *x, float *y, size_t n);
} attn_kernels;

static attn_kernels choose_attn(void)
{
#if defined(__x86_64__) || defined(__i386__)
	if (tp_runtime_use_avx2())
		return (attn_kernels){ dot_avx2, axpy_avx2 };
#endif
	return (attn_kernels){ dot_portable, axpy_portable };
}

typedef struct attn_job {
	tp_kv *kv;
	size_t layer, n, pos0;
	attn_kernels k;
} attn_job;

/* Causal attention of all n queries of one head over the cache. */
static void attn_head(void *ctx, size_t h, size_t nheads)
{
	const attn_job *j = ctx;
	tp_kv *kv = j->kv;
	const tp_model_config *c = &kv->m->cfg;
	size_t hd = c->head_dim, g = h / (nheads / c->kv_heads);
	size_t base = ((j->layer * c->kv_heads) + g) * kv->max_ctx * hd;
	const float *K = kv->k + base, *V = kv->v + base;
	float *s = kv->scores + h * kv->max_ctx, scale = 1.0f / sqrtf((float)hd);
	for (size_t t = 0; t < j->n; t++) {
		const float *q = kv->q + (t * nheads + h) * hd;
		float *o = kv->att + (t * nheads + h) * hd, mx = -INFINITY;
		size_t len = j->pos0 + t + 1;
		for (size_t p = 0; p < len; p++) {
			s[p] = j->k.dot(q, K + p * hd, hd) * scale;
			mx = s[p] > mx ? s[p] : mx;
		}
		double sum = 0;
		for (size_t p = 0; p < len; p++)
			sum += s[p] = expf(s[p] - mx);
		float inv = (float)(1.0 / sum);
		memset(o, 0, hd * sizeof(float));
		for (size_t p = 0; p < len; p++)
			j->k.axpy(s[p] * inv, V + p * hd, o, hd);
	}
}

/* Append tokens t0..t1 of this batch's keys and values to the cache,
 * head-major. */
static void cache_store(tp_kv *kv, size_t layer, size_t t0, size_t t1)
{
	const tp_model_config *c = &kv->m->cfg;
	size_t hd = c->head_dim;
	for (size_t g = 0; g < c->kv_heads; g++) {
		size_t base = ((layer * c->kv_heads) + g) * kv->max_ctx * hd;
		for (size_t t = t0; t < t1; t++) {
			size_t at = base + (kv->pos + t) * hd;
			memcpy(kv->k + at, kv->kb + (t * c->kv_heads + g) * hd, hd * sizeof(float));
			memcpy(kv->v + at, kv->vb + (t * c->kv_heads + g) * hd, hd * sizeof(float));
		}
	}
}

static void add_rows(float *x, const float *d, size_t n)
{
	for (size_t i = 0; i < n; i++)
		x[i] += d[i];
}

/* The per-token steps between the linear layers, split by token over the
 * pool during prefill (serial, they kept one of two threads idle for about
 * a tenth of a prefill). Every token's arithmetic is the same whichever
 * thread does it, so the results do not depend on the split. */
typedef enum step_kind {
	STEP_NORM,      /* xn = rms_norm(x) * w */
	STEP_ROPE_KV,   /* RoPE on q and k, then k and v into the cache */
	STEP_ADD,       /* x += tmp */
	STEP_SILU_MUL,  /* g = silu(g) * u */
} step_kind;

typedef struct step_job {
	const tp_model *m;
	tp_kv *kv;
	step_kind kind;
	size_t layer, n, chunk;
	const float *w; /* STEP_NORM's weights */
} step_job;

static void step_rows(const step_job *j, size_t t0, size_t t1)
{
	const tp_model_config *c = &j->m->cfg;
	tp_kv *kv = j->kv;
	size_t h = c->hidden, im = c->intermediate, nt = t1 - t0;
	switch (j->kind) {
	case STEP_NORM:
		rms_norm(kv->x + t0 * h, j->w, nt, h, c->rms_eps, kv->xn + t0 * h);
		break;
	case STEP_ROPE_KV:
		rope(kv, kv->q + t0 * c->heads * c->head_dim, nt, c->heads, kv->pos + t0);
		rope(kv, kv->kb + t0 * c->kv_heads * c->head_dim, nt, c->kv_heads, kv->pos + t0);
		cache_store(kv, j->layer, t0, t1);
		break;
	case STEP_ADD:
		add_rows(kv->x + t0 * h, kv->tmp + t0 * h, nt * h);
		break;
	case STEP_SILU_MUL:
		for (size_t i = t0 * im; i < t1 * im; i++)
			kv->g[i] = kv->g[i] / (1.0f + expf(-kv->g[i])) * kv->u[i];
		break;
	}
}

static void step_task(void *ctx, size_t i, size_t ntasks)
{
	(void)ntasks;
	const step_job *j = ctx;
	size_t t0 = i * j->chunk, t1 = t0 + j->chunk < j->n ? t0 + j->chunk : j->n;
	step_rows(j, t0, t1);
}

static void step(const tp_model *m, tp_kv *kv, step_kind kind, size_t layer, size_t n,
		 const float *w)
{
	const tp_model_config *c = &m->cfg;
	step_job j = { m, kv, kind, layer, n, n, w };
	size_t width = kind == STEP_SILU_MUL ? c->intermediate : c->hidden;
	unsigned threads = tp_pool_threads(m->pool);
	if (threads == 1 || n < 2 || n * width < ROWS_MIN_PARALLEL) {
		step_rows(&j, 0, n);
		return;
	}
	/* A few chunks per thread, so a thread that starts late takes fewer. */
	size_t tasks = (size_t)threads * 4 < n ? (size_t)threads * 4 : n;
	j.chunk = (n + tasks - 1) / tasks;
	tp_pool_run(m->pool, (n + j.chunk - 1) / j.chunk, step_task, &j);
}

static void attention_block(const tp_model *m, tp_kv *kv, size_t l, size_t n)
{
	const tp_model_config *c = &m->cfg;
	tp_linear *const *lin = m->linear + l * LIN_PER_LAYER;
	step(m, kv, STEP_NORM, l, n, m->norms + 2 * l * c->hidden);
	tp_linear_forward(lin[LIN_Q], kv->xn, n, kv->q, m->pool);
	tp_linear_forward(lin[LIN_K], kv->xn, n, kv->kb, m->pool);
	tp_linear_forward(lin[LIN_V], kv->xn, n, kv->vb, m->pool);
	step(m, kv, STEP_ROPE_KV, l, n, NULL);
	attn_job j = { kv, l, n, kv->pos, choose_attn() };
	/* Decoding a token attends over little: threads would only add latency. */
	size_t work = n * (kv->pos + n) * c->heads * c->head_dim;
	tp_pool_run(work < ATTN_MIN_PARALLEL ? NULL : m->pool, c->heads, attn_head, &j);
	tp_linear_forward(lin[LIN_O], kv->att, n, kv->tmp, m->pool);
	step(m, kv, STEP_ADD, l, n, NULL);
}

static void mlp_block(const tp_model *m, tp_kv *kv, size_t l, size_t n)
{
	const tp_model_config *c = &m->cfg;
	tp_linear *const *lin = m->linear + l * LIN_PER_LAYER;
	step(m, kv, STEP_NORM, l, n, m->norms + (2 * l + 1) * c->hidden);
	tp_linear_forward(lin[LIN_GATE], kv->xn, n, kv->g, m->pool);
	tp_linear_forward(lin[LIN_UP], kv->xn, n, kv->u, m->pool);
	step(m, kv, STEP_SILU_MUL, l, n, NULL);
	tp_linear_forward(lin[LIN_DOWN], kv->g, n, kv->tmp, m->pool);
	step(m, kv, STEP_ADD, l, n, NULL);
}

/* One batch of at most max_batch tokens. */
static void forward_batch(const tp_model *m, tp_kv *kv, const int32_t *ids, size_t n,
			  size_t logits_from, float *logits)
{
	const tp_model_config *c = &m->cfg;
	for (size_t t = 0; t < n; t++)
		tp_model_embed_row(m, ids[t], kv->x + t * c->hidden);
	for (size_t l = 0; l < c->layers; l++) {
		attention_block(m, kv, l, n);
		mlp_block(m, kv, l, n);
	}
	kv->pos += n;
	if (logits_from >= n)
		return;
	size_t rows = n - logits_from;
	rms_norm(kv->x + logits_from * c->hidden, m->norms + 2 * c->layers * c->hidden, rows,
		 c->hidden, c->rms_eps, kv->xn);
	tp_linear_forward(m->linear[m->nlinear - 1], kv->xn, rows, logits, m->pool);
}

int tp_model_forward(const tp_model *m, tp_kv *kv, const int32_t *ids, size_t n,
		     size_t logits_from, float *logits)
{
	if (kv->m != m)
		return tp_error_set(TP_EINVAL, "KV cache belongs to another model");
	if (n > kv->max_ctx - kv->pos)
		return tp_error_set(TP_ETOOBIG, "%zu tokens overflow the %zu-position KV cache",
				    n, kv->max_ctx);
	for (size_t i = 0; i < n; i++)
		if (ids[i] < 0 || (size_t)ids[i] >= m->cfg.vocab)
			return tp_error_set(TP_EINVAL, "token id %d outside the vocabulary",
					    (int)ids[i]);
	for (size_t done = 0; done < n;) {
		size_t b = n - done < kv->max_batch ? n - done : kv->max_batch;
		size_t from = logits_from > done ? logits_from - done : 0;
		float *out = NULL;
		if (from < b)
			out = logits + (done + from - logits_from) * m->cfg.vocab;
		forward_batch(m, kv, ids + done, b, from, out);
		done += b;
	}
	return 0;
}

int tp_model_embed(const tp_model *m, const int32_t *ids, size_t n, float *x)
{
	for (size_t i = 0; i < n; i++)
		if (ids[i] < 0 || (size_t)ids[i] >= m->cfg.vocab)
			return tp_error_set(TP_EINVAL, "token id %d outside the vocabulary",
					    (int)ids[i]);
	for (size_t t = 0; t < n; t++)
		tp_model_embed_row(m, ids[t], x + t * m->cfg.hidden);
	return 0;
}

int tp_model_forward_layers(const tp_model *m, tp_kv *kv, size_t first, size_t last, float *x,
			    size_t n)
{
	const tp_model_config *c = &m->cfg;
	if (kv->m != m)
		return tp_error_set(TP_EINVAL, "KV cache belongs to another model");
	if (first > last || last > c->layers)
		return tp_error_set(TP_EINVAL, "layers %zu..%zu of %zu", first, last, c->layers);
	if (n > kv->max_batch || n > kv->max_ctx - kv->pos)
		return tp_error_set(TP_ETOOBIG, "%zu tokens overflow the KV cache or its batch", n);
	memcpy(kv->x, x, n * c->hidden * sizeof(float));
	for (size_t l = first; l < last; l++) {
		attention_block(m, kv, l, n);
		mlp_block(m, kv, l, n);
	}
	kv->pos += n;
	memcpy(x, kv->x, n * c->hidden * sizeof(float));
	return 0;
}

void tp_runtime_log_softmax(const float *logits, size_t n, float *out)
{
	float mx = -INFINITY;
	for (size_t i = 0; i < n; i++)
		mx = logits[i] > mx ? logits[i] : mx;
	double sum = 0;
	for (size_t i = 0; i < n; i++)
		sum += exp((double)logits[i] - mx);
	double lse = mx + log(sum);
	for (size_t i = 0; i < n; i++)
		out[i] = (float)((double)logits[i] - lse);
}
