/* Asymmetric round-to-nearest over groups along the input dimension (rtnB_gG)
 * and the two hybrids built on it: int4_int2_residual and int4_sparse25.
 * Layouts: README.md. */
#include "quant_internal.h"

void tp_quant_group_params(const float *w, size_t n, int bits, float *scale, int *zero)
{
	int maxq = (1 << bits) - 1;
	float lo = INFINITY, hi = -INFINITY;
	for (size_t i = 0; i < n; i++) {
		if (w[i] < lo)
			lo = w[i];
		if (w[i] > hi)
			hi = w[i];
	}
	/* The range always includes 0, as AutoGPTQ's quantizer does: otherwise
	 * an all-positive group gets zero = 0 and its largest weights clip to
	 * (2^b-1)*scale = max-min. n = 0 or all NaN acts as min = max = 0. */
	if (lo > 0.0f)
		lo = 0.0f;
	if (hi < 0.0f)
		hi = 0.0f;
	float range = hi - lo;
	if (!(range >= 1e-5f)) /* also an Inf - Inf NaN */
		range = isnan(range) ? 65504.0f : 1e-5f;
	/* The scale is stored as fp16: quantize with the value stored. */
	float s = tp_fp16_to_f32(tp_fp16_from_f32(range / (float)maxq));
	if (!(s <= 65504.0f))
		s = 65504.0f;
	if (s < 0x1p-24f)
		s = 0x1p-24f;
	*scale = s;
	*zero = tp_quant_rint_clamp(-lo / s, 0, maxq);
}

int tp_quant_group_code(float w, float scale, int zero, int bits)
{
	int maxq = (1 << bits) - 1;
	if (isnan(w))
		return zero;
	/* clamp(round(w/s) + zero, 0, maxq) with the clamp taken before the
	 * conversion to int. */
	return tp_quant_rint_clamp(w / scale, -zero, maxq - zero) + zero;
}

static size_t ngroups(size_t cols, size_t group)
{
	return (cols + group - 1) / group;
}

size_t tp_quant_group_packed_size(int bits, size_t group, size_t rows, size_t cols)
{
	size_t ng = rows * ngroups(cols, group);
	return 2 * ng + tp_quant_bits_bytes(ng, bits) + tp_quant_bits_bytes(rows * cols, bits);
}

void tp_quant_group_pack(int bits, size_t group, size_t rows, size_t cols, const uint8_t *q,
			 const float *scale, const int *zero, void *packed)
{
	size_t ng = rows * ngroups(cols, group);
	uint8_t *p = packed, *zp = p + 2 * ng, *qp = zp + tp_quant_bits_bytes(ng, bits);
	memset(zp, 0, tp_quant_bits_bytes(ng, bits) + tp_quant_bits_bytes(rows * cols, bits));
	for (size_t g = 0; g < ng; g++) {
		tp_quant_put_u16(p + 2 * g, tp_fp16_from_f32(scale[g]));
		tp_quant_bits_put(zp, g, bits, (unsigned)zero[g]);
	}
	for (size_t i = 0; i < rows * cols; i++)
		tp_quant_bits_put(qp, i, bits, q[i]);
}

void tp_quant_group_unpack(int bits, size_t group, const void *packed, size_t rows, size_t cols,
			   uint8_t *q, float *scale, int *zero)
{
	size_t ng = rows * ngroups(cols, group);
	const uint8_t *p = packed, *zp = p + 2 * ng, *qp = zp + tp_quant_bits_bytes(ng, bits);
	for (size_t g = 0; g < ng; g++) {
		if (scale)
			scale[g] = tp_fp16_to_f32(tp_quant_get_u16(p + 2 * g));
		if (zero)
			zero[g] = (int)tp_quant_bits_get(zp, g, bits);
	}
	if (q)
		for (size_t i = 0; i < rows * cols; i++)
			q[i] = (uint8_t)tp_quant_bits_get(qp, i, bits);
}

bool tp_quant_group_format_info(const tp_quant_format *f, int *bits, size_t *group)
{
	int b, n = 0;
	size_t g;
	if (!f || !f->name || sscanf(f->name, "rtn%d_g%zu%n", &b, &g, &n) != 2 ||
	    f->name[n] != 0 || tp_quant_group_format(b, g) != f)
		return false;
	if (bits)
		*bits = b;
	if (group)
		*group = g;
	return true;
}

