/*
 * Byte-plane split and merge for 2-byte elements (bf16, f16), the common
 * case, written so the compiler vectorizes the word transforms: the chunk is
 * handled in blocks of words, each in two passes (transform the block in
 * element order; scatter or gather its bytes to or from the planes, which
 * stays scalar). The grouped xforms (xor, ulp) walk 4 sub-ranges of the
 * chunk side by side (see cursors16), or use the AVX-512 kernels below.
 * Measured on a 1 MiB chunk of the generated bf16 pair held in L2 (best of
 * 40, loaded 2-core Xeon): grouped split 2.3 -> 1.65 (4 chains) -> 0.86
 * (AVX-512) ns per element, merge 1.7 -> 1.35 -> 0.82; ungrouped
 * split/merge 0.6 -> 0.13 ns earlier. Produces exactly what the generic
 * code in codec.c does (tp_delta_split_ref / tp_delta_merge_ref, compared
 * in tests/unit/delta/test_codec.c); the format is in FORMAT.md.
 */
#include "delta_internal.h"

#include <string.h>

#define INLINE static inline __attribute__((always_inline))
/* Words per block: small enough to stay in L1 between passes. */
#define BLK 1024

typedef uint16_t u16;

INLINE u16 ld16(const uint8_t *p, size_t i)
{
	u16 v;
	memcpy(&v, p + 2 * i, 2);
	return v;
}

/* The formulas of codec.c on 16-bit words (see FORMAT.md). */
INLINE u16 signmask16(u16 v)
{
	return (u16)(0u - (unsigned)(v >> 15));
}

INLINE u16 rotl16(u16 v)
{
	return (u16)((unsigned)v << 1 | v >> 15);
}

INLINE u16 rotr16(u16 v)
{
	return (u16)(v >> 1 | (unsigned)v << 15);
}

INLINE u16 ord16(u16 v)
{
	return (u16)(v ^ (signmask16(v) | 0x8000u));
}

INLINE u16 unord16(u16 k)
{
	return (u16)(k ^ ((u16)~signmask16(k) | 0x8000u));
}

INLINE bool grouped(tp_delta_xform x)
{
	return x == TP_DELTA_XFORM_XOR || x == TP_DELTA_XFORM_ULP;
}

INLINE u16 fwd16(tp_delta_xform x, u16 t, u16 b)
{
	switch (x) {
	case TP_DELTA_XFORM_XOR:
		return rotl16((u16)(t ^ b));
	case TP_DELTA_XFORM_ULP: {
		u16 d = (u16)(ord16(t) - ord16(b));
		return (u16)((unsigned)d << 1 ^ signmask16(d));
	}
	default: /* PLANES */
		return rotl16(t);
	}
}

INLINE u16 inv16(tp_delta_xform x, u16 v, u16 b)
{
	switch (x) {
	case TP_DELTA_XFORM_XOR:
		return (u16)(rotr16(v) ^ b);
	case TP_DELTA_XFORM_ULP: {
		u16 d = (u16)((v >> 1) ^ (0u - (v & 1u)));
		return unord16((u16)(ord16(b) + d));
	}
	default:
		return rotr16(v);
	}
}

/* Group key of element i: the top byte of the rotated base (the exponent). */
INLINE unsigned key16(const uint8_t *base, size_t i)
{
	return (unsigned)(rotl16(ld16(base, i)) >> 8);
}

/* Transform words [e, e+m) into v; returns the OR of the words. The
 * inputs are copied to local blocks first so that the loop provably does
 * not alias and is vectorized without a run-time overlap check; grouped(x)
 * is a constant, so the loop has no branch. */
INLINE u16 fwd_block(tp_delta_xform x, const uint8_t *tgt, const uint8_t *base, size_t e,
		     size_t m, u16 *restrict v)
{
	u16 t[BLK], b[BLK], any = 0;
	memcpy(t, tgt + 2 * e, 2 * m);
	if (grouped(x))
		memcpy(b, base + 2 * e, 2 * m);
	for (size_t i = 0; i < m; i++) {
		v[i] = fwd16(x, t[i], grouped(x) ? b[i] : 0);
		any |= v[i];
	}
	return any;
}

