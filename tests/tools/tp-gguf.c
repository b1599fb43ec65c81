/*
 * tp-gguf: write a Llama model directory (config.json + model.safetensors,
 * F32 or BF16 weights) as a GGUF file, for the llama.cpp cross-check
 * (tests/e2e/t0160-gguf-llamacpp.sh).
 *
 *   tp-gguf MODEL_DIR OUT.gguf [f32|q8_0]
 *
 * q8_0 packs the 7 linear layers of every block with a small Q8_0 packer of
 * its own (ggml's quantize_row_q8_0_ref); everything else stays F32.
 *
 * The tokenizer written is the byte-level one (token id = byte value), so it
 * only suits byte-level models such as the fixtures.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tp_common.h"
#include "tp_delta.h"
#include "tp_optimize.h"
#include "tp_runtime.h"

#define CONFIG_MAX (4u << 20)
#define TENSOR_MAX ((uint64_t)1 << 34)

/* Tensor t of the open file fd as fp32 in a new buffer (F32 or BF16). */
static int read_f32(int fd, const tp_st_tensor *t, float **out)
{
	unsigned w = tp_dtype_size(t->dtype);
	if (t->dtype != TP_DTYPE_F32 && t->dtype != TP_DTYPE_BF16)
		return tp_error_set(TP_EUNSUPPORTED, "tensor %s: dtype %s (F32 or BF16 only)",
				    t->name, tp_dtype_name(t->dtype));
	if (t->size > TENSOR_MAX || t->size % w)
		return tp_error_set(TP_ETOOBIG, "tensor %s: %llu bytes", t->name,
				    (unsigned long long)t->size);
	size_t n = (size_t)t->size / w;
	unsigned char *raw = malloc((size_t)t->size + 1);
	float *f = malloc(n * sizeof(float) + 1);
	int rc = 0;
	if (!raw || !f) {
		rc = tp_error_set(TP_ENOMEM, "out of memory for %s", t->name);
		goto done;
	}
	if (pread(fd, raw, (size_t)t->size, (off_t)t->offset) != (ssize_t)t->size) {
		rc = tp_error_set(TP_EIO, "reading tensor %s", t->name);
		goto done;
	}
	for (size_t i = 0; i < n; i++) {
		uint32_t bits = w == 2 ? (uint32_t)(raw[2 * i] | raw[2 * i + 1] << 8) << 16
				       : (uint32_t)raw[4 * i] | (uint32_t)raw[4 * i + 1] << 8 |
						 (uint32_t)raw[4 * i + 2] << 16 |
						 (uint32_t)raw[4 * i + 3] << 24;
		memcpy(&f[i], &bits, sizeof(bits));
	}
	*out = f;
	f = NULL;
done:
	free(raw);
	free(f);
	return rc;
}

/* fp32 to IEEE fp16, round to nearest even (as GGML_FP32_TO_FP16). */
static uint16_t to_f16(float f)
{
	uint32_t x;
	memcpy(&x, &f, sizeof(x));
	uint32_t sign = (x >> 16) & 0x8000, e = (x >> 23) & 0xff, m = x & 0x7fffff;
	if (e == 0xff)
		return (uint16_t)(sign | 0x7c00 | (m ? 0x200 : 0));
	int exp = (int)e - 127 + 15;
	if (exp >= 31)
		return (uint16_t)(sign | 0x7c00);
	if (exp <= 0) { /* subnormal or zero */
		if (exp < -10)
			return (uint16_t)sign;
		m |= 0x800000;
		unsigned shift = (unsigned)(14 - exp);
		uint32_t h = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
		if (rem > half || (rem == half && (h & 1)))
			h++;
		return (uint16_t)(sign | h);
	}
	uint32_t h = (uint32_t)exp << 10 | m >> 13, rem = m & 0x1fff;
	if (rem > 0x1000 || (rem == 0x1000 && (h & 1)))
		h++; /* may carry into the exponent, which is still right */
	return (uint16_t)(sign | h);
}

/* ggml quantize_row_q8_0_ref over n values (n % 32 == 0) into 34-byte blocks. */
static void pack_q8_0(const float *x, size_t n, unsigned char *out)
{
	for (size_t b = 0; b < n / 32; b++, x += 32, out += 34) {
		float amax = 0;
		for (int j = 0; j < 32; j++)
			amax = fabsf(x[j]) > amax ? fabsf(x[j]) : amax;
		float d = amax / 127, id = d ? 1.0f / d : 0.0f;
		uint16_t h = to_f16(d);
		unsigned char blk[34] = { (unsigned char)h, (unsigned char)(h >> 8) };
		for (int j = 0; j < 32; j++)
			blk[2 + j] = (unsigned char)(int8_t)roundf(x[j] * id);
		memcpy(out, blk, sizeof(blk)); /* out may overlap x (packing in place) */
	}
}

static bool is_block_linear(const char *gguf_name)
{
	static const char *const names[] = { ".attn_q.", ".attn_k.", ".attn_v.", ".attn_output.",
					     ".ffn_gate.", ".ffn_up.", ".ffn_down." };
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (strstr(gguf_name, names[i]))
			return true;
	return false;
}

