/*
 * Kernels of the group family: rtnB_gG (also what GPTQ and AWQ produce),
 * int4_int2_residual, int4_sparse25, nf4, nf4_dq, and the fp16 / bf16
 * baseline. Products come straight from the packed bytes; activations stay
 * fp32, so a result equals the format's dequantize followed by fp32 dot
 * products up to summation order, except in the AVX-512 decode of rtnB_gG
 * and int4_sparse25, which rounds the input to 8 bits per group as llama.cpp
 * does (q8_quantize; never under tp_quant_kernel_exact).
 *
 * Each format has a segment decoder: row r, columns c0..c1 widened to fp32.
 * The plain-C one is the reference (the same arithmetic as the format's
 * dequantize_rows); the AVX2 one gives the same bits.
 *  - Decode (n < GEMM_MIN inputs): rows are streamed and widened in
 *    registers; the group formats and nf4 sum code * x per group or block
 *    and apply the scale once per group.
 *  - Prefill: 16 rows x KC columns are widened once into a k-major panel and
 *    multiplied with 6 inputs at a time (a 6 x 16 register tile), as
 *    runtime/matmul.c does for fp32 weights.
 * The SIMD paths need cols % 8 == 0 (rows then start on whole 8-code
 * chunks); other shapes take the plain-C kernel.
 */
#include <float.h>
#include <pthread.h>

#include "kernels_internal.h"
#include "quant_internal.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define TP_HAVE_X86 1
#endif

#define SEG 256     /* columns the plain-C kernel widens at a time */
#define KC 256      /* k block of a prefill panel: 16 KiB of fp32; <= SEG */
#define PANEL 16    /* rows per panel */
#define MR 6        /* inputs per register tile */
#define GEMM_MIN 4  /* from this many inputs on, widen panels once */
_Static_assert(KC <= SEG, "segment decoders widen at most SEG columns");

/* Row r, columns c0..c1 of the packed matrix widened into out[c1 - c0]. */
typedef void (*seg_fn)(const void *packed, size_t rows, size_t cols, size_t r, size_t c0,
		       size_t c1, float *out);

/* ---- nf4_dq's 8-bit map, built once (it is sorted at build time) -------- */

static float dq_map[256];
static pthread_once_t dq_once = PTHREAD_ONCE_INIT;

static void dq_map_init(void)
{
	tp_quant_nf4_dq_map(dq_map);
}

static const float *dq_code(void)
{
	pthread_once(&dq_once, dq_map_init);
	return dq_map;
}

/* ---- plain-C segment decoders: the references ---------------------------- */

static void grp_seg_c(int bits, size_t group, const void *packed, size_t rows, size_t cols,
		      size_t r, size_t c0, size_t c1, float *out)
{
	size_t ngr = (cols + group - 1) / group, ng = rows * ngr;
	const uint8_t *p = packed, *zp = p + 2 * ng, *qp = zp + tp_quant_bits_bytes(ng, bits);
	for (size_t c = c0; c < c1; c++) {
		size_t g = r * ngr + c / group;
		float s = tp_fp16_to_f32(tp_quant_get_u16(p + 2 * g));
		int z = (int)tp_quant_bits_get(zp, g, bits);
		int q = (int)tp_quant_bits_get(qp, r * cols + c, bits);
		out[c - c0] = (float)(q - z) * s;
	}
}

/* int4_int2_residual: the 4-bit part, then the 2-bit part added (c1 - c0
 * <= SEG: callers widen at most SEG or KC columns at a time). */
static void int4_int2_residual_seg_c(const void *packed, size_t rows, size_t cols, size_t r,
				     size_t c0, size_t c1, float *out)
{
	float rest[SEG];
	grp_seg_c(4, 128, packed, rows, cols, r, c0, c1, out);
	grp_seg_c(2, 128, (const uint8_t *)packed + tp_quant_group_packed_size(4, 128, rows, cols),
		  rows, cols, r, c0, c1, rest);
	for (size_t c = c0; c < c1; c++)
		out[c - c0] += rest[c - c0];
}

static unsigned nib_get(const uint8_t *nib, size_t i)
{
	return i % 2 ? nib[i / 2] & 0xfu : (unsigned)nib[i / 2] >> 4;
}

static size_t nf4_blocks(size_t rows, size_t cols)
{
	return (rows * cols + 63) / 64;
}

static void nf4_seg_c(const void *packed, size_t rows, size_t cols, size_t r, size_t c0,
		      size_t c1, float *out)
{
	const uint8_t *p = packed, *nib = p + 4 * nf4_blocks(rows, cols);
	for (size_t i = r * cols + c0; i < r * cols + c1; i++)
		out[i - r * cols - c0] =
			tp_quant_nf4_code[nib_get(nib, i)] * tp_quant_get_f32(p + 4 * (i / 64));
}

/* nf4_dq: absmax of block b, as nf4.c computes it. */
static float dq_absmax(const uint8_t *p, const uint8_t *q8, const float *code, size_t b)
{
	return code[q8[b]] * tp_quant_get_f32(p + 4 + 4 * (b / 256)) + tp_quant_get_f32(p);
}

static void nf4_dq_seg_c(const void *packed, size_t rows, size_t cols, size_t r, size_t c0,
			size_t c1, float *out)
{
	size_t nb = nf4_blocks(rows, cols), nb2 = (nb + 255) / 256;
	const uint8_t *p = packed, *q8 = p + 4 + 4 * nb2, *nib = q8 + nb;
	const float *code = dq_code();
	for (size_t i = r * cols + c0; i < r * cols + c1; i++)
		out[i - r * cols - c0] =
			tp_quant_nf4_code[nib_get(nib, i)] * dq_absmax(p, q8, code, i / 64);
}

static void fp16_seg_c(const void *packed, size_t rows, size_t cols, size_t r, size_t c0,
		       size_t c1, float *out)
{
	(void)rows;
	const uint8_t *p = (const uint8_t *)packed + 2 * (r * cols);
	for (size_t c = c0; c < c1; c++)
		out[c - c0] = tp_fp16_to_f32(tp_quant_get_u16(p + 2 * c));
}

static void bf16_seg_c(const void *packed, size_t rows, size_t cols, size_t r, size_t c0,
		       size_t c1, float *out)
{
	(void)rows;
	const uint8_t *p = (const uint8_t *)packed + 2 * (r * cols);
	for (size_t c = c0; c < c1; c++)
		out[c - c0] = tp_bf16_to_f32(tp_quant_get_u16(p + 2 * c));
}

/* The plain-C kernel of any format: SEG columns widened at a time, then one
 * sequential fp32 sum per input and segment. */
static void rows_c(seg_fn seg, const void *packed, size_t rows, size_t cols, size_t r0,
		   size_t r1, const float *x, size_t ldx, size_t n, float *y, size_t ldy)
{
	float w[SEG];
	for (size_t r = r0; r < r1; r++) {
		for (size_t t = 0; t < n; t++)
			y[t * ldy + (r - r0)] = 0.0f;
		for (size_t c0 = 0; c0 < cols; c0 += SEG) {
			size_t c1 = c0 + SEG < cols ? c0 + SEG : cols;
			seg(packed, rows, cols, r, c0, c1, w);
			for (size_t t = 0; t < n; t++) {
				const float *xt = x + t * ldx;
				float acc = 0.0f;
				for (size_t c = c0; c < c1; c++)
					acc += w[c - c0] * xt[c];
				y[t * ldy + (r - r0)] += acc;
			}
		}
	}
}

/* ---- 8-bit activations (the decode of rtnB_gG on AVX-512 VNNI) ----------
 * Per group of G columns the input is rounded to int8 with d = amax / 127
 * (as llama.cpp's q8 activations), so that a group's products are one
 * integer dot product of the unsigned codes with the int8 inputs (vpdpbusd),
 * the zero point folded in as - z * sum(xq) of the group, and scale * d is
 * applied once per group:
 *   row . x ~= sum_g s_g d_g (sum_c q_c xq_c - z_g sum_c xq_c).
 * That is the dequantized weights times the rounded input, exactly up to
 * the fp32 rounding of the per-group terms and their sum. Only decode with
 * whole 64-column steps and whole groups (cols % 64 == 0, cols % G == 0)
 * takes it; prefill and other widths stay on the fp32 kernels, and quality
 * (tp_quant_kernel_exact) never reaches this level.
 * A prepared row holds the fp32 input (as the format's fp32 kernel wants
 * it), then the int8 inputs, then per group d (float) and sum(xq) (int32),
 * each part 64-byte rounded. The 4-bit kernel's int8 inputs are ordered per
 * 64 columns as the 32 even ones, then the 32 odd ones (the low and high
 * nibbles of 32 code bytes); the 3- and 2-bit kernels' in column order. */
#define Q8_FAST(cols, group) ((cols) % 64 == 0 && (cols) % (group) == 0)

static size_t q8_up(size_t n)
{
	return (n + 63) / 64 * 64;
}

static size_t q8_size(size_t cols, size_t group)
{
	size_t ngr = (cols + group - 1) / group;
	return q8_up(4 * cols) + q8_up(cols) + 2 * q8_up(4 * ngr);
}

typedef struct q8_in {
	const int8_t *q;
	const float *d;
	const int32_t *sum;
} q8_in;

static q8_in q8_open(const void *xp, size_t cols, size_t group)
{
	size_t ngr = (cols + group - 1) / group;
	const uint8_t *b = (const uint8_t *)xp + q8_up(4 * cols);
	q8_in v;
	v.q = (const int8_t *)b;
	v.d = (const float *)(const void *)(b + q8_up(cols));
	v.sum = (const int32_t *)(const void *)(b + q8_up(cols) + q8_up(4 * ngr));
	return v;
}

/* Where column c's int8 input sits. */
static size_t q8_at(size_t c, bool nib)
{
	return nib ? c / 64 * 64 + c % 2 * 32 + c % 64 / 2 : c;
}

/* The int8 part of a prepared row (the fp32 part is the caller's). A group
 * with a non-finite input gets d = NaN, so its rows come out NaN as on the
 * fp32 path. */
static void q8_quantize(const float *x, size_t cols, size_t group, bool nib, void *xp)
{
	if (!Q8_FAST(cols, group))
		return;
	uint8_t *b = (uint8_t *)xp + q8_up(4 * cols);
	int8_t *q = (int8_t *)b;
	float *d = (float *)(void *)(b + q8_up(cols));
	int32_t *sum = (int32_t *)(void *)(b + q8_up(cols) + q8_up(4 * (cols / group)));
	for (size_t g = 0; g < cols / group; g++) {
		const float *xg = x + g * group;
		float amax = 0.0f;
		bool finite = true;
		for (size_t c = 0; c < group; c++) {
			float a = fabsf(xg[c]);
			if (!(a <= FLT_MAX))
				finite = false;
			else if (a > amax)
				amax = a;
		}
		/* in double: 127 / amax overflows fp32 for tiny inputs */
		double id = finite && amax > 0.0f ? 127.0 / amax : 0.0;
		int32_t s = 0;
		for (size_t c = 0; c < group; c++) {
			long v = lrint((double)xg[c] * id);
			v = v > 127 ? 127 : v < -127 ? -127 : v;
			q[q8_at(g * group + c, nib)] = (int8_t)v;
			s += (int32_t)v;
		}
		d[g] = finite ? amax / 127.0f : NAN;
		sum[g] = s;
	}
}

