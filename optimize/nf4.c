/* nf4 and nf4_dq: bitsandbytes' 4-bit NormalFloat over blocks of 64 of the
 * flattened matrix, with the block absmax in fp32 (nf4) or double-quantized
 * to 8 bits (nf4_dq). Layouts: README.md. */
#include "quant_internal.h"

#define NF4_BLOCK 64
#define DQ_BLOCK 256

/* bitsandbytes' NF4 code (functional.py get_4bit_type("nf4")). */
const float tp_quant_nf4_code[16] = {
	-1.0f,
	-0.6961928009986877f,
	-0.5250730514526367f,
	-0.39491748809814453f,
	-0.28444138169288635f,
	-0.18477343022823334f,
	-0.09105003625154495f,
	0.0f,
	0.07958029955625534f,
	0.16093020141124725f,
	0.24611230194568634f,
	0.33791524171829224f,
	0.44070982933044434f,
	0.5626170039176941f,
	0.7229568362236023f,
	1.0f,
};

/* Index of the code value nearest to x in a sorted code of n values: the
 * number of midpoints x lies above (a tie goes to the lower value, as
 * bitsandbytes' dQuantizeNF4 does with its '>' thresholds); NaN gives the
 * index nearest to 0. */
static unsigned nearest_code(const float *code, unsigned n, float x)
{
	if (isnan(x))
		x = 0.0f;
	unsigned lo = 0, hi = n - 1; /* answer in [lo, hi] */
	while (lo < hi) {
		unsigned mid = (lo + hi) / 2;
		if (x > (code[mid] + code[mid + 1]) * 0.5f)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* bitsandbytes' create_dynamic_map(signed=True, max_exponent_bits=7,
 * total_bits=8), sorted: for i in 0..6, the 2^i midpoints of
 * linspace(0.1, 1, 2^i + 1) times +-10^(i-6), then 0 and 1. Computed in
 * double and rounded once to float (torch computes linspace in float32: a
 * value may differ in its last bit). */
static int cmp_float(const void *a, const void *b)
{
	float x = *(const float *)a, y = *(const float *)b;
	return (x > y) - (x < y);
}

void tp_quant_nf4_dq_map(float code[256])
{
	/* Built per call (cheap next to a matrix) so that threads share no
	 * state. */
	unsigned k = 0;
	for (int i = 0; i < 7; i++) {
		unsigned items = (1u << i) + 1;
		double p10 = pow(10.0, i - 6);
		for (unsigned j = 0; j + 1 < items; j++) {
			double b0 = 0.1 + 0.9 * j / (items - 1), b1 = 0.1 + 0.9 * (j + 1) / (items - 1);
			double m = (b0 + b1) / 2.0;
			code[k++] = (float)(p10 * m);
			code[k++] = (float)(-p10 * m);
		}
	}
	code[k++] = 0.0f;
	code[k++] = 1.0f;
	qsort(code, k, sizeof(float), cmp_float);
}

static size_t nblocks(size_t n, size_t block)
{
	return (n + block - 1) / block;
}

static size_t nf4_packed_size(size_t rows, size_t cols)
{
	size_t n = rows * cols;
	return 4 * nblocks(n, NF4_BLOCK) + (n + 1) / 2;
}

static size_t nf4_dq_packed_size(size_t rows, size_t cols)
{
	size_t n = rows * cols, nb = nblocks(n, NF4_BLOCK);
	return 4 + 4 * nblocks(nb, DQ_BLOCK) + nb + (n + 1) / 2;
}

/* Block absmax values into absmax[nb], 4-bit codes into nib (two per byte,
 * the even element in the high nibble, as bitsandbytes packs them). */
static void nf4_encode(const float *w, size_t n, float *absmax, uint8_t *nib)
{
	memset(nib, 0, (n + 1) / 2);
	for (size_t b = 0; b * NF4_BLOCK < n; b++) {
		size_t start = b * NF4_BLOCK, end = start + NF4_BLOCK < n ? start + NF4_BLOCK : n;
		float amax = 0.0f;
		for (size_t i = start; i < end; i++)
			if (fabsf(w[i]) > amax)
				amax = fabsf(w[i]);
		absmax[b] = amax;
		float inv = amax > 0.0f ? 1.0f / amax : 0.0f;
		for (size_t i = start; i < end; i++) {
			unsigned q = nearest_code(tp_quant_nf4_code, 16, w[i] * inv);
			nib[i / 2] |= (uint8_t)(i % 2 ? q : q << 4);
		}
	}
}

static unsigned nib_get(const uint8_t *nib, size_t i)
{
	return i % 2 ? nib[i / 2] & 0xfu : (unsigned)nib[i / 2] >> 4;
}

static int nf4_quantize(const float *w, size_t rows, size_t cols, const tp_quant_calib *calib,
			void *packed)
{
	(void)calib;
	size_t n = rows * cols, nb = nblocks(n, NF4_BLOCK);
	float *absmax = malloc((nb ? nb : 1) * sizeof(float));
	if (!absmax)
		return tp_error_set(TP_ENOMEM, "nf4: out of memory for %zu block scales", nb);
	uint8_t *p = packed;
	nf4_encode(w, n, absmax, p + 4 * nb);
	for (size_t b = 0; b < nb; b++)
		tp_quant_put_f32(p + 4 * b, absmax[b]);
	free(absmax);
	return 0;
}

/* Blocks run over the flattened matrix and may straddle rows: each element
 * looks up its own block, so any row range decodes on its own. */
static void nf4_dequantize_rows(const void *packed, size_t rows, size_t cols, size_t r0,
				size_t r1, float *w)
{
	size_t n = rows * cols, nb = nblocks(n, NF4_BLOCK);
	const uint8_t *p = packed;
	for (size_t i = r0 * cols; i < r1 * cols; i++)
		w[i - r0 * cols] = tp_quant_nf4_code[nib_get(p + 4 * nb, i)] *
				   tp_quant_get_f32(p + 4 * (i / NF4_BLOCK));
}

/* Double quantization as bitsandbytes' quantize_4bit(compress_statistics=
 * True): offset = mean of the absmax values; (absmax - offset) quantized
 * blockwise (256 per block) with the 8-bit dynamic map and an fp32 absmax
 * per block. */
static int nf4_dq_quantize(const float *w, size_t rows, size_t cols, const tp_quant_calib *calib,
			   void *packed)
{
	(void)calib;
	size_t n = rows * cols, nb = nblocks(n, NF4_BLOCK), nb2 = nblocks(nb, DQ_BLOCK);
	float *absmax = malloc((nb ? nb : 1) * sizeof(float));
	if (!absmax)
		return tp_error_set(TP_ENOMEM, "nf4_dq: out of memory for %zu block scales", nb);
	uint8_t *p = packed, *q8 = p + 4 + 4 * nb2;
	float code[256];
	tp_quant_nf4_dq_map(code);
	nf4_encode(w, n, absmax, q8 + nb);
	double sum = 0.0;
	for (size_t b = 0; b < nb; b++)
		sum += absmax[b];
	float offset = nb ? (float)(sum / (double)nb) : 0.0f;
	tp_quant_put_f32(p, offset);
	for (size_t b2 = 0; b2 < nb2; b2++) {
		size_t start = b2 * DQ_BLOCK, end = start + DQ_BLOCK < nb ? start + DQ_BLOCK : nb;
		float amax = 0.0f;
		for (size_t b = start; b < end; b++)
			if (fabsf(absmax[b] - offset) > amax)
				amax = fabsf(absmax[b] - offset);
		tp_quant_put_f32(p + 4 + 4 * b2, amax);
		float inv = amax > 0.0f ? 1.0f / amax : 0.0f;
		for (size_t b = start; b < end; b++)
			q8[b] = (uint8_t)nearest_code(code, 256, (absmax[b] - offset) * inv);
	}
	free(absmax);
	return 0;
}

/* The blocks overlapping rows r0..r1, each clipped to that range. */
static void nf4_dq_dequantize_rows(const void *packed, size_t rows, size_t cols, size_t r0,
				   size_t r1, float *w)
{
	size_t n = rows * cols, nb = nblocks(n, NF4_BLOCK), nb2 = nblocks(nb, DQ_BLOCK);
	size_t lo = r0 * cols, hi = r1 * cols;
	const uint8_t *p = packed, *q8 = p + 4 + 4 * nb2;
	float code[256];
	tp_quant_nf4_dq_map(code);
	float offset = tp_quant_get_f32(p);
	for (size_t b = lo / NF4_BLOCK; b * NF4_BLOCK < hi; b++) {
		float amax = code[q8[b]] * tp_quant_get_f32(p + 4 + 4 * (b / DQ_BLOCK)) + offset;
		size_t start = b * NF4_BLOCK, end = start + NF4_BLOCK < hi ? start + NF4_BLOCK : hi;
		for (size_t i = start > lo ? start : lo; i < end; i++)
			w[i - lo] = tp_quant_nf4_code[nib_get(q8 + nb, i)] * amax;
	}
}

TP_QUANT_FORMAT_DEF(tp_quant_fmt_nf4, "nf4", nf4_packed_size, nf4_quantize,
		    nf4_dequantize_rows);

TP_QUANT_FORMAT_DEF(tp_quant_fmt_nf4_dq, "nf4_dq", nf4_dq_packed_size,
		    nf4_dq_quantize, nf4_dq_dequantize_rows);