/* Parameters of every group of w (one row-major matrix) into scale/zero;
 * keep, when not NULL, restricts each group to the weights it marks. */
static void group_params_all(int bits, size_t group, const float *w, const uint8_t *keep,
			     size_t rows, size_t cols, float *scale, int *zero, float *tmp)
{
	size_t ngr = ngroups(cols, group);
	for (size_t r = 0; r < rows; r++)
		for (size_t g = 0; g < ngr; g++) {
			size_t c0 = g * group, c1 = c0 + group < cols ? c0 + group : cols, n = 0;
			for (size_t c = c0; c < c1; c++)
				if (!keep || keep[r * cols + c])
					tmp[n++] = w[r * cols + c];
			tp_quant_group_params(tmp, n, bits, &scale[r * ngr + g], &zero[r * ngr + g]);
		}
}

void tp_quant_group_quantize(int bits, size_t group, const float *w, size_t rows, size_t cols,
			     void *packed)
{
	size_t ngr = ngroups(cols, group), ng = rows * ngr;
	uint8_t *p = packed, *zp = p + 2 * ng, *qp = zp + tp_quant_bits_bytes(ng, bits);
	memset(zp, 0, tp_quant_bits_bytes(ng, bits) + tp_quant_bits_bytes(rows * cols, bits));
	for (size_t r = 0; r < rows; r++)
		for (size_t g = 0; g < ngr; g++) {
			size_t c0 = g * group, c1 = c0 + group < cols ? c0 + group : cols;
			float s;
			int z;
			tp_quant_group_params(w + r * cols + c0, c1 - c0, bits, &s, &z);
			tp_quant_put_u16(p + 2 * (r * ngr + g), tp_fp16_from_f32(s));
			tp_quant_bits_put(zp, r * ngr + g, bits, (unsigned)z);
			for (size_t c = c0; c < c1; c++)
				tp_quant_bits_put(qp, r * cols + c, bits,
						  (unsigned)tp_quant_group_code(w[r * cols + c], s, z,
										bits));
		}
}

/* Rows r0..r1 of w = (q - zero) * scale into w[(r1 - r0) * cols], or w +=
 * that when add (the residual's second pass). */
static void group_decode(int bits, size_t group, const void *packed, size_t rows, size_t cols,
			 size_t r0, size_t r1, float *w, bool add)
{
	size_t ngr = ngroups(cols, group), ng = rows * ngr;
	const uint8_t *p = packed, *zp = p + 2 * ng, *qp = zp + tp_quant_bits_bytes(ng, bits);
	for (size_t r = r0; r < r1; r++)
		for (size_t c = 0; c < cols; c++) {
			size_t g = r * ngr + c / group;
			float s = tp_fp16_to_f32(tp_quant_get_u16(p + 2 * g));
			int z = (int)tp_quant_bits_get(zp, g, bits);
			int q = (int)tp_quant_bits_get(qp, r * cols + c, bits);
			float v = (float)(q - z) * s, *o = &w[(r - r0) * cols + c];
			*o = add ? *o + v : v;
		}
}

void tp_quant_group_dequantize(int bits, size_t group, const void *packed, size_t rows,
			       size_t cols, float *w)
{
	group_decode(bits, group, packed, rows, cols, 0, rows, w, false);
}

/* One registered format per (bits, group): the vtable has no parameters. */
#define RTN_FORMAT(B, G)                                                                        \
	static size_t rtn##B##_g##G##_size(size_t rows, size_t cols)                            \
	{                                                                                       \
		return tp_quant_group_packed_size(B, G, rows, cols);                            \
	}                                                                                       \
	static int rtn##B##_g##G##_quantize(const float *w, size_t rows, size_t cols,           \
					    const tp_quant_calib *calib, void *packed)          \
	{                                                                                       \
		(void)calib;                                                                    \
		tp_quant_group_quantize(B, G, w, rows, cols, packed);                           \
		return 0;                                                                       \
	}                                                                                       \
	static void rtn##B##_g##G##_dequantize(const void *packed, size_t rows, size_t cols,    \
					       float *w)                                        \
	{                                                                                       \
		tp_quant_group_dequantize(B, G, packed, rows, cols, w);                         \
	}                                                                                       \
	static void rtn##B##_g##G##_dequantize_rows(const void *packed, size_t rows,            \
						    size_t cols, size_t r0, size_t r1, float *w) \
	{                                                                                       \
		group_decode(B, G, packed, rows, cols, r0, r1, w, false);                       \
	}                                                                                       \
	const tp_quant_format tp_quant_fmt_rtn##B##_g##G = {                                    \
		.name = "rtn" #B "_g" #G,                                                       \
		.packed_size = rtn##B##_g##G##_size,                                            \
		.quantize = rtn##B##_g##G##_quantize,                                           \
		.dequantize = rtn##B##_g##G##_dequantize,                                       \
		.dequantize_rows = rtn##B##_g##G##_dequantize_rows,                             \
	};