/* The plain-C reference: row r . x through the int8 inputs. */
static float q8_row_c(int bits, size_t group, bool nib, const void *packed, size_t rows,
		      size_t cols, size_t r, const q8_in *x)
{
	size_t ngr = cols / group, ng = rows * ngr;
	const uint8_t *p = packed, *zp = p + 2 * ng, *qp = zp + tp_quant_bits_bytes(ng, bits);
	float acc = 0.0f;
	for (size_t g = 0; g < ngr; g++) {
		size_t gi = r * ngr + g;
		int32_t isum = -(int32_t)tp_quant_bits_get(zp, gi, bits) * x->sum[g];
		for (size_t c = g * group; c < (g + 1) * group; c++)
			isum += (int32_t)tp_quant_bits_get(qp, r * cols + c, bits) * x->q[q8_at(c, nib)];
		acc += (float)isum * (tp_fp16_to_f32(tp_quant_get_u16(p + 2 * gi)) * x->d[g]);
	}
	return acc;
}

/* The reference kernel: the decode above where it applies, else the fp32
 * plain-C kernel on the prepared row's fp32 part (in column order). */
static void q8_rows_c(int bits, size_t group, bool nib, seg_fn seg, const void *packed,
		      size_t rows, size_t cols, size_t r0, size_t r1, const void *xv, size_t n,
		      float *y, size_t ldy)
{
	size_t xs = q8_size(cols, group);
	if (n >= GEMM_MIN || !Q8_FAST(cols, group)) {
		rows_c(seg, packed, rows, cols, r0, r1, xv, xs / 4, n, y, ldy);
		return;
	}
	for (size_t t = 0; t < n; t++) {
		q8_in v = q8_open((const uint8_t *)xv + t * xs, cols, group);
		for (size_t r = r0; r < r1; r++)
			y[t * ldy + (r - r0)] = q8_row_c(bits, group, nib, packed, rows, cols, r, &v);
	}
}

/* ---- int4_sparse25: rtn4 g128 over the kept 3/4 of each row ------------
 * Layout (group.c): scales and zeros as rtn4_g128's, a keep bitmap of
 * rows * cols bits, then the kept codes only, 4 bits each, row after row
 * (every row keeps sp_kept(cols)). A dropped weight is 0, that is, code =
 * its group's zero. Only the AVX-512 decode (VBMI2's byte expand puts a
 * row's kept codes back in their columns) and its plain-C reference exist:
 * other levels widen rows, as before. */
static size_t sp_kept(size_t cols)
{
	return cols - cols / 4;
}

typedef struct sp_view {
	const uint8_t *s, *z, *m, *q, *qend;
	size_t ngr;
} sp_view;

static sp_view sp_open(const void *packed, size_t rows, size_t cols)
{
	sp_view v;
	v.ngr = (cols + 127) / 128;
	size_t ng = rows * v.ngr;
	v.s = packed;
	v.z = v.s + 2 * ng;
	v.m = v.z + tp_quant_bits_bytes(ng, 4);
	v.q = v.m + tp_quant_bits_bytes(rows * cols, 1);
	v.qend = v.q + tp_quant_bits_bytes(rows * sp_kept(cols), 4);
	return v;
}

/* Set bits of the bitmap in [i0, i1). */
static size_t sp_rank(const uint8_t *m, size_t i0, size_t i1)
{
	size_t n = 0, i = i0;
	for (; i < i1 && i % 8; i++)
		n += (m[i / 8] >> (i % 8)) & 1u;
	for (; i + 8 <= i1; i += 8)
		n += (size_t)__builtin_popcount(m[i / 8]);
	for (; i < i1; i++)
		n += (m[i / 8] >> (i % 8)) & 1u;
	return n;
}

/* The reference segment decoder (the arithmetic of group.c's dequantize). */
static void int4_sparse25_seg_c(const void *packed, size_t rows, size_t cols, size_t r,
				size_t c0, size_t c1, float *out)
{
	sp_view v = sp_open(packed, rows, cols);
	size_t k = r * sp_kept(cols) + sp_rank(v.m, r * cols, r * cols + c0);
	for (size_t c = c0; c < c1; c++) {
		size_t i = r * cols + c;
		if (!((v.m[i / 8] >> (i % 8)) & 1u)) {
			out[c - c0] = 0.0f;
			continue;
		}
		size_t g = r * v.ngr + c / 128;
		float s = tp_fp16_to_f32(tp_quant_get_u16(v.s + 2 * g));
		int z = (int)tp_quant_bits_get(v.z, g, 4), q = (int)tp_quant_bits_get(v.q, k++, 4);
		out[c - c0] = (float)(q - z) * s;
	}
}

/* Row r . x through 8-bit inputs in column order (see q8_quantize). */
static float sp_row_c(const void *packed, size_t rows, size_t cols, size_t r, const q8_in *x)
{
	sp_view v = sp_open(packed, rows, cols);
	size_t k = r * sp_kept(cols);
	float acc = 0.0f;
	for (size_t g = 0; g < v.ngr; g++) {
		size_t gi = r * v.ngr + g;
		int32_t z = (int32_t)tp_quant_bits_get(v.z, gi, 4), isum = -z * x->sum[g];
		for (size_t c = g * 128; c < (g + 1) * 128; c++) {
			size_t i = r * cols + c;
			int32_t q = (v.m[i / 8] >> (i % 8)) & 1u ? (int32_t)tp_quant_bits_get(v.q, k++, 4) : z;
			isum += q * x->q[c];
		}
		acc += (float)isum * (tp_fp16_to_f32(tp_quant_get_u16(v.s + 2 * gi)) * x->d[g]);
	}
	return acc;
}

static size_t int4_sparse25_size_q8(size_t cols)
{
	return q8_size(cols, 128);
}

static void int4_sparse25_x_q8(const float *x, size_t cols, void *xp)
{
	memcpy(xp, x, cols * sizeof(float));
	q8_quantize(x, cols, 128, false, xp);
}

static void int4_sparse25_rows_q8c(const void *packed, size_t rows, size_t cols, size_t r0,
				   size_t r1, const void *xv, size_t n, float *y, size_t ldy)
{
	size_t xs = q8_size(cols, 128);
	if (n >= GEMM_MIN || !Q8_FAST(cols, 128)) {
		rows_c(int4_sparse25_seg_c, packed, rows, cols, r0, r1, xv, xs / 4, n, y, ldy);
		return;
	}
	for (size_t t = 0; t < n; t++) {
		q8_in v = q8_open((const uint8_t *)xv + t * xs, cols, 128);
		for (size_t r = r0; r < r1; r++)
			y[t * ldy + (r - r0)] = sp_row_c(packed, rows, cols, r, &v);
	}
}

static const tp_quant_kernel int4_sparse25_kq8c = {"int4_sparse25 x q8 c", int4_sparse25_size_q8,
						   int4_sparse25_x_q8, int4_sparse25_rows_q8c};

#ifdef TP_HAVE_X86
#define AVX2 __attribute__((target("avx2,fma,f16c")))
#define INLINE static inline __attribute__((always_inline))
/* Rows are short (a few KiB) and read R at a time, too short for the
 * hardware prefetcher to ramp up on each: the decode kernels fetch the next
 * R rows' bytes while they work on these (past the end is harmless). */
#define PREFETCH(p) _mm_prefetch((const char *)(p), _MM_HINT_T0)

AVX2 INLINE float hsum(__m256 v)
{
	__m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
	s = _mm_add_ps(s, _mm_movehl_ps(s, s));
	s = _mm_add_ss(s, _mm_movehdup_ps(s));
	return _mm_cvtss_f32(s);
}

/* ---- group codes: 8 codes of `bits` bits from p (a whole chunk starts on
 * a byte: 8 codes are `bits` bytes). careful: p is within 4 bytes of the
 * buffer's end, so 3-bit codes are read bytewise. */
AVX2 INLINE __m256i grp_codes(const uint8_t *p, int bits, bool careful)
{
	uint32_t v;
	if (bits == 2) {
		uint16_t h;
		memcpy(&h, p, 2);
		v = h;
	} else if (bits == 3 && careful) {
		v = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16;
	} else {
		memcpy(&v, p, 4);
	}
	__m256i sh = bits == 2	 ? _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14)
		     : bits == 3 ? _mm256_setr_epi32(0, 3, 6, 9, 12, 15, 18, 21)
				 : _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28);
	return _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32((int)v), sh),
				_mm256_set1_epi32((1 << bits) - 1));
}

typedef struct grp_view {
	const uint8_t *s, *z, *q, *qend;
	size_t ngr;
} grp_view;

INLINE grp_view grp_open(int bits, size_t group, const void *packed, size_t rows, size_t cols)
{
	grp_view v;
	v.ngr = (cols + group - 1) / group;
	size_t ng = rows * v.ngr;
	v.s = packed;
	v.z = v.s + 2 * ng;
	v.q = v.z + tp_quant_bits_bytes(ng, bits);
	v.qend = v.q + tp_quant_bits_bytes(rows * cols, bits);
	return v;
}

/* Zero of group gi: a byte or two, not a loop over bits (it is fetched per
 * group and row, next to only group / 8 vector steps). */
INLINE int grp_zero(const grp_view *v, size_t gi, int bits)
{
	size_t bit = gi * (size_t)bits;
	unsigned b = v->z[bit / 8];
	if (bit % 8 + (size_t)bits > 8)
		b |= (unsigned)v->z[bit / 8 + 1] << 8;
	return (int)((b >> (bit % 8)) & ((1u << bits) - 1));
}

/* Scale of group gi, broadcast. */
AVX2 INLINE __m256 grp_scale(const grp_view *v, size_t gi)
{
	return _mm256_cvtph_ps(_mm_set1_epi16((short)tp_quant_get_u16(v->s + 2 * gi)));
}

/* out = the widened weights, or out += them when add (int4_int2_residual's
 * second part, added as its dequantize adds it). */
AVX2 INLINE void grp_seg_avx2(int bits, size_t group, const void *packed, size_t rows,
			      size_t cols, size_t r, size_t c0, size_t c1, float *out, bool add)
{
	grp_view v = grp_open(bits, group, packed, rows, cols);
	const uint8_t *qr = v.q + r * cols / 8 * (size_t)bits;
	for (size_t c = c0; c < c1;) {
		size_t g = c / group, ge = (g + 1) * group < c1 ? (g + 1) * group : c1;
		size_t gi = r * v.ngr + g;
		__m256 s = grp_scale(&v, gi);
		__m256i z = _mm256_set1_epi32(grp_zero(&v, gi, bits));
		for (; c < ge; c += 8) {
			const uint8_t *p = qr + c / 8 * (size_t)bits;
			__m256i q = grp_codes(p, bits, p + 4 > v.qend);
			__m256 w = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(q, z)), s);
			if (add)
				w = _mm256_add_ps(_mm256_loadu_ps(out + (c - c0)), w);
			_mm256_storeu_ps(out + (c - c0), w);
		}
	}
}

/* Decode: y[r - r0] = row r . x, R rows at a time sharing the loads of x;
 * per group, sum (q - z) * x, then one FMA with the scale. */
