/*
 * Export of a quantized model for serving stacks (README.md, "Export"):
 * GGUF for the ggml formats (llama.cpp), safetensors in AutoGPTQ's or
 * AutoAWQ's GEMM layout for the group formats. The quantized layers come
 * from the model's packed layers, the norms from the model (AWQ may have
 * scaled them), everything else from the source safetensors as stored.
 */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tp_array.h"
#include "tp_delta.h"
#include "quant_internal.h"

#define CONFIG_MAX (4u << 20)
#define SMALL_FILE_MAX (64u << 20)
#define TENSOR_MAX ((uint64_t)1 << 36)
#define SHARDS_MAX 4096u

static const char exportable[] =
	"q8_0, q4_0, q4_k (GGUF); rtnB_gG, gptqB_gG (GPTQ safetensors); awq4_gG (AWQ GEMM "
	"safetensors; awq3_gG is written in the GPTQ layout)";

int tp_optimize_export_plan(const char *candidate, tp_export_plan *out)
{
	static const struct {
		const char *name;
		tp_ggml_type type;
		uint32_t file_type; /* llama.cpp's LLAMA_FTYPE_MOSTLY_* */
	} ggml[] = {
		{ "q8_0", TP_GGML_Q8_0, 7 },
		{ "q4_0", TP_GGML_Q4_0, 2 },
		{ "q4_k", TP_GGML_Q4_K, 14 }, /* Q4_K_S: every block layer in Q4_K */
	};
	tp_export_plan p = { 0 };
	if (!candidate)
		return tp_error_set(TP_EINVAL, "export: no candidate");
	for (size_t i = 0; i < sizeof(ggml) / sizeof(ggml[0]); i++)
		if (!strcmp(candidate, ggml[i].name)) {
			p.layout = TP_EXPORT_GGUF;
			p.candidate = candidate;
			p.format = tp_quant_format_find(candidate);
			p.ggml_type = ggml[i].type;
			p.file_type = ggml[i].file_type;
			*out = p;
			return 0;
		}
	int bits = 0, n = 0;
	size_t group = 0;
	const char *method = NULL;
	if (sscanf(candidate, "rtn%d_g%zu%n", &bits, &group, &n) == 2 && !candidate[n])
		method = "rtn";
	else if (sscanf(candidate, "gptq%d_g%zu%n", &bits, &group, &n) == 2 && !candidate[n])
		method = "gptq";
	else if (sscanf(candidate, "awq%d_g%zu%n", &bits, &group, &n) == 2 && !candidate[n])
		method = "awq";
	const tp_quant_format *f = method ? tp_quant_group_format(bits, group) : NULL;
	if (!f)
		return tp_error_set(TP_EUNSUPPORTED, "candidate %s cannot be exported; exportable: %s",
				    candidate, exportable);
	p.candidate = candidate;
	p.format = f;
	p.bits = bits;
	p.group = group;
	p.method = method;
	/* AutoAWQ's GEMM kernel is 4-bit only; AWQ's codes dequantize as GPTQ's
	 * do (its scales live in the norms and the previous layers), so 3 bits
	 * go out in the GPTQ layout. */
	p.layout = !strcmp(method, "awq") && bits == 4 ? TP_EXPORT_AWQ : TP_EXPORT_GPTQ;
	*out = p;
	return 0;
}

/* ---- the packed layouts ---------------------------------------------------- */

static void put_u32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

/* Code k of a little-endian bit stream of bits-wide codes over 32-bit words
 * that are `stride` words apart (AutoGPTQ packs along a column). */
static void stream_put(uint32_t *w, size_t stride, size_t k, int bits, uint32_t v)
{
	size_t bit = k * (size_t)bits, word = bit / 32;
	unsigned sh = (unsigned)(bit % 32);
	w[word * stride] |= v << sh;
	if (sh + (unsigned)bits > 32)
		w[(word + 1) * stride] |= v >> (32 - sh);
}

static uint32_t stream_get(const uint32_t *w, size_t stride, size_t k, int bits)
{
	size_t bit = k * (size_t)bits, word = bit / 32;
	unsigned sh = (unsigned)(bit % 32);
	uint64_t v = w[word * stride] >> sh;
	if (sh + (unsigned)bits > 32)
		v |= (uint64_t)w[(word + 1) * stride] << (32 - sh);
	return (uint32_t)v & ((1u << bits) - 1u);
}

/* AutoAWQ's order of 8 output columns in one int32 (AWQ_ORDER). */
static const unsigned awq_order[8] = { 0, 2, 4, 6, 1, 3, 5, 7 };

int tp_export_gptq_dequantize(int bits, size_t in, size_t out, size_t ngroups,
			      const uint32_t *qweight, const uint32_t *qzeros,
			      const uint16_t *scales, const int32_t *g_idx, bool v1, float *w)
{
	if (bits < 2 || bits > 8 || in % 32 || (out * (size_t)bits) % 32)
		return tp_error_set(TP_EINVAL, "GPTQ layout: %d bits, %zu x %zu", bits, out, in);
	size_t zw = out * (size_t)bits / 32;
	for (size_t k = 0; k < in; k++) {
		if (g_idx[k] < 0 || (size_t)g_idx[k] >= ngroups)
			return tp_error_set(TP_ECORRUPT, "GPTQ layout: g_idx[%zu] = %d", k,
					    (int)g_idx[k]);
		size_t g = (size_t)g_idx[k];
		for (size_t o = 0; o < out; o++) {
			int q = (int)stream_get(qweight + o, out, k, bits);
			/* v1 stores zero - 1; its loaders add 1 back, unmasked. */
			int z = (int)stream_get(qzeros + g * zw, 1, o, bits) + (v1 ? 1 : 0);
			w[o * in + k] = (float)(q - z) * tp_fp16_to_f32(scales[g * out + o]);
		}
	}
	return 0;
}

