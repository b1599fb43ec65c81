/* The cores this process may use, the one default for every thread pool:
 * the online cores, cut to the CPU affinity mask and to a cgroup CPU quota
 * (a container given 2 CPUs of a 64-core host must not start 64 workers). */
#define _GNU_SOURCE /* sched_getaffinity, CPU_COUNT */
#include "tp_common.h"

#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* More than any machine has; keeps products with the count far from overflow. */
#define CPU_COUNT_MAX 65536

int tp_cpu_quota_parse(const char *text, unsigned *out)
{
	char quota[32];
	unsigned long long q, period = 100000;
	int n = sscanf(text, "%31s %llu", quota, &period);
	if (n < 1)
		return tp_error_set(TP_EINVAL, "bad cgroup cpu.max");
	if (strcmp(quota, "max") == 0 || strcmp(quota, "-1") == 0) {
		*out = 0;
		return 0;
	}
	char *end;
	q = strtoull(quota, &end, 10);
	if (*end || quota[0] == '-' || q == 0 || period == 0)
		return tp_error_set(TP_EINVAL, "bad cgroup cpu.max '%.40s'", text);
	/* A fraction of a core still runs one thread. */
	unsigned long long cores = (q + period - 1) / period;
	*out = cores > CPU_COUNT_MAX ? CPU_COUNT_MAX : (unsigned)cores;
	return 0;
}

/* The tightest cpu.max from this process's cgroup (v2) up to the root,
 * or the v1 CFS quota; 0 when there is none. */
static unsigned cgroup_cores(void)
{
	char line[4096], path[4352], text[128];
	unsigned best = 0, c;
	FILE *f = fopen("/proc/self/cgroup", "r");
	char *dir = NULL;
	while (f && fgets(line, sizeof(line), f))
		if (strncmp(line, "0::", 3) == 0) {
			line[strcspn(line, "\n")] = 0;
			dir = line + 3;
			break;
		}
	if (f)
		fclose(f);
	/* Each level's limit applies: walk from the leaf up to the root. */
	while (dir) {
		snprintf(path, sizeof(path), "/sys/fs/cgroup%s/cpu.max", dir);
		FILE *q = fopen(path, "r");
		if (q) {
			if (fgets(text, sizeof(text), q) && tp_cpu_quota_parse(text, &c) == 0 && c &&
			    (!best || c < best))
				best = c;
			fclose(q);
		}
		char *slash = strrchr(dir, '/');
		if (!slash || !dir[1])
			break;
		slash[slash == dir ? 1 : 0] = 0; /* "/a" -> "/", "/a/b" -> "/a" */
	}
	FILE *a = fopen("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "r");
	FILE *b = fopen("/sys/fs/cgroup/cpu/cpu.cfs_period_us", "r");
	long long qv = 0, pv = 0;
	if (a && b && fscanf(a, "%lld", &qv) == 1 && fscanf(b, "%lld", &pv) == 1 && qv > 0 &&
	    pv > 0) {
		snprintf(text, sizeof(text), "%lld %lld", qv, pv);
		if (tp_cpu_quota_parse(text, &c) == 0 && c && (!best || c < best))
			best = c;
	}
	if (a)
		fclose(a);
	if (b)
		fclose(b);
	return best;
}

unsigned tp_cpu_count(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);
	/* -1 when the system cannot tell: there is always one. */
	unsigned cores = n < 1 ? 1 : n > CPU_COUNT_MAX ? CPU_COUNT_MAX : (unsigned)n;
	cpu_set_t set;
	if (sched_getaffinity(0, sizeof(set), &set) == 0) {
		int k = CPU_COUNT(&set);
		if (k >= 1 && (unsigned)k < cores)
			cores = (unsigned)k;
	}
	unsigned quota = cgroup_cores();
	return quota && quota < cores ? quota : cores;
}
