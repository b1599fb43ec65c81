/*
 * tp-export-check: round-trips of tenpak's export (optimize/export.c) through
 * a reader of its own, for tests/e2e/t0175-optimize-export.sh.
 *
 *   tp-export-check write MODEL_DIR FORMAT CANDIDATE OUT_DIR
 *       load MODEL_DIR with its decoder layers packed in FORMAT (RTN) and
 *       export it as CANDIDATE (the layout of CANDIDATE's method: an RTN
 *       model stands in for GPTQ's or AWQ's codes)
 *   tp-export-check check MODEL_DIR FORMAT OUT_DIR
 *       load MODEL_DIR the same way and compare OUT_DIR's export with it:
 *       safetensors (GPTQ or AWQ layout, read back with the loaders' rules,
 *       tp_export_*_dequantize): every layer's weights equal the packed
 *       layer's dequantization bit for bit, every other tensor the source's
 *       bytes; GGUF: every block layer's bytes equal the packed bytes (q/k
 *       rows in llama.cpp's RoPE order), norms the model's in F32.
 * Exit 0 when all agree, 1 otherwise (saying what differs).
 */
#include <cjson/cJSON.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tp_common.h"
#include "tp_delta.h"
#include "tp_optimize.h"
#include "tp_runtime.h"

static int load(tp_model **m, const char *dir, const char *format)
{
	tp_optimize_packed_ctx ctx = { .format = tp_quant_format_find(format) };
	if (!ctx.format)
		return tp_error_set(TP_EINVAL, "no format %s", format);
	tp_model_opts o = { .threads = 1, .make_linear = tp_optimize_make_linear_packed,
			    .make_linear_ctx = &ctx };
	return tp_model_load(m, dir, &o);
}

/* The bytes of tensor name of st (file fd) in a new buffer, checking its
 * dtype and size. */
static int read_named(const tp_safetensors *st, int fd, const char *name, tp_dtype dt,
		      uint64_t size, uint8_t **out)
{
	const tp_st_tensor *t = tp_safetensors_find(st, name);
	if (!t)
		return tp_error_set(TP_ENOTFOUND, "no tensor %s", name);
	if (t->dtype != dt || t->size != size)
		return tp_error_set(TP_ECORRUPT, "tensor %s: %s, %llu bytes (want %s, %llu)", name,
				    tp_dtype_name(t->dtype), (unsigned long long)t->size,
				    tp_dtype_name(dt), (unsigned long long)size);
	uint8_t *b = malloc((size_t)size + 1);
	if (!b)
		return tp_error_set(TP_ENOMEM, "out of memory");
	if (pread(fd, b, (size_t)size, (off_t)t->offset) != (ssize_t)size) {
		free(b);
		return tp_error_set(TP_EIO, "reading %s", name);
	}
	*out = b;
	return 0;
}

