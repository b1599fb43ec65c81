/*
 * The integer tiles of kernels_ggml.c, included there twice: for AVX2
 * (KG_INLINE targets AVX2/FMA/F16C, NT_MAX 2 inputs a tile, maddubs) and
 * for AVX-512 VNNI (KG_VNNI: the same 256-bit tiles with vpdpbusd, and 4
 * inputs a tile, which the 32 vector registers hold; names renamed by
 * macros there). Both give the same integer block sums; only the tile
 * shape, hence nothing in the fp32 order of a row and input, differs.
 * Not a header of its own: kernels_ggml.c defines what it needs first.
 */
KG_INLINE float hsum8(__m256 v)
{
	__m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
	s = _mm_add_ps(s, _mm_movehl_ps(s, s));
	s = _mm_add_ss(s, _mm_movehdup_ps(s));
	return _mm_cvtss_f32(s);
}

KG_INLINE float h2f(const uint8_t *p)
{
	uint16_t h;
	memcpy(&h, p, 2);
	return _cvtsh_ss(h);
}

/* The scale of a block (fp16 at p) in all 8 lanes. */
KG_INLINE __m256 h2f8(const uint8_t *p)
{
	uint16_t h;
	memcpy(&h, p, 2);
	return _mm256_cvtph_ps(_mm_set1_epi16((short)h));
}

/* Block p of storage s as 32 bytes: signed values for q8_0, the unsigned
 * codes (value + 8 or + 16) for q4_0 and q5_0, whose offset the dot product
 * takes off (dot_block). */
KG_INLINE __m256i unpack_avx2(int s, const uint8_t *p)
{
	if (s == S_Q8_0)
		return _mm256_loadu_si256((const __m256i *)(p + 2));
	const __m256i low = _mm256_set1_epi8(0x0f);
	if (s == S_Q4_0) {
		__m128i b = _mm_loadu_si128((const __m128i *)(p + 2));
		return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(b, 4), b), low);
	}
	/* q5_0: bit j of qh is the fifth bit of element j: spread the 4 bytes of
	 * qh over 8 lanes each, keep each lane's own bit. */
	uint32_t qh;
	memcpy(&qh, p + 2, 4);
	__m128i b = _mm_loadu_si128((const __m128i *)(p + 6));
	__m256i v = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(b, 4), b), low);
	const __m256i spread = _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202,
						 0x0101010101010101, 0x0000000000000000);
	const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ull);
	__m256i h = _mm256_shuffle_epi8(_mm256_set1_epi32((int)qh), spread);
	h = _mm256_cmpeq_epi8(_mm256_and_si256(h, bit), bit);
	return _mm256_or_si256(v, _mm256_and_si256(h, _mm256_set1_epi8(0x10)));
}

/* sum of w * x over a block as 8 int32 lanes. Signed storage (q8_0, int8;
 * |w|, |x| <= 127): |w| times x with w's sign, maddubs's pair sums stay below
 * 2^15. Unsigned codes u = w + off (q4_0, q5_0): u.x - off.x, with
 * xo = maddubs(off, x) once per input block (pair sums below 2^13). */
KG_INLINE __m256i dot_block(int s, __m256i w, __m256i aw, __m256i x, __m256i xo)
{
	__m256i p;
#ifdef KG_VNNI
	/* The same lanes (4 adjacent bytes each) in one instruction: xo is then
	 * -off.x in int32 lanes, the start of the sum. */
	if (s == S_Q4_0 || s == S_Q5_0)
		return _mm256_dpbusd_epi32(xo, w, x);
	return _mm256_dpbusd_epi32(_mm256_setzero_si256(), aw, _mm256_sign_epi8(x, w));
#endif
	if (s == S_Q4_0 || s == S_Q5_0)
		p = _mm256_sub_epi16(_mm256_maddubs_epi16(w, x), xo);
	else
		p = _mm256_maddubs_epi16(aw, _mm256_sign_epi8(x, w));
	return _mm256_madd_epi16(p, _mm256_set1_epi16(1));
}