int tp_export_awq_dequantize(size_t group, size_t in, size_t out, const uint32_t *qweight,
			     const uint32_t *qzeros, const uint16_t *scales, float *w)
{
	if (!group || in % group || out % 8)
		return tp_error_set(TP_EINVAL, "AWQ layout: group %zu, %zu x %zu", group, out, in);
	size_t ow = out / 8;
	for (size_t k = 0; k < in; k++) {
		size_t g = k / group;
		for (size_t c = 0; c < ow; c++)
			for (unsigned i = 0; i < 8; i++) {
				size_t o = c * 8 + awq_order[i];
				int q = (int)(qweight[k * ow + c] >> (4 * i) & 15u);
				int z = (int)(qzeros[g * ow + c] >> (4 * i) & 15u);
				w[o * in + k] = (float)(q - z) * tp_fp16_to_f32(scales[g * out + o]);
			}
	}
	return 0;
}

/* ---- source tensors ------------------------------------------------------- */

typedef struct src_file {
	tp_safetensors *st;
	int fd;
	char *path;
} src_file;

typedef struct sources {
	src_file *f;
	size_t n;
} sources;

static void sources_free(sources *s)
{
	for (size_t i = 0; i < s->n; i++) {
		tp_safetensors_free(s->f[i].st);
		if (s->f[i].fd >= 0)
			close(s->f[i].fd);
		free(s->f[i].path);
	}
	free(s->f);
	s->f = NULL;
	s->n = 0;
}

/* weights, or dir/model.safetensors, else dir/model.safetensors.index.json. */
static int sources_open(sources *s, const char *dir, const char *weights)
{
	char *path = NULL, **shards = NULL;
	size_t n = 1;
	int rc = 0;
	if ((rc = tp_optimize_weights_path(dir, weights, &path)) < 0)
		goto done;
	if (tp_safetensors_is_index(path)) {
		if ((rc = tp_safetensors_index_shards(&shards, &n, path)) < 0)
			goto done;
		if (n == 0 || n > SHARDS_MAX) {
			rc = tp_error_set(TP_ECORRUPT, "%s lists %zu shards", path, n);
			goto done;
		}
	}
	if (!(s->f = calloc(n, sizeof(*s->f)))) {
		rc = tp_error_set(TP_ENOMEM, "out of memory");
		goto done;
	}
	for (size_t i = 0; i < n; i++) {
		src_file *f = &s->f[s->n++];
		f->fd = -1;
		const char *p = shards ? shards[i] : path;
		if (!(f->path = strdup(p))) {
			rc = tp_error_set(TP_ENOMEM, "out of memory");
			goto done;
		}
		if ((rc = tp_safetensors_open(&f->st, p)) < 0 || (rc = tp_fs_open_regular(p, &f->fd)) < 0)
			goto done;
	}
done:
	if (shards)
		tp_safetensors_shards_free(shards, n);
	free(path);
	if (rc < 0)
		sources_free(s);
	return rc;
}

/* The bytes of tensor t of f in a new buffer. */
static int read_tensor(const src_file *f, const tp_st_tensor *t, uint8_t **out)
{
	if (t->size > TENSOR_MAX)
		return tp_error_set(TP_ETOOBIG, "tensor %s: %llu bytes", t->name,
				    (unsigned long long)t->size);
	uint8_t *b = malloc((size_t)t->size + 1);
	if (!b)
		return tp_error_set(TP_ENOMEM, "out of memory for tensor %s", t->name);
	size_t got = 0;
	if (lseek(f->fd, (off_t)t->offset, SEEK_SET) < 0 ||
	    tp_fs_read_full(f->fd, b, (size_t)t->size, &got) < 0 || got != t->size) {
		free(b);
		return tp_error_set(TP_EIO, "%s: reading tensor %s", f->path, t->name);
	}
	*out = b;
	return 0;
}

/* Norm weights of the model stored as dtype d (that of the source tensor). */
static int norm_bytes(const float *w, size_t n, tp_dtype d, const char *name, uint8_t *out)
{
	for (size_t i = 0; i < n; i++) {
		uint32_t v;
		switch (d) {
		case TP_DTYPE_BF16: v = tp_bf16_from_f32(w[i]); break;
		case TP_DTYPE_F16: v = tp_fp16_from_f32(w[i]); break;
		case TP_DTYPE_F32: memcpy(&v, &w[i], 4); break;
		default:
			return tp_error_set(TP_EUNSUPPORTED, "tensor %s: dtype %s", name,
					    tp_dtype_name(d));
		}
		if (d == TP_DTYPE_F32)
			put_u32(out + 4 * i, v);
		else
			out[2 * i] = (uint8_t)v, out[2 * i + 1] = (uint8_t)(v >> 8);
	}
	return 0;
}

/* "model.layers.N.input_layernorm.weight" (which 0) or
 * "...post_attention_layernorm.weight" (which 1). */
static bool norm_slot(const char *name, size_t *layer, int *which)
{
	static const char prefix[] = "model.layers.";
	if (strncmp(name, prefix, sizeof(prefix) - 1) || name[sizeof(prefix) - 1] < '0' ||
	    name[sizeof(prefix) - 1] > '9')
		return false;
	char *end;
	errno = 0;
	unsigned long n = strtoul(name + sizeof(prefix) - 1, &end, 10);
	if (errno || *end != '.')
		return false;
	if (!strcmp(end, ".input_layernorm.weight"))
		*which = 0;
	else if (!strcmp(end, ".post_attention_layernorm.weight"))
		*which = 1;
	else
		return false;
	*layer = n;
	return true;
}

/* The model's linear layer whose weight tensor is called name, or SIZE_MAX. */
static size_t linear_of(const tp_model *m, const char *name)
{
	size_t len = strlen(name);
	if (len < 8 || strcmp(name + len - 7, ".weight"))
		return SIZE_MAX;
	for (size_t i = 0; i < tp_model_linear_count(m); i++) {
		const char *ln = tp_model_linear_name(m, i);
		if (strlen(ln) == len - 7 && !strncmp(ln, name, len - 7) &&
		    tp_optimize_is_decoder_linear(ln))
			return i;
	}
	return SIZE_MAX;
}

/* Packed bytes of decoder layer i, which must be in plan's format. */
static int packed_layer(const tp_model *m, size_t i, const tp_export_plan *p, const void **packed)
{
	const tp_quant_format *f = NULL;
	const tp_linear *l = tp_model_linear(m, i);
	if (!tp_quant_linear_parts(l, &f, packed, NULL))
		return tp_error_set(TP_EINVAL, "export: layer %s is not a packed layer "
				    "(the candidate was loaded fake-quantized)",
				    tp_model_linear_name(m, i));
	if (f != p->format)
		return tp_error_set(TP_EINVAL, "export: layer %s is packed as %s, not %s",
				    tp_model_linear_name(m, i), f->name, p->format->name);
	return 0;
}

