/*
 * tp-kernel-bench: speed and quality of the packed-format kernels
 * (optimize/kernels_*.c). A benchmark tool: it prints tables and asserts
 * nothing (scripts/bench-kernels.sh runs it).
 *
 *   tp-kernel-bench kernels [--threads 1,2] [--mib N] [--formats a,b] [--reps N]
 *       every format with a kernel (tp_quant_formats + tp_quant_kernel_find):
 *       GEMV (n = 1) GB/s of packed bytes on 4096x4096 and 11008x4096, the
 *       matrix repeated until N MiB (default 1024, past the last-level
 *       cache) so each pass reads DRAM, as a fraction of a STREAM-style read
 *       of an N MiB buffer, the two interleaved N times (default 5) at each
 *       thread count, best and median; GEMM GFLOP/s at n = 64 and 512 on
 *       4096x4096. Per CPU-second of each thread.
 *   tp-kernel-bench speed MODEL_DIR --format F|fp32 [--weights W]
 *       [--threads N] [--prefill N] [--decode N] [--reps N]
 *       prefill and decode tokens/s (tp_runtime_eval_speed) with the decoder
 *       layers packed in F (its kernel), best of reps.
 *   tp-kernel-bench ppl MODEL_DIR --format F --text T [--weights W]
 *       [--ctx N] [--threads N]
 *       perplexity and KL against the unquantized model of (a) F's
 *       dequantized weights in dense fp32 layers (what the widening path
 *       computes), (b) the packed layers through F's kernel and (c), for the
 *       ggml family, the same through its exact-mode kernel (fp32
 *       activations).
 * Exit 1 on errors, 2 on usage.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include "kernels_internal.h"
#include "tp_common.h"
#include "tp_optimize.h"
#include "tp_runtime.h"

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* CPU seconds of the whole process (all threads). */
static double cpu_s(void)
{
	struct rusage u;
	getrusage(RUSAGE_SELF, &u);
	return (double)u.ru_utime.tv_sec + 1e-6 * (double)u.ru_utime.tv_usec +
	       (double)u.ru_stime.tv_sec + 1e-6 * (double)u.ru_stime.tv_usec;
}

static int usage(void)
{
	fprintf(stderr,
		"usage: tp-kernel-bench kernels [--threads 1,2] [--mib N] [--formats a,b]"
		" [--reps N]\n"
		"       tp-kernel-bench speed MODEL_DIR --format F [--weights W] [--threads N]"
		" [--prefill N] [--decode N] [--reps N]\n"
		"       tp-kernel-bench ppl MODEL_DIR --format F --text T [--weights W]"
		" [--ctx N] [--threads N]\n");
	return 2;
}

/* ---- STREAM-style read ---------------------------------------------------- */

typedef struct {
	const float *buf;
	size_t n;
	double sum[64];
} sjob;

