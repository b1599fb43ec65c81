/* llama.cpp's block formats Q8_0, Q4_0, Q5_0 and Q4_K, bit for bit as ggml
 * stores them (ggml-common.h block_q*), quantized as ggml-quants.c's
 * quantize_row_*_ref does. Written from the algorithm; layouts in README.md.
 * Rows that the block size does not divide are stored in llama.cpp's
 * fallback type for the whole matrix (tp_quant_fallback). */
#include "quant_internal.h"

#define QK 32
#define QK_K 256
#define Q8_0_BYTES 34
#define Q4_0_BYTES 18
#define Q5_0_BYTES 22
#define Q4_K_BYTES 144

/* ggml's nearest_int: round half to even (its float trick is exact for
 * |x| < 2^22, where it asserts); NaN -> 0 here instead of undefined. */
static int nearest_int(float x)
{
	if (isnan(x))
		return 0;
	return tp_quant_rint_clamp(x, -4194303, 4194303);
}

/* C's (int8_t)(float) truncation as ggml's Q4_0/Q5_0 use it, saturated. */
static int trunc_clamp(float x, int lo, int hi)
{
	if (!(x > (float)lo))
		return lo;
	if (x >= (float)hi)
		return hi;
	return (int)x;
}

/* ---- Q8_0: d = amax/127, q = roundf(x/d) ------------------------------ */

static void q8_0_row(const float *x, size_t k, uint8_t *y)
{
	for (size_t b = 0; b < k / QK; b++, x += QK, y += Q8_0_BYTES) {
		float amax = 0.0f;
		for (int j = 0; j < QK; j++)
			if (fabsf(x[j]) > amax)
				amax = fabsf(x[j]);
		float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
		tp_quant_put_u16(y, tp_fp16_from_f32(d));
		for (int j = 0; j < QK; j++) {
			float v = x[j] * id;
			/* roundf: half away from zero, as ggml */
			int q = isnan(v) ? 0 : v >= 127.0f ? 127 : v <= -127.0f ? -127 : (int)roundf(v);
			y[2 + j] = (uint8_t)(int8_t)q;
		}
	}
}

static void q8_0_row_deq(const uint8_t *y, size_t k, float *x)
{
	for (size_t b = 0; b < k / QK; b++, x += QK, y += Q8_0_BYTES) {
		float d = tp_fp16_to_f32(tp_quant_get_u16(y));
		for (int j = 0; j < QK; j++)
			x[j] = (float)(int8_t)y[2 + j] * d;
	}
}

/* ---- Q4_0 / Q5_0: d = (value of largest |x|) / -2^(b-1),
 * q = min(2^b - 1, trunc(x/d + 2^(b-1) + 0.5)) -------------------------- */

static float signed_absmax(const float *x)
{
	float amax = 0.0f, max = 0.0f;
	for (int j = 0; j < QK; j++)
		if (amax < fabsf(x[j])) {
			amax = fabsf(x[j]);
			max = x[j];
		}
	return max;
}

static void q4_0_row(const float *x, size_t k, uint8_t *y)
{
	for (size_t b = 0; b < k / QK; b++, x += QK, y += Q4_0_BYTES) {
		float d = signed_absmax(x) / -8.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
		tp_quant_put_u16(y, tp_fp16_from_f32(d));
		for (int j = 0; j < QK / 2; j++) {
			int q0 = trunc_clamp(x[j] * id + 8.5f, 0, 15);
			int q1 = trunc_clamp(x[j + QK / 2] * id + 8.5f, 0, 15);
			y[2 + j] = (uint8_t)(q0 | q1 << 4);
		}
	}
}

static void q4_0_row_deq(const uint8_t *y, size_t k, float *x)
{
	for (size_t b = 0; b < k / QK; b++, x += QK, y += Q4_0_BYTES) {
		float d = tp_fp16_to_f32(tp_quant_get_u16(y));
		for (int j = 0; j < QK / 2; j++) {
			x[j] = (float)((y[2 + j] & 0xf) - 8) * d;
			x[j + QK / 2] = (float)((y[2 + j] >> 4) - 8) * d;
		}
	}
}

