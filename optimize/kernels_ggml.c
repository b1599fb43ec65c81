/*
 * Kernels of the ggml family (int8, q8_0, q4_0, q5_0, q4_k): integer dot
 * products straight from the packed blocks, as llama.cpp computes them.
 *
 * Activations are quantized once per forward call (x_prepare), symmetric,
 * d = absmax / 127 kept in fp32:
 * - "xq8": blocks of 32 values {float d; int8 q[32]} (36 bytes) for int8,
 *   q8_0, q4_0 and q5_0 (int8 rows: the last block zero-padded);
 * - "xqk": super-blocks of 256 {float d; int16 sum[8] of each 32; 12 bytes
 *   of padding; int8 q[256]} (288 bytes) for q4_k, whose per-sub-block mins
 *   multiply those sums.
 * Each weight block's integer dot with the activation block is exact (int32);
 * the block's scale product d_w * d_x is applied in fp32. Matrices that a
 * format stores in its fallback type (tp_quant_fallback: q5_0 or fp16) are
 * computed in that type: fp16 rows against fp32 activations.
 *
 * The AVX2 kernels take the same integer dot products as the plain-C ones
 * (so they differ only in fp32 summation order) and work on tiles of up to 4
 * rows x 2 inputs, so each weight block is unpacked once per tile and each
 * activation block loaded once per row: prefill reuses weights from cache,
 * decode (n = 1) streams 4 rows at a time.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* syscall(2), for the AMX tile permission */
#endif
#include <math.h>
#include <string.h>

#include "kernels_internal.h"
#include "quant_internal.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define KG_X86 1
#endif

#define QK 32
#define QK_K 256
#define XQ8_BYTES 36   /* float d; int8 q[32] */
#define XQK_BYTES 288  /* float d; int16 sum[8]; pad to 32; int8 q[256] */
#define XQK_Q 32       /* offset of q in an xqk block */

enum { K_INT8, K_Q8_0, K_Q4_0, K_Q5_0, K_Q4_K };

/* How a kind stores a cols-wide matrix. */
enum { S_INT8, S_Q8_0, S_Q4_0, S_Q5_0, S_Q4_K, S_FP16 };

static int stored_as(int kind, size_t cols)
{
	switch (kind) {
	case K_INT8:
		return S_INT8;
	case K_Q4_K:
		if (cols % QK_K == 0)
			return S_Q4_K;
		return cols % QK == 0 ? S_Q5_0 : S_FP16;
	default:
		if (cols % QK != 0)
			return S_FP16;
		return kind == K_Q8_0 ? S_Q8_0 : kind == K_Q4_0 ? S_Q4_0 : S_Q5_0;
	}
}

static size_t block_bytes(int s)
{
	return s == S_Q8_0 ? 34 : s == S_Q4_0 ? 18 : s == S_Q5_0 ? 22 : 144;
}

/* ---- activations --------------------------------------------------------- */

/* q[i] = round(x[i] / d) with d = absmax / 127 (ties to even); a block with a
 * NaN or Inf gets d = NaN so that the products it meets are NaN, as a dense
 * layer's would be. Returns d. */
static float quant_block(const float *x, size_t n, int8_t *q)
{
	float amax = 0.0f;
	bool bad = false;
	for (size_t i = 0; i < n; i++) {
		float a = fabsf(x[i]);
		bad |= !isfinite(a);
		if (a > amax)
			amax = a;
	}
	if (bad) {
		memset(q, 0, n);
		return NAN;
	}
	float d = amax / 127.0f, id = amax > 0.0f ? 127.0f / amax : 0.0f;
	for (size_t i = 0; i < n; i++)
		q[i] = (int8_t)tp_quant_rint_clamp(x[i] * id, -127, 127);
	return d;
}

static size_t xq8_size(size_t cols)
{
	return (cols + QK - 1) / QK * XQ8_BYTES;
}

static void xq8_prepare(const float *x, size_t cols, void *xp)
{
	uint8_t *p = xp;
	for (size_t c = 0; c < cols; c += QK, p += XQ8_BYTES) {
		size_t n = cols - c < QK ? cols - c : QK;
		int8_t q[QK] = {0};
		float d = quant_block(x + c, n, q);
		memcpy(p, &d, 4);
		memcpy(p + 4, q, QK);
	}
}

static void xqk_prepare(const float *x, size_t cols, void *xp)
{
	uint8_t *p = xp;
	for (size_t c = 0; c < cols; c += QK_K, p += XQK_BYTES) {
		int8_t q[QK_K];
		int16_t sum[8];
		float d = quant_block(x + c, QK_K, q);
		for (int j = 0; j < 8; j++) {
			int s = 0;
			for (int i = 0; i < QK; i++)
				s += q[QK * j + i];
			sum[j] = (int16_t)s;
		}
		memset(p, 0, XQK_Q);
		memcpy(p, &d, 4);
		memcpy(p + 4, sum, sizeof(sum));
		memcpy(p + XQK_Q, q, QK_K);
	}
}

static void fp32_prepare(const float *x, size_t cols, void *xp)
{
	memcpy(xp, x, cols * sizeof(float));
}

