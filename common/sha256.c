#include "tp_common.h"

#include <sodium.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
#endif

/*
 * SHA-256 per FIPS 180-4. The block function is chosen at run time: Intel's
 * SHA extensions where the CPU has them (about 6x faster), else portable C.
 * HMAC stays on libsodium; it only ever sees short messages.
 */

/* Compress nblocks consecutive 64-byte blocks of p into the chaining value s. */
typedef void sha256_blocks_fn(uint32_t s[8], const unsigned char *p, size_t nblocks);

struct sha256_state {
	uint32_t h[8];
	uint64_t len;		  /* message bytes so far */
	sha256_blocks_fn *blocks; /* fixed at init: one implementation per message */
	unsigned char buf[64];	  /* pending partial block: len % 64 bytes */
};

_Static_assert(sizeof(struct sha256_state) <= sizeof(((tp_sha256 *)0)->state),
	       "tp_sha256 storage too small");
_Static_assert(_Alignof(struct sha256_state) <= _Alignof(tp_sha256), "tp_sha256 under-aligned");

static struct sha256_state *sha256_state_of(tp_sha256 *h)
{
	/* The public struct is opaque storage; only this view ever touches it. */
	return (struct sha256_state *)(void *)h->state;
}

/* Round constants, FIPS 180-4 section 4.2.2; aligned for the SHA-NI loads. */
static _Alignas(16) const uint32_t sha256_k[64] = {
	0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
	0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
	0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
	0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
	0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
	0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
	0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
	0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

static uint32_t load_be32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void store_be32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)(v >> 24);
	p[1] = (unsigned char)(v >> 16);
	p[2] = (unsigned char)(v >> 8);
	p[3] = (unsigned char)v;
}

static uint32_t rotr32(uint32_t x, unsigned n)
{
	return x >> n | x << (32 - n);
}

#define SHA256_BSIG0(x) (rotr32(x, 2) ^ rotr32(x, 13) ^ rotr32(x, 22))
#define SHA256_BSIG1(x) (rotr32(x, 6) ^ rotr32(x, 11) ^ rotr32(x, 25))
#define SHA256_SSIG0(x) (rotr32(x, 7) ^ rotr32(x, 18) ^ ((x) >> 3))
#define SHA256_SSIG1(x) (rotr32(x, 17) ^ rotr32(x, 19) ^ ((x) >> 10))

/*
 * One round of FIPS 180-4 6.2.2 step 3. Rather than shifting all eight
 * working variables each round, callers rotate the argument names, so only
 * d and h are written.
 */
#define SHA256_ROUND(a, b, c, d, e, f, g, h, i)                                      \
	do {                                                                         \
		uint32_t t1_ = h + SHA256_BSIG1(e) + ((e & f) ^ (~e & g)) + sha256_k[i] + w[i]; \
		d += t1_;                                                            \
		h = t1_ + SHA256_BSIG0(a) + ((a & b) ^ (a & c) ^ (b & c));           \
	} while (0)

/* Portable block function: FIPS 180-4 section 6.2.2. */
static void sha256_blocks_c(uint32_t s[8], const unsigned char *p, size_t nblocks)
{
	for (; nblocks; nblocks--, p += 64) {
		uint32_t w[64];
		for (int t = 0; t < 16; t++)
			w[t] = load_be32(p + 4 * t);
		for (int t = 16; t < 64; t++)
			w[t] = SHA256_SSIG1(w[t - 2]) + w[t - 7] + SHA256_SSIG0(w[t - 15]) + w[t - 16];

		uint32_t a = s[0], b = s[1], c = s[2], d = s[3];
		uint32_t e = s[4], f = s[5], g = s[6], h = s[7];
		for (int t = 0; t < 64; t += 8) {
			SHA256_ROUND(a, b, c, d, e, f, g, h, t + 0);
			SHA256_ROUND(h, a, b, c, d, e, f, g, t + 1);
			SHA256_ROUND(g, h, a, b, c, d, e, f, t + 2);
			SHA256_ROUND(f, g, h, a, b, c, d, e, t + 3);
			SHA256_ROUND(e, f, g, h, a, b, c, d, t + 4);
			SHA256_ROUND(d, e, f, g, h, a, b, c, t + 5);
			SHA256_ROUND(c, d, e, f, g, h, a, b, t + 6);
			SHA256_ROUND(b, c, d, e, f, g, h, a, t + 7);
		}
		s[0] += a;
		s[1] += b;
		s[2] += c;
		s[3] += d;
		s[4] += e;
		s[5] += f;
		s[6] += g;
		s[7] += h;
	}
}

#undef SHA256_ROUND
#undef SHA256_SSIG1
#undef SHA256_SSIG0
#undef SHA256_BSIG1
#undef SHA256_BSIG0