static void q5_0_row(const float *x, size_t k, uint8_t *y)
{
	for (size_t b = 0; b < k / QK; b++, x += QK, y += Q5_0_BYTES) {
		float d = signed_absmax(x) / -16.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
		tp_quant_put_u16(y, tp_fp16_from_f32(d));
		uint32_t qh = 0;
		for (int j = 0; j < QK / 2; j++) {
			int q0 = trunc_clamp(x[j] * id + 16.5f, 0, 31);
			int q1 = trunc_clamp(x[j + QK / 2] * id + 16.5f, 0, 31);
			y[6 + j] = (uint8_t)((q0 & 0xf) | (q1 & 0xf) << 4);
			/* fifth bits: element j at bit j, element j+16 at bit j+16 */
			qh |= (uint32_t)(q0 >> 4) << j | (uint32_t)(q1 >> 4) << (j + QK / 2);
		}
		for (int i = 0; i < 4; i++)
			y[2 + i] = (uint8_t)(qh >> (8 * i));
	}
}

static void q5_0_row_deq(const uint8_t *y, size_t k, float *x)
{
	for (size_t b = 0; b < k / QK; b++, x += QK, y += Q5_0_BYTES) {
		float d = tp_fp16_to_f32(tp_quant_get_u16(y));
		uint32_t qh = (uint32_t)y[2] | (uint32_t)y[3] << 8 | (uint32_t)y[4] << 16 |
			      (uint32_t)y[5] << 24;
		for (int j = 0; j < QK / 2; j++) {
			int q0 = (y[6 + j] & 0xf) | (int)((qh >> j) & 1) << 4;
			int q1 = (y[6 + j] >> 4) | (int)((qh >> (j + QK / 2)) & 1) << 4;
			x[j] = (float)(q0 - 16) * d;
			x[j + QK / 2] = (float)(q1 - 16) * d;
		}
	}
}

/* ---- Q4_K -------------------------------------------------------------- */

/* make_qkx2_quants: codes L[n] in [0, nmax] and a scale and min with
 * x ~ scale*L - min, chosen by weighted least squares over nstep+1 trial
 * inverse scales (nmax + rmin + rdelta*is) / (max - min); returns the
 * scale and *the_min (>= 0). */
static float make_qkx2(int n, int nmax, const float *x, const float *weights, uint8_t *L,
		       float *the_min, uint8_t *Laux, float rmin, float rdelta, int nstep)
{
	float min = x[0], max = x[0], sum_w = weights[0], sum_x = sum_w * x[0];
	for (int i = 1; i < n; i++) {
		if (x[i] < min)
			min = x[i];
		if (x[i] > max)
			max = x[i];
		sum_w += weights[i];
		sum_x += weights[i] * x[i];
	}
	if (min > 0)
		min = 0;
	if (max == min) {
		memset(L, 0, (size_t)n);
		*the_min = -min;
		return 0.0f;
	}
	float iscale = (float)nmax / (max - min), scale = 1.0f / iscale, best_err = 0.0f;
	for (int i = 0; i < n; i++) {
		int l = nearest_int(iscale * (x[i] - min));
		L[i] = (uint8_t)(l < 0 ? 0 : l > nmax ? nmax : l);
		float diff = scale * L[i] + min - x[i];
		best_err += weights[i] * diff * diff;
	}
	for (int is = 0; is <= nstep; is++) {
		iscale = (rmin + rdelta * (float)is + (float)nmax) / (max - min);
		float sum_l = 0, sum_l2 = 0, sum_xl = 0;
		for (int i = 0; i < n; i++) {
			int l = nearest_int(iscale * (x[i] - min));
			l = l < 0 ? 0 : l > nmax ? nmax : l;
			Laux[i] = (uint8_t)l;
			sum_l += weights[i] * (float)l;
			sum_l2 += weights[i] * (float)l * (float)l;
			sum_xl += weights[i] * (float)l * x[i];
		}
		float D = sum_w * sum_l2 - sum_l * sum_l;
		if (D > 0) {
			float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
			float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
			if (this_min > 0) {
				this_min = 0;
				this_scale = sum_xl / sum_l2;
			}
			float err = 0;
			for (int i = 0; i < n; i++) {
				float diff = this_scale * Laux[i] + this_min - x[i];
				err += weights[i] * diff * diff;
			}
			if (err < best_err) {
				memcpy(L, Laux, (size_t)n);
				best_err = err;
				scale = this_scale;
				min = this_min;
			}
		}
	}
	*the_min = -min;
	return scale;
}

