/*
 * tp-gguf: write a Llama model directory (config.json + model.safetensors,
 * F32 or BF16 weights) as a GGUF file, for the llama.cpp cross-check
 * (tests/e2e/t0160-gguf-llamacpp.sh).
 *
 *   tp-gguf MODEL_DIR OUT.gguf [f32|q8_0|q4_0|q4_k]
 *
 * q8_0, q4_0 and q4_k pack the 7 linear layers of every block with tenpak's
 * own format of that name (tp_quant_format_find, bit-exact ggml blocks); a
 * row the block does not divide is stored in the format's fallback (Q5_0 or
 * F16, tp_quant_fallback), as the format itself stores it. Everything else
 * stays F32.
 *
 * The tokenizer written is the byte-level one (token id = byte value), so it
 * only suits byte-level models such as the fixtures.
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

/* A quantization mode: the format's name, its ggml type and the GGUF
 * general.file_type (llama.cpp's LLAMA_FTYPE_MOSTLY_*). */
typedef struct {
	const char *name;
	tp_ggml_type type;
	uint32_t file_type;
} mode;

static const mode modes[] = {
	{ "f32", TP_GGML_F32, 0 },
	{ "q8_0", TP_GGML_Q8_0, 7 },
	{ "q4_0", TP_GGML_Q4_0, 2 },
	{ "q4_k", TP_GGML_Q4_K, 14 }, /* Q4_K_S: every block layer in Q4_K */
};

/* The ggml type the format of m stores a cols-wide row in. */
static tp_ggml_type stored_type(const mode *m, size_t cols)
{
	const char *fb = tp_quant_fallback(m->name, cols);
	if (!fb)
		return m->type;
	return strcmp(fb, "q5_0") == 0 ? TP_GGML_Q5_0 : TP_GGML_F16;
}

/* w (rows x cols fp32) packed by m's format into a new buffer *out of *size
 * bytes, laid out as a GGUF tensor of type *type. */
static int pack(const mode *m, const char *tensor, const float *w, size_t rows, size_t cols,
		void **out, size_t *size, tp_ggml_type *type)
{
	const tp_quant_format *f = tp_quant_format_find(m->name);
	tp_ggml_type t = stored_type(m, cols);
	if (!f)
		return tp_error_set(TP_EUNSUPPORTED, "no format %s", m->name);
	size_t n = f->packed_size(rows, cols);
	/* The format's layout must be the GGUF tensor's, byte for byte. */
	if (n != tp_ggml_row_size(t, cols) * rows)
		return tp_error_set(TP_EUNSUPPORTED, "tensor %s: %s packs %zu x %zu into %zu bytes, "
				    "not whole ggml type %d rows", tensor, m->name, rows, cols, n, (int)t);
	void *p = malloc(n + 1);
	if (!p)
		return tp_error_set(TP_ENOMEM, "out of memory for %s", tensor);
	int rc = f->quantize(w, rows, cols, NULL, p);
	if (rc < 0) {
		free(p);
		return tp_error_wrap(rc, "tensor %s: %s", tensor, m->name);
	}
	*out = p;
	*size = n;
	*type = t;
	return 0;
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

static int run(const char *dir, const char *out_path, const mode *m)
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
	if ((rc = tp_gguf_llama_meta(g, &h)) < 0 || (rc = tp_gguf_kv_u32(g, "general.file_type", m->file_type)) < 0 ||
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
		tp_ggml_type type = TP_GGML_F32;
		size_t size = rows * cols * sizeof(float);
		void *data = bufs[i];
		if (m->type != TP_GGML_F32 && is_block_linear(name)) {
			if ((rc = pack(m, t->name, bufs[i], rows, cols, &data, &size, &type)) < 0)
				goto done;
			free(bufs[i]);
			bufs[i] = data;
		}
		if ((rc = tp_gguf_add_tensor(g, name, type, ne, t->ndim, data, size)) < 0)
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
	const mode *m = argc == 3 ? &modes[0] : NULL;
	for (size_t i = 0; argc == 4 && i < sizeof(modes) / sizeof(modes[0]); i++)
		if (!strcmp(argv[3], modes[i].name))
			m = &modes[i];
	if (!m) {
		fprintf(stderr, "usage: tp-gguf MODEL_DIR OUT.gguf [f32|q8_0|q4_0|q4_k]\n");
		return 2;
	}
	if (run(argv[1], argv[2], m) < 0) {
		fprintf(stderr, "tp-gguf: %s\n", tp_error_last());
		return 1;
	}
	return 0;
}