/* ---- files ---------------------------------------------------------------- */

static bool is_weights_file(const char *name)
{
	static const char *const ext[] = { ".safetensors", ".bin", ".pt", ".pth", ".gguf",
					   ".msgpack", ".h5", ".ckpt", ".index.json" };
	size_t len = strlen(name);
	for (size_t i = 0; i < sizeof(ext) / sizeof(ext[0]); i++) {
		size_t e = strlen(ext[i]);
		if (len >= e && !strcmp(name + len - e, ext[i]))
			return true;
	}
	return false;
}

int tp_optimize_copy_small_files(const char *src_dir, const char *out_dir,
				 bool (*skip)(const char *name))
{
	DIR *d = opendir(src_dir);
	if (!d)
		return tp_error_set(TP_EIO, "%s: %s", src_dir, strerror(errno));
	int rc = 0;
	struct dirent *e;
	while (rc == 0 && (e = readdir(d))) {
		char *src = NULL, *dst = NULL;
		tp_buf b = TP_BUF_INIT(SMALL_FILE_MAX);
		if (e->d_name[0] == '.' || skip(e->d_name))
			continue;
		if ((rc = tp_path_join(&src, src_dir, e->d_name)) == 0 && tp_fs_is_regular(src)) {
			int r = tp_fs_read_regular(src, &b);
			if (r == TP_ETOOBIG)
				tp_error_clear(); /* not a small file: not ours to copy */
			else if (r < 0)
				rc = r;
			else if ((rc = tp_path_join(&dst, out_dir, e->d_name)) == 0)
				rc = tp_fs_write_file(dst, b.ptr ? b.ptr : "", b.len);
		}
		tp_buf_free(&b);
		free(src);
		free(dst);
	}
	closedir(d);
	return rc;
}

/* The export writes its own weights and config.json. */
static bool export_skips(const char *name)
{
	return !strcmp(name, "config.json") || is_weights_file(name);
}

static int read_config(const char *dir, tp_buf *cfg, tp_model_config *c)
{
	char *path = NULL;
	int rc;
	if ((rc = tp_path_join(&path, dir, "config.json")) == 0 &&
	    (rc = tp_fs_read_regular(path, cfg)) == 0)
		rc = tp_model_config_parse(c, cfg->ptr ? cfg->ptr : "", cfg->len);
	free(path);
	return rc;
}

/* ---- GGUF ----------------------------------------------------------------- */

/* The merges of a tokenizer.json BPE model as "a b" strings (either JSON
 * form: strings, or pairs). */
static int bpe_merges(const cJSON *merges, char ***out, size_t *n)
{
	size_t count = (size_t)cJSON_GetArraySize(merges);
	char **m = calloc(count + 1, sizeof(*m));
	if (!m)
		return tp_error_set(TP_ENOMEM, "out of memory for %zu merges", count);
	size_t i = 0;
	const cJSON *e;
	cJSON_ArrayForEach(e, merges) {
		const char *a = NULL, *b = NULL;
		if (cJSON_IsString(e))
			a = e->valuestring;
		else if (cJSON_IsArray(e) && cJSON_GetArraySize(e) == 2) {
			a = cJSON_GetStringValue(cJSON_GetArrayItem(e, 0));
			b = cJSON_GetStringValue(cJSON_GetArrayItem(e, 1));
		}
		if (!a || (cJSON_IsArray(e) && !b)) {
			for (size_t j = 0; j < i; j++)
				free(m[j]);
			free(m);
			return tp_error_set(TP_ECORRUPT, "tokenizer.json: merge %zu is not a pair", i);
		}
		size_t len = strlen(a) + (b ? strlen(b) + 1 : 0) + 1;
		if (!(m[i] = malloc(len))) {
			for (size_t j = 0; j < i; j++)
				free(m[j]);
			free(m);
			return tp_error_set(TP_ENOMEM, "out of memory");
		}
		snprintf(m[i], len, b ? "%s %s" : "%s", a, b ? b : "");
		i++;
	}
	*out = m;
	*n = i;
	return 0;
}

/* True when pre_tokenizer is ByteLevel or a Sequence holding one; *split
 * set when the sequence also splits by a regex (Llama 3, Qwen2, ...). */
static bool byte_level(const cJSON *pre, bool *split)
{
	const char *type = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(pre, "type"));
	if (!type)
		return false;
	if (!strcmp(type, "ByteLevel"))
		return true;
	if (strcmp(type, "Sequence"))
		return false;
	bool bl = false;
	const cJSON *e;
	cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(pre, "pretokenizers")) {
		const char *t = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(e, "type"));
		if (t && !strcmp(t, "ByteLevel"))
			bl = true;
		else if (t && !strcmp(t, "Split"))
			*split = true;
	}
	return bl;
}

/* llama.cpp's tokenizer metadata for src_dir/tokenizer.json: byte-level BPE
 * only (tokenizer.ggml.model "gpt2"), ids padded to the model's vocab. */