INLINE void inv_block(tp_delta_xform x, const u16 *restrict v, const uint8_t *base, size_t e,
		      size_t m, uint8_t *tgt)
{
	u16 t[BLK], b[BLK];
	if (grouped(x))
		memcpy(b, base + 2 * e, 2 * m);
	for (size_t i = 0; i < m; i++)
		t[i] = inv16(x, v[i], grouped(x) ? b[i] : 0);
	memcpy(tgt + 2 * e, t, 2 * m);
}

/* Group key of a base word: the top byte of rotl16 (bits 14..7, the
 * exponent); key16 on a loaded word. */
INLINE uint8_t keyw16(u16 b)
{
	return (uint8_t)(b >> 7);
}

/*
 * The grouped order is a stable counting sort of the elements by key. Doing
 * it element by element chains every cursor increment to the previous one
 * whenever neighbours share a key, which most do. So the chunk is cut into
 * NSUB contiguous sub-ranges of len = n / NSUB elements (the last one also
 * takes the n % NSUB left over), each with its own cursor table: key k of
 * sub-range q starts after all of k in the sub-ranges before q. The
 * sub-ranges are then walked side by side, NSUB independent chains, and the
 * output is the same sort.
 */
#define NSUB 4
/* Words per sub-range per block: NSUB of them fill one BLK. */
#define SBLK (BLK / NSUB)
/* The NSUB chains must be in one loop body to run side by side. */
#define UNROLL _Pragma("GCC unroll 8")

typedef struct sub16 {
	size_t len;                /* elements per sub-range; the last has more */
	uint32_t next[NSUB][256];  /* cursor of each key, per sub-range */
} sub16;

INLINE void cursors16(const uint8_t *base, size_t n, sub16 *s)
{
	uint32_t c[NSUB][256];
	memset(c, 0, sizeof(c));
	size_t len = n / NSUB;
	s->len = len;
	for (size_t i = 0; i < len; i++)
		UNROLL for (unsigned q = 0; q < NSUB; q++)
			c[q][key16(base, q * len + i)]++;
	for (size_t i = NSUB * len; i < n; i++)
		c[NSUB - 1][key16(base, i)]++;
	uint32_t pos = 0;
	for (unsigned k = 0; k < 256; k++)
		for (unsigned q = 0; q < NSUB; q++) {
			s->next[q][k] = pos;
			pos += c[q][k];
		}
}

/* fwd_block and the keys of the base words in one pass (m <= SBLK). The
 * pointers are restrict and m is at most SBLK, so no local copies. */
INLINE u16 fwd_keys_block(tp_delta_xform x, const uint8_t *restrict tgt,
			  const uint8_t *restrict base, size_t e, size_t m, u16 *restrict v,
			  uint8_t *restrict k)
{
	u16 any = 0;
	tgt += 2 * e;
	base += 2 * e;
	for (size_t i = 0; i < m; i++) {
		u16 b = ld16(base, i);
		v[i] = fwd16(x, ld16(tgt, i), b);
		k[i] = keyw16(b);
		any |= v[i];
	}
	return any;
}

/* Keys of base words [e, e+m) into k (m <= SBLK). */
INLINE void keys_block(const uint8_t *restrict base, size_t e, size_t m, uint8_t *restrict k)
{
	base += 2 * e;
	for (size_t i = 0; i < m; i++)
		k[i] = keyw16(ld16(base, i));
}

/* inv_block for the grouped path (m <= SBLK), without local copies. */
INLINE void inv_grouped_block(tp_delta_xform x, const u16 *restrict v,
			      const uint8_t *restrict base, size_t e, size_t m,
			      uint8_t *restrict tgt)
{
	base += 2 * e;
	tgt += 2 * e;
	for (size_t i = 0; i < m; i++) {
		u16 w = inv16(x, v[i], ld16(base, i));
		memcpy(tgt + 2 * i, &w, 2);
	}
}

