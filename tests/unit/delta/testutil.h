/* Synthetic data and file helpers for the delta tests (on tp_test.h). */
#ifndef TP_DELTA_TESTUTIL_H
#define TP_DELTA_TESTUTIL_H

#include "../tp_test.h"
#include "tp_common.h"
#include "tp_delta.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* splitmix64: fixed seeds make every run generate the same data. */
static inline uint64_t t_rand(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* Random words salted with the patterns that break naive float code:
 * +-0, +-Inf, NaNs with payloads, subnormals, extremes. */
static inline void t_fill_special(uint8_t *p, size_t len, unsigned w, uint64_t *seed)
{
	for (size_t i = 0; i + w <= len; i += w) {
		uint64_t v = t_rand(seed), sign = (uint64_t)1 << (8 * w - 1);
		switch (t_rand(seed) % 8) {
		case 0: v = 0; break;
		case 1: v = sign; break;                 /* -0.0 */
		case 2: v = ~(uint64_t)0 >> (64 - 8 * w + 1); break; /* all ones but sign: NaN */
		case 3: v &= 0xff; break;                /* subnormal-ish */
		case 4: v = sign | (v & 0xf); break;
		default: break;
		}
		memcpy(p + i, &v, w);
	}
}

typedef struct t_tensor {
	const char *name;
	tp_dtype dtype;
	unsigned ndim;
	uint64_t shape[4];
	uint8_t *data; /* owned */
	size_t size;
} t_tensor;

static inline size_t t_numel(const t_tensor *t)
{
	size_t n = 1;
	for (unsigned i = 0; i < t->ndim; i++)
		n *= (size_t)t->shape[i];
	return n;
}

/* Write tensors in the given order; pad_to pads the JSON header with
 * spaces to that many bytes (0: no padding), meta adds __metadata__. */
static inline int t_write_st(const char *path, const t_tensor *ts, size_t n, size_t pad_to,
			     const char *meta)
{
	tp_buf h = TP_BUF_INIT(1 << 24);
	size_t off = 0;
	tp_buf_adds(&h, "{");
	if (meta)
		tp_buf_addf(&h, "\"__metadata__\":{\"note\":\"%s\"},", meta);
	for (size_t i = 0; i < n; i++) {
		tp_buf_addf(&h, "%s\"%s\":{\"dtype\":\"%s\",\"shape\":[", i ? "," : "", ts[i].name,
			    tp_dtype_name(ts[i].dtype));
		for (unsigned d = 0; d < ts[i].ndim; d++)
			tp_buf_addf(&h, "%s%llu", d ? "," : "", (unsigned long long)ts[i].shape[d]);
		tp_buf_addf(&h, "],\"data_offsets\":[%zu,%zu]}", off, off + ts[i].size);
		off += ts[i].size;
	}
	tp_buf_adds(&h, "}");
	while (h.len < pad_to || h.len % 8)
		tp_buf_adds(&h, " ");
	FILE *f = fopen(path, "wb");
	if (!f)
		return -1;
	uint64_t len = h.len;
	fwrite(&len, 8, 1, f);
	fwrite(h.ptr, 1, h.len, f);
	for (size_t i = 0; i < n; i++)
		fwrite(ts[i].data, 1, ts[i].size, f);
	tp_buf_free(&h);
	return fclose(f) == 0 ? 0 : -1;
}

static inline int t_write_bytes(const char *path, const void *data, size_t n)
{
	FILE *f = fopen(path, "wb");
	if (!f)
		return -1;
	fwrite(data, 1, n, f);
	return fclose(f) == 0 ? 0 : -1;
}

/* Whole file into memory (tests only handle small files). */
static inline uint8_t *t_read_file(const char *path, size_t *n)
{
	FILE *f = fopen(path, "rb");
	*n = 0;
	if (!f)
		return NULL;
	fseek(f, 0, SEEK_END);
	long len = ftell(f);
	fseek(f, 0, SEEK_SET);
	uint8_t *p = malloc(len > 0 ? (size_t)len : 1);
	*n = p ? fread(p, 1, (size_t)len, f) : 0;
	fclose(f);
	return p;
}

static inline bool t_same_files(const char *a, const char *b)
{
	size_t na = 0, nb = 0;
	uint8_t *pa = t_read_file(a, &na), *pb = t_read_file(b, &nb);
	bool same = pa && pb && na == nb && memcmp(pa, pb, na) == 0;
	free(pa);
	free(pb);
	return same;
}

static inline bool t_exists(const char *path)
{
	FILE *f = fopen(path, "rb");
	if (f)
		fclose(f);
	return f != NULL;
}

#endif