static int gguf_tokenizer(tp_gguf *g, const char *src_dir, const tp_model_config *c)
{
	char *path = NULL, **tokens = NULL, **merges = NULL, (*pad)[32] = NULL;
	int32_t *types = NULL;
	size_t nmerges = 0, nv = c->vocab;
	tp_buf b = TP_BUF_INIT(TP_TOKENIZER_JSON_MAX);
	tp_tokenizer *tok = NULL;
	cJSON *j = NULL;
	int rc;
	if ((rc = tp_path_join(&path, src_dir, "tokenizer.json")) < 0 ||
	    (rc = tp_fs_read_regular(path, &b)) < 0 ||
	    (rc = tp_tokenizer_parse(&tok, b.ptr ? b.ptr : "", b.len)) < 0)
		goto done;
	if (!(j = cJSON_ParseWithLength(b.ptr ? b.ptr : "", b.len))) {
		rc = tp_error_set(TP_ECORRUPT, "%s: bad JSON", path);
		goto done;
	}
	const cJSON *model = cJSON_GetObjectItemCaseSensitive(j, "model");
	const char *type = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(model, "type"));
	bool split = false;
	if (!type || strcmp(type, "BPE") ||
	    !byte_level(cJSON_GetObjectItemCaseSensitive(j, "pre_tokenizer"), &split)) {
		rc = tp_error_set(TP_EUNSUPPORTED, "%s: GGUF export writes byte-level BPE "
				  "tokenizers (GPT-2 style) only, not %s", path,
				  tp_tokenizer_kind(tok));
		goto done;
	}
	if (tp_tokenizer_size(tok) > nv) {
		rc = tp_error_set(TP_EUNSUPPORTED, "%s: %zu tokens for a vocabulary of %zu", path,
				  tp_tokenizer_size(tok), nv);
		goto done;
	}
	tokens = calloc(nv + 1, sizeof(*tokens));
	types = calloc(nv + 1, sizeof(*types));
	pad = calloc(nv + 1, sizeof(*pad));
	if (!tokens || !types || !pad) {
		rc = tp_error_set(TP_ENOMEM, "out of memory for %zu tokens", nv);
		goto done;
	}
	for (size_t i = 0; i < nv; i++) {
		const char *t = tp_tokenizer_token(tok, (int32_t)i);
		types[i] = 1; /* LLAMA_TOKEN_TYPE_NORMAL */
		if (!t) { /* ids the embedding has but the tokenizer lacks */
			snprintf(pad[i], sizeof(pad[i]), "[PAD%zu]", i);
			t = pad[i];
			types[i] = 5; /* UNUSED */
		}
		tokens[i] = (char *)t;
	}
	const cJSON *e;
	cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(j, "added_tokens")) {
		const cJSON *id = cJSON_GetObjectItemCaseSensitive(e, "id");
		if (cJSON_IsNumber(id) && id->valuedouble >= 0 && id->valuedouble < (double)nv)
			types[(size_t)id->valuedouble] =
				cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(e, "special")) ? 3 : 4;
	}
	if ((rc = bpe_merges(cJSON_GetObjectItemCaseSensitive(model, "merges"), &merges,
			     &nmerges)) < 0)
		goto done;
	/* llama.cpp picks its pre-tokenizer regex by name; without a Split
	 * the GPT-2 default is the ByteLevel one. With one, the families
	 * tenpak loads: Qwen2's, else Llama 3's (README.md, "Export"). */
	const char *pre = !split ? "default" : c->arch == TP_ARCH_QWEN2 ? "qwen2" : "llama-bpe";
	int32_t bos = tp_runtime_choose_bos(c, tok);
	if ((rc = tp_gguf_kv_str(g, "tokenizer.ggml.model", "gpt2")) < 0 ||
	    (rc = tp_gguf_kv_str(g, "tokenizer.ggml.pre", pre)) < 0 ||
	    (rc = tp_gguf_kv_str_array(g, "tokenizer.ggml.tokens", (const char *const *)tokens,
				       nv)) < 0 ||
	    (rc = tp_gguf_kv_i32_array(g, "tokenizer.ggml.token_type", types, nv)) < 0 ||
	    (rc = tp_gguf_kv_str_array(g, "tokenizer.ggml.merges", (const char *const *)merges,
				       nmerges)) < 0 ||
	    (bos >= 0 && (rc = tp_gguf_kv_u32(g, "tokenizer.ggml.bos_token_id", (uint32_t)bos)) < 0) ||
	    (c->eos_id >= 0 && (uint64_t)c->eos_id < nv &&
	     (rc = tp_gguf_kv_u32(g, "tokenizer.ggml.eos_token_id", (uint32_t)c->eos_id)) < 0) ||
	    (rc = tp_gguf_kv_bool(g, "tokenizer.ggml.add_bos_token", bos >= 0)) < 0)
		goto done;
done:
	for (size_t i = 0; merges && i < nmerges; i++)
		free(merges[i]);
	free(merges);
	free(tokens);
	free(types);
	free(pad);
	cJSON_Delete(j);
	tp_tokenizer_free(tok);
	tp_buf_free(&b);
	free(path);
	return rc;
}

/* The ggml type a cols-wide row of plan's format is stored in. */
static tp_ggml_type stored_type(const tp_export_plan *p, size_t cols)
{
	const char *fb = tp_quant_fallback(p->format->name, cols);
	if (!fb)
		return p->ggml_type;
	return strcmp(fb, "q5_0") == 0 ? TP_GGML_Q5_0 : TP_GGML_F16;
}

