/* Kernels of the ggml family: none yet, packed layers widen rows. */
#include "kernels_internal.h"

const tp_quant_kernel *tp_quant_kernel_ggml(const char *name, bool simd)
{
	(void)name;
	(void)simd;
	return NULL;
}
