/*
 * tenpak runtime: a CPU runtime that measures the quality of Llama-family
 * causal LMs (Llama, Mistral, Qwen2) stored as Hugging Face safetensors.
 *
 * - tp_model_*: config.json + (sharded) safetensors weights, fp32 compute.
 *   Every linear layer is reached through tp_linear, so the optimizer can
 *   substitute quantized or dequantized layers without touching the loader.
 * - tp_tokenizer_*: tokenizer.json BPE, byte-level (GPT-2, Llama-3, Qwen2)
 *   or SentencePiece-style with metaspace and byte fallback (Llama-2, Mistral).
 * - tp_runtime_eval_*: perplexity (llama.cpp and Hugging Face strided conventions),
 *   KL divergence against a reference model (or its log-probs computed once),
 *   and tokens/s.
 *
 * All functions that can fail return 0 or a negative TP_E* code and set
 * tp_error_last().
 */
#ifndef TP_RUNTIME_H
#define TP_RUNTIME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tp_common.h"

/* ---- thread pool -------------------------------------------------------- */

typedef struct tp_pool tp_pool;

/* Body of a parallel loop: runs task `i` of `n`. Must not fail. */
typedef void (*tp_pool_fn)(void *ctx, size_t i, size_t n);

/* threads 0: all online cores. The calling thread is one of the workers. */
int tp_pool_new(tp_pool **out, unsigned threads);
void tp_pool_free(tp_pool *p);
unsigned tp_pool_threads(const tp_pool *p);
/* Run fn(ctx, i, n) for every i < n across the pool; returns when all are
 * done. pool may be NULL (runs inline). Not reentrant. */
void tp_pool_run(tp_pool *p, size_t n, tp_pool_fn fn, void *ctx);

/* ---- fp32 matmul ------------------------------------------------------- */

/* Name of the kernel chosen at run time ("avx2+fma" or "portable"). */
const char *tp_matmul_kernel(void);
/* Force the portable kernel (tests compare both); returns the old setting. */
bool tp_matmul_force_portable(bool on);
/* y[t * ldy + r] = bias[r] + sum_k x[t * in + k] * w[r * in + k] for t < n,
 * r < rows: the dense layer's kernel on weights given row-major, such as a
 * block of rows just widened from a packed format. Same summation order as
 * a dense layer of those rows (when rows start at a multiple of 16). Runs on
 * the calling thread; bias may be NULL; scratch holds
 * tp_matmul_rows_scratch(rows, in) floats. */
size_t tp_matmul_rows_scratch(size_t rows, size_t in);
void tp_matmul_rows(const float *w, size_t rows, size_t in, const float *bias,
		    const float *x, size_t n, float *y, size_t ldy, float *scratch);

/* ---- linear layers ----------------------------------------------------- */

typedef struct tp_linear tp_linear;

typedef struct tp_linear_ops {
	/* y[n][out] = x[n][in] * W^T + bias. Called from one thread; may use
	 * pool (possibly NULL) for parallelism. Must not fail. */
	void (*forward)(const tp_linear *l, const float *x, size_t n, float *y,
			tp_pool *pool);
	void (*free)(tp_linear *l);
	/* Bytes of weights held (for reports); may be NULL. */
	size_t (*weight_bytes)(const tp_linear *l);
} tp_linear_ops;

/* Implementations embed this as their first member. */
struct tp_linear {
	const tp_linear_ops *ops;
	size_t in, out;
};

/*
 * The default layer: fp32 weights w[out][in] (row-major, as stored by HF),
 * repacked for the blocked kernel; bias may be NULL. Both are copied, so a
 * quantizer can dequantize into a scratch buffer and hand it over.
 */
int tp_linear_dense_new(tp_linear **out, const float *w, const float *bias,
			size_t out_dim, size_t in_dim);
void tp_linear_free(tp_linear *l);
static inline void tp_linear_forward(const tp_linear *l, const float *x, size_t n,
				     float *y, tp_pool *pool)
{
	l->ops->forward(l, x, n, y, pool);
}

/* ---- models ------------------------------------------------------------ */