#define GRP_GEMV(R)                                                                            \
	AVX2 INLINE void grp_gemv##R(int bits, size_t group, grp_view v, size_t cols, size_t r, \
				     const float *x, float *y, bool add)                       \
	{                                                                                      \
		size_t rb = cols / 8 * (size_t)bits;                                           \
		const uint8_t *qr = v.q + r * rb;                                              \
		__m256 tot[R], acc[R];                                                         \
		__m256i z[R];                                                                  \
		__m256 s[R];                                                                   \
		_Pragma("GCC unroll 4") for (int j = 0; j < R; j++) tot[j] =                  \
			_mm256_setzero_ps();                                                   \
		for (size_t g = 0; g < v.ngr; g++) {                                           \
			size_t c0 = g * group, c1 = c0 + group < cols ? c0 + group : cols;     \
			_Pragma("GCC unroll 4") for (int j = 0; j < R; j++)                   \
			{                                                                      \
				size_t gi = (r + (size_t)j) * v.ngr + g;                       \
				s[j] = grp_scale(&v, gi);                                      \
				z[j] = _mm256_set1_epi32(grp_zero(&v, gi, bits));              \
				acc[j] = _mm256_setzero_ps();                                  \
			}                                                                      \
			for (size_t c = c0; c < c1; c += 8) {                                  \
				__m256 xv = _mm256_loadu_ps(x + c);                            \
				_Pragma("GCC unroll 4") for (int j = 0; j < R; j++)           \
				{                                                              \
					const uint8_t *p = qr + (size_t)j * rb + c / 8 * (size_t)bits; \
					if (c % 64 == 0)                                       \
						PREFETCH(p + R * rb);                          \
					__m256i q = grp_codes(p, bits, bits == 3 && p + 4 > v.qend); \
					acc[j] = _mm256_fmadd_ps(                              \
						_mm256_cvtepi32_ps(_mm256_sub_epi32(q, z[j])), xv, \
						acc[j]);                                       \
				}                                                              \
			}                                                                      \
			_Pragma("GCC unroll 4") for (int j = 0; j < R; j++) tot[j] =          \
				_mm256_fmadd_ps(acc[j], s[j], tot[j]);         \
		}                                                                              \
		_Pragma("GCC unroll 4") for (int j = 0; j < R; j++) y[j] =                    \
			add ? y[j] + hsum(tot[j]) : hsum(tot[j]);                              \
	}
GRP_GEMV(4)
GRP_GEMV(1)

/* y = W x, or y += W x when add. */
AVX2 INLINE void grp_gemv(int bits, size_t group, const void *packed, size_t rows, size_t cols,
			  size_t r0, size_t r1, const float *x, float *y, bool add)
{
	grp_view v = grp_open(bits, group, packed, rows, cols);
	size_t r = r0;
	for (; r + 4 <= r1; r += 4)
		grp_gemv4(bits, group, v, cols, r, x, y + (r - r0), add);
	for (; r < r1; r++)
		grp_gemv1(bits, group, v, cols, r, x, y + (r - r0), add);
}

/* ---- int4_int2_residual: rtn4_g128 then rtn2_g128 of the rest, one after
 * the other; the bit-stream paths (inputs in column order) for both. */
static size_t resid_first(size_t rows, size_t cols)
{
	return tp_quant_group_packed_size(4, 128, rows, cols);
}

AVX2 INLINE void resid_seg_avx2(int unused, const void *packed, size_t rows, size_t cols,
				size_t r, size_t c0, size_t c1, float *out)
{
	(void)unused;
	grp_seg_avx2(4, 128, packed, rows, cols, r, c0, c1, out, false);
	grp_seg_avx2(2, 128, (const uint8_t *)packed + resid_first(rows, cols), rows, cols, r, c0,
		     c1, out, true);
}

AVX2 INLINE void resid_gemv(int unused, const void *packed, size_t rows, size_t cols, size_t r0,
			    size_t r1, const float *x, float *y)
{
	(void)unused;
	grp_gemv(4, 128, packed, rows, cols, r0, r1, x, y, false);
	grp_gemv(2, 128, (const uint8_t *)packed + resid_first(rows, cols), rows, cols, r0, r1, x,
		 y, true);
}

/* ---- 4-bit groups: two codes a byte, the even column in the low nibble.
 * The input is prepared per 16 columns as x0 x2 .. x14, then x1/16 x3/16 ..
 * x15/16, so one zero-extending load of 8 bytes feeds both halves: the low
 * nibbles (q) with the even inputs and the high ones masked in place (16 q)
 * with the odd inputs, no shifts. Scaling by 16 and by 1/16 is exact, so
 * every product is the one of the dequantized weight (an input below 2^-122
 * in magnitude would lose bits). */
static size_t g4_x_size(size_t cols)
{
	return cols * sizeof(float);
}

static void g4_x_prepare(const float *x, size_t cols, void *xp)
{
	float *o = xp;
	if (cols % 16) { /* the kernel takes the plain-C path, in column order */
		memcpy(o, x, cols * sizeof(float));
		return;
	}
	for (size_t c = 0; c < cols; c += 16)
		for (size_t j = 0; j < 8; j++) {
			o[c + j] = x[c + 2 * j];
			o[c + 8 + j] = x[c + 2 * j + 1] * 0.0625f;
		}
}

/* Columns c0..c1 (multiples of 16) of row r in the prepared order: the even
 * columns' weights, then 16 times the odd ones'. */
AVX2 INLINE void g4_seg_avx2(size_t group, const void *packed, size_t rows, size_t cols,
			     size_t r, size_t c0, size_t c1, float *out)
{
	grp_view v = grp_open(4, group, packed, rows, cols);
	const uint8_t *qr = v.q + r * (cols / 2);
	const __m256i lo = _mm256_set1_epi32(0x0f), hi = _mm256_set1_epi32(0xf0);
	for (size_t c = c0; c < c1;) {
		size_t g = c / group, ge = (g + 1) * group < c1 ? (g + 1) * group : c1;
		size_t gi = r * v.ngr + g;
		__m256 s = grp_scale(&v, gi);
		int z = grp_zero(&v, gi, 4);
		__m256i zl = _mm256_set1_epi32(z), zh = _mm256_set1_epi32(z << 4);
		for (; c < ge; c += 16) {
			__m256i b = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(const void *)(qr + c / 2)));
			__m256 wl = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_and_si256(b, lo), zl));
			__m256 wh = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_and_si256(b, hi), zh));
			_mm256_storeu_ps(out + (c - c0), _mm256_mul_ps(wl, s));
			_mm256_storeu_ps(out + (c - c0) + 8, _mm256_mul_ps(wh, s));
		}
	}
}

/* Decode, R rows at a time; x is prepared. */
#define G4_GEMV(R)                                                                             \
	AVX2 INLINE void g4_gemv##R(size_t group, grp_view v, size_t cols, size_t r,            \
				    const float *x, float *y)                                  \
	{                                                                                      \
		size_t rb = cols / 2;                                                          \
		const uint8_t *qr = v.q + r * rb;                                              \
		const __m256i lo = _mm256_set1_epi32(0x0f), hi = _mm256_set1_epi32(0xf0);      \
		__m256 tot[R], al[R], ah[R];                                                   \
		__m256i zl[R], zh[R];                                                          \
		__m256 s[R];                                                                   \
		_Pragma("GCC unroll 4") for (int j = 0; j < R; j++) tot[j] =                  \
			_mm256_setzero_ps();                                                   \
		for (size_t g = 0; g < v.ngr; g++) {                                           \
			size_t c0 = g * group, c1 = c0 + group < cols ? c0 + group : cols;     \
			_Pragma("GCC unroll 4") for (int j = 0; j < R; j++)                   \
			{                                                                      \
				size_t gi = (r + (size_t)j) * v.ngr + g;                       \
				s[j] = grp_scale(&v, gi);                                      \
				zl[j] = _mm256_set1_epi32(grp_zero(&v, gi, 4));                \
				zh[j] = _mm256_slli_epi32(zl[j], 4);                           \
				al[j] = ah[j] = _mm256_setzero_ps();                           \
			}                                                                      \
			for (size_t c = c0; c < c1; c += 16) {                                 \
				__m256 xl = _mm256_loadu_ps(x + c), xh = _mm256_loadu_ps(x + c + 8); \
				_Pragma("GCC unroll 4") for (int j = 0; j < R; j++)           \
				{                                                              \
					if (c % 128 == 0)                                      \
						PREFETCH(qr + (size_t)(j + R) * rb + c / 2);   \
					__m256i b = _mm256_cvtepu8_epi32(_mm_loadl_epi64(      \
						(const __m128i *)(const void *)(qr + (size_t)j * rb + c / 2))); \
					al[j] = _mm256_fmadd_ps(                               \
						_mm256_cvtepi32_ps(_mm256_sub_epi32(           \
							_mm256_and_si256(b, lo), zl[j])),      \
						xl, al[j]);                                    \
					ah[j] = _mm256_fmadd_ps(                               \
						_mm256_cvtepi32_ps(_mm256_sub_epi32(           \
							_mm256_and_si256(b, hi), zh[j])),      \
						xh, ah[j]);                                    \
				}                                                              \
			}                                                                      \
			_Pragma("GCC unroll 4") for (int j = 0; j < R; j++) tot[j] =          \
				_mm256_fmadd_ps(_mm256_add_ps(al[j], ah[j]), s[j], tot[j]);                                       \
		}                                                                              \
		_Pragma("GCC unroll 4") for (int j = 0; j < R; j++) y[j] = hsum(tot[j]);      \
	}
G4_GEMV(4)
G4_GEMV(1)

AVX2 INLINE void g4_gemv(size_t group, const void *packed, size_t rows, size_t cols, size_t r0,
			 size_t r1, const float *x, float *y)
{
	grp_view v = grp_open(4, group, packed, rows, cols);
	size_t r = r0;
	for (; r + 4 <= r1; r += 4)
		g4_gemv4(group, v, cols, r, x, y + (r - r0));
	for (; r < r1; r++)
		g4_gemv1(group, v, cols, r, x, y + (r - r0));
}

/* ---- nf4: two codes a byte, the even element in the high nibble -------- */

/* code[q] of the 8 codes at nib (element pairs), by two 8-entry lookups. */
AVX2 INLINE __m256 nf4_values(const uint8_t *nib, __m256 lo, __m256 hi)
{
	uint32_t v;
	memcpy(&v, nib, 4);
	__m256i q = _mm256_srlv_epi32(_mm256_set1_epi32((int)v),
				      _mm256_setr_epi32(4, 0, 12, 8, 20, 16, 28, 24));
	/* permutevar reads the low 3 bits; bit 3 moved to the sign picks. */
	return _mm256_blendv_ps(_mm256_permutevar8x32_ps(lo, q), _mm256_permutevar8x32_ps(hi, q),
				_mm256_castsi256_ps(_mm256_slli_epi32(q, 28)));
}

/* Block absmax of nf4 (dq = NULL) or nf4_dq. */
typedef struct nf4_view {
	const uint8_t *p, *q8, *nib;
	const float *code; /* nf4_dq's map, or NULL */
} nf4_view;

INLINE nf4_view nf4_open(const void *packed, size_t rows, size_t cols, bool dq)
{
	nf4_view v;
	size_t nb = nf4_blocks(rows, cols);
	v.p = packed;
	if (dq) {
		v.q8 = v.p + 4 + 4 * ((nb + 255) / 256);
		v.nib = v.q8 + nb;
		v.code = dq_code();
	} else {
		v.q8 = NULL;
		v.nib = v.p + 4 * nb;
		v.code = NULL;
	}
	return v;
}

/* Inline in the AVX2 code: a call to plain SSE code from it costs a state
 * transition per block. */
AVX2 INLINE float nf4_absmax(const nf4_view *v, size_t b)
{
	if (!v->code)
		return tp_quant_get_f32(v->p + 4 * b);
	return v->code[v->q8[b]] * tp_quant_get_f32(v->p + 4 + 4 * (b / 256)) +
	       tp_quant_get_f32(v->p);
}

AVX2 INLINE void nf4f_seg_avx2(bool dq, const void *packed, size_t rows, size_t cols, size_t r,
			      size_t c0, size_t c1, float *out)
{
	nf4_view v = nf4_open(packed, rows, cols, dq);
	__m256 lo = _mm256_loadu_ps(tp_quant_nf4_code), hi = _mm256_loadu_ps(tp_quant_nf4_code + 8);
	size_t i0 = r * cols;
	for (size_t c = c0; c < c1;) {
		size_t b = (i0 + c) / 64, e = (b + 1) * 64 - i0;
		if (e > c1)
			e = c1;
		__m256 a = _mm256_set1_ps(nf4_absmax(&v, b));
		for (; c < e; c += 8)
			_mm256_storeu_ps(out + (c - c0),
					 _mm256_mul_ps(nf4_values(v.nib + (i0 + c) / 2, lo, hi), a));
	}
}

