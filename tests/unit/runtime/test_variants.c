/*
 * Architecture variants without a PyTorch reference, checked by
 * equivalence on rewritten fixture weights: grouped-query attention,
 * Qwen2 biases, tied embeddings and sharded files each give the same
 * logits as a plain Llama that computes the same function.
 */
#include "../tp_test.h"
#include "evaltest.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <sys/stat.h>

static const char *data_dir;
static char work[] = "/tmp/tp-opt-variants.XXXXXX";

typedef struct tensor {
	char name[96];
	size_t rows, cols; /* cols 0: a vector */
	float *data;
} tensor;

typedef struct weights {
	tensor t[64];
	size_t n;
} weights;

/* The fixture's BF16 weights as fp32. */
static int read_weights(const char *path, weights *w)
{
	tp_safetensors *st = NULL;
	int fd = open(path, O_RDONLY);
	if (fd < 0 || tp_safetensors_open(&st, path) < 0 || st->ntensors > 64)
		return -1;
	for (size_t i = 0; i < st->ntensors; i++) {
		const tp_st_tensor *s = &st->tensors[i];
		tensor *t = &w->t[w->n++];
		size_t n = (size_t)s->size / 2;
		uint16_t *raw = malloc(n * 2);
		snprintf(t->name, sizeof(t->name), "%s", s->name);
		t->rows = (size_t)s->shape[0];
		t->cols = s->ndim == 2 ? (size_t)s->shape[1] : 0;
		t->data = malloc(n * sizeof(float));
		if (!raw || !t->data || pread(fd, raw, n * 2, (off_t)s->offset) != (ssize_t)(n * 2))
			return -1;
		for (size_t j = 0; j < n; j++) {
			uint32_t bits = (uint32_t)raw[j] << 16;
			memcpy(&t->data[j], &bits, 4);
		}
		free(raw);
	}
	tp_safetensors_free(st);
	close(fd);
	return 0;
}

static void free_weights(weights *w)
{
	for (size_t i = 0; i < w->n; i++)
		free(w->t[i].data);
	w->n = 0;
}

static tensor *find(weights *w, const char *name)
{
	for (size_t i = 0; i < w->n; i++)
		if (strcmp(w->t[i].name, name) == 0)
			return &w->t[i];
	return NULL;
}

/* Write tensors [from, to) of w (skipping drop) as one F32 safetensors file. */
static int write_st(const char *path, const weights *w, size_t from, size_t to, const char *drop)
{
	cJSON *h = cJSON_CreateObject();
	size_t off = 0;
	for (size_t i = from; i < to; i++) {
		const tensor *t = &w->t[i];
		if (drop && strcmp(t->name, drop) == 0)
			continue;
		size_t n = t->cols ? t->rows * t->cols : t->rows;
		cJSON *e = cJSON_AddObjectToObject(h, t->name);
		cJSON_AddStringToObject(e, "dtype", "F32");
		cJSON *shape = cJSON_AddArrayToObject(e, "shape");
		cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)t->rows));
		if (t->cols)
			cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)t->cols));
		cJSON *offs = cJSON_AddArrayToObject(e, "data_offsets");
		cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)off));
		cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)(off + n * 4)));
		off += n * 4;
	}
	char *js = cJSON_PrintUnformatted(h);
	cJSON_Delete(h);
	FILE *f = fopen(path, "wb");
	if (!js || !f)
		return -1;
	size_t hl = strlen(js), pad = (8 - hl % 8) % 8;
	uint64_t total = hl + pad;
	fwrite(&total, 8, 1, f);
	fwrite(js, 1, hl, f);
	fwrite("       ", 1, pad, f);
	for (size_t i = from; i < to; i++) {
		const tensor *t = &w->t[i];
		if (!drop || strcmp(t->name, drop) != 0)
			fwrite(t->data, 4, t->cols ? t->rows * t->cols : t->rows, f);
	}
	free(js);
	return fclose(f);
}

