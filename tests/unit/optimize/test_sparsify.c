/* Sparse deltas: the selection and quantization of one tensor's update
 * (hand-made cases), and whole files: what is copied byte for byte, what is
 * BASE + Q(Δ), and quality on the fixture pair (tests/data). */
#include "opt_test.h"
#include "tp_delta.h"

#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static size_t count_nonzero(const float *v, size_t n)
{
	size_t c = 0;
	for (size_t i = 0; i < n; i++)
		c += v[i] != 0;
	return c;
}

/* Magnitude keeps exactly the k largest |Δ|, at 8 bits within half a step. */
static void test_magnitude(void)
{
	float d[12] = { 0.1f, -0.9f, 0.2f, 0.05f, -0.3f, 0.0f, 0.7f, -0.01f, 0.4f, 0.02f, -0.6f, 0.03f };
	float orig[12];
	memcpy(orig, d, sizeof(d));
	tp_sparsify_tensor_stats st;
	/* 25% of 12 = 3 entries: -0.9, 0.7, -0.6. */
	CHECK_EQ_INT(tp_optimize_sparsify_delta(d, 3, 4, NULL, TP_SPARSIFY_SELECT_MAGNITUDE, 0.25, 8,
						0, &st), 0);
	CHECK_EQ_INT(st.chosen, 3);
	CHECK_EQ_INT(st.entries, 12);
	CHECK_EQ_INT(count_nonzero(d, 12), 3);
	CHECK(d[1] != 0 && d[6] != 0 && d[10] != 0);
	/* One scale per row: |largest| / 127; each value within half a step. */
	CHECK(fabsf(d[1] - orig[1]) <= 0.9f / 127 / 2 * 1.0001f);
	CHECK(fabsf(d[6] - orig[6]) <= 0.7f / 127 / 2 * 1.0001f);
	CHECK(fabsf(d[10] - orig[10]) <= 0.6f / 127 / 2 * 1.0001f);
	/* The row's largest value is exactly on the grid. */
	CHECK(d[1] == orig[1]);
	double err = 0;
	for (int i = 0; i < 12; i++)
		err += ((double)d[i] - orig[i]) * ((double)d[i] - orig[i]);
	CHECK(fabs(err - st.sq_err) < 1e-9);

	/* Density 1 keeps every nonzero entry (never the zero one). */
	memcpy(d, orig, sizeof(d));
	CHECK_EQ_INT(tp_optimize_sparsify_delta(d, 3, 4, NULL, TP_SPARSIFY_SELECT_MAGNITUDE, 1.0, 8,
						0, &st), 0);
	CHECK_EQ_INT(st.chosen, 11);
	CHECK(d[5] == 0);
	/* Ties at the threshold: the count is still exact. */
	float t[8] = { 1, 1, 1, 1, 1, 1, 1, 1 };
	CHECK_EQ_INT(tp_optimize_sparsify_delta(t, 1, 8, NULL, TP_SPARSIFY_SELECT_MAGNITUDE, 0.5, 8,
						0, &st), 0);
	CHECK_EQ_INT(st.chosen, 4);
	CHECK_EQ_INT(count_nonzero(t, 8), 4);
	/* Bad arguments and values. */
	CHECK_EQ_INT(tp_optimize_sparsify_delta(t, 1, 8, NULL, TP_SPARSIFY_SELECT_MAGNITUDE, 0, 8,
						0, &st), TP_EINVAL);
	CHECK_EQ_INT(tp_optimize_sparsify_delta(t, 1, 8, NULL, TP_SPARSIFY_SELECT_MAGNITUDE, 1.5, 8,
						0, &st), TP_EINVAL);
	CHECK_EQ_INT(tp_optimize_sparsify_delta(t, 1, 8, NULL, TP_SPARSIFY_SELECT_MAGNITUDE, 0.5, 9,
						0, &st), TP_EINVAL);
	t[3] = NAN;
	CHECK_EQ_INT(tp_optimize_sparsify_delta(t, 1, 8, NULL, TP_SPARSIFY_SELECT_MAGNITUDE, 0.5, 8,
						0, &st), TP_EINVAL);
}