/* Decode: per block the sum of code * x, then one FMA with the absmax. */
AVX2 INLINE void nf4f_gemv(bool dq, const void *packed, size_t rows, size_t cols, size_t r0,
			  size_t r1, const float *x, float *y)
{
	nf4_view v = nf4_open(packed, rows, cols, dq);
	__m256 lo = _mm256_loadu_ps(tp_quant_nf4_code), hi = _mm256_loadu_ps(tp_quant_nf4_code + 8);
	size_t r = r0;
	/* Rows of whole blocks: four at a time, sharing the loads of x, four
	 * streams of codes in flight. */
	if (cols % 64 == 0)
		for (; r + 4 <= r1; r += 4) {
			const uint8_t *n0 = v.nib + r * cols / 2, *n1 = n0 + cols / 2,
				      *n2 = n1 + cols / 2, *n3 = n2 + cols / 2;
			size_t b0 = r * cols / 64, bs = cols / 64;
			__m256 t0 = _mm256_setzero_ps(), t1 = t0, t2 = t0, t3 = t0;
			for (size_t c = 0; c < cols; c += 64) {
				__m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
				PREFETCH(n0 + 4 * (cols / 2) + c / 2);
				PREFETCH(n1 + 4 * (cols / 2) + c / 2);
				PREFETCH(n2 + 4 * (cols / 2) + c / 2);
				PREFETCH(n3 + 4 * (cols / 2) + c / 2);
				for (size_t k = c; k < c + 64; k += 8) {
					__m256 xv = _mm256_loadu_ps(x + k);
					a0 = _mm256_fmadd_ps(nf4_values(n0 + k / 2, lo, hi), xv, a0);
					a1 = _mm256_fmadd_ps(nf4_values(n1 + k / 2, lo, hi), xv, a1);
					a2 = _mm256_fmadd_ps(nf4_values(n2 + k / 2, lo, hi), xv, a2);
					a3 = _mm256_fmadd_ps(nf4_values(n3 + k / 2, lo, hi), xv, a3);
				}
				size_t b = b0 + c / 64;
				t0 = _mm256_fmadd_ps(a0, _mm256_set1_ps(nf4_absmax(&v, b)), t0);
				t1 = _mm256_fmadd_ps(a1, _mm256_set1_ps(nf4_absmax(&v, b + bs)), t1);
				t2 = _mm256_fmadd_ps(a2, _mm256_set1_ps(nf4_absmax(&v, b + 2 * bs)), t2);
				t3 = _mm256_fmadd_ps(a3, _mm256_set1_ps(nf4_absmax(&v, b + 3 * bs)), t3);
			}
			y[r - r0] = hsum(t0);
			y[r - r0 + 1] = hsum(t1);
			y[r - r0 + 2] = hsum(t2);
			y[r - r0 + 3] = hsum(t3);
		}
	for (; r < r1; r++) {
		size_t i0 = r * cols;
		const uint8_t *nib = v.nib + i0 / 2;
		__m256 tot = _mm256_setzero_ps();
		for (size_t c = 0; c < cols;) {
			size_t b = (i0 + c) / 64, e = (b + 1) * 64 - i0;
			if (e > cols)
				e = cols;
			__m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
			if (e - c == 64) {
				for (int k = 0; k < 2; k++, c += 32) {
					a0 = _mm256_fmadd_ps(nf4_values(nib + c / 2, lo, hi),
							     _mm256_loadu_ps(x + c), a0);
					a1 = _mm256_fmadd_ps(nf4_values(nib + c / 2 + 4, lo, hi),
							     _mm256_loadu_ps(x + c + 8), a1);
					a2 = _mm256_fmadd_ps(nf4_values(nib + c / 2 + 8, lo, hi),
							     _mm256_loadu_ps(x + c + 16), a2);
					a3 = _mm256_fmadd_ps(nf4_values(nib + c / 2 + 12, lo, hi),
							     _mm256_loadu_ps(x + c + 24), a3);
				}
			} else {
				for (; c < e; c += 8)
					a0 = _mm256_fmadd_ps(nf4_values(nib + c / 2, lo, hi),
							     _mm256_loadu_ps(x + c), a0);
			}
			__m256 a = _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3));
			tot = _mm256_fmadd_ps(a, _mm256_set1_ps(nf4_absmax(&v, b)), tot);
		}
		y[r - r0] = hsum(tot);
	}
}

/* ---- fp16 / bf16: widened by F16C or a 16-bit shift -------------------- */

AVX2 INLINE __m256 half8(const uint8_t *p, bool bf)
{
	__m128i h = _mm_loadu_si128((const __m128i *)(const void *)p);
	if (bf)
		return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
	return _mm256_cvtph_ps(h);
}

AVX2 INLINE void halff_seg_avx2(bool bf, const void *packed, size_t rows, size_t cols, size_t r,
			       size_t c0, size_t c1, float *out)
{
	(void)rows;
	const uint8_t *p = (const uint8_t *)packed + 2 * (r * cols);
	for (size_t c = c0; c < c1; c += 8)
		_mm256_storeu_ps(out + (c - c0), half8(p + 2 * c, bf));
}

AVX2 INLINE void halff_gemv(bool bf, const void *packed, size_t rows, size_t cols, size_t r0,
			   size_t r1, const float *x, float *y)
{
	(void)rows;
	const uint8_t *base = packed;
	size_t r = r0;
	for (; r + 4 <= r1; r += 4) {
		const uint8_t *p = base + 2 * (r * cols);
		__m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
		for (size_t c = 0; c < cols; c += 8) {
			__m256 xv = _mm256_loadu_ps(x + c);
			if (c % 32 == 0)
				for (size_t j = 0; j < 4; j++)
					PREFETCH(p + 2 * ((4 + j) * cols + c));
			a0 = _mm256_fmadd_ps(half8(p + 2 * c, bf), xv, a0);
			a1 = _mm256_fmadd_ps(half8(p + 2 * (cols + c), bf), xv, a1);
			a2 = _mm256_fmadd_ps(half8(p + 2 * (2 * cols + c), bf), xv, a2);
			a3 = _mm256_fmadd_ps(half8(p + 2 * (3 * cols + c), bf), xv, a3);
		}
		y[r - r0] = hsum(a0);
		y[r - r0 + 1] = hsum(a1);
		y[r - r0 + 2] = hsum(a2);
		y[r - r0 + 3] = hsum(a3);
	}
	for (; r < r1; r++) {
		const uint8_t *p = base + 2 * (r * cols);
		__m256 a0 = _mm256_setzero_ps(), a1 = a0;
		size_t c = 0;
		for (; c + 16 <= cols; c += 16) {
			a0 = _mm256_fmadd_ps(half8(p + 2 * c, bf), _mm256_loadu_ps(x + c), a0);
			a1 = _mm256_fmadd_ps(half8(p + 2 * c + 16, bf), _mm256_loadu_ps(x + c + 8),
					     a1);
		}
		if (c < cols)
			a0 = _mm256_fmadd_ps(half8(p + 2 * c, bf), _mm256_loadu_ps(x + c), a0);
		y[r - r0] = hsum(_mm256_add_ps(a0, a1));
	}
}

/* ---- prefill: k-major panels and a 6 x 16 register tile ---------------- */

/* panel[k * 16 + i] = w[i * KC + k] for k < kc (a multiple of 8). */
AVX2 static void transpose_panel(const float *w, size_t kc, float *panel)
{
	for (size_t k = 0; k < kc; k += 8)
		for (size_t h = 0; h < PANEL; h += 8) {
			const float *s = w + h * KC + k;
			__m256 r0 = _mm256_loadu_ps(s), r1 = _mm256_loadu_ps(s + KC),
			       r2 = _mm256_loadu_ps(s + 2 * KC), r3 = _mm256_loadu_ps(s + 3 * KC),
			       r4 = _mm256_loadu_ps(s + 4 * KC), r5 = _mm256_loadu_ps(s + 5 * KC),
			       r6 = _mm256_loadu_ps(s + 6 * KC), r7 = _mm256_loadu_ps(s + 7 * KC);
			__m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1),
			       t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3),
			       t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5),
			       t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
			__m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xee),
			       u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xee),
			       u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xee),
			       u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xee);
			float *d = panel + k * PANEL + h;
			_mm256_store_ps(d, _mm256_permute2f128_ps(u0, u4, 0x20));
			_mm256_store_ps(d + PANEL, _mm256_permute2f128_ps(u1, u5, 0x20));
			_mm256_store_ps(d + 2 * PANEL, _mm256_permute2f128_ps(u2, u6, 0x20));
			_mm256_store_ps(d + 3 * PANEL, _mm256_permute2f128_ps(u3, u7, 0x20));
			_mm256_store_ps(d + 4 * PANEL, _mm256_permute2f128_ps(u0, u4, 0x31));
			_mm256_store_ps(d + 5 * PANEL, _mm256_permute2f128_ps(u1, u5, 0x31));
			_mm256_store_ps(d + 6 * PANEL, _mm256_permute2f128_ps(u2, u6, 0x31));
			_mm256_store_ps(d + 7 * PANEL, _mm256_permute2f128_ps(u3, u7, 0x31));
		}
}

/* c[mr][16] (row stride ldc) = (first ? 0 : c) + x[mr][kc] (stride ldx) *
 * panel. Named accumulators stay in the 16 ymm registers; rows past mr
 * repeat row 0 and are not stored. */
#define T_PTRS(i)                                                                      \
	const float *x##i = x + (mr > i ? i : 0) * ldx;                                \
	__m256 c##i##0 = _mm256_setzero_ps(), c##i##1 = c##i##0;                       \
	if (!first && mr > i) {                                                        \
		c##i##0 = _mm256_loadu_ps(c + i * ldc);                                \
		c##i##1 = _mm256_loadu_ps(c + i * ldc + 8);                            \
	}
