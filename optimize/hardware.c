/* Hardware profiles: the built-in JSON files, users' files, and cpu-local
 * measured on the spot. */
#include "tp_optimize.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define PROFILE_MAX (1u << 20)
/* The bandwidth read: 8 x the last-level cache, so that it comes from
 * memory, kept within [64, 512] MiB: it adds that much to peak RSS. */
#define STREAM_LLC_TIMES 8
#define STREAM_MIN ((size_t)64 << 20)
#define STREAM_MAX ((size_t)512 << 20)
#define STREAM_PASSES 5
#define GEMM_DIM 1024
#define GEMM_ROWS 256

/* The files in optimize/hardware, compiled in by embed_hardware.cmake. */
struct tp_hw_builtin {
	const char *name, *json;
	size_t len;
};
extern const struct tp_hw_builtin tp_hw_builtins[];

const char *const *tp_hw_profile_names(void)
{
	static const char *names[64];
	if (!names[0])
		for (size_t i = 0; tp_hw_builtins[i].name && i + 1 < 64; i++)
			names[i] = tp_hw_builtins[i].name;
	return names;
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* A number >= 0, or null (0: unknown); absent is null too. */
static int get_num(const cJSON *o, const char *key, double *out)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
	*out = 0;
	if (!v || cJSON_IsNull(v))
		return 0;
	if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || v->valuedouble < 0)
		return tp_error_set(TP_EINVAL, "hardware profile: \"%s\" is not a number >= 0", key);
	*out = v->valuedouble;
	return 0;
}

static void get_str(const cJSON *o, const char *key, char *out, size_t cap)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
	snprintf(out, cap, "%s", cJSON_IsString(v) ? v->valuestring : "");
}

int tp_hw_profile_parse(const char *json, size_t len, tp_hw_profile *out)
{
	tp_hw_profile p = { 0 };
	cJSON *o = cJSON_ParseWithLength(json, len);
	int rc = 0;
	if (!cJSON_IsObject(o)) {
		rc = tp_error_set(TP_EINVAL, "hardware profile: not a JSON object");
		goto done;
	}
	get_str(o, "name", p.name, sizeof(p.name));
	get_str(o, "description", p.description, sizeof(p.description));
	if (!p.name[0]) {
		rc = tp_error_set(TP_EINVAL, "hardware profile: no \"name\"");
		goto done;
	}
	p.measured = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "measured"));
	if ((rc = get_num(o, "memory_gb", &p.memory_gb)) < 0 ||
	    (rc = get_num(o, "bandwidth_gbs", &p.bandwidth_gbs)) < 0 ||
	    (rc = get_num(o, "peak_tflops", &p.peak_tflops)) < 0 ||
	    (rc = get_num(o, "int8_tops", &p.int8_tops)) < 0 ||
	    (rc = get_num(o, "usd_per_hour", &p.usd_per_hour)) < 0 ||
	    (rc = get_num(o, "usd_per_hour_per_thread", &p.usd_per_hour_per_thread)) < 0)
		goto done;
	const cJSON *pr = cJSON_GetObjectItemCaseSensitive(o, "price");
	const cJSON *sp = cJSON_GetObjectItemCaseSensitive(o, "specs");
	get_str(pr, "source", p.price_source, sizeof(p.price_source));
	get_str(pr, "read", p.price_read, sizeof(p.price_read));
	get_str(pr, "note", p.price_note, sizeof(p.price_note));
	get_str(sp, "source", p.spec_source, sizeof(p.spec_source));
	get_str(sp, "read", p.spec_read, sizeof(p.spec_read));
	get_str(sp, "note", p.spec_note, sizeof(p.spec_note));
	/* A profile that is not measured must say what it costs and how fast
	 * its memory is: without those nothing can be projected. */
	if (!p.measured && (p.usd_per_hour <= 0 || p.bandwidth_gbs <= 0)) {
		rc = tp_error_set(TP_EINVAL, "hardware profile %s: needs usd_per_hour and "
				  "bandwidth_gbs > 0", p.name);
		goto done;
	}
	*out = p;
done:
	cJSON_Delete(o);
	return rc;
}