#define KIND_PREP(N, K)                                                             \
	static size_t N##_x_size(size_t cols)                                       \
	{                                                                           \
		int s = stored_as(K, cols);                                         \
		return s == S_FP16 ? cols * sizeof(float)                           \
		       : s == S_Q4_K ? cols / QK_K * XQK_BYTES                      \
				     : xq8_size(cols);                              \
	}                                                                           \
	static void N##_x_prepare(const float *x, size_t cols, void *xp)            \
	{                                                                           \
		int s = stored_as(K, cols);                                         \
		if (s == S_FP16)                                                    \
			fp32_prepare(x, cols, xp);                                  \
		else if (s == S_Q4_K)                                               \
			xqk_prepare(x, cols, xp);                                   \
		else                                                                \
			xq8_prepare(x, cols, xp);                                   \
	}
KIND_PREP(int8, K_INT8)
KIND_PREP(q8_0, K_Q8_0)
KIND_PREP(q4_0, K_Q4_0)
KIND_PREP(q5_0, K_Q5_0)
KIND_PREP(q4_k, K_Q4_K)

/* ---- plain C ------------------------------------------------------------- */

static float xd(const uint8_t *xb)
{
	float d;
	memcpy(&d, xb, 4);
	return d;
}

/* Block b of a q8_0/q4_0/q5_0 row as signed values w[32]; returns its d. */
static float unpack_block(int s, const uint8_t *p, int8_t *w)
{
	float d = tp_fp16_to_f32(tp_quant_get_u16(p));
	if (s == S_Q8_0) {
		memcpy(w, p + 2, QK);
	} else if (s == S_Q4_0) {
		for (int j = 0; j < QK / 2; j++) {
			w[j] = (int8_t)((p[2 + j] & 0xf) - 8);
			w[j + QK / 2] = (int8_t)((p[2 + j] >> 4) - 8);
		}
	} else {
		uint32_t qh = (uint32_t)p[2] | (uint32_t)p[3] << 8 | (uint32_t)p[4] << 16 |
			      (uint32_t)p[5] << 24;
		for (int j = 0; j < QK / 2; j++) {
			w[j] = (int8_t)(((p[6 + j] & 0xf) | (int)((qh >> j) & 1) << 4) - 16);
			w[j + QK / 2] =
				(int8_t)(((p[6 + j] >> 4) | (int)((qh >> (j + 16)) & 1) << 4) - 16);
		}
	}
	return d;
}

static int idot(const int8_t *a, const int8_t *b, size_t n)
{
	int s = 0;
	for (size_t i = 0; i < n; i++)
		s += a[i] * b[i];
	return s;
}

/* The 6-bit scale and min of sub-block j (ggml.c's layout). */
static void k4_scale_min(int j, const uint8_t *q, int *sc, int *m)
{
	if (j < 4) {
		*sc = q[j] & 63;
		*m = q[j + 4] & 63;
	} else {
		*sc = (q[j + 4] & 0xf) | ((q[j - 4] >> 6) << 4);
		*m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
	}
}

static float dot_c(int s, const uint8_t *pw, size_t rows, size_t r, size_t cols,
		   const uint8_t *xb)
{
	float acc = 0.0f;
	if (s == S_FP16) {
		const uint8_t *w = pw + r * cols * 2;
		const float *x = (const float *)xb;
		for (size_t c = 0; c < cols; c++)
			acc += tp_fp16_to_f32(tp_quant_get_u16(w + 2 * c)) * x[c];
		return acc;
	}
	if (s == S_INT8) {
		const int8_t *w = (const int8_t *)(pw + 4 * rows + r * cols);
		for (size_t c = 0; c < cols; c += QK, xb += XQ8_BYTES) {
			size_t n = cols - c < QK ? cols - c : QK;
			acc += xd(xb) * (float)idot(w + c, (const int8_t *)(xb + 4), n);
		}
		return acc * tp_quant_get_f32(pw + 4 * r);
	}
	if (s == S_Q4_K) {
		const uint8_t *p = pw + r * (cols / QK_K) * 144;
		for (size_t b = 0; b < cols / QK_K; b++, p += 144, xb += XQK_BYTES) {
			float d = tp_fp16_to_f32(tp_quant_get_u16(p));
			float dmin = tp_fp16_to_f32(tp_quant_get_u16(p + 2));
			const int8_t *xq = (const int8_t *)(xb + XQK_Q);
			int sumi = 0, summ = 0;
			for (int j = 0; j < 8; j++) {
				int sc, m, dj = 0;
				int16_t xs;
				k4_scale_min(j, p + 4, &sc, &m);
				const uint8_t *q = p + 16 + (j / 2) * 32;
				for (int l = 0; l < 32; l++)
					dj += (j % 2 ? q[l] >> 4 : q[l] & 0xf) * xq[32 * j + l];
				memcpy(&xs, xb + 4 + 2 * j, 2);
				sumi += sc * dj;
				summ += m * xs;
			}
			float dx = xd(xb);
			acc += d * dx * (float)sumi - dmin * dx * (float)summ;
		}
		return acc;
	}
	size_t bb = block_bytes(s), nb = cols / QK;
	const uint8_t *p = pw + r * nb * bb;
	for (size_t b = 0; b < nb; b++, p += bb, xb += XQ8_BYTES) {
		int8_t w[QK];
		float d = unpack_block(s, p, w);
		acc += d * xd(xb) * (float)idot(w, (const int8_t *)(xb + 4), QK);
	}
	return acc;
}

