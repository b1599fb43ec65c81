/*
 * The CUDA kernels: one decoder per packed format (wgetk: the value of
 * w[r][c], bit for bit what the format's plain-C dequantize gives), a
 * warp-per-row GEMV for single tokens, a shared-memory tiled GEMM for
 * batches, and the transformer's elementwise and attention kernels
 * mirroring runtime/forward.c. Products that must equal the CPU's bits
 * (dequantization) use __fmul_rn / __fadd_rn so nvcc cannot fuse them.
 */
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "cuda_internal.h"

__constant__ float c_nf4[16];
__constant__ float c_dq[256];

typedef unsigned long long u64;

static int launched(void)
{
	return (int)cudaGetLastError();
}

static unsigned blocks_for(u64 count, unsigned threads)
{
	u64 b = (count + threads - 1) / threads;
	return (unsigned)(b > 65535u * 8u ? 65535u * 8u : (b ? b : 1));
}

/* ---- decoding one weight ------------------------------------------------
 * Host and device code: the host build of the decoders runs in the tests on
 * machines without a GPU (tp_cuda_k_dequantize_host), so the layouts are
 * checked everywhere; kernels.cu is compiled with -ffp-contract=off for the
 * host so that its products round as the CPU formats' do. */

#define HD __host__ __device__ __forceinline__
/* #pragma unroll for nvcc's device pass only: the host compiler warns. */
#ifdef __CUDA_ARCH__
#define UNROLL _Pragma("unroll")
#else
#define UNROLL
#endif

static float h_nf4[16], h_dq[256];

#ifdef __CUDA_ARCH__
#define FMUL(a, b) __fmul_rn(a, b)
#define FADD(a, b) __fadd_rn(a, b)
#define FSUB(a, b) __fsub_rn(a, b)
#define NF4_CODE(i) c_nf4[i]
#define DQ_CODE(i) c_dq[i]
#else
#define FMUL(a, b) ((a) * (b))
#define FADD(a, b) ((a) + (b))
#define FSUB(a, b) ((a) - (b))
#define NF4_CODE(i) h_nf4[i]
#define DQ_CODE(i) h_dq[i]
#endif

HD float bits_float(uint32_t v)
{
#ifdef __CUDA_ARCH__
	return __uint_as_float(v);
#else
	float f;
	memcpy(&f, &v, 4);
	return f;
#endif
}

