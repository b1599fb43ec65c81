/* Loading a model: config.json plus safetensors weights, converted to fp32. */
#include "runtime_internal.h"

#include "tp_delta.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CONFIG_MAX (4u << 20)
#define SHARDS_MAX 4096

/* The opened weight files and where each tensor lives. */
typedef struct wfile {
	char *path;
	int fd;
	tp_safetensors *st;
} wfile;

typedef struct wsource {
	wfile *files;
	size_t nfiles;
} wsource;

static void wsource_close(wsource *s)
{
	for (size_t i = 0; i < s->nfiles; i++) {
		if (s->files[i].fd >= 0)
			close(s->files[i].fd);
		tp_safetensors_free(s->files[i].st);
		free(s->files[i].path);
	}
	free(s->files);
	s->files = NULL;
	s->nfiles = 0;
}

static int wsource_add(wsource *s, const char *path)
{
	wfile *f = &s->files[s->nfiles];
	f->fd = -1;
	if (!(f->path = strdup(path)))
		return tp_error_set(TP_ENOMEM, "out of memory");
	s->nfiles++;
	int rc = tp_safetensors_open(&f->st, path);
	if (rc < 0)
		return rc;
	f->fd = open(path, O_RDONLY | O_CLOEXEC);
	if (f->fd < 0)
		return tp_error_set_errno(tp_error_from_errno(errno), errno, "opening %s", path);
	return 0;
}

/* weights: a .safetensors file or a shard index. */
static int wsource_open(wsource *s, const char *weights)
{
	char **shards = NULL;
	size_t nshards = 1;
	int rc = 0;
	if (tp_safetensors_is_index(weights)) {
		if ((rc = tp_safetensors_index_shards(&shards, &nshards, weights)) < 0)
			return rc;
		if (nshards == 0 || nshards > SHARDS_MAX) {
			rc = tp_error_set(TP_ECORRUPT, "%s lists %zu shards", weights, nshards);
			goto done;
		}
	}
	if (!(s->files = calloc(nshards, sizeof(wfile)))) {
		rc = tp_error_set(TP_ENOMEM, "out of memory");
		goto done;
	}
	for (size_t i = 0; i < nshards && rc == 0; i++)
		rc = wsource_add(s, shards ? shards[i] : weights);
done:
	if (shards)
		tp_safetensors_shards_free(shards, nshards);
	if (rc < 0)
		wsource_close(s);
	return rc;
}

static const tp_st_tensor *wsource_find(const wsource *s, const char *name, const wfile **f)
{
	for (size_t i = 0; i < s->nfiles; i++) {
		const tp_st_tensor *t = tp_safetensors_find(s->files[i].st, name);
		if (t) {
			*f = &s->files[i];
			return t;
		}
	}
	return NULL;
}

/* Convert n little-endian elements of dtype at raw into dst. */
static void to_f32(tp_dtype dt, const unsigned char *raw, size_t n, float *dst)
{
	for (size_t i = 0; i < n; i++) {
		uint32_t bits;
		switch (dt) {
		case TP_DTYPE_BF16:
			bits = (uint32_t)(raw[2 * i] | raw[2 * i + 1] << 8) << 16;
			memcpy(&dst[i], &bits, sizeof(bits));
			break;
		case TP_DTYPE_F16:
			dst[i] = tp_fp16_to_f32((uint16_t)(raw[2 * i] | raw[2 * i + 1] << 8));
			break;
		default:
			bits = (uint32_t)raw[4 * i] | (uint32_t)raw[4 * i + 1] << 8 |
			       (uint32_t)raw[4 * i + 2] << 16 | (uint32_t)raw[4 * i + 3] << 24;
			memcpy(&dst[i], &bits, sizeof(bits));
			break;
		}
	}
}

static int pread_all(int fd, void *buf, size_t n, uint64_t off, const char *path)
{
	unsigned char *p = buf;
	while (n) {
		ssize_t r = pread(fd, p, n, (off_t)off);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return r < 0 ? tp_error_set_errno(TP_EIO, errno, "reading %s", path)
				     : tp_error_set(TP_ECORRUPT, "%s: truncated", path);
		p += r;
		n -= (size_t)r;
		off += (uint64_t)r;
	}
	return 0;
}

/*
 * Read tensor `name` of shape [d0] (d1 == 0) or [d0, d1] as fp32 into a new
 * buffer. TP_ENOTFOUND when absent (callers decide whether that is fatal).
 */