#define T_FMA(i)                                                                       \
	do {                                                                           \
		__m256 a = _mm256_broadcast_ss(x##i + k);                              \
		c##i##0 = _mm256_fmadd_ps(a, b0, c##i##0);                             \
		c##i##1 = _mm256_fmadd_ps(a, b1, c##i##1);                             \
	} while (0)
#define T_STORE(i)                                                                     \
	if (mr > i) {                                                                  \
		_mm256_storeu_ps(c + i * ldc, c##i##0);                                \
		_mm256_storeu_ps(c + i * ldc + 8, c##i##1);                            \
	}

AVX2 static void tile6x16(size_t mr, const float *x, size_t ldx, const float *panel, size_t kc,
			  float *c, size_t ldc, bool first)
{
	T_PTRS(0) T_PTRS(1) T_PTRS(2) T_PTRS(3) T_PTRS(4) T_PTRS(5)
	for (size_t k = 0; k < kc; k++) {
		__m256 b0 = _mm256_load_ps(panel + k * PANEL), b1 = _mm256_load_ps(panel + k * PANEL + 8);
		T_FMA(0);
		T_FMA(1);
		T_FMA(2);
		T_FMA(3);
		T_FMA(4);
		T_FMA(5);
	}
	T_STORE(0) T_STORE(1) T_STORE(2) T_STORE(3) T_STORE(4) T_STORE(5)
}

/* Prefill: per NB inputs, 16-row panel and KC block, widen once with seg,
 * then the NB inputs 6 at a time. NB bounds the slice of inputs a panel
 * meets to what stays in L2 (rows of x a power of two apart share cache
 * sets); widening again per NB inputs costs little next to NB products. A
 * short last panel goes through a scratch tile so nothing past row r1 of y
 * is written. */
#define NB 64
AVX2 INLINE void gemm(seg_fn seg, const void *packed, size_t rows, size_t cols, size_t r0,
		      size_t r1, const float *x, size_t ldx, size_t n, float *y, size_t ldy)
{
	_Alignas(32) float w[PANEL * KC];
	_Alignas(32) float panel[KC * PANEL];
	float tmp[MR * PANEL];
	for (size_t t0 = 0; t0 < n; t0 += NB) {
		size_t t1 = n - t0 < NB ? n : t0 + NB;
		for (size_t pr = r0; pr < r1; pr += PANEL) {
			size_t nr = r1 - pr < PANEL ? r1 - pr : PANEL;
			for (size_t k0 = 0; k0 < cols; k0 += KC) {
				size_t kc = cols - k0 < KC ? cols - k0 : KC;
				for (size_t i = 0; i < PANEL; i++) {
					if (i < nr)
						seg(packed, rows, cols, pr + i, k0, k0 + kc, w + i * KC);
					else
						memset(w + i * KC, 0, kc * sizeof(float));
				}
				transpose_panel(w, kc, panel);
				for (size_t t = t0; t < t1; t += MR) {
					size_t mr = t1 - t < MR ? t1 - t : MR;
					const float *xt = x + t * ldx + k0;
					float *c = y + t * ldy + (pr - r0);
					if (nr == PANEL) {
						tile6x16(mr, xt, ldx, panel, kc, c, ldy, k0 == 0);
						continue;
					}
					for (size_t i = 0; i < mr; i++)
						memcpy(tmp + i * PANEL, c + i * ldy, nr * sizeof(float));
					tile6x16(mr, xt, ldx, panel, kc, tmp, PANEL, k0 == 0);
					for (size_t i = 0; i < mr; i++)
						memcpy(c + i * ldy, tmp + i * PANEL, nr * sizeof(float));
				}
			}
		}
	}
}

/* ---- AVX-512 (F/BW/VL + VNNI) decode for the 4-bit formats ---------------
 * 32 columns a step: 16 bytes of codes zero-extended to 16 int32 lanes give
 * the 16 even and the 16 odd columns' codes; the input is prepared per 32
 * columns in that order (below). Products stay those of the dequantized
 * weights (fp32 activations), only the summation order differs from the
 * AVX2 kernels. Quality is measured on those (tp_quant_kernel_find). */
#define AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")))

/* rtn4: prepared per 32 columns as x0 x2 .. x30, then x1/16 .. x31/16 (see
 * g4_x_prepare for why 1/16); other widths in column order (plain C). */
static void g4w_x_prepare(const float *x, size_t cols, void *xp)
{
	float *o = xp;
	if (cols % 32) {
		memcpy(o, x, cols * sizeof(float));
		return;
	}
	for (size_t c = 0; c < cols; c += 32)
		for (size_t j = 0; j < 16; j++) {
			o[c + j] = x[c + 2 * j];
			o[c + 16 + j] = x[c + 2 * j + 1] * 0.0625f;
		}
}

/* (b & mask) | 2^23's exponent: 2^23 + the code as a float, no conversion;
 * subtracting 2^23 + z (or 2^23 + 16 z) leaves q - z (16 (q - z)) exactly. */
AVX512 INLINE __m512 g4w_code(__m512i b, __m512i mask)
{
	return _mm512_castsi512_ps(
		_mm512_ternarylogic_epi32(b, mask, _mm512_set1_epi32(0x4b000000), 0xea));
}

/* Zero of group gi of a 4-bit format: a nibble, the even group's low. */
INLINE int g4_zero(const grp_view *v, size_t gi)
{
	return (v->z[gi / 2] >> (gi % 2 * 4)) & 0xf;
}

AVX512 INLINE void g4w_seg(size_t group, const void *packed, size_t rows, size_t cols, size_t r,
			   size_t c0, size_t c1, float *out)
{
	grp_view v = grp_open(4, group, packed, rows, cols);
	const uint8_t *qr = v.q + r * (cols / 2);
	const __m512i lo = _mm512_set1_epi32(0x0f), hi = _mm512_set1_epi32(0xf0);
	for (size_t c = c0; c < c1;) {
		size_t g = c / group, ge = (g + 1) * group < c1 ? (g + 1) * group : c1;
		size_t gi = r * v.ngr + g;
		__m512 s = _mm512_set1_ps(_cvtsh_ss(tp_quant_get_u16(v.s + 2 * gi)));
		float z = (float)g4_zero(&v, gi);
		__m512 zl = _mm512_set1_ps(0x1p23f + z), zh = _mm512_set1_ps(0x1p23f + 16 * z);
		for (; c < ge; c += 32) {
			__m512i b = _mm512_cvtepu8_epi32(
				_mm_loadu_si128((const __m128i *)(const void *)(qr + c / 2)));
			_mm512_storeu_ps(out + (c - c0),
					 _mm512_mul_ps(_mm512_sub_ps(g4w_code(b, lo), zl), s));
			_mm512_storeu_ps(out + (c - c0) + 16,
					 _mm512_mul_ps(_mm512_sub_ps(g4w_code(b, hi), zh), s));
		}
	}
}

/* Decode, R rows at a time sharing the loads of x. */
#define G4W_GEMV(R)                                                                            \
	AVX512 INLINE void g4w_gemv##R(size_t group, grp_view v, size_t cols, size_t r,         \
				       const float *x, float *y)                               \
	{                                                                                      \
		size_t rb = cols / 2;                                                          \
		const uint8_t *qr = v.q + r * rb;                                              \
		const __m512i lo = _mm512_set1_epi32(0x0f), hi = _mm512_set1_epi32(0xf0);      \
		__m512 tot[R], al[R], ah[R], zl[R], zh[R], s[R];                               \
		_Pragma("GCC unroll 4") for (int j = 0; j < R; j++) tot[j] =                  \
			_mm512_setzero_ps();                                                   \
		for (size_t g = 0; g < v.ngr; g++) {                                           \
			size_t c0 = g * group, c1 = c0 + group < cols ? c0 + group : cols;     \
			_Pragma("GCC unroll 4") for (int j = 0; j < R; j++)                   \
			{                                                                      \
				size_t gi = (r + (size_t)j) * v.ngr + g;                       \
				s[j] = _mm512_set1_ps(_cvtsh_ss(tp_quant_get_u16(v.s + 2 * gi))); \
				float z = (float)g4_zero(&v, gi);                              \
				zl[j] = _mm512_set1_ps(0x1p23f + z);                           \
				zh[j] = _mm512_set1_ps(0x1p23f + 16 * z);                      \
				al[j] = ah[j] = _mm512_setzero_ps();                           \
			}                                                                      \
			for (size_t c = c0; c < c1; c += 32) {                                 \
				__m512 xl = _mm512_loadu_ps(x + c), xh = _mm512_loadu_ps(x + c + 16); \
				_Pragma("GCC unroll 4") for (int j = 0; j < R; j++)           \
				{                                                              \
					if (c % 128 == 0)                                      \
						PREFETCH(qr + (size_t)(j + R) * rb + c / 2);   \
					__m512i b = _mm512_cvtepu8_epi32(_mm_loadu_si128(      \
						(const __m128i *)(const void *)(qr + (size_t)j * rb + c / 2))); \
					al[j] = _mm512_fmadd_ps(                               \
						_mm512_sub_ps(g4w_code(b, lo), zl[j]), xl, al[j]); \
					ah[j] = _mm512_fmadd_ps(                               \
						_mm512_sub_ps(g4w_code(b, hi), zh[j]), xh, ah[j]); \
				}                                                              \
			}                                                                      \
			_Pragma("GCC unroll 4") for (int j = 0; j < R; j++) tot[j] =          \
				_mm512_fmadd_ps(_mm512_add_ps(al[j], ah[j]), s[j], tot[j]);    \
		}                                                                              \
		_Pragma("GCC unroll 4") for (int j = 0; j < R; j++) y[j] =                    \
			_mm512_reduce_add_ps(tot[j]);                                          \
	}
G4W_GEMV(4)
G4W_GEMV(1)

AVX512 INLINE void g4w_gemv(size_t group, const void *packed, size_t rows, size_t cols,
			    size_t r0, size_t r1, const float *x, float *y)
{
	grp_view v = grp_open(4, group, packed, rows, cols);
	size_t r = r0;
	for (; r + 4 <= r1; r += 4)
		g4w_gemv4(group, v, cols, r, x, y + (r - r0));
	for (; r < r1; r++)
		g4w_gemv1(group, v, cols, r, x, y + (r - r0));
}

/* nf4 / nf4_dq on rows of whole 64-blocks (cols % 64 == 0): prepared per 32
 * columns as x0 x2 .. x30, then x1 x3 .. x31 (the even column is in the
 * high nibble); a 16-entry permute is the code table. Other widths: column
 * order, the AVX2 kernel. */
static void nf4w_x_prepare(const float *x, size_t cols, void *xp)
{
	float *o = xp;
	if (cols % 64) {
		memcpy(o, x, cols * sizeof(float));
		return;
	}
	for (size_t c = 0; c < cols; c += 32)
		for (size_t j = 0; j < 16; j++) {
			o[c + j] = x[c + 2 * j];
			o[c + 16 + j] = x[c + 2 * j + 1];
		}
}

AVX512 INLINE void nf4w_seg(bool dq, const void *packed, size_t rows, size_t cols, size_t r,
			    size_t c0, size_t c1, float *out)
{
	nf4_view v = nf4_open(packed, rows, cols, dq);
	const __m512 code = _mm512_loadu_ps(tp_quant_nf4_code);
	size_t i0 = r * cols;
	for (size_t c = c0; c < c1; c += 32) {
		__m512 a = _mm512_set1_ps(nf4_absmax(&v, (i0 + c) / 64));
		__m512i b = _mm512_cvtepu8_epi32(
			_mm_loadu_si128((const __m128i *)(const void *)(v.nib + (i0 + c) / 2)));
		_mm512_storeu_ps(out + (c - c0),
				 _mm512_mul_ps(_mm512_permutexvar_ps(_mm512_srli_epi32(b, 4), code), a));
		_mm512_storeu_ps(out + (c - c0) + 16, _mm512_mul_ps(_mm512_permutexvar_ps(b, code), a));
	}
}

AVX512 INLINE void nf4w_gemv(bool dq, const void *packed, size_t rows, size_t cols, size_t r0,
			     size_t r1, const float *x, float *y)
{
	nf4_view v = nf4_open(packed, rows, cols, dq);
	const __m512 code = _mm512_loadu_ps(tp_quant_nf4_code);
	size_t r = r0, bs = cols / 64;
#define NF4W_ROWS(R)                                                                           \
	for (; r + R <= r1; r += R) {                                                          \
		const uint8_t *nb = v.nib + r * cols / 2;                                      \
		__m512 t[R];                                                                   \
		_Pragma("GCC unroll 4") for (int j = 0; j < R; j++) t[j] = _mm512_setzero_ps(); \
		for (size_t c = 0; c < cols; c += 64) {                                        \
			__m512 x0 = _mm512_loadu_ps(x + c), x1 = _mm512_loadu_ps(x + c + 16),  \
			       x2 = _mm512_loadu_ps(x + c + 32), x3 = _mm512_loadu_ps(x + c + 48); \
			_Pragma("GCC unroll 4") for (int j = 0; j < R; j++)                   \
			{                                                                      \
				const uint8_t *p = nb + (size_t)j * (cols / 2) + c / 2;        \
				PREFETCH(p + R * (cols / 2));                                  \
				__m512i b0 = _mm512_cvtepu8_epi32(                             \
					_mm_loadu_si128((const __m128i *)(const void *)p));    \
				__m512i b1 = _mm512_cvtepu8_epi32(                             \
					_mm_loadu_si128((const __m128i *)(const void *)(p + 16))); \
				__m512 a = _mm512_mul_ps(                                      \
					_mm512_permutexvar_ps(_mm512_srli_epi32(b0, 4), code), x0); \
				a = _mm512_fmadd_ps(_mm512_permutexvar_ps(b0, code), x1, a);   \
				a = _mm512_fmadd_ps(                                           \
					_mm512_permutexvar_ps(_mm512_srli_epi32(b1, 4), code), x2, a); \
				a = _mm512_fmadd_ps(_mm512_permutexvar_ps(b1, code), x3, a);   \
				size_t blk = (r + (size_t)j) * bs + c / 64;                    \
				t[j] = _mm512_fmadd_ps(a, _mm512_set1_ps(nf4_absmax(&v, blk)), t[j]); \
			}                                                                      \
		}                                                                              \
		_Pragma("GCC unroll 4") for (int j = 0; j < R; j++) y[r - r0 + (size_t)j] =   \
			_mm512_reduce_add_ps(t[j]);                                            \
	}
	NF4W_ROWS(4)
	NF4W_ROWS(1)
#undef NF4W_ROWS
}

/* ---- 8-bit activations on VNNI (see q8_quantize) ----------------------- */

/* 64 codes of `bits` bits from p as 64 bytes in the int8 inputs' order.
 * 4 bits: the 32 code bytes in both halves, the upper shifted by a nibble
 * (no lane-crossing shuffle). 3 and 2 bits: each 8 codes' bytes moved into
 * a qword, then each code picked by its bit offset (VBMI). */
static const uint8_t q8_idx3[64] = {0,  1,	2,  2,	2,  2,	2,  2,	3,  4,	5,  5,	5,
				    5,	5,  5,	6,  7,	8,  8,	8,  8,	8,  8,	9,  10,
				    11, 11, 11, 11, 11, 11, 12, 13, 14, 14, 14, 14, 14, 14, 15,
				    16, 17, 17, 17, 17, 17, 17, 18, 19, 20, 20, 20, 20, 20, 20,
				    21, 22, 23, 23, 23, 23, 23, 23};
static const uint8_t q8_idx2[64] = {0,  1,	1,  1,	1,  1,	1,  1,	2,  3,	3,  3,	3,
				    3,	3,  3,	4,  5,	5,  5,	5,  5,	5,  5,	6,  7,
				    7,	7,  7,	7,  7,	7,  8,	9,  9,	9,  9,	9,  9,	9,  10,
				    11, 11, 11, 11, 11, 11, 11, 12, 13, 13, 13, 13, 13, 13, 13,
				    14, 15, 15, 15, 15, 15, 15, 15};

/* VBMI is needed by the 3- and 2-bit kernels only (checked at lookup). */
#define AVX512V __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,avx2,fma,f16c")))

AVX512 INLINE __m512i q8_codes4(int bits, const uint8_t *p, __m512i idx, __m512i ctl)
{
	(void)bits, (void)idx, (void)ctl;
	__m512i b = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(const void *)p));
	return _mm512_and_si512(_mm512_srlv_epi64(b, _mm512_set_epi64(4, 4, 4, 4, 0, 0, 0, 0)),
				_mm512_set1_epi8(0x0f));
}