static uint32_t le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static int check_st(tp_model *m, const char *dir, const char *out_dir)
{
	char *cpath = NULL, *spath = NULL, *opath = NULL;
	tp_buf cfg = TP_BUF_INIT(4u << 20);
	cJSON *j = NULL;
	tp_safetensors *st = NULL, *src = NULL;
	int fd = -1, sfd = -1, rc;
	size_t layers = 0, copied = 0, expect = 0;
	if ((rc = tp_path_join(&cpath, out_dir, "config.json")) < 0 ||
	    (rc = tp_fs_read_regular(cpath, &cfg)) < 0 ||
	    (rc = tp_path_join(&opath, out_dir, "model.safetensors")) < 0 ||
	    (rc = tp_path_join(&spath, dir, "model.safetensors")) < 0 ||
	    (rc = tp_safetensors_open(&st, opath)) < 0 || (rc = tp_fs_open_regular(opath, &fd)) < 0 ||
	    (rc = tp_safetensors_open(&src, spath)) < 0 || (rc = tp_fs_open_regular(spath, &sfd)) < 0)
		goto done;
	j = cJSON_ParseWithLength(cfg.ptr, cfg.len);
	const cJSON *q = cJSON_GetObjectItemCaseSensitive(j, "quantization_config");
	const char *method = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(q, "quant_method"));
	const char *fmt = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(q, "checkpoint_format"));
	const cJSON *jb = cJSON_GetObjectItemCaseSensitive(q, "bits"),
		    *jg = cJSON_GetObjectItemCaseSensitive(q, "group_size");
	if (!method || !cJSON_IsNumber(jb) || !cJSON_IsNumber(jg) || jg->valuedouble < 1) {
		rc = tp_error_set(TP_ECORRUPT, "%s: no quantization_config", cpath);
		goto done;
	}
	bool awq = !strcmp(method, "awq"), v1 = !fmt || !strcmp(fmt, "gptq");
	int bits = jb->valueint;
	size_t group = (size_t)jg->valuedouble;
	printf("%s: quant_method %s, bits %d, group_size %zu%s\n", cpath, method, bits, group,
	       awq ? "" : v1 ? ", checkpoint_format gptq (v1)" : ", checkpoint_format gptq_v2");
	for (size_t i = 0; i < src->ntensors; i++) {
		const tp_st_tensor *t = &src->tensors[i];
		size_t len = strlen(t->name);
		char base[256];
		if (len < 8 || len - 7 >= sizeof(base))
			continue;
		memcpy(base, t->name, len - 7);
		base[len - 7] = 0;
		if (!tp_optimize_is_decoder_linear(base)) {
			const tp_st_tensor *o = tp_safetensors_find(st, t->name);
			uint8_t *a = NULL, *b = NULL;
			if (!o) {
				rc = tp_error_set(TP_ENOTFOUND, "%s: no tensor %s", opath, t->name);
				goto done;
			}
			if ((rc = read_named(st, fd, t->name, t->dtype, t->size, &a)) == 0 &&
			    (rc = read_named(src, sfd, t->name, t->dtype, t->size, &b)) == 0 &&
			    (memcmp(o->shape, t->shape, sizeof(o->shape)) || memcmp(a, b, t->size)))
				rc = tp_error_set(TP_ECORRUPT, "tensor %s differs from the source",
						  t->name);
			free(a);
			free(b);
			if (rc < 0)
				goto done;
			copied++;
			expect++;
			continue;
		}
		size_t li = SIZE_MAX;
		for (size_t k = 0; k < tp_model_linear_count(m); k++)
			if (!strcmp(tp_model_linear_name(m, k), base))
				li = k;
		const tp_quant_format *f = NULL;
		const void *packed = NULL;
		const tp_linear *l = li != SIZE_MAX ? tp_model_linear(m, li) : NULL;
		if (!l || !tp_quant_linear_parts(l, &f, &packed, NULL)) {
			rc = tp_error_set(TP_EINVAL, "%s is not a packed layer", base);
			goto done;
		}
		size_t in = l->in, out = l->out, ng = (in + group - 1) / group;
		size_t qw = awq ? in * (out / 8) : in * (size_t)bits / 32 * out;
		size_t qz = awq ? ng * (out / 8) : ng * (out * (size_t)bits / 32);
		uint8_t *bq = NULL, *bz = NULL, *bs = NULL, *bg = NULL;
		uint32_t *wq = malloc(qw * 4 + 4), *wz = malloc(qz * 4 + 4);
		uint16_t *sc = malloc(ng * out * 2 + 2);
		int32_t *gi = malloc(in * 4 + 4);
		float *w1 = malloc(in * out * sizeof(float) + 4), *w2 = malloc(in * out * sizeof(float) + 4);
		char name[300];
		if (!wq || !wz || !sc || !gi || !w1 || !w2)
			rc = tp_error_set(TP_ENOMEM, "out of memory");
		snprintf(name, sizeof(name), "%s.qweight", base);
		if (rc == 0)
			rc = read_named(st, fd, name, TP_DTYPE_I32, qw * 4, &bq);
		snprintf(name, sizeof(name), "%s.qzeros", base);
		if (rc == 0)
			rc = read_named(st, fd, name, TP_DTYPE_I32, qz * 4, &bz);
		snprintf(name, sizeof(name), "%s.scales", base);
		if (rc == 0)
			rc = read_named(st, fd, name, TP_DTYPE_F16, ng * out * 2, &bs);
		snprintf(name, sizeof(name), "%s.g_idx", base);
		if (rc == 0 && !awq)
			rc = read_named(st, fd, name, TP_DTYPE_I32, in * 4, &bg);
		if (rc == 0) {
			for (size_t i2 = 0; i2 < qw; i2++)
				wq[i2] = le32(bq + 4 * i2);
			for (size_t i2 = 0; i2 < qz; i2++)
				wz[i2] = le32(bz + 4 * i2);
			for (size_t i2 = 0; i2 < ng * out; i2++)
				sc[i2] = (uint16_t)(bs[2 * i2] | bs[2 * i2 + 1] << 8);
			for (size_t i2 = 0; !awq && i2 < in; i2++)
				gi[i2] = (int32_t)le32(bg + 4 * i2);
			rc = awq ? tp_export_awq_dequantize(group, in, out, wq, wz, sc, w1)
				 : tp_export_gptq_dequantize(bits, in, out, ng, wq, wz, sc, gi, v1, w1);
		}
		if (rc == 0) {
			f->dequantize(packed, out, in, w2);
			if (memcmp(w1, w2, in * out * sizeof(float)))
				rc = tp_error_set(TP_ECORRUPT, "%s: the exported weights differ from "
						  "the packed layer's", base);
		}
		free(bq), free(bz), free(bs), free(bg), free(wq), free(wz), free(sc), free(gi);
		free(w1), free(w2);
		if (rc < 0)
			goto done;
		layers++;
		expect += awq ? 3 : 4;
	}
	if (st->ntensors != expect) {
		rc = tp_error_set(TP_ECORRUPT, "%s holds %zu tensors, not %zu", opath, st->ntensors,
				  expect);
		goto done;
	}
	printf("%zu layers read back equal to the packed layers, %zu tensors equal to the "
	       "source\n", layers, copied);
