/*
 * tp-gguf: write a Llama model directory (config.json + model.safetensors,
 * F32 or BF16 weights) as a GGUF file, for the llama.cpp cross-check
 * (tests/e2e/t0160-gguf-llamacpp.sh).
 *
 *   tp-gguf MODEL_DIR OUT.gguf [f32|q8_0|q4_0|q4_k]
 *
 * f32 writes every tensor in F32 with the byte-level vocabulary (token id =
 * byte value), so it only suits byte-level models such as the fixtures.
 * q8_0, q4_0 and q4_k load the model with the 7 linear layers of every block
 * packed in tenpak's format of that name (bit-exact ggml blocks) and write it
 * with the library's export (tp_optimize_export_gguf, optimize/export.c): the
 * same file `tenpak optimize --export` writes.
 */
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

static int run_f32(const char *dir, const char *out_path)
{
	tp_buf cfg = TP_BUF_INIT(CONFIG_MAX);
	tp_model_config c;
	tp_safetensors *st = NULL;
	tp_gguf *g = NULL;
	void **bufs = NULL; /* each tensor's data, F32 or packed */
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
	if ((rc = tp_gguf_llama_meta(g, &h)) < 0 || (rc = tp_gguf_kv_u32(g, "general.file_type", 0)) < 0 ||
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
		float *f = NULL;
		if ((rc = tp_gguf_llama_tensor_name(t->name, name, sizeof(name))) < 0 ||
		    (rc = read_f32(fd, t, &f)) < 0)
			goto done;
		bufs[i] = f;
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
		size_t size = rows * cols * sizeof(float);
		if ((rc = tp_gguf_add_tensor(g, name, TP_GGML_F32, ne, t->ndim, bufs[i], size)) < 0)
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

/* dir with its block layers packed in format, exported as GGUF. */
static int run_quant(const char *dir, const char *out_path, const char *format)
{
	tp_optimize_packed_ctx ctx = { .format = tp_quant_format_find(format) };
	tp_model_opts o = { .threads = 1, .make_linear = tp_optimize_make_linear_packed,
			    .make_linear_ctx = &ctx };
	tp_model *m = NULL;
	int rc = tp_model_load(&m, dir, &o);
	if (rc == 0)
		rc = tp_optimize_export_gguf(m, dir, NULL, format, out_path);
	tp_model_free(m);
	return rc;
}

int main(int argc, char **argv)
{
	static const char *const quant[] = { "q8_0", "q4_0", "q4_k" };
	const char *mode = argc == 3 ? "f32" : argc == 4 ? argv[3] : "";
	bool ok = !strcmp(mode, "f32");
	for (size_t i = 0; i < sizeof(quant) / sizeof(quant[0]); i++)
		ok = ok || !strcmp(mode, quant[i]);
	if (!ok) {
		fprintf(stderr, "usage: tp-gguf MODEL_DIR OUT.gguf [f32|q8_0|q4_0|q4_k]\n");
		return 2;
	}
	if ((!strcmp(mode, "f32") ? run_f32(argv[1], argv[2])
				  : run_quant(argv[1], argv[2], mode)) < 0) {
		fprintf(stderr, "tp-gguf: %s\n", tp_error_last());
		return 1;
	}
	return 0;
}