static int load_tensor(const wsource *s, const char *name, size_t d0, size_t d1, float **out)
{
	const wfile *f = NULL;
	const tp_st_tensor *t = wsource_find(s, name, &f);
	unsigned char *raw = NULL;
	float *dst = NULL;
	size_t n = d1 ? d0 * d1 : d0;
	int rc = 0;
	if (!t)
		return tp_error_set(TP_ENOTFOUND, "tensor %s not found", name);
	if (t->dtype != TP_DTYPE_F32 && t->dtype != TP_DTYPE_F16 && t->dtype != TP_DTYPE_BF16)
		return tp_error_set(TP_EUNSUPPORTED, "tensor %s: dtype %s (F32, F16, BF16 are "
				    "supported)", name, tp_dtype_name(t->dtype));
	if (t->ndim != (d1 ? 2u : 1u) || t->shape[0] != d0 || (d1 && t->shape[1] != d1))
		return tp_error_set(TP_ECORRUPT, "tensor %s: shape does not match config.json",
				    name);
	if (t->size != (uint64_t)n * tp_dtype_size(t->dtype) || t->size > SIZE_MAX)
		return tp_error_set(TP_ECORRUPT, "tensor %s: size mismatch", name);
	if (!(raw = malloc((size_t)t->size)) || !(dst = malloc(n * sizeof(float)))) {
		rc = tp_error_set(TP_ENOMEM, "out of memory for %s", name);
		goto done;
	}
	if ((rc = pread_all(f->fd, raw, (size_t)t->size, t->offset, f->path)) < 0)
		goto done;
	to_f32(t->dtype, raw, n, dst);
	*out = dst;
	dst = NULL;
done:
	free(raw);
	free(dst);
	return rc;
}

/* The embedding as stored when it is bf16/fp16 (2 bytes per value instead
 * of 4), else as fp32. */
static int load_embed(tp_model *m, const wsource *s)
{
	const tp_model_config *c = &m->cfg;
	const char *name = "model.embed_tokens.weight";
	const wfile *f = NULL;
	const tp_st_tensor *t = wsource_find(s, name, &f);
	if (!t || (t->dtype != TP_DTYPE_BF16 && t->dtype != TP_DTYPE_F16)) {
		float *e = NULL;
		int rc = load_tensor(s, name, c->vocab, c->hidden, &e);
		m->embed = e;
		m->embed_dtype = TP_DTYPE_F32;
		return rc;
	}
	size_t n = c->vocab * c->hidden;
	if (t->ndim != 2 || t->shape[0] != c->vocab || t->shape[1] != c->hidden)
		return tp_error_set(TP_ECORRUPT, "tensor %s: shape does not match config.json",
				    name);
	if (t->size != (uint64_t)n * 2 || t->size > SIZE_MAX)
		return tp_error_set(TP_ECORRUPT, "tensor %s: size mismatch", name);
	if (!(m->embed = malloc((size_t)t->size)))
		return tp_error_set(TP_ENOMEM, "out of memory for %s", name);
	m->embed_dtype = t->dtype;
	return pread_all(f->fd, m->embed, (size_t)t->size, t->offset, f->path);
}

void tp_model_embed_row(const tp_model *m, int32_t id, float *out)
{
	size_t h = m->cfg.hidden, sz = m->embed_dtype == TP_DTYPE_F32 ? 4 : 2;
	to_f32(m->embed_dtype, (const unsigned char *)m->embed + (size_t)id * h * sz, h, out);
}

static const char *const lin_suffix[LIN_PER_LAYER] = {
	"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
	"mlp.gate_proj", "mlp.up_proj", "mlp.down_proj",
};

static void lin_dims(const tp_model_config *c, int which, size_t *o, size_t *i, bool *bias)
{
	size_t q = c->heads * c->head_dim, kv = c->kv_heads * c->head_dim;
	static const bool is_qkv[LIN_PER_LAYER] = { true, true, true };
	switch (which) {
	case LIN_Q: *o = q; *i = c->hidden; break;
	case LIN_K:
	case LIN_V: *o = kv; *i = c->hidden; break;
	case LIN_O: *o = c->hidden; *i = q; break;
	case LIN_GATE:
	case LIN_UP: *o = c->intermediate; *i = c->hidden; break;
	default: *o = c->hidden; *i = c->intermediate; break;
	}
	*bias = is_qkv[which] ? c->qkv_bias : which == LIN_O && c->out_bias;
}

