/* Kernels of the group family: none yet, packed layers widen rows. */
#include "kernels_internal.h"

const tp_quant_kernel *tp_quant_kernel_group(const char *name, bool simd)
{
	(void)name;
	(void)simd;
	return NULL;
}