RTN_FORMAT(4, 128)
RTN_FORMAT(4, 64)
RTN_FORMAT(4, 256)
RTN_FORMAT(3, 128)
RTN_FORMAT(2, 128)

const tp_quant_format *tp_quant_group_format(int bits, size_t group)
{
	static const tp_quant_format *const all[] = {
		&tp_quant_fmt_rtn4_g128, &tp_quant_fmt_rtn4_g64, &tp_quant_fmt_rtn4_g256,
		&tp_quant_fmt_rtn3_g128, &tp_quant_fmt_rtn2_g128,
	};
	char name[32];
	snprintf(name, sizeof(name), "rtn%d_g%zu", bits, group);
	for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
		if (strcmp(all[i]->name, name) == 0)
			return all[i];
	return NULL;
}

/* ---- int4_int2_residual: rtn4_g128 of w, then rtn2_g128 of what is left -- */

static size_t residual_size(size_t rows, size_t cols)
{
	return tp_quant_group_packed_size(4, 128, rows, cols) +
	       tp_quant_group_packed_size(2, 128, rows, cols);
}

static int residual_quantize(const float *w, size_t rows, size_t cols,
			     const tp_quant_calib *calib, void *packed)
{
	(void)calib;
	size_t n = rows * cols, first = tp_quant_group_packed_size(4, 128, rows, cols);
	float *rest = malloc((n ? n : 1) * sizeof(float));
	if (!rest)
		return tp_error_set(TP_ENOMEM, "int4_int2_residual: out of memory for %zu weights",
				    n);
	tp_quant_group_quantize(4, 128, w, rows, cols, packed);
	tp_quant_group_dequantize(4, 128, packed, rows, cols, rest);
	for (size_t i = 0; i < n; i++)
		rest[i] = w[i] - rest[i];
	tp_quant_group_quantize(2, 128, rest, rows, cols, (uint8_t *)packed + first);
	free(rest);
	return 0;
}

static void residual_dequantize_rows(const void *packed, size_t rows, size_t cols, size_t r0,
				     size_t r1, float *w)
{
	size_t first = tp_quant_group_packed_size(4, 128, rows, cols);
	group_decode(4, 128, packed, rows, cols, r0, r1, w, false);
	group_decode(2, 128, (const uint8_t *)packed + first, rows, cols, r0, r1, w, true);
}

TP_QUANT_FORMAT_DEF(tp_quant_fmt_int4_int2_residual, "int4_int2_residual", residual_size,
		    residual_quantize, residual_dequantize_rows);

/* ---- int4_sparse25: per row, the cols/4 weights of least |w_ij|*||x_j|| are
 * zero; the rest rtn4 g128 with each group's parameters over its kept
 * weights. Stored: scales, zeros, a keep bitmap, then codes of kept weights
 * only. ---------------------------------------------------------------------- */

static size_t sparse_kept(size_t cols)
{
	return cols - cols / 4;
}

static size_t sparse_size(size_t rows, size_t cols)
{
	size_t ng = rows * ngroups(cols, 128);
	return 2 * ng + tp_quant_bits_bytes(ng, 4) + tp_quant_bits_bytes(rows * cols, 1) +
	       tp_quant_bits_bytes(rows * sparse_kept(cols), 4);
}

typedef struct {
	float imp;
	size_t col;
} sparse_item;

/* Least important first; NaN importance counts as most important (kept);
 * ties by column so the choice is deterministic. */
