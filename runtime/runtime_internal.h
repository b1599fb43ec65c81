/* Shared between the runtime sources; not installed. */
#ifndef TP_RUNTIME_INTERNAL_H
#define TP_RUNTIME_INTERNAL_H

#include "tp_delta.h"
#include "tp_runtime.h"

/* Linear layers of one transformer block, in tp_model_linear order. */
enum { LIN_Q, LIN_K, LIN_V, LIN_O, LIN_GATE, LIN_UP, LIN_DOWN, LIN_PER_LAYER };

struct tp_model {
	tp_model_config cfg;
	tp_pool *pool;
	/* [vocab][hidden] as stored: fp32, or raw little-endian bf16/fp16 bytes
	 * widened a row at a time (tp_model_embed_row), so a half-precision
	 * model holds no fp32 copy of its embedding. */
	void *embed;
	tp_dtype embed_dtype;
	float *norms;      /* per layer: attention then MLP RMSNorm; then final */
	size_t nlinear;    /* LIN_PER_LAYER * layers + 1 (lm_head last) */
	tp_linear **linear;
	char **names;
	uint64_t params;
};

/* Row id of the embedding as fp32 into out[hidden]. */
void tp_model_embed_row(const tp_model *m, int32_t id, float *out);

/* True when the AVX2/FMA kernels may run (CPU has them, not forced off). */
bool tp_runtime_use_avx2(void);

#endif
