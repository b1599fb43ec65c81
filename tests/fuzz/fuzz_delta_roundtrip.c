/* Delta round trip: a safetensors target (and a perturbed base) built from
 * the input must compress deterministically and apply back bit-exactly,
 * whatever the float bit patterns (NaN payloads, -0, Inf, subnormals). */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fuzz_util.h"
#include "tp_delta.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Big enough for several 64 KiB chunks in one tensor, small enough to stay
 * fast under ASan. */
#define MAX_DATA (200u << 10)
#define MAX_TENSORS 6

typedef struct cursor {
	const uint8_t *p;
	size_t len, pos;
} cursor;

static uint8_t next(cursor *c)
{
	return c->pos < c->len ? c->p[c->pos++] : 0;
}

typedef struct spec {
	tp_dtype dtype;
	unsigned ndim;
	uint64_t shape[3];
	uint64_t bytes;
	unsigned gap; /* bytes of padding before the tensor */
} spec;

/* Append a safetensors file to b: header from specs (names "t<i>", or "x<i>"
 * for odd tensors when rename_odd), tensor bytes from payload. */
static void build(tp_buf *b, const spec *sp, size_t n, bool meta, bool rename_odd,
		  unsigned extra_gap, unsigned pad, const uint8_t *payload, size_t plen)
{
	tp_buf h = TP_BUF_INIT(1u << 20);
	uint64_t off = 0;
	tp_buf_adds(&h, "{");
	if (meta)
		tp_buf_adds(&h, "\"__metadata__\":{\"format\":\"pt\",\"note\":\"fuzz\"},");
	for (size_t i = 0; i < n; i++) {
		off += sp[i].gap + extra_gap;
		tp_buf_addf(&h, "%s\"%c%zu\":{\"dtype\":\"%s\",\"shape\":[", i ? "," : "",
			    rename_odd && (i & 1) ? 'x' : 't', i, tp_dtype_name(sp[i].dtype));
		for (unsigned d = 0; d < sp[i].ndim; d++)
			tp_buf_addf(&h, "%s%llu", d ? "," : "", (unsigned long long)sp[i].shape[d]);
		tp_buf_addf(&h, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off,
			    (unsigned long long)(off + sp[i].bytes));
		off += sp[i].bytes;
	}
	tp_buf_adds(&h, "}");
	for (unsigned i = 0; i < pad; i++)
		tp_buf_adds(&h, " ");
	uint8_t len8[8];
	for (int i = 0; i < 8; i++)
		len8[i] = (uint8_t)((uint64_t)h.len >> (8 * i));
	tp_buf_add(b, len8, 8);
	tp_buf_add(b, h.ptr, h.len);
	tp_buf_free(&h);
	/* Data: gaps and tensors alike come from the payload, cycled. */
	uint8_t *d = calloc(off ? off : 1, 1);
	if (!d)
		abort();
	for (uint64_t i = 0; plen && i < off; i += plen)
		memcpy(d + i, payload, off - i < plen ? off - i : plen);
	tp_buf_add(b, d, off);
	free(d);
}

/* Flip bits after the header the way fine-tuning moves low mantissa bits
 * (even bytes) and sometimes more (odd bytes). */
static void perturb(tp_buf *b, bool st, const uint8_t *payload, size_t plen, uint8_t m_lo,
		    uint8_t m_hi)
{
	size_t hdr = 0;
	if (st && b->len >= 8) {
		for (int i = 0; i < 8; i++)
			hdr |= (size_t)(uint8_t)b->ptr[i] << (8 * i);
		hdr += 8;
	}
	for (size_t i = hdr; plen && i < b->len; i++)
		b->ptr[i] ^= (char)(payload[(i * 131 + 7) % plen] & ((i & 1) ? m_hi : m_lo));
}

static int out_fd = -1;
static const char *target_path, *base_path, *base2_path;

static void init(void)
{
	target_path = fz_path(0, "target.safetensors");
	base_path = fz_path(1, "base.safetensors");
	base2_path = fz_path(2, "base2.safetensors");
	char tmpl[128];
	snprintf(tmpl, sizeof(tmpl), "%s/out.XXXXXX", fz_dir());
	out_fd = mkstemp(tmpl);
	if (out_fd < 0)
		abort();
}

