/* Chunk codec: transforms are exact inverses for every bit pattern, frames
 * round trip, and corrupted frames are rejected without crashing. */
#include "delta_internal.h"
#include "testutil.h"

static const tp_delta_xform xforms[] = { TP_DELTA_XFORM_PLAIN, TP_DELTA_XFORM_PLANES,
					 TP_DELTA_XFORM_XOR, TP_DELTA_XFORM_ULP };
static const unsigned widths[] = { 1, 2, 4, 8 };

static void test_split_merge(void)
{
	enum { N = 4096 };
	uint8_t t[N], b[N], planes[N], back[N];
	uint64_t seed = 42;
	for (size_t xi = 0; xi < 4; xi++) {
		for (size_t wi = 0; wi < 4; wi++) {
			tp_delta_xform x = xforms[xi];
			unsigned w = widths[wi];
			t_fill_special(t, N, w, &seed);
			t_fill_special(b, N, w, &seed);
			const uint8_t *base = x == TP_DELTA_XFORM_PLANES ? NULL : b;
			tp_delta_split(x, w, t, base, N, planes);
			tp_delta_merge(x, w, planes, base, N, back);
			CHECK(memcmp(t, back, N) == 0);
			CHECK(tp_delta_split(x, w, t, t, N, planes) == (x != TP_DELTA_XFORM_PLANES));
		}
	}
}

/* Every 16-bit target against random bases, for both base transforms. */
static void test_exhaustive16(void)
{
	enum { N = 65536 };
	uint16_t *t = malloc(2 * N), *b = malloc(2 * N), *back = malloc(2 * N);
	uint8_t *planes = malloc(2 * N);
	uint64_t seed = 7;
	for (uint32_t i = 0; i < N; i++) {
		t[i] = (uint16_t)i;
		b[i] = (uint16_t)t_rand(&seed);
	}
	for (int k = 0; k < 2; k++) {
		tp_delta_xform x = k ? TP_DELTA_XFORM_ULP : TP_DELTA_XFORM_XOR;
		tp_delta_split(x, 2, (uint8_t *)t, (uint8_t *)b, 2 * N, planes);
		tp_delta_merge(x, 2, planes, (uint8_t *)b, 2 * N, (uint8_t *)back);
		CHECK(memcmp(t, back, 2 * N) == 0);
	}
	/* ULP: one step up from +0 is the smallest subnormal, from -0 it is +0. */
	uint16_t tv[2] = { 0x0001, 0x0000 }, bv[2] = { 0x0000, 0x8000 };
	uint8_t pl[4];
	tp_delta_split(TP_DELTA_XFORM_ULP, 2, (uint8_t *)tv, (uint8_t *)bv, 4, pl);
	CHECK(pl[0] == 0 && pl[1] == 0 && pl[2] == 2 && pl[3] == 2); /* zigzag(+1) = 2 */
	free(t);
	free(b);
	free(back);
	free(planes);
}

/* The 2-byte fast path (planes16.c) writes the same planes and elements as
 * the element-by-element reference, at every block boundary and at every
 * boundary of its 4 sub-ranges (n below 4, n not a multiple of 4, a
 * sub-range ending inside a block, n % 64 for the SIMD kernels), with one
 * key everywhere, with a different key at each neighbour and with frequent
 * and rare keys mixed. */
