/*
 * tenpak optimize: quantization candidates for a model's linear layers and
 * their measured quality.
 *
 * Contract:
 * - A *format* (tp_quant_format) is a packed storage layout for one weight
 *   matrix w[rows = out][cols = in] (row-major, as Hugging Face stores it):
 *   a plain-C reference quantize/dequantize pair, its packed size and its
 *   exact bits per weight, scales and zeros included. Formats do no I/O and
 *   never fail on any float input (NaN/Inf included): they can be fuzzed.
 * - A *method* decides the quantized values: round to nearest (RTN) for
 *   every format, and GPTQ / AWQ for the group formats, which need
 *   calibration statistics of the layer's inputs (tp_quant_calib).
 * - A *candidate* is a method with a format ("gptq4_g128" = GPTQ into the
 *   4-bit g128 group format); its name is what the CLI and JSON use.
 * - Embeddings, norms and lm_head stay in the source precision; the 7 linear
 *   layers of every decoder block (q, k, v, o, gate, up, down) are quantized.
 */
#ifndef TP_OPTIMIZE_H
#define TP_OPTIMIZE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tp_common.h"

/* ---- calibration statistics of one linear layer's inputs ----------------- */

typedef struct tp_quant_calib {
	size_t cols;         /* input dimension */
	uint64_t nsamples;   /* input rows (tokens) seen */
	double *abs_mean;    /* [cols] mean |x_j| (AWQ scales) */
	double *sq_sum;      /* [cols] sum x_j^2 (importance |w|*||x||) */
	double *hessian;     /* [cols*cols] sum x x^T, or NULL when not kept (GPTQ) */
} tp_quant_calib;

/* ---- storage formats ------------------------------------------------------ */

typedef struct tp_quant_format {
	const char *name; /* "int8", "nf4", "nf4_dq", "rtn4_g128", "q8_0", "q4_0", "q4_k", ... */
	/* Bytes of the packed form of a rows x cols matrix. */
	size_t (*packed_size)(size_t rows, size_t cols);
	/* Round-to-nearest quantization of w into packed (packed_size bytes).
	 * calib may be NULL except for formats that need it (they say so with
	 * TP_EINVAL). */
	int (*quantize)(const float *w, size_t rows, size_t cols, const tp_quant_calib *calib,
			void *packed);
	/* w = the values packed stands for. */
	void (*dequantize)(const void *packed, size_t rows, size_t cols, float *w);
} tp_quant_format;

/* The format called name, or NULL. */
const tp_quant_format *tp_quant_format_find(const char *name);
/* All formats, NULL-terminated. */
const tp_quant_format *const *tp_quant_formats(void);
/* Exact bits per weight of f for a rows x cols matrix. */
double tp_quant_bpw(const tp_quant_format *f, size_t rows, size_t cols);

/* ---- GGUF ------------------------------------------------------------------
 * A GGUF v3 writer (the file format of llama.cpp), for cross-checking tenpak's
 * quantized models with a real engine. It takes tensors already packed in a
 * ggml type, so any packer (F32, Q8_0, Q4_0, Q4_K, ...) can feed it. Tensor
 * data is referenced, not copied: it must stay valid until tp_gguf_write.
 */

/* ggml type ids (ggml.h enum ggml_type). */
typedef enum tp_ggml_type {
	TP_GGML_F32 = 0,
	TP_GGML_F16 = 1,
	TP_GGML_Q4_0 = 2,
	TP_GGML_Q8_0 = 8,
	TP_GGML_Q4_K = 12,
	TP_GGML_BF16 = 30,
} tp_ggml_type;

#define TP_GGUF_ALIGNMENT 32u
#define TP_GGUF_MAX_DIMS 4u

/* Bytes of one row of ne0 elements of type t; 0 when the type is unknown or
 * its block size does not divide ne0. */
size_t tp_ggml_row_size(tp_ggml_type t, uint64_t ne0);

typedef struct tp_gguf tp_gguf;

int tp_gguf_new(tp_gguf **out);
void tp_gguf_free(tp_gguf *g);
/* Metadata key/value pairs, written in the order added. */
int tp_gguf_kv_str(tp_gguf *g, const char *key, const char *val);
int tp_gguf_kv_u32(tp_gguf *g, const char *key, uint32_t val);
int tp_gguf_kv_f32(tp_gguf *g, const char *key, float val);
int tp_gguf_kv_bool(tp_gguf *g, const char *key, bool val);
int tp_gguf_kv_str_array(tp_gguf *g, const char *key, const char *const *val, size_t n);
int tp_gguf_kv_i32_array(tp_gguf *g, const char *key, const int32_t *val, size_t n);
/* A tensor of ndim dims; ne[0] varies fastest (a Hugging Face weight
 * [out][in] is ne = {in, out}). size must be the packed size of that shape
 * in type t (TP_EINVAL otherwise). */
int tp_gguf_add_tensor(tp_gguf *g, const char *name, tp_ggml_type t, const uint64_t *ne,
		       unsigned ndim, const void *data, size_t size);
/* Write the file (replacing path). */
int tp_gguf_write(const tp_gguf *g, const char *path);

/* Llama models: the hyperparameters as llama.cpp's "llama" architecture reads
 * them, given as plain numbers so this needs no runtime. */
typedef struct tp_gguf_llama {
	const char *name;
	uint32_t ctx, hidden, intermediate, layers, heads, kv_heads, head_dim, vocab;
	float rms_eps, rope_theta;
} tp_gguf_llama;

int tp_gguf_llama_meta(tp_gguf *g, const tp_gguf_llama *h);
/* A byte-level vocabulary of 256 tokens, token id = byte value, as llama.cpp's
 * "gpt2" BPE tokenizer with no merges: token texts are GPT-2's
 * byte-to-unicode characters, so tokenizing text is the identity on bytes. */
int tp_gguf_byte_vocab(tp_gguf *g);
/* llama.cpp's name of a Hugging Face tensor ("model.layers.3.mlp.up_proj.weight"
 * -> "blk.3.ffn_up.weight") into out[cap]; TP_ENOTFOUND for other names. */
int tp_gguf_llama_tensor_name(const char *hf, char *out, size_t cap);
/* Reorder the rows of a q/k projection w[heads * head_dim][cols] from HF's
 * rotate-half RoPE layout to llama.cpp's interleaved one (the permute of
 * convert_hf_to_gguf.py): dst row h*hd + 2i + j = src row h*hd + j*hd/2 + i. */
void tp_gguf_rope_permute(const float *src, float *dst, size_t heads, size_t head_dim,
			  size_t cols);

#endif