static int export_gguf(tp_model *m, const tp_model_config *c, const char *src_dir,
		       const sources *src, const tp_export_plan *p, const char *path)
{
	tp_gguf *g = NULL;
	size_t total = 0, nb = 0;
	for (size_t i = 0; i < src->n; i++)
		total += src->f[i].st->ntensors;
	void **bufs = calloc(total + 1, sizeof(*bufs)); /* data the writer references */
	int rc = 0;
	if (!bufs)
		return tp_error_set(TP_ENOMEM, "out of memory");
	if (c->arch != TP_ARCH_LLAMA || c->qkv_bias || c->out_bias ||
	    c->rope_scaling != TP_ROPE_SCALING_NONE || c->head_dim % 2) {
		rc = tp_error_set(TP_EUNSUPPORTED, "GGUF export: plain Llama models only (no "
				  "biases or RoPE scaling)");
		goto done;
	}
	tp_gguf_llama h = {
		.name = "tenpak",
		.ctx = (uint32_t)(c->max_positions ? c->max_positions : 2048),
		.hidden = (uint32_t)c->hidden, .intermediate = (uint32_t)c->intermediate,
		.layers = (uint32_t)c->layers, .heads = (uint32_t)c->heads,
		.kv_heads = (uint32_t)c->kv_heads, .head_dim = (uint32_t)c->head_dim,
		.vocab = (uint32_t)c->vocab, .rms_eps = (float)c->rms_eps,
		.rope_theta = (float)c->rope_theta,
	};
	if ((rc = tp_gguf_new(&g)) < 0 || (rc = tp_gguf_llama_meta(g, &h)) < 0 ||
	    (rc = tp_gguf_kv_u32(g, "general.file_type", p->file_type)) < 0 ||
	    (rc = gguf_tokenizer(g, src_dir, c)) < 0)
		goto done;
	for (size_t s = 0; s < src->n; s++)
		for (size_t ti = 0; ti < src->f[s].st->ntensors; ti++) {
			const tp_st_tensor *t = &src->f[s].st->tensors[ti];
			char name[64];
			uint64_t ne[TP_GGUF_MAX_DIMS] = { 0 };
			size_t len = strlen(t->name);
			if (len >= 20 && !strcmp(t->name + len - 20, ".rotary_emb.inv_freq"))
				continue; /* recomputed from rope_theta */
			if (t->ndim < 1 || t->ndim > 2) {
				rc = tp_error_set(TP_EUNSUPPORTED, "tensor %s: %u dimensions",
						  t->name, t->ndim);
				goto done;
			}
			if ((rc = tp_gguf_llama_tensor_name(t->name, name, sizeof(name))) < 0)
				goto done;
			for (unsigned d = 0; d < t->ndim; d++)
				ne[d] = t->shape[t->ndim - 1 - d];
			size_t rows = t->ndim == 2 ? (size_t)t->shape[0] : 1, cols = (size_t)ne[0];
			size_t li = linear_of(m, t->name), layer;
			int which;
			tp_ggml_type type;
			const void *data;
			size_t size;
			if (li != SIZE_MAX) {
				if ((rc = packed_layer(m, li, p, &data)) < 0)
					goto done;
				type = stored_type(p, cols);
				size_t row = tp_ggml_row_size(type, cols);
				size = p->format->packed_size(rows, cols);
				/* The format's layout must be the GGUF tensor's, byte for byte. */
				if (size != row * rows) {
					rc = tp_error_set(TP_EUNSUPPORTED, "tensor %s: %s packs "
							  "%zu x %zu into %zu bytes, not whole ggml "
							  "rows", t->name, p->format->name, rows,
							  cols, size);
					goto done;
				}
				bool is_q = strstr(name, ".attn_q.") != NULL;
				if (is_q || strstr(name, ".attn_k.")) {
					/* llama.cpp's interleaved RoPE: reorder whole rows. */
					size_t heads = is_q ? c->heads : c->kv_heads, hd = c->head_dim;
					uint8_t *perm = malloc(size + 1);
					if (!perm || rows != heads * hd) {
						free(perm);
						rc = perm ? tp_error_set(TP_ECORRUPT, "tensor %s: %zu rows",
									 t->name, rows)
							  : tp_error_set(TP_ENOMEM, "out of memory");
						goto done;
					}
					for (size_t hh = 0; hh < heads; hh++)
						for (size_t i = 0; i < hd / 2; i++)
							for (size_t jj = 0; jj < 2; jj++)
								memcpy(perm + (hh * hd + 2 * i + jj) * row,
								       (const uint8_t *)data +
									       (hh * hd + jj * hd / 2 + i) * row,
								       row);
					bufs[nb++] = perm;
					data = perm;
				}
			} else if (norm_slot(t->name, &layer, &which)) {
				const float *w = tp_model_norm_weights(m, layer, which);
				if (!w || t->ndim != 1 || cols != c->hidden) {
					rc = tp_error_set(TP_ECORRUPT, "tensor %s: no such norm in "
							  "the model", t->name);
					goto done;
				}
				type = TP_GGML_F32; /* llama.cpp keeps 1-D tensors in F32 */
				size = cols * 4;
				uint8_t *b = malloc(size + 1);
				if (!b) {
					rc = tp_error_set(TP_ENOMEM, "out of memory");
					goto done;
				}
				bufs[nb++] = b;
				norm_bytes(w, cols, TP_DTYPE_F32, t->name, b);
				data = b;
			} else {
				uint8_t *b = NULL;
				if ((rc = read_tensor(&src->f[s], t, &b)) < 0)
					goto done;
				bufs[nb++] = b;
				data = b;
				size = (size_t)t->size;
				switch (t->dtype) {
				case TP_DTYPE_F32: type = TP_GGML_F32; break;
				case TP_DTYPE_F16: type = TP_GGML_F16; break;
				case TP_DTYPE_BF16: type = TP_GGML_BF16; break;
				default:
					rc = tp_error_set(TP_EUNSUPPORTED, "tensor %s: dtype %s",
							  t->name, tp_dtype_name(t->dtype));
					goto done;
				}
				if (t->ndim == 1 && type != TP_GGML_F32) {
					float *f = malloc(cols * sizeof(float) + 1);
					if (!f) {
						rc = tp_error_set(TP_ENOMEM, "out of memory");
						goto done;
					}
					for (size_t i = 0; i < cols; i++) {
						uint16_t v = (uint16_t)(b[2 * i] | b[2 * i + 1] << 8);
						f[i] = type == TP_GGML_F16 ? tp_fp16_to_f32(v)
									   : tp_bf16_to_f32(v);
					}
					bufs[nb++] = f;
					data = f;
					type = TP_GGML_F32;
					size = cols * 4;
				}
			}
			if ((rc = tp_gguf_add_tensor(g, name, type, ne, t->ndim, data, size)) < 0)
				goto done;
		}
	rc = tp_gguf_write(g, path);
done:
	for (size_t i = 0; i < nb; i++)
		free(bufs[i]);
	free(bufs);
	tp_gguf_free(g);
	return rc;
}

/* ---- GPTQ / AWQ safetensors ----------------------------------------------- */

typedef enum { OUT_COPY, OUT_NORM, OUT_QWEIGHT, OUT_QZEROS, OUT_SCALES, OUT_GIDX } out_kind;

typedef struct out_tensor {
	char *name;
	const char *dtype; /* safetensors spelling */
	unsigned ndim;
	uint64_t shape[TP_ST_MAX_DIMS];
	uint64_t size;
	out_kind kind;
	const src_file *src;
	const tp_st_tensor *t;
	size_t linear; /* OUT_Q*, OUT_SCALES, OUT_GIDX */
	size_t layer;  /* OUT_NORM */
	int which;
} out_tensor;

typedef tp_array(out_tensor) st_plan;

/* Append o called name + suffix. */
static int plan_add(st_plan *sp, const out_tensor *o, const char *name, const char *suffix)
{
	out_tensor d = *o;
	size_t len = strlen(name) + strlen(suffix) + 1;
	if (!(d.name = malloc(len)))
		return tp_error_set(TP_ENOMEM, "out of memory");
	snprintf(d.name, len, "%s%s", name, suffix);
	int rc = tp_array_push(sp, d);
	if (rc != 0) {
		free(d.name);
		return tp_error_set(rc, "%zu output tensors", sp->len);
	}
	return 0;
}

