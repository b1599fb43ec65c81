/* Which kernel a format has on this CPU. */
#include "kernels_internal.h"

static bool force_portable;
/* llama.cpp's semantics by default: the ggml family rounds activations to
 * 8 bits. Quality measurements turn it off (tp_quant_kernel_exact). */
static bool exact_activations;

bool tp_quant_kernel_force_portable(bool on)
{
	bool old = force_portable;
	force_portable = on;
	return old;
}

bool tp_quant_kernel_exact(bool on)
{
	bool old = exact_activations;
	exact_activations = on;
	return old;
}

bool tp_quant_kernel_use_avx2(void)
{
#if defined(__x86_64__) || defined(__i386__)
	return !force_portable && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
	return false;
#endif
}

const tp_quant_kernel *tp_quant_kernel_find(const tp_quant_format *f)
{
	if (!f)
		return NULL;
	bool simd = tp_quant_kernel_use_avx2();
	const tp_quant_kernel *k = exact_activations ? tp_quant_kernel_ggml_exact(f->name, simd)
						     : tp_quant_kernel_ggml(f->name, simd);
	if (!k)
		k = tp_quant_kernel_group(f->name, simd);
	return k;
}