/* Build linear layer idx from its weights (and bias), via the factory. */
static int load_linear(tp_model *m, const wsource *s, size_t idx, const char *wname,
		       size_t o, size_t i, bool has_bias, const tp_model_opts *opts)
{
	char bname[512];
	float *w = NULL, *b = NULL;
	int rc;
	if ((rc = load_tensor(s, wname, o, i, &w)) < 0)
		goto done;
	if (has_bias) {
		snprintf(bname, sizeof(bname), "%s.bias", m->names[idx]);
		if ((rc = load_tensor(s, bname, o, 0, &b)) < 0)
			goto done;
	}
	rc = TP_ENOTFOUND;
	if (opts && opts->make_linear)
		rc = opts->make_linear(opts->make_linear_ctx, m->names[idx], w, b, o, i,
				       &m->linear[idx]);
	if (rc == TP_ENOTFOUND)
		rc = tp_linear_dense_new(&m->linear[idx], w, b, o, i);
	m->params += (uint64_t)o * i + (has_bias ? o : 0);
done:
	free(w);
	free(b);
	return rc;
}

static int alloc_tables(tp_model *m)
{
	const tp_model_config *c = &m->cfg;
	m->nlinear = LIN_PER_LAYER * c->layers + 1;
	m->linear = calloc(m->nlinear, sizeof(*m->linear));
	m->names = calloc(m->nlinear, sizeof(*m->names));
	m->norms = malloc((2 * c->layers + 1) * c->hidden * sizeof(float));
	if (!m->linear || !m->names || !m->norms)
		return tp_error_set(TP_ENOMEM, "out of memory");
	for (size_t l = 0; l < c->layers; l++)
		for (int j = 0; j < LIN_PER_LAYER; j++) {
			char name[128];
			snprintf(name, sizeof(name), "model.layers.%zu.%s", l, lin_suffix[j]);
			if (!(m->names[l * LIN_PER_LAYER + j] = strdup(name)))
				return tp_error_set(TP_ENOMEM, "out of memory");
		}
	if (!(m->names[m->nlinear - 1] = strdup("lm_head")))
		return tp_error_set(TP_ENOMEM, "out of memory");
	return 0;
}

static int load_norm(tp_model *m, const wsource *s, const char *name, size_t slot)
{
	float *w = NULL;
	int rc = load_tensor(s, name, m->cfg.hidden, 0, &w);
	if (rc < 0)
		return rc;
	memcpy(m->norms + slot * m->cfg.hidden, w, m->cfg.hidden * sizeof(float));
	m->params += m->cfg.hidden;
	free(w);
	return 0;
}

static int load_weights(tp_model *m, const wsource *s, const tp_model_opts *opts)
{
	const tp_model_config *c = &m->cfg;
	char name[512];
	int rc;
	if ((rc = load_embed(m, s)) < 0)
		return rc;
	m->params += (uint64_t)c->vocab * c->hidden;
	for (size_t l = 0; l < c->layers; l++) {
		snprintf(name, sizeof(name), "model.layers.%zu.input_layernorm.weight", l);
		if ((rc = load_norm(m, s, name, 2 * l)) < 0)
			return rc;
		snprintf(name, sizeof(name), "model.layers.%zu.post_attention_layernorm.weight", l);
		if ((rc = load_norm(m, s, name, 2 * l + 1)) < 0)
			return rc;
		for (int j = 0; j < LIN_PER_LAYER; j++) {
			size_t o, i, idx = l * LIN_PER_LAYER + (size_t)j;
			bool bias;
			lin_dims(c, j, &o, &i, &bias);
			snprintf(name, sizeof(name), "%s.weight", m->names[idx]);
			if ((rc = load_linear(m, s, idx, name, o, i, bias, opts)) < 0)
				return rc;
		}
	}
	if ((rc = load_norm(m, s, "model.norm.weight", 2 * c->layers)) < 0)
		return rc;
	/* A tied head reads the embedding again: simpler than sharing it. */
	const char *head = c->tie_embeddings ? "model.embed_tokens.weight" : "lm_head.weight";
	rc = load_linear(m, s, m->nlinear - 1, head, c->vocab, c->hidden, false, opts);
	if (c->tie_embeddings)
		m->params -= (uint64_t)c->vocab * c->hidden;
	return rc;
}

