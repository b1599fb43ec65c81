/*
 * tp-bitx: the published "BitX" baseline, for benchmarks only. Each matched
 * float tensor is XORed with its base and split into an exponent plane and
 * sign+mantissa planes; every plane and everything else is zstd-compressed
 * (level 3, default parameters) in 1 MiB chunks. No grouping, no ULP
 * transform: it measures what tenpak's codec adds over the known method.
 *
 *   tp-bitx compress BASE TARGET OUT
 *   tp-bitx apply BASE DELTA OUT
 *
 * Stream: the target's header bytes as a chunk, then each chunk of each
 * segment in file order; a chunk is u32 plane count, then per plane
 * u32 compressed length and the zstd frame. The layout is re-derived from
 * the decoded header, so nothing else is stored.
 */
#include "delta_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHUNK (1u << 20)
#define LEVEL 3

typedef struct seg {
	uint64_t off, size, base_off;
	unsigned width; /* 0: plain bytes */
} seg;

static int die(const char *what)
{
	fprintf(stderr, "tp-bitx: %s: %s\n", what, tp_error_last());
	return 1;
}

/* Header, tensors (matched floats with their base offset) and gaps. */
static size_t layout(const tp_safetensors *t, const tp_safetensors *b, uint64_t size, seg *out)
{
	size_t n = 0;
	uint64_t pos = t->data_start;
	for (size_t i = 0; i < t->ntensors; i++) {
		const tp_st_tensor *x = &t->tensors[i], *y = tp_safetensors_find(b, x->name);
		if (x->offset > pos)
			out[n++] = (seg){ pos, x->offset - pos, 0, 0 };
		bool match = y && y->dtype == x->dtype && y->size == x->size &&
			     tp_dtype_is_float(x->dtype);
		out[n++] = (seg){ x->offset, x->size, match ? y->offset : 0,
				  match ? tp_dtype_size(x->dtype) : 0 };
		pos = x->offset + x->size;
	}
	if (pos < size)
		out[n++] = (seg){ pos, size - pos, 0, 0 };
	return n;
}

static void put32(FILE *f, uint32_t v)
{
	fwrite(&v, 4, 1, f);
}

static int compress_chunk(FILE *out, ZSTD_CCtx *cc, const uint8_t *t, const uint8_t *b,
			  size_t len, unsigned w, uint8_t *x, uint8_t *planes, uint8_t *z)
{
	unsigned np = w ? w : 1;
	const uint8_t *src = t;
	if (w) {
		for (size_t i = 0; i < len; i++)
			x[i] = t[i] ^ b[i];
		tp_delta_split(TP_DELTA_XFORM_PLANES, w, x, NULL, len, planes);
		src = planes;
	}
	put32(out, np);
	for (unsigned p = 0; p < np; p++) {
		size_t r = ZSTD_compressCCtx(cc, z, ZSTD_compressBound(CHUNK), src + p * (len / np),
					     len / np, LEVEL);
		if (ZSTD_isError(r))
			return -1;
		put32(out, (uint32_t)r);
		fwrite(z, 1, r, out);
	}
	return 0;
}

static int decompress_chunk(FILE *in, ZSTD_DCtx *dc, uint8_t *t, const uint8_t *b, size_t len,
			    unsigned w, uint8_t *planes, uint8_t *z)
{
	uint32_t np, clen;
	if (fread(&np, 4, 1, in) != 1 || np != (w ? w : 1))
		return -1;
	uint8_t *dst = w ? planes : t;
	for (unsigned p = 0; p < np; p++) {
		if (fread(&clen, 4, 1, in) != 1 || clen > ZSTD_compressBound(CHUNK) ||
		    fread(z, 1, clen, in) != clen ||
		    ZSTD_decompressDCtx(dc, dst + p * (len / np), len / np, z, clen) != len / np)
			return -1;
	}
	if (w) {
		tp_delta_merge(TP_DELTA_XFORM_PLANES, w, planes, NULL, len, t);
		for (size_t i = 0; i < len; i++)
			t[i] ^= b[i];
	}
	return 0;
}