static size_t x_bytes(int s, size_t cols)
{
	return s == S_FP16 ? cols * sizeof(float) : s == S_Q4_K ? cols / QK_K * XQK_BYTES
								: xq8_size(cols);
}

static void rows_c(int kind, const void *packed, size_t rows, size_t cols, size_t r0, size_t r1,
		   const void *x, size_t n, float *y, size_t ldy)
{
	int s = stored_as(kind, cols);
	size_t xs = x_bytes(s, cols);
	for (size_t t = 0; t < n; t++)
		for (size_t r = r0; r < r1; r++)
			y[t * ldy + (r - r0)] =
				dot_c(s, packed, rows, r, cols, (const uint8_t *)x + t * xs);
}

#define KIND_ROWS_C(N, K)                                                                     \
	static void N##_rows_c(const void *packed, size_t rows, size_t cols, size_t r0,        \
			       size_t r1, const void *x, size_t n, float *y, size_t ldy)        \
	{                                                                                      \
		rows_c(K, packed, rows, cols, r0, r1, x, n, y, ldy);                           \
	}
KIND_ROWS_C(int8, K_INT8)
KIND_ROWS_C(q8_0, K_Q8_0)
KIND_ROWS_C(q4_0, K_Q4_0)
KIND_ROWS_C(q5_0, K_Q5_0)
KIND_ROWS_C(q4_k, K_Q4_K)

/* ---- exact mode: fp32 activations (plain C) ------------------------------
 * The same weights against the fp32 input, as the widening path computes
 * (weights d*q are exact in fp32; only the summation order differs): for
 * measuring quality without the activations' 8-bit rounding. */

static float dot_exact_c(int s, const uint8_t *pw, size_t rows, size_t r, size_t cols,
			 const float *x)
{
	float acc = 0.0f;
	if (s == S_FP16)
		return dot_c(s, pw, rows, r, cols, (const uint8_t *)x);
	if (s == S_INT8) {
		const int8_t *w = (const int8_t *)(pw + 4 * rows + r * cols);
		for (size_t c = 0; c < cols; c++)
			acc += (float)w[c] * x[c];
		return acc * tp_quant_get_f32(pw + 4 * r);
	}
	if (s == S_Q4_K) {
		const uint8_t *p = pw + r * (cols / QK_K) * 144;
		for (size_t b = 0; b < cols / QK_K; b++, p += 144, x += QK_K) {
			float d = tp_fp16_to_f32(tp_quant_get_u16(p));
			float dmin = tp_fp16_to_f32(tp_quant_get_u16(p + 2));
			for (int j = 0; j < 8; j++) {
				int sc, m;
				k4_scale_min(j, p + 4, &sc, &m);
				const uint8_t *q = p + 16 + (j / 2) * 32;
				float sq = 0.0f, sx = 0.0f;
				for (int l = 0; l < 32; l++) {
					sq += (float)(j % 2 ? q[l] >> 4 : q[l] & 0xf) * x[32 * j + l];
					sx += x[32 * j + l];
				}
				acc += d * (float)sc * sq - dmin * (float)m * sx;
			}
		}
		return acc;
	}
	size_t bb = block_bytes(s), nb = cols / QK;
	const uint8_t *p = pw + r * nb * bb;
	for (size_t b = 0; b < nb; b++, p += bb, x += QK) {
		int8_t w[QK];
		float d = unpack_block(s, p, w), sq = 0.0f;
		for (int j = 0; j < QK; j++)
			sq += (float)w[j] * x[j];
		acc += d * sq;
	}
	return acc;
}

static void rows_exact_c(int kind, const void *packed, size_t rows, size_t cols, size_t r0,
			 size_t r1, const void *x, size_t n, float *y, size_t ldy)
{
	int s = stored_as(kind, cols);
	for (size_t t = 0; t < n; t++)
		for (size_t r = r0; r < r1; r++)
			y[t * ldy + (r - r0)] =
				dot_exact_c(s, packed, rows, r, cols, (const float *)x + t * cols);
}

#define KIND_EXACT_C(N, K)                                                                    \
	static void N##_exact_c(const void *packed, size_t rows, size_t cols, size_t r0,       \
				size_t r1, const void *x, size_t n, float *y, size_t ldy)      \
	{                                                                                      \
		rows_exact_c(K, packed, rows, cols, r0, r1, x, n, y, ldy);                     \
	}
KIND_EXACT_C(int8, K_INT8)
KIND_EXACT_C(q8_0, K_Q8_0)
KIND_EXACT_C(q4_0, K_Q4_0)
KIND_EXACT_C(q5_0, K_Q5_0)
KIND_EXACT_C(q4_k, K_Q4_K)

/* ---- AVX2 ------------------------------------------------------------------ */

#ifdef KG_X86
#define AVX2 __attribute__((target("avx2,fma,f16c")))
#define AVX2_INLINE static inline __attribute__((always_inline, target("avx2,fma,f16c")))

/* Rows are short (a few KiB) and read 4 at a time, too short for the
 * hardware prefetcher to ramp up on each: the tiles fetch the next tile's
 * rows while they work on these (past the end of the matrix is harmless). */
#define PREFETCH(p) _mm_prefetch((const char *)(p), _MM_HINT_T0)

