/*
 * The default linear layer: fp32 weights repacked into panels of NR output
 * columns ([panel][k][NR]), so the micro-kernel broadcasts one input value
 * and updates NR outputs with contiguous loads. Work is blocked over k (KC)
 * and rows (MC) to stay in cache, and split over panels between threads.
 * The AVX2/FMA kernel is chosen at run time; the portable one is plain C.
 */
#include "tp_runtime.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define TP_HAVE_X86 1
#endif

#define NR 16  /* output columns per panel */
#define MR 6   /* rows per micro-tile: 6 x 2 ymm accumulators */
#define KC 256 /* k block: one panel slice is 16 KiB */
#define MC 48  /* rows per cache block */
#define MIN_TASK_FMA (256u << 10) /* ~0.1 ms of work: worth a thread */

typedef struct dense {
	tp_linear base;
	size_t npanels;
	float *packed; /* npanels * in * NR, zero-padded */
	float *bias;   /* npanels * NR, zeros when the layer has none */
} dense;

/* c[mr][NR] (row stride ldc) = init or c, plus x[mr][kc] (stride ldx) * p. */
typedef void (*tile_fn)(size_t mr, const float *x, size_t ldx, const float *p,
			size_t kc, float *c, size_t ldc, const float *init);

/* GCC/Clang vectors: SSE2 on any x86-64, NEON on arm64, scalar elsewhere. */
typedef float v4f __attribute__((vector_size(16)));

static inline v4f ld4(const float *p)
{
	v4f v;
	memcpy(&v, p, sizeof(v));
	return v;
}

static inline void st4(float *p, v4f v)
{
	memcpy(p, &v, sizeof(v));
}

/* Two rows by NR columns: 8 accumulators fit the 16 SSE/NEON registers.
 * For a single row, pass x1 = x0 and c1 = NULL. */
static void tile_portable_2(const float *x0, const float *x1, const float *p, size_t kc,
			    float *c0, float *c1, const float *init)
{
	const float *s0 = init ? init : c0, *s1 = init ? init : c1 ? c1 : c0;
	v4f a0 = ld4(s0), a1 = ld4(s0 + 4), a2 = ld4(s0 + 8), a3 = ld4(s0 + 12);
	v4f b0 = ld4(s1), b1 = ld4(s1 + 4), b2 = ld4(s1 + 8), b3 = ld4(s1 + 12);
	for (size_t k = 0; k < kc; k++) {
		const float *pk = p + k * NR;
		v4f w0 = ld4(pk), w1 = ld4(pk + 4), w2 = ld4(pk + 8), w3 = ld4(pk + 12);
		v4f u = { x0[k], x0[k], x0[k], x0[k] }, v = { x1[k], x1[k], x1[k], x1[k] };
		a0 += u * w0;
		a1 += u * w1;
		a2 += u * w2;
		a3 += u * w3;
		b0 += v * w0;
		b1 += v * w1;
		b2 += v * w2;
		b3 += v * w3;
	}
	st4(c0, a0);
	st4(c0 + 4, a1);
	st4(c0 + 8, a2);
	st4(c0 + 12, a3);
	if (c1) {
		st4(c1, b0);
		st4(c1 + 4, b1);
		st4(c1 + 8, b2);
		st4(c1 + 12, b3);
	}
}

static void tile_portable(size_t mr, const float *x, size_t ldx, const float *p,
			  size_t kc, float *c, size_t ldc, const float *init)
{
	for (size_t r = 0; r < mr; r += 2) {
		bool pair = r + 1 < mr;
		tile_portable_2(x + r * ldx, x + (pair ? r + 1 : r) * ldx, p, kc, c + r * ldc,
				pair ? c + (r + 1) * ldc : NULL, init);
	}
}

#ifdef TP_HAVE_X86
#define AVX2_TARGET __attribute__((target("avx2,fma")))

/* Decode (one row): two k streams hide the FMA latency. */
AVX2_TARGET static void tile_avx2_row(const float *x, const float *p, size_t kc, float *c,
				      const float *init)
{
	const float *src = init ? init : c;
	__m256 a0 = _mm256_loadu_ps(src), a1 = _mm256_loadu_ps(src + 8);
	__m256 b0 = _mm256_setzero_ps(), b1 = _mm256_setzero_ps();
	size_t k = 0;
	for (; k + 2 <= kc; k += 2) {
		__m256 xa = _mm256_broadcast_ss(x + k), xb = _mm256_broadcast_ss(x + k + 1);
		a0 = _mm256_fmadd_ps(xa, _mm256_load_ps(p + k * NR), a0);
		a1 = _mm256_fmadd_ps(xa, _mm256_load_ps(p + k * NR + 8), a1);
		b0 = _mm256_fmadd_ps(xb, _mm256_load_ps(p + (k + 1) * NR), b0);
		b1 = _mm256_fmadd_ps(xb, _mm256_load_ps(p + (k + 1) * NR + 8), b1);
	}
	if (k < kc) {
		__m256 xa = _mm256_broadcast_ss(x + k);
		a0 = _mm256_fmadd_ps(xa, _mm256_load_ps(p + k * NR), a0);
		a1 = _mm256_fmadd_ps(xa, _mm256_load_ps(p + k * NR + 8), a1);
	}
	_mm256_storeu_ps(c, _mm256_add_ps(a0, b0));
	_mm256_storeu_ps(c + 8, _mm256_add_ps(a1, b1));
}