done:
	if (fd >= 0)
		close(fd);
	if (sfd >= 0)
		close(sfd);
	cJSON_Delete(j);
	tp_safetensors_free(st);
	tp_safetensors_free(src);
	tp_buf_free(&cfg);
	free(cpath);
	free(spath);
	free(opath);
	return rc;
}

/* ---- a tiny GGUF reader ---------------------------------------------------- */

typedef struct rd {
	const uint8_t *p;
	size_t n, at;
	bool bad;
} rd;

static uint64_t rd_u(rd *r, unsigned w)
{
	uint64_t v = 0;
	if (r->at + w > r->n) {
		r->bad = true;
		return 0;
	}
	for (unsigned i = 0; i < w; i++)
		v |= (uint64_t)r->p[r->at + i] << (8 * i);
	r->at += w;
	return v;
}

/* A string into out (cut to cap - 1). */
static void rd_str(rd *r, char *out, size_t cap)
{
	uint64_t len = rd_u(r, 8);
	if (len > r->n - r->at) {
		r->bad = true;
		len = 0;
	}
	size_t c = len < cap - 1 ? (size_t)len : cap - 1;
	memcpy(out, r->p + r->at, c);
	out[c] = 0;
	r->at += (size_t)len;
}

static void rd_skip(rd *r, uint32_t type)
{
	static const unsigned w[] = { 1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8 };
	char tmp[8];
	if (type == 8) {
		rd_str(r, tmp, sizeof(tmp));
	} else if (type == 9) {
		uint32_t t = (uint32_t)rd_u(r, 4);
		uint64_t n = rd_u(r, 8);
		for (uint64_t i = 0; i < n && !r->bad; i++)
			rd_skip(r, t);
	} else if (type < 13 && w[type]) {
		r->at += w[type];
		if (r->at > r->n)
			r->bad = true;
	} else {
		r->bad = true;
	}
}