/* Unpacked codes of one layer (the current one of the writer). */
typedef struct layer_codes {
	size_t linear, rows, cols, ngroups;
	uint8_t *q;
	float *scale;
	int *zero;
} layer_codes;

static int codes_load(layer_codes *lc, const tp_model *m, size_t li, const tp_export_plan *p)
{
	if (lc->q && lc->linear == li)
		return 0;
	free(lc->q);
	free(lc->scale);
	free(lc->zero);
	memset(lc, 0, sizeof(*lc));
	const void *packed;
	int rc = packed_layer(m, li, p, &packed);
	if (rc < 0)
		return rc;
	const tp_linear *l = tp_model_linear(m, li);
	lc->linear = li;
	lc->rows = l->out;
	lc->cols = l->in;
	lc->ngroups = (l->in + p->group - 1) / p->group;
	size_t ng = lc->rows * lc->ngroups;
	lc->q = malloc(lc->rows * lc->cols + 1);
	lc->scale = malloc(ng * sizeof(float) + 1);
	lc->zero = malloc(ng * sizeof(int) + 1);
	if (!lc->q || !lc->scale || !lc->zero)
		return tp_error_set(TP_ENOMEM, "out of memory for layer %s",
				    tp_model_linear_name(m, li));
	tp_quant_group_unpack(p->bits, p->group, packed, lc->rows, lc->cols, lc->q, lc->scale,
			      lc->zero);
	return 0;
}

/* The bytes of output tensor o into buf (o->size bytes, zeroed). */
static int tensor_bytes(const out_tensor *o, tp_model *m, const tp_export_plan *p, bool v1,
			layer_codes *lc, uint8_t *buf)
{
	int rc;
	if (o->kind == OUT_COPY) {
		uint8_t *b = NULL;
		if ((rc = read_tensor(o->src, o->t, &b)) < 0)
			return rc;
		memcpy(buf, b, (size_t)o->size);
		free(b);
		return 0;
	}
	if (o->kind == OUT_NORM) {
		const float *w = tp_model_norm_weights(m, o->layer, o->which);
		if (!w)
			return tp_error_set(TP_ECORRUPT, "tensor %s: no such norm", o->name);
		return norm_bytes(w, (size_t)o->t->shape[0], o->t->dtype, o->name, buf);
	}
	if ((rc = codes_load(lc, m, o->linear, p)) < 0)
		return rc;
	size_t in = lc->cols, out = lc->rows, ng = lc->ngroups;
	unsigned mask = (1u << p->bits) - 1u;
	if (o->kind == OUT_GIDX) {
		for (size_t k = 0; k < in; k++)
			put_u32(buf + 4 * k, (uint32_t)(k / p->group));
		return 0;
	}
	if (o->kind == OUT_SCALES) {
		for (size_t g = 0; g < ng; g++)
			for (size_t r = 0; r < out; r++) {
				uint16_t h = tp_fp16_from_f32(lc->scale[r * ng + g]);
				buf[2 * (g * out + r)] = (uint8_t)h;
				buf[2 * (g * out + r) + 1] = (uint8_t)(h >> 8);
			}
		return 0;
	}
	size_t words = (size_t)o->size / 4;
	uint32_t *w = calloc(words + 1, sizeof(uint32_t));
	if (!w)
		return tp_error_set(TP_ENOMEM, "out of memory for %s", o->name);
	if (p->layout == TP_EXPORT_AWQ) {
		size_t ow = out / 8;
		for (size_t c = 0; c < ow; c++)
			for (unsigned i = 0; i < 8; i++) {
				size_t r = c * 8 + awq_order[i];
				if (o->kind == OUT_QWEIGHT)
					for (size_t k = 0; k < in; k++)
						w[k * ow + c] |= (uint32_t)lc->q[r * in + k] << (4 * i);
				else
					for (size_t g = 0; g < ng; g++)
						w[g * ow + c] |= (uint32_t)lc->zero[r * ng + g] << (4 * i);
			}
	} else if (o->kind == OUT_QWEIGHT) {
		/* Column r's codes down the input dimension, a bit stream over
		 * words out apart (AutoGPTQ's pack; 3 bits cross words). */
		for (size_t r = 0; r < out; r++)
			for (size_t k = 0; k < in; k++)
				stream_put(w + r, out, k, p->bits, lc->q[r * in + k]);
	} else {
		size_t zw = out * (size_t)p->bits / 32;
		for (size_t g = 0; g < ng; g++)
			for (size_t r = 0; r < out; r++)
				stream_put(w + g * zw, 1, r, p->bits,
					   ((unsigned)lc->zero[r * ng + g] - (v1 ? 1u : 0u)) & mask);
	}
	for (size_t i = 0; i < words; i++)
		put_u32(buf + 4 * i, w[i]);
	free(w);
	return 0;
}

/* The safetensors header of sp, padded with spaces to 8 bytes. */
static int st_header(const st_plan *sp, tp_buf *out)
{
	cJSON *h = cJSON_CreateObject(), *meta = h ? cJSON_AddObjectToObject(h, "__metadata__") : NULL;
	int rc = 0;
	uint64_t off = 0;
	if (!meta || !cJSON_AddStringToObject(meta, "format", "pt"))
		goto oom;
	for (size_t i = 0; i < sp->len; i++) {
		const out_tensor *o = &sp->ptr[i];
		cJSON *t = cJSON_AddObjectToObject(h, o->name), *shape, *offs;
		if (!t || !cJSON_AddStringToObject(t, "dtype", o->dtype) ||
		    !(shape = cJSON_AddArrayToObject(t, "shape")) ||
		    !(offs = cJSON_AddArrayToObject(t, "data_offsets")))
			goto oom;
		for (unsigned d = 0; d < o->ndim; d++)
			if (!cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)o->shape[d])))
				goto oom;
		if (!cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)off)) ||
		    !cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)(off + o->size))))
			goto oom;
		off += o->size;
	}
	char *s = cJSON_PrintUnformatted(h);
	if (!s)
		goto oom;
	size_t len = strlen(s), padded = (len + 7) / 8 * 8;
	uint8_t n8[8];
	for (int i = 0; i < 8; i++)
		n8[i] = (uint8_t)((uint64_t)padded >> (8 * i));
	if ((rc = tp_buf_add(out, n8, 8)) == 0 && (rc = tp_buf_adds(out, s)) == 0)
		while (rc == 0 && len++ < padded)
			rc = tp_buf_add(out, " ", 1);
	free(s);
	cJSON_Delete(h);
	return rc;
