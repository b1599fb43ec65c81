/* A GGUF v3 writer and the Llama conventions of llama.cpp's converter. */
#include "tp_optimize.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* gguf.h enum gguf_type */
enum {
	GGUF_UINT32 = 4,
	GGUF_INT32 = 5,
	GGUF_FLOAT32 = 6,
	GGUF_BOOL = 7,
	GGUF_STRING = 8,
	GGUF_ARRAY = 9,
};

#define GGUF_META_MAX (256u << 20)
#define GGUF_MAX_TENSORS 100000u
#define GGUF_NAME_MAX 63u /* GGML_MAX_NAME - 1 */

typedef struct gguf_tensor {
	char name[GGUF_NAME_MAX + 1];
	tp_ggml_type type;
	unsigned ndim;
	uint64_t ne[TP_GGUF_MAX_DIMS];
	const void *data;
	size_t size;
} gguf_tensor;

struct tp_gguf {
	tp_buf kv; /* the serialized key/value pairs */
	uint64_t nkv;
	gguf_tensor *tensors;
	size_t ntensors, cap;
};

size_t tp_ggml_row_size(tp_ggml_type t, uint64_t ne0)
{
	size_t block, bytes;
	switch (t) {
	case TP_GGML_F32: block = 1; bytes = 4; break;
	case TP_GGML_F16:
	case TP_GGML_BF16: block = 1; bytes = 2; break;
	case TP_GGML_Q4_0: block = 32; bytes = 18; break;  /* fp16 d + 16 nibble bytes */
	case TP_GGML_Q5_0: block = 32; bytes = 22; break;  /* fp16 d, 4 qh, 16 nibble bytes */
	case TP_GGML_Q8_0: block = 32; bytes = 34; break;  /* fp16 d + 32 int8 */
	case TP_GGML_Q4_K: block = 256; bytes = 144; break; /* d, dmin, 12 scale bytes, 128 */
	default: return 0;
	}
	if (ne0 == 0 || ne0 % block || ne0 / block > SIZE_MAX / bytes)
		return 0;
	return (size_t)(ne0 / block) * bytes;
}

int tp_gguf_new(tp_gguf **out)
{
	tp_gguf *g = calloc(1, sizeof(*g));
	if (!g)
		return tp_error_set(TP_ENOMEM, "out of memory");
	tp_buf_init(&g->kv, GGUF_META_MAX);
	*out = g;
	return 0;
}

void tp_gguf_free(tp_gguf *g)
{
	if (!g)
		return;
	tp_buf_free(&g->kv);
	free(g->tensors);
	free(g);
}

static int put_u32(tp_buf *b, uint32_t v)
{
	unsigned char p[4] = { (unsigned char)v, (unsigned char)(v >> 8),
			       (unsigned char)(v >> 16), (unsigned char)(v >> 24) };
	return tp_buf_add(b, p, sizeof(p));
}

static int put_u64(tp_buf *b, uint64_t v)
{
	int rc = put_u32(b, (uint32_t)v);
	return rc < 0 ? rc : put_u32(b, (uint32_t)(v >> 32));
}

static int put_str(tp_buf *b, const char *s)
{
	size_t n = strlen(s);
	int rc = put_u64(b, n);
	return rc < 0 ? rc : tp_buf_add(b, s, n);
}

static int put_f32(tp_buf *b, float f)
{
	uint32_t bits;
	memcpy(&bits, &f, sizeof(bits));
	return put_u32(b, bits);
}

/* The key and the value's type; the caller adds the value. */
static int kv_head(tp_gguf *g, const char *key, uint32_t type)
{
	int rc = put_str(&g->kv, key);
	if (rc < 0 || (rc = put_u32(&g->kv, type)) < 0)
		return tp_error_wrap(rc, "gguf metadata %s", key);
	g->nkv++;
	return 0;
}

static int kv_done(int rc, const char *key)
{
	return rc < 0 ? tp_error_wrap(rc, "gguf metadata %s", key) : 0;
}

int tp_gguf_kv_str(tp_gguf *g, const char *key, const char *val)
{
	int rc = kv_head(g, key, GGUF_STRING);
	return rc < 0 ? rc : kv_done(put_str(&g->kv, val), key);
}

int tp_gguf_kv_u32(tp_gguf *g, const char *key, uint32_t val)
{
	int rc = kv_head(g, key, GGUF_UINT32);
	return rc < 0 ? rc : kv_done(put_u32(&g->kv, val), key);
}