/* Activation weighs column j by ‖x_j‖: a small change on a loud input wins
 * over a larger one on a quiet input. */
static void test_activation(void)
{
	float d[4] = { 0.5f, 0.1f, 0.5f, 0.1f };
	const float norm[2] = { 0.01f, 100.0f };
	tp_sparsify_tensor_stats st;
	CHECK_EQ_INT(tp_optimize_sparsify_delta(d, 2, 2, norm, TP_SPARSIFY_SELECT_ACTIVATION, 0.5, 8,
						0, &st), 0);
	CHECK(d[0] == 0 && d[2] == 0 && d[1] != 0 && d[3] != 0);
	/* Without norms it is magnitude. */
	float e[4] = { 0.5f, 0.1f, 0.5f, 0.1f };
	CHECK_EQ_INT(tp_optimize_sparsify_delta(e, 2, 2, NULL, TP_SPARSIFY_SELECT_ACTIVATION, 0.5, 8,
						0, &st), 0);
	CHECK(e[0] != 0 && e[2] != 0 && e[1] == 0 && e[3] == 0);
}

/* DARE keeps about density of the entries, scaled by 1/density, so the
 * update's sum is kept in expectation; the same seed gives the same mask. */
static void test_dare(void)
{
	enum { R = 64, C = 1024 };
	float *d = malloc(R * C * sizeof(float)), *e = malloc(R * C * sizeof(float));
	CHECK(d && e);
	if (!d || !e)
		goto done;
	for (size_t i = 0; i < R * C; i++)
		d[i] = 0.01f; /* constant, so that the sum tells the scaling */
	memcpy(e, d, R * C * sizeof(float));
	tp_sparsify_tensor_stats st;
	CHECK_EQ_INT(tp_optimize_sparsify_delta(d, R, C, NULL, TP_SPARSIFY_SELECT_DARE, 0.1, 8, 42,
						&st), 0);
	double frac = (double)st.chosen / (R * C), sum = 0;
	CHECK(fabs(frac - 0.1) < 0.005); /* binomial sd ~0.0012 */
	for (size_t i = 0; i < R * C; i++) {
		sum += d[i];
		if (d[i] != 0)
			CHECK(fabsf(d[i] - 0.1f) < 1e-6f); /* 0.01 / 0.1 */
	}
	CHECK(fabs(sum / (R * C * 0.01) - 1.0) < 0.05);
	CHECK_EQ_INT(tp_optimize_sparsify_delta(e, R, C, NULL, TP_SPARSIFY_SELECT_DARE, 0.1, 8, 42,
						&st), 0);
	CHECK(memcmp(d, e, R * C * sizeof(float)) == 0);
done:
	free(d);
	free(e);
}

/* Fewer bits: a coarser grid, more error, never more levels than 2^(b-1)-1
 * per side; the clipped low-bit scale beats plain absmax on a heavy tail. */