/* ---- activations, AVX2: the same bytes as xq8_prepare / xqk_prepare
 * (round to nearest even, clamp, the same d); blocks with a NaN or Inf and
 * int8's partial last block go through quant_block. */
AVX2_INLINE float hmax8(__m256 v)
{
	__m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
	m = _mm_max_ps(m, _mm_movehl_ps(m, m));
	m = _mm_max_ss(m, _mm_movehdup_ps(m));
	return _mm_cvtss_f32(m);
}

/* n a multiple of 32. */
AVX2_INLINE float quant_block_avx2(const float *x, size_t n, int8_t *q)
{
	const __m256 abs = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
	const __m256 big = _mm256_set1_ps(3.402823466e+38f);
	__m256 mx = _mm256_setzero_ps(), ok = _mm256_castsi256_ps(_mm256_set1_epi32(-1));
	for (size_t i = 0; i < n; i += 8) {
		__m256 a = _mm256_and_ps(_mm256_loadu_ps(x + i), abs);
		ok = _mm256_and_ps(ok, _mm256_cmp_ps(a, big, _CMP_LE_OQ));
		mx = _mm256_max_ps(mx, a);
	}
	if (_mm256_movemask_ps(ok) != 0xff)
		return quant_block(x, n, q);
	float amax = hmax8(mx);
	float d = amax / 127.0f, id = amax > 0.0f ? 127.0f / amax : 0.0f;
	const __m256 vid = _mm256_set1_ps(id), lo = _mm256_set1_ps(-127.0f),
		     hi = _mm256_set1_ps(127.0f);
	const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
	for (size_t i = 0; i < n; i += 32) {
		__m256i v[4];
		for (int k = 0; k < 4; k++) {
			__m256 f = _mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(x + i + 8 * k), vid),
						   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
			v[k] = _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(f, lo), hi));
		}
		__m256i b = _mm256_packs_epi16(_mm256_packs_epi32(v[0], v[1]),
					       _mm256_packs_epi32(v[2], v[3]));
		_mm256_storeu_si256((__m256i *)(q + i), _mm256_permutevar8x32_epi32(b, order));
	}
	return d;
}

AVX2 static void xq8_prepare_avx2(const float *x, size_t cols, void *xp)
{
	uint8_t *p = xp;
	size_t c = 0;
	for (; c + QK <= cols; c += QK, p += XQ8_BYTES) {
		float d = quant_block_avx2(x + c, QK, (int8_t *)(p + 4));
		memcpy(p, &d, 4);
	}
	if (c < cols)
		xq8_prepare(x + c, cols - c, p);
}

AVX2 static void xqk_prepare_avx2(const float *x, size_t cols, void *xp)
{
	uint8_t *p = xp;
	const __m256i one8 = _mm256_set1_epi8(1), one16 = _mm256_set1_epi16(1);
	for (size_t c = 0; c < cols; c += QK_K, p += XQK_BYTES) {
		memset(p, 0, XQK_Q);
		float d = quant_block_avx2(x + c, QK_K, (int8_t *)(p + XQK_Q));
		memcpy(p, &d, 4);
		for (int j = 0; j < 8; j++) {
			__m256i q = _mm256_loadu_si256((const __m256i *)(p + XQK_Q + QK * j));
			__m256i s4 = _mm256_madd_epi16(_mm256_maddubs_epi16(one8, q), one16);
			__m128i s = _mm_add_epi32(_mm256_castsi256_si128(s4),
						  _mm256_extracti128_si256(s4, 1));
			s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
			s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
			int16_t v = (int16_t)_mm_cvtsi128_si32(s);
			memcpy(p + 4 + 2 * j, &v, 2);
		}
	}
}

#define KIND_PREP_AVX2(N, K)                                                        \
	static void N##_x_prepare_avx2(const float *x, size_t cols, void *xp)       \
	{                                                                           \
		int s = stored_as(K, cols);                                         \
		if (s == S_FP16)                                                    \
			fp32_prepare(x, cols, xp);                                  \
		else if (s == S_Q4_K)                                               \
			xqk_prepare_avx2(x, cols, xp);                              \
		else                                                                \
			xq8_prepare_avx2(x, cols, xp);                              \
	}
KIND_PREP_AVX2(int8, K_INT8)
KIND_PREP_AVX2(q8_0, K_Q8_0)
KIND_PREP_AVX2(q4_0, K_Q4_0)
KIND_PREP_AVX2(q5_0, K_Q5_0)
KIND_PREP_AVX2(q4_k, K_Q4_K)

#define KG_INLINE AVX2_INLINE
#define NT_MAX 2
#include "kernels_ggml_x86.h"
#undef KG_INLINE
#undef NT_MAX