#if defined(__x86_64__) || defined(__i386__)
__attribute__((target("avx2"))) static double read_avx2(const float *p, size_t n)
{
	__m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
	size_t i = 0;
	for (; i + 32 <= n; i += 32) {
		/* 2 KiB ahead, as the decode kernels prefetch their next rows:
		 * the read then shows what memory gives, not only what the
		 * hardware prefetcher reaches on a busy machine. */
		_mm_prefetch((const char *)(p + i + 512), _MM_HINT_T0);
		_mm_prefetch((const char *)(p + i + 528), _MM_HINT_T0);
		a0 = _mm256_add_ps(a0, _mm256_loadu_ps(p + i));
		a1 = _mm256_add_ps(a1, _mm256_loadu_ps(p + i + 8));
		a2 = _mm256_add_ps(a2, _mm256_loadu_ps(p + i + 16));
		a3 = _mm256_add_ps(a3, _mm256_loadu_ps(p + i + 24));
	}
	float t[8];
	_mm256_storeu_ps(t, _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
	double s = 0;
	for (int k = 0; k < 8; k++)
		s += t[k];
	for (; i < n; i++)
		s += p[i];
	return s;
}
#endif

static double read_c(const float *p, size_t n)
{
	float a[8] = {0};
	size_t i = 0;
	for (; i + 8 <= n; i += 8)
		for (int k = 0; k < 8; k++)
			a[k] += p[i + k];
	double s = 0;
	for (int k = 0; k < 8; k++)
		s += a[k];
	for (; i < n; i++)
		s += p[i];
	return s;
}

static void stask(void *ctx, size_t i, size_t tasks)
{
	sjob *j = ctx;
	size_t per = (j->n / tasks + 63) / 64 * 64, a = i * per, b = a + per;
	if (a > j->n)
		a = j->n;
	if (b > j->n)
		b = j->n;
#if defined(__x86_64__) || defined(__i386__)
	if (__builtin_cpu_supports("avx2")) {
		j->sum[i] = read_avx2(j->buf + a, b - a);
		return;
	}
#endif
	j->sum[i] = read_c(j->buf + a, b - a);
}

/* One read of the whole buffer split across the pool: GB/s by wall clock,
 * and by CPU time per thread in *cpu_gbs. */
static double stream_once(const float *buf, size_t n, tp_pool *pool, double *cpu_gbs)
{
	size_t tasks = pool ? tp_pool_threads(pool) : 1;
	sjob j = {buf, n, {0}};
	double t0 = now_s(), c0 = cpu_s();
	tp_pool_run(pool, tasks, stask, &j);
	double dt = now_s() - t0;
	*cpu_gbs = (double)n * 4 / ((cpu_s() - c0) / (double)tasks) / 1e9;
	if (j.sum[0] == 12345.678)
		printf(" "); /* keep the sums alive */
	return (double)n * 4 / dt / 1e9;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

/* Best and median of v[n] (sorts v). */
static void best_median(double *v, size_t n, double *best, double *median)
{
	qsort(v, n, sizeof(*v), cmp_double);
	*best = v[n - 1];
	*median = n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* ---- kernels table ---------------------------------------------------------- */

static unsigned long long rng = 0x2545f4914f6cdd1dull;

static float gauss(void)
{
	double u[2];
	for (int k = 0; k < 2; k++) {
		rng ^= rng >> 12;
		rng ^= rng << 25;
		rng ^= rng >> 27;
		u[k] = (double)((rng * 0x2545f4914f6cdd1dull) >> 11) / 9007199254740992.0;
	}
	return (float)(0.02 * sqrt(-2.0 * log(u[0] + 1e-12)) * cos(6.283185307179586 * u[1]));
}

/* Layers of f over w (rows x cols) repeated until total >= bytes_min; the
 * count in *nl. */
static tp_linear **make_layers(const tp_quant_format *f, const float *w, size_t rows,
			       size_t cols, size_t bytes_min, size_t *nl)
{
	size_t psize = f->packed_size(rows, cols);
	size_t n = bytes_min / psize + 1;
	tp_linear **ls = calloc(n, sizeof(*ls));
	void *first = malloc(psize);
	/* Equal input statistics for the formats that need some
	 * (int4_sparse25 then drops each row's smallest |w|). */
	double *sq = malloc(cols * sizeof(double));
	for (size_t c = 0; sq && c < cols; c++)
		sq[c] = 1.0;
	tp_quant_calib calib = {.cols = cols, .nsamples = 1, .sq_sum = sq};
	if (!ls || !first || !sq || f->quantize(w, rows, cols, &calib, first) < 0) {
		free(ls);
		free(first);
		free(sq);
		return NULL;
	}
	free(sq);
	for (size_t i = 0; i < n; i++) {
		void *p = i == 0 ? first : malloc(psize);
		if (!p)
			break;
		if (i)
			memcpy(p, first, psize);
		if (tp_quant_linear_new(&ls[i], f, p, rows, cols, NULL) < 0) {
			free(p);
			break;
		}
		*nl = i + 1;
	}
	return ls;
}

static void free_layers(tp_linear **ls, size_t n)
{
	for (size_t i = 0; ls && i < n; i++)
		tp_linear_free(ls[i]);
	free(ls);
}

#define REPS_MAX 32

static int cmd_kernels(int argc, char **argv)
{
	const char *threads_arg = "1,2", *only = NULL;
	size_t mib = 1024;
	int reps = 5;
	for (int i = 0; i < argc; i++) {
		if (i + 1 >= argc)
			return usage();
		if (strcmp(argv[i], "--threads") == 0)
			threads_arg = argv[++i];
		else if (strcmp(argv[i], "--mib") == 0)
			mib = strtoul(argv[++i], NULL, 10);
		else if (strcmp(argv[i], "--formats") == 0)
			only = argv[++i];
		else if (strcmp(argv[i], "--reps") == 0)
			reps = atoi(argv[++i]);
		else
			return usage();
	}
	if (reps < 1 || reps > REPS_MAX)
		return usage();
	unsigned threads[8];
	size_t nt = 0;
	for (const char *p = threads_arg; *p && nt < 8;) {
		threads[nt++] = (unsigned)strtoul(p, NULL, 10);
		p = strchr(p, ',');
		if (!p)
			break;
		p++;
	}
	size_t bytes = mib << 20, sn = bytes / 4;
	float *sbuf = malloc(bytes);
	const size_t R1 = 4096, R2 = 11008, C = 4096, NMAX = 512;
	float *w = malloc(R2 * C * sizeof(float)), *x = malloc(NMAX * C * sizeof(float));
	float *y = malloc(NMAX * R2 * sizeof(float));
	if (!sbuf || !w || !x || !y) {
		fprintf(stderr, "tp-kernel-bench: out of memory\n");
		return 1;
	}
	for (size_t i = 0; i < sn; i++)
		sbuf[i] = (float)(i & 1023);
	for (size_t i = 0; i < R2 * C; i++)
		w[i] = gauss();
	for (size_t i = 0; i < NMAX * C; i++)
		x[i] = 50 * gauss();
	tp_pool *pools[8] = {NULL};
	for (size_t k = 0; k < nt; k++)
		if (threads[k] > 1 && tp_pool_new(&pools[k], threads[k]) < 0) {
			fprintf(stderr, "tp-kernel-bench: %s\n", tp_error_last());
			return 1;
		}
	long llc = sysconf(_SC_LEVEL3_CACHE_SIZE);
	printf("# last-level cache %ld MiB; matrices repeated to %zu MiB%s\n",
	       llc > 0 ? llc >> 20 : -1, mib,
	       llc > 0 && (size_t)llc >= bytes / 2 ? " (NOT well past it: pass a larger --mib)" : "");
	printf("# Per format and thread count, %d repetitions of: a STREAM-style read of %zu MiB\n"
	       "# (sum of floats, AVX2, software prefetch 2 KiB ahead), one GEMV (n = 1) pass\n"
	       "# over the 4096x4096 layers, one over the 11008x4096 ones. GB/s are per\n"
	       "# CPU-second of each thread (a busy machine disturbs them less than wall\n"
	       "# clock); %%strm = the GEMV's packed GB/s over the\n"
	       "# STREAM read's of the same repetition; b = best, m = median of the repetitions.\n"
	       "# GEMM: GFLOP (2*rows*cols*n) per CPU-second per thread, 4096x4096, best of 2.\n",
	       reps, mib);
	printf("%-9s %-22s %3s %5s %5s %6s %6s %5s %5s %6s %6s %5s %5s %7s %7s\n", "format", "kernel",
	       "thr", "strmB", "strmM", "4096b", "4096m", "%b", "%m", "11008b", "11008m", "%b", "%m",
	       "gemm64", "gemm512");
	for (const tp_quant_format *const *fp = tp_quant_formats(); *fp; fp++) {
		const tp_quant_format *f = *fp;
		const tp_quant_kernel *k = tp_quant_kernel_find(f);
		if (!k)
			continue;
		if (only) {
			size_t len = strlen(f->name);
			const char *p = strstr(only, f->name);
			if (!p || (p != only && p[-1] != ',') || (p[len] && p[len] != ','))
				continue;
		}
		tp_linear **l1 = NULL, **l2 = NULL;
		size_t n1 = 0, n2 = 0;
		l1 = make_layers(f, w, R1, C, bytes, &n1);
		l2 = make_layers(f, w, R2, C, bytes, &n2);
		if (!l1 || !l2 || !n1 || !n2) {
			printf("%-10s (could not be built: %s)\n", f->name, tp_error_last());
			free_layers(l1, n1);
			free_layers(l2, n2);
			continue;
		}
		double pb1 = (double)f->packed_size(R1, C), pb2 = (double)f->packed_size(R2, C);
		for (size_t t = 0; t < nt; t++) {
			tp_pool *pool = pools[t];
			double per = (double)threads[t];
			double sg[REPS_MAX], g[2][REPS_MAX], ratio[2][REPS_MAX];
			for (int rep = 0; rep < reps; rep++) {
				stream_once(sbuf, sn, pool, &sg[rep]);
				for (int s = 0; s < 2; s++) {
					tp_linear **ls = s ? l2 : l1;
					size_t nl = s ? n2 : n1;
					double pb = s ? pb2 : pb1, c0 = cpu_s();
					for (size_t i = 0; i < nl; i++)
						tp_linear_forward(ls[i], x, 1, y, pool);
					g[s][rep] = pb * (double)nl / ((cpu_s() - c0) / per) / 1e9;
					ratio[s][rep] = g[s][rep] / sg[rep];
				}
			}
			double sb, sm, gb[2], gm[2], rb[2], rm[2];
			best_median(sg, (size_t)reps, &sb, &sm);
			for (int s = 0; s < 2; s++) {
				best_median(g[s], (size_t)reps, &gb[s], &gm[s]);
				best_median(ratio[s], (size_t)reps, &rb[s], &rm[s]);
			}
			double gf[2] = {0, 0};
			static const size_t ns[2] = {64, 512};
			for (int s = 0; s < 2; s++)
				for (int rep = 0; rep < 2; rep++) {
					double c0 = cpu_s();
					tp_linear_forward(l1[0], x, ns[s], y, pool);
					double v = 2.0 * R1 * C * (double)ns[s] / ((cpu_s() - c0) / per) / 1e9;
					if (v > gf[s])
						gf[s] = v;
				}
			printf("%-9s %-22s %3u %5.1f %5.1f %6.2f %6.2f %4.0f%% %4.0f%% %6.2f %6.2f %4.0f%% "
			       "%4.0f%% %7.1f %7.1f\n",
			       f->name, k->name, threads[t], sb, sm, gb[0], gm[0], 100 * rb[0],
			       100 * rm[0], gb[1], gm[1], 100 * rb[1], 100 * rm[1], gf[0], gf[1]);
			fflush(stdout);
		}
		free_layers(l1, n1);
		free_layers(l2, n2);
	}
	for (size_t k = 0; k < nt; k++)
		tp_pool_free(pools[k]);
	free(sbuf);
	free(w);
	free(x);
	free(y);
	return 0;
}

/* ---- model commands ----------------------------------------------------------- */

/* Dense fp32 layers of f's dequantized weights (the widening path's values). */
static int make_fake(void *ctx, const char *name, const float *w, const float *bias,
		     size_t out_dim, size_t in_dim, tp_linear **made)
{
	const tp_quant_format *f = ctx;
	if (!tp_optimize_is_decoder_linear(name))
		return TP_ENOTFOUND;
	void *packed = malloc(f->packed_size(out_dim, in_dim) + 1);
	float *deq = malloc(out_dim * in_dim * sizeof(float) + 1);
	int rc = packed && deq ? f->quantize(w, out_dim, in_dim, NULL, packed)
			       : tp_error_set(TP_ENOMEM, "%s: out of memory", name);
	if (rc >= 0) {
		f->dequantize(packed, out_dim, in_dim, deq);
		rc = tp_linear_dense_new(made, deq, bias, out_dim, in_dim);
	}
	free(packed);
	free(deq);
	return rc;
}

/* Packed layers through the exact-mode kernel (fp32 activations,
 * tp_quant_kernel_ggml_exact), which tp_quant_kernel_find does not hand out:
 * a layer of this tool's own. */
typedef struct {
	tp_linear base;
	const tp_quant_kernel *k;
	void *packed;
	float *bias;
} xlinear;

static void xforward(const tp_linear *l, const float *x, size_t n, float *y, tp_pool *pool)
{
	(void)pool;
	const xlinear *q = (const xlinear *)l;
	q->k->rows(q->packed, l->out, l->in, 0, l->out, x, n, y, l->out);
	for (size_t t = 0; q->bias && t < n; t++)
		for (size_t r = 0; r < l->out; r++)
			y[t * l->out + r] += q->bias[r];
}

static void xfree(tp_linear *l)
{
	xlinear *q = (xlinear *)l;
	if (q) {
		free(q->packed);
		free(q->bias);
		free(q);
	}
}

static const tp_linear_ops xops = {xforward, xfree, NULL};

static int make_exact(void *ctx, const char *name, const float *w, const float *bias,
		      size_t out_dim, size_t in_dim, tp_linear **made)
{
	const tp_quant_format *f = ctx;
	if (!tp_optimize_is_decoder_linear(name))
		return TP_ENOTFOUND;
	xlinear *q = calloc(1, sizeof(*q));
	if (!q || !(q->packed = malloc(f->packed_size(out_dim, in_dim) + 1)) ||
	    (bias && !(q->bias = malloc(out_dim * sizeof(float))))) {
		xfree((tp_linear *)q);
		return tp_error_set(TP_ENOMEM, "%s: out of memory", name);
	}
	q->base.ops = &xops;
	q->base.in = in_dim;
	q->base.out = out_dim;
	q->k = tp_quant_kernel_ggml_exact(f->name, tp_quant_kernel_use_avx2());
	if (bias)
		memcpy(q->bias, bias, out_dim * sizeof(float));
	int rc = q->k ? f->quantize(w, out_dim, in_dim, NULL, q->packed)
		      : tp_error_set(TP_ENOTFOUND, "%s has no exact-mode kernel", f->name);
	if (rc < 0) {
		xfree((tp_linear *)q);
		return rc;
	}
	*made = &q->base;
	return 0;
}

typedef enum { LOAD_SOURCE, LOAD_PACKED, LOAD_FAKE, LOAD_EXACT } load_kind;

static int load(tp_model **m, const char *dir, const char *weights, unsigned threads,
		const tp_quant_format *f, load_kind kind)
{
	tp_optimize_packed_ctx pc = {.format = f};
	tp_model_opts mo = {.weights = weights, .threads = threads};
	if (kind == LOAD_PACKED && f) {
		mo.make_linear = tp_optimize_make_linear_packed;
		mo.make_linear_ctx = &pc;
	} else if ((kind == LOAD_FAKE || kind == LOAD_EXACT) && f) {
		mo.make_linear = kind == LOAD_FAKE ? make_fake : make_exact;
		mo.make_linear_ctx = (void *)f;
	}
	return tp_model_load(m, dir, &mo);
}

static int cmd_model(bool speed, int argc, char **argv)
{
	const char *dir = NULL, *format = NULL, *weights = NULL, *text = NULL;
	unsigned long threads = 1, prefill = 128, decode = 32, reps = 3, ctx = 128;
	for (int i = 0; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (a[0] != '-') {
			if (dir)
				return usage();
			dir = a;
			continue;
		}
		if (!v)
			return usage();
		i++;
		if (strcmp(a, "--format") == 0)
			format = v;
		else if (strcmp(a, "--weights") == 0)
			weights = v;
		else if (strcmp(a, "--text") == 0)
			text = v;
		else if (strcmp(a, "--threads") == 0)
			threads = strtoul(v, NULL, 10);
		else if (strcmp(a, "--prefill") == 0)
			prefill = strtoul(v, NULL, 10);
		else if (strcmp(a, "--decode") == 0)
			decode = strtoul(v, NULL, 10);
		else if (strcmp(a, "--reps") == 0)
			reps = strtoul(v, NULL, 10);
		else if (strcmp(a, "--ctx") == 0)
			ctx = strtoul(v, NULL, 10);
		else
			return usage();
	}
	if (!dir || !format || (!speed && !text) || threads == 0)
		return usage();
	const tp_quant_format *f = NULL;
	if (strcmp(format, "fp32") != 0 && !(f = tp_quant_format_find(format))) {
		fprintf(stderr, "tp-kernel-bench: unknown format %s\n", format);
		return 2;
	}
	tp_model *m = NULL, *src = NULL, *fake = NULL, *exact = NULL;
	tp_tokenizer *tok = NULL;
	int32_t *ids = NULL;
	char *path = NULL;
	tp_buf tb = TP_BUF_INIT(64u << 20);
	int rc = load(&m, dir, weights, (unsigned)threads, f, LOAD_PACKED);
	if (rc < 0)
		goto done;
	if (speed) {
		size_t n = prefill + decode + 1;
		ids = malloc(n * sizeof(*ids));
		size_t vocab = tp_model_get_config(m)->vocab;
		for (size_t i = 0; i < n; i++)
			ids[i] = (int32_t)((i * 7919 + 13) % vocab);
		/* Wall-clock tokens/s (tp_runtime_eval_speed) and tokens per
		 * CPU-second of the process, which a busy machine disturbs less:
		 * prefill alone, then 1 + decode tokens (the one-token prefill
		 * counted against decode, so that figure is a lower bound). */
		tp_speed_result best = {0}, r;
		double cpu_pre = 0, cpu_dec = 0;
		for (unsigned long k = 0; k < reps; k++) {
			double c0 = cpu_s();
			if ((rc = tp_runtime_eval_speed(m, ids, prefill, 0, &r)) < 0)
				goto done;
			double c1 = cpu_s();
			if (r.prefill_tps > best.prefill_tps)
				best.prefill_tps = r.prefill_tps;
			if ((rc = tp_runtime_eval_speed(m, ids + prefill, 1, decode, &r)) < 0)
				goto done;
			double c2 = cpu_s();
			if (r.decode_tps > best.decode_tps)
				best.decode_tps = r.decode_tps;
			if (k == 0 || c1 - c0 < cpu_pre)
				cpu_pre = c1 - c0;
			if (k == 0 || c2 - c1 < cpu_dec)
				cpu_dec = c2 - c1;
		}
		const tp_quant_kernel *k = f ? tp_quant_kernel_find(f) : NULL;
		printf("{\"engine\":\"tenpak\",\"format\":\"%s\",\"kernel\":\"%s\",\"threads\":%lu,"
		       "\"prefill_tokens\":%lu,\"decode_tokens\":%lu,\"prefill_tps\":%.2f,"
		       "\"decode_tps\":%.2f,\"prefill_tpcpus\":%.2f,\"decode_tpcpus\":%.2f}\n",
		       format, k ? k->name : "none", threads, prefill, decode, best.prefill_tps,
		       best.decode_tps, (double)prefill / cpu_pre, (double)decode / cpu_dec);
		goto done;
	}
	size_t n = 0;
	if ((rc = load(&src, dir, weights, (unsigned)threads, NULL, LOAD_SOURCE)) < 0 ||
	    (f && (rc = load(&fake, dir, weights, (unsigned)threads, f, LOAD_FAKE)) < 0) ||
	    (f && tp_quant_kernel_ggml_exact(f->name, false) &&
	     (rc = load(&exact, dir, weights, (unsigned)threads, f, LOAD_EXACT)) < 0) ||
	    (rc = tp_path_join(&path, dir, "tokenizer.json")) < 0 ||
	    (rc = tp_tokenizer_load(&tok, path)) < 0 || (rc = tp_fs_read_regular(text, &tb)) < 0 ||
	    (rc = tp_tokenizer_encode(tok, tb.ptr ? tb.ptr : "", tb.len, false, &ids, &n)) < 0)
		goto done;
	tp_eval_opts o = {.mode = TP_PPL_MODE_LLAMACPP, .ctx = ctx};
	o.bos = tp_runtime_choose_bos(tp_model_get_config(m), tok);
	tp_eval_result rs, rf, rk, rx;
	if ((rc = tp_runtime_eval_perplexity(src, NULL, ids, n, &o, &rs)) < 0 ||
	    (fake && (rc = tp_runtime_eval_perplexity(fake, src, ids, n, &o, &rf)) < 0) ||
	    (rc = tp_runtime_eval_perplexity(m, src, ids, n, &o, &rk)) < 0 ||
	    (exact && (rc = tp_runtime_eval_perplexity(exact, src, ids, n, &o, &rx)) < 0))
		goto done;
	const tp_quant_kernel *k = f ? tp_quant_kernel_find(f) : NULL;
	printf("format=%s kernel=\"%s\" tokens=%zu scored=%zu baseline_ppl=%.10g\n", format,
	       k ? k->name : "none", rk.tokens, rk.scored, rs.ppl);
	if (fake)
		printf("  dequantized fp32: ppl=%.10g kl_mean=%.6g same_top_pct=%.4f\n", rf.ppl,
		       rf.kl_mean, rf.same_top_pct);
	printf("  packed kernel:    ppl=%.10g kl_mean=%.6g same_top_pct=%.4f\n", rk.ppl,
	       rk.kl_mean, rk.same_top_pct);
	if (fake)
		printf("  kernel vs dequantized: ppl %+.4f%% kl_mean %+.2f%%\n",
		       100 * (rk.ppl / rf.ppl - 1), 100 * (rk.kl_mean / rf.kl_mean - 1));
	if (exact)
		printf("  exact-mode kernel (fp32 activations): ppl=%.10g kl_mean=%.6g "
		       "same_top_pct=%.4f; vs dequantized: ppl %+.4f%% kl_mean %+.2f%%\n",
		       rx.ppl, rx.kl_mean, rx.same_top_pct, 100 * (rx.ppl / rf.ppl - 1),
		       100 * (rx.kl_mean / rf.kl_mean - 1));
done:
	if (rc < 0)
		fprintf(stderr, "tp-kernel-bench: %s\n", tp_error_last());
	tp_model_free(m);
	tp_model_free(src);
	tp_model_free(fake);
	tp_model_free(exact);
	tp_tokenizer_free(tok);
	tp_buf_free(&tb);
	free(ids);
	free(path);
	return rc < 0 ? 1 : 0;
}

int main(int argc, char **argv)
{
	if (argc < 2)
		return usage();
	if (strcmp(argv[1], "kernels") == 0)
		return cmd_kernels(argc - 2, argv + 2);
	if (strcmp(argv[1], "speed") == 0)
		return cmd_model(true, argc - 2, argv + 2);
	if (strcmp(argv[1], "ppl") == 0)
		return cmd_model(false, argc - 2, argv + 2);
	return usage();
}
