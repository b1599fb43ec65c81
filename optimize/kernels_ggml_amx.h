/*
 * AMX-INT8 prefill for q8_0, q4_0 and q4_k, included by kernels_ggml.c
 * after the AVX-512 tiles (not a header of its own: it uses that file's
 * block layouts and helpers).
 *
 * One tdpbssd multiplies 16 inputs x 32 values (tile A, the prepared input
 * rows as they are: 32 bytes of a block, x_size apart) by 32 values x 16
 * weight rows (tile B, "VNNI" order: row k4 holds bytes 4 k4 .. 4 k4 + 3 of
 * each of the 16 weight rows). Each product is one weight block (q4_k: one
 * 32-value sub-block) against one input block, so the int32 sums are the
 * ones the other kernels take; the fp32 scaling (d_w d_x per block, q4_k's
 * d sc_j and dmin m_j) is applied per block in AVX-512, 16 weight rows a
 * vector, so results differ from the VNNI tiles only in fp32 rounding.
 *
 * The weights are not repacked at load (the packed bytes stay the export's
 * and the quality paths'): each rows() call converts 16 weight rows at a
 * time into B tiles (q4_0/q4_k nibbles unpacked) in a scratch of 16 x cols
 * bytes plus scales, then runs every 16-input tile over them, so each
 * conversion serves n / 16 tiles. Inputs left over (n mod 16) and rows left
 * over (a range not a multiple of 16) go to the VNNI tiles.
 *
 * Linux only: the process asks the kernel for the tile state once
 * (arch_prctl ARCH_REQ_XCOMP_PERM); without AMX, or if that fails, the
 * VNNI tiles do everything.
 */
#if defined(__linux__) && defined(__x86_64__)
#include <cpuid.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

#define KA_AMX 1
#define KA_TARGET "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,amx-tile,amx-int8"
#define KA_INLINE static inline __attribute__((always_inline, target(KA_TARGET)))
#define KA_FN static __attribute__((target(KA_TARGET)))
#define KA_MIN_N 16

static pthread_once_t ka_once = PTHREAD_ONCE_INIT;
static bool ka_usable, ka_allowed = true;

static void ka_probe(void)
{
	unsigned a, b, c, d;
	/* CPUID.7.0:EDX bit 24 AMX-TILE, bit 25 AMX-INT8; the OS must then
	 * grant the tile data state (XFEATURE_XTILEDATA = 18). */
	if (!__get_cpuid_count(7, 0, &a, &b, &c, &d) || !(d & (1u << 24)) || !(d & (1u << 25)))
		return;
	if (!__builtin_cpu_supports("avx512f") || !__builtin_cpu_supports("avx512bw") ||
	    !__builtin_cpu_supports("avx512vl") || !__builtin_cpu_supports("avx512vnni"))
		return;
	ka_usable = syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18) == 0;
}

static bool ka_ready(void)
{
	pthread_once(&ka_once, ka_probe);
	return ka_usable && ka_allowed;
}

bool tp_quant_kernel_ggml_amx(void)
{
	pthread_once(&ka_once, ka_probe);
	return ka_usable;
}

bool tp_quant_kernel_ggml_amx_allow(bool on)
{
	bool old = ka_allowed;
	ka_allowed = on;
	return old;
}

/* Palette 1: tmm0-3 C (16 inputs x 16 int32), tmm4/5 A (16 inputs x 32
 * bytes), tmm6/7 B (8 x 64 bytes: 32 values x 16 weight rows). */
typedef struct {
	uint8_t palette, start_row, reserved[14];
	uint16_t colsb[16];
	uint8_t rows[16];
} ka_config;

KA_INLINE void ka_configure(void)
{
	ka_config cfg;
	memset(&cfg, 0, sizeof(cfg));
	cfg.palette = 1;
	for (int i = 0; i < 4; i++)
		cfg.rows[i] = 16, cfg.colsb[i] = 64;
	for (int i = 4; i < 6; i++)
		cfg.rows[i] = 16, cfg.colsb[i] = 32;
	for (int i = 6; i < 8; i++)
		cfg.rows[i] = 8, cfg.colsb[i] = 64;
	_tile_loadconfig(&cfg);
}