static int check_gguf(tp_model *m, const char *path)
{
	tp_buf b = TP_BUF_INIT((size_t)1 << 34);
	int rc = tp_fs_read_regular(path, &b);
	if (rc < 0)
		return rc;
	rd r = { (const uint8_t *)b.ptr, b.len, 0, false };
	const tp_model_config *c = tp_model_get_config(m);
	char arch[32] = "", tokm[32] = "";
	size_t same = 0, norms = 0;
	if (rd_u(&r, 4) != 0x46554747u || rd_u(&r, 4) != 3) {
		rc = tp_error_set(TP_ECORRUPT, "%s: not GGUF v3", path);
		goto done;
	}
	uint64_t nt = rd_u(&r, 8), nkv = rd_u(&r, 8);
	for (uint64_t i = 0; i < nkv && !r.bad; i++) {
		char key[128];
		rd_str(&r, key, sizeof(key));
		uint32_t type = (uint32_t)rd_u(&r, 4);
		if (type == 8 && !strcmp(key, "general.architecture"))
			rd_str(&r, arch, sizeof(arch));
		else if (type == 8 && !strcmp(key, "tokenizer.ggml.model"))
			rd_str(&r, tokm, sizeof(tokm));
		else
			rd_skip(&r, type);
	}
	if (r.bad || strcmp(arch, "llama") || strcmp(tokm, "gpt2")) {
		rc = tp_error_set(TP_ECORRUPT, "%s: metadata (architecture '%s', tokenizer '%s')",
				  path, arch, tokm);
		goto done;
	}
	typedef struct { char name[64]; uint32_t type; uint64_t ne[4], off; unsigned nd; } tinfo;
	tinfo *ti = calloc(nt + 1, sizeof(*ti));
	if (!ti) {
		rc = tp_error_set(TP_ENOMEM, "out of memory");
		goto done;
	}
	for (uint64_t i = 0; i < nt && !r.bad; i++) {
		rd_str(&r, ti[i].name, sizeof(ti[i].name));
		ti[i].nd = (unsigned)rd_u(&r, 4);
		for (unsigned d = 0; d < ti[i].nd && d < 4; d++)
			ti[i].ne[d] = rd_u(&r, 8);
		ti[i].type = (uint32_t)rd_u(&r, 4);
		ti[i].off = rd_u(&r, 8);
	}
	size_t data = (r.at + TP_GGUF_ALIGNMENT - 1) / TP_GGUF_ALIGNMENT * TP_GGUF_ALIGNMENT;
	for (size_t li = 0; li < tp_model_linear_count(m) && rc == 0 && !r.bad; li++) {
		const char *hf = tp_model_linear_name(m, li);
		const tp_quant_format *f = NULL;
		const void *packed = NULL;
		char hfw[300], gname[64];
		if (!tp_optimize_is_decoder_linear(hf))
			continue;
		const tp_linear *l = tp_model_linear(m, li);
		snprintf(hfw, sizeof(hfw), "%s.weight", hf);
		if (!tp_quant_linear_parts(l, &f, &packed, NULL) ||
		    (rc = tp_gguf_llama_tensor_name(hfw, gname, sizeof(gname))) < 0)
			break;
		tinfo *t = NULL;
		for (uint64_t i = 0; i < nt; i++)
			if (!strcmp(ti[i].name, gname))
				t = &ti[i];
		size_t size = f->packed_size(l->out, l->in), row = size / l->out;
		if (!t || t->nd != 2 || t->ne[0] != l->in || t->ne[1] != l->out ||
		    data + t->off + size > b.len) {
			rc = tp_error_set(TP_ECORRUPT, "%s: tensor %s missing or of another shape",
					  path, gname);
			break;
		}
		const uint8_t *g = (const uint8_t *)b.ptr + data + t->off;
		bool is_q = strstr(gname, ".attn_q.") != NULL, is_k = strstr(gname, ".attn_k.") != NULL;
		size_t hd = c->head_dim, half = hd / 2;
		for (size_t rr = 0; rr < l->out && rc == 0; rr++) {
			/* GGUF row rr holds HF row src (convert_hf_to_gguf's permute). */
			size_t src = rr;
			if (is_q || is_k) {
				size_t h = rr / hd, i = (rr % hd) / 2, jj = rr % 2;
				src = h * hd + jj * half + i;
			}
			if (memcmp(g + rr * row, (const uint8_t *)packed + src * row, row))
				rc = tp_error_set(TP_ECORRUPT, "%s: %s row %zu differs", path, gname, rr);
		}
		same++;
	}
	for (size_t layer = 0; layer < c->layers && rc == 0; layer++)
		for (int which = 0; which < 2 && rc == 0; which++) {
			char gname[64];
			snprintf(gname, sizeof(gname), "blk.%zu.%s.weight", layer,
				 which ? "ffn_norm" : "attn_norm");
			const float *w = tp_model_norm_weights(m, layer, which);
			tinfo *t = NULL;
			for (uint64_t i = 0; i < nt; i++)
				if (!strcmp(ti[i].name, gname))
					t = &ti[i];
			if (!t || t->type != TP_GGML_F32 || t->ne[0] != c->hidden ||
			    data + t->off + c->hidden * 4 > b.len ||
			    memcmp((const uint8_t *)b.ptr + data + t->off, w, c->hidden * 4))
				rc = tp_error_set(TP_ECORRUPT, "%s: norm %s differs", path, gname);
			norms++;
		}
	free(ti);
	if (rc == 0 && r.bad)
		rc = tp_error_set(TP_ECORRUPT, "%s: truncated", path);
	if (rc == 0 && same != 7 * c->layers)
		rc = tp_error_set(TP_ECORRUPT, "%s: %zu block layers checked", path, same);
	if (rc == 0)
		printf("%s: %zu block layers equal to the packed bytes, %zu norms equal\n", path,
		       same, norms);
done:
	tp_buf_free(&b);
	return rc;
}

int main(int argc, char **argv)
{
	tp_model *m = NULL;
	int rc;
	if (argc == 6 && !strcmp(argv[1], "write")) {
		char *written = NULL;
		if ((rc = load(&m, argv[2], argv[3])) == 0 &&
		    (rc = tp_optimize_export(m, argv[2], NULL, argv[4], argv[5], &written)) == 0)
			printf("%s\n", written);
		free(written);
	} else if (argc == 5 && !strcmp(argv[1], "check")) {
		char gguf[4096];
		snprintf(gguf, sizeof(gguf), "%s/model-%s.gguf", argv[4], argv[3]);
		if ((rc = load(&m, argv[2], argv[3])) == 0)
			rc = tp_fs_is_regular(gguf) ? check_gguf(m, gguf) : check_st(m, argv[2], argv[4]);
	} else {
		fprintf(stderr, "usage: tp-export-check write MODEL_DIR FORMAT CANDIDATE OUT_DIR\n"
				"       tp-export-check check MODEL_DIR FORMAT OUT_DIR\n");
		return 2;
	}
	tp_model_free(m);
	if (rc < 0) {
		fprintf(stderr, "tp-export-check: %s\n", tp_error_last());
		return 1;
	}
	return 0;
}
