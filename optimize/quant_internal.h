/* Helpers shared by the format implementations (not part of the API). */
#ifndef TP_QUANT_INTERNAL_H
#define TP_QUANT_INTERNAL_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tp_optimize.h"

extern const tp_quant_format tp_quant_fmt_fp16, tp_quant_fmt_bf16, tp_quant_fmt_int8,
	tp_quant_fmt_nf4, tp_quant_fmt_nf4_dq, tp_quant_fmt_rtn4_g128, tp_quant_fmt_rtn4_g64,
	tp_quant_fmt_rtn4_g256, tp_quant_fmt_rtn3_g128, tp_quant_fmt_rtn2_g128,
	tp_quant_fmt_q8_0, tp_quant_fmt_q4_0, tp_quant_fmt_q5_0, tp_quant_fmt_q4_k,
	tp_quant_fmt_int4_int2_residual, tp_quant_fmt_int4_sparse25;

/* Candidates (candidates.c): a monotonic clock in seconds; count one
 * quantized rows x cols layer of packed bytes in st; set st's ratios. */
double tp_quant_now_s(void);
void tp_candidate_stats_count(tp_candidate_stats *st, size_t rows, size_t cols, size_t packed,
			      unsigned source_bits);
int tp_candidate_stats_finish(tp_candidate_stats *st, const char *dir);
/* The weights file of dir: weights when given, else dir/model.safetensors
 * if it is a regular file, else dir/model.safetensors.index.json (*out
 * malloc'd). */
int tp_optimize_weights_path(const char *dir, const char *weights, char **out);

/* Defines format variable var called name; dequant_rows is its
 * dequantize_rows, and dequantize is that over all rows. */
#define TP_QUANT_FORMAT_DEF(var, name_, size, quant, dequant_rows)                             \
	static void var##_dequantize_all(const void *packed, size_t rows, size_t cols, float *w) \
	{                                                                                        \
		dequant_rows(packed, rows, cols, 0, rows, w);                                    \
	}                                                                                        \
	const tp_quant_format var = {                                                            \
		.name = name_,                                                                   \
		.packed_size = size,                                                             \
		.quantize = quant,                                                               \
		.dequantize = var##_dequantize_all,                                              \
		.dequantize_rows = dequant_rows,                                                 \
	}

/* x rounded half to even and clamped to [lo, hi]; NaN gives lo. Never
 * converts an out-of-range float to int (that is undefined behaviour). */
static inline int tp_quant_rint_clamp(float x, int lo, int hi)
{
	if (!(x > (float)lo))
		return lo;
	if (x >= (float)hi)
		return hi;
	return (int)nearbyintf(x);
}

/* nf4 (nf4.c): the 16 NormalFloat values, and the sorted 8-bit dynamic map
 * nf4_dq stores block absmax values with (built per call: threads share no
 * state). */
extern const float tp_quant_nf4_code[16];
void tp_quant_nf4_dq_map(float code[256]);

/* Little-endian stores and loads. */
static inline void tp_quant_put_u16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}
static inline uint16_t tp_quant_get_u16(const uint8_t *p)
{
	return (uint16_t)(p[0] | (p[1] << 8));
}
static inline void tp_quant_put_f32(uint8_t *p, float f)
{
	uint32_t v;
	memcpy(&v, &f, 4);
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}
static inline float tp_quant_get_f32(const uint8_t *p)
{
	uint32_t v = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
		     (uint32_t)p[3] << 24;
	float f;
	memcpy(&f, &v, 4);
	return f;
}

/* A stream of bits-wide codes, code i at bit i*bits, least significant bit
 * first; the buffer must start zeroed for puts. */
static inline void tp_quant_bits_put(uint8_t *p, size_t i, int bits, unsigned v)
{
	size_t bit = i * (size_t)bits;
	for (int b = 0; b < bits; b++, bit++)
		p[bit / 8] |= (uint8_t)(((v >> b) & 1u) << (bit % 8));
}
static inline unsigned tp_quant_bits_get(const uint8_t *p, size_t i, int bits)
{
	size_t bit = i * (size_t)bits;
	unsigned v = 0;
	for (int b = 0; b < bits; b++, bit++)
		v |= (unsigned)((p[bit / 8] >> (bit % 8)) & 1u) << b;
	return v;
}
static inline size_t tp_quant_bits_bytes(size_t n, int bits)
{
	return (n * (size_t)bits + 7) / 8;
}

/* Copy src_dir's small regular files (up to 64 MiB; larger ones and dot
 * files are left) into out_dir, except those skip() names: the tokenizer,
 * generation config and the like that a written model keeps (export.c). */
int tp_optimize_copy_small_files(const char *src_dir, const char *out_dir,
				 bool (*skip)(const char *name));

#endif