int tp_gguf_kv_f32(tp_gguf *g, const char *key, float val)
{
	int rc = kv_head(g, key, GGUF_FLOAT32);
	return rc < 0 ? rc : kv_done(put_f32(&g->kv, val), key);
}

int tp_gguf_kv_bool(tp_gguf *g, const char *key, bool val)
{
	unsigned char b = val ? 1 : 0;
	int rc = kv_head(g, key, GGUF_BOOL);
	return rc < 0 ? rc : kv_done(tp_buf_add(&g->kv, &b, 1), key);
}

/* An array's key, element type and length; the caller adds the elements. */
static int kv_array_head(tp_gguf *g, const char *key, uint32_t type, size_t n)
{
	int rc = kv_head(g, key, GGUF_ARRAY);
	if (rc < 0)
		return rc;
	if ((rc = put_u32(&g->kv, type)) < 0 || (rc = put_u64(&g->kv, n)) < 0)
		return kv_done(rc, key);
	return 0;
}

int tp_gguf_kv_str_array(tp_gguf *g, const char *key, const char *const *val, size_t n)
{
	int rc = kv_array_head(g, key, GGUF_STRING, n);
	if (rc < 0)
		return rc;
	for (size_t i = 0; i < n && rc >= 0; i++)
		rc = put_str(&g->kv, val[i]);
	return kv_done(rc, key);
}

int tp_gguf_kv_i32_array(tp_gguf *g, const char *key, const int32_t *val, size_t n)
{
	int rc = kv_array_head(g, key, GGUF_INT32, n);
	if (rc < 0)
		return rc;
	for (size_t i = 0; i < n && rc >= 0; i++)
		rc = put_u32(&g->kv, (uint32_t)val[i]);
	return kv_done(rc, key);
}

int tp_gguf_add_tensor(tp_gguf *g, const char *name, tp_ggml_type t, const uint64_t *ne,
		       unsigned ndim, const void *data, size_t size)
{
	if (strlen(name) > GGUF_NAME_MAX)
		return tp_error_set(TP_EINVAL, "gguf tensor name %s is longer than %u bytes",
				    name, GGUF_NAME_MAX);
	if (ndim == 0 || ndim > TP_GGUF_MAX_DIMS)
		return tp_error_set(TP_EINVAL, "gguf tensor %s: %u dimensions", name, ndim);
	size_t want = tp_ggml_row_size(t, ne[0]);
	for (unsigned d = 1; d < ndim && want; d++)
		want = ne[d] && want <= SIZE_MAX / ne[d] ? want * (size_t)ne[d] : 0;
	if (!want || want != size)
		return tp_error_set(TP_EINVAL, "gguf tensor %s: %zu bytes do not fit ggml type %d "
				    "with %llu columns", name, size, (int)t,
				    (unsigned long long)ne[0]);
	if (g->ntensors == g->cap) {
		if (g->cap >= GGUF_MAX_TENSORS)
			return tp_error_set(TP_ETOOBIG, "gguf: more than %u tensors",
					    GGUF_MAX_TENSORS);
		size_t cap = g->cap ? g->cap * 2 : 64;
		gguf_tensor *p = realloc(g->tensors, cap * sizeof(*p));
		if (!p)
			return tp_error_set(TP_ENOMEM, "out of memory");
		g->tensors = p;
		g->cap = cap;
	}
	gguf_tensor *e = &g->tensors[g->ntensors++];
	memset(e, 0, sizeof(*e));
	memcpy(e->name, name, strlen(name) + 1);
	e->type = t;
	e->ndim = ndim;
	memcpy(e->ne, ne, ndim * sizeof(*ne));
	e->data = data;
	e->size = size;
	return 0;
}

static size_t pad_to(size_t n)
{
	return (TP_GGUF_ALIGNMENT - n % TP_GGUF_ALIGNMENT) % TP_GGUF_ALIGNMENT;
}