static void test_fast16(void)
{
	static const size_t sizes[] = { 0,    1,    2,    3,    4,    5,    7,     8,
					1023, 1024, 1025, 1027, 4097, 4099, 70001 };
	enum { MAXN = 70001 };
	uint8_t *t = malloc(2 * MAXN), *b = malloc(2 * MAXN), *pf = malloc(2 * MAXN),
		*pr = malloc(2 * MAXN), *of = malloc(2 * MAXN), *orf = malloc(2 * MAXN);
	uint64_t seed = 99;
	/* Each size twice: without the SIMD kernels, then with them where the
	 * CPU has them. */
	const size_t nsizes = sizeof(sizes) / sizeof(sizes[0]);
	for (size_t k = 0; k < 2 * nsizes; k++) {
		size_t n = sizes[k % nsizes];
		tp_delta_simd16_allow(k >= nsizes);
		for (int kind = 0; kind < 6; kind++) {
			t_fill_special(t, 2 * n, 2, &seed);
			t_fill_special(b, 2 * n, 2, &seed);
			/* The key is bits 14..7 of the base: one key; a new key at each
			 * element; a few frequent keys and 2% rare ones. */
			if (kind >= 3)
				for (size_t i = 0; i < n; i++) {
					uint64_t r = t_rand(&seed);
					uint16_t key = kind == 3   ? 0x7e
						       : kind == 4 ? (uint16_t)(i * 37 % 256)
						       : r % 50 == 0 ? (uint16_t)(r >> 8 & 0xff)
								     : (uint16_t)(0x76 + r % 5);
					uint16_t v = (uint16_t)((t_rand(&seed) & 0x807f) | key << 7);
					memcpy(b + 2 * i, &v, 2);
				}
			if (kind == 1) /* a fine-tune: mostly tiny changes, some equal */
				for (size_t i = 0; i < n; i++) {
					uint16_t v;
					memcpy(&v, b + 2 * i, 2);
					v = (uint16_t)(v + (uint16_t)(t_rand(&seed) % 5) - 2);
					memcpy(t + 2 * i, &v, 2);
				}
			if (kind == 2) /* identical */
				memcpy(t, b, 2 * n);
			for (size_t xi = 1; xi < 4; xi++) {
				tp_delta_xform x = xforms[xi];
				const uint8_t *base = x == TP_DELTA_XFORM_PLANES ? NULL : b;
				memset(pf, 0xaa, 2 * n);
				memset(pr, 0x55, 2 * n);
				bool sf = tp_delta_split(x, 2, t, base, 2 * n, pf);
				bool sr = tp_delta_split_ref(x, 2, t, base, 2 * n, pr);
				CHECK(sf == sr && memcmp(pf, pr, 2 * n) == 0);
				memset(of, 0xaa, 2 * n);
				memset(orf, 0x55, 2 * n);
				tp_delta_merge(x, 2, pf, base, 2 * n, of);
				tp_delta_merge_ref(x, 2, pr, base, 2 * n, orf);
				CHECK(memcmp(of, orf, 2 * n) == 0 && memcmp(of, t, 2 * n) == 0);
			}
		}
	}
	free(t);
	free(b);
	free(pf);
	free(pr);
	free(of);
	free(orf);
}

static void test_frames(void)
{
	enum { N = 1 << 16 };
	tp_chunk_coder c;
	CHECK(tp_chunk_coder_init(&c, N) == 0);
	size_t cap = tp_chunk_frame_bound(N), len = 0;
	uint8_t *t = malloc(N), *b = malloc(N), *out = malloc(N), *frame = malloc(cap);
	uint8_t *bad = malloc(cap);
	uint64_t seed = 9;
	for (size_t i = 0; i < N; i += 2) { /* bf16-like: base + a few ULP */
		uint16_t v = (uint16_t)(0x3c00 + t_rand(&seed) % 512), d = (uint16_t)(t_rand(&seed) % 5);
		memcpy(b + i, &v, 2);
		v = (uint16_t)(v + d - 2);
		memcpy(t + i, &v, 2);
	}
	tp_chunk_desc d = { .xform = TP_DELTA_XFORM_ULP, .width = 2, .seg = 3, .index = 5,
			    .target = t, .base = b, .len = N };
	CHECK(tp_chunk_encode(&c, &d, 3, frame, cap, &len) == 0);
	CHECK(len < N / 2);
	CHECK(tp_chunk_decode(&c, &d, frame, len, out) == 0 && memcmp(out, t, N) == 0);
	/* Identical chunk: header only. */
	tp_chunk_desc same = { .xform = TP_DELTA_XFORM_XOR, .width = 2, .target = b, .base = b,
			       .len = N };
	size_t slen = 0;
	CHECK(tp_chunk_encode(&c, &same, 3, bad, cap, &slen) == 0 && slen == TP_DELTA_CHUNK_HDR);
	CHECK(tp_chunk_decode(&c, &same, bad, slen, out) == 0 && memcmp(out, b, N) == 0);
	/* Out-of-place frames are refused. */
	tp_chunk_desc moved = d;
	moved.index = 6;
	CHECK(tp_chunk_decode(&c, &moved, frame, len, out) == TP_ECORRUPT);
	/* Byte flips and truncations: an error or (rarely) wrong bytes, never a crash. */
	int errors = 0, trials = 0;
	for (size_t pos = 0; pos < len; pos += 1 + pos / 8) {
		memcpy(bad, frame, len);
		bad[pos] ^= (uint8_t)(1 + t_rand(&seed) % 255);
		errors += tp_chunk_decode(&c, &d, bad, len, out) < 0;
		errors += tp_chunk_decode(&c, &d, frame, pos, out) < 0;
		trials += 2;
	}
	CHECK(errors > trials / 2);
	free(t);
	free(b);
	free(out);
	free(frame);
	free(bad);
	tp_chunk_coder_fini(&c);
}

/* rANS: skewed, single-symbol and uniform planes round trip; damaged
 * input is refused. */