/* The 6-bit scale and min of sub-block j from the 12 packed bytes: j < 4 in
 * the low 6 bits of bytes j and j+4; j >= 4 as low nibbles in byte j+4 and
 * high 2 bits in the top bits of bytes j-4 (scale) and j (min). */
static void scale_min_k4(int j, const uint8_t *q, int *sc, int *m)
{
	if (j < 4) {
		*sc = q[j] & 63;
		*m = q[j + 4] & 63;
	} else {
		*sc = (q[j + 4] & 0xf) | ((q[j - 4] >> 6) << 4);
		*m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
	}
}

static void q4_k_row(const float *x, size_t k, uint8_t *y)
{
	for (size_t b = 0; b < k / QK_K; b++, x += QK_K, y += Q4_K_BYTES) {
		uint8_t L[QK_K], Laux[32], *sc12 = y + 4, *qs = y + 16;
		float weights[32], mins[8], scales[8], max_scale = 0, max_min = 0;
		for (int j = 0; j < 8; j++) {
			const float *xs = x + 32 * j;
			float sum_x2 = 0;
			for (int l = 0; l < 32; l++)
				sum_x2 += xs[l] * xs[l];
			float av_x = sqrtf(sum_x2 / 32);
			for (int l = 0; l < 32; l++)
				weights[l] = av_x + fabsf(xs[l]);
			scales[j] = make_qkx2(32, 15, xs, weights, L + 32 * j, &mins[j], Laux, -1.0f,
					      0.1f, 20);
			if (scales[j] > max_scale)
				max_scale = scales[j];
			if (mins[j] > max_min)
				max_min = mins[j];
		}
		float inv_scale = max_scale > 0 ? 63.0f / max_scale : 0.0f;
		float inv_min = max_min > 0 ? 63.0f / max_min : 0.0f;
		memset(sc12, 0, 12);
		for (int j = 0; j < 8; j++) {
			/* ggml stores nearest_int into a uint8_t, then MIN(63, .) */
			int ls = (uint8_t)nearest_int(inv_scale * scales[j]);
			int lm = (uint8_t)nearest_int(inv_min * mins[j]);
			ls = ls < 63 ? ls : 63;
			lm = lm < 63 ? lm : 63;
			if (j < 4) {
				sc12[j] = (uint8_t)ls;
				sc12[j + 4] = (uint8_t)lm;
			} else {
				sc12[j + 4] = (uint8_t)((ls & 0xf) | (lm & 0xf) << 4);
				sc12[j - 4] |= (uint8_t)((ls >> 4) << 6);
				sc12[j] |= (uint8_t)((lm >> 4) << 6);
			}
		}
		uint16_t hd = tp_fp16_from_f32(max_scale / 63.0f);
		uint16_t hm = tp_fp16_from_f32(max_min / 63.0f);
		tp_quant_put_u16(y, hd);
		tp_quant_put_u16(y + 2, hm);
		/* Codes again with the scales as stored; a sub-block whose stored
		 * scale is 0 keeps the codes of the search. */
		for (int j = 0; j < 8; j++) {
			int sc, m;
			scale_min_k4(j, sc12, &sc, &m);
			float d = tp_fp16_to_f32(hd) * (float)sc;
			if (d == 0.0f)
				continue;
			float dm = tp_fp16_to_f32(hm) * (float)m;
			for (int i = 0; i < 32; i++) {
				int l = nearest_int((x[32 * j + i] + dm) / d);
				L[32 * j + i] = (uint8_t)(l < 0 ? 0 : l > 15 ? 15 : l);
			}
		}
		/* 64 values per 32 bytes: element l in the low nibble of byte l,
		 * element l+32 in its high nibble. */
		for (int j = 0; j < QK_K; j += 64)
			for (int l = 0; l < 32; l++)
				qs[j / 2 + l] = (uint8_t)(L[j + l] | L[j + l + 32] << 4);
	}
}

static void q4_k_row_deq(const uint8_t *y, size_t k, float *x)
{
	for (size_t b = 0; b < k / QK_K; b++, x += QK_K, y += Q4_K_BYTES) {
		float d = tp_fp16_to_f32(tp_quant_get_u16(y));
		float dmin = tp_fp16_to_f32(tp_quant_get_u16(y + 2));
		const uint8_t *sc12 = y + 4, *qs = y + 16;
		for (int j = 0; j < 8; j++) {
			int sc, m;
			scale_min_k4(j, sc12, &sc, &m);
			float d1 = d * (float)sc, m1 = dmin * (float)m;
			const uint8_t *q = qs + (j / 2) * 32;
			for (int l = 0; l < 32; l++) {
				int v = j % 2 ? q[l] >> 4 : q[l] & 0xf;
				x[32 * j + l] = d1 * (float)v - m1;
			}
		}
	}
}