/* A tile of RT rows from r x NT inputs from t of q8_0/q4_0/q5_0/int8 blocks.
 * int8 rows: block b at w + 32 b, d = 1, the row scale at the end, and a
 * partial last block in scalar code. */
KG_INLINE void tile_q8(int s, const uint8_t *packed, size_t rows, size_t cols, size_t r,
			 const uint8_t *x, size_t xs, size_t t, float *y, size_t ldy, size_t r0,
			 int RT, int NT)
{
	__m256 acc[4][NT_MAX];
	_Pragma("GCC unroll 4")
	for (int i = 0; i < RT; i++)
		_Pragma("GCC unroll 4")
		for (int j = 0; j < NT; j++)
			acc[i][j] = _mm256_setzero_ps();
	size_t nb = cols / QK, bb = s == S_INT8 ? QK : block_bytes(s);
	const __m256i off = _mm256_set1_epi8(s == S_Q4_0 ? 8 : 16);
	size_t rowb = s == S_INT8 ? cols : nb * bb;
	const uint8_t *pr[4];
	_Pragma("GCC unroll 4")
	for (int i = 0; i < RT; i++)
		pr[i] = s == S_INT8 ? packed + 4 * rows + (r + i) * cols : packed + (r + i) * nb * bb;
	const uint8_t *xr[NT_MAX];
	_Pragma("GCC unroll 4")
	for (int j = 0; j < NT; j++)
		xr[j] = x + (t + j) * xs;
	for (size_t b = 0; b < nb; b++) {
		__m256i xv[NT_MAX], xo[NT_MAX];
		__m256 dx[NT_MAX];
		_Pragma("GCC unroll 4")
		for (int j = 0; j < NT; j++) {
			const uint8_t *xb = xr[j] + b * XQ8_BYTES;
			dx[j] = _mm256_broadcast_ss((const float *)xb);
			xv[j] = _mm256_loadu_si256((const __m256i *)(xb + 4));
			if (s == S_Q4_0 || s == S_Q5_0)
#ifdef KG_VNNI
				xo[j] = _mm256_sub_epi32(_mm256_setzero_si256(),
							 _mm256_dpbusd_epi32(_mm256_setzero_si256(),
									     off, xv[j]));
#else
				xo[j] = _mm256_maddubs_epi16(off, xv[j]);
#endif
			else
				xo[j] = xv[j];
		}
		_Pragma("GCC unroll 4")
		for (int i = 0; i < RT; i++) {
			const uint8_t *pb = pr[i] + b * bb;
			PREFETCH(pb + (size_t)RT * rowb);
			__m256i w = s == S_INT8 ? _mm256_loadu_si256((const __m256i *)pb)
						: unpack_avx2(s, pb);
			__m256i aw = s == S_Q8_0 || s == S_INT8 ? _mm256_sign_epi8(w, w) : w;
			__m256 dw = s == S_INT8 ? _mm256_set1_ps(1.0f) : h2f8(pb);
			_Pragma("GCC unroll 4")
			for (int j = 0; j < NT; j++) {
				__m256 f = _mm256_cvtepi32_ps(dot_block(s, w, aw, xv[j], xo[j]));
				__m256 sc = s == S_INT8 ? dx[j] : _mm256_mul_ps(dw, dx[j]);
				acc[i][j] = _mm256_fmadd_ps(f, sc, acc[i][j]);
			}
		}
	}
	_Pragma("GCC unroll 4")
	for (int i = 0; i < RT; i++)
		_Pragma("GCC unroll 4")
		for (int j = 0; j < NT; j++) {
			float v = hsum8(acc[i][j]);
			if (s == S_INT8) {
				size_t c0 = nb * QK;
				if (c0 < cols) {
					const uint8_t *xb = xr[j] + nb * XQ8_BYTES;
					v += xd(xb) * (float)idot((const int8_t *)pr[i] + c0,
								  (const int8_t *)(xb + 4),
								  cols - c0);
				}
				v *= tp_quant_get_f32(packed + 4 * (r + i));
			}
			y[(t + j) * ldy + (r + i - r0)] = v;
		}
}