oom:
	cJSON_Delete(h);
	return tp_error_set(TP_ENOMEM, "out of memory for the safetensors header");
}

/* config.json of src with quantization_config for p (v1: GPTQ's zero - 1). */
static int write_config(const tp_buf *cfg, const tp_export_plan *p, bool v1, const char *path)
{
	cJSON *j = cJSON_ParseWithLength(cfg->ptr ? cfg->ptr : "", cfg->len), *q;
	if (!j || !cJSON_IsObject(j)) {
		cJSON_Delete(j);
		return tp_error_set(TP_ECORRUPT, "config.json: not a JSON object");
	}
	cJSON_DeleteItemFromObjectCaseSensitive(j, "quantization_config");
	int rc = 0;
	char *s = NULL;
	if (!(q = cJSON_AddObjectToObject(j, "quantization_config")))
		goto oom;
	if (p->layout == TP_EXPORT_AWQ) {
		if (!cJSON_AddStringToObject(q, "quant_method", "awq") ||
		    !cJSON_AddNumberToObject(q, "bits", p->bits) ||
		    !cJSON_AddNumberToObject(q, "group_size", (double)p->group) ||
		    !cJSON_AddTrueToObject(q, "zero_point") ||
		    !cJSON_AddStringToObject(q, "version", "gemm") ||
		    !cJSON_AddNullToObject(q, "modules_to_not_convert"))
			goto oom;
	} else if (!cJSON_AddStringToObject(q, "quant_method", "gptq") ||
		   !cJSON_AddNumberToObject(q, "bits", p->bits) ||
		   !cJSON_AddNumberToObject(q, "group_size", (double)p->group) ||
		   !cJSON_AddFalseToObject(q, "desc_act") || !cJSON_AddFalseToObject(q, "sym") ||
		   !cJSON_AddTrueToObject(q, "true_sequential") ||
		   !cJSON_AddStringToObject(q, "checkpoint_format", v1 ? "gptq" : "gptq_v2") ||
		   !cJSON_AddStringToObject(q, "model_file_base_name", "model"))
		goto oom;
	if (!cJSON_AddStringToObject(q, "tenpak_candidate", p->candidate))
		goto oom;
	if (!(s = cJSON_Print(j)))
		goto oom;
	rc = tp_fs_write_file(path, s, strlen(s));
	free(s);
	cJSON_Delete(j);
	return rc;
oom:
	cJSON_Delete(j);
	return tp_error_set(TP_ENOMEM, "out of memory for config.json");
}

static int export_st(tp_model *m, const tp_model_config *c, const tp_buf *cfg, const sources *src,
		     const tp_export_plan *p, const char *out_dir)
{
	st_plan sp = TP_ARRAY_INIT(TP_ST_MAX_TENSORS);
	layer_codes lc = { 0 };
	tp_buf head = TP_BUF_INIT((size_t)TP_ST_HEADER_MAX);
	char *path = NULL, *cpath = NULL;
	uint8_t *buf = NULL;
	int fd = -1, rc = 0;
	bool v1 = true;
	if (p->layout == TP_EXPORT_AWQ && (c->qkv_bias || c->out_bias)) {
		rc = tp_error_set(TP_EUNSUPPORTED, "AWQ export: models with linear biases are not "
				  "supported (AWQ's scales would have to be folded into them)");
		goto done;
	}
	for (size_t s = 0; s < src->n; s++)
		for (size_t ti = 0; ti < src->f[s].st->ntensors; ti++) {
			const tp_st_tensor *t = &src->f[s].st->tensors[ti];
			out_tensor o = { .src = &src->f[s], .t = t, .dtype = tp_dtype_name(t->dtype),
					 .ndim = t->ndim, .size = t->size };
			memcpy(o.shape, t->shape, sizeof(o.shape));
			size_t li = linear_of(m, t->name);
			if (li == SIZE_MAX) {
				o.kind = norm_slot(t->name, &o.layer, &o.which) ? OUT_NORM : OUT_COPY;
				if ((rc = plan_add(&sp, &o, t->name, "")) < 0)
					goto done;
				continue;
			}
			const tp_linear *l = tp_model_linear(m, li);
			size_t in = l->in, out = l->out, ng = (in + p->group - 1) / p->group;
			const void *packed;
			if ((rc = packed_layer(m, li, p, &packed)) < 0)
				goto done;
			bool ok = in % p->group == 0 &&
				  (p->layout == TP_EXPORT_AWQ ? out % 8 == 0
							      : in % 32 == 0 && out % 32 == 0);
			if (!ok) {
				rc = tp_error_set(TP_EUNSUPPORTED, "layer %s: %zu x %zu does not fit "
						  "the %s layout (group %zu)", t->name, out, in,
						  p->layout == TP_EXPORT_AWQ ? "AWQ" : "GPTQ",
						  p->group);
				goto done;
			}
			if (p->layout == TP_EXPORT_GPTQ && v1) {
				/* GPTQ v1 stores zero - 1 and its loaders add 1 back
				 * unmasked, so a zero point of 0 does not survive:
				 * then the whole file uses GPTQModel's v2 (zeros as
				 * they are). */
				int *z = malloc(out * ng * sizeof(int) + 1);
				if (!z) {
					rc = tp_error_set(TP_ENOMEM, "out of memory");
					goto done;
				}
				tp_quant_group_unpack(p->bits, p->group, packed, out, in, NULL, NULL, z);
				for (size_t i = 0; i < out * ng && v1; i++)
					v1 = z[i] != 0;
				free(z);
			}
			char base[512];
			size_t bl = strlen(t->name) - 7; /* without ".weight" */
			if (bl >= sizeof(base)) {
				rc = tp_error_set(TP_ETOOBIG, "tensor name %s", t->name);
				goto done;
			}
			memcpy(base, t->name, bl);
			base[bl] = 0;
			o.linear = li;
			o.ndim = 2;
			o.dtype = "I32";
			o.kind = OUT_QWEIGHT;
			if (p->layout == TP_EXPORT_AWQ) {
				o.shape[0] = in, o.shape[1] = out / 8;
			} else {
				o.shape[0] = in * (size_t)p->bits / 32, o.shape[1] = out;
			}
			o.size = o.shape[0] * o.shape[1] * 4;
			if ((rc = plan_add(&sp, &o, base, ".qweight")) < 0)
				goto done;
			o.kind = OUT_QZEROS;
			o.shape[0] = ng;
			o.shape[1] = p->layout == TP_EXPORT_AWQ ? out / 8 : out * (size_t)p->bits / 32;
			o.size = o.shape[0] * o.shape[1] * 4;
			if ((rc = plan_add(&sp, &o, base, ".qzeros")) < 0)
				goto done;
			o.kind = OUT_SCALES;
			o.dtype = "F16";
			o.shape[1] = out;
			o.size = o.shape[0] * o.shape[1] * 2;
			if ((rc = plan_add(&sp, &o, base, ".scales")) < 0)
				goto done;
			if (p->layout == TP_EXPORT_GPTQ) {
				o.kind = OUT_GIDX;
				o.dtype = "I32";
				o.ndim = 1;
				o.shape[0] = in;
				o.size = in * 4;
				if ((rc = plan_add(&sp, &o, base, ".g_idx")) < 0)
					goto done;
			}
		}
	if ((rc = st_header(&sp, &head)) < 0 ||
	    (rc = tp_path_join(&path, out_dir, "model.safetensors")) < 0)
		goto done;
	if ((fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666)) < 0) {
		rc = tp_error_set(TP_EIO, "%s: %s", path, strerror(errno));
		goto done;
	}
	if ((rc = tp_fs_write_all(fd, head.ptr, head.len)) < 0)
		goto done;
	for (size_t i = 0; i < sp.len; i++) {
		const out_tensor *o = &sp.ptr[i];
		if (o->size > TENSOR_MAX) {
			rc = tp_error_set(TP_ETOOBIG, "tensor %s: %llu bytes", o->name,
					  (unsigned long long)o->size);
			goto done;
		}
		free(buf);
		if (!(buf = calloc((size_t)o->size + 1, 1))) {
			rc = tp_error_set(TP_ENOMEM, "out of memory for %s", o->name);
			goto done;
		}
		if ((rc = tensor_bytes(o, m, p, v1, &lc, buf)) < 0 ||
		    (rc = tp_fs_write_all(fd, buf, (size_t)o->size)) < 0)
			goto done;
	}
	if (close(fd) < 0) {
		fd = -1;
		rc = tp_error_set(TP_EIO, "%s: %s", path, strerror(errno));
		goto done;
	}
	fd = -1;
	if ((rc = tp_path_join(&cpath, out_dir, "config.json")) < 0)
		goto done;
	rc = write_config(cfg, p, v1, cpath);
