/* The GPU as `tenpak optimize`'s backend (tp_optimize_backend): the
 * optimizer library cannot call this library (which links it), so the
 * tenpak executable hands it this table. */
#include <stdio.h>

#include <cuda_runtime_api.h>

#include "host.h"

/* The device count's error is the reason shown when there is no GPU
 * ("no CUDA-capable device is detected", "CUDA driver version is
 * insufficient ..."). */
static int probe(void *ctx, char *name, size_t cap)
{
	(void)ctx;
	int n = 0;
	cudaError_t e = cudaGetDeviceCount(&n);
	if (e != cudaSuccess)
		return tp_error_set(TP_EUNSUPPORTED, "%s", cudaGetErrorString(e));
	if (n <= 0)
		return tp_error_set(TP_EUNSUPPORTED, "the driver reports no device");
	tp_cuda_device d;
	int rc = tp_cuda_query(&d);
	if (rc < 0)
		return rc;
	snprintf(name, cap, "%s", d.name);
	return 0;
}

/* One upload per candidate serves both measurements. */
static int measure(void *ctx, const tp_model *m, const tp_eval_ref *ref, const int32_t *ids,
		   size_t n, const tp_eval_opts *eo, size_t prefill, size_t decode,
		   tp_eval_result *r, tp_speed_result *sp)
{
	(void)ctx;
	tp_cuda_model *g = NULL;
	int rc = tp_cuda_model_new(&g, m);
	if (rc == 0)
		rc = tp_cuda_eval_perplexity_ref(g, ref, ids, n, eo, r);
	if (rc == 0)
		rc = tp_cuda_measure_speed(g, ids, prefill, decode, sp);
	tp_cuda_model_free(g);
	return rc;
}

/* The baseline's log-probs on the GPU, so that every candidate's KL
 * compares two GPU forward passes. A layer that is not packed (an fp32
 * baseline's dense layers) would be read back through its forward,
 * O(in^2 out) on the CPU: TP_EUNSUPPORTED, and the CPU computes the
 * reference as before. */
static int reference(void *ctx, const tp_model *m, tp_eval_ref **ref, const int32_t *ids,
		     size_t n, const tp_eval_opts *eo, tp_eval_result *r)
{
	(void)ctx;
	for (size_t i = 0; i < tp_model_linear_count(m); i++) {
		const tp_quant_format *f;
		const void *packed;
		const float *bias;
		if (!tp_quant_linear_parts(tp_model_linear(m, i), &f, &packed, &bias) ||
		    !tp_cuda_format_supported(f))
			return tp_error_set(TP_EUNSUPPORTED, "%s is not packed in a GPU format",
					    tp_model_linear_name(m, i));
	}
	tp_cuda_model *g = NULL;
	int rc = tp_cuda_model_new(&g, m);
	if (rc == 0)
		rc = tp_cuda_eval_reference(ref, g, ids, n, eo, r);
	tp_cuda_model_free(g);
	return rc;
}

const tp_optimize_backend *tp_cuda_optimize_backend(void)
{
	static const tp_optimize_backend b = { "cuda", NULL, probe, measure, reference,
					       &tp_cuda_calib_dev };
	return &b;
}