/* The same for q4_k super-blocks against xqk blocks: per sub-block pair, 32
 * bytes hold sub-block 2k (low nibbles) and 2k+1 (high); the integer sums
 * take the 6-bit scales, the mins meet the activation sums. */
KG_INLINE void tile_q4k(const uint8_t *packed, size_t cols, size_t r, const uint8_t *x,
			  size_t xs, size_t t, float *y, size_t ldy, size_t r0, int RT, int NT)
{
	__m256 acc[4][NT_MAX];
	_Pragma("GCC unroll 4")
	for (int i = 0; i < RT; i++)
		_Pragma("GCC unroll 4")
		for (int j = 0; j < NT; j++)
			acc[i][j] = _mm256_setzero_ps();
	size_t nb = cols / QK_K;
	const __m256i low = _mm256_set1_epi8(0x0f);
	for (size_t b = 0; b < nb; b++) {
		const uint8_t *xb[NT_MAX];
		__m256 dx[NT_MAX];
		__m128i xsum[NT_MAX];
		_Pragma("GCC unroll 4")
		for (int j = 0; j < NT; j++) {
			xb[j] = x + (t + j) * xs + b * XQK_BYTES;
			dx[j] = _mm256_broadcast_ss((const float *)xb[j]);
			xsum[j] = _mm_loadu_si128((const __m128i *)(xb[j] + 4));
		}
		_Pragma("GCC unroll 4")
		for (int i = 0; i < RT; i++) {
			const uint8_t *p = packed + ((r + i) * nb + b) * 144;
			PREFETCH(p + (size_t)RT * nb * 144);
			PREFETCH(p + (size_t)RT * nb * 144 + 64);
			PREFETCH(p + (size_t)RT * nb * 144 + 128);
			__m256 d = h2f8(p), dmin = h2f8(p + 2);
			/* scales and mins as int16, sub-block order */
			uint32_t u[3];
			memcpy(u, p + 4, 12);
			uint32_t sc_lo = u[0] & 0x3f3f3f3f, m_lo = u[1] & 0x3f3f3f3f;
			uint32_t sc_hi = (u[2] & 0x0f0f0f0f) | ((u[0] >> 6) & 0x03030303) << 4;
			uint32_t m_hi = ((u[2] >> 4) & 0x0f0f0f0f) | ((u[1] >> 6) & 0x03030303) << 4;
			__m128i sc8 = _mm_set_epi32(0, 0, (int)sc_hi, (int)sc_lo);
			__m128i m8 = _mm_set_epi32(0, 0, (int)m_hi, (int)m_lo);
			__m128i m16 = _mm_cvtepu8_epi16(m8);
			int16_t sc[8];
			_mm_storeu_si128((__m128i *)sc, _mm_cvtepu8_epi16(sc8));
			__m256i isum[NT_MAX];
			_Pragma("GCC unroll 4")
			for (int j = 0; j < NT; j++)
				isum[j] = _mm256_setzero_si256();
			_Pragma("GCC unroll 4")
			for (int k = 0; k < 4; k++) {
				__m256i q = _mm256_loadu_si256((const __m256i *)(p + 16 + 32 * k));
				__m256i lo = _mm256_and_si256(q, low);
				__m256i hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), low);
				__m256i s_lo = _mm256_set1_epi16(sc[2 * k]);
				__m256i s_hi = _mm256_set1_epi16(sc[2 * k + 1]);
				_Pragma("GCC unroll 4")
				for (int j = 0; j < NT; j++) {
					const uint8_t *xq = xb[j] + XQK_Q + 64 * k;
					__m256i a = _mm256_maddubs_epi16(
						lo, _mm256_loadu_si256((const __m256i *)xq));
					__m256i c = _mm256_maddubs_epi16(
						hi, _mm256_loadu_si256((const __m256i *)(xq + 32)));
					isum[j] = _mm256_add_epi32(
						isum[j], _mm256_add_epi32(_mm256_madd_epi16(a, s_lo),
									  _mm256_madd_epi16(c, s_hi)));
				}
			}
			_Pragma("GCC unroll 4")
			for (int j = 0; j < NT; j++) {
				/* the min term's 4 partial sums in the low lanes */
				__m128 mm = _mm_cvtepi32_ps(_mm_madd_epi16(m16, xsum[j]));
				acc[i][j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[j]),
							    _mm256_mul_ps(d, dx[j]), acc[i][j]);
				acc[i][j] = _mm256_fnmadd_ps(_mm256_zextps128_ps256(mm),
							     _mm256_mul_ps(dmin, dx[j]), acc[i][j]);
			}
		}
	}
	_Pragma("GCC unroll 4")
	for (int i = 0; i < RT; i++)
		_Pragma("GCC unroll 4")
		for (int j = 0; j < NT; j++)
			y[(t + j) * ldy + (r + i - r0)] = hsum8(acc[i][j]);
}