AVX512V INLINE __m512i q8_codes_vbmi(int bits, const uint8_t *p, __m512i idx, __m512i ctl)
{
	__m512i b = _mm512_maskz_loadu_epi8(bits == 3 ? 0xffffffull : 0xffffull, p);
	return _mm512_and_si512(_mm512_multishift_epi64_epi8(ctl, _mm512_permutexvar_epi8(idx, b)),
				_mm512_set1_epi8((char)((1 << bits) - 1)));
}

/* Per group g0 .. g0 + ng - 1 (ng <= 16) of a row (gi its first's index):
 * sd[k] = scale * d, zc[k] = - zero * sum(xq), the integer sum's start. */
AVX512 INLINE void q8_prologue(int bits, const grp_view *v, size_t gi, size_t ng, const float *d,
			       const int32_t *sum, float *sd, int32_t *zc)
{
	__mmask16 m = (__mmask16)((1u << ng) - 1);
	__m512 s = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, v->s + 2 * gi));
	_mm512_storeu_ps(sd, _mm512_mul_ps(s, _mm512_maskz_loadu_ps(m, d)));
	__m512i z;
	if (bits == 4 && gi % 2 == 0) {
		__m128i b = _mm_maskz_loadu_epi8((__mmask16)((1u << ((ng + 1) / 2)) - 1), v->z + gi / 2);
		__m128i lo = _mm_and_si128(b, _mm_set1_epi8(0x0f));
		__m128i hi = _mm_and_si128(_mm_srli_epi16(b, 4), _mm_set1_epi8(0x0f));
		z = _mm512_cvtepu8_epi32(_mm_unpacklo_epi8(lo, hi));
	} else {
		int32_t t[16] = {0};
		for (size_t k = 0; k < ng; k++)
			t[k] = grp_zero(v, gi + k, bits);
		z = _mm512_loadu_si512(t);
	}
	_mm512_storeu_si512(zc, _mm512_mullo_epi32(_mm512_sub_epi32(_mm512_setzero_si512(), z),
						   _mm512_maskz_loadu_epi32(m, sum)));
}

/* Decode, R rows at a time sharing the int8 inputs: per group R integer
 * sums of 64 products a step, then R FMAs with scale * d. */
#define Q8_GEMV(N, R, ATTR, CODES)                                                                           \
	ATTR INLINE void N##R(int bits, size_t group, grp_view v, size_t cols, size_t r, \
				      const q8_in *x, float *y)                                \
	{                                                                                      \
		size_t rb = cols / 8 * (size_t)bits;                                           \
		const uint8_t *qr = v.q + r * rb;                                              \
		const __m512i idx = _mm512_loadu_si512(bits == 3 ? q8_idx3 : q8_idx2);         \
		const __m512i ctl = _mm512_set1_epi64(bits == 3 ? 0x15120f0c09060300ll         \
								: 0x0e0c0a0806040200ll);       \
		float sd[R][16];                                                               \
		int32_t zc[R][16];                                                             \
		__m512 tot[R];                                                                 \
		__m512i acc[R];                                                                \
		_Pragma("GCC unroll 4") for (int j = 0; j < R; j++) tot[j] = _mm512_setzero_ps(); \
		for (size_t g0 = 0; g0 < v.ngr; g0 += 16) {                                    \
			size_t ng = v.ngr - g0 < 16 ? v.ngr - g0 : 16;                         \
			_Pragma("GCC unroll 4") for (int j = 0; j < R; j++)                   \
				q8_prologue(bits, &v, (r + (size_t)j) * v.ngr + g0, ng, x->d + g0, \
					    x->sum + g0, sd[j], zc[j]);                        \
			for (size_t k = 0; k < ng; k++) {                                      \
				size_t c0 = (g0 + k) * group;                                  \
				_Pragma("GCC unroll 4") for (int j = 0; j < R; j++) acc[j] =  \
					_mm512_zextsi128_si512(_mm_cvtsi32_si128(zc[j][k]));   \
				for (size_t c = c0; c < c0 + group; c += 64) {                 \
					__m512i xq = _mm512_loadu_si512(x->q + c);             \
					_Pragma("GCC unroll 4") for (int j = 0; j < R; j++)   \
					{                                                      \
						const uint8_t *p = qr + (size_t)j * rb + c / 8 * (size_t)bits; \
						if (bits != 4 || c % 128 == 0)                 \
							PREFETCH(p + R * rb);                  \
						acc[j] = _mm512_dpbusd_epi32(                  \
							acc[j], CODES(bits, p, idx, ctl), xq); \
					}                                                      \
				}                                                              \
				_Pragma("GCC unroll 4") for (int j = 0; j < R; j++) tot[j] =  \
					_mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[j]),            \
							_mm512_set1_ps(sd[j][k]), tot[j]);     \
			}                                                                      \
		}                                                                              \
		_Pragma("GCC unroll 4") for (int j = 0; j < R; j++) y[j] =                    \
			_mm512_reduce_add_ps(tot[j]);                                          \
	}
Q8_GEMV(q8_gemv4_, 4, AVX512, q8_codes4)
Q8_GEMV(q8_gemv4_, 1, AVX512, q8_codes4)
Q8_GEMV(q8_gemvb_, 4, AVX512V, q8_codes_vbmi)
Q8_GEMV(q8_gemvb_, 1, AVX512V, q8_codes_vbmi)

AVX512 INLINE void q8_gemv4(size_t group, const void *packed, size_t rows, size_t cols,
			    size_t r0, size_t r1, const void *xp, float *y)
{
	grp_view v = grp_open(4, group, packed, rows, cols);
	q8_in x = q8_open(xp, cols, group);
	size_t r = r0;
	for (; r + 4 <= r1; r += 4)
		q8_gemv4_4(4, group, v, cols, r, &x, y + (r - r0));
	for (; r < r1; r++)
		q8_gemv4_1(4, group, v, cols, r, &x, y + (r - r0));
}

AVX512V INLINE void q8_gemvb(int bits, size_t group, const void *packed, size_t rows,
			     size_t cols, size_t r0, size_t r1, const void *xp, float *y)
{
	grp_view v = grp_open(bits, group, packed, rows, cols);
	q8_in x = q8_open(xp, cols, group);
	size_t r = r0;
	for (; r + 4 <= r1; r += 4)
		q8_gemvb_4(bits, group, v, cols, r, &x, y + (r - r0));
	for (; r < r1; r++)
		q8_gemvb_1(bits, group, v, cols, r, &x, y + (r - r0));
}

/* ---- int4_sparse25 on AVX-512 VBMI2 (see int4_sparse25_seg_c) -----------
 * Per 64 columns: their 64 keep bits, the next popcount of them kept codes
 * as 64 sequential nibbles (from a byte or a half byte on), expanded into
 * the kept columns with the group's zero in the dropped ones, so (q - z)
 * is 0 there and the rtn sums (q8_gemv) apply unchanged. */
#define AVX512S                                                                                \
	__attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,avx512vbmi2,avx2," \
			      "fma,f16c")))

/* Byte i of 64 takes source byte (i + odd) / 2; then its nibble (i + odd) % 2. */
static const uint8_t sp_idx[2][64] = {
	{0,  0,	 1,  1,	 2,  2,	 3,  3,	 4,  4,	 5,  5,	 6,  6,	 7,  7,	 8,  8,	 9,  9,	 10, 10,
	 11, 11, 12, 12, 13, 13, 14, 14, 15, 15, 16, 16, 17, 17, 18, 18, 19, 19, 20, 20, 21, 21,
	 22, 22, 23, 23, 24, 24, 25, 25, 26, 26, 27, 27, 28, 28, 29, 29, 30, 30, 31, 31},
	{0,  1,	 1,  2,	 2,  3,	 3,  4,	 4,  5,	 5,  6,	 6,  7,	 7,  8,	 8,  9,	 9,  10, 10, 11,
	 11, 12, 12, 13, 13, 14, 14, 15, 15, 16, 16, 17, 17, 18, 18, 19, 19, 20, 20, 21, 21, 22,
	 22, 23, 23, 24, 24, 25, 25, 26, 26, 27, 27, 28, 28, 29, 29, 30, 30, 31, 31, 32}};

AVX512S INLINE __m512i sp_codes(const sp_view *v, size_t o, uint64_t keep, __m512i zb,
				const __m512i idx[2], const __m512i ctl[2])
{
	const uint8_t *p = v->q + o / 2;
	size_t left = (size_t)(v->qend - p);
	__m512i b = left >= 64 ? _mm512_loadu_si512(p)
			       : _mm512_maskz_loadu_epi8(left ? ~0ull >> (64 - left) : 0, p);
	int odd = (int)(o % 2);
	__m512i nib = _mm512_and_si512(
		_mm512_multishift_epi64_epi8(ctl[odd], _mm512_permutexvar_epi8(idx[odd], b)),
		_mm512_set1_epi8(0x0f));
	return _mm512_mask_expand_epi8(zb, keep, nib);
}