/* A model directory: the fixture config with some fields changed. */
static const char *make_dir(const char *name, const char *arch, int kv_heads, bool tie,
			    bool attn_bias)
{
	/* Kept apart from tpt_path's few rotating buffers: dirs live long. */
	static char dirs[16][512];
	static size_t ndirs;
	char *dir = dirs[ndirs++ % 16], buf[4096];
	snprintf(dir, sizeof(dirs[0]), "%s/%s", work, name);
	mkdir(dir, 0777);
	FILE *f = fopen(tpt_path("%s/eval/config.json", data_dir), "rb");
	size_t n = f ? fread(buf, 1, sizeof(buf), f) : 0;
	if (f)
		fclose(f);
	cJSON *c = cJSON_ParseWithLength(buf, n);
	cJSON_ReplaceItemInArray(cJSON_GetObjectItem(c, "architectures"), 0,
				 cJSON_CreateString(arch));
	cJSON_ReplaceItemInObject(c, "num_key_value_heads", cJSON_CreateNumber(kv_heads));
	cJSON_ReplaceItemInObject(c, "tie_word_embeddings", cJSON_CreateBool(tie));
	cJSON_ReplaceItemInObject(c, "attention_bias", cJSON_CreateBool(attn_bias));
	char *js = cJSON_Print(c);
	f = fopen(tpt_path("%s/config.json", dir), "wb");
	if (f && js)
		fputs(js, f);
	if (f)
		fclose(f);
	free(js);
	cJSON_Delete(c);
	return dir;
}

/* Set one top-level key of dir/config.json to a JSON value. */
static void set_config(const char *dir, const char *key, const char *json)
{
	char buf[4096];
	const char *path = tpt_path("%s/config.json", dir);
	FILE *f = fopen(path, "rb");
	size_t n = f ? fread(buf, 1, sizeof(buf), f) : 0;
	if (f)
		fclose(f);
	cJSON *c = cJSON_ParseWithLength(buf, n);
	cJSON_ReplaceItemInObject(c, key, cJSON_Parse(json));
	char *js = cJSON_Print(c);
	if ((f = fopen(path, "wb"))) {
		fputs(js, f);
		fclose(f);
	}
	free(js);
	cJSON_Delete(c);
}

/* Logits of the first 48 held-out tokens. */
static float *logits_of(const char *dir)
{
	static int32_t ids[48];
	for (size_t i = 0; i < 48; i++)
		ids[i] = "It is a truth universally acknowledged, that a si"[i];
	tp_model *m = NULL;
	tp_kv *kv = NULL;
	tp_model_opts o = { .threads = 1 };
	float *lg = malloc(48 * 256 * sizeof(float));
	if (tp_model_load(&m, dir, &o) < 0 || tp_kv_new(&kv, m, 48, 48) < 0 ||
	    tp_model_forward(m, kv, ids, 48, 0, lg) < 0) {
		fprintf(stderr, "   %s: %s\n", dir, tp_error_last());
		free(lg);
		lg = NULL;
	}
	tp_kv_free(kv);
	tp_model_free(m);
	return lg;
}

/* Largest difference over n values (48 rows of logits by default). */
static double max_diff_n(const float *a, const float *b, size_t n)
{
	double d = (a && b) ? 0 : INFINITY;
	for (size_t i = 0; a && b && i < n; i++)
		d = fmax(d, fabs(a[i] - b[i]));
	return d;
}

static double max_diff(const float *a, const float *b)
{
	return max_diff_n(a, b, 48 * 256);
}

/* Keep the first kv_heads heads of every k/v_proj (row-major: a prefix). */
static void trim_kv(weights *w, size_t kv_heads)
{
	for (int l = 0; l < 4; l++)
		for (int kv = 0; kv < 2; kv++)
			find(w, tpt_path("model.layers.%d.self_attn.%c_proj.weight", l,
					 kv ? 'v' : 'k'))->rows = kv_heads * 64;
}

/* Rows of k/v_proj for head 0 copied to every head: one KV head suffices. */
static void share_kv_heads(weights *w)
{
	for (int l = 0; l < 4; l++)
		for (int kv = 0; kv < 2; kv++) {
			tensor *t = find(w, tpt_path("model.layers.%d.self_attn.%c_proj.weight", l,
						     kv ? 'v' : 'k'));
			for (size_t h = 1; h < 4; h++)
				memcpy(t->data + h * 64 * 256, t->data, 64 * 256 * sizeof(float));
		}
}