/* Named accumulators (not an array) so they stay in the 16 ymm registers.
 * Rows past mr repeat row 0 and are not stored. */
#define ROW_PTRS(r) \
	const float *x##r = x + (mr > r ? r : 0) * ldx; \
	const float *s##r = init ? init : c + (mr > r ? r : 0) * ldc; \
	__m256 c##r##0 = _mm256_loadu_ps(s##r), c##r##1 = _mm256_loadu_ps(s##r + 8);
#define ROW_FMA(r)                                                   \
	do {                                                         \
		__m256 a = _mm256_broadcast_ss(x##r + k);            \
		c##r##0 = _mm256_fmadd_ps(a, b0, c##r##0);           \
		c##r##1 = _mm256_fmadd_ps(a, b1, c##r##1);           \
	} while (0)
#define ROW_STORE(r)                                                 \
	if (mr > r) {                                                \
		_mm256_storeu_ps(c + r * ldc, c##r##0);              \
		_mm256_storeu_ps(c + r * ldc + 8, c##r##1);          \
	}

AVX2_TARGET static void tile_avx2(size_t mr, const float *x, size_t ldx, const float *p,
				  size_t kc, float *c, size_t ldc, const float *init)
{
	if (mr == 1) {
		tile_avx2_row(x, p, kc, c, init);
		return;
	}
	ROW_PTRS(0) ROW_PTRS(1) ROW_PTRS(2) ROW_PTRS(3) ROW_PTRS(4) ROW_PTRS(5)
	for (size_t k = 0; k < kc; k++) {
		__m256 b0 = _mm256_load_ps(p + k * NR), b1 = _mm256_load_ps(p + k * NR + 8);
		ROW_FMA(0); ROW_FMA(1); ROW_FMA(2); ROW_FMA(3); ROW_FMA(4); ROW_FMA(5);
	}
	ROW_STORE(0) ROW_STORE(1) ROW_STORE(2) ROW_STORE(3) ROW_STORE(4) ROW_STORE(5)
}
#endif

static bool force_portable;

bool tp_matmul_force_portable(bool on)
{
	bool old = force_portable;
	force_portable = on;
	return old;
}

bool tp_runtime_use_avx2(void)
{
#ifdef TP_HAVE_X86
	return !force_portable && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
	return false;
#endif
}

static tile_fn choose_tile(void)
{
#ifdef TP_HAVE_X86
	if (tp_runtime_use_avx2())
		return tile_avx2;
#endif
	return tile_portable;
}

const char *tp_matmul_kernel(void)
{
	return choose_tile() == tile_portable ? "portable" : "avx2+fma";
}

/* A product over panels: out valid columns (npanels * NR padded), y rows of
 * stride ldy. A dense layer's own panels, or tp_matmul_rows' scratch. */
typedef struct mm_job {
	const float *packed, *bias;
	size_t in, out, npanels, ldy;
	const float *x;
	size_t n;
	float *y;
	tile_fn tile;
	size_t panels_per_task;
} mm_job;

/* One micro-tile; an edge panel (fewer than NR valid columns) goes
 * through a scratch tile so the kernel never writes past a row of y. */
static void run_tile(const mm_job *j, size_t r0, size_t mr, size_t panel, size_t k0,
		     size_t kc)
{
	size_t in = j->in, out = j->out, ldy = j->ldy, col0 = panel * NR;
	size_t ncol = out - col0 < NR ? out - col0 : NR;
	const float *p = j->packed + panel * in * NR + k0 * NR;
	const float *x = j->x + r0 * in + k0;
	const float *init = k0 == 0 ? j->bias + col0 : NULL;
	float *c = j->y + r0 * ldy + col0;
	if (ncol == NR) {
		j->tile(mr, x, in, p, kc, c, ldy, init);
		return;
	}
	float tmp[MR * NR] = { 0 };
	if (!init)
		for (size_t r = 0; r < mr; r++)
			memcpy(tmp + r * NR, c + r * ldy, ncol * sizeof(float));
	j->tile(mr, x, in, p, kc, tmp, NR, init);
	for (size_t r = 0; r < mr; r++)
		memcpy(c + r * ldy, tmp + r * NR, ncol * sizeof(float));
}

static void mm_task(void *ctx, size_t t, size_t ntasks)
{
	(void)ntasks;
	const mm_job *j = ctx;
	size_t in = j->in;
	size_t p0 = t * j->panels_per_task, p1 = p0 + j->panels_per_task;
	if (p1 > j->npanels)
		p1 = j->npanels;
	for (size_t k0 = 0; k0 < in; k0 += KC) {
		size_t kc = in - k0 < KC ? in - k0 : KC;
		for (size_t rb = 0; rb < j->n; rb += MC) {
			size_t re = rb + MC < j->n ? rb + MC : j->n;
			for (size_t p = p0; p < p1; p++)
				for (size_t r0 = rb; r0 < re; r0 += MR)
					run_tile(j, r0, re - r0 < MR ? re - r0 : MR, p, k0, kc);
		}
	}
}

static void dense_forward(const tp_linear *l, const float *x, size_t n, float *y,
			  tp_pool *pool)
{
	const dense *d = (const dense *)l;
	if (n == 0)
		return;
	/* A few tasks per thread balance uneven cores; small products run on
	 * fewer threads, where waking workers would cost more than it saves. */
	size_t want = (size_t)tp_pool_threads(pool) * 4;
	size_t by_work = n * l->in * l->out / MIN_TASK_FMA + 1;
	want = by_work < want ? by_work : want;
	size_t ppt = (d->npanels + want - 1) / want;
	if (ppt == 0)
		ppt = 1;
	mm_job j = { d->packed, d->bias, l->in, l->out, d->npanels, l->out, x, n, y,
		     choose_tile(), ppt };
	tp_pool_run(pool, (d->npanels + ppt - 1) / ppt, mm_task, &j);
}

/* w[rows][in] into panels [panel][k][NR], zero-padded to whole panels. */
static void pack_panels(const float *w, size_t rows, size_t in, float *packed)
{
	memset(packed, 0, (rows + NR - 1) / NR * NR * in * sizeof(float));
	for (size_t o = 0; o < rows; o++) {
		float *dst = packed + (o / NR) * in * NR + o % NR;
		const float *src = w + o * in;
		for (size_t k = 0; k < in; k++)
			dst[k * NR] = src[k];
	}
}

size_t tp_matmul_rows_scratch(size_t rows, size_t in)
{
	size_t cols = (rows + NR - 1) / NR * NR;
	/* panels, padded bias, and room to align the panels to 64 bytes */
	return cols * in + cols + 16;
}

void tp_matmul_rows(const float *w, size_t rows, size_t in, const float *bias,
		    const float *x, size_t n, float *y, size_t ldy, float *scratch)
{
	if (rows == 0 || n == 0)
		return;
	size_t npanels = (rows + NR - 1) / NR, cols = npanels * NR;
	float *packed = (float *)(((uintptr_t)scratch + 63) & ~(uintptr_t)63);
	float *pbias = packed + cols * in;
	pack_panels(w, rows, in, packed);
	memset(pbias, 0, cols * sizeof(float));
	if (bias)
		memcpy(pbias, bias, rows * sizeof(float));
	mm_job j = { packed, pbias, in, rows, npanels, ldy, x, n, y, choose_tile(), npanels };
	mm_task(&j, 0, 1);
}

static void dense_free(tp_linear *l)
{
	dense *d = (dense *)l;
	free(d->packed);
	free(d->bias);
	free(d);
}

static size_t dense_bytes(const tp_linear *l)
{
	return l->in * l->out * sizeof(float);
}

static const tp_linear_ops dense_ops = { dense_forward, dense_free, dense_bytes };

int tp_linear_dense_new(tp_linear **out, const float *w, const float *bias,
			size_t out_dim, size_t in_dim)
{
	size_t npanels = (out_dim + NR - 1) / NR, cols, nfloat, nbytes;
	if (out_dim == 0 || in_dim == 0 || !tp_mul_ok(npanels, NR, &cols) ||
	    !tp_mul_ok(cols, in_dim, &nfloat) || !tp_mul_ok(nfloat, sizeof(float), &nbytes))
		return tp_error_set(TP_ETOOBIG, "linear layer %zux%zu too large", out_dim, in_dim);
	dense *d = calloc(1, sizeof(*d));
	if (!d)
		return tp_error_set(TP_ENOMEM, "out of memory");
	d->base.ops = &dense_ops;
	d->base.in = in_dim;
	d->base.out = out_dim;
	d->npanels = npanels;
	/* 64-byte rows of NR floats: the kernel uses aligned loads. */
	d->packed = aligned_alloc(64, nbytes);
	d->bias = calloc(cols, sizeof(float));
	if (!d->packed || !d->bias) {
		dense_free(&d->base);
		return tp_error_set(TP_ENOMEM, "out of memory for a %zux%zu layer", out_dim, in_dim);
	}
	pack_panels(w, out_dim, in_dim, d->packed);
	if (bias)
		memcpy(d->bias, bias, out_dim * sizeof(float));
	*out = &d->base;
	return 0;
}

void tp_linear_free(tp_linear *l)
{
	if (l)
		l->ops->free(l);
}