static void test_rans(void)
{
	enum { N = 50000 };
	uint8_t *src = malloc(N), *enc = malloc(TP_RANS_BOUND(N)), *dec = malloc(N);
	uint64_t seed = 11;
	for (int kind = 0; kind < 3; kind++) {
		uint32_t count[256] = { 0 };
		for (size_t i = 0; i < N; i++) {
			uint64_t r = t_rand(&seed);
			src[i] = kind == 0 ? (uint8_t)(120 + (r % 64 == 0 ? r % 9 : r % 3))
				 : kind == 1 ? 7 : (uint8_t)r;
			count[src[i]]++;
		}
		size_t len = tp_rans_encode(src, N, count, enc, TP_RANS_BOUND(N));
		CHECK(len > 0);
		CHECK(tp_rans_decode(enc, len, dec, N) == 0 && memcmp(src, dec, N) == 0);
		if (kind == 0)
			CHECK(len < N / 3);
		int refused = 0, trials = 0;
		for (size_t pos = 0; pos < len; pos += 1 + len / 50, trials++) {
			refused += tp_rans_decode(enc, pos, dec, N) < 0;
			enc[pos] ^= 0x5a;
			refused += tp_rans_decode(enc, len, dec, N) < 0 || memcmp(src, dec, N) != 0;
			enc[pos] ^= 0x5a;
		}
		CHECK(refused == 2 * trials);
		/* Initial states outside [L, 256 L) are refused, not decoded. */
		size_t head = 32;
		for (int k = 0; k < 32; k++)
			head += 2 * (size_t)__builtin_popcount(enc[k]);
		uint8_t keep[4];
		memcpy(keep, enc + head, 4);
		memset(enc + head, 0, 4);
		CHECK(tp_rans_decode(enc, len, dec, N) == TP_ECORRUPT);
		memset(enc + head, 0xff, 4);
		CHECK(tp_rans_decode(enc, len, dec, N) == TP_ECORRUPT);
		memcpy(enc + head, keep, 4);
		CHECK(tp_rans_decode(enc, len, dec, N) == 0 && memcmp(src, dec, N) == 0);
	}
	free(src);
	free(enc);
	free(dec);
}

/* Blocks of independent skewed bytes (the low byte of small deltas) are
 * coded as literals only, which here is smaller than zstd with its match
 * finder; runs and uniform bytes keep the match finder. */
static void test_literal(void)
{
	enum { N = 1 << 19 };
	uint8_t *src = malloc(N), *dst = malloc(ZSTD_compressBound(N)), *back = malloc(N);
	uint64_t seed = 5;
	for (size_t i = 0; i < N; i++) { /* zigzag of a triangle on -3..3: 2.66 bits */
		uint64_t r = t_rand(&seed);
		int v = (int)(r % 4) + (int)(r / 4 % 4) - 3;
		src[i] = (uint8_t)(v < 0 ? -2 * v - 1 : 2 * v);
	}
	CHECK(tp_delta_literal_block(src, 1 << 17));
	CHECK(!tp_delta_literal_block(src, 1000)); /* too short to judge */
	uint8_t *flat = calloc(1 << 17, 1), *uni = malloc(1 << 17);
	for (size_t i = 0; i < 1 << 17; i++)
		uni[i] = (uint8_t)t_rand(&seed);
	for (size_t i = 0; i < 1 << 17; i += 64)
		flat[i] = src[i];
	CHECK(!tp_delta_literal_block(flat, 1 << 17));
	CHECK(!tp_delta_literal_block(uni, 1 << 17));
	tp_chunk_coder c;
	CHECK(tp_chunk_coder_init(&c, 2 * N) == 0);
	size_t cap = ZSTD_compressBound(N), len = 0;
	uint8_t method = 0;
	CHECK(tp_chunk_encode_plane(&c, TP_DELTA_XFORM_ULP, 1, src, N, dst, cap, &method, &len) == 0);
	CHECK(method == TP_DELTA_METHOD_ZSTD);
	CHECK(tp_chunk_decode_plane(&c, method, dst, len, back, N) == 0 && memcmp(back, src, N) == 0);
	/* The same plane with zstd's match finder, as before literal blocks. */
	ZSTD_CCtx_reset(c.cctx, ZSTD_reset_session_and_parameters);
	ZSTD_CCtx_setParameter(c.cctx, ZSTD_c_compressionLevel, 1);
	ZSTD_CCtx_setParameter(c.cctx, ZSTD_c_minMatch, 7);
	size_t matched = ZSTD_compress2(c.cctx, back, N, src, N);
	CHECK(!ZSTD_isError(matched));
#if ZSTD_VERSION_NUMBER >= 10504
	CHECK(len < matched);
#else
	CHECK(len == matched);
#endif
	tp_chunk_coder_fini(&c);
	free(flat);
	free(uni);
	free(src);
	free(dst);
	free(back);
}

int main(void)
{
	TP_TEST_RUN(test_split_merge);
	TP_TEST_RUN(test_exhaustive16);
	TP_TEST_RUN(test_fast16);
	TP_TEST_RUN(test_frames);
	TP_TEST_RUN(test_rans);
	TP_TEST_RUN(test_literal);
	return TP_TEST_RESULT();
}