static int sparse_cmp(const void *a, const void *b)
{
	const sparse_item *x = a, *y = b;
	int xn = isnan(x->imp), yn = isnan(y->imp);
	if (xn != yn)
		return xn - yn;
	if (!xn && x->imp != y->imp)
		return x->imp < y->imp ? -1 : 1;
	return (x->col > y->col) - (x->col < y->col);
}

static int sparse_quantize(const float *w, size_t rows, size_t cols, const tp_quant_calib *calib,
			   void *packed)
{
	if (!calib || !calib->sq_sum || calib->cols != cols)
		return tp_error_set(TP_EINVAL,
				    "int4_sparse25 needs calibration statistics of the layer's %zu "
				    "inputs",
				    cols);
	int rc = 0;
	size_t n = rows * cols, ngr = ngroups(cols, 128), ng = rows * ngr;
	uint8_t *keep = malloc(n ? n : 1);
	sparse_item *items = malloc((cols ? cols : 1) * sizeof(*items));
	float *scale = malloc((ng ? ng : 1) * sizeof(float));
	int *zero = malloc((ng ? ng : 1) * sizeof(int));
	float *tmp = malloc(128 * sizeof(float));
	if (!keep || !items || !scale || !zero || !tmp) {
		rc = tp_error_set(TP_ENOMEM, "int4_sparse25: out of memory for %zu weights", n);
		goto done;
	}
	memset(keep, 1, n);
	for (size_t r = 0; r < rows; r++) {
		for (size_t c = 0; c < cols; c++) {
			items[c].imp = fabsf(w[r * cols + c]) * (float)sqrt(calib->sq_sum[c]);
			items[c].col = c;
		}
		qsort(items, cols, sizeof(*items), sparse_cmp);
		for (size_t k = 0; k < cols / 4; k++)
			keep[r * cols + items[k].col] = 0;
	}
	group_params_all(4, 128, w, keep, rows, cols, scale, zero, tmp);
	uint8_t *p = packed, *zp = p + 2 * ng, *mp = zp + tp_quant_bits_bytes(ng, 4),
		*qp = mp + tp_quant_bits_bytes(n, 1);
	memset(zp, 0, sparse_size(rows, cols) - 2 * ng);
	for (size_t g = 0; g < ng; g++) {
		tp_quant_put_u16(p + 2 * g, tp_fp16_from_f32(scale[g]));
		tp_quant_bits_put(zp, g, 4, (unsigned)zero[g]);
	}
	size_t k = 0;
	for (size_t i = 0; i < n; i++) {
		if (!keep[i])
			continue;
		size_t g = (i / cols) * ngr + (i % cols) / 128;
		tp_quant_bits_put(mp, i, 1, 1);
		tp_quant_bits_put(qp, k++, 4,
				  (unsigned)tp_quant_group_code(w[i], scale[g], zero[g], 4));
	}
done:
	free(keep);
	free(items);
	free(scale);
	free(zero);
	free(tmp);
	return rc;
}

/* Every row keeps exactly sparse_kept(cols) codes, so row r's first code is
 * code r * sparse_kept(cols). */
static void sparse_dequantize_rows(const void *packed, size_t rows, size_t cols, size_t r0,
				   size_t r1, float *w)
{
	size_t n = rows * cols, ngr = ngroups(cols, 128), ng = rows * ngr,
	       k = r0 * sparse_kept(cols);
	const uint8_t *p = packed, *zp = p + 2 * ng, *mp = zp + tp_quant_bits_bytes(ng, 4),
		      *qp = mp + tp_quant_bits_bytes(n, 1);
	for (size_t i = r0 * cols; i < r1 * cols; i++) {
		float *o = &w[i - r0 * cols];
		if (!tp_quant_bits_get(mp, i, 1)) {
			*o = 0.0f;
			continue;
		}
		size_t g = (i / cols) * ngr + (i % cols) / 128;
		float s = tp_fp16_to_f32(tp_quant_get_u16(p + 2 * g));
		int z = (int)tp_quant_bits_get(zp, g, 4), q = (int)tp_quant_bits_get(qp, k++, 4);
		*o = (float)(q - z) * s;
	}
}

TP_QUANT_FORMAT_DEF(tp_quant_fmt_int4_sparse25, "int4_sparse25", sparse_size,
		    sparse_quantize, sparse_dequantize_rows);