static void test_bits(void)
{
	enum { R = 16, C = 512 };
	static float w[R * C], a[R * C];
	opt_rng = 7;
	opt_fill_gauss(w, R * C, 1.0f);
	w[5] = 40.0f; /* an outlier in row 0 */
	double prev = -1;
	for (unsigned bits = 8; bits >= 2; bits--) {
		memcpy(a, w, sizeof(w));
		tp_sparsify_tensor_stats st;
		CHECK_EQ_INT(tp_optimize_sparsify_delta(a, R, C, NULL, TP_SPARSIFY_SELECT_MAGNITUDE,
							1.0, bits, 0, &st), 0);
		CHECK(st.sq_err >= prev);
		prev = st.sq_err;
		/* Distinct values per row <= 2 * qmax + 1. */
		for (size_t r = 0; r < R; r++) {
			float seen[256];
			size_t ns = 0;
			for (size_t j = 0; j < C && ns < 256; j++) {
				size_t k = 0;
				while (k < ns && seen[k] != a[r * C + j])
					k++;
				if (k == ns)
					seen[ns++] = a[r * C + j];
			}
			CHECK(ns <= 2u * ((1u << (bits - 1)) - 1) + 1);
		}
	}
	/* 2 bits (ternary) on a Gaussian row: the searched scale keeps far
	 * more than the ~8% of values that absmax (~3.5 sigma) would keep. */
	memcpy(a, w, sizeof(w));
	CHECK_EQ_INT(tp_optimize_sparsify_delta(a, R, C, NULL, TP_SPARSIFY_SELECT_MAGNITUDE, 1.0, 2,
						0, NULL), 0);
	CHECK(count_nonzero(a + C, C) > C / 4);
}

/* ---- files --------------------------------------------------------------------- */

static void put_f32(unsigned char *p, float f)
{
	memcpy(p, &f, 4);
}

/* A safetensors file from a JSON header and data. */
static bool write_st(const char *path, const char *json, const void *data, size_t n)
{
	size_t hl = strlen(json), pad = (8 - hl % 8) % 8;
	FILE *f = fopen(path, "wb");
	if (!f)
		return false;
	unsigned char len[8];
	uint64_t l = hl + pad;
	for (int i = 0; i < 8; i++)
		len[i] = (unsigned char)(l >> (8 * i));
	bool ok = fwrite(len, 1, 8, f) == 8 && fwrite(json, 1, hl, f) == hl &&
		  fwrite("        ", 1, pad, f) == pad && fwrite(data, 1, n, f) == n;
	return fclose(f) == 0 && ok;
}

static bool read_all(const char *path, unsigned char **out, size_t *n)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return false;
	fseek(f, 0, SEEK_END);
	long sz = ftell(f);
	fseek(f, 0, SEEK_SET);
	*out = malloc(sz > 0 ? (size_t)sz : 1);
	bool ok = *out && fread(*out, 1, (size_t)sz, f) == (size_t)sz;
	fclose(f);
	*n = (size_t)sz;
	return ok;
}