HD float ld_f32(const uint8_t *p)
{
	return bits_float((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
			  (uint32_t)p[3] << 24);
}

HD uint16_t ld_u16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

HD float fp16f(uint16_t h)
{
	return __half2float(__ushort_as_half(h));
}

/* Code i of a bits-wide LSB-first stream (bits <= 8: at most 2 bytes;
 * the second is read only when the code reaches into it). */
HD unsigned bits_get(const uint8_t *p, u64 i, int bits)
{
	u64 bit = i * (u64)bits;
	unsigned sh = (unsigned)(bit & 7), v = p[bit >> 3];
	if (sh + (unsigned)bits > 8)
		v |= (unsigned)p[(bit >> 3) + 1] << 8;
	return (v >> sh) & ((1u << bits) - 1u);
}

HD u64 bits_bytes(u64 n, int bits)
{
	return (n * (u64)bits + 7) / 8;
}

/* rtnB_gG: (q - zero) * scale (group.c group_decode). */
HD float group_get(const uint8_t *p, int bits, u64 group, u64 rows, u64 cols, u64 r, u64 c)
{
	u64 ngr = (cols + group - 1) / group, ng = rows * ngr, g = r * ngr + c / group;
	const uint8_t *zp = p + 2 * ng, *qp = zp + bits_bytes(ng, bits);
	float s = fp16f(ld_u16(p + 2 * g));
	int z = (int)bits_get(zp, g, bits), q = (int)bits_get(qp, r * cols + c, bits);
	return FMUL((float)(q - z), s);
}

/* w[r][c] of a matrix of kind K (a template parameter: each kernel is
 * compiled per format, without a switch in its loop). */
template <int K> HD float wgetk(const tp_cuda_wfmt &f, u64 r, u64 c)
{
	const uint8_t *p = f.p;
	u64 rows = f.rows, cols = f.cols;
	if constexpr (K == TP_CUDA_F32) {
		return ((const float *)p)[r * cols + c];
	} else if constexpr (K == TP_CUDA_FP16) {
		return fp16f(((const uint16_t *)p)[r * cols + c]);
	} else if constexpr (K == TP_CUDA_BF16) {
		return bits_float((uint32_t)((const uint16_t *)p)[r * cols + c] << 16);
	} else if constexpr (K == TP_CUDA_INT8) {
		int8_t q = (int8_t)p[4 * rows + r * cols + c];
		return FMUL((float)q, ld_f32(p + 4 * r));
	} else if constexpr (K == TP_CUDA_NF4) {
		u64 i = r * cols + c, nb = (rows * cols + 63) / 64;
		uint8_t b = p[4 * nb + i / 2];
		unsigned q = i % 2 ? b & 0xfu : (unsigned)b >> 4;
		return FMUL(NF4_CODE(q), ld_f32(p + 4 * (i / 64)));
	} else if constexpr (K == TP_CUDA_NF4_DQ) {
		u64 i = r * cols + c, nb = (rows * cols + 63) / 64, nb2 = (nb + 255) / 256;
		const uint8_t *q8 = p + 4 + 4 * nb2;
		u64 b = i / 64;
		float amax = FADD(FMUL(DQ_CODE(q8[b]), ld_f32(p + 4 + 4 * (b / 256))), ld_f32(p));
		uint8_t by = q8[nb + i / 2];
		unsigned q = i % 2 ? by & 0xfu : (unsigned)by >> 4;
		return FMUL(NF4_CODE(q), amax);
	} else if constexpr (K == TP_CUDA_GROUP) {
		return group_get(p, f.bits, f.group, rows, cols, r, c);
	} else if constexpr (K == TP_CUDA_RESIDUAL) {
		return FADD(group_get(p, 4, 128, rows, cols, r, c),
			    group_get(p + f.off2, 2, 128, rows, cols, r, c));
	} else if constexpr (K == TP_CUDA_Q8_0) {
		const uint8_t *y = p + r * (cols / 32) * 34 + (c / 32) * 34;
		return FMUL((float)(int8_t)y[2 + c % 32], fp16f(ld_u16(y)));
	} else if constexpr (K == TP_CUDA_Q4_0) {
		const uint8_t *y = p + r * (cols / 32) * 18 + (c / 32) * 18;
		unsigned j = (unsigned)(c % 32), b = y[2 + j % 16];
		int q = (int)(j < 16 ? b & 0xfu : b >> 4);
		return FMUL((float)(q - 8), fp16f(ld_u16(y)));
	} else if constexpr (K == TP_CUDA_Q5_0) {
		const uint8_t *y = p + r * (cols / 32) * 22 + (c / 32) * 22;
		unsigned j = (unsigned)(c % 32), b = y[6 + j % 16];
		uint32_t qh = (uint32_t)y[2] | (uint32_t)y[3] << 8 | (uint32_t)y[4] << 16 |
			      (uint32_t)y[5] << 24;
		int q = (int)((j < 16 ? b & 0xfu : b >> 4) | ((qh >> j) & 1u) << 4);
		return FMUL((float)(q - 16), fp16f(ld_u16(y)));
	} else {
		static_assert(K == TP_CUDA_Q4_K, "a kind without a decoder");
		const uint8_t *y = p + r * (cols / 256) * 144 + (c / 256) * 144;
		unsigned k = (unsigned)(c % 256), j = k / 32, l = k % 32;
		const uint8_t *sc12 = y + 4;
		int sc, m;
		if (j < 4) {
			sc = sc12[j] & 63;
			m = sc12[j + 4] & 63;
		} else {
			sc = (sc12[j + 4] & 0xf) | ((sc12[j - 4] >> 6) << 4);
			m = (sc12[j + 4] >> 4) | ((sc12[j] >> 6) << 4);
		}
		float d1 = FMUL(fp16f(ld_u16(y)), (float)sc);
		float m1 = FMUL(fp16f(ld_u16(y + 2)), (float)m);
		uint8_t qb = y[16 + (j / 2) * 32 + l];
		unsigned v = j % 2 ? (unsigned)qb >> 4 : qb & 0xfu;
		return FSUB(FMUL(d1, (float)v), m1);
	}
}

/* 8 weights of one group: its scale and zero read once (w += when add). */
HD void group8(const uint8_t *p, int bits, u64 group, u64 rows, u64 cols, u64 r, u64 c0,
	       float *w, bool add)
{
	u64 ngr = (cols + group - 1) / group, ng = rows * ngr, g = r * ngr + c0 / group;
	const uint8_t *zp = p + 2 * ng, *qp = zp + bits_bytes(ng, bits);
	float s = fp16f(ld_u16(p + 2 * g));
	int z = (int)bits_get(zp, g, bits);
	u64 i0 = r * cols + c0;
UNROLL
	for (int j = 0; j < 8; j++) {
		float v = FMUL((float)((int)bits_get(qp, i0 + j, bits) - z), s);
		w[j] = add ? FADD(w[j], v) : v;
	}
}

/*
 * w[0..7] = w[r][c0..c0+7] for c0 % 8 == 0 and c0 + 8 <= cols: the block
 * parameters the 8 share (every format's blocks are multiples of 8 along a
 * row) read once. The same values as wgetk, bit for bit.
 */
template <int K> HD void get8(const tp_cuda_wfmt &f, u64 r, u64 c0, float *w)
{
	const uint8_t *p = f.p;
	u64 rows = f.rows, cols = f.cols;
	if constexpr (K == TP_CUDA_INT8) {
		float s = ld_f32(p + 4 * r);
		const uint8_t *q = p + 4 * rows + r * cols + c0;
UNROLL
		for (int j = 0; j < 8; j++)
			w[j] = FMUL((float)(int8_t)q[j], s);
	} else if constexpr (K == TP_CUDA_NF4 || K == TP_CUDA_NF4_DQ) {
		u64 i0 = r * cols + c0, nb = (rows * cols + 63) / 64, b = i0 / 64;
		if (i0 % 8) { /* cols % 8 != 0: blocks fall across the 8 */
UNROLL
			for (int j = 0; j < 8; j++)
				w[j] = wgetk<K>(f, r, c0 + j);
			return;
		}
		const uint8_t *nib;
		float amax;
		if constexpr (K == TP_CUDA_NF4) {
			amax = ld_f32(p + 4 * b);
			nib = p + 4 * nb;
		} else {
			u64 nb2 = (nb + 255) / 256;
			const uint8_t *q8 = p + 4 + 4 * nb2;
			amax = FADD(FMUL(DQ_CODE(q8[b]), ld_f32(p + 4 + 4 * (b / 256))), ld_f32(p));
			nib = q8 + nb;
		}
UNROLL
		for (int j = 0; j < 8; j += 2) {
			uint8_t by = nib[(i0 + j) / 2];
			w[j] = FMUL(NF4_CODE(by >> 4), amax);
			w[j + 1] = FMUL(NF4_CODE(by & 0xfu), amax);
		}
	} else if constexpr (K == TP_CUDA_GROUP) {
		if (f.group % 8) {
UNROLL
			for (int j = 0; j < 8; j++)
				w[j] = wgetk<K>(f, r, c0 + j);
			return;
		}
		group8(p, f.bits, f.group, rows, cols, r, c0, w, false);
	} else if constexpr (K == TP_CUDA_RESIDUAL) {
		group8(p, 4, 128, rows, cols, r, c0, w, false);
		group8(p + f.off2, 2, 128, rows, cols, r, c0, w, true);
	} else if constexpr (K == TP_CUDA_Q8_0) {
		const uint8_t *y = p + r * (cols / 32) * 34 + (c0 / 32) * 34;
		float d = fp16f(ld_u16(y));
UNROLL
		for (int j = 0; j < 8; j++)
			w[j] = FMUL((float)(int8_t)y[2 + c0 % 32 + j], d);
	} else if constexpr (K == TP_CUDA_Q4_0 || K == TP_CUDA_Q5_0) {
		const uint8_t *y = p + r * (cols / 32) * (K == TP_CUDA_Q4_0 ? 18 : 22) +
				   (c0 / 32) * (K == TP_CUDA_Q4_0 ? 18 : 22);
		float d = fp16f(ld_u16(y));
		unsigned j0 = (unsigned)(c0 % 32), sh = j0 < 16 ? 0 : 4;
		uint32_t qh = 0;
		const uint8_t *qs = y + 2;
		if constexpr (K == TP_CUDA_Q5_0) {
			qh = (uint32_t)y[2] | (uint32_t)y[3] << 8 | (uint32_t)y[4] << 16 |
			     (uint32_t)y[5] << 24;
			qs = y + 6;
		}
UNROLL
		for (int j = 0; j < 8; j++) {
			unsigned jj = j0 + (unsigned)j;
			int q = (int)((qs[jj % 16] >> sh) & 0xfu);
			if constexpr (K == TP_CUDA_Q5_0)
				q |= (int)((qh >> jj) & 1u) << 4;
			w[j] = FMUL((float)(q - (K == TP_CUDA_Q4_0 ? 8 : 16)), d);
		}
	} else if constexpr (K == TP_CUDA_Q4_K) {
		const uint8_t *y = p + r * (cols / 256) * 144 + (c0 / 256) * 144;
		unsigned k = (unsigned)(c0 % 256), jb = k / 32, l0 = k % 32;
		const uint8_t *sc12 = y + 4;
		int sc, m;
		if (jb < 4) {
			sc = sc12[jb] & 63;
			m = sc12[jb + 4] & 63;
		} else {
			sc = (sc12[jb + 4] & 0xf) | ((sc12[jb - 4] >> 6) << 4);
			m = (sc12[jb + 4] >> 4) | ((sc12[jb] >> 6) << 4);
		}
		float d1 = FMUL(fp16f(ld_u16(y)), (float)sc);
		float m1 = FMUL(fp16f(ld_u16(y + 2)), (float)m);
		const uint8_t *q = y + 16 + (jb / 2) * 32 + l0;
		unsigned sh = jb % 2 ? 4 : 0;
UNROLL
		for (int j = 0; j < 8; j++)
			w[j] = FSUB(FMUL(d1, (float)((q[j] >> sh) & 0xfu)), m1);
	} else {
UNROLL
		for (int j = 0; j < 8; j++)
			w[j] = wgetk<K>(f, r, c0 + j);
	}
}

/*
 * 32 columns from one 16-byte load of 4-bit codes: the GEMV's path for
 * rtn4_gG (G a multiple of 32) and nf4 / nf4_dq when cols % 32 == 0 (so
 * c0 % 32 == 0 puts the 32 codes in one group or 64-block, and their 16
 * bytes start at a multiple of 16 from the code stream). On the device
 * the stream must be 16-byte aligned (wide_ok); the host copies the bytes.
 * The same values as wgetk, bit for bit.
 */
template <int K> HD constexpr bool wide_kind()
{
	return K == TP_CUDA_GROUP || K == TP_CUDA_NF4 || K == TP_CUDA_NF4_DQ;
}

/* Where the 4-bit codes of f start. */
template <int K> HD const uint8_t *wide_codes(const tp_cuda_wfmt &f)
{
	u64 rows = f.rows, cols = f.cols;
	if constexpr (K == TP_CUDA_GROUP) {
		u64 ng = rows * ((cols + f.group - 1) / f.group);
		return f.p + 2 * ng + bits_bytes(ng, 4);
	} else {
		u64 nb = (rows * cols + 63) / 64;
		if constexpr (K == TP_CUDA_NF4)
			return f.p + 4 * nb;
		else
			return f.p + 4 + 4 * ((nb + 255) / 256) + nb;
	}
}

/* The layout allows 32 columns per load (alignment aside). */
template <int K> HD bool wide_shape(const tp_cuda_wfmt &f)
{
	if constexpr (!wide_kind<K>())
		return false;
	else if constexpr (K == TP_CUDA_GROUP)
		return f.cols % 32 == 0 && f.bits == 4 && f.group % 32 == 0;
	else
		return f.cols % 32 == 0;
}

HD void ld16(const uint8_t *p, uint32_t *wd)
{
#ifdef __CUDA_ARCH__
	uint4 v = *(const uint4 *)p;
	wd[0] = v.x;
	wd[1] = v.y;
	wd[2] = v.z;
	wd[3] = v.w;
#else
	for (int i = 0; i < 4; i++)
		wd[i] = (uint32_t)p[4 * i] | (uint32_t)p[4 * i + 1] << 8 |
			(uint32_t)p[4 * i + 2] << 16 | (uint32_t)p[4 * i + 3] << 24;
#endif
}

template <int K> HD void get32(const tp_cuda_wfmt &f, u64 r, u64 c0, float *w)
{
	const uint8_t *p = f.p;
	u64 rows = f.rows, cols = f.cols, i0 = r * cols + c0;
	uint32_t wd[4];
	ld16(wide_codes<K>(f) + i0 / 2, wd);
	if constexpr (K == TP_CUDA_GROUP) {
		/* LSB first: code j is nibble j % 8 of word j / 8 */
		u64 ngr = (cols + f.group - 1) / f.group, ng = rows * ngr, g = r * ngr + c0 / f.group;
		float s = fp16f(ld_u16(p + 2 * g));
		int z = (int)bits_get(p + 2 * ng, g, 4);
UNROLL
		for (int j = 0; j < 32; j++)
			w[j] = FMUL((float)((int)((wd[j / 8] >> (4 * (j % 8))) & 0xfu) - z), s);
	} else {
		u64 b = i0 / 64;
		float amax;
		if constexpr (K == TP_CUDA_NF4) {
			amax = ld_f32(p + 4 * b);
		} else {
			u64 nb = (rows * cols + 63) / 64, nb2 = (nb + 255) / 256;
			const uint8_t *q8 = p + 4 + 4 * nb2;
			amax = FADD(FMUL(DQ_CODE(q8[b]), ld_f32(p + 4 + 4 * (b / 256))), ld_f32(p));
		}
		/* byte j / 2 holds code j in its high nibble, j + 1 in its low */
UNROLL
		for (int j = 0; j < 32; j += 2) {
			unsigned by = (wd[j / 8] >> (8 * ((j / 2) % 4))) & 0xffu;
			w[j] = FMUL(NF4_CODE(by >> 4), amax);
			w[j + 1] = FMUL(NF4_CODE(by & 0xfu), amax);
		}
	}
}

/* Rows r0..r1 as wgetk / get8 give them (wide: get32 where wide_shape):
 * the host runs it for the tests. */
template <int K> HD void dequant_row(const tp_cuda_wfmt &f, u64 r, float *out, bool wide)
{
	u64 c = 0;
	if constexpr (wide_kind<K>())
		if (wide && wide_shape<K>(f))
			for (; c + 32 <= f.cols; c += 32)
				get32<K>(f, r, c, out + c);
	for (; c + 8 <= f.cols; c += 8)
		get8<K>(f, r, c, out + c);
	for (; c < f.cols; c++)
		out[c] = wgetk<K>(f, r, c);
}

template <int K> __global__ void k_dequantize(tp_cuda_wfmt f, u64 r0, u64 r1, float *out)
{
	u64 total = (r1 - r0) * f.cols;
	for (u64 i = blockIdx.x * (u64)blockDim.x + threadIdx.x; i < total;
	     i += (u64)gridDim.x * blockDim.x)
		out[i] = wgetk<K>(f, r0 + i / f.cols, i % f.cols);
}

/* ---- products ----------------------------------------------------------- */

#define GEMV_WARPS 8

/* One warp per output row; lane l takes 8 consecutive columns of every
 * 256 (a warp reads one contiguous stretch of the row per step), then the
 * lanes' sums are added pairwise. */
template <int K> __global__ void k_gemv(tp_cuda_wfmt f, const float *bias, const float *x,
					float *y)
{
	u64 r = (u64)blockIdx.x * GEMV_WARPS + threadIdx.x / 32;
	unsigned lane = threadIdx.x % 32;
	if (r >= f.rows)
		return;
	float acc = 0.0f;
	u64 full = f.cols / 8 * 8;
	bool wide = false;
	if constexpr (wide_kind<K>())
		/* 16-byte loads: lane l takes 32 columns of every 1024 */
		wide = wide_shape<K>(f) && ((uintptr_t)wide_codes<K>(f) & 15u) == 0 &&
		       ((uintptr_t)x & 15u) == 0;
	if (wide) {
		for (u64 c0 = (u64)lane * 32; c0 < f.cols; c0 += 1024) {
			float w[32];
			get32<K>(f, r, c0, w);
			const float4 *xv = (const float4 *)(x + c0);
UNROLL
			for (int j = 0; j < 8; j++) {
				float4 v = xv[j];
				acc += v.x * w[4 * j] + v.y * w[4 * j + 1] + v.z * w[4 * j + 2] +
				       v.w * w[4 * j + 3];
			}
		}
	} else {
		for (u64 c0 = (u64)lane * 8; c0 < full; c0 += 256) {
			float w[8];
			get8<K>(f, r, c0, w);
UNROLL
			for (int j = 0; j < 8; j++)
				acc += x[c0 + j] * w[j];
		}
		for (u64 c = full + lane; c < f.cols; c += 32)
			acc += x[c] * wgetk<K>(f, r, c);
	}
	for (int o = 16; o > 0; o /= 2)
		acc += __shfl_xor_sync(0xffffffffu, acc, o);
	if (lane == 0)
		y[r] = acc + (bias ? bias[r] : 0.0f);
}

#define TM 64 /* tokens per tile */
#define TN 64 /* output rows per tile */
#define TK 16

/* 256 threads, each 4 tokens x 4 rows of a 64 x 64 tile; x and w tiles of
 * TK columns through shared memory, w decoded 8 columns at a time as it is
 * loaded. */
template <int K>
__global__ void __launch_bounds__(256) k_gemm(tp_cuda_wfmt f, const float *bias, const float *x,
					       u64 n, float *y, u64 ldy)
{
	__shared__ float xs[TK][TM + 4];
	__shared__ float ws[TK][TN + 4];
	u64 t0 = (u64)blockIdx.y * TM, r0 = (u64)blockIdx.x * TN;
	unsigned tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
	float acc[4][4] = {};
	for (u64 k0 = 0; k0 < f.cols; k0 += TK) {
		for (unsigned i = tid; i < TM * TK; i += 256) {
			unsigned row = i / TK, kk = i % TK;
			u64 t = t0 + row, c = k0 + kk;
			xs[kk][row] = t < n && c < f.cols ? x[t * f.cols + c] : 0.0f;
		}
		if (tid < TN * TK / 8) {
			unsigned row = tid / (TK / 8), part = tid % (TK / 8);
			u64 r = r0 + row, c0 = k0 + part * 8;
			float w[8];
			if (r < f.rows && c0 + 8 <= f.cols) {
				get8<K>(f, r, c0, w);
			} else {
UNROLL
				for (int j = 0; j < 8; j++)
					w[j] = r < f.rows && c0 + j < f.cols ? wgetk<K>(f, r, c0 + j)
									     : 0.0f;
			}
UNROLL
			for (int j = 0; j < 8; j++)
				ws[part * 8 + j][row] = w[j];
		}
		__syncthreads();
UNROLL
		for (unsigned kk = 0; kk < TK; kk++) {
			float a[4], b[4];
UNROLL
			for (int i = 0; i < 4; i++) {
				a[i] = xs[kk][ty * 4 + i];
				b[i] = ws[kk][tx * 4 + i];
			}
UNROLL
			for (int i = 0; i < 4; i++)
UNROLL
				for (int j = 0; j < 4; j++)
					acc[i][j] += a[i] * b[j];
		}
		__syncthreads();
	}
	for (int i = 0; i < 4; i++) {
		u64 t = t0 + ty * 4 + i;
		if (t >= n)
			continue;
		for (int j = 0; j < 4; j++) {
			u64 r = r0 + tx * 4 + j;
			if (r < f.rows)
				y[t * ldy + r] = acc[i][j] + (bias ? bias[r] : 0.0f);
		}
	}
}

/* Calls FN<kind> for the runtime kind, as `return FN<K> ARGS;`. */
#define DISPATCH(kind, CALL)                                                   \
	switch (kind) {                                                        \
	case TP_CUDA_F32: CALL(TP_CUDA_F32);                                   \
	case TP_CUDA_FP16: CALL(TP_CUDA_FP16);                                 \
	case TP_CUDA_BF16: CALL(TP_CUDA_BF16);                                 \
	case TP_CUDA_INT8: CALL(TP_CUDA_INT8);                                 \
	case TP_CUDA_NF4: CALL(TP_CUDA_NF4);                                   \
	case TP_CUDA_NF4_DQ: CALL(TP_CUDA_NF4_DQ);                             \
	case TP_CUDA_GROUP: CALL(TP_CUDA_GROUP);                               \
	case TP_CUDA_RESIDUAL: CALL(TP_CUDA_RESIDUAL);                         \
	case TP_CUDA_Q8_0: CALL(TP_CUDA_Q8_0);                                 \
	case TP_CUDA_Q4_0: CALL(TP_CUDA_Q4_0);                                 \
	case TP_CUDA_Q5_0: CALL(TP_CUDA_Q5_0);                                 \
	case TP_CUDA_Q4_K: CALL(TP_CUDA_Q4_K);                                 \
	}

/* ---- transformer pieces -------------------------------------------------- */

__global__ void k_embed(const float *embed, const int32_t *ids, u64 n, u64 dim, float *x)
{
	for (u64 i = blockIdx.x * (u64)blockDim.x + threadIdx.x; i < n * dim;
	     i += (u64)gridDim.x * blockDim.x)
		x[i] = embed[(u64)ids[i / dim] * dim + i % dim];
}

/* One block of 256 per row; the sum of squares in double as forward.c. */
__global__ void k_rms_norm(const float *x, const float *w, u64 dim, double eps, float *out)
{
	__shared__ double part[256];
	const float *xr = x + blockIdx.x * dim;
	float *o = out + blockIdx.x * dim;
	double ss = 0;
	for (u64 i = threadIdx.x; i < dim; i += blockDim.x)
		ss += (double)xr[i] * xr[i];
	part[threadIdx.x] = ss;
	__syncthreads();
	for (unsigned s = blockDim.x / 2; s > 0; s /= 2) {
		if (threadIdx.x < s)
			part[threadIdx.x] += part[threadIdx.x + s];
		__syncthreads();
	}
	float r = (float)(1.0 / sqrt((double)(float)(part[0] / (double)dim) + eps));
	for (u64 i = threadIdx.x; i < dim; i += blockDim.x)
		o[i] = __fmul_rn(w[i], __fmul_rn(xr[i], r));
}

__global__ void k_rope(float *v, u64 n, u64 nheads, u64 hd, u64 pos0, double pos_div,
		       const float *inv_freq)
{
	u64 half = hd / 2, total = n * nheads * half;
	for (u64 i = blockIdx.x * (u64)blockDim.x + threadIdx.x; i < total;
	     i += (u64)gridDim.x * blockDim.x) {
		u64 d = i % half, th = i / half, t = th / nheads;
		float pos = (float)((double)(pos0 + t) / pos_div);
		float ang = __fmul_rn(pos, inv_freq[d]), cs = cosf(ang), sn = sinf(ang);
		float *p = v + th * hd;
		float a = p[d], b = p[d + half];
		p[d] = __fsub_rn(__fmul_rn(a, cs), __fmul_rn(b, sn));
		p[d + half] = __fadd_rn(__fmul_rn(b, cs), __fmul_rn(a, sn));
	}
}

__global__ void k_cache_store(float *k, float *v, const float *kb, const float *vb, u64 n,
			      u64 kv_heads, u64 hd, u64 max_ctx, u64 pos)
{
	u64 total = n * kv_heads * hd;
	for (u64 i = blockIdx.x * (u64)blockDim.x + threadIdx.x; i < total;
	     i += (u64)gridDim.x * blockDim.x) {
		u64 d = i % hd, g = (i / hd) % kv_heads, t = i / hd / kv_heads;
		u64 at = (g * max_ctx + pos + t) * hd + d;
		k[at] = kb[i];
		v[at] = vb[i];
	}
}

#define ATT_THREADS 128
#define ATT_MAX_HD 256

/* Block (head h, query t): scores over positions < pos0 + t + 1 in dynamic
 * shared memory (a warp per key), max, exp and the sum in double, then the
 * weighted values (a thread per dimension). */
__global__ void __launch_bounds__(ATT_THREADS) k_attention(const float *q, const float *k,
							   const float *v, float *att, u64 heads,
							   u64 kv_heads, u64 hd, u64 max_ctx,
							   u64 pos0)
{
	extern __shared__ float s[];
	__shared__ float qs[ATT_MAX_HD];
	__shared__ float fred[ATT_THREADS / 32];
	__shared__ double dred[ATT_THREADS / 32];
	u64 h = blockIdx.x, t = blockIdx.y, g = h / (heads / kv_heads);
	u64 len = pos0 + t + 1;
	const float *K = k + g * max_ctx * hd, *V = v + g * max_ctx * hd;
	unsigned tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
	float scale = 1.0f / sqrtf((float)hd);
	for (u64 d = tid; d < hd; d += ATT_THREADS)
		qs[d] = q[(t * heads + h) * hd + d];
	__syncthreads();
	for (u64 p = warp; p < len; p += ATT_THREADS / 32) {
		float dot = 0.0f;
		for (u64 d = lane; d < hd; d += 32)
			dot += qs[d] * K[p * hd + d];
		for (int o = 16; o > 0; o /= 2)
			dot += __shfl_xor_sync(0xffffffffu, dot, o);
		if (lane == 0)
			s[p] = __fmul_rn(dot, scale);
	}
	__syncthreads();
	float mx = -INFINITY;
	for (u64 p = tid; p < len; p += ATT_THREADS)
		mx = fmaxf(mx, s[p]);
	for (int o = 16; o > 0; o /= 2)
		mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
	if (lane == 0)
		fred[warp] = mx;
	__syncthreads();
	mx = fred[0];
	for (int w = 1; w < ATT_THREADS / 32; w++)
		mx = fmaxf(mx, fred[w]);
	double sum = 0;
	for (u64 p = tid; p < len; p += ATT_THREADS) {
		float e = expf(__fsub_rn(s[p], mx));
		s[p] = e;
		sum += e;
	}
	for (int o = 16; o > 0; o /= 2)
		sum += __shfl_xor_sync(0xffffffffu, sum, o);
	if (lane == 0)
		dred[warp] = sum;
	__syncthreads();
	sum = 0;
	for (int w = 0; w < ATT_THREADS / 32; w++)
		sum += dred[w];
	float inv = (float)(1.0 / sum);
	for (u64 d = tid; d < hd; d += ATT_THREADS) {
		float o = 0.0f;
		for (u64 p = 0; p < len; p++)
			o += __fmul_rn(s[p], inv) * V[p * hd + d];
		att[(t * heads + h) * hd + d] = o;
	}
}

__global__ void k_swiglu(float *g, const float *u, u64 count)
{
	for (u64 i = blockIdx.x * (u64)blockDim.x + threadIdx.x; i < count;
	     i += (u64)gridDim.x * blockDim.x)
		g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

__global__ void k_add(float *x, const float *d, u64 count)
{
	for (u64 i = blockIdx.x * (u64)blockDim.x + threadIdx.x; i < count;
	     i += (u64)gridDim.x * blockDim.x)
		x[i] += d[i];
}

/* ---- calibration: GPTQ's Hessian ------------------------------------------
 * h[j][k] += sum_t x[t][j] x[t][k] for k >= j (the upper triangle), each
 * cell summed in double over the rows in order, as optimize/calib.c's
 * capture sums it: a float product is exact in double, so the one rounding
 * per row is the addition's, fused or not, and the sums equal the CPU's
 * bit for bit. A block of HT x HT threads owns a tile of cells and stages
 * HR rows of the two column strips it reads in shared memory. */

#define HT 16
#define HR 32

HD double hess_step(double acc, float a, float b)
{
	return acc + (double)a * (double)b;
}

__global__ void __launch_bounds__(HT * HT) k_hessian_add(const float *x, u64 n, u64 cols,
							  double *h)
{
	__shared__ float xj[HR][HT], xk[HR][HT];
	u64 j0 = (u64)blockIdx.y * HT, k0 = (u64)blockIdx.x * HT;
	if (k0 + HT <= j0) /* the whole tile is under the diagonal */
		return;
	unsigned ty = threadIdx.y, tx = threadIdx.x;
	u64 j = j0 + ty, k = k0 + tx;
	bool mine = j < cols && k < cols && k >= j;
	double acc = mine ? h[j * cols + k] : 0.0;
	for (u64 t0 = 0; t0 < n; t0 += HR) {
		for (unsigned i = ty * HT + tx; i < HR * HT; i += HT * HT) {
			unsigned r = i / HT, c = i % HT;
			u64 t = t0 + r;
			xj[r][c] = t < n && j0 + c < cols ? x[t * cols + j0 + c] : 0.0f;
			xk[r][c] = t < n && k0 + c < cols ? x[t * cols + k0 + c] : 0.0f;
		}
		__syncthreads();
		u64 rows = n - t0 < HR ? n - t0 : HR;
		if (mine)
			for (u64 r = 0; r < rows; r++)
				acc = hess_step(acc, xj[r][ty], xk[r][tx]);
		__syncthreads();
	}
	if (mine)
		h[j * cols + k] = acc;
}

/* ---- launchers ---------------------------------------------------------- */

/* Scores of up to this many positions fit next to the static buffers in
 * the 48 KiB of shared memory every architecture gives without opt-in. */
#define ATT_MAX_CTX 10240

extern "C" {

int tp_cuda_k_set_codes(const float nf4[16], const float dq[256])
{
	cudaError_t e = cudaMemcpyToSymbol(c_nf4, nf4, 16 * sizeof(float));
	if (e == cudaSuccess)
		e = cudaMemcpyToSymbol(c_dq, dq, 256 * sizeof(float));
	return (int)e;
}

void tp_cuda_k_set_codes_host(const float nf4[16], const float dq[256])
{
	memcpy(h_nf4, nf4, sizeof(h_nf4));
	memcpy(h_dq, dq, sizeof(h_dq));
}

void tp_cuda_k_dequantize_host(const tp_cuda_wfmt *f, uint64_t r0, uint64_t r1, float *out,
			       int wide)
{
	for (u64 r = r0; r < r1; r++) {
		float *o = out + (r - r0) * f->cols;
#define HOST_ROW(K)                        \
	dequant_row<K>(*f, r, o, wide != 0); \
	break;
		DISPATCH(f->kind, HOST_ROW)
#undef HOST_ROW
	}
}

int tp_cuda_k_dequantize(const tp_cuda_wfmt *f, uint64_t r0, uint64_t r1, float *out)
{
	u64 total = (r1 - r0) * f->cols;
	if (total == 0)
		return 0;
#define LAUNCH(K)                                                                   \
	k_dequantize<K><<<blocks_for(total, 256), 256>>>(*f, r0, r1, out); \
	return launched();
	DISPATCH(f->kind, LAUNCH)
#undef LAUNCH
	return (int)cudaErrorInvalidValue;
}

int tp_cuda_k_linear(const tp_cuda_wfmt *f, const float *bias, const float *x, uint64_t n,
		     float *y, uint64_t ldy)
{
	if (n == 0 || f->rows == 0)
		return 0;
	if (n == 1) {
		unsigned blocks = (unsigned)((f->rows + GEMV_WARPS - 1) / GEMV_WARPS);
#define LAUNCH(K)                                                  \
	k_gemv<K><<<blocks, 32 * GEMV_WARPS>>>(*f, bias, x, y); \
	return launched();
		DISPATCH(f->kind, LAUNCH)
#undef LAUNCH
		return (int)cudaErrorInvalidValue;
	}
	if ((n + TM - 1) / TM > 65535)
		return (int)cudaErrorInvalidValue;
	dim3 grid((unsigned)((f->rows + TN - 1) / TN), (unsigned)((n + TM - 1) / TM));
#define LAUNCH(K)                                         \
	k_gemm<K><<<grid, 256>>>(*f, bias, x, n, y, ldy); \
	return launched();
	DISPATCH(f->kind, LAUNCH)
#undef LAUNCH
	return (int)cudaErrorInvalidValue;
}

int tp_cuda_k_embed(const float *embed, const int32_t *ids, uint64_t n, uint64_t dim, float *x)
{
	if (n * dim == 0)
		return 0;
	k_embed<<<blocks_for(n * dim, 256), 256>>>(embed, ids, n, dim, x);
	return launched();
}

int tp_cuda_k_rms_norm(const float *x, const float *w, uint64_t n, uint64_t dim, double eps,
		       float *out)
{
	if (n == 0)
		return 0;
	if (n > 0x7fffffffu)
		return (int)cudaErrorInvalidValue;
	k_rms_norm<<<(unsigned)n, 256>>>(x, w, dim, eps, out);
	return launched();
}

int tp_cuda_k_rope(float *v, uint64_t n, uint64_t nheads, uint64_t hd, uint64_t pos0,
		   double pos_div, const float *inv_freq)
{
	u64 total = n * nheads * (hd / 2);
	if (total == 0)
		return 0;
	k_rope<<<blocks_for(total, 256), 256>>>(v, n, nheads, hd, pos0, pos_div, inv_freq);
	return launched();
}

int tp_cuda_k_cache_store(float *k, float *v, const float *kb, const float *vb, uint64_t n,
			  uint64_t kv_heads, uint64_t hd, uint64_t max_ctx, uint64_t pos)
{
	u64 total = n * kv_heads * hd;
	if (total == 0)
		return 0;
	k_cache_store<<<blocks_for(total, 256), 256>>>(k, v, kb, vb, n, kv_heads, hd, max_ctx,
						       pos);
	return launched();
}

uint64_t tp_cuda_k_attention_max_ctx(void)
{
	return ATT_MAX_CTX;
}

int tp_cuda_k_attention(const float *q, const float *k, const float *v, float *att, uint64_t n,
			uint64_t heads, uint64_t kv_heads, uint64_t hd, uint64_t max_ctx,
			uint64_t pos0)
{
	if (n == 0)
		return 0;
	if (hd > ATT_MAX_HD || pos0 + n > ATT_MAX_CTX || n > 65535 || heads > 0x7fffffffu ||
	    kv_heads == 0 || heads % kv_heads)
		return (int)cudaErrorInvalidValue;
	dim3 grid((unsigned)heads, (unsigned)n);
	size_t shared = (size_t)(pos0 + n) * sizeof(float);
	k_attention<<<grid, ATT_THREADS, shared>>>(q, k, v, att, heads, kv_heads, hd, max_ctx,
						   pos0);
	return launched();
}

int tp_cuda_k_swiglu(float *g, const float *u, uint64_t count)
{
	if (count == 0)
		return 0;
	k_swiglu<<<blocks_for(count, 256), 256>>>(g, u, count);
	return launched();
}

int tp_cuda_k_add(float *x, const float *d, uint64_t count)
{
	if (count == 0)
		return 0;
	k_add<<<blocks_for(count, 256), 256>>>(x, d, count);
	return launched();
}

int tp_cuda_k_hessian_add(const float *x, uint64_t n, uint64_t cols, double *h)
{
	u64 tiles = (cols + HT - 1) / HT;
	if (n == 0 || cols == 0)
		return 0;
	if (tiles > 65535u)
		return (int)cudaErrorInvalidValue;
	k_hessian_add<<<dim3((unsigned)tiles, (unsigned)tiles), dim3(HT, HT)>>>(x, n, cols, h);
	return launched();
}

void tp_cuda_k_hessian_add_host(const float *x, uint64_t n, uint64_t cols, double *h)
{
	for (u64 j = 0; j < cols; j++)
		for (u64 k = j; k < cols; k++) {
			double acc = h[j * cols + k];
			for (u64 t = 0; t < n; t++)
				acc = hess_step(acc, x[t * cols + j], x[t * cols + k]);
			h[j * cols + k] = acc;
		}
}

} /* extern "C" */
