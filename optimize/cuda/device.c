/* The device: presence, properties, copy bandwidth, and one-time setup. */
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <cuda_runtime_api.h>

#include "host.h"
#include "quant_internal.h"

double tp_cuda_now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int tp_cuda_fail(int e, const char *what)
{
	int code = e == (int)cudaErrorMemoryAllocation ? TP_ENOMEM : TP_EIO;
	return tp_error_set(code, "CUDA: %s: %s", what, cudaGetErrorString((cudaError_t)e));
}

bool tp_cuda_available(char *name, size_t cap)
{
	int n = 0, dev = 0;
	if (name && cap)
		name[0] = 0;
	if (cudaGetDeviceCount(&n) != cudaSuccess || n <= 0) {
		(void)cudaGetLastError(); /* clear the sticky-free error state */
		return false;
	}
	struct cudaDeviceProp p;
	if (name && cap && cudaGetDevice(&dev) == cudaSuccess &&
	    cudaGetDeviceProperties(&p, dev) == cudaSuccess)
		snprintf(name, cap, "%s", p.name);
	return true;
}

static int init_rc;
static pthread_once_t init_once = PTHREAD_ONCE_INIT;

static void init_run(void)
{
	float dq[256];
	if (!tp_cuda_available(NULL, 0)) {
		init_rc = TP_EUNSUPPORTED;
		return;
	}
	tp_quant_nf4_dq_map(dq);
	int e = tp_cuda_k_set_codes(tp_quant_nf4_code, dq);
	init_rc = e ? TP_EIO : 0;
}

int tp_cuda_init(void)
{
	pthread_once(&init_once, init_run);
	if (init_rc == TP_EUNSUPPORTED)
		return tp_error_set(TP_EUNSUPPORTED, "no CUDA device (cudaGetDeviceCount found none)");
	if (init_rc < 0)
		return tp_error_set(init_rc, "CUDA: loading the kernels' tables failed");
	return 0;
}

int tp_cuda_query(tp_cuda_device *out)
{
	int rc = tp_cuda_init(), dev = 0, e, clock_khz = 0, bus_bits = 0;
	if (rc < 0)
		return rc;
	struct cudaDeviceProp p;
	size_t fr = 0, total = 0;
	if ((e = cudaGetDevice(&dev)) || (e = cudaGetDeviceProperties(&p, dev)) ||
	    (e = cudaMemGetInfo(&fr, &total)))
		return tp_cuda_fail(e, "querying the device");
	tp_cuda_device d;
	memset(&d, 0, sizeof(d));
	snprintf(d.name, sizeof(d.name), "%s", p.name);
	d.index = dev;
	d.cc_major = p.major;
	d.cc_minor = p.minor;
	d.sms = p.multiProcessorCount;
	d.mem_total = total;
	d.mem_free = fr;
	/* Attributes rather than cudaDeviceProp fields: CUDA 13 dropped the
	 * clock fields from the struct. */
	if (cudaDeviceGetAttribute(&clock_khz, cudaDevAttrMemoryClockRate, dev) == cudaSuccess &&
	    cudaDeviceGetAttribute(&bus_bits, cudaDevAttrGlobalMemoryBusWidth, dev) == cudaSuccess)
		d.peak_bandwidth_gbs = 2.0 * clock_khz * 1e3 * (bus_bits / 8.0) / 1e9;
	else
		(void)cudaGetLastError();
	*out = d;
	return 0;
}

int tp_cuda_measure_bandwidth(size_t bytes, int reps, double *gbs)
{
	int rc = tp_cuda_init(), e = 0;
	void *a = NULL, *b = NULL;
	cudaEvent_t t0 = NULL, t1 = NULL;
	float best = 0.0f;
	if (rc < 0)
		return rc;
	if (bytes == 0 || reps <= 0)
		return tp_error_set(TP_EINVAL, "bandwidth: %zu bytes, %d repetitions", bytes, reps);
	if ((e = cudaMalloc(&a, bytes)) || (e = cudaMalloc(&b, bytes)) ||
	    (e = cudaMemset(a, 1, bytes)) || (e = cudaEventCreate(&t0)) ||
	    (e = cudaEventCreate(&t1)))
		goto done;
	for (int i = 0; i <= reps; i++) { /* the first one warms up */
		float ms = 0.0f;
		if ((e = cudaEventRecord(t0, 0)) || (e = cudaMemcpy(b, a, bytes, cudaMemcpyDeviceToDevice)) ||
		    (e = cudaEventRecord(t1, 0)) || (e = cudaEventSynchronize(t1)) ||
		    (e = cudaEventElapsedTime(&ms, t0, t1)))
			goto done;
		if (i > 0 && (best == 0.0f || ms < best))
			best = ms;
	}
done:
	if (e)
		rc = tp_cuda_fail(e, "measuring the copy bandwidth");
	else if (best <= 0.0f)
		rc = tp_error_set(TP_EIO, "CUDA: the copy took no measurable time");
	else
		*gbs = 2.0 * (double)bytes / (best * 1e-3) / 1e9;
	if (t0)
		cudaEventDestroy(t0);
	if (t1)
		cudaEventDestroy(t1);
	cudaFree(a);
	cudaFree(b);
	return rc;
}
