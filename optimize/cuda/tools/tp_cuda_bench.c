/*
 * tp-cuda-bench: the GPU path end to end for scripts/bench-cuda.sh.
 *
 *   tp-cuda-bench --query
 *       the device, or "no CUDA device" and exit 77
 *   tp-cuda-bench MODEL_DIR CANDIDATE... [--prefill N] [--decode N]
 *       per candidate ("baseline" = the weights as stored; a format name
 *       such as rtn4_g128, nf4, q4_k, int8: RTN at load time): load on the
 *       CPU, upload, time a prefill and decode steps, and the single-token
 *       product (GEMV) of the largest decoder layer, its packed bytes read
 *       from memory (1 GiB of copies: not from L2), against the device's
 *       copy bandwidth measured in the same run and its datasheet peak.
 *       decode_weight_gbs = weight bytes x decode tok/s: the whole model's
 *       read rate while decoding.
 * Token ids are a fixed pseudo-random sequence: speed does not depend on
 * them. Prints one tab-separated row per candidate.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tp_cuda.h"

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

#define NO_DEVICE 77

static int query(void)
{
	tp_cuda_device d;
	double copy = 0;
	if (!tp_cuda_available(NULL, 0)) {
		printf("no CUDA device\n");
		return NO_DEVICE;
	}
	if (tp_cuda_query(&d) < 0 || tp_cuda_measure_bandwidth((size_t)1 << 30, 5, &copy) < 0) {
		fprintf(stderr, "tp-cuda-bench: %s\n", tp_error_last());
		return 1;
	}
	printf("device\t%s\ncompute\t%d.%d\nsms\t%d\nmemory_gib\t%.1f\nfree_gib\t%.1f\n"
	       "peak_gbs\t%.0f\ncopy_gbs\t%.0f\n",
	       d.name, d.cc_major, d.cc_minor, d.sms, (double)d.mem_total / (1u << 30),
	       (double)d.mem_free / (1u << 30), d.peak_bandwidth_gbs, copy);
	return 0;
}

/* The largest decoder layer (by weight bytes) of g's model m. */
static size_t largest_layer(const tp_model *m)
{
	size_t best = 0, best_cells = 0;
	for (size_t i = 0; i + 1 < tp_model_linear_count(m); i++) {
		const tp_linear *l = tp_model_linear(m, i);
		if (l->in * l->out > best_cells) {
			best_cells = l->in * l->out;
			best = i;
		}
	}
	return best;
}

static int bench(const char *dir, const char *name, size_t prefill, size_t decode, double copy_gbs,
		 double peak_gbs)
{
	tp_model *m = NULL;
	tp_cuda_model *g = NULL;
	tp_linear *big = NULL;
	int32_t *ids = NULL;
	tp_model_opts opts = {0};
	tp_candidate_stats st;
	tp_speed_result sp;
	const char *codec = NULL;
	unsigned bits = 0;
	double t0 = now_s(), gemv_s = 0;
	size_t gemv_bytes = 0;
	int rc;
	memset(&st, 0, sizeof(st));
	if ((rc = tp_optimize_source_dtype(dir, NULL, &codec, &bits)) < 0)
		goto done;
	if (strcmp(name, "baseline") == 0)
		rc = tp_optimize_baseline_load(&m, dir, &opts);
	else
		rc = tp_optimize_candidate_load(&m, dir, &opts, name, NULL, bits, &st);
	if (rc < 0)
		goto done;
	size_t V = tp_model_get_config(m)->vocab, li = largest_layer(m);
	if ((rc = tp_cuda_linear_new(&big, tp_model_linear(m, li))) < 0 ||
	    (rc = tp_cuda_linear_time(big, 1, (size_t)1 << 30, 10, &gemv_s, &gemv_bytes)) < 0)
		goto done;
	if ((rc = tp_cuda_model_new(&g, m)) < 0)
		goto done;
	tp_model_free(m);
	m = NULL;
	if (!(ids = malloc((prefill + decode) * sizeof(int32_t)))) {
		rc = tp_error_set(TP_ENOMEM, "out of memory");
		goto done;
	}
	uint32_t s = 12345;
	for (size_t i = 0; i < prefill + decode; i++) {
		s = s * 1103515245u + 12345u;
		ids[i] = (int32_t)((s >> 8) % V);
	}
	/* once to warm up (kernel loading), then measured */
	if ((rc = tp_cuda_measure_speed(g, ids, prefill, decode > 4 ? 4 : decode, &sp)) < 0 ||
	    (rc = tp_cuda_measure_speed(g, ids, prefill, decode, &sp)) < 0)
		goto done;
	double gemv_gbs = (double)gemv_bytes / gemv_s / 1e9;
	double wgb = (double)tp_cuda_model_weight_bytes(g) / 1e9;
	printf("%s\t%.2f\t%.0f\t%.1f\t%.0f\t%.0f\t%.0f\t%.0f%%\t%.0f%%\t%.1f\n", name, wgb,
	       sp.prefill_tps, sp.decode_tps, sp.latency_p50_ms * 1e3, wgb * sp.decode_tps,
	       gemv_gbs, 100.0 * gemv_gbs / copy_gbs,
	       peak_gbs > 0 ? 100.0 * gemv_gbs / peak_gbs : 0.0, now_s() - t0);
	fflush(stdout);
done:
	if (rc < 0)
		fprintf(stderr, "tp-cuda-bench: %s: %s\n", name, tp_error_last());
	tp_linear_free(big);
	tp_cuda_model_free(g);
	tp_model_free(m);
	free(ids);
	return rc < 0 ? 1 : 0;
}

int main(int argc, char **argv)
{
	size_t prefill = 512, decode = 128;
	const char *dir = NULL;
	const char *cands[64];
	size_t nc = 0;
	if (argc == 2 && strcmp(argv[1], "--query") == 0)
		return query();
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--prefill") == 0 && i + 1 < argc)
			prefill = strtoul(argv[++i], NULL, 10);
		else if (strcmp(argv[i], "--decode") == 0 && i + 1 < argc)
			decode = strtoul(argv[++i], NULL, 10);
		else if (!dir)
			dir = argv[i];
		else if (nc < sizeof(cands) / sizeof(cands[0]))
			cands[nc++] = argv[i];
	}
	if (!dir || nc == 0 || prefill == 0) {
		fprintf(stderr, "usage: tp-cuda-bench --query | MODEL_DIR CANDIDATE... "
				"[--prefill N] [--decode N]\n");
		return 2;
	}
	if (!tp_cuda_available(NULL, 0)) {
		printf("no CUDA device\n");
		return NO_DEVICE;
	}
	double copy = 0;
	if (tp_cuda_measure_bandwidth((size_t)1 << 30, 5, &copy) < 0) {
		fprintf(stderr, "tp-cuda-bench: %s\n", tp_error_last());
		return 1;
	}
	tp_cuda_device d;
	if (tp_cuda_query(&d) < 0) {
		fprintf(stderr, "tp-cuda-bench: %s\n", tp_error_last());
		return 1;
	}
	printf("# %s: copy %.0f GB/s, datasheet peak %.0f GB/s\n", d.name, copy,
	       d.peak_bandwidth_gbs);
	printf("candidate\tweights_gb\tprefill_tok_s\tdecode_tok_s\tdecode_p50_us\t"
	       "decode_weight_gbs\tgemv_gbs\tgemv_of_copy\tgemv_of_peak\ttotal_s\n");
	int bad = 0;
	for (size_t i = 0; i < nc; i++)
		bad |= bench(dir, cands[i], prefill, decode, copy, d.peak_bandwidth_gbs);
	return bad;
}