/* Changed 2-D tensor: BASE + Q(Δ); unchanged, 1-D and resized: FT's bytes. */
static void test_files(void)
{
	char dir[] = "/tmp/tp-sparsify-XXXXXX", base[600], ft[600], out[600], p[700];
	if (!tp_test_mkdtemp(dir)) {
		CHECK(0);
		return;
	}
	snprintf(base, sizeof(base), "%s/base", dir);
	snprintf(ft, sizeof(ft), "%s/ft", dir);
	snprintf(out, sizeof(out), "%s/out", dir);
	mkdir(base, 0777);
	mkdir(ft, 0777);
	/* a F32 [2,4] changes, n F32 [4] changes (1-D), s F32 [2,2] equal,
	 * e F32 [2,2] in the base and [3,2] in FT (resized). */
	unsigned char bd[(8 + 4 + 4 + 4) * 4], fd[(8 + 4 + 4 + 6) * 4];
	for (int i = 0; i < 20; i++)
		put_f32(bd + 4 * i, 0.25f * (float)(i + 1));
	memcpy(fd, bd, 16 * 4); /* a, n, s as the base */
	put_f32(fd + 4 * 1, 0.5f + 0.75f);  /* a[0][1] += 0.75 */
	put_f32(fd + 4 * 6, 1.75f - 0.01f); /* a[1][2] -= 0.01 */
	put_f32(fd + 4 * 9, 2.5f + 1.0f);   /* n[1] */
	for (int i = 0; i < 6; i++)
		put_f32(fd + 4 * (16 + i), -1.0f * (float)i);
	const char *bj = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,4],\"data_offsets\":[0,32]},"
			 "\"n\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[32,48]},"
			 "\"s\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[48,64]},"
			 "\"e\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[64,80]}}";
	const char *fj = "{\"__metadata__\":{\"format\":\"pt\"},"
			 "\"a\":{\"dtype\":\"F32\",\"shape\":[2,4],\"data_offsets\":[0,32]},"
			 "\"n\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[32,48]},"
			 "\"s\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[48,64]},"
			 "\"e\":{\"dtype\":\"F32\",\"shape\":[3,2],\"data_offsets\":[64,88]}}";
	snprintf(p, sizeof(p), "%s/model.safetensors", base);
	CHECK(write_st(p, bj, bd, sizeof(bd)));
	snprintf(p, sizeof(p), "%s/model.safetensors", ft);
	CHECK(write_st(p, fj, fd, sizeof(fd)));
	snprintf(p, sizeof(p), "%s/README.md", ft);
	FILE *f = fopen(p, "w");
	CHECK(f && fputs("---\nlicense: mit\nbase_model: org/base\n---\n# card\n", f) >= 0);
	if (f)
		fclose(f);
	snprintf(p, sizeof(p), "%s/tokenizer.json", ft);
	CHECK(write_st(p, "{}", "", 0)); /* any small file is copied */

	tp_sparsify_opts o = { .density = 0.5, .bits = 8, .select = TP_SPARSIFY_SELECT_MAGNITUDE };
	tp_sparsify_result r;
	CHECK_EQ_INT(tp_optimize_sparsify(base, ft, out, &o, &r), 0);
	CHECK_EQ_INT(r.tensors, 4);
	CHECK_EQ_INT(r.sparsified, 1);
	CHECK_EQ_INT(r.exact, 2);
	CHECK_EQ_INT(r.unchanged, 1);
	CHECK_EQ_INT(r.changed_weights, 8 + 4 + 6);
	CHECK(r.has_estimate && r.stored_bytes > 0);
	CHECK(!r.has_quality);
	unsigned char *ob = NULL, *fb = NULL;
	size_t on = 0, fn = 0;
	snprintf(p, sizeof(p), "%s/model.safetensors", out);
	CHECK(read_all(p, &ob, &on));
	snprintf(p, sizeof(p), "%s/model.safetensors", ft);
	CHECK(read_all(p, &fb, &fn));
	CHECK(on == fn);
	if (ob && fb && on == fn) {
		size_t ds = fn - sizeof(fd); /* header: FT's */
		CHECK(memcmp(ob, fb, ds) == 0);
		/* n, s, e: FT's bytes. */
		CHECK(memcmp(ob + ds + 32, fb + ds + 32, fn - ds - 32) == 0);
		/* a: half of its 8 entries kept; only 2 changed, so both kept:
		 * a[0][1] exact (row 0's largest), a[1][2] within half a step. */
		float a[8];
		memcpy(a, ob + ds, 32);
		CHECK(a[1] == 1.25f);
		CHECK(fabsf(a[6] - 1.74f) <= 0.01f / 127 + 1e-6f);
		for (int i = 0; i < 8; i++)
			if (i != 1 && i != 6)
				CHECK(a[i] == 0.25f * (float)(i + 1));
	}
	free(ob);
	free(fb);
	/* The card: FT's base_model and front matter kept, the recipe added. */
	tp_buf card = TP_BUF_INIT(1 << 20);
	snprintf(p, sizeof(p), "%s/README.md", out);
	CHECK_EQ_INT(tp_fs_read_regular(p, &card), 0);
	CHECK(card.ptr && strstr(card.ptr, "base_model: org/base\n"));
	CHECK(card.ptr && strstr(card.ptr, "license: mit\n"));
	CHECK(card.ptr && strstr(card.ptr, "  density: 0.5\n  bits: 8\n"));
	CHECK(card.ptr && strstr(card.ptr, "---\n# card\n"));
	CHECK(card.ptr && strncmp(card.ptr, "---\n", 4) == 0);
	tp_buf_free(&card);
	/* Sparsifying that output again: still one recipe, the new one. */
	char out3[620];
	snprintf(out3, sizeof(out3), "%s/out3", dir);
	o.density = 1;
	CHECK_EQ_INT(tp_optimize_sparsify(base, out, out3, &o, &r), 0);
	snprintf(p, sizeof(p), "%s/README.md", out3);
	CHECK_EQ_INT(tp_fs_read_regular(p, &card), 0);
	const char *rec = card.ptr ? strstr(card.ptr, "tenpak_sparsify:") : NULL;
	CHECK(rec && !strstr(rec + 1, "tenpak_sparsify:") && strstr(rec, "  density: 1\n"));
	CHECK(card.ptr && strstr(card.ptr, "base_model: org/base\n") &&
	      strstr(card.ptr, "license: mit\n") && strstr(card.ptr, "---\n# card\n"));
	tp_buf_free(&card);
	o.density = 0.5;
	snprintf(p, sizeof(p), "%s/tokenizer.json", out);
	CHECK(tp_fs_is_regular(p));
	/* FT in two shards with an index: OUT keeps them and the index. */
	char ft2[620], out2[620];
	snprintf(ft2, sizeof(ft2), "%s/ft2", dir);
	snprintf(out2, sizeof(out2), "%s/out2", dir);
	mkdir(ft2, 0777);
	const char *j1 = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,4],\"data_offsets\":[0,32]},"
			 "\"n\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[32,48]}}";
	const char *j2 = "{\"s\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]},"
			 "\"e\":{\"dtype\":\"F32\",\"shape\":[3,2],\"data_offsets\":[16,40]}}";
	snprintf(p, sizeof(p), "%s/model-00001-of-00002.safetensors", ft2);
	CHECK(write_st(p, j1, fd, 48));
	snprintf(p, sizeof(p), "%s/model-00002-of-00002.safetensors", ft2);
	CHECK(write_st(p, j2, fd + 48, 40));
	snprintf(p, sizeof(p), "%s/model.safetensors.index.json", ft2);
	f = fopen(p, "w");
	CHECK(f && fputs("{\"weight_map\":{\"a\":\"model-00001-of-00002.safetensors\","
			 "\"n\":\"model-00001-of-00002.safetensors\","
			 "\"s\":\"model-00002-of-00002.safetensors\","
			 "\"e\":\"model-00002-of-00002.safetensors\"}}\n", f) >= 0);
	if (f)
		fclose(f);
	o.density = 0.125; /* a keeps 1 of its 8 entries: the 0.75 change */
	CHECK_EQ_INT(tp_optimize_sparsify(base, ft2, out2, &o, &r), 0);
	CHECK_EQ_INT(r.tensors, 4);
	CHECK_EQ_INT(r.sparsified, 1);
	CHECK_EQ_INT(r.unchanged, 1);
	const char *names[3] = { "model.safetensors.index.json", "model-00002-of-00002.safetensors",
				 "model-00001-of-00002.safetensors" };
	for (int i = 0; i < 3; i++) {
		unsigned char *x = NULL, *y = NULL;
		size_t xn = 0, yn = 0;
		snprintf(p, sizeof(p), "%s/%s", ft2, names[i]);
		CHECK(read_all(p, &x, &xn));
		snprintf(p, sizeof(p), "%s/%s", out2, names[i]);
		CHECK(read_all(p, &y, &yn));
		/* Index and shard 2 (unchanged, resized) are FT's; shard 1 has
		 * a as BASE + Q(Δ), as the one-file OUT has. */
		CHECK(xn == yn && x && y);
		if (i < 2)
			CHECK(x && y && xn == yn && memcmp(x, y, xn) == 0);
		if (i == 2 && x && y && xn == yn) {
			float a[8];
			memcpy(a, y + xn - 48, 32);
			CHECK(a[1] == 1.25f && a[6] == 1.75f); /* a[6]'s change dropped */
		}
		free(x);
		free(y);
	}
	/* OUT may not be FT. */
	CHECK_EQ_INT(tp_optimize_sparsify(base, ft, ft, &o, &r), TP_EINVAL);
	tp_test_rmtree(dir);
}