static void test_variants(void)
{
	weights w = { 0 };
	CHECK_EQ_INT(read_weights(tpt_path("%s/fixtures/base-bf16.safetensors", data_dir), &w), 0);
	/* plain Llama with shared KV heads, as the baseline */
	share_kv_heads(&w);
	const char *mha = make_dir("mha", "LlamaForCausalLM", 4, false, false);
	CHECK_EQ_INT(write_st(tpt_path("%s/model.safetensors", mha), &w, 0, w.n, NULL), 0);
	float *base = logits_of(mha);
	CHECK(base != NULL);

	/* RoPE scaling: llama3 with factor 1 changes nothing; real factors do */
	static const char *ropes[] = {
		"{\"rope_type\":\"llama3\",\"factor\":1,\"low_freq_factor\":1,"
		"\"high_freq_factor\":4,\"original_max_position_embeddings\":64}",
		"{\"rope_type\":\"llama3\",\"factor\":8,\"low_freq_factor\":1,"
		"\"high_freq_factor\":4,\"original_max_position_embeddings\":64}",
		"{\"type\":\"linear\",\"factor\":2}",
	};
	const char *rd = make_dir("rope", "LlamaForCausalLM", 4, false, false);
	CHECK_EQ_INT(symlink(tpt_path("%s/model.safetensors", mha),
			     tpt_path("%s/model.safetensors", rd)), 0);
	for (size_t i = 0; i < 3; i++) {
		set_config(rd, "rope_scaling", ropes[i]);
		float *lr = logits_of(rd);
		double d = max_diff(base, lr);
		fprintf(stderr, "   rope_scaling %zu vs none: %.3g\n", i, d);
		CHECK(i == 0 ? d == 0 : d > 1e-3 && d < INFINITY);
		free(lr);
	}

	/* the same as two shards and an index */
	const char *sh = make_dir("sharded", "LlamaForCausalLM", 4, false, false);
	CHECK_EQ_INT(write_st(tpt_path("%s/a.safetensors", sh), &w, 0, w.n / 2, NULL), 0);
	CHECK_EQ_INT(write_st(tpt_path("%s/b.safetensors", sh), &w, w.n / 2, w.n, NULL), 0);
	cJSON *idx = cJSON_CreateObject(), *map = cJSON_AddObjectToObject(idx, "weight_map");
	for (size_t i = 0; i < w.n; i++)
		cJSON_AddStringToObject(map, w.t[i].name, i < w.n / 2 ? "a.safetensors" : "b.safetensors");
	char *js = cJSON_Print(idx);
	FILE *f = fopen(tpt_path("%s/model.safetensors.index.json", sh), "wb");
	if (f) {
		fputs(js, f);
		fclose(f);
	}
	free(js);
	cJSON_Delete(idx);
	float *lg = logits_of(sh);
	fprintf(stderr, "   sharded vs single file: %.3g\n", max_diff(base, lg));
	CHECK(max_diff(base, lg) == 0);
	free(lg);

	/* A Qwen2 v bias b passes through softmax unchanged (weights sum to 1),
	 * so it equals a Llama attention_bias model with o_proj bias W_o b. */
	float vb[256], ob[256];
	for (size_t i = 0; i < 256; i++)
		vb[i] = (float)sin((double)i) * 0.5f;
	size_t nplain = w.n;
	for (int l = 0; l < 4; l++) {
		const float *wo = find(&w, tpt_path("model.layers.%d.self_attn.o_proj.weight", l))->data;
		for (size_t o = 0; o < 256; o++) {
			double acc = 0;
			for (size_t i = 0; i < 256; i++)
				acc += (double)wo[o * 256 + i] * vb[i];
			ob[o] = (float)acc;
		}
		for (int j = 0; j < 4; j++) {
			tensor *t = &w.t[w.n++];
			snprintf(t->name, sizeof(t->name), "model.layers.%d.self_attn.%c_proj.bias", l,
				 "qkvo"[j]);
			t->rows = 256;
			t->data = calloc(256, sizeof(float));
			if (t->data && j == 2)
				memcpy(t->data, vb, sizeof(vb));
			if (t->data && j == 3)
				memcpy(t->data, ob, sizeof(ob));
		}
	}
	const char *qw = make_dir("qwen2", "Qwen2ForCausalLM", 4, false, false);
	const char *lb = make_dir("llamabias", "LlamaForCausalLM", 4, false, true);
	CHECK_EQ_INT(write_st(tpt_path("%s/model.safetensors", qw), &w, 0, w.n, NULL), 0);
	for (size_t i = nplain; i < w.n; i++) /* the Llama has the bias after o_proj */
		if (strstr(w.t[i].name, "v_proj.bias"))
			memset(w.t[i].data, 0, 256 * sizeof(float));
	CHECK_EQ_INT(write_st(tpt_path("%s/model.safetensors", lb), &w, 0, w.n, NULL), 0);
	lg = logits_of(qw);
	float *lgb = logits_of(lb);
	fprintf(stderr, "   qwen2 v bias vs llama o bias: %.3g (vs no bias %.3g)\n",
		max_diff(lgb, lg), max_diff(base, lg));
	CHECK(max_diff(lgb, lg) < 1e-4 && max_diff(base, lg) > 1e-2);
	free(lg);
	free(lgb);
	while (w.n > nplain)
		free(w.t[--w.n].data);

	/* grouped-query attention: one KV head serving all four */
	trim_kv(&w, 1);
	const char *gqa = make_dir("gqa", "MistralForCausalLM", 1, false, false);
	CHECK_EQ_INT(write_st(tpt_path("%s/model.safetensors", gqa), &w, 0, w.n, NULL), 0);
	lg = logits_of(gqa);
	fprintf(stderr, "   GQA (1 kv head) vs MHA with equal heads: %.3g\n", max_diff(base, lg));
	CHECK(max_diff(base, lg) < 1e-5);
	free(lg);

	/* tied embeddings: lm_head dropped, embed_tokens reused */
	tensor *head = find(&w, "lm_head.weight"), *emb = find(&w, "model.embed_tokens.weight");
	memcpy(head->data, emb->data, 256 * 256 * sizeof(float));
	const char *untied = make_dir("untied", "LlamaForCausalLM", 1, false, false);
	const char *tied = make_dir("tied", "LlamaForCausalLM", 1, true, false);
	CHECK_EQ_INT(write_st(tpt_path("%s/model.safetensors", untied), &w, 0, w.n, NULL), 0);
	CHECK_EQ_INT(write_st(tpt_path("%s/model.safetensors", tied), &w, 0, w.n, "lm_head.weight"), 0);
	float *a = logits_of(untied), *b = logits_of(tied);
	fprintf(stderr, "   tied vs untied copy: %.3g\n", max_diff(a, b));
	CHECK(a && max_diff(a, b) == 0);
	free(a);
	free(b);
	free(base);
	free_weights(&w);
	/* tp_fs has no recursive delete; the files are known */
	const char *dirs[] = { "mha", "rope", "sharded", "qwen2", "llamabias", "gqa", "untied",
			       "tied" };
	const char *files[] = { "config.json", "model.safetensors", "a.safetensors",
				"b.safetensors", "model.safetensors.index.json" };
	for (size_t d = 0; d < 8; d++) {
		for (size_t i = 0; i < 5; i++)
			unlink(tpt_path("%s/%s/%s", work, dirs[d], files[i]));
		rmdir(tpt_path("%s/%s", work, dirs[d]));
	}
}