/* Scatter m transformed words of every sub-range to their grouped slots:
 * word j of sub-range q (element q * len + off + j). The last sub-range's
 * extra elements are scattered by the caller with one chain (q = last). */
INLINE u16 split_grouped(tp_delta_xform x, const uint8_t *tgt, const uint8_t *base, size_t n,
			 uint8_t *restrict p0, uint8_t *restrict p1)
{
	sub16 s;
	u16 v[NSUB][SBLK], any = 0;
	uint8_t k[NSUB][SBLK];
	cursors16(base, n, &s);
	size_t len = s.len;
	for (size_t off = 0; off < len; off += SBLK) {
		size_t m = len - off < SBLK ? len - off : SBLK;
		for (unsigned q = 0; q < NSUB; q++)
			any |= fwd_keys_block(x, tgt, base, q * len + off, m, v[q], k[q]);
		for (size_t j = 0; j < m; j++)
			UNROLL for (unsigned q = 0; q < NSUB; q++) {
				uint32_t d = s.next[q][k[q][j]]++;
				p0[d] = (uint8_t)(v[q][j] >> 8);
				p1[d] = (uint8_t)v[q][j];
			}
	}
	for (size_t e = NSUB * len; e < n; e++) { /* fewer than NSUB */
		u16 w = fwd16(x, ld16(tgt, e), ld16(base, e));
		uint32_t d = s.next[NSUB - 1][key16(base, e)]++;
		p0[d] = (uint8_t)(w >> 8);
		p1[d] = (uint8_t)w;
		any |= w;
	}
	return any;
}

INLINE void merge_grouped(tp_delta_xform x, const uint8_t *restrict p0, const uint8_t *restrict p1,
			  const uint8_t *base, size_t n, uint8_t *tgt)
{
	sub16 s;
	u16 v[NSUB][SBLK];
	uint8_t k[NSUB][SBLK];
	cursors16(base, n, &s);
	size_t len = s.len;
	for (size_t off = 0; off < len; off += SBLK) {
		size_t m = len - off < SBLK ? len - off : SBLK;
		for (unsigned q = 0; q < NSUB; q++)
			keys_block(base, q * len + off, m, k[q]);
		for (size_t j = 0; j < m; j++)
			UNROLL for (unsigned q = 0; q < NSUB; q++) {
				uint32_t d = s.next[q][k[q][j]]++;
				v[q][j] = (u16)(p0[d] << 8 | p1[d]);
			}
		for (unsigned q = 0; q < NSUB; q++)
			inv_grouped_block(x, v[q], base, q * len + off, m, tgt);
	}
	for (size_t e = NSUB * len; e < n; e++) {
		uint32_t d = s.next[NSUB - 1][key16(base, e)]++;
		u16 w = inv16(x, (u16)(p0[d] << 8 | p1[d]), ld16(base, e));
		memcpy(tgt + 2 * e, &w, 2);
	}
}

/*
 * AVX-512 (BW, VBMI, VBMI2) kernels for the grouped xforms, chosen at run
 * time. The scatter of split and the gather of merge are what cost: 64
 * elements at a time, every frequent key ("hot", see HOT_DIV) moves its
 * lanes with one compress (split) or expand (merge) per plane, in lane
 * order, to or from its cursor; the lanes of the other keys go one by one.
 * The key counts are taken the same way (a compare and a popcount per hot
 * key): 0.47 -> 0.22 ns per element against cursors16. Each key's elements still go in
 * element order, so the planes are those of the counting sort above.
 */
#if defined(__x86_64__) && defined(__GNUC__)
#define TP_PLANES16_X86 1
#include <immintrin.h>

