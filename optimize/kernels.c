/* Which kernel a format has on this CPU. */
#include "kernels_internal.h"

static bool force_portable, force_avx2;
/* llama.cpp's semantics by default: the ggml family rounds activations to
 * 8 bits. Quality measurements turn it off (tp_quant_kernel_exact). */
static bool exact_activations;

bool tp_quant_kernel_force_portable(bool on)
{
	bool old = force_portable;
	force_portable = on;
	return old;
}

bool tp_quant_kernel_force_avx2(bool on)
{
	bool old = force_avx2;
	force_avx2 = on;
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

int tp_quant_kernel_level(void)
{
	if (!tp_quant_kernel_use_avx2())
		return TP_KERNEL_C;
#if defined(__x86_64__) || defined(__i386__)
	if (!force_avx2 && __builtin_cpu_supports("avx512f") &&
	    __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
	    __builtin_cpu_supports("avx512vnni"))
		return TP_KERNEL_AVX512;
#endif
	return TP_KERNEL_AVX2;
}

const tp_quant_kernel *tp_quant_kernel_find(const tp_quant_format *f)
{
	if (!f)
		return NULL;
	int level = tp_quant_kernel_level();
	/* Quality is measured on the AVX2 kernels at most, so that the
	 * AVX-512 ones (another summation order) leave its figures as they
	 * were; they are for speed. */
	if (exact_activations && level > TP_KERNEL_AVX2)
		level = TP_KERNEL_AVX2;
	const tp_quant_kernel *k = exact_activations ? tp_quant_kernel_ggml_exact(f->name, level)
						     : tp_quant_kernel_ggml(f->name, level);
	if (!k)
		k = tp_quant_kernel_group(f->name, level);
	return k;
}