static int load_file(const char *path, tp_hw_profile *out)
{
	FILE *f = fopen(path, "rb");
	char *buf = NULL;
	size_t n = 0;
	int rc = 0;
	if (!f)
		return tp_error_set_errno(TP_EIO, errno, "reading %s", path);
	if (!(buf = malloc(PROFILE_MAX + 1))) {
		rc = tp_error_set(TP_ENOMEM, "out of memory");
		goto done;
	}
	n = fread(buf, 1, PROFILE_MAX + 1, f);
	if (ferror(f))
		rc = tp_error_set_errno(TP_EIO, errno, "reading %s", path);
	else if (n > PROFILE_MAX)
		rc = tp_error_set(TP_ETOOBIG, "%s: a hardware profile over %u bytes", path,
				  PROFILE_MAX);
	else if ((rc = tp_hw_profile_parse(buf, n, out)) < 0)
		tp_error_set(rc, "%s: %s", path, tp_error_last());
done:
	free(buf);
	fclose(f);
	return rc;
}

int tp_hw_profile_load(const char *name_or_path, tp_hw_profile *out)
{
	struct stat st;
	if (stat(name_or_path, &st) == 0 && S_ISREG(st.st_mode))
		return load_file(name_or_path, out);
	for (size_t i = 0; tp_hw_builtins[i].name; i++)
		if (strcasecmp(tp_hw_builtins[i].name, name_or_path) == 0)
			return tp_hw_profile_parse(tp_hw_builtins[i].json, tp_hw_builtins[i].len, out);
	char names[512] = "";
	for (size_t i = 0; tp_hw_builtins[i].name; i++)
		snprintf(names + strlen(names), sizeof(names) - strlen(names), "%s%s", i ? ", " : "",
			 tp_hw_builtins[i].name);
	return tp_error_set(TP_ENOTFOUND, "no hardware profile or file '%s' (built in: %s)",
			    name_or_path, names);
}

/* ---- cpu-local ------------------------------------------------------------ */

typedef struct stream_job {
	const double *buf;
	size_t n;
	double *sums; /* one per task: the reads must not be optimised away */
} stream_job;

static void stream_task(void *ctx, size_t i, size_t n)
{
	const stream_job *j = ctx;
	size_t per = j->n / n, lo = i * per, hi = i + 1 == n ? j->n : lo + per;
	double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
	size_t k = lo;
	for (; k + 4 <= hi; k += 4) {
		s0 += j->buf[k];
		s1 += j->buf[k + 1];
		s2 += j->buf[k + 2];
		s3 += j->buf[k + 3];
	}
	for (; k < hi; k++)
		s0 += j->buf[k];
	j->sums[i] = s0 + s1 + s2 + s3;
}

/* Bytes of the largest cache of cpu0 (sysfs; "32768K", "2M"), 0 when
 * unknown. */
static size_t llc_bytes(void)
{
	size_t best = 0;
	for (int i = 0; i < 16; i++) {
		char path[96], line[64];
		snprintf(path, sizeof(path), "/sys/devices/system/cpu/cpu0/cache/index%d/size", i);
		FILE *f = fopen(path, "r");
		if (!f)
			continue;
		char *got = fgets(line, sizeof(line), f);
		fclose(f);
		char *end = NULL;
		unsigned long long v = got ? strtoull(line, &end, 10) : 0;
		if (!got || end == line)
			continue;
		unsigned shift = *end == 'K' ? 10 : *end == 'M' ? 20 : *end == 'G' ? 30 : 0;
		if (v < (1ull << 40) && (size_t)(v << shift) > best)
			best = (size_t)(v << shift);
	}
	return best;
}

/* The bandwidth read's size for a last-level cache of llc bytes (0:
 * unknown): STREAM_LLC_TIMES x llc within [STREAM_MIN, STREAM_MAX]. */
size_t tp_hw_stream_bytes(size_t llc)
{
	size_t b = llc > STREAM_MAX / STREAM_LLC_TIMES ? STREAM_MAX : llc * STREAM_LLC_TIMES;
	return b < STREAM_MIN ? STREAM_MIN : b;
}

/* Best of STREAM_PASSES reads of a buffer past the caches, one slice per
 * thread, in GB/s; the buffer is freed at once. */