#if defined(__x86_64__)
/*
 * SHA-NI block function. sha256rnds2 does two rounds on the state split as
 * ABEF and CDGH (A and C in the top dword) and returns the new ABEF, the old
 * ABEF becoming the new CDGH, so the two registers trade roles each call.
 * sha256msg1/msg2 compute four schedule words: msg1 adds s0(W[t-15]) to
 * W[t-16], the W[t-7] terms are added by hand, msg2 adds s1(W[t-2]).
 */

/* Four rounds with message words m (W[4g..4g+3]). */
#define SHANI_ROUNDS4(m, g)                                                                       \
	do {                                                                                      \
		__m128i wk_ = _mm_add_epi32((m), _mm_load_si128((const __m128i *)&sha256_k[4 * (g)])); \
		cdgh = _mm_sha256rnds2_epu32(cdgh, abef, wk_);                                      \
		abef = _mm_sha256rnds2_epu32(abef, cdgh, _mm_shuffle_epi32(wk_, 0x0e));             \
	} while (0)

/* m0..m3 hold W[t-16..t-1]; replace m0 with W[t..t+3] and run its four rounds. */
#define SHANI_QUAD(g, m0, m1, m2, m3)                                                          \
	do {                                                                                   \
		m0 = _mm_add_epi32(_mm_sha256msg1_epu32(m0, m1), _mm_alignr_epi8(m3, m2, 4)); \
		m0 = _mm_sha256msg2_epu32(m0, m3);                                             \
		SHANI_ROUNDS4(m0, g);                                                          \
	} while (0)

__attribute__((target("sha,sse4.1"))) static void sha256_blocks_shani(uint32_t s[8],
								     const unsigned char *p,
								     size_t nblocks)
{
	/* Message words are big-endian: reverse the bytes of each dword. */
	const __m128i bswap = _mm_set_epi8(12, 13, 14, 15, 8, 9, 10, 11, 4, 5, 6, 7, 0, 1, 2, 3);
	/* Lane comments list dwords low to high. */
	__m128i abcd = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)&s[0]), 0xb1); /* B A D C */
	__m128i efgh = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)&s[4]), 0x1b); /* H G F E */
	__m128i abef = _mm_alignr_epi8(abcd, efgh, 8);	   /* F E B A */
	__m128i cdgh = _mm_blend_epi16(efgh, abcd, 0xf0); /* H G D C */

	for (; nblocks; nblocks--, p += 64) {
		__m128i abef0 = abef, cdgh0 = cdgh;
		__m128i m0 = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(p + 0)), bswap);
		__m128i m1 = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(p + 16)), bswap);
		__m128i m2 = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(p + 32)), bswap);
		__m128i m3 = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(p + 48)), bswap);
		SHANI_ROUNDS4(m0, 0);
		SHANI_ROUNDS4(m1, 1);
		SHANI_ROUNDS4(m2, 2);
		SHANI_ROUNDS4(m3, 3);
		for (int g = 4; g < 16; g += 4) {
			SHANI_QUAD(g + 0, m0, m1, m2, m3);
			SHANI_QUAD(g + 1, m1, m2, m3, m0);
			SHANI_QUAD(g + 2, m2, m3, m0, m1);
			SHANI_QUAD(g + 3, m3, m0, m1, m2);
		}
		abef = _mm_add_epi32(abef, abef0);
		cdgh = _mm_add_epi32(cdgh, cdgh0);
	}

	/* Back to A..H order: the inverse of the split above. */
	abcd = _mm_unpackhi_epi64(cdgh, abef);	    /* D C B A */
	efgh = _mm_unpacklo_epi64(cdgh, abef);	    /* H G F E */
	_mm_storeu_si128((__m128i *)&s[0], _mm_shuffle_epi32(abcd, 0x1b));
	_mm_storeu_si128((__m128i *)&s[4], _mm_shuffle_epi32(efgh, 0x1b));
}

#undef SHANI_QUAD
#undef SHANI_ROUNDS4

static bool cpu_has_shani(void)
{
	unsigned a, b, c, d;
	/* cpuid directly: clang's __builtin_cpu_supports() lacks "sha". */
	if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_SSSE3) || !(c & bit_SSE4_1))
		return false;
	return __get_cpuid_count(7, 0, &a, &b, &c, &d) && (b & bit_SHA);
}
#endif

/* Test hook (declared by tests/unit/test_sha256.c only): new states use portable C. */
void tp_sha256_force_portable(bool on);
static atomic_bool sha256_portable_forced;

void tp_sha256_force_portable(bool on)
{
	atomic_store(&sha256_portable_forced, on);
}

static sha256_blocks_fn *sha256_pick(void)
{
	/* Probed once (cpuid can trap in a VM); racing first callers agree. */
	static _Atomic(sha256_blocks_fn *) best;
	if (atomic_load_explicit(&sha256_portable_forced, memory_order_relaxed))
		return sha256_blocks_c;
	sha256_blocks_fn *f = atomic_load_explicit(&best, memory_order_relaxed);
	if (!f) {
		f = sha256_blocks_c;
#if defined(__x86_64__)
		if (cpu_has_shani())
			f = sha256_blocks_shani;
#endif
		atomic_store_explicit(&best, f, memory_order_relaxed);
	}
	return f;
}