/* The fixture pair: quality improves with density, density 1 at 8 bits is
 * nearly FT, and the base's KL is the reference. */
static void test_fixture(const char *data)
{
	char dir[] = "/tmp/tp-sparsify-fx-XXXXXX", base[600], ft[600], out[600], src[700],
	     dst[700];
	if (!tp_test_mkdtemp(dir)) {
		CHECK(0);
		return;
	}
	snprintf(base, sizeof(base), "%s/base", dir);
	snprintf(ft, sizeof(ft), "%s/ft", dir);
	snprintf(out, sizeof(out), "%s/out", dir);
	const char *models[2][2] = { { base, "base-bf16" }, { ft, "full_ft-bf16" } };
	for (int m = 0; m < 2; m++) {
		mkdir(models[m][0], 0777);
		const char *files[2] = { "config.json", "tokenizer.json" };
		for (int k = 0; k < 2; k++) {
			snprintf(src, sizeof(src), "%s/eval/%s", data, files[k]);
			snprintf(dst, sizeof(dst), "%s/%s", models[m][0], files[k]);
			CHECK(symlink(src, dst) == 0);
		}
		snprintf(src, sizeof(src), "%s/fixtures/%s.safetensors", data, models[m][1]);
		snprintf(dst, sizeof(dst), "%s/model.safetensors", models[m][0]);
		CHECK(symlink(src, dst) == 0);
	}
	tp_buf text = TP_BUF_INIT(1 << 20);
	snprintf(src, sizeof(src), "%s/eval/heldout.txt", data);
	CHECK_EQ_INT(tp_fs_read_regular(src, &text), 0);
	tp_sparsify_opts o = { .bits = 8, .select = TP_SPARSIFY_SELECT_MAGNITUDE,
			       .eval_text = text.ptr, .eval_len = text.len, .ctx = 128,
			       .max_tokens = 2048, .skip_estimate = true, .threads = 2 };
	const double dens[3] = { 0.02, 0.25, 1.0 };
	double kl[3] = { 0 };
	tp_sparsify_result r = { 0 };
	for (int i = 0; i < 3; i++) {
		o.density = dens[i];
		CHECK_EQ_INT(tp_optimize_sparsify(base, ft, out, &o, &r), 0);
		CHECK(r.has_quality && r.has_base);
		kl[i] = r.kl_out;
		fprintf(stderr, "density %.2f: KL %.5f (base %.5f), ppl %+.3f%%\n", dens[i], r.kl_out,
			r.kl_base, r.ppl_delta_pct);
	}
	CHECK(kl[0] > kl[1] && kl[1] > kl[2]);
	CHECK(kl[0] < r.kl_base);
	CHECK(kl[2] < 0.01 * r.kl_base);
	/* A budget: the smallest density within it, every step reported. */
	o.max_kl = kl[1];
	CHECK_EQ_INT(tp_optimize_sparsify(base, ft, out, &o, &r), 0);
	CHECK(r.within_budget && r.kl_out <= kl[1] && r.nsteps >= 3);
	CHECK(r.density > 0.02 && r.density <= 0.25 * 1.13);
	tp_buf_free(&text);
	tp_test_rmtree(dir);
}

int main(int argc, char **argv)
{
	TP_TEST_RUN(test_magnitude);
	TP_TEST_RUN(test_activation);
	TP_TEST_RUN(test_dare);
	TP_TEST_RUN(test_bits);
	TP_TEST_RUN(test_files);
	if (argc > 1)
		test_fixture(argv[1]);
	return TP_TEST_RESULT();
}
