/* The table of formats, their bits per weight and llama.cpp's fallbacks. */
#include "quant_internal.h"

static const tp_quant_format *const formats[] = {
	&tp_quant_fmt_bf16,
	&tp_quant_fmt_fp16,
	&tp_quant_fmt_int8,
	&tp_quant_fmt_nf4,
	&tp_quant_fmt_nf4_dq,
	&tp_quant_fmt_rtn4_g128,
	&tp_quant_fmt_rtn4_g64,
	&tp_quant_fmt_rtn4_g256,
	&tp_quant_fmt_rtn3_g128,
	&tp_quant_fmt_q8_0,
	&tp_quant_fmt_q4_0,
	&tp_quant_fmt_q5_0,
	&tp_quant_fmt_q4_k,
	&tp_quant_fmt_int4_int2_residual,
	&tp_quant_fmt_int4_sparse25,
	NULL,
};

const tp_quant_format *const *tp_quant_formats(void)
{
	return formats;
}

const tp_quant_format *tp_quant_format_find(const char *name)
{
	if (!name)
		return NULL;
	for (size_t i = 0; formats[i]; i++)
		if (strcmp(formats[i]->name, name) == 0)
			return formats[i];
	if (strcmp(name, tp_quant_fmt_rtn2_g128.name) == 0)
		return &tp_quant_fmt_rtn2_g128;
	return NULL;
}

double tp_quant_bpw(const tp_quant_format *f, size_t rows, size_t cols)
{
	if (!f || rows == 0 || cols == 0)
		return 0.0;
	return 8.0 * (double)f->packed_size(rows, cols) / ((double)rows * (double)cols);
}

/* llama-quant.cpp: a k-quant row that QK_K = 256 does not divide falls back
 * (Q4_K -> Q5_0), and to F16 when the fallback's block of 32 does not divide
 * it either; Q8_0 and Q4_0 have no fallback there (llama.cpp refuses the
 * tensor), so tenpak keeps such a tensor in fp16. */
const char *tp_quant_fallback(const char *format, size_t cols)
{
	if (!format)
		return NULL;
	if (strcmp(format, "q4_k") == 0 && cols % 256 != 0)
		return cols % 32 == 0 ? "q5_0" : "fp16";
	if ((strcmp(format, "q8_0") == 0 || strcmp(format, "q4_0") == 0 ||
	     strcmp(format, "q5_0") == 0) &&
	    cols % 32 != 0)
		return "fp16";
	return NULL;
}