/* 16 weight rows of 32 int8 values (v[i]) into a B tile at dst: an 8x8
 * transpose of dwords in each 256-bit half, rows i and i + 8 sharing a
 * vector, so output row k holds dword k of rows 0..15 in order. */
KA_INLINE void ka_xpose(const __m256i *v, __m512i *out)
{
	__m512i r[8], t[8], s[8];
	for (int i = 0; i < 8; i++)
		r[i] = _mm512_inserti64x4(_mm512_castsi256_si512(v[i]), v[i + 8], 1);
	for (int i = 0; i < 8; i += 2) {
		t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
		t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
	}
	for (int h = 0; h < 8; h += 4) {
		s[h + 0] = _mm512_unpacklo_epi64(t[h + 0], t[h + 2]);
		s[h + 1] = _mm512_unpackhi_epi64(t[h + 0], t[h + 2]);
		s[h + 2] = _mm512_unpacklo_epi64(t[h + 1], t[h + 3]);
		s[h + 3] = _mm512_unpackhi_epi64(t[h + 1], t[h + 3]);
	}
	const __m512i lo = _mm512_set_epi64(13, 12, 5, 4, 9, 8, 1, 0);
	const __m512i hi = _mm512_set_epi64(15, 14, 7, 6, 11, 10, 3, 2);
	for (int k = 0; k < 4; k++) {
		out[k] = _mm512_permutex2var_epi64(s[k], lo, s[k + 4]);
		out[k + 4] = _mm512_permutex2var_epi64(s[k], hi, s[k + 4]);
	}
}

KA_INLINE void ka_to_b(const __m256i *v, uint8_t *dst)
{
	__m512i o[8];
	ka_xpose(v, o);
	for (int k = 0; k < 8; k++)
		_mm512_storeu_si512(dst + 64 * k, o[k]);
}

/* Weight rows g .. g + 15 into scratch: nsub B tiles of 512 bytes, then
 * per sub-block the 16 rows' scales (fp32), then for q4_k per super-block
 * the 16 rows' dmin (fp32) and 4 x 16 pairs of mins (int16 m_2p | m_2p+1
 * in an int32, for vpdpwssd against the input's pairs of sums). */