typedef enum tp_arch {
	TP_ARCH_LLAMA,
	TP_ARCH_MISTRAL,
	TP_ARCH_QWEN2,
} tp_arch;

typedef enum tp_rope_scaling {
	TP_ROPE_SCALING_NONE,
	TP_ROPE_SCALING_LINEAR, /* positions divided by rope_factor */
	TP_ROPE_SCALING_LLAMA3, /* Llama-3.1/3.2: low frequencies slowed down */
} tp_rope_scaling;

typedef struct tp_model_config {
	tp_arch arch;
	size_t hidden, intermediate, layers, heads, kv_heads, head_dim, vocab;
	size_t max_positions; /* 0 when absent */
	size_t sliding_window; /* 0 when absent or disabled */
	double rms_eps, rope_theta;
	tp_rope_scaling rope_scaling;
	double rope_factor; /* 1 without scaling */
	double rope_low_freq_factor, rope_high_freq_factor, rope_original_max; /* llama3 */
	bool tie_embeddings;
	bool qkv_bias;  /* Qwen2, or attention_bias in Llama */
	bool out_bias;  /* attention_bias also biases o_proj in Llama */
	int64_t bos_id; /* -1 when config.json has none */
	int64_t eos_id;
} tp_model_config;

/* Parse config.json text; rejects unsupported architectures and options. */
int tp_model_config_parse(tp_model_config *out, const char *json, size_t len);

/*
 * Called once per linear layer while loading, with its HF name without
 * ".weight" ("model.layers.3.mlp.down_proj", "lm_head") and fp32 weights
 * w[out][in] valid only during the call. Return 0 with *made set, or
 * TP_ENOTFOUND to get the default dense layer, or an error to abort.
 */
typedef int (*tp_linear_factory_fn)(void *ctx, const char *name, const float *w,
				    const float *bias, size_t out_dim, size_t in_dim,
				    tp_linear **made);

typedef struct tp_model_opts {
	/* model.safetensors, a shard index, or NULL to look in the directory. */
	const char *weights;
	unsigned threads; /* 0: all online cores */
	tp_linear_factory_fn make_linear;
	void *make_linear_ctx;
} tp_model_opts;

typedef struct tp_model tp_model;

/* Load dir/config.json and the weights (dir/model.safetensors or
 * dir/model.safetensors.index.json unless opts->weights says otherwise). */
int tp_model_load(tp_model **out, const char *dir, const tp_model_opts *opts);
void tp_model_free(tp_model *m);
const tp_model_config *tp_model_get_config(const tp_model *m);
tp_pool *tp_model_pool(const tp_model *m);
/* Number of linear layers and their names (7 per layer, then "lm_head"). */
size_t tp_model_linear_count(const tp_model *m);
const char *tp_model_linear_name(const tp_model *m, size_t i);
tp_linear *tp_model_linear(const tp_model *m, size_t i);
/* Replace layer i (same in/out dims) and free the old one; takes
 * ownership of l on success only. */
int tp_model_set_linear(tp_model *m, size_t i, tp_linear *l);
/* The same, but the old layer is handed back in *old instead of freed (a
 * wrapper that observes a layer's inputs can be put in and taken out). */
int tp_model_swap_linear(tp_model *m, size_t i, tp_linear *l, tp_linear **old);
/* The RMSNorm weights ([hidden] floats) in front of layer's attention
 * (which 0, input_layernorm) or MLP (which 1, post_attention_layernorm),
 * writable so a quantizer can fold per-channel scales into them (AWQ);
 * NULL when layer or which is out of range. */
float *tp_model_norm_weights(tp_model *m, size_t layer, int which);
/* Every RMSNorm weight, [2 * layers + 1][hidden] floats: per layer the
 * attention's then the MLP's (as tp_model_norm_weights gives them), then
 * the final norm (model.norm): what a forward pass on another device
 * uploads. */
const float *tp_model_norms(const tp_model *m);
/* Total parameters (embedding + linear + norms). */
uint64_t tp_model_params(const tp_model *m);

