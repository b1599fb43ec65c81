/*
 * Static order-0 rANS (range asymmetric numeral systems) for byte planes
 * whose skewed distribution Huffman codes poorly: the exponent plane of
 * bf16 weights carries ~2.6 bits per byte, and zstd's Huffman literals
 * spend ~11% more than that. Byte-wise renormalisation, two interleaved
 * states for decode speed; layout in FORMAT.md ("rans planes").
 */
#include "delta_internal.h"

#include <math.h>
#include <string.h>

#define PROB_BITS 14
#define PROB_SCALE (1u << PROB_BITS)
#define RANS_L (1u << 23) /* lower bound of the state */
#define TABLE_MAX (32 + 2 * 256)

/* Scale counts to frequencies summing to PROB_SCALE, keeping every present
 * symbol at least 1. */
static void normalize(const uint32_t count[256], size_t n, uint32_t freq[256])
{
	uint32_t sum = 0;
	for (int s = 0; s < 256; s++) {
		freq[s] = count[s] ? (uint32_t)((uint64_t)count[s] * PROB_SCALE / n) : 0;
		if (count[s] && !freq[s])
			freq[s] = 1;
		sum += freq[s];
	}
	/* Settle the rounding on the largest frequencies, which it hurts least. */
	while (sum != PROB_SCALE) {
		int big = 0;
		for (int s = 1; s < 256; s++)
			if (freq[s] > freq[big])
				big = s;
		if (sum > PROB_SCALE) {
			uint32_t d = sum - PROB_SCALE < freq[big] - 1 ? sum - PROB_SCALE : freq[big] - 1;
			freq[big] -= d;
			sum -= d;
		} else {
			freq[big] += PROB_SCALE - sum;
			sum = PROB_SCALE;
		}
	}
}

size_t tp_rans_estimate(const uint32_t count[256], size_t n)
{
	double bits = 0;
	size_t present = 0;
	for (int s = 0; s < 256; s++) {
		if (count[s]) {
			bits -= (double)count[s] * log2((double)count[s] / (double)n);
			present++;
		}
	}
	return (size_t)(bits / 8) + 32 + 2 * present + 8;
}

static size_t write_table(uint8_t *dst, const uint32_t freq[256])
{
	size_t pos = 32;
	memset(dst, 0, 32);
	for (int s = 0; s < 256; s++) {
		if (!freq[s])
			continue;
		dst[s / 8] |= (uint8_t)(1u << (s % 8));
		dst[pos++] = (uint8_t)freq[s];
		dst[pos++] = (uint8_t)(freq[s] >> 8);
	}
	return pos;
}

static int read_table(const uint8_t *src, size_t len, uint32_t freq[256], size_t *used)
{
	size_t pos = 32;
	uint32_t sum = 0;
	if (len < 32)
		return TP_ECORRUPT;
	for (int s = 0; s < 256; s++) {
		freq[s] = 0;
		if (!(src[s / 8] >> (s % 8) & 1))
			continue;
		if (pos + 2 > len)
			return TP_ECORRUPT;
		freq[s] = src[pos] | (uint32_t)src[pos + 1] << 8;
		pos += 2;
		if (!freq[s])
			return TP_ECORRUPT;
		sum += freq[s];
	}
	*used = pos;
	return sum == PROB_SCALE ? 0 : TP_ECORRUPT;
}

/* Encoder view of a symbol. x / freq is the costly step of encoding, so it
 * is done with a reciprocal: with k = floor(log2 freq) and rcp =
 * floor(2^(32+k) / freq), (x * rcp) >> (32+k) is x / freq or one less for
 * every x < 2^32, and one compare fixes it. */
typedef struct enc_sym {
	uint32_t freq, start, x_max, shift;
	uint64_t rcp;
} enc_sym;

static void enc_sym_init(enc_sym *e, uint32_t start, uint32_t freq)
{
	unsigned k = 0;
	while ((2u << k) <= freq)
		k++;
	e->freq = freq;
	e->start = start;
	e->x_max = ((RANS_L >> PROB_BITS) << 8) * freq;
	e->shift = 32 + k;
	e->rcp = freq ? ((uint64_t)1 << e->shift) / freq : 0;
}

static inline void enc_put(uint32_t *x, uint8_t **p, const enc_sym *e)
{
	while (*x >= e->x_max) {
		*--*p = (uint8_t)*x;
		*x >>= 8;
	}
	uint32_t q = (uint32_t)(((uint64_t)*x * e->rcp) >> e->shift);
	uint32_t r = *x - q * e->freq;
	if (r >= e->freq) {
		q++;
		r -= e->freq;
	}
	*x = (q << PROB_BITS) + r + e->start;
}