static int run(bool apply, const char *bpath, const char *in_path, const char *out_path)
{
	tp_map bm, tm = { 0 };
	tp_safetensors *bs = NULL, *ts = NULL;
	FILE *in = NULL, *out = fopen(out_path, "wb");
	ZSTD_CCtx *cc = ZSTD_createCCtx();
	ZSTD_DCtx *dc = ZSTD_createDCtx();
	uint8_t *x = malloc(CHUNK), *planes = malloc(CHUNK), *z = malloc(ZSTD_compressBound(CHUNK));
	uint8_t *hdr = NULL, *t = apply ? malloc(CHUNK) : NULL;
	seg *segs = NULL;
	int rc = 1;
	if (!out || tp_map_open(&bm, bpath) < 0 ||
	    tp_safetensors_parse(&bs, bm.ptr, (size_t)bm.size, bm.size) < 0)
		return die(bpath);
	uint64_t size, hlen;
	if (!apply) {
		if (tp_map_open(&tm, in_path) < 0 ||
		    tp_safetensors_parse(&ts, tm.ptr, (size_t)tm.size, tm.size) < 0)
			return die(in_path);
		size = tm.size;
		hlen = ts->data_start;
		fwrite(&size, 8, 1, out);
		fwrite(&hlen, 8, 1, out);
		size_t r = ZSTD_compressCCtx(cc, z, ZSTD_compressBound(CHUNK), tm.ptr, hlen, LEVEL);
		if (hlen > CHUNK || ZSTD_isError(r))
			return die(in_path);
		put32(out, (uint32_t)r);
		fwrite(z, 1, r, out);
	} else {
		uint32_t clen;
		in = fopen(in_path, "rb");
		if (!in || fread(&size, 8, 1, in) != 1 || fread(&hlen, 8, 1, in) != 1 ||
		    hlen > CHUNK || fread(&clen, 4, 1, in) != 1 ||
		    clen > ZSTD_compressBound(hlen) || !(hdr = malloc(hlen)) ||
		    fread(z, 1, clen, in) != clen || ZSTD_decompress(hdr, hlen, z, clen) != hlen ||
		    tp_safetensors_parse(&ts, hdr, hlen, size) < 0)
			return die(in_path);
		fwrite(hdr, 1, hlen, out);
	}
	segs = malloc((2 * ts->ntensors + 2) * sizeof(*segs));
	size_t n = layout(ts, bs, size, segs);
	for (size_t i = 0; i < n; i++) {
		for (uint64_t o = 0; o < segs[i].size; o += CHUNK) {
			size_t len = segs[i].size - o < CHUNK ? (size_t)(segs[i].size - o) : CHUNK;
			const uint8_t *b = bm.ptr + segs[i].base_off + o;
			if (apply) {
				if (decompress_chunk(in, dc, t, b, len, segs[i].width, planes, z) < 0) {
					fprintf(stderr, "tp-bitx: corrupt input\n");
					goto done;
				}
				fwrite(t, 1, len, out);
			} else if (compress_chunk(out, cc, tm.ptr + segs[i].off + o, b, len,
						  segs[i].width, x, planes, z) < 0) {
				goto done;
			}
			tp_map_release(&bm, segs[i].base_off + o, len);
			if (!apply)
				tp_map_release(&tm, segs[i].off + o, len);
		}
	}
	rc = fclose(out) == 0 ? 0 : 1;
	out = NULL;
done:
	if (out)
		fclose(out);
	if (in)
		fclose(in);
	tp_safetensors_free(bs);
	tp_safetensors_free(ts);
	tp_map_close(&bm);
	tp_map_close(&tm);
	ZSTD_freeCCtx(cc);
	ZSTD_freeDCtx(dc);
	free(x), free(planes), free(z), free(hdr), free(t), free(segs);
	return rc;
}

int main(int argc, char **argv)
{
	if (argc != 5 || (strcmp(argv[1], "compress") != 0 && strcmp(argv[1], "apply") != 0)) {
		fputs("usage: tp-bitx compress|apply BASE INPUT OUTPUT\n", stderr);
		return 2;
	}
	return run(strcmp(argv[1], "apply") == 0, argv[2], argv[3], argv[4]);
}