KA_INLINE void ka_convert(int s, const uint8_t *packed, size_t cols, size_t g, uint8_t *wb)
{
	size_t nb = s == S_Q4_K ? cols / QK_K : cols / QK;
	size_t nsub = s == S_Q4_K ? nb * 8 : nb;
	size_t bb = s == S_Q4_K ? 144 : block_bytes(s), rowb = nb * bb;
	float *sc = (float *)(wb + nsub * 512);
	const uint8_t *p0 = packed + g * rowb;
	__m256i v[16];
	if (s != S_Q4_K) {
		const __m256i eight = _mm256_set1_epi8(8);
		for (size_t b = 0; b < nb; b++) {
			for (int r = 0; r < 16; r++) {
				const uint8_t *p = p0 + r * rowb + b * bb;
				/* 16 rows read side by side: the prefetcher alone
				 * falls behind */
				PREFETCH(p + 8 * bb);
				v[r] = unpack_avx2_vnni(s, p);
				if (s == S_Q4_0)
					v[r] = _mm256_sub_epi8(v[r], eight);
				sc[b * 16 + r] = h2f_vnni(p);
			}
			ka_to_b(v, wb + b * 512);
		}
		return;
	}
	float *dmin = sc + nsub * 16;
	uint32_t *mp = (uint32_t *)(dmin + nb * 16);
	for (size_t b = 0; b < nb; b++) {
		for (int r = 0; r < 16; r++) {
			const uint8_t *p = p0 + r * rowb + b * 144;
			PREFETCH(p + 2 * 144);
			PREFETCH(p + 2 * 144 + 64);
			PREFETCH(p + 2 * 144 + 128);
			float d = h2f_vnni(p);
			dmin[b * 16 + r] = h2f_vnni(p + 2);
			/* the 8 6-bit scales and mins a byte each (k4_scale_min's
			 * layout, 4 sub-blocks a word) */
			uint32_t w[3];
			memcpy(w, p + 4, 12);
			uint64_t sc8 = (uint64_t)(w[0] & 0x3f3f3f3f) |
				       (uint64_t)((w[2] & 0x0f0f0f0f) | ((w[0] >> 6) & 0x03030303) << 4)
					       << 32;
			uint64_t m8 = (uint64_t)(w[1] & 0x3f3f3f3f) |
				      (uint64_t)(((w[2] >> 4) & 0x0f0f0f0f) |
						 ((w[1] >> 6) & 0x03030303) << 4)
					      << 32;
			for (int j = 0; j < 8; j++)
				sc[(b * 8 + j) * 16 + r] = d * (float)(int)((sc8 >> (8 * j)) & 0xff);
			for (int k = 0; k < 4; k++)
				mp[(b * 4 + k) * 16 + r] = (uint32_t)((m8 >> (16 * k)) & 0xff) |
							   (uint32_t)((m8 >> (16 * k + 8)) & 0xff) << 16;
		}
		/* the packed bytes transposed once: the nibble split is per byte,
		 * so it gives sub-blocks 2k (low) and 2k + 1 (high) after it */
		const __m512i low16 = _mm512_set1_epi8(0x0f);
		for (int k = 0; k < 4; k++) {
			__m512i o[8];
			for (int r = 0; r < 16; r++)
				v[r] = _mm256_loadu_si256(
					(const __m256i *)(p0 + r * rowb + b * 144 + 16 + 32 * k));
			ka_xpose(v, o);
			uint8_t *d0 = wb + (b * 8 + 2 * k) * 512, *d1 = d0 + 512;
			for (int i = 0; i < 8; i++) {
				_mm512_storeu_si512(d0 + 64 * i, _mm512_and_si512(o[i], low16));
				_mm512_storeu_si512(
					d1 + 64 * i, _mm512_and_si512(_mm512_srli_epi16(o[i], 4), low16));
			}
		}
	}
}

/* acc[i] += C (tile stored at c: 16 inputs x 16 int32) scaled by the rows'
 * scales w (16 floats) and input i's scale dx[i]. */
KA_INLINE void ka_scale(__m512 *acc, const int32_t *c, const float *w, const float *dx)
{
	__m512 wv = _mm512_loadu_ps(w);
	_Pragma("GCC unroll 16")
	for (int i = 0; i < 16; i++) {
		__m512 f = _mm512_cvtepi32_ps(_mm512_loadu_si512(c + 16 * i));
		acc[i] = _mm512_fmadd_ps(f, _mm512_mul_ps(wv, _mm512_set1_ps(dx[i])), acc[i]);
	}
}

/* The inputs n16 (a multiple of 16) as A tiles: per 16 inputs, nsub tiles
 * of 16 x 32 bytes side by side (one aligned 512-byte load each, where the
 * prepared rows would take 16 loads across cache lines), then per block
 * (q4_k: super-block) the 16 inputs' scales. */
KA_INLINE void ka_pack_x(int s, const uint8_t *x, size_t xs, size_t cols, size_t n16,
			 uint8_t *ap)
{
	size_t nb = s == S_Q4_K ? cols / QK_K : cols / QK;
	size_t nsub = s == S_Q4_K ? nb * 8 : nb;
	for (size_t g = 0; g < n16; g += 16) {
		uint8_t *a = ap + g / 16 * (nsub * 512 + nb * 64);
		float *dx = (float *)(a + nsub * 512);
		for (size_t i = 0; i < 16; i++) {
			const uint8_t *xt = x + (g + i) * xs;
			for (size_t b = 0; b < nb; b++)
				dx[b * 16 + i] = xd(xt + b * (s == S_Q4_K ? XQK_BYTES : XQ8_BYTES));
			for (size_t u = 0; u < nsub; u++) {
				const uint8_t *src = s == S_Q4_K ? xt + u / 8 * XQK_BYTES + XQK_Q +
									   u % 8 * QK
								 : xt + u * XQ8_BYTES + 4;
				_mm256_store_si256((__m256i *)(a + u * 512 + i * 32),
						   _mm256_loadu_si256((const __m256i *)src));
			}
		}
	}
}