int tp_gguf_write(const tp_gguf *g, const char *path)
{
	static const unsigned char zeros[TP_GGUF_ALIGNMENT];
	tp_buf head = TP_BUF_INIT(GGUF_META_MAX + (size_t)GGUF_MAX_TENSORS * 128);
	int fd = -1, rc;
	if ((rc = tp_buf_add(&head, "GGUF", 4)) < 0 || (rc = put_u32(&head, 3)) < 0 ||
	    (rc = put_u64(&head, g->ntensors)) < 0 || (rc = put_u64(&head, g->nkv)) < 0 ||
	    (rc = tp_buf_add(&head, g->kv.ptr, g->kv.len)) < 0)
		goto done;
	/* Offsets are relative to the data section; each tensor starts aligned. */
	uint64_t off = 0;
	for (size_t i = 0; i < g->ntensors; i++) {
		const gguf_tensor *e = &g->tensors[i];
		if ((rc = put_str(&head, e->name)) < 0 || (rc = put_u32(&head, e->ndim)) < 0)
			goto done;
		for (unsigned d = 0; d < e->ndim; d++)
			if ((rc = put_u64(&head, e->ne[d])) < 0)
				goto done;
		if ((rc = put_u32(&head, (uint32_t)e->type)) < 0 || (rc = put_u64(&head, off)) < 0)
			goto done;
		off += e->size + pad_to(e->size);
	}
	if ((rc = tp_buf_add(&head, zeros, pad_to(head.len))) < 0)
		goto done;
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
	if (fd < 0) {
		rc = tp_error_set_errno(tp_error_from_errno(errno), errno, "creating %s", path);
		goto done;
	}
	if ((rc = tp_fs_write_all(fd, head.ptr, head.len)) < 0)
		goto done;
	for (size_t i = 0; i < g->ntensors; i++) {
		const gguf_tensor *e = &g->tensors[i];
		if ((rc = tp_fs_write_all(fd, e->data, e->size)) < 0 ||
		    (rc = tp_fs_write_all(fd, zeros, pad_to(e->size))) < 0)
			goto done;
	}
	if (close(fd) < 0) {
		fd = -1;
		rc = tp_error_set_errno(TP_EIO, errno, "closing %s", path);
		goto done;
	}
	fd = -1;
done:
	if (fd >= 0)
		close(fd);
	if (rc < 0)
		rc = tp_error_wrap(rc, "writing %s", path);
	tp_buf_free(&head);
	return rc;
}

int tp_gguf_llama_meta(tp_gguf *g, const tp_gguf_llama *h)
{
	int rc;
	if ((rc = tp_gguf_kv_str(g, "general.architecture", "llama")) < 0 ||
	    (rc = tp_gguf_kv_str(g, "general.name", h->name ? h->name : "model")) < 0 ||
	    (rc = tp_gguf_kv_u32(g, "general.alignment", TP_GGUF_ALIGNMENT)) < 0 ||
	    (rc = tp_gguf_kv_u32(g, "llama.context_length", h->ctx)) < 0 ||
	    (rc = tp_gguf_kv_u32(g, "llama.embedding_length", h->hidden)) < 0 ||
	    (rc = tp_gguf_kv_u32(g, "llama.block_count", h->layers)) < 0 ||
	    (rc = tp_gguf_kv_u32(g, "llama.feed_forward_length", h->intermediate)) < 0 ||
	    (rc = tp_gguf_kv_u32(g, "llama.rope.dimension_count", h->head_dim)) < 0 ||
	    (rc = tp_gguf_kv_u32(g, "llama.attention.head_count", h->heads)) < 0 ||
	    (rc = tp_gguf_kv_u32(g, "llama.attention.head_count_kv", h->kv_heads)) < 0 ||
	    (rc = tp_gguf_kv_u32(g, "llama.attention.key_length", h->head_dim)) < 0 ||
	    (rc = tp_gguf_kv_u32(g, "llama.attention.value_length", h->head_dim)) < 0 ||
	    (rc = tp_gguf_kv_f32(g, "llama.attention.layer_norm_rms_epsilon", h->rms_eps)) < 0 ||
	    (rc = tp_gguf_kv_f32(g, "llama.rope.freq_base", h->rope_theta)) < 0 ||
	    (rc = tp_gguf_kv_u32(g, "llama.vocab_size", h->vocab)) < 0)
		return rc;
	return 0;
}

/* GPT-2's bytes_to_unicode: printable bytes stand for themselves, the others
 * for U+0100 upwards in byte order. */
static unsigned byte_char(unsigned b)
{
	if ((b >= '!' && b <= '~') || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff))
		return b;
	unsigned n = 0;
	for (unsigned c = 0; c < b; c++)
		if (!((c >= '!' && c <= '~') || (c >= 0xa1 && c <= 0xac) || (c >= 0xae && c <= 0xff)))
			n++;
	return 256 + n;
}