/* The AVX-512 VNNI copy (tp_quant_kernel_level() == TP_KERNEL_AVX512). */
#define AVX512 __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")))
#define KG_INLINE                                                                            \
	static inline __attribute__((always_inline,                                          \
				     target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")))
#define NT_MAX 4
#define KG_VNNI 1
#define hsum8 hsum8_vnni
#define h2f h2f_vnni
#define h2f8 h2f8_vnni
#define unpack_avx2 unpack_avx2_vnni
#define dot_block dot_block_vnni
#define tile_q8 tile_q8_vnni
#define tile_q4k tile_q4k_vnni
#define dot_fp16 dot_fp16_vnni
#define rows_avx2 rows_avx2_vnni
#include "kernels_ggml_x86.h"
#undef hsum8
#undef h2f
#undef h2f8
#undef unpack_avx2
#undef dot_block
#undef tile_q8
#undef tile_q4k
#undef dot_fp16
#undef rows_avx2
#undef KG_INLINE
#undef NT_MAX
#undef KG_VNNI

/* One function per storage so that each inlines only its own blocks. */
#define STORE_AVX2(S)                                                                        \
	AVX2 static void rows_avx2_##S(const uint8_t *packed, size_t rows, size_t cols,       \
				       size_t r0, size_t r1, const uint8_t *x, size_t n,      \
				       float *y, size_t ldy)                                  \
	{                                                                                     \
		rows_avx2(S, packed, rows, cols, r0, r1, x, n, y, ldy);                       \
	}
STORE_AVX2(S_INT8)
STORE_AVX2(S_Q8_0)
STORE_AVX2(S_Q4_0)
STORE_AVX2(S_Q5_0)
STORE_AVX2(S_Q4_K)
STORE_AVX2(S_FP16)

static void rows_simd(int kind, const void *packed, size_t rows, size_t cols, size_t r0,
		      size_t r1, const void *x, size_t n, float *y, size_t ldy)
{
	static void (*const fn[])(const uint8_t *, size_t, size_t, size_t, size_t,
				  const uint8_t *, size_t, float *, size_t) = {
		[S_INT8] = rows_avx2_S_INT8, [S_Q8_0] = rows_avx2_S_Q8_0,
		[S_Q4_0] = rows_avx2_S_Q4_0, [S_Q5_0] = rows_avx2_S_Q5_0,
		[S_Q4_K] = rows_avx2_S_Q4_K, [S_FP16] = rows_avx2_S_FP16,
	};
	fn[stored_as(kind, cols)](packed, rows, cols, r0, r1, x, n, y, ldy);
}

/* ---- AVX-512: q8_0 and q4_0 two blocks a 512-bit vector ------------------
 * Blocks b and b+1 of a row side by side in one vector (and of an input:
 * two xq8 blocks), so each vpdpbusd takes 64 products. Weights go unsigned:
 * q8_0's values + 128 (a flipped sign bit), q4_0's codes (value + 8); the
 * offset times the input's sum (-off.x per int32 lane, once per input
 * block pair) starts the sum, so each lane holds the same integer as the
 * AVX2 tiles' lanes. A last odd block has a zero upper half (codes, input
 * and both scales 0). */
#define KZ_INLINE                                                                            \
	static inline __attribute__((always_inline,                                          \
				     target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")))

KZ_INLINE __m512i kz_join(__m256i lo, __m256i hi)
{
	return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
}

KZ_INLINE __m512 kz_joinf(__m256 lo, __m256 hi)
{
	return _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castpd256_pd512(_mm256_castps_pd(lo)),
						   _mm256_castps_pd(hi), 1));
}

KZ_INLINE void tile_zmm(int s, const uint8_t *packed, size_t cols, size_t r, const uint8_t *x,
			size_t xs, size_t t, float *y, size_t ldy, size_t r0, int RT, int NT)
{
	size_t nb = cols / QK, bb = block_bytes(s), rowb = nb * bb;
	const __m512i off = _mm512_set1_epi8(s == S_Q4_0 ? 8 : (char)0x80), z = _mm512_setzero_si512();
	__m512 acc[4][4];
	_Pragma("GCC unroll 4")
	for (int i = 0; i < RT; i++)
		_Pragma("GCC unroll 4")
		for (int j = 0; j < NT; j++)
			acc[i][j] = _mm512_setzero_ps();
	for (size_t b = 0; b < nb; b += 2) {
		bool two = b + 1 < nb;
		__m512i xv[4], xo[4];
		__m512 dx[4];
		_Pragma("GCC unroll 4")
		for (int j = 0; j < NT; j++) {
			const uint8_t *xb = x + (t + j) * xs + b * XQ8_BYTES;
			__m256i x0 = _mm256_loadu_si256((const __m256i *)(xb + 4));
			__m256i x1 = two ? _mm256_loadu_si256((const __m256i *)(xb + XQ8_BYTES + 4))
					 : _mm256_setzero_si256();
			xv[j] = kz_join(x0, x1);
			dx[j] = kz_joinf(_mm256_broadcast_ss((const float *)xb),
					 two ? _mm256_broadcast_ss((const float *)(xb + XQ8_BYTES))
					     : _mm256_setzero_ps());
			xo[j] = _mm512_sub_epi32(z, _mm512_dpbusd_epi32(z, off, xv[j]));
		}
		_Pragma("GCC unroll 4")
		for (int i = 0; i < RT; i++) {
			const uint8_t *pb = packed + (r + i) * rowb + b * bb;
			PREFETCH(pb + (size_t)RT * rowb);
			PREFETCH(pb + (size_t)RT * rowb + 64);
			__m256i w0 = unpack_avx2_vnni(s, pb);
			__m256i w1 = two ? unpack_avx2_vnni(s, pb + bb) : _mm256_setzero_si256();
			__m512i w = kz_join(w0, w1);
			if (s == S_Q8_0)
				w = _mm512_xor_si512(w, off);
			uint16_t h0, h1 = 0;
			memcpy(&h0, pb, 2);
			if (two)
				memcpy(&h1, pb + bb, 2);
			__m512 dw = _mm512_cvtph_ps(
				_mm256_set_m128i(_mm_set1_epi16((short)h1), _mm_set1_epi16((short)h0)));
			_Pragma("GCC unroll 4")
			for (int j = 0; j < NT; j++) {
				__m512 f = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(xo[j], w, xv[j]));
				acc[i][j] = _mm512_fmadd_ps(f, _mm512_mul_ps(dw, dx[j]), acc[i][j]);
			}
		}
	}
	_Pragma("GCC unroll 4")
	for (int i = 0; i < RT; i++)
		_Pragma("GCC unroll 4")
		for (int j = 0; j < NT; j++)
			y[(t + j) * ldy + (r + i - r0)] = _mm512_reduce_add_ps(acc[i][j]);
}