#define SP_GEMV(R)                                                                             \
	AVX512S INLINE void sp_gemv##R(const sp_view *v, size_t cols, size_t r, const q8_in *x, \
				       float *y)                                               \
	{                                                                                      \
		const __m512i idx[2] = {_mm512_loadu_si512(sp_idx[0]),                         \
					_mm512_loadu_si512(sp_idx[1])};                        \
		const __m512i ctl[2] = {_mm512_set1_epi64(0x3c302c201c100c00ll), \
					_mm512_set1_epi64(0x3834282418140804ll)};              \
		grp_view gv = {v->s, v->z, NULL, NULL, v->ngr};                                \
		float sd[R][16];                                                               \
		int32_t zc[R][16];                                                             \
		size_t o[R];                                                                   \
		__m512 tot[R];                                                                 \
		__m512i acc[R];                                                                \
		_Pragma("GCC unroll 4") for (int j = 0; j < R; j++)                           \
		{                                                                              \
			tot[j] = _mm512_setzero_ps();                                          \
			o[j] = (r + (size_t)j) * sp_kept(cols);                                \
		}                                                                              \
		for (size_t g0 = 0; g0 < v->ngr; g0 += 16) {                                   \
			size_t ng = v->ngr - g0 < 16 ? v->ngr - g0 : 16;                       \
			_Pragma("GCC unroll 4") for (int j = 0; j < R; j++)                   \
				q8_prologue(4, &gv, (r + (size_t)j) * v->ngr + g0, ng, x->d + g0, \
					    x->sum + g0, sd[j], zc[j]);                        \
			for (size_t k = 0; k < ng; k++) {                                      \
				size_t c0 = (g0 + k) * 128;                                    \
				__m512i zb[R];                                                 \
				_Pragma("GCC unroll 4") for (int j = 0; j < R; j++)           \
				{                                                              \
					acc[j] = _mm512_zextsi128_si512(_mm_cvtsi32_si128(zc[j][k])); \
					zb[j] = _mm512_set1_epi8((char)grp_zero(&gv, (r + (size_t)j) * v->ngr + g0 + k, 4)); \
				}                                                              \
				for (size_t c = c0; c < c0 + 128; c += 64) {                   \
					__m512i xq = _mm512_loadu_si512(x->q + c);             \
					_Pragma("GCC unroll 4") for (int j = 0; j < R; j++)   \
					{                                                      \
						uint64_t keep;                                 \
						memcpy(&keep, v->m + ((r + (size_t)j) * cols + c) / 8, 8); \
						if (c % 512 == 0)                              \
							PREFETCH(v->m + ((r + (size_t)j + R) * cols + c) / 8); \
						PREFETCH(v->q + (o[j] + R * sp_kept(cols)) / 2); \
						acc[j] = _mm512_dpbusd_epi32(                  \
							acc[j], sp_codes(v, o[j], keep, zb[j], idx, ctl), xq); \
						o[j] += (size_t)__builtin_popcountll(keep);    \
					}                                                      \
				}                                                              \
				_Pragma("GCC unroll 4") for (int j = 0; j < R; j++) tot[j] =  \
					_mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[j]),            \
							_mm512_set1_ps(sd[j][k]), tot[j]);     \
			}                                                                      \
		}                                                                              \
		_Pragma("GCC unroll 4") for (int j = 0; j < R; j++) y[j] =                    \
			_mm512_reduce_add_ps(tot[j]);                                          \
	}
SP_GEMV(4)
SP_GEMV(1)

/* Widened weights of columns c0..c1 (multiples of 64; cols % 128 == 0) for
 * the prefill panels, in column order. */
AVX512S static void int4_sparse25_seg_avx512(const void *packed, size_t rows, size_t cols,
					     size_t r, size_t c0, size_t c1, float *out)
{
	sp_view v = sp_open(packed, rows, cols);
	const __m512i idx[2] = {_mm512_loadu_si512(sp_idx[0]), _mm512_loadu_si512(sp_idx[1])};
	const __m512i ctl[2] = {_mm512_set1_epi64(0x3c302c201c100c00ll),
				_mm512_set1_epi64(0x3834282418140804ll)};
	size_t o = r * sp_kept(cols);
	for (size_t c = 0; c < c0; c += 64) {
		uint64_t keep;
		memcpy(&keep, v.m + (r * cols + c) / 8, 8);
		o += (size_t)__builtin_popcountll(keep);
	}
	for (size_t c = c0; c < c1; c += 64) {
		size_t gi = r * v.ngr + c / 128;
		int z = (v.z[gi / 2] >> (gi % 2 * 4)) & 0xf;
		__m512 s = _mm512_set1_ps(_cvtsh_ss(tp_quant_get_u16(v.s + 2 * gi)));
		__m512i zi = _mm512_set1_epi32(z);
		uint64_t keep;
		memcpy(&keep, v.m + (r * cols + c) / 8, 8);
		__m512i q = sp_codes(&v, o, keep, _mm512_set1_epi8((char)z), idx, ctl);
		o += (size_t)__builtin_popcountll(keep);
		__m128i part[4] = {_mm512_extracti32x4_epi32(q, 0), _mm512_extracti32x4_epi32(q, 1),
				   _mm512_extracti32x4_epi32(q, 2), _mm512_extracti32x4_epi32(q, 3)};
		for (int k = 0; k < 4; k++) {
			__m512i w = _mm512_sub_epi32(_mm512_cvtepu8_epi32(part[k]), zi);
			_mm512_storeu_ps(out + (c - c0) + 16 * (size_t)k,
					 _mm512_mul_ps(_mm512_cvtepi32_ps(w), s));
		}
	}
}

AVX512S static void int4_sparse25_rows_q8(const void *packed, size_t rows, size_t cols,
					  size_t r0, size_t r1, const void *xv, size_t n, float *y,
					  size_t ldy)
{
	size_t xs = q8_size(cols, 128);
	if (!Q8_FAST(cols, 128)) {
		rows_c(int4_sparse25_seg_c, packed, rows, cols, r0, r1, xv, xs / 4, n, y, ldy);
		return;
	}
	if (n >= GEMM_MIN) {
		gemm(int4_sparse25_seg_avx512, packed, rows, cols, r0, r1, xv, xs / 4, n, y, ldy);
		return;
	}
	sp_view v = sp_open(packed, rows, cols);
	for (size_t t = 0; t < n; t++) {
		q8_in x = q8_open((const uint8_t *)xv + t * xs, cols, 128);
		float *yt = y + t * ldy;
		size_t r = r0;
		for (; r + 4 <= r1; r += 4)
			sp_gemv4(&v, cols, r, &x, yt + (r - r0));
		for (; r < r1; r++)
			sp_gemv1(&v, cols, r, &x, yt + (r - r0));
	}
}

static const tp_quant_kernel int4_sparse25_kq8 = {"int4_sparse25 x q8 avx512",
						  int4_sparse25_size_q8, int4_sparse25_x_q8,
						  int4_sparse25_rows_q8};
#endif /* TP_HAVE_X86 */

/* ---- one kernel pair per format ------------------------------------------ */

#define GRP_SEG_C(B, G)                                                                         \
	static void rtn##B##_g##G##_seg_c(const void *packed, size_t rows, size_t cols, size_t r,  \
					  size_t c0, size_t c1, float *out)                        \
	{                                                                                       \
		grp_seg_c(B, G, packed, rows, cols, r, c0, c1, out);                            \
	}
#define NAMED_C(N)                                                                              \
	static void N##_rows_c(const void *packed, size_t rows, size_t cols, size_t r0, size_t r1, \
			       const void *x, size_t n, float *y, size_t ldy)                   \
	{                                                                                       \
		rows_c(N##_seg_c, packed, rows, cols, r0, r1, x, cols, n, y, ldy);                    \
	}                                                                                       \
	static const tp_quant_kernel N##_kc = {#N " x fp32 c", NULL, NULL, N##_rows_c};

#ifdef TP_HAVE_X86
/* SEG_SIMD(N): N##_seg_avx2 widening like N##_seg_c; GEMV(N): N##_gemv. */
#define NAMED_AVX2(N, MOD, XSIZE, XPREP)                                                        \
	AVX2 static void N##_rows_avx2(const void *packed, size_t rows, size_t cols, size_t r0,    \
				       size_t r1, const void *xv, size_t n, float *y, size_t ldy) \
	{                                                                                       \
		const float *x = xv;                                                            \
		if (cols % MOD) {                                                               \
			rows_c(N##_seg_c, packed, rows, cols, r0, r1, x, cols, n, y, ldy);            \
			return;                                                                 \
		}                                                                               \
		if (n < GEMM_MIN) {                                                             \
			for (size_t t = 0; t < n; t++)                                          \
				N##_gemv(packed, rows, cols, r0, r1, x + t * cols, y + t * ldy); \
			return;                                                                 \
		}                                                                               \
		gemm(N##_seg_avx2, packed, rows, cols, r0, r1, x, cols, n, y, ldy);                   \
	}                                                                                       \
	static const tp_quant_kernel N##_kavx2 = {#N " x fp32 avx2", XSIZE, XPREP, N##_rows_avx2};
#define GRP_AVX2(B, G)                                                                          \
	AVX2 static void rtn##B##_g##G##_seg_avx2(const void *packed, size_t rows, size_t cols,    \
						  size_t r, size_t c0, size_t c1, float *out)      \
	{                                                                                       \
		grp_seg_avx2(B, G, packed, rows, cols, r, c0, c1, out, false);                         \
	}                                                                                       \
	AVX2 static void rtn##B##_g##G##_gemv(const void *packed, size_t rows, size_t cols,        \
					      size_t r0, size_t r1, const float *x, float *y)      \
	{                                                                                       \
		grp_gemv(B, G, packed, rows, cols, r0, r1, x, y, false);                               \
	}                                                                                       \
	NAMED_AVX2(rtn##B##_g##G, 8, NULL, NULL)
#define FAM_AVX2(N, IMPL, ARG)                                                                  \
	AVX2 static void N##_seg_avx2(const void *packed, size_t rows, size_t cols, size_t r,      \
				      size_t c0, size_t c1, float *out)                         \
	{                                                                                       \
		IMPL##_seg_avx2(ARG, packed, rows, cols, r, c0, c1, out);                       \
	}                                                                                       \
	AVX2 static void N##_gemv(const void *packed, size_t rows, size_t cols, size_t r0,         \
				  size_t r1, const float *x, float *y)                          \
	{                                                                                       \
		IMPL##_gemv(ARG, packed, rows, cols, r0, r1, x, y);                             \
	}                                                                                       \
	NAMED_AVX2(N, 8, NULL, NULL)