/* Copy src/config.json to dst/config.json. */
static int copy_config(const char *src, const char *dst)
{
	char buf[8192];
	FILE *in = fopen(tpt_path("%s/config.json", src), "rb");
	size_t n = in ? fread(buf, 1, sizeof(buf), in) : 0;
	FILE *out = in ? fopen(tpt_path("%s/config.json", dst), "wb") : NULL;
	if (in)
		fclose(in);
	if (!out)
		return -1;
	fwrite(buf, 1, n, out);
	return fclose(out);
}

/* Add every *.bias tensor of an HF export's extra.safetensors to w. */
static void add_biases(weights *w, const char *extra)
{
	tp_safetensors *st = NULL;
	CHECK_EQ_INT(tp_safetensors_open(&st, extra), 0);
	for (size_t i = 0; st && i < st->ntensors && w->n < 64; i++) {
		const char *name = st->tensors[i].name;
		size_t n = 0, len = strlen(name);
		if (len < 5 || strcmp(name + len - 5, ".bias") != 0)
			continue;
		tensor *t = &w->t[w->n++];
		snprintf(t->name, sizeof(t->name), "%s", name);
		t->data = tpt_read_f32(extra, name, &n);
		t->rows = n;
		t->cols = 0;
	}
	tp_safetensors_free(st);
}