done:
	if (fd >= 0)
		close(fd);
	if (rc < 0 && path)
		unlink(path);
	for (size_t i = 0; i < sp.len; i++)
		free(sp.ptr[i].name);
	tp_array_clear(&sp);
	free(lc.q);
	free(lc.scale);
	free(lc.zero);
	free(buf);
	tp_buf_free(&head);
	free(path);
	free(cpath);
	return rc;
}

int tp_optimize_export_gguf(tp_model *m, const char *src_dir, const char *weights,
			    const char *candidate, const char *path)
{
	tp_export_plan p;
	tp_model_config c;
	tp_buf cfg = TP_BUF_INIT(CONFIG_MAX);
	sources src = { 0 };
	int rc;
	if ((rc = tp_optimize_export_plan(candidate, &p)) < 0)
		return rc;
	if (p.layout != TP_EXPORT_GGUF)
		return tp_error_set(TP_EINVAL, "export: %s is not a GGUF candidate", candidate);
	if ((rc = read_config(src_dir, &cfg, &c)) == 0 &&
	    (rc = sources_open(&src, src_dir, weights)) == 0)
		rc = export_gguf(m, &c, src_dir, &src, &p, path);
	sources_free(&src);
	tp_buf_free(&cfg);
	return rc;
}

int tp_optimize_export(tp_model *m, const char *src_dir, const char *weights,
		       const char *candidate, const char *out_dir, char **written)
{
	tp_export_plan p;
	tp_model_config c;
	tp_buf cfg = TP_BUF_INIT(CONFIG_MAX);
	sources src = { 0 };
	char *path = NULL, rs[PATH_MAX], ro[PATH_MAX];
	int rc;
	if ((rc = tp_optimize_export_plan(candidate, &p)) < 0)
		return rc;
	if ((rc = read_config(src_dir, &cfg, &c)) < 0)
		goto done;
	const tp_model_config *mc = tp_model_get_config(m);
	if (mc->layers != c.layers || mc->hidden != c.hidden || mc->vocab != c.vocab) {
		rc = tp_error_set(TP_EINVAL, "export: the model is not the one in %s", src_dir);
		goto done;
	}
	if ((rc = tp_fs_mkdirs(out_dir)) < 0)
		goto done;
	if (realpath(src_dir, rs) && realpath(out_dir, ro) && !strcmp(rs, ro)) {
		rc = tp_error_set(TP_EINVAL, "export: %s is the source directory", out_dir);
		goto done;
	}
	if ((rc = sources_open(&src, src_dir, weights)) < 0)
		goto done;
	if (p.layout == TP_EXPORT_GGUF) {
		char file[64];
		snprintf(file, sizeof(file), "model-%s.gguf", candidate);
		if ((rc = tp_path_join(&path, out_dir, file)) < 0 ||
		    (rc = export_gguf(m, &c, src_dir, &src, &p, path)) < 0)
			goto done;
	} else {
		if ((rc = export_st(m, &c, &cfg, &src, &p, out_dir)) < 0 ||
		    (rc = tp_optimize_copy_small_files(src_dir, out_dir, export_skips)) < 0 ||
		    (rc = tp_path_join(&path, out_dir, "model.safetensors")) < 0)
			goto done;
	}
	if (written) {
		*written = path;
		path = NULL;
	}
done:
	sources_free(&src);
	tp_buf_free(&cfg);
	free(path);
	return rc;
}