/* A KV cache with scratch space for batches of up to max_batch tokens. */
typedef struct tp_kv tp_kv;

int tp_kv_new(tp_kv **out, const tp_model *m, size_t max_ctx, size_t max_batch);
void tp_kv_free(tp_kv *kv);
/* Forget all cached positions. */
void tp_kv_reset(tp_kv *kv);
size_t tp_kv_pos(const tp_kv *kv);

/*
 * Feed n tokens at the next positions of kv. Logits of rows
 * logits_from..n-1 are written to logits[(n - logits_from) * vocab]
 * (none when logits_from >= n; logits may then be NULL). TP_ETOOBIG when
 * the cache would overflow, TP_EINVAL for an id outside the vocabulary.
 */
int tp_model_forward(const tp_model *m, tp_kv *kv, const int32_t *ids, size_t n,
		     size_t logits_from, float *logits);

/* The hidden states entering layer 0: embedding rows of ids into
 * x[n][hidden]. TP_EINVAL for an id outside the vocabulary. */
int tp_model_embed(const tp_model *m, const int32_t *ids, size_t n, float *x);
/* Run decoder layers first..last-1 on the hidden states x[n][hidden] (in
 * place) at the next n positions of kv, n <= its batch: the same arithmetic
 * as those layers inside tp_model_forward, so a quantizer can keep the
 * states entering one block and run only that block (kv's entries for other
 * layers are left as they were). */
int tp_model_forward_layers(const tp_model *m, tp_kv *kv, size_t first, size_t last, float *x,
			    size_t n);

/* ---- tokenizer ---------------------------------------------------------- */

typedef struct tp_tokenizer tp_tokenizer;

/* Largest tokenizer.json accepted. */
#define TP_TOKENIZER_JSON_MAX (256u << 20)

int tp_tokenizer_load(tp_tokenizer **out, const char *path);
int tp_tokenizer_parse(tp_tokenizer **out, const char *json, size_t len);
void tp_tokenizer_free(tp_tokenizer *t);
/*
 * Encode UTF-8 text without any BOS/EOS. Added tokens in the text are
 * matched; special ones only when parse_special (Hugging Face does, llama.cpp
 * perplexity does not). *ids is malloc'd.
 */
int tp_tokenizer_encode(const tp_tokenizer *t, const char *text, size_t len,
			bool parse_special, int32_t **ids, size_t *n);
/* Id of the token the post-processor puts first, -1 when it adds none. */
int32_t tp_tokenizer_bos(const tp_tokenizer *t);
/* Token text by id (NULL when unknown); vocabulary size incl. added. */
const char *tp_tokenizer_token(const tp_tokenizer *t, int32_t id);
size_t tp_tokenizer_size(const tp_tokenizer *t);
/* "byte-level BPE" or "sentencepiece BPE". */
const char *tp_tokenizer_kind(const tp_tokenizer *t);

/* BOS to use for a model: the config's bos_token_id when the tokenizer adds
 * a leading special token (its own id if config has none), else -1. */
int32_t tp_runtime_choose_bos(const tp_model_config *c, const tp_tokenizer *t);

/* ---- evaluation --------------------------------------------------------- */

typedef enum tp_ppl_mode {
	/* llama.cpp: windows of ctx tokens, BOS first, second half scored. */
	TP_PPL_MODE_LLAMACPP,
	/* HF perplexity guide: windows of ctx advancing by stride, each token
	 * scored once with up to ctx tokens of context. */
	TP_PPL_MODE_STRIDED,
} tp_ppl_mode;

const char *tp_ppl_mode_name(tp_ppl_mode m);
int tp_ppl_mode_from_name(const char *s, tp_ppl_mode *out);

typedef struct tp_eval_opts {
	tp_ppl_mode mode;
	size_t ctx;        /* 0: 512 */
	size_t stride;     /* strided mode; 0: ctx / 2 */
	size_t max_tokens; /* 0: all; limits the text tokens used */
	int32_t bos;       /* -1: none */
	tp_progress_fn progress; /* done/total in windows */
	void *progress_ctx;
} tp_eval_opts;