/* Inputs t .. t + 15 against the converted rows g .. g + 15. */
KA_INLINE void ka_tile(int s, const uint8_t *wb, size_t cols, const uint8_t *x, size_t xs,
		       const uint8_t *ap, size_t t, float *y, size_t ldy, size_t yoff)
{
	size_t nb = s == S_Q4_K ? cols / QK_K : cols / QK;
	size_t nsub = s == S_Q4_K ? nb * 8 : nb;
	const float *sc = (const float *)(wb + nsub * 512);
	const uint8_t *xt = x + t * xs;
	_Alignas(64) int32_t c[2][2][256];
	__m512 acc[16];
	_Pragma("GCC unroll 16")
	for (int i = 0; i < 16; i++)
		acc[i] = _mm512_setzero_ps();
	/* the A tile of sub-block u, and its block's scale (fp32 at the
	 * block's start) */
	const float *dxv = (const float *)(ap + nsub * 512);
#define KA_A(u) (ap + (u) * 512)
#define KA_D(u) (dxv + (s == S_Q4_K ? (u) / 8 : (u)) * 16)
	/* Software-pipelined by pairs of sub-blocks, C tiles 0/1 for even
	 * pairs and 2/3 for odd ones: while the vector units scale pair p - 1
	 * (stored one step earlier, so its stores have landed), the tile unit
	 * has pairs p + 1 and p + 2 queued. */
#define KA_ISSUE(P, C0, C1)                                                                  \
	do {                                                                                 \
		size_t u_ = 2 * (P);                                                         \
		_tile_zero(C0);                                                              \
		_tile_loadd(4, KA_A(u_), 32);                                          \
		_tile_loadd(6, wb + u_ * 512, 64);                                           \
		_tile_dpbssd(C0, 4, 6);                                                      \
		if (u_ + 1 < nsub) {                                                         \
			_tile_zero(C1);                                                      \
			_tile_loadd(5, KA_A(u_ + 1), 32);                              \
			_tile_loadd(7, wb + (u_ + 1) * 512, 64);                             \
			_tile_dpbssd(C1, 5, 7);                                              \
		}                                                                            \
	} while (0)
#define KA_STORE(P, C0, C1, BUF)                                                             \
	do {                                                                                 \
		_tile_stored(C0, (BUF)[0], 64);                                              \
		if (2 * (P) + 1 < nsub)                                                      \
			_tile_stored(C1, (BUF)[1], 64);                                      \
	} while (0)
#define KA_SCALE(P, BUF)                                                                     \
	do {                                                                                 \
		size_t u_ = 2 * (P);                                                         \
		ka_scale(acc, (BUF)[0], sc + u_ * 16, KA_D(u_));                         \
		if (u_ + 1 < nsub)                                                           \
			ka_scale(acc, (BUF)[1], sc + (u_ + 1) * 16, KA_D(u_ + 1));       \
	} while (0)
	size_t np = (nsub + 1) / 2;
	KA_ISSUE(0, 0, 1);
	if (np > 1)
		KA_ISSUE(1, 2, 3);
	for (size_t p = 0; p < np; p += 2) {
		KA_STORE(p, 0, 1, c[0]);
		if (p + 2 < np)
			KA_ISSUE(p + 2, 0, 1);
		if (p >= 1)
			KA_SCALE(p - 1, c[1]);
		if (p + 1 >= np)
			break;
		KA_STORE(p + 1, 2, 3, c[1]);
		if (p + 3 < np)
			KA_ISSUE(p + 3, 2, 3);
		KA_SCALE(p, c[0]);
	}
	KA_SCALE(np - 1, c[(np - 1) % 2]);
#undef KA_ISSUE
#undef KA_STORE
#undef KA_SCALE
#undef KA_A
#undef KA_D
	if (s == S_Q4_K) {
		/* - dmin dx sum_j m_j xsum_j per super-block: the integer sum by
		 * pairs of j (int16 x int16 -> int32), exact as in the C kernel */
		const float *dmin = sc + nsub * 16;
		const uint32_t *mp = (const uint32_t *)(dmin + nb * 16);
		for (size_t b = 0; b < nb; b++) {
			__m512i m[4];
			for (int k = 0; k < 4; k++)
				m[k] = _mm512_loadu_si512(mp + (b * 4 + k) * 16);
			__m512 dm = _mm512_loadu_ps(dmin + b * 16);
			_Pragma("GCC unroll 16")
			for (int i = 0; i < 16; i++) {
				const uint8_t *xb = xt + i * xs + b * XQK_BYTES;
				__m512i is = _mm512_setzero_si512();
				for (int k = 0; k < 4; k++) {
					uint32_t pair;
					memcpy(&pair, xb + 4 + 4 * k, 4);
					is = _mm512_dpwssd_epi32(is, m[k], _mm512_set1_epi32((int)pair));
				}
				acc[i] = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(is),
							  _mm512_mul_ps(dm, _mm512_set1_ps(xd(xb))),
							  acc[i]);
			}
		}
	}
	_Pragma("GCC unroll 16")
	for (int i = 0; i < 16; i++)
		_mm512_storeu_ps(y + (t + i) * ldy + yoff, acc[i]);
}