/*
 * Models built and run by Hugging Face transformers 5.17 (torch 2.11, fp32,
 * eager attention) from the fixture's weights: tests/data/eval/hf/NAME has
 * its config.json and extra.safetensors with the biases it drew, the ids
 * and its logits. Rebuilt here from the same weights, ours must agree.
 */
static void test_hf_variants(void)
{
	static const char *names[] = { "qwen2_gqa2_tied", "llama_llama3rope_bias_gqa1",
				       "llama_linear_rope", "mistral_gqa2" };
	for (size_t v = 0; v < 4; v++) {
		char src[1024], extra[1100], cfgbuf[8192];
		snprintf(src, sizeof(src), "%s/eval/hf/%s", data_dir, names[v]);
		snprintf(extra, sizeof(extra), "%s/extra.safetensors", src);
		FILE *f = fopen(tpt_path("%s/config.json", src), "rb");
		size_t n = f ? fread(cfgbuf, 1, sizeof(cfgbuf), f) : 0;
		if (f)
			fclose(f);
		tp_model_config c;
		CHECK_EQ_INT(tp_model_config_parse(&c, cfgbuf, n), 0);
		weights w = { 0 };
		CHECK_EQ_INT(read_weights(tpt_path("%s/fixtures/base-bf16.safetensors", data_dir),
					  &w), 0);
		trim_kv(&w, c.kv_heads);
		add_biases(&w, extra);
		/* A tied HF model shares one parameter: loading the fixture's
		 * untied weights left lm_head's values in it. */
		if (c.tie_embeddings)
			memcpy(find(&w, "model.embed_tokens.weight")->data,
			       find(&w, "lm_head.weight")->data, 256 * 256 * sizeof(float));
		const char *dir = make_dir("hf", "LlamaForCausalLM", 4, false, false);
		CHECK_EQ_INT(copy_config(src, dir), 0);
		CHECK_EQ_INT(write_st(tpt_path("%s/model.safetensors", dir), &w, 0, w.n,
				      c.tie_embeddings ? "lm_head.weight" : NULL), 0);
		size_t nids = 0, nlg = 0;
		float *ids_f = tpt_read_f32(extra, "ids", &nids), *want = tpt_read_f32(extra, "logits", &nlg);
		tp_model *m = NULL;
		tp_kv *kv = NULL;
		tp_model_opts o = { .threads = 1 };
		float *got = malloc(64 * 256 * sizeof(float));
		int32_t ids[64];
		for (size_t i = 0; ids_f && nids == 64 && i < 64; i++)
			ids[i] = (int32_t)ids_f[i];
		double d = INFINITY;
		if (tp_model_load(&m, dir, &o) == 0 && tp_kv_new(&kv, m, 64, 64) == 0 && want &&
		    nlg == 64 * 256 && nids == 64 && tp_model_forward(m, kv, ids, 64, 0, got) == 0)
			d = max_diff_n(got, want, 64 * 256);
		else
			fprintf(stderr, "   %s: %s\n", names[v], tp_error_last());
		fprintf(stderr, "   %-28s vs transformers: max |logit error| %.3g\n", names[v], d);
		CHECK(d < 1e-4);
		tp_kv_free(kv);
		tp_model_free(m);
		free(got);
		free(ids_f);
		free(want);
		free_weights(&w);
		unlink(tpt_path("%s/config.json", dir));
		unlink(tpt_path("%s/model.safetensors", dir));
		rmdir(dir);
	}
}

int main(int argc, char **argv)
{
	data_dir = argc > 1 ? argv[1] : "tests/data";
	CHECK(mkdtemp(work) != NULL);
	TP_TEST_RUN(test_variants);
	TP_TEST_RUN(test_hf_variants);
	rmdir(work);
	return TP_TEST_RESULT();
}