#define AVX512 __attribute__((target("avx512f,avx512bw,avx512vbmi,avx512vbmi2,bmi2,popcnt")))

/* Set by tests (tp_delta_simd16_allow) to check the portable path too. */
static bool simd16_off;

static bool avx512_ok(void)
{
	return !simd16_off && __builtin_cpu_supports("avx512bw") &&
	       __builtin_cpu_supports("avx512vbmi") && __builtin_cpu_supports("avx512vbmi2");
}

/* fwd16 / inv16 on 32 words. */
AVX512 INLINE __m512i fwdv(tp_delta_xform x, __m512i t, __m512i b)
{
	if (x == TP_DELTA_XFORM_XOR) {
		__m512i v = _mm512_xor_si512(t, b);
		return _mm512_shldi_epi16(v, v, 1);
	}
	/* ULP: ord16 flips the sign bit, and the rest too when it is set. */
	__m512i hi = _mm512_set1_epi16((short)0x8000);
	__m512i ot = _mm512_xor_si512(t, _mm512_or_si512(_mm512_srai_epi16(t, 15), hi));
	__m512i ob = _mm512_xor_si512(b, _mm512_or_si512(_mm512_srai_epi16(b, 15), hi));
	__m512i d = _mm512_sub_epi16(ot, ob);
	return _mm512_xor_si512(_mm512_slli_epi16(d, 1), _mm512_srai_epi16(d, 15));
}

AVX512 INLINE __m512i invv(tp_delta_xform x, __m512i v, __m512i b)
{
	if (x == TP_DELTA_XFORM_XOR)
		return _mm512_xor_si512(_mm512_shrdi_epi16(v, v, 1), b);
	__m512i hi = _mm512_set1_epi16((short)0x8000);
	__m512i d = _mm512_xor_si512(_mm512_srli_epi16(v, 1),
				     _mm512_sub_epi16(_mm512_setzero_si512(),
						      _mm512_and_si512(v, _mm512_set1_epi16(1))));
	__m512i ob = _mm512_xor_si512(b, _mm512_or_si512(_mm512_srai_epi16(b, 15), hi));
	__m512i k = _mm512_add_epi16(ob, d);
	/* unord16: k ^ (~signmask(k) | 0x8000) */
	__m512i nm = _mm512_xor_si512(_mm512_srai_epi16(k, 15), _mm512_set1_epi16(-1));
	return _mm512_xor_si512(k, _mm512_or_si512(nm, hi));
}

/* A key is hot above one element in HOT_DIV: below that its compare costs
 * more than moving its few lanes one by one (measured: 64, 256 and 1024 on
 * 1 MiB bf16 chunks, 1024 fastest). At most 64 keys can be hot. */
#define HOT_DIV 1024
#define HOT_SAMPLE 4096 /* elements */
typedef struct hot16 {
	unsigned n;         /* hot keys */
	uint8_t key[64];
	uint32_t next[256]; /* cursor of each key (one table: no sub-ranges) */
} hot16;

/* Byte j of a 64-byte result from bytes 2j+odd of the 128 bytes a:b. */
AVX512 INLINE __m512i bytes_of(__m512i a, __m512i b, int odd)
{
	uint8_t idx[64];
	for (unsigned j = 0; j < 64; j++)
		idx[j] = (uint8_t)(2 * j + (unsigned)odd);
	return _mm512_permutex2var_epi8(a, _mm512_loadu_si512(idx), b);
}

/* key16 of base words e .. e+63: the high byte of each word << 1. */
AVX512 INLINE __m512i keys_of(const uint8_t *base, size_t e)
{
	__m512i b0 = _mm512_loadu_si512(base + 2 * e), b1 = _mm512_loadu_si512(base + 2 * e + 64);
	return bytes_of(_mm512_slli_epi16(b0, 1), _mm512_slli_epi16(b1, 1), 1);
}