/* fp16 rows (the fallback storage) against fp32 inputs, one row and input
 * at a time: such matrices are small (cols not a multiple of 32). */
KG_INLINE float dot_fp16(const uint8_t *w, const float *x, size_t cols)
{
	__m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
	size_t c = 0;
	for (; c + 16 <= cols; c += 16) {
		__m256 w0 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(w + 2 * c)));
		__m256 w1 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(w + 2 * c + 16)));
		a0 = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x + c), a0);
		a1 = _mm256_fmadd_ps(w1, _mm256_loadu_ps(x + c + 8), a1);
	}
	float acc = hsum8(_mm256_add_ps(a0, a1));
	for (; c < cols; c++)
		acc += h2f(w + 2 * c) * x[c];
	return acc;
}

/* Rows are taken 16 at a time (they stay in cache while every input tile
 * passes), in tiles of 4 rows x 2 inputs. */
#define TILE(RT, NT)                                                                         \
	(s == S_Q4_K ? tile_q4k(packed, cols, r, x, xs, t, y, ldy, r0, RT, NT)                \
		     : tile_q8(s, packed, rows, cols, r, x, xs, t, y, ldy, r0, RT, NT))

KG_INLINE void rows_avx2(int s, const uint8_t *packed, size_t rows, size_t cols, size_t r0,
			   size_t r1, const uint8_t *x, size_t n, float *y, size_t ldy)
{
	size_t xs = x_bytes(s, cols);
	if (s == S_FP16) {
		for (size_t t = 0; t < n; t++)
			for (size_t r = r0; r < r1; r++)
				y[t * ldy + (r - r0)] = dot_fp16(
					packed + r * cols * 2, (const float *)(x + t * xs), cols);
		return;
	}
	for (size_t rb = r0; rb < r1; rb += 16) {
		size_t re = rb + 16 < r1 ? rb + 16 : r1, t = 0, r;
#if NT_MAX >= 4
		for (; t + 4 <= n; t += 4) {
			for (r = rb; r + 4 <= re; r += 4)
				TILE(4, 4);
			for (; r < re; r++)
				TILE(1, 4);
		}
#endif
		for (; t + 2 <= n; t += 2) {
			for (r = rb; r + 4 <= re; r += 4)
				TILE(4, 2);
			for (; r < re; r++)
				TILE(1, 2);
		}
		for (; t < n; t++) {
			for (r = rb; r + 4 <= re; r += 4)
				TILE(4, 1);
			for (; r < re; r++)
				TILE(1, 1);
		}
	}
}