/* ---- matrices ---------------------------------------------------------- */

typedef struct {
	size_t block, bytes;
	void (*row)(const float *x, size_t k, uint8_t *y);
	void (*row_deq)(const uint8_t *y, size_t k, float *x);
} ggml_type;

static const ggml_type t_q8_0 = {QK, Q8_0_BYTES, q8_0_row, q8_0_row_deq};
static const ggml_type t_q4_0 = {QK, Q4_0_BYTES, q4_0_row, q4_0_row_deq};
static const ggml_type t_q5_0 = {QK, Q5_0_BYTES, q5_0_row, q5_0_row_deq};
static const ggml_type t_q4_k = {QK_K, Q4_K_BYTES, q4_k_row, q4_k_row_deq};

/* The type a name's rows of cols are stored in; NULL means fp16. */
static const ggml_type *stored_type(const char *name, const ggml_type *t, size_t cols)
{
	const char *fb = tp_quant_fallback(name, cols);
	if (!fb)
		return t;
	return strcmp(fb, "q5_0") == 0 ? &t_q5_0 : NULL;
}

static size_t ggml_size(const char *name, const ggml_type *t, size_t rows, size_t cols)
{
	t = stored_type(name, t, cols);
	if (!t)
		return tp_quant_fmt_fp16.packed_size(rows, cols);
	return rows * (cols / t->block) * t->bytes;
}

static int ggml_quantize(const char *name, const ggml_type *t, const float *w, size_t rows,
			 size_t cols, void *packed)
{
	t = stored_type(name, t, cols);
	if (!t)
		return tp_quant_fmt_fp16.quantize(w, rows, cols, NULL, packed);
	size_t row_bytes = (cols / t->block) * t->bytes;
	for (size_t r = 0; r < rows; r++)
		t->row(w + r * cols, cols, (uint8_t *)packed + r * row_bytes);
	return 0;
}

/* Rows are independent: rows r0..r1 into w[(r1 - r0) * cols]. */
static void ggml_dequantize(const char *name, const ggml_type *t, const void *packed, size_t rows,
			    size_t cols, size_t r0, size_t r1, float *w)
{
	t = stored_type(name, t, cols);
	if (!t) {
		tp_quant_fmt_fp16.dequantize_rows(packed, rows, cols, r0, r1, w);
		return;
	}
	size_t row_bytes = (cols / t->block) * t->bytes;
	for (size_t r = r0; r < r1; r++)
		t->row_deq((const uint8_t *)packed + r * row_bytes, cols, w + (r - r0) * cols);
}

#define GGML_FORMAT(N)                                                                         \
	static size_t N##_size(size_t rows, size_t cols)                                       \
	{                                                                                      \
		return ggml_size(#N, &t_##N, rows, cols);                                      \
	}                                                                                      \
	static int N##_quantize(const float *w, size_t rows, size_t cols,                      \
				const tp_quant_calib *calib, void *packed)                     \
	{                                                                                      \
		(void)calib;                                                                   \
		return ggml_quantize(#N, &t_##N, w, rows, cols, packed);                       \
	}                                                                                      \
	static void N##_dequantize(const void *packed, size_t rows, size_t cols, float *w)     \
	{                                                                                      \
		ggml_dequantize(#N, &t_##N, packed, rows, cols, 0, rows, w);                   \
	}                                                                                      \
	static void N##_dequantize_rows(const void *packed, size_t rows, size_t cols,          \
					size_t r0, size_t r1, float *w)                        \
	{                                                                                      \
		ggml_dequantize(#N, &t_##N, packed, rows, cols, r0, r1, w);                    \
	}                                                                                      \
	const tp_quant_format tp_quant_fmt_##N = {                                             \
		.name = #N,                                                                    \
		.packed_size = N##_size,                                                       \
		.quantize = N##_quantize,                                                      \
		.dequantize = N##_dequantize,                                                  \
		.dequantize_rows = N##_dequantize_rows,                                        \
	};

GGML_FORMAT(q8_0)
GGML_FORMAT(q4_0)
GGML_FORMAT(q5_0)
GGML_FORMAT(q4_k)