/* The hot keys, from a sample (the first HOT_SAMPLE elements: a choice of
 * speed only), and the global cursors, counted with one compare and
 * popcount per hot key and 64 elements. The sample is contiguous because
 * one that strode through the chunk (64 elements in every 1024) missed the
 * cache on every load, the chunk's first touch: a quarter of split's time on the
 * 256 MiB bf16 pair. */
AVX512 INLINE void hot_keys(const uint8_t *base, size_t n, hot16 *h)
{
	uint32_t c[256] = { 0 };
	size_t sn = n < HOT_SAMPLE ? n : HOT_SAMPLE;
	for (size_t i = 0; i < sn; i++)
		c[key16(base, i)]++;
	h->n = 0;
	for (unsigned k = 0; k < 256; k++) {
		if ((uint64_t)c[k] * HOT_DIV > sn && h->n < 64)
			h->key[h->n++] = (uint8_t)k;
		c[k] = 0;
	}
	size_t e = 0;
	for (; e + 64 <= n; e += 64) {
		__m512i keys = keys_of(base, e);
		uint64_t rest = ~(uint64_t)0;
		for (unsigned i = 0; i < h->n; i++) {
			__mmask64 m = _mm512_cmpeq_epi8_mask(keys, _mm512_set1_epi8((char)h->key[i]));
			c[h->key[i]] += (uint32_t)_mm_popcnt_u64(m);
			rest &= ~m;
		}
		while (rest) {
			unsigned j = (unsigned)__builtin_ctzll(rest);
			rest &= rest - 1;
			c[key16(base, e + j)]++;
		}
	}
	for (; e < n; e++)
		c[key16(base, e)]++;
	uint32_t pos = 0;
	for (unsigned k = 0; k < 256; k++) {
		h->next[k] = pos;
		pos += c[k];
	}
}

/* Words 32*half .. 32*half+31 from their low bytes lo and high bytes hi. */
AVX512 INLINE __m512i words_of(__m512i lo, __m512i hi, unsigned half)
{
	uint8_t idx[64];
	for (unsigned p = 0; p < 64; p++)
		idx[p] = (uint8_t)((p & 1 ? 64 : 0) + 32 * half + p / 2);
	return _mm512_permutex2var_epi8(lo, _mm512_loadu_si512(idx), hi);
}

AVX512 INLINE bool split_avx512(tp_delta_xform x, const uint8_t *tgt, const uint8_t *base,
				size_t n, uint8_t *restrict p0, uint8_t *restrict p1)
{
	hot16 h;
	hot_keys(base, n, &h);
	__m512i any = _mm512_setzero_si512();
	size_t e = 0;
	for (; e + 64 <= n; e += 64) {
		__m512i t0 = _mm512_loadu_si512(tgt + 2 * e), t1 = _mm512_loadu_si512(tgt + 2 * e + 64);
		__m512i b0 = _mm512_loadu_si512(base + 2 * e), b1 = _mm512_loadu_si512(base + 2 * e + 64);
		__m512i w0 = fwdv(x, t0, b0), w1 = fwdv(x, t1, b1);
		any = _mm512_or_si512(any, _mm512_or_si512(w0, w1));
		__m512i hi = bytes_of(w0, w1, 1), lo = bytes_of(w0, w1, 0);
		/* key16: the high byte of base << 1 */
		__m512i keys = bytes_of(_mm512_slli_epi16(b0, 1), _mm512_slli_epi16(b1, 1), 1);
		uint64_t rest = ~(uint64_t)0;
		for (unsigned i = 0; i < h.n; i++) {
			unsigned k = h.key[i];
			__mmask64 m = _mm512_cmpeq_epi8_mask(keys, _mm512_set1_epi8((char)k));
			uint32_t c = h.next[k];
			unsigned cnt = (unsigned)_mm_popcnt_u64(m);
			__mmask64 sm = _bzhi_u64(~(uint64_t)0, cnt);
			_mm512_mask_storeu_epi8(p0 + c, sm, _mm512_maskz_compress_epi8(m, hi));
			_mm512_mask_storeu_epi8(p1 + c, sm, _mm512_maskz_compress_epi8(m, lo));
			h.next[k] = c + cnt;
			rest &= ~m;
		}
		if (rest) {
			uint8_t kb[64], hb[64], lb[64];
			_mm512_storeu_si512(kb, keys);
			_mm512_storeu_si512(hb, hi);
			_mm512_storeu_si512(lb, lo);
			do {
				unsigned j = (unsigned)__builtin_ctzll(rest);
				rest &= rest - 1;
				uint32_t d = h.next[kb[j]]++;
				p0[d] = hb[j];
				p1[d] = lb[j];
			} while (rest);
		}
	}
	u16 tail = 0;
	for (; e < n; e++) {
		u16 w = fwd16(x, ld16(tgt, e), ld16(base, e));
		uint32_t d = h.next[key16(base, e)]++;
		p0[d] = (uint8_t)(w >> 8);
		p1[d] = (uint8_t)w;
		tail |= w;
	}
	return tail == 0 && _mm512_test_epi16_mask(any, any) == 0;
}