/* As rows_avx2: 16 rows at a time, tiles of 4 rows x 4, 2 or 1 inputs. */
#define KZ_TILE(RT, NT) tile_zmm(s, packed, cols, r, x, xs, t, y, ldy, r0, RT, NT)
KZ_INLINE void rows_zmm(int s, const uint8_t *packed, size_t cols, size_t r0, size_t r1,
			const uint8_t *x, size_t n, float *y, size_t ldy)
{
	size_t xs = x_bytes(s, cols);
	for (size_t rb = r0; rb < r1; rb += 16) {
		size_t re = rb + 16 < r1 ? rb + 16 : r1, t = 0, r;
		for (; t + 4 <= n; t += 4) {
			for (r = rb; r + 4 <= re; r += 4)
				KZ_TILE(4, 4);
			for (; r < re; r++)
				KZ_TILE(1, 4);
		}
		for (; t + 2 <= n; t += 2) {
			for (r = rb; r + 4 <= re; r += 4)
				KZ_TILE(4, 2);
			for (; r < re; r++)
				KZ_TILE(1, 2);
		}
		for (; t < n; t++) {
			for (r = rb; r + 4 <= re; r += 4)
				KZ_TILE(4, 1);
			for (; r < re; r++)
				KZ_TILE(1, 1);
		}
	}
}
#undef KZ_TILE

/* What the AMX tiles leave (kernels_ggml_amx.h): the VNNI tiles. */
KZ_INLINE void rows_tail(int s, const uint8_t *packed, size_t cols, size_t r0, size_t r1,
			 const uint8_t *x, size_t n, float *y, size_t ldy)
{
	if (s == S_Q4_K)
		rows_avx2_vnni(S_Q4_K, packed, 0, cols, r0, r1, x, n, y, ldy);
	else
		rows_zmm(s, packed, cols, r0, r1, x, n, y, ldy);
}

#include "kernels_ggml_amx.h"

#ifdef KA_AMX
#define KA_TRY(S)                                                                             \
	if (n >= KA_MIN_N && r1 - r0 >= 16 && ka_ready() &&                                   \
	    ka_rows_##S(packed, cols, r0, r1, x, n, y, ldy))                                   \
		return;
#else
#define KA_TRY(S)
#endif

AVX512 static void rows_zmm_S_Q8_0(const uint8_t *packed, size_t rows, size_t cols, size_t r0,
				   size_t r1, const uint8_t *x, size_t n, float *y, size_t ldy)
{
	(void)rows;
	KA_TRY(S_Q8_0)
	rows_zmm(S_Q8_0, packed, cols, r0, r1, x, n, y, ldy);
}

AVX512 static void rows_zmm_S_Q4_0(const uint8_t *packed, size_t rows, size_t cols, size_t r0,
				   size_t r1, const uint8_t *x, size_t n, float *y, size_t ldy)
{
	(void)rows;
	KA_TRY(S_Q4_0)
	rows_zmm(S_Q4_0, packed, cols, r0, r1, x, n, y, ldy);
}

AVX512 static void rows_zmm_S_Q4_K(const uint8_t *packed, size_t rows, size_t cols, size_t r0,
				   size_t r1, const uint8_t *x, size_t n, float *y, size_t ldy)
{
	KA_TRY(S_Q4_K)
	rows_avx2_vnni(S_Q4_K, packed, rows, cols, r0, r1, x, n, y, ldy);
}
#undef KA_TRY

#define STORE_VNNI(S)                                                                        \
	AVX512 static void rows_vnni_##S(const uint8_t *packed, size_t rows, size_t cols,     \
					 size_t r0, size_t r1, const uint8_t *x, size_t n,    \
					 float *y, size_t ldy)                                \
	{                                                                                     \
		rows_avx2_vnni(S, packed, rows, cols, r0, r1, x, n, y, ldy);                  \
	}
STORE_VNNI(S_INT8)
STORE_VNNI(S_Q5_0)

static void rows_vnni(int kind, const void *packed, size_t rows, size_t cols, size_t r0,
		      size_t r1, const void *x, size_t n, float *y, size_t ldy)
{
	static void (*const fn[])(const uint8_t *, size_t, size_t, size_t, size_t,
				  const uint8_t *, size_t, float *, size_t) = {
		[S_INT8] = rows_vnni_S_INT8, [S_Q8_0] = rows_zmm_S_Q8_0,
		[S_Q4_0] = rows_zmm_S_Q4_0,  [S_Q5_0] = rows_vnni_S_Q5_0,
		[S_Q4_K] = rows_zmm_S_Q4_K,  [S_FP16] = rows_avx2_S_FP16,
	};
	fn[stored_as(kind, cols)](packed, rows, cols, r0, r1, x, n, y, ldy);
}