static int measure_bandwidth(tp_pool *pool, double *gbs)
{
	size_t bytes = tp_hw_stream_bytes(llc_bytes());
	size_t n = bytes / sizeof(double), tasks = pool ? tp_pool_threads(pool) : 1;
	double *buf = malloc(n * sizeof(double)), sums[256] = { 0 };
	if (!buf)
		return tp_error_set(TP_ENOMEM, "out of memory for the bandwidth buffer");
	if (tasks > 256)
		tasks = 256;
	for (size_t i = 0; i < n; i++)
		buf[i] = (double)(i & 7);
	stream_job j = { buf, n, sums };
	double best = 0;
	for (int rep = 0; rep < STREAM_PASSES; rep++) {
		double t0 = now_s();
		tp_pool_run(pool, tasks, stream_task, &j);
		double t = now_s() - t0, total = 0;
		for (size_t i = 0; i < tasks; i++)
			total += sums[i];
		if (total != 3.5 * (double)n) { /* every element was read once */
			free(buf);
			return tp_error_set(TP_EIO, "bandwidth read summed %g, not %g", total,
					    3.5 * (double)n);
		}
		if (t > 0 && (double)(n * sizeof(double)) / t > best)
			best = (double)(n * sizeof(double)) / t;
	}
	free(buf);
	*gbs = best / 1e9;
	return 0;
}

/* Best of 3 fp32 GEMMs through the runtime's dense layer, in TFLOP/s. */
static int measure_gemm(tp_pool *pool, double *tflops)
{
	size_t nw = (size_t)GEMM_DIM * GEMM_DIM, nx = (size_t)GEMM_ROWS * GEMM_DIM;
	float *w = malloc(nw * sizeof(float)), *x = malloc(nx * sizeof(float));
	float *y = malloc((size_t)GEMM_ROWS * GEMM_DIM * sizeof(float));
	tp_linear *l = NULL;
	int rc = 0;
	if (!w || !x || !y) {
		rc = tp_error_set(TP_ENOMEM, "out of memory");
		goto done;
	}
	for (size_t i = 0; i < nw; i++)
		w[i] = (float)((int)(i % 13) - 6) * 0.01f;
	for (size_t i = 0; i < nx; i++)
		x[i] = (float)((int)(i % 7) - 3) * 0.1f;
	if ((rc = tp_linear_dense_new(&l, w, NULL, GEMM_DIM, GEMM_DIM)) < 0)
		goto done;
	double best = 0, flops = 2.0 * GEMM_DIM * GEMM_DIM * GEMM_ROWS;
	tp_linear_forward(l, x, GEMM_ROWS, y, pool); /* warm up */
	for (int rep = 0; rep < 3; rep++) {
		double t0 = now_s();
		tp_linear_forward(l, x, GEMM_ROWS, y, pool);
		double t = now_s() - t0;
		if (t > 0 && flops / t > best)
			best = flops / t;
	}
	*tflops = best / 1e12;
done:
	tp_linear_free(l);
	free(w);
	free(x);
	free(y);
	return rc;
}

int tp_hw_measure_local(tp_hw_profile *p, tp_pool *pool, bool rooflines)
{
	int rc;
	long pages = sysconf(_SC_PHYS_PAGES), psize = sysconf(_SC_PAGESIZE);
	if (pages > 0 && psize > 0)
		p->memory_gb = (double)pages * (double)psize / 1e9;
	if (rooflines && ((rc = measure_bandwidth(pool, &p->bandwidth_gbs)) < 0 ||
			  (rc = measure_gemm(pool, &p->peak_tflops)) < 0))
		return rc;
	unsigned threads = pool ? tp_pool_threads(pool) : 1;
	if (p->usd_per_hour <= 0)
		p->usd_per_hour = p->usd_per_hour_per_thread * threads;
	/* The device name measured figures are labelled with. */
	char model[96] = "CPU", line[256];
	FILE *f = fopen("/proc/cpuinfo", "r");
	while (f && fgets(line, sizeof(line), f))
		if (strncmp(line, "model name", 10) == 0 && strchr(line, ':')) {
			snprintf(model, sizeof(model), "%s", strchr(line, ':') + 2);
			model[strcspn(model, "\n")] = 0;
			break;
		}
	if (f)
		fclose(f);
	snprintf(p->description, sizeof(p->description), "this machine: %s, %u thread%s", model,
		 threads, threads == 1 ? "" : "s");
	p->measured = true;
	return 0;
}