AVX512 INLINE void merge_avx512(tp_delta_xform x, const uint8_t *restrict p0,
				const uint8_t *restrict p1, const uint8_t *base, size_t n,
				uint8_t *tgt)
{
	hot16 h;
	hot_keys(base, n, &h);
	size_t e = 0;
	for (; e + 64 <= n; e += 64) {
		__m512i b0 = _mm512_loadu_si512(base + 2 * e), b1 = _mm512_loadu_si512(base + 2 * e + 64);
		__m512i keys = bytes_of(_mm512_slli_epi16(b0, 1), _mm512_slli_epi16(b1, 1), 1);
		__m512i hi = _mm512_setzero_si512(), lo = _mm512_setzero_si512();
		uint64_t rest = ~(uint64_t)0;
		for (unsigned i = 0; i < h.n; i++) {
			unsigned k = h.key[i];
			__mmask64 m = _mm512_cmpeq_epi8_mask(keys, _mm512_set1_epi8((char)k));
			uint32_t c = h.next[k];
			unsigned cnt = (unsigned)_mm_popcnt_u64(m);
			__mmask64 sm = _bzhi_u64(~(uint64_t)0, cnt);
			hi = _mm512_mask_expand_epi8(hi, m, _mm512_maskz_loadu_epi8(sm, p0 + c));
			lo = _mm512_mask_expand_epi8(lo, m, _mm512_maskz_loadu_epi8(sm, p1 + c));
			h.next[k] = c + cnt;
			rest &= ~m;
		}
		if (rest) {
			uint8_t kb[64], hb[64], lb[64];
			_mm512_storeu_si512(kb, keys);
			_mm512_storeu_si512(hb, hi);
			_mm512_storeu_si512(lb, lo);
			do {
				unsigned j = (unsigned)__builtin_ctzll(rest);
				rest &= rest - 1;
				uint32_t d = h.next[kb[j]]++;
				hb[j] = p0[d];
				lb[j] = p1[d];
			} while (rest);
			hi = _mm512_loadu_si512(hb);
			lo = _mm512_loadu_si512(lb);
		}
		_mm512_storeu_si512(tgt + 2 * e, invv(x, words_of(lo, hi, 0), b0));
		_mm512_storeu_si512(tgt + 2 * e + 64, invv(x, words_of(lo, hi, 1), b1));
	}
	for (; e < n; e++) {
		uint32_t d = h.next[key16(base, e)]++;
		u16 w = inv16(x, (u16)(p0[d] << 8 | p1[d]), ld16(base, e));
		memcpy(tgt + 2 * e, &w, 2);
	}
}