#define G4_AVX2(G)                                                                              \
	AVX2 static void rtn4_g##G##_seg_avx2(const void *packed, size_t rows, size_t cols,        \
					      size_t r, size_t c0, size_t c1, float *out)          \
	{                                                                                       \
		g4_seg_avx2(G, packed, rows, cols, r, c0, c1, out);                             \
	}                                                                                       \
	AVX2 static void rtn4_g##G##_gemv(const void *packed, size_t rows, size_t cols,            \
					  size_t r0, size_t r1, const float *x, float *y)          \
	{                                                                                       \
		g4_gemv(G, packed, rows, cols, r0, r1, x, y);                                   \
	}                                                                                       \
	NAMED_AVX2(rtn4_g##G, 16, g4_x_size, g4_x_prepare)
/* The AVX-512 kernel of N: widths not a multiple of MOD go to FALLBACK
 * (which reads x in column order, as N512's x_prepare leaves it then). */
#define NAMED_AVX512(N, MOD, FALLBACK, XPREP, GEMV, SEG, ARG)                                    \
	AVX512 static void N##_seg_avx512(const void *packed, size_t rows, size_t cols, size_t r,  \
					  size_t c0, size_t c1, float *out)                        \
	{                                                                                       \
		SEG(ARG, packed, rows, cols, r, c0, c1, out);                                   \
	}                                                                                       \
	AVX512 static void N##_rows_avx512(const void *packed, size_t rows, size_t cols,         \
					   size_t r0, size_t r1, const void *xv, size_t n,       \
					   float *y, size_t ldy)                                 \
	{                                                                                       \
		const float *x = xv;                                                            \
		if (cols % MOD) {                                                               \
			FALLBACK(packed, rows, cols, r0, r1, xv, n, y, ldy);                    \
			return;                                                                 \
		}                                                                               \
		if (n < GEMM_MIN) {                                                             \
			for (size_t t = 0; t < n; t++)                                          \
				GEMV(ARG, packed, rows, cols, r0, r1, x + t * cols, y + t * ldy); \
			return;                                                                 \
		}                                                                               \
		gemm(N##_seg_avx512, packed, rows, cols, r0, r1, x, cols, n, y, ldy);                 \
	}                                                                                       \
	static const tp_quant_kernel N##_kavx512 = {#N " x fp32 avx512", g4_x_size, XPREP,     \
						    N##_rows_avx512};
/* rtn4_gG on AVX-512: decode through 8-bit inputs where Q8_FAST allows,
 * else on the fp32 AVX-512 decode; prefill on fp32 panels. The prepared
 * row's fp32 part is in g4w_x_prepare's order. */
#define G4_AVX512(G)                                                                            \
	AVX512 static void rtn4_g##G##_seg_avx512(const void *packed, size_t rows, size_t cols,    \
						  size_t r, size_t c0, size_t c1, float *out)      \
	{                                                                                       \
		g4w_seg(G, packed, rows, cols, r, c0, c1, out);                                 \
	}                                                                                       \
	static void rtn4_g##G##_x_q8(const float *x, size_t cols, void *xp)                     \
	{                                                                                       \
		g4w_x_prepare(x, cols, xp);                                                     \
		q8_quantize(x, cols, G, true, xp);                                              \
	}                                                                                       \
	AVX512 static void rtn4_g##G##_rows_q8(const void *packed, size_t rows, size_t cols,       \
					       size_t r0, size_t r1, const void *xv, size_t n,     \
					       float *y, size_t ldy)                               \
	{                                                                                       \
		size_t xs = q8_size(cols, G);                                                   \
		if (cols % 32) {                                                                \
			rows_c(rtn4_g##G##_seg_c, packed, rows, cols, r0, r1, xv, xs / 4, n, y, ldy); \
			return;                                                                 \
		}                                                                               \
		if (n >= GEMM_MIN) {                                                            \
			gemm(rtn4_g##G##_seg_avx512, packed, rows, cols, r0, r1, xv, xs / 4, n, y, ldy); \
			return;                                                                 \
		}                                                                               \
		for (size_t t = 0; t < n; t++) {                                                \
			const uint8_t *xt = (const uint8_t *)xv + t * xs;                       \
			if (Q8_FAST(cols, G))                                                   \
				q8_gemv4(G, packed, rows, cols, r0, r1, xt, y + t * ldy);     \
			else                                                                    \
				g4w_gemv(G, packed, rows, cols, r0, r1,                         \
					 (const float *)(const void *)xt, y + t * ldy);         \
		}                                                                               \
	}                                                                                       \
	static const tp_quant_kernel rtn4_g##G##_kq8 = {"rtn4_g" #G " x q8 avx512",             \
							rtn4_g##G##_size_q8, rtn4_g##G##_x_q8,  \
							rtn4_g##G##_rows_q8};
/* rtnB_gG (3 and 2 bits) on AVX-512: decode through 8-bit inputs where
 * Q8_FAST allows, else the AVX2 kernel's paths; the fp32 part in column
 * order. */
#define GRP_AVX512(B, G)                                                                        \
	AVX512V static void rtn##B##_g##G##_rows_q8(const void *packed, size_t rows, size_t cols,   \
						   size_t r0, size_t r1, const void *xv, size_t n, \
						   float *y, size_t ldy)                           \
	{                                                                                       \
		size_t xs = q8_size(cols, G);                                                   \
		if (cols % 8) {                                                                 \
			rows_c(rtn##B##_g##G##_seg_c, packed, rows, cols, r0, r1, xv, xs / 4, n, y, \
			       ldy);                                                            \
			return;                                                                 \
		}                                                                               \
		if (n >= GEMM_MIN) {                                                            \
			gemm(rtn##B##_g##G##_seg_avx2, packed, rows, cols, r0, r1, xv, xs / 4, n, y, \
			     ldy);                                                              \
			return;                                                                 \
		}                                                                               \
		for (size_t t = 0; t < n; t++) {                                                \
			const uint8_t *xt = (const uint8_t *)xv + t * xs;                       \
			if (Q8_FAST(cols, G))                                                   \
				q8_gemvb(B, G, packed, rows, cols, r0, r1, xt, y + t * ldy);     \
			else                                                                    \
				grp_gemv(B, G, packed, rows, cols, r0, r1,                      \
					 (const float *)(const void *)xt, y + t * ldy, false);  \
		}                                                                               \
	}                                                                                       \
	static const tp_quant_kernel rtn##B##_g##G##_kq8 = {                                    \
		"rtn" #B "_g" #G " x q8 avx512", rtn##B##_g##G##_size_q8, rtn##B##_g##G##_x_q8c,   \
		rtn##B##_g##G##_rows_q8};
#define NF4_AVX512(N, DQ) NAMED_AVX512(N, 64, N##_rows_avx2, nf4w_x_prepare, nf4w_gemv, nf4w_seg, DQ)
#else
#define GRP_AVX2(B, G)
#define G4_AVX2(G)
#define FAM_AVX2(N, IMPL, ARG)
#define G4_AVX512(G)
#define GRP_AVX512(B, G)
#define NF4_AVX512(N, DQ)
#endif

/* The plain-C reference of rtnB_gG's 8-bit-input kernel (q8_rows_c), its
 * prepared row's fp32 part in column order. */
#define GRP_Q8_C(B, G, NIB)                                                                     \
	static size_t rtn##B##_g##G##_size_q8(size_t cols)                                      \
	{                                                                                       \
		return q8_size(cols, G);                                                        \
	}                                                                                       \
	static void rtn##B##_g##G##_x_q8c(const float *x, size_t cols, void *xp)                \
	{                                                                                       \
		memcpy(xp, x, cols * sizeof(float));                                            \
		q8_quantize(x, cols, G, NIB, xp);                                               \
	}                                                                                       \
	static void rtn##B##_g##G##_rows_q8c(const void *packed, size_t rows, size_t cols,         \
					     size_t r0, size_t r1, const void *x, size_t n,        \
					     float *y, size_t ldy)                                 \
	{                                                                                       \
		q8_rows_c(B, G, NIB, rtn##B##_g##G##_seg_c, packed, rows, cols, r0, r1, x, n, y,   \
			  ldy);                                                                 \
	}                                                                                       \
	static const tp_quant_kernel rtn##B##_g##G##_kq8c = {                                   \
		"rtn" #B "_g" #G " x q8 c", rtn##B##_g##G##_size_q8, rtn##B##_g##G##_x_q8c,        \
		rtn##B##_g##G##_rows_q8c};
#define GRP_KERNELS(B, G)                                                                       \
	GRP_SEG_C(B, G)                                                                         \
	NAMED_C(rtn##B##_g##G)                                                                  \
	GRP_Q8_C(B, G, false)                                                                   \
	GRP_AVX2(B, G)                                                                          \
	GRP_AVX512(B, G)
#define G4_KERNELS(G)                                                                           \
	GRP_SEG_C(4, G)                                                                         \
	NAMED_C(rtn4_g##G)                                                                      \
	GRP_Q8_C(4, G, true)                                                                    \
	G4_AVX2(G)                                                                              \
	G4_AVX512(G)

G4_KERNELS(128)
G4_KERNELS(64)
G4_KERNELS(256)
GRP_KERNELS(3, 128)
GRP_KERNELS(2, 128)

NAMED_C(nf4)
NAMED_C(nf4_dq)
NAMED_C(fp16)
NAMED_C(bf16)
NAMED_C(int4_int2_residual)
FAM_AVX2(nf4, nf4f, false)
FAM_AVX2(nf4_dq, nf4f, true)
FAM_AVX2(fp16, halff, false)
FAM_AVX2(bf16, halff, true)
FAM_AVX2(int4_int2_residual, resid, 0)
NF4_AVX512(nf4, false)
NF4_AVX512(nf4_dq, true)

typedef struct kpair {
	const char *name;
	const tp_quant_kernel *c, *avx2, *avx512;
	const tp_quant_kernel *q8c; /* the plain-C reference of the avx512 one, when it
				       rounds inputs to 8 bits */
	int vbmi; /* the avx512 one also needs AVX-512 VBMI (1), and VBMI2 (2) */
} kpair;

#ifdef TP_HAVE_X86
#define KPAIR(N) {#N, &N##_kc, &N##_kavx2, NULL, NULL, 0}
#define KPAIR512(N) {#N, &N##_kc, &N##_kavx2, &N##_kavx512, NULL, 0}
#define KPAIRQ8(N, V) {#N, &N##_kc, &N##_kavx2, &N##_kq8, &N##_kq8c, V}
#define SP_AVX512 &int4_sparse25_kq8
#else
#define KPAIR(N) {#N, &N##_kc, NULL, NULL, NULL, 0}
#define KPAIR512(N) KPAIR(N)
#define KPAIRQ8(N, V) {#N, &N##_kc, NULL, NULL, &N##_kq8c, V}
#define SP_AVX512 NULL
#endif

static bool has_vbmi(int level)
{
#ifdef TP_HAVE_X86
	return level < 1 || (__builtin_cpu_supports("avx512vbmi") &&
			     (level < 2 || __builtin_cpu_supports("avx512vbmi2")));
#else
	return level < 1;
#endif
}

static const kpair *kpair_find(const char *name)
{
	static const kpair all[] = {
		KPAIRQ8(rtn4_g128, 0),     KPAIRQ8(rtn4_g64, 0),     KPAIRQ8(rtn4_g256, 0),
		KPAIRQ8(rtn3_g128, 1),     KPAIRQ8(rtn2_g128, 1),  KPAIR512(nf4),
		KPAIR512(nf4_dq),	   KPAIR(fp16),
		KPAIR(bf16),	    KPAIR(int4_int2_residual),
		/* decode on AVX-512 only; elsewhere rows are widened */
		{"int4_sparse25", NULL, NULL, SP_AVX512, &int4_sparse25_kq8c, 2},
	};
	if (!name)
		return NULL;
	for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
		if (strcmp(all[i].name, name) == 0)
			return &all[i];
	return NULL;
}

const tp_quant_kernel *tp_quant_kernel_group(const char *name, int level)
{
	const kpair *k = kpair_find(name);
	if (!k)
		return NULL;
	if (level >= TP_KERNEL_AVX512 && k->avx512 && has_vbmi(k->vbmi))
		return k->avx512;
	return level >= TP_KERNEL_AVX2 && k->avx2 ? k->avx2 : k->c;
}

const tp_quant_kernel *tp_quant_kernel_group_q8(const char *name, int level)
{
	const kpair *k = kpair_find(name);
	if (!k || !k->q8c)
		return NULL;
	if (level == TP_KERNEL_C)
		return k->q8c;
	return level >= TP_KERNEL_AVX512 && has_vbmi(k->vbmi) ? k->avx512 : NULL;
}