/* Rows r0 <= r < r1, inputs 0 <= t < n, as rows_zmm / rows_avx2_vnni;
 * false (nothing written) when the scratch cannot be allocated. */
KA_INLINE bool ka_rows(int s, const uint8_t *packed, size_t cols, size_t r0, size_t r1,
		   const uint8_t *x, size_t n, float *y, size_t ldy)
{
	size_t xs = x_bytes(s, cols);
	size_t nb = s == S_Q4_K ? cols / QK_K : cols / QK;
	size_t nsub = s == S_Q4_K ? nb * 8 : nb;
	size_t wbytes = nsub * (512 + 64) + (s == S_Q4_K ? nb * (64 + 256) : 0);
	size_t g1 = r0 + (r1 - r0) / 16 * 16, n16 = n / 16 * 16;
	size_t abytes = nsub * 512 + nb * 64; /* per 16 inputs */
	wbytes = (wbytes + 63) / 64 * 64;
	if (n16 / 16 > (SIZE_MAX - wbytes) / abytes)
		return false;
	uint8_t *wb = aligned_alloc(64, wbytes + n16 / 16 * abytes);
	if (!wb)
		return false;
	uint8_t *ap = wb + wbytes;
	ka_pack_x(s, x, xs, cols, n16, ap);
	ka_configure();
	for (size_t g = r0; g < g1; g += 16) {
		ka_convert(s, packed, cols, g, wb);
		for (size_t t = 0; t < n16; t += 16)
			ka_tile(s, wb, cols, x, xs, ap + t / 16 * abytes, t, y, ldy, g - r0);
	}
	_tile_release();
	free(wb);
	/* the rest: rows past the last group of 16, inputs past the last 16 */
	if (n16 < n && g1 > r0)
		rows_tail(s, packed, cols, r0, g1, x + n16 * xs, n - n16, y + n16 * ldy, ldy);
	if (g1 < r1)
		rows_tail(s, packed, cols, g1, r1, x, n, y + (g1 - r0), ldy);
	return true;
}

/* One function per format, so that each inlines only its own blocks. */
#define KA_ROWS(S)                                                                           \
	KA_FN bool ka_rows_##S(const uint8_t *packed, size_t cols, size_t r0, size_t r1,       \
			       const uint8_t *x, size_t n, float *y, size_t ldy)               \
	{                                                                                     \
		return ka_rows(S, packed, cols, r0, r1, x, n, y, ldy);                        \
	}
KA_ROWS(S_Q8_0)
KA_ROWS(S_Q4_0)
KA_ROWS(S_Q4_K)
#undef KA_ROWS
#endif