/* The entry points: a target function cannot be inlined into plain code. */
static AVX512 bool split_avx512_grouped(tp_delta_xform x, const uint8_t *tgt,
					const uint8_t *base, size_t n, uint8_t *p0, uint8_t *p1)
{
	if (x == TP_DELTA_XFORM_XOR)
		return split_avx512(TP_DELTA_XFORM_XOR, tgt, base, n, p0, p1);
	return split_avx512(TP_DELTA_XFORM_ULP, tgt, base, n, p0, p1);
}

static AVX512 void merge_avx512_grouped(tp_delta_xform x, const uint8_t *p0, const uint8_t *p1,
					const uint8_t *base, size_t n, uint8_t *tgt)
{
	if (x == TP_DELTA_XFORM_XOR)
		merge_avx512(TP_DELTA_XFORM_XOR, p0, p1, base, n, tgt);
	else
		merge_avx512(TP_DELTA_XFORM_ULP, p0, p1, base, n, tgt);
}
#endif

INLINE bool split_x(tp_delta_xform x, const uint8_t *tgt, const uint8_t *base, size_t n,
		    uint8_t *planes)
{
	uint8_t *p0 = planes, *p1 = planes + n;
	u16 v[BLK], any = 0;
	if (grouped(x)) {
#ifdef TP_PLANES16_X86
		if (avx512_ok())
			return split_avx512_grouped(x, tgt, base, n, p0, p1);
#endif
		return split_grouped(x, tgt, base, n, p0, p1) == 0;
	}
	for (size_t e = 0; e < n; e += BLK) {
		size_t m = n - e < BLK ? n - e : BLK;
		any |= fwd_block(x, tgt, NULL, e, m, v);
		for (size_t i = 0; i < m; i++) {
			p0[e + i] = (uint8_t)(v[i] >> 8);
			p1[e + i] = (uint8_t)v[i];
		}
	}
	return any == 0;
}

INLINE void merge_x(tp_delta_xform x, const uint8_t *planes, const uint8_t *base, size_t n,
		    uint8_t *tgt)
{
	const uint8_t *p0 = planes, *p1 = planes + n;
	u16 v[BLK];
	if (grouped(x)) {
#ifdef TP_PLANES16_X86
		if (avx512_ok()) {
			merge_avx512_grouped(x, p0, p1, base, n, tgt);
			return;
		}
#endif
		merge_grouped(x, p0, p1, base, n, tgt);
		return;
	}
	for (size_t e = 0; e < n; e += BLK) {
		size_t m = n - e < BLK ? n - e : BLK;
		for (size_t i = 0; i < m; i++)
			v[i] = (u16)(p0[e + i] << 8 | p1[e + i]);
		inv_block(x, v, NULL, e, m, tgt);
	}
}

bool tp_delta_split16(tp_delta_xform x, const uint8_t *tgt, const uint8_t *base, size_t n,
		      uint8_t *planes)
{
	switch (x) {
	case TP_DELTA_XFORM_XOR:
		return split_x(TP_DELTA_XFORM_XOR, tgt, base, n, planes);
	case TP_DELTA_XFORM_ULP:
		return split_x(TP_DELTA_XFORM_ULP, tgt, base, n, planes);
	default:
		return split_x(TP_DELTA_XFORM_PLANES, tgt, NULL, n, planes);
	}
}

void tp_delta_merge16(tp_delta_xform x, const uint8_t *planes, const uint8_t *base, size_t n,
		      uint8_t *tgt)
{
	switch (x) {
	case TP_DELTA_XFORM_XOR:
		merge_x(TP_DELTA_XFORM_XOR, planes, base, n, tgt);
		break;
	case TP_DELTA_XFORM_ULP:
		merge_x(TP_DELTA_XFORM_ULP, planes, base, n, tgt);
		break;
	default:
		merge_x(TP_DELTA_XFORM_PLANES, planes, NULL, n, tgt);
		break;
	}
}

bool tp_delta_simd16_allow(bool allow)
{
#ifdef TP_PLANES16_X86
	simd16_off = !allow;
	return avx512_ok();
#else
	(void)allow;
	return false;
#endif
}