/* dir/model.safetensors, else dir/model.safetensors.index.json. */
static int find_weights(const char *dir, char **out)
{
	int rc = tp_path_join(out, dir, "model.safetensors");
	if (rc < 0 || access(*out, R_OK) == 0)
		return rc;
	free(*out);
	if ((rc = tp_path_join(out, dir, "model.safetensors.index.json")) < 0)
		return rc;
	if (access(*out, R_OK) == 0)
		return 0;
	free(*out);
	*out = NULL;
	return tp_error_set(TP_ENOTFOUND, "%s has no model.safetensors or "
			    "model.safetensors.index.json", dir);
}

static int load_config(const char *dir, tp_model_config *c)
{
	char *path = NULL;
	tp_buf json = TP_BUF_INIT(CONFIG_MAX);
	int rc;
	if ((rc = tp_path_join(&path, dir, "config.json")) < 0)
		return rc;
	if ((rc = tp_fs_read_regular(path, &json)) == 0 &&
	    (rc = tp_model_config_parse(c, json.ptr ? json.ptr : "", json.len)) < 0)
		tp_error_wrap(rc, "%s", path);
	free(path);
	tp_buf_free(&json);
	return rc;
}

int tp_model_load(tp_model **out, const char *dir, const tp_model_opts *opts)
{
	wsource src = { 0 };
	char *wpath = NULL;
	int rc;
	tp_model *m = calloc(1, sizeof(*m));
	if (!m)
		return tp_error_set(TP_ENOMEM, "out of memory");
	if ((rc = load_config(dir, &m->cfg)) < 0 || (rc = alloc_tables(m)) < 0 ||
	    (rc = tp_pool_new(&m->pool, opts ? opts->threads : 0)) < 0)
		goto done;
	if (opts && opts->weights) {
		if (!(wpath = strdup(opts->weights))) {
			rc = tp_error_set(TP_ENOMEM, "out of memory");
			goto done;
		}
	} else if ((rc = find_weights(dir, &wpath)) < 0) {
		goto done;
	}
	if ((rc = wsource_open(&src, wpath)) < 0)
		goto done;
	if ((rc = load_weights(m, &src, opts)) < 0)
		tp_error_wrap(rc, "%s", wpath);
done:
	wsource_close(&src);
	free(wpath);
	if (rc < 0) {
		tp_model_free(m);
		return rc;
	}
	*out = m;
	return 0;
}

void tp_model_free(tp_model *m)
{
	if (!m)
		return;
	for (size_t i = 0; i < m->nlinear; i++) {
		tp_linear_free(m->linear ? m->linear[i] : NULL);
		free(m->names ? m->names[i] : NULL);
	}
	free(m->linear);
	free(m->names);
	free(m->embed);
	free(m->norms);
	tp_pool_free(m->pool);
	free(m);
}

const tp_model_config *tp_model_get_config(const tp_model *m)
{
	return &m->cfg;
}

tp_pool *tp_model_pool(const tp_model *m)
{
	return m->pool;
}

size_t tp_model_linear_count(const tp_model *m)
{
	return m->nlinear;
}

const char *tp_model_linear_name(const tp_model *m, size_t i)
{
	return i < m->nlinear ? m->names[i] : NULL;
}

tp_linear *tp_model_linear(const tp_model *m, size_t i)
{
	return i < m->nlinear ? m->linear[i] : NULL;
}

int tp_model_swap_linear(tp_model *m, size_t i, tp_linear *l, tp_linear **old)
{
	if (i >= m->nlinear || !l)
		return tp_error_set(TP_EINVAL, "no linear layer %zu", i);
	if (l->in != m->linear[i]->in || l->out != m->linear[i]->out)
		return tp_error_set(TP_EINVAL, "%s: replacement is %zux%zu, not %zux%zu",
				    m->names[i], l->out, l->in, m->linear[i]->out,
				    m->linear[i]->in);
	*old = m->linear[i];
	m->linear[i] = l;
	return 0;
}

int tp_model_set_linear(tp_model *m, size_t i, tp_linear *l)
{
	tp_linear *old = NULL;
	int rc = tp_model_swap_linear(m, i, l, &old);
	if (rc == 0)
		tp_linear_free(old);
	return rc;
}

float *tp_model_norm_weights(tp_model *m, size_t layer, int which)
{
	if (layer >= m->cfg.layers || (which != 0 && which != 1))
		return NULL;
	return m->norms + (2 * layer + (size_t)which) * m->cfg.hidden;
}

const float *tp_model_norms(const tp_model *m)
{
	return m->norms;
}

uint64_t tp_model_params(const tp_model *m)
{
	return m->params;
}