#define KIND_ROWS_SIMD(N, K)                                                                  \
	static void N##_rows_simd(const void *packed, size_t rows, size_t cols, size_t r0,     \
				  size_t r1, const void *x, size_t n, float *y, size_t ldy)     \
	{                                                                                      \
		rows_simd(K, packed, rows, cols, r0, r1, x, n, y, ldy);                        \
	}                                                                                      \
	static void N##_rows_vnni(const void *packed, size_t rows, size_t cols, size_t r0,     \
				  size_t r1, const void *x, size_t n, float *y, size_t ldy)     \
	{                                                                                      \
		rows_vnni(K, packed, rows, cols, r0, r1, x, n, y, ldy);                        \
	}
KIND_ROWS_SIMD(int8, K_INT8)
KIND_ROWS_SIMD(q8_0, K_Q8_0)
KIND_ROWS_SIMD(q4_0, K_Q4_0)
KIND_ROWS_SIMD(q5_0, K_Q5_0)
KIND_ROWS_SIMD(q4_k, K_Q4_K)

/* ---- exact mode, AVX2 ---------------------------------------------------------- */

/* sum of the 32 signed bytes w times x[0..32) in fp32 lanes. */
AVX2_INLINE __m256 dot32_f32(__m256i w, const float *x)
{
	__m128i lo = _mm256_castsi256_si128(w), hi = _mm256_extracti128_si256(w, 1);
	__m256 a = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(lo)), _mm256_loadu_ps(x));
	__m256 b = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(lo, 8))),
				 _mm256_loadu_ps(x + 8));
	a = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(hi)), _mm256_loadu_ps(x + 16),
			    a);
	b = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(hi, 8))),
			    _mm256_loadu_ps(x + 24), b);
	return _mm256_add_ps(a, b);
}

AVX2_INLINE float dot_exact_avx2(int s, const uint8_t *pw, size_t rows, size_t r, size_t cols,
				 const float *x)
{
	__m256 acc = _mm256_setzero_ps();
	if (s == S_INT8) {
		const uint8_t *w = pw + 4 * rows + r * cols;
		size_t c = 0;
		for (; c + QK <= cols; c += QK)
			acc = _mm256_add_ps(acc, dot32_f32(_mm256_loadu_si256((const __m256i *)(w + c)),
							   x + c));
		float v = hsum8(acc);
		for (; c < cols; c++)
			v += (float)(int8_t)w[c] * x[c];
		return v * tp_quant_get_f32(pw + 4 * r);
	}
	if (s == S_Q4_K) {
		const uint8_t *p = pw + r * (cols / QK_K) * 144;
		const __m256i low = _mm256_set1_epi8(0x0f);
		for (size_t b = 0; b < cols / QK_K; b++, p += 144, x += QK_K) {
			float d = h2f(p), dmin = h2f(p + 2);
			for (int k = 0; k < 4; k++) {
				int sc0, m0, sc1, m1;
				k4_scale_min(2 * k, p + 4, &sc0, &m0);
				k4_scale_min(2 * k + 1, p + 4, &sc1, &m1);
				__m256i q = _mm256_loadu_si256((const __m256i *)(p + 16 + 32 * k));
				const float *x0 = x + 64 * k, *x1 = x0 + 32;
				__m256 sx = _mm256_add_ps(
					_mm256_add_ps(_mm256_loadu_ps(x0), _mm256_loadu_ps(x0 + 8)),
					_mm256_add_ps(_mm256_loadu_ps(x0 + 16), _mm256_loadu_ps(x0 + 24)));
				__m256 sy = _mm256_add_ps(
					_mm256_add_ps(_mm256_loadu_ps(x1), _mm256_loadu_ps(x1 + 8)),
					_mm256_add_ps(_mm256_loadu_ps(x1 + 16), _mm256_loadu_ps(x1 + 24)));
				acc = _mm256_fmadd_ps(dot32_f32(_mm256_and_si256(q, low), x0),
						      _mm256_set1_ps(d * (float)sc0), acc);
				acc = _mm256_fmadd_ps(
					dot32_f32(_mm256_and_si256(_mm256_srli_epi16(q, 4), low), x1),
					_mm256_set1_ps(d * (float)sc1), acc);
				acc = _mm256_fnmadd_ps(sx, _mm256_set1_ps(dmin * (float)m0), acc);
				acc = _mm256_fnmadd_ps(sy, _mm256_set1_ps(dmin * (float)m1), acc);
			}
		}
		return hsum8(acc);
	}
	size_t bb = block_bytes(s), nb = cols / QK;
	const uint8_t *p = pw + r * nb * bb;
	const __m256i off = _mm256_set1_epi8(s == S_Q4_0 ? 8 : 16);
	for (size_t b = 0; b < nb; b++, p += bb, x += QK) {
		__m256i w = unpack_avx2(s, p);
		if (s != S_Q8_0)
			w = _mm256_sub_epi8(w, off);
		acc = _mm256_fmadd_ps(dot32_f32(w, x), h2f8(p), acc);
	}
	return hsum8(acc);
}

