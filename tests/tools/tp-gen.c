/*
 * tp-gen: deterministic test data for tenpak's tests, demo and benchmarks.
 *
 *   tp-gen bytes SIZE SEED                 SIZE pseudo-random bytes on stdout
 *   tp-gen model OUT SEED [--finetune S2] [--layers N] [--hidden H]
 *       a Llama-shaped BF16 safetensors file: weights ~ N(0, 0.02); with
 *       --finetune, the same base plus small updates drawn from seed S2, the
 *       way a fine-tune moves most weights by a few units in the last place.
 *   tp-gen shard IN.safetensors OUTDIR N
 *       split a model into N shards plus model.safetensors.index.json, as
 *       Hugging Face writes sharded checkpoints.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tp_common.h"
#include "tp_delta.h"

typedef struct rng {
	uint64_t s;
} rng;

/* splitmix64: tiny, fast and well distributed; enough for test data. */
static uint64_t rng_next(rng *r)
{
	uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static double rng_unit(rng *r)
{
	return ((double)(rng_next(r) >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

static double rng_normal(rng *r)
{
	double u = rng_unit(r), v = rng_unit(r);
	return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
}

static uint16_t f32_to_bf16(float f)
{
	uint32_t u;
	memcpy(&u, &f, 4);
	/* Round to nearest even, as PyTorch does. */
	u += 0x7fff + ((u >> 16) & 1);
	return (uint16_t)(u >> 16);
}

static float bf16_to_f32(uint16_t h)
{
	uint32_t u = (uint32_t)h << 16;
	float f;
	memcpy(&f, &u, 4);
	return f;
}

static int gen_bytes(int argc, char **argv)
{
	if (argc != 4) {
		fprintf(stderr, "usage: tp-gen bytes SIZE SEED\n");
		return 2;
	}
	uint64_t size = strtoull(argv[2], NULL, 10);
	rng r = { strtoull(argv[3], NULL, 10) };
	unsigned char buf[65536];
	while (size > 0) {
		size_t n = size < sizeof(buf) ? (size_t)size : sizeof(buf);
		for (size_t i = 0; i < n; i += 8) {
			uint64_t x = rng_next(&r);
			memcpy(buf + i, &x, n - i < 8 ? n - i : 8);
		}
		if (fwrite(buf, 1, n, stdout) != n)
			return 1;
		size -= n;
	}
	return 0;
}

typedef struct tensor {
	char name[96];
	int rows, cols; /* cols == 0: a vector */
} tensor;

static int cmp_tensor(const void *a, const void *b)
{
	return strcmp(((const tensor *)a)->name, ((const tensor *)b)->name);
}

static int gen_model(int argc, char **argv)
{
	if (argc < 4) {
		fprintf(stderr, "usage: tp-gen model OUT SEED [--finetune S2] [--layers N] [--hidden H]\n");
		return 2;
	}
	const char *out = argv[2];
	uint64_t seed = strtoull(argv[3], NULL, 10), ft_seed = 0;
	int layers = 4, hidden = 256, vocab = 2048;
	for (int i = 4; i + 1 < argc; i += 2) {
		if (strcmp(argv[i], "--finetune") == 0)
			ft_seed = strtoull(argv[i + 1], NULL, 10);
		else if (strcmp(argv[i], "--layers") == 0)
			layers = atoi(argv[i + 1]);
		else if (strcmp(argv[i], "--hidden") == 0)
			hidden = atoi(argv[i + 1]);
		else {
			fprintf(stderr, "tp-gen: unknown option %s\n", argv[i]);
			return 2;
		}
	}
	if (layers < 1 || layers > 256 || hidden < 8 || hidden > 16384) {
		fprintf(stderr, "tp-gen: bad --layers or --hidden\n");
		return 2;
	}
	int inter = hidden * 3;
	static const char *proj[] = { "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
				      "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj",
				      "mlp.down_proj" };
	int n = 3 + layers * 9, k = 0;
	tensor *t = calloc((size_t)n, sizeof(*t));
	snprintf(t[k].name, 96, "model.embed_tokens.weight"), t[k].rows = vocab, t[k++].cols = hidden;
	snprintf(t[k].name, 96, "model.norm.weight"), t[k++].rows = hidden;
	snprintf(t[k].name, 96, "lm_head.weight"), t[k].rows = vocab, t[k++].cols = hidden;
	for (int l = 0; l < layers; l++) {
		for (int p = 0; p < 7; p++) {
			snprintf(t[k].name, 96, "model.layers.%d.%s.weight", l, proj[p]);
			t[k].rows = p == 6 ? hidden : p >= 4 ? inter : hidden;
			t[k++].cols = p == 6 ? inter : hidden;
		}
		snprintf(t[k].name, 96, "model.layers.%d.input_layernorm.weight", l), t[k++].rows = hidden;
		snprintf(t[k].name, 96, "model.layers.%d.post_attention_layernorm.weight", l),
			t[k++].rows = hidden;
	}
	qsort(t, (size_t)n, sizeof(*t), cmp_tensor);

	/* Header: tensors in name order, data packed back to back. */
	char *hdr = malloc(64 * 1024);
	size_t hl = (size_t)sprintf(hdr, "{\"__metadata__\":{\"format\":\"pt\"}");
	uint64_t off = 0;
	for (int i = 0; i < n; i++) {
		uint64_t bytes = (uint64_t)t[i].rows * (uint64_t)(t[i].cols ? t[i].cols : 1) * 2;
		if (t[i].cols)
			hl += (size_t)sprintf(hdr + hl, ",\"%s\":{\"dtype\":\"BF16\",\"shape\":[%d,%d],"
					  "\"data_offsets\":[%llu,%llu]}", t[i].name, t[i].rows,
					  t[i].cols, (unsigned long long)off,
					  (unsigned long long)(off + bytes));
		else
			hl += (size_t)sprintf(hdr + hl, ",\"%s\":{\"dtype\":\"BF16\",\"shape\":[%d],"
					  "\"data_offsets\":[%llu,%llu]}", t[i].name, t[i].rows,
					  (unsigned long long)off, (unsigned long long)(off + bytes));
		off += bytes;
	}
	hdr[hl++] = '}';
	while (hl % 8)
		hdr[hl++] = ' ';

	FILE *f = fopen(out, "wb");
	if (!f) {
		perror(out);
		return 1;
	}
	uint64_t hl64 = hl;
	unsigned char le[8];
	for (int i = 0; i < 8; i++)
		le[i] = (unsigned char)(hl64 >> (8 * i));
	fwrite(le, 1, 8, f);
	fwrite(hdr, 1, hl, f);
	rng base = { seed }, ft = { ft_seed };
	for (int i = 0; i < n; i++) {
		size_t count = (size_t)t[i].rows * (size_t)(t[i].cols ? t[i].cols : 1);
		for (size_t j = 0; j < count; j++) {
			float w = t[i].cols ? (float)(0.02 * rng_normal(&base)) : 1.0f;
			uint16_t h = f32_to_bf16(w);
			/* A fine-tune nudges each weight by about half a percent, a few ULP. */
			if (ft_seed)
				h = f32_to_bf16(bf16_to_f32(h) + (float)(0.0001 * rng_normal(&ft)));
			unsigned char b[2] = { (unsigned char)h, (unsigned char)(h >> 8) };
			fwrite(b, 1, 2, f);
		}
	}
	free(hdr);
	free(t);
	return fclose(f) == 0 ? 0 : 1;
}

/* Copy n bytes at offset of in to out. */
static int copy_range(FILE *in, uint64_t offset, uint64_t n, FILE *out)
{
	char buf[65536];
	if (fseeko(in, (off_t)offset, SEEK_SET) != 0)
		return 1;
	while (n > 0) {
		size_t want = n < sizeof(buf) ? (size_t)n : sizeof(buf);
		if (fread(buf, 1, want, in) != want || fwrite(buf, 1, want, out) != want)
			return 1;
		n -= want;
	}
	return 0;
}

static int gen_shard(int argc, char **argv)
{
	if (argc != 5) {
		fprintf(stderr, "usage: tp-gen shard IN.safetensors OUTDIR N\n");
		return 2;
	}
	tp_safetensors *st = NULL;
	int nshards = atoi(argv[4]);
	if (nshards < 1 || tp_safetensors_open(&st, argv[2]) != 0) {
		fprintf(stderr, "tp-gen: cannot shard %s: %s\n", argv[2], tp_error_last());
		return 1;
	}
	FILE *in = fopen(argv[2], "rb");
	char path[4096];
	snprintf(path, sizeof(path), "%s/model.safetensors.index.json", argv[3]);
	FILE *index = fopen(path, "w");
	if (!in || !index)
		return 1;
	fprintf(index, "{\"metadata\":{},\"weight_map\":{");
	size_t per = (st->ntensors + (size_t)nshards - 1) / (size_t)nshards, t = 0;
	for (int k = 0; k < nshards; k++) {
		size_t first = t, last = t + per < st->ntensors ? t + per : st->ntensors;
		char name[64];
		snprintf(name, sizeof(name), "model-%05d-of-%05d.safetensors", k + 1, nshards);
		char *hdr = malloc(1 << 20);
		size_t hl = (size_t)sprintf(hdr, "{\"__metadata__\":{\"format\":\"pt\"}");
		uint64_t off = 0;
		for (size_t i = first; i < last; i++) {
			const tp_st_tensor *x = &st->tensors[i];
			hl += (size_t)sprintf(hdr + hl, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[", x->name,
					      tp_dtype_name(x->dtype));
			for (unsigned d = 0; d < x->ndim; d++)
				hl += (size_t)sprintf(hdr + hl, "%s%llu", d ? "," : "",
						      (unsigned long long)x->shape[d]);
			hl += (size_t)sprintf(hdr + hl, "],\"data_offsets\":[%llu,%llu]}",
					      (unsigned long long)off,
					      (unsigned long long)(off + x->size));
			off += x->size;
			fprintf(index, "%s\"%s\":\"%s\"", i ? "," : "", x->name, name);
		}
		hdr[hl++] = '}';
		while (hl % 8)
			hdr[hl++] = ' ';
		snprintf(path, sizeof(path), "%s/%s", argv[3], name);
		FILE *out = fopen(path, "wb");
		unsigned char le[8];
		for (int b = 0; b < 8; b++)
			le[b] = (unsigned char)((uint64_t)hl >> (8 * b));
		int rc = !out || fwrite(le, 1, 8, out) != 8 || fwrite(hdr, 1, hl, out) != hl;
		for (size_t i = first; !rc && i < last; i++)
			rc = copy_range(in, st->tensors[i].offset, st->tensors[i].size, out);
		free(hdr);
		if (rc || fclose(out) != 0)
			return 1;
		t = last;
	}
	fprintf(index, "}}\n");
	fclose(in);
	tp_safetensors_free(st);
	return fclose(index) == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
	if (argc >= 2 && strcmp(argv[1], "shard") == 0)
		return gen_shard(argc, argv);
	if (argc >= 2 && strcmp(argv[1], "bytes") == 0)
		return gen_bytes(argc, argv);
	if (argc >= 2 && strcmp(argv[1], "model") == 0)
		return gen_model(argc, argv);
	fprintf(stderr, "usage: tp-gen bytes SIZE SEED | model OUT SEED [...] | shard IN OUTDIR N\n");
	return 2;
}