int tp_gguf_byte_vocab(tp_gguf *g)
{
	char text[256][4];
	const char *tokens[256];
	int32_t types[256];
	for (unsigned b = 0; b < 256; b++) {
		unsigned c = byte_char(b);
		if (c < 0x80) {
			text[b][0] = (char)c;
			text[b][1] = 0;
		} else { /* two-byte UTF-8: every code point here is below U+0800 */
			text[b][0] = (char)(0xc0 | c >> 6);
			text[b][1] = (char)(0x80 | (c & 0x3f));
			text[b][2] = 0;
		}
		tokens[b] = text[b];
		types[b] = 1; /* LLAMA_TOKEN_TYPE_NORMAL */
	}
	int rc;
	if ((rc = tp_gguf_kv_str(g, "tokenizer.ggml.model", "gpt2")) < 0 ||
	    (rc = tp_gguf_kv_str(g, "tokenizer.ggml.pre", "default")) < 0 ||
	    (rc = tp_gguf_kv_str_array(g, "tokenizer.ggml.tokens", tokens, 256)) < 0 ||
	    (rc = tp_gguf_kv_i32_array(g, "tokenizer.ggml.token_type", types, 256)) < 0 ||
	    (rc = tp_gguf_kv_str_array(g, "tokenizer.ggml.merges", NULL, 0)) < 0 ||
	    (rc = tp_gguf_kv_bool(g, "tokenizer.ggml.add_bos_token", false)) < 0)
		return rc;
	return 0;
}

int tp_gguf_llama_tensor_name(const char *hf, char *out, size_t cap)
{
	static const struct {
		const char *hf, *gguf;
	} top[] = {
		{ "model.embed_tokens.weight", "token_embd.weight" },
		{ "model.norm.weight", "output_norm.weight" },
		{ "lm_head.weight", "output.weight" },
	}, layer[] = {
		{ "self_attn.q_proj.weight", "attn_q.weight" },
		{ "self_attn.k_proj.weight", "attn_k.weight" },
		{ "self_attn.v_proj.weight", "attn_v.weight" },
		{ "self_attn.o_proj.weight", "attn_output.weight" },
		{ "mlp.gate_proj.weight", "ffn_gate.weight" },
		{ "mlp.up_proj.weight", "ffn_up.weight" },
		{ "mlp.down_proj.weight", "ffn_down.weight" },
		{ "input_layernorm.weight", "attn_norm.weight" },
		{ "post_attention_layernorm.weight", "ffn_norm.weight" },
	};
	const char *name = NULL;
	unsigned long n = 0;
	for (size_t i = 0; i < sizeof(top) / sizeof(top[0]) && !name; i++)
		if (!strcmp(hf, top[i].hf))
			name = top[i].gguf;
	if (!name && !strncmp(hf, "model.layers.", 13) && hf[13] >= '0' && hf[13] <= '9') {
		char *end;
		errno = 0;
		n = strtoul(hf + 13, &end, 10);
		if (!errno && *end == '.' && n < 100000)
			for (size_t i = 0; i < sizeof(layer) / sizeof(layer[0]) && !name; i++)
				if (!strcmp(end + 1, layer[i].hf))
					name = layer[i].gguf;
		if (!name)
			return tp_error_set(TP_ENOTFOUND, "no GGUF name for tensor %s", hf);
		int w = snprintf(out, cap, "blk.%lu.%s", n, name);
		return w < 0 || (size_t)w >= cap ? tp_error_set(TP_ETOOBIG, "GGUF name of %s", hf)
						 : 0;
	}
	if (!name)
		return tp_error_set(TP_ENOTFOUND, "no GGUF name for tensor %s", hf);
	if (strlen(name) >= cap)
		return tp_error_set(TP_ETOOBIG, "GGUF name of %s", hf);
	memcpy(out, name, strlen(name) + 1);
	return 0;
}

void tp_gguf_rope_permute(const float *src, float *dst, size_t heads, size_t head_dim,
			  size_t cols)
{
	size_t half = head_dim / 2;
	for (size_t h = 0; h < heads; h++)
		for (size_t i = 0; i < half; i++)
			for (size_t j = 0; j < 2; j++)
				memcpy(dst + (h * head_dim + 2 * i + j) * cols,
				       src + (h * head_dim + j * half + i) * cols,
				       cols * sizeof(float));
}