static int run(const char *dir, const char *out_path, bool q8)
{
	tp_buf cfg = TP_BUF_INIT(CONFIG_MAX);
	tp_model_config c;
	tp_safetensors *st = NULL;
	tp_gguf *g = NULL;
	float **bufs = NULL;
	char *path = NULL;
	int fd = -1, rc;
	if ((rc = tp_path_join(&path, dir, "config.json")) < 0 ||
	    (rc = tp_fs_read_regular(path, &cfg)) < 0 ||
	    (rc = tp_model_config_parse(&c, cfg.ptr ? cfg.ptr : "", cfg.len)) < 0)
		goto done;
	if (c.arch != TP_ARCH_LLAMA || c.tie_embeddings || c.qkv_bias || c.out_bias ||
	    c.rope_scaling != TP_ROPE_SCALING_NONE || c.head_dim % 2) {
		rc = tp_error_set(TP_EUNSUPPORTED, "%s: only plain Llama models (no tied "
				  "embeddings, biases or RoPE scaling)", path);
		goto done;
	}
	free(path);
	path = NULL;
	if ((rc = tp_path_join(&path, dir, "model.safetensors")) < 0 ||
	    (rc = tp_safetensors_open(&st, path)) < 0 || (rc = tp_fs_open_regular(path, &fd)) < 0 ||
	    (rc = tp_gguf_new(&g)) < 0)
		goto done;
	tp_gguf_llama h = {
		.name = "tenpak",
		.ctx = (uint32_t)(c.max_positions ? c.max_positions : 2048),
		.hidden = (uint32_t)c.hidden, .intermediate = (uint32_t)c.intermediate,
		.layers = (uint32_t)c.layers, .heads = (uint32_t)c.heads,
		.kv_heads = (uint32_t)c.kv_heads, .head_dim = (uint32_t)c.head_dim,
		.vocab = (uint32_t)c.vocab, .rms_eps = (float)c.rms_eps,
		.rope_theta = (float)c.rope_theta,
	};
	if ((rc = tp_gguf_llama_meta(g, &h)) < 0 || (rc = tp_gguf_kv_u32(g, "general.file_type", q8 ? 7 : 0)) < 0 ||
	    (rc = tp_gguf_byte_vocab(g)) < 0)
		goto done;
	if (!(bufs = calloc(st->ntensors + 1, sizeof(*bufs)))) {
		rc = tp_error_set(TP_ENOMEM, "out of memory");
		goto done;
	}
	for (size_t i = 0; i < st->ntensors; i++) {
		const tp_st_tensor *t = &st->tensors[i];
		char name[64];
		uint64_t ne[TP_GGUF_MAX_DIMS];
		if (t->ndim < 1 || t->ndim > 2) {
			rc = tp_error_set(TP_EUNSUPPORTED, "tensor %s: %u dimensions", t->name, t->ndim);
			goto done;
		}
		if ((rc = tp_gguf_llama_tensor_name(t->name, name, sizeof(name))) < 0 ||
		    (rc = read_f32(fd, t, &bufs[i])) < 0)
			goto done;
		for (unsigned d = 0; d < t->ndim; d++)
			ne[d] = t->shape[t->ndim - 1 - d];
		size_t rows = t->ndim == 2 ? (size_t)t->shape[0] : 1, cols = (size_t)ne[0];
		bool is_q = strstr(name, ".attn_q.") != NULL, is_k = strstr(name, ".attn_k.") != NULL;
		if (is_q || is_k) {
			size_t heads = is_q ? c.heads : c.kv_heads;
			float *p = malloc(rows * cols * sizeof(float) + 1);
			if (!p || rows != heads * c.head_dim) {
				free(p);
				rc = p ? tp_error_set(TP_ECORRUPT, "tensor %s: %zu rows", t->name, rows)
				       : tp_error_set(TP_ENOMEM, "out of memory");
				goto done;
			}
			tp_gguf_rope_permute(bufs[i], p, heads, c.head_dim, cols);
			free(bufs[i]);
			bufs[i] = p;
		}
		tp_ggml_type type = TP_GGML_F32;
		size_t size = rows * cols * sizeof(float);
		if (q8 && is_block_linear(name)) {
			type = TP_GGML_Q8_0;
			size = tp_ggml_row_size(type, cols) * rows;
			if (cols % 32) {
				rc = tp_error_set(TP_EUNSUPPORTED, "tensor %s: %zu columns are not "
						  "whole Q8_0 blocks", t->name, cols);
				goto done;
			}
			/* Packed in place: 34 bytes per 32 floats fit in their 128. */
			pack_q8_0(bufs[i], rows * cols, (unsigned char *)bufs[i]);
		}
		if ((rc = tp_gguf_add_tensor(g, name, type, ne, t->ndim, bufs[i], size)) < 0)
			goto done;
	}
	rc = tp_gguf_write(g, out_path);
done:
	if (bufs)
		for (size_t i = 0; i < st->ntensors; i++)
			free(bufs[i]);
	free(bufs);
	if (fd >= 0)
		close(fd);
	tp_gguf_free(g);
	tp_safetensors_free(st);
	tp_buf_free(&cfg);
	free(path);
	return rc;
}

int main(int argc, char **argv)
{
	bool q8 = argc == 4 && !strcmp(argv[3], "q8_0");
	if (argc < 3 || argc > 4 || (argc == 4 && !q8 && strcmp(argv[3], "f32"))) {
		fprintf(stderr, "usage: tp-gguf MODEL_DIR OUT.gguf [f32|q8_0]\n");
		return 2;
	}
	if (run(argv[1], argv[2], q8) < 0) {
		fprintf(stderr, "tp-gguf: %s\n", tp_error_last());
		return 1;
	}
	return 0;
}