void tp_sha256_init(tp_sha256 *hs)
{
	static const uint32_t iv[8] = { 0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
					0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19 };
	struct sha256_state *s = sha256_state_of(hs);
	memcpy(s->h, iv, sizeof(iv));
	s->len = 0;
	s->blocks = sha256_pick();
}

void tp_sha256_update(tp_sha256 *hs, const void *data, size_t n)
{
	struct sha256_state *s = sha256_state_of(hs);
	const unsigned char *p = data;
	size_t have = (size_t)(s->len % 64);
	if (n == 0)
		return; /* data may be NULL */
	s->len += n;
	if (have) {
		size_t take = n < 64 - have ? n : 64 - have;
		memcpy(s->buf + have, p, take);
		if (have + take < 64)
			return;
		s->blocks(s->h, s->buf, 1);
		p += take;
		n -= take;
	}
	if (n >= 64) {
		s->blocks(s->h, p, n / 64);
		p += n - n % 64;
		n %= 64;
	}
	if (n)
		memcpy(s->buf, p, n);
}

void tp_sha256_final(tp_sha256 *hs, unsigned char out[TP_SHA256_LEN])
{
	struct sha256_state *s = sha256_state_of(hs);
	/* FIPS 180-4 5.1.1: a 1 bit, zeros to 56 mod 64 bytes, the bit length big-endian. */
	uint64_t bits = s->len * 8;
	size_t have = (size_t)(s->len % 64);
	s->buf[have++] = 0x80;
	if (have > 56) {
		memset(s->buf + have, 0, 64 - have);
		s->blocks(s->h, s->buf, 1);
		have = 0;
	}
	memset(s->buf + have, 0, 56 - have);
	store_be32(s->buf + 56, (uint32_t)(bits >> 32));
	store_be32(s->buf + 60, (uint32_t)bits);
	s->blocks(s->h, s->buf, 1);
	for (int i = 0; i < 8; i++)
		store_be32(out + 4 * i, s->h[i]);
}

void tp_sha256_hex(const unsigned char d[TP_SHA256_LEN], char out[TP_OID_HEXLEN + 1])
{
	static const char hex[] = "0123456789abcdef";
	for (int i = 0; i < TP_SHA256_LEN; i++) {
		out[2 * i] = hex[d[i] >> 4];
		out[2 * i + 1] = hex[d[i] & 15];
	}
	out[TP_OID_HEXLEN] = '\0';
}

void tp_hmac_sha256(const void *key, size_t key_len, const void *msg, size_t msg_len,
		    unsigned char out[TP_SHA256_LEN])
{
	crypto_auth_hmacsha256_state st;
	crypto_auth_hmacsha256_init(&st, key, key_len);
	crypto_auth_hmacsha256_update(&st, msg, msg_len);
	crypto_auth_hmacsha256_final(&st, out);
	sodium_memzero(&st, sizeof(st));
}

bool tp_oid_valid(const char *s)
{
	if (!s)
		return false;
	for (int i = 0; i < TP_OID_HEXLEN; i++) {
		char c = s[i];
		if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
			return false;
	}
	return s[TP_OID_HEXLEN] == '\0';
}

int tp_sha256_file(const char *path, char out_hex[TP_OID_HEXLEN + 1], uint64_t *size_out)
{
	enum { CHUNK = 1 << 20 };
	int rc = 0;
	unsigned char *buf = NULL;
	int fd;
	if ((rc = tp_fs_open_regular(path, &fd)) != 0)
		return rc;
	buf = malloc(CHUNK);
	if (!buf) {
		rc = tp_error_set(TP_ENOMEM, "out of memory hashing %s", path);
		goto done;
	}
	tp_sha256 h;
	tp_sha256_init(&h);
	uint64_t total = 0;
	for (;;) {
		size_t got;
		if ((rc = tp_fs_read_full(fd, buf, CHUNK, &got)) != 0) {
			tp_error_wrap(rc, "hashing %s", path);
			goto done;
		}
		tp_sha256_update(&h, buf, got);
		total += got;
		if (got < CHUNK)
			break;
	}
	unsigned char d[TP_SHA256_LEN];
	tp_sha256_final(&h, d);
	tp_sha256_hex(d, out_hex);
	if (size_out)
		*size_out = total;
done:
	free(buf);
	close(fd);
	return rc;
}

void tp_sha256_hex_of(const void *data, size_t n, char out[TP_OID_HEXLEN + 1])
{
	tp_sha256 h;
	unsigned char d[TP_SHA256_LEN];
	tp_sha256_init(&h);
	tp_sha256_update(&h, data, n);
	tp_sha256_final(&h, d);
	tp_sha256_hex(d, out);
}