static inline void enc_flush(uint32_t x, uint8_t **p)
{
	*p -= 4;
	tp_le32(*p, x);
}

size_t tp_rans_encode(const uint8_t *src, size_t n, const uint32_t count[256], uint8_t *dst,
		      size_t cap)
{
	uint32_t freq[256], acc = 0;
	enc_sym sym[256];
	if (n == 0 || cap < TABLE_MAX + 8 + 2 * n)
		return 0;
	normalize(count, n, freq);
	for (int s = 0; s < 256; s++) {
		enc_sym_init(&sym[s], acc, freq[s]);
		acc += freq[s];
	}
	/* Encode backwards from the end of dst, then move the result down. */
	uint8_t *p = dst + cap;
	uint32_t x[2] = { RANS_L, RANS_L };
	for (size_t i = n; i-- > 0;)
		enc_put(&x[i & 1], &p, &sym[src[i]]);
	enc_flush(x[1], &p);
	enc_flush(x[0], &p);
	size_t body = (size_t)(dst + cap - p), head = write_table(dst, freq);
	memmove(dst + head, p, body);
	return head + body;
}

/* One decode step of state x: output its symbol, advance the state. */
#define DEC_STEP(x, out)                                                  \
	do {                                                              \
		uint32_t slot_ = (x) & (PROB_SCALE - 1);                  \
		uint8_t s_ = sym[slot_];                                  \
		uint32_t fs_ = fs[s_];                                    \
		(out) = s_;                                               \
		(x) = (fs_ & 0xffff) * ((x) >> PROB_BITS) + slot_ - (fs_ >> 16); \
	} while (0)

/* Refill x to at least RANS_L without branching. From a state in
 * [RANS_L, 256 RANS_L), a step leaves x >= 2^9, so two bytes always suffice
 * and the caller guarantees two are readable. */
#define DEC_RENORM(x, p)                                                  \
	do {                                                              \
		uint32_t t_ = (x) < RANS_L;                               \
		(x) = t_ ? (x) << 8 | (p)[0] : (x);                       \
		(p) += t_;                                                \
		t_ = (x) < RANS_L;                                        \
		(x) = t_ ? (x) << 8 | (p)[0] : (x);                       \
		(p) += t_;                                                \
	} while (0)

int tp_rans_decode(const uint8_t *src, size_t len, uint8_t *dst, size_t n)
{
	uint32_t freq[256], fs[256], acc = 0;
	uint8_t sym[PROB_SCALE];
	size_t used;
	if (read_table(src, len, freq, &used) < 0 || len - used < 8)
		return tp_error_set(TP_ECORRUPT, "delta: bad rans plane header");
	for (int s = 0; s < 256; s++) {
		/* freq <= PROB_SCALE and start < PROB_SCALE: 16 bits each. */
		fs[s] = freq[s] | acc << 16;
		memset(sym + acc, s, freq[s]);
		acc += freq[s];
	}
	const uint8_t *p = src + used, *end = src + len;
	uint32_t x[2] = { tp_rd32(p), tp_rd32(p + 4) };
	p += 8;
	/* The encoder's final states are in [L, 256 L); the branch-free
	 * refill below relies on it. */
	if (x[0] < RANS_L || x[1] < RANS_L || x[0] >= 256u * RANS_L || x[1] >= 256u * RANS_L)
		return tp_error_set(TP_ECORRUPT, "delta: bad rans plane state");
	size_t i = 0;
	/* Two symbols per round, one per state, consuming at most 4 bytes. */
	for (; i + 2 <= n && end - p >= 4; i += 2) {
		DEC_STEP(x[0], dst[i]);
		DEC_STEP(x[1], dst[i + 1]);
		DEC_RENORM(x[0], p);
		DEC_RENORM(x[1], p);
	}
	for (; i < n; i++) {
		uint32_t *xi = &x[i & 1];
		DEC_STEP(*xi, dst[i]);
		while (*xi < RANS_L) {
			if (p == end)
				return tp_error_set(TP_ECORRUPT, "delta: rans plane truncated");
			*xi = *xi << 8 | *p++;
		}
	}
	/* The encoder started both states at RANS_L and used every byte. */
	if (x[0] != RANS_L || x[1] != RANS_L || p != end)
		return tp_error_set(TP_ECORRUPT, "delta: rans plane does not decode cleanly");
	return 0;
}