static void compress(tp_buf *out, const char *const *bases, size_t nbases,
		     const tp_delta_opts *o)
{
	int rc = tp_delta_compress(target_path, bases, nbases, fz_buf_write, out, o, NULL);
	if (rc != 0) {
		/* Every target we build is valid: failing to code it is a bug. */
		fprintf(stderr, "compress failed: %s\n", tp_error_last());
		abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (out_fd < 0)
		init();
	cursor c = { data, size, 0 };
	uint8_t flags = next(&c);
	unsigned mode = flags & 3;          /* 0 no base, 1 perturbed, 2 renamed/shifted, 3 opaque */
	unsigned xf = (flags >> 2) & 3;     /* AUTO, XOR, ULP, QGRID */
	bool meta = flags & 0x10;
	size_t chunk = (flags & 0x20) ? TP_DELTA_CHUNK_MIN * 2 : TP_DELTA_CHUNK_MIN;
	unsigned pad = (flags & 0x40) ? 5 : 0;
	/* A second base holding the even tensors, so a target draws on two
	 * files (as with a sharded base). */
	bool two = (flags & 0x80) && (mode == 1 || mode == 2);
	uint8_t m_lo = next(&c), m_hi = next(&c);
	size_t n = 1 + next(&c) % MAX_TENSORS;
	spec sp[MAX_TENSORS];
	uint64_t total = 0;
	for (size_t i = 0; i < n; i++) {
		uint8_t t = next(&c);
		sp[i].dtype = (tp_dtype)(t % TP_DTYPE_COUNT);
		sp[i].gap = (t >> 4) & 7;
		sp[i].ndim = next(&c) % 4;
		uint64_t w = tp_dtype_size(sp[i].dtype), elems = 1;
		for (unsigned d = 0; d < sp[i].ndim; d++) {
			uint8_t b = next(&c);
			/* Mostly small dims; the high bit makes one big enough to
			 * span chunks. */
			sp[i].shape[d] = (b & 0x80) ? (uint64_t)(b & 0x7f) * 331 : b;
			elems *= sp[i].shape[d];
		}
		if (elems * w + total > MAX_DATA) {
			sp[i].ndim = 1;
			sp[i].shape[0] = (MAX_DATA - total) / w;
			elems = sp[i].shape[0];
		}
		sp[i].bytes = elems * w;
		total += sp[i].bytes;
	}
	const uint8_t *payload = data + c.pos;
	size_t plen = size - c.pos;

	tp_buf target = TP_BUF_INIT(4u << 20), base = TP_BUF_INIT(4u << 20);
	if (mode == 3) {
		tp_buf_add(&target, payload, plen);
	} else {
		build(&target, sp, n, meta, false, 0, pad, payload, plen);
	}
	if (mode == 2)
		build(&base, sp, n, !meta, true, 3, 0, payload, plen);
	else
		tp_buf_add(&base, target.ptr, target.len);
	tp_buf base2 = TP_BUF_INIT(4u << 20);
	if (two)
		build(&base2, sp, n, meta, true, 1, 0, payload, plen);
	perturb(&base, mode != 3, payload, plen, m_lo, m_hi);
	perturb(&base2, true, payload, plen, m_hi, m_lo);
	fz_write_file(target_path, target.ptr, target.len);
	fz_write_file(base_path, base.ptr, base.len);
	if (two)
		fz_write_file(base2_path, base2.ptr, base2.len);
	size_t nbases = mode == 0 ? 0 : two ? 2 : 1;
	/* The second base first: bases are found by fingerprint, not order. */
	const char *cbases[2] = { two ? base2_path : base_path, base_path };
	const char *abases[2] = { base_path, base2_path };

	/* QGRID: forced on every 2-D BF16/F16 tensor (format v2). */
	static const tp_delta_xform xforms[4] = { TP_DELTA_XFORM_AUTO, TP_DELTA_XFORM_XOR,
						  TP_DELTA_XFORM_ULP, TP_DELTA_XFORM_QGRID };
	tp_delta_opts o = { .threads = 1, .chunk_size = chunk, .force_xform = xforms[xf] };
	tp_buf d1 = TP_BUF_INIT(64u << 20), d2 = TP_BUF_INIT(64u << 20);
	compress(&d1, cbases, nbases, &o);
	/* Determinism, also across thread counts. */
	o.threads = 2;
	compress(&d2, cbases, nbases, &o);
	if (d1.len != d2.len || memcmp(d1.ptr, d2.ptr, d1.len) != 0) {
		fprintf(stderr, "compress is not deterministic (%zu vs %zu bytes)\n", d1.len, d2.len);
		abort();
	}

	o.threads = 1;
	if (ftruncate(out_fd, 0) != 0 || lseek(out_fd, 0, SEEK_SET) != 0)
		abort();
	/* A size the plan does not match is refused before any output. */
	fz_mem m = { (const uint8_t *)d1.ptr, d1.len, 0 };
	o.expect_size = target.len + 1;
	struct stat sb;
	if (tp_delta_apply(fz_mem_read, &m, abases, nbases, out_fd, &o, NULL) != TP_ECORRUPT ||
	    fstat(out_fd, &sb) != 0 || sb.st_size != 0)
		abort();
	m.pos = 0;
	o.expect_size = target.len;
	tp_delta_stats st;
	if (tp_delta_apply(fz_mem_read, &m, abases, nbases, out_fd, &o, &st) != 0) {
		fprintf(stderr, "apply failed: %s\n", tp_error_last());
		abort();
	}
	if (st.target_bytes != target.len)
		abort();
	uint8_t *back = malloc(target.len ? target.len : 1);
	size_t got = 0;
	if (!back || lseek(out_fd, 0, SEEK_SET) != 0 ||
	    tp_fs_read_full(out_fd, back, target.len + 0, &got) != 0)
		abort();
	if (fstat(out_fd, &sb) != 0 || (uint64_t)sb.st_size != target.len || got != target.len ||
	    (target.len && memcmp(back, target.ptr, target.len) != 0)) {
		fprintf(stderr, "round trip differs\n");
		abort();
	}
	free(back);

	/* The estimate must cope with everything compress does. */
	tp_delta_layout *est = NULL;
	if (tp_delta_estimate(&est, target_path, cbases, nbases, &o) != 0) {
		fprintf(stderr, "estimate failed: %s\n", tp_error_last());
		abort();
	}
	tp_delta_layout_free(est);
	tp_buf_free(&base2);
	tp_buf_free(&d1);
	tp_buf_free(&d2);
	tp_buf_free(&target);
	tp_buf_free(&base);
	return 0;
}