#define STORE_EXACT(S)                                                                       \
	AVX2 static void exact_avx2_##S(const uint8_t *packed, size_t rows, size_t cols,      \
					size_t r0, size_t r1, const float *x, size_t n,       \
					float *y, size_t ldy)                                 \
	{                                                                                     \
		for (size_t t = 0; t < n; t++)                                                \
			for (size_t r = r0; r < r1; r++)                                      \
				y[t * ldy + (r - r0)] =                                       \
					S == S_FP16 ? dot_fp16(packed + r * cols * 2,         \
							       x + t * cols, cols)            \
						    : dot_exact_avx2(S, packed, rows, r, cols, \
								     x + t * cols);           \
	}
STORE_EXACT(S_INT8)
STORE_EXACT(S_Q8_0)
STORE_EXACT(S_Q4_0)
STORE_EXACT(S_Q5_0)
STORE_EXACT(S_Q4_K)
STORE_EXACT(S_FP16)

static void rows_exact_simd(int kind, const void *packed, size_t rows, size_t cols, size_t r0,
			    size_t r1, const void *x, size_t n, float *y, size_t ldy)
{
	static void (*const fn[])(const uint8_t *, size_t, size_t, size_t, size_t, const float *,
				  size_t, float *, size_t) = {
		[S_INT8] = exact_avx2_S_INT8, [S_Q8_0] = exact_avx2_S_Q8_0,
		[S_Q4_0] = exact_avx2_S_Q4_0, [S_Q5_0] = exact_avx2_S_Q5_0,
		[S_Q4_K] = exact_avx2_S_Q4_K, [S_FP16] = exact_avx2_S_FP16,
	};
	fn[stored_as(kind, cols)](packed, rows, cols, r0, r1, x, n, y, ldy);
}

#define KIND_EXACT_SIMD(N, K)                                                                 \
	static void N##_exact_simd(const void *packed, size_t rows, size_t cols, size_t r0,    \
				   size_t r1, const void *x, size_t n, float *y, size_t ldy)    \
	{                                                                                      \
		rows_exact_simd(K, packed, rows, cols, r0, r1, x, n, y, ldy);                  \
	}
KIND_EXACT_SIMD(int8, K_INT8)
KIND_EXACT_SIMD(q8_0, K_Q8_0)
KIND_EXACT_SIMD(q4_0, K_Q4_0)
KIND_EXACT_SIMD(q5_0, K_Q5_0)
KIND_EXACT_SIMD(q4_k, K_Q4_K)
#endif /* KG_X86 */

/* ---- tables ---------------------------------------------------------------- */

#define KERNEL_C(N, XNAME) {#N " x " XNAME " c", N##_x_size, N##_x_prepare, N##_rows_c}
#define KERNEL_SIMD(N, XNAME)                                                                \
	{#N " x " XNAME " avx2", N##_x_size, N##_x_prepare_avx2, N##_rows_simd}
#define KERNEL_VNNI(N, XNAME)                                                                \
	{#N " x " XNAME " avx512", N##_x_size, N##_x_prepare_avx2, N##_rows_vnni}
#define EXACT_C(N) {#N " x f32 c", NULL, NULL, N##_exact_c}
#define EXACT_SIMD(N) {#N " x f32 avx2", NULL, NULL, N##_exact_simd}

static const struct {
	const char *name;
	tp_quant_kernel c, exact_c;
#ifdef KG_X86
	tp_quant_kernel simd, exact_simd, vnni;
#endif
} kernels[] = {
#ifdef KG_X86
#define ENTRY(N, X)                                                                          \
	{#N, KERNEL_C(N, X), EXACT_C(N), KERNEL_SIMD(N, X), EXACT_SIMD(N), KERNEL_VNNI(N, X)}
#else
#define ENTRY(N, X) {#N, KERNEL_C(N, X), EXACT_C(N)}
#endif
	ENTRY(int8, "q8"),
	ENTRY(q8_0, "q8"),
	ENTRY(q4_0, "q8"),
	ENTRY(q5_0, "q8"),
	ENTRY(q4_k, "q8_K"),
};

static const tp_quant_kernel *find(const char *name, int level, bool exact)
{
	if (!name)
		return NULL;
	for (size_t i = 0; i < sizeof(kernels) / sizeof(kernels[0]); i++)
		if (strcmp(kernels[i].name, name) == 0) {
#ifdef KG_X86
			if (level >= TP_KERNEL_AVX512 && !exact)
				return &kernels[i].vnni;
			if (level >= TP_KERNEL_AVX2)
				return exact ? &kernels[i].exact_simd : &kernels[i].simd;
#else
			(void)level;
#endif
			return exact ? &kernels[i].exact_c : &kernels[i].c;
		}
	return NULL;
}

const tp_quant_kernel *tp_quant_kernel_ggml(const char *name, int level)
{
	return find(name, level, false);
}

const tp_quant_kernel *tp_quant_kernel_ggml_exact(const char *name, int level)
{
	return find(name, level, true);
}

#ifndef KA_AMX
bool tp_quant_kernel_ggml_amx(void)
{
	return false;
}

bool tp_quant_kernel_ggml_amx_allow(bool on)
{
	(void)on;
	return true;
}
#endif
