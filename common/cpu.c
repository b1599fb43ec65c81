/* The machine's core count, the one default for every thread pool. */
#include "tp_common.h"

#include <unistd.h>

/* More than any machine has; keeps products with the count far from overflow. */
#define CPU_COUNT_MAX 65536

unsigned tp_cpu_count(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);
	/* -1 when the system cannot tell: there is always one. */
	return n < 1 ? 1 : n > CPU_COUNT_MAX ? CPU_COUNT_MAX : (unsigned)n;
}