typedef struct tp_eval_result {
	tp_ppl_mode mode;
	size_t ctx, stride;
	size_t tokens;   /* text tokens used */
	size_t windows;
	size_t scored;   /* predictions that counted */
	double nll_mean; /* nats per scored token */
	double ppl, ppl_err;
	double seconds;     /* wall time of all forward passes */
	double tokens_per_s; /* tokens fed (all models) per second */
	/* With a reference model: KL(ref || model) per position, in nats. */
	bool has_kl;
	double kl_mean, kl_err, kl_p99, kl_max;
	double same_top_pct, same_top_err;
} tp_eval_result;

/* Score ids (text tokens, no BOS) with model m; ref (NULL for none) adds KL
 * statistics and must share the vocabulary. */
int tp_runtime_eval_perplexity(const tp_model *m, const tp_model *ref, const int32_t *ids,
			       size_t n, const tp_eval_opts *opts, tp_eval_result *out);

/*
 * A reference scored once: tp_runtime_eval_reference scores ids with m as
 * tp_runtime_eval_perplexity does without a reference (same *out) and keeps
 * m's log-probs of every scored position (in an unlinked file in $TMPDIR,
 * read back a window at a time: positions x vocab x 4 bytes of disk, not of
 * memory). tp_runtime_eval_perplexity_ref then gives the same result as
 * tp_runtime_eval_perplexity(model, m, ...) with the same ids and opts (other
 * ids or opts: TP_EINVAL) without running m again.
 */
typedef struct tp_eval_ref tp_eval_ref;

int tp_runtime_eval_reference(tp_eval_ref **ref, const tp_model *m, const int32_t *ids,
			      size_t n, const tp_eval_opts *opts, tp_eval_result *out);
int tp_runtime_eval_perplexity_ref(const tp_model *m, const tp_eval_ref *ref,
				   const int32_t *ids, size_t n, const tp_eval_opts *opts,
				   tp_eval_result *out);
void tp_runtime_eval_ref_free(tp_eval_ref *r);

/*
 * The same scoring around a forward pass run elsewhere (optimize/cuda/):
 * run feeds ids[n] at positions 0..n-1 of an empty cache and writes the
 * logits of rows logits_from..n-1 into logits[(n - logits_from) * vocab]
 * (n never exceeds opts' ctx). The windows, BOS rule, log-softmax, KL
 * sums and statistics are the CPU's, so two forward passes' figures
 * differ only by their logits.
 */
typedef struct tp_eval_forward {
	size_t vocab;
	int (*run)(void *ctx, const int32_t *ids, size_t n, size_t logits_from, float *logits);
	void *ctx;
} tp_eval_forward;

/* tp_runtime_eval_perplexity_ref (ref NULL: without KL) of f. */
int tp_runtime_eval_forward(const tp_eval_forward *f, const tp_eval_ref *ref, const int32_t *ids,
			    size_t n, const tp_eval_opts *opts, tp_eval_result *out);
/* tp_runtime_eval_reference of f. */
int tp_runtime_eval_forward_reference(tp_eval_ref **ref, const tp_eval_forward *f,
				      const int32_t *ids, size_t n, const tp_eval_opts *opts,
				      tp_eval_result *out);

typedef struct tp_speed_result {
	size_t prefill_tokens, decode_tokens;
	double prefill_tps, decode_tps;
	/* Per-token decode latency percentiles (linear interpolation between
	 * the sorted step times) and mean, in milliseconds; 0 without decode. */
	double latency_p50_ms, latency_p95_ms, latency_p99_ms, latency_mean_ms;
} tp_speed_result;

/* Time a prefill of n_prefill tokens (a fresh cache, one batch) and then
 * n_decode single-token steps with the KV cache, each timed on its own. */
int tp_runtime_eval_speed(const tp_model *m, const int32_t *ids, size_t n_prefill,
			  size_t n_decode, tp_speed_result *out);

/* log-softmax of one row of logits into out (may alias), computed in
 * double for the normalizer. */
void tp_runtime_log_softmax(const float *logits, size_t n, float *out);

#endif
