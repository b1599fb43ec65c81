/* Whole-file round trips on synthetic models: every dtype, odd layouts,
 * sharded bases, corrupted and truncated deltas, wrong bases. */
#include "testutil.h"

#include <fcntl.h>
#include <unistd.h>

static char dir[] = "/tmp/tp-delta-test-XXXXXX";
static char tmp[8][512];

static const char *path(int i, const char *name)
{
	snprintf(tmp[i], sizeof(tmp[i]), "%s/%s", dir, name);
	return tmp[i];
}

/* A tensor of random words with special float patterns mixed in. */
static t_tensor make(const char *name, tp_dtype dt, uint64_t n, uint64_t *seed)
{
	t_tensor t = { name, dt, 1, { n }, NULL, 0 };
	t.size = (size_t)n * tp_dtype_size(dt);
	t.data = malloc(t.size ? t.size : 1);
	t_fill_special(t.data, t.size, tp_dtype_size(dt), seed);
	return t;
}

/* The same tensor fine-tuned: most elements move a few units in the last
 * place, some stay. */
static t_tensor tune(const t_tensor *b, const char *name, uint64_t *seed)
{
	t_tensor t = *b;
	unsigned w = tp_dtype_size(b->dtype);
	t.name = name;
	t.data = malloc(t.size ? t.size : 1);
	memcpy(t.data, b->data, t.size);
	for (size_t i = 0; i + w <= t.size; i += w) {
		uint64_t v = 0, r = t_rand(seed);
		memcpy(&v, t.data + i, w);
		if (r % 4)
			v += (r >> 8) % 7 - 3;
		memcpy(t.data + i, &v, w);
	}
	return t;
}

static void free_all(t_tensor *ts, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(ts[i].data);
}

static bool roundtrip(const char *target, const char *const *cb, size_t ncb,
		      const char *const *ab, size_t nab, const tp_delta_opts *o)
{
	const char *delta = path(6, "rt.delta"), *out = path(7, "rt.out");
	unlink(out);
	int rc = tp_delta_compress_file(target, cb, ncb, delta, o, NULL);
	if (rc == 0)
		rc = tp_delta_apply_file(delta, ab, nab, out, o, NULL);
	return rc == 0 && t_same_files(target, out);
}

enum { NDT = TP_DTYPE_COUNT };

/* One tensor per dtype plus an empty one and a scalar. */
static void write_all_dtypes(void)
{
	uint64_t seed = 1;
	t_tensor base[NDT + 2], tgt[NDT + 2];
	static char names[NDT + 2][32];
	for (int i = 0; i < NDT; i++) {
		snprintf(names[i], sizeof(names[i]), "t.%s", tp_dtype_name((tp_dtype)i));
		base[i] = make(names[i], (tp_dtype)i, 3000 + 17 * (uint64_t)i, &seed);
	}
	base[NDT] = make("empty", TP_DTYPE_BF16, 0, &seed);
	base[NDT + 1] = make("scalar", TP_DTYPE_F32, 1, &seed);
	base[NDT + 1].ndim = 0;
	for (int i = 0; i < NDT + 2; i++)
		tgt[i] = tune(&base[i], base[i].name, &seed);
	t_write_st(path(0, "base.st"), base, NDT + 2, 0, NULL);
	t_write_st(path(1, "tgt.st"), tgt, NDT + 2, 0, "tuned");
	/* A big bf16 tensor spanning several 64 KiB chunks, one chunk identical. */
	t_tensor big = make("big", TP_DTYPE_BF16, 100000, &seed);
	t_tensor bigt = tune(&big, "big", &seed);
	memcpy(bigt.data + 65536, big.data + 65536, 65536);
	t_write_st(path(2, "bigbase.st"), &big, 1, 0, NULL);
	t_write_st(path(3, "bigtgt.st"), &bigt, 1, 0, NULL);
	free_all(base, NDT + 2);
	free_all(tgt, NDT + 2);
	free(big.data);
	free(bigt.data);
}

static void test_dtypes(void)
{
	write_all_dtypes();
	const char *b = path(0, "base.st"), *t = path(1, "tgt.st");
	tp_delta_opts one = { .threads = 1 }, two = { .threads = 2, .chunk_size = 64 << 10 };
	CHECK(roundtrip(t, &b, 1, &b, 1, &one));
	CHECK(roundtrip(t, &b, 1, &b, 1, &two));
	CHECK(roundtrip(t, NULL, 0, NULL, 0, &one));
	tp_delta_opts xor = { .threads = 2, .force_xform = TP_DELTA_XFORM_XOR };
	CHECK(roundtrip(t, &b, 1, &b, 1, &xor));
	const char *bb = path(2, "bigbase.st"), *bt = path(3, "bigtgt.st");
	CHECK(roundtrip(bt, &bb, 1, &bb, 1, &two));
	/* Same bytes whatever the thread count. */
	const char *d1 = path(4, "d1"), *d2 = path(5, "d2");
	tp_delta_opts one64 = { .threads = 1, .chunk_size = 64 << 10 };
	CHECK(tp_delta_compress_file(bt, &bb, 1, d1, &one64, NULL) == 0);
	CHECK(tp_delta_compress_file(bt, &bb, 1, d2, &two, NULL) == 0);
	CHECK(t_same_files(d1, d2));
	int fd = open(d1, O_RDONLY);
	tp_delta_layout *m = NULL;
	CHECK(tp_delta_inspect(&m, tp_delta_fd_read, &fd) == 0);
	close(fd);
	if (m) { /* header, one tensor of 4 chunks, one identical chunk */
		CHECK(m->nsegs == 2 && m->segs[1].chunks == 4 && m->segs[1].same_chunks == 1);
		CHECK(m->segs[1].xform == TP_DELTA_XFORM_ULP || m->segs[1].xform == TP_DELTA_XFORM_XOR);
	}
	tp_delta_layout_free(m);
}

/* Target reorders, renames, drops and adds tensors, with a longer header. */
static void test_layouts(void)
{
	uint64_t seed = 2;
	t_tensor base[4] = { make("a", TP_DTYPE_BF16, 5000, &seed), make("b", TP_DTYPE_F16, 4000, &seed),
			     make("c", TP_DTYPE_F32, 3000, &seed), make("d", TP_DTYPE_I64, 100, &seed) };
	t_tensor tgt[4] = { tune(&base[2], "c", &seed), tune(&base[0], "a", &seed),
			    tune(&base[1], "b.renamed", &seed), make("e.new", TP_DTYPE_BF16, 999, &seed) };
	t_tensor shape_changed = tune(&base[0], "a", &seed);
	shape_changed.ndim = 2;
	shape_changed.shape[0] = 1000;
	shape_changed.shape[1] = 5;
	t_write_st(path(0, "base.st"), base, 4, 0, NULL);
	t_write_st(path(1, "tgt.st"), tgt, 4, 4096, "a longer header");
	t_write_st(path(2, "tgt2.st"), &shape_changed, 1, 0, NULL);
	const char *b = path(0, "base.st");
	CHECK(roundtrip(path(1, "tgt.st"), &b, 1, &b, 1, NULL));
	CHECK(roundtrip(path(2, "tgt2.st"), &b, 1, &b, 1, NULL));
	free_all(base, 4);
	free_all(tgt, 4);
	free(shape_changed.data);
}

/* Proving each frame as it is encoded changes no byte of the delta, with
 * one worker or several, and with a base given twice (apply resolves both
 * to the first, and so must the proof). The sha256 compress reports is the
 * target file's. */
static void test_verify(void)
{
	uint64_t seed = 7;
	t_tensor base[3] = { make("a", TP_DTYPE_BF16, 200000, &seed),
			     make("b", TP_DTYPE_F32, 70000, &seed), make("c", TP_DTYPE_I32, 9000, &seed) };
	t_tensor tgt[3] = { tune(&base[0], "a", &seed), tune(&base[1], "b", &seed),
			    make("d", TP_DTYPE_F16, 50000, &seed) };
	t_write_st(path(0, "vbase.st"), base, 3, 0, NULL);
	t_write_st(path(1, "vtgt.st"), tgt, 3, 0, NULL);
	const char *b[2] = { path(0, "vbase.st"), path(0, "vbase.st") };
	for (unsigned threads = 1; threads <= 3; threads++) {
		tp_delta_opts o = { .threads = threads, .chunk_size = TP_DELTA_CHUNK_MIN };
		tp_delta_stats plain = { 0 }, proven = { 0 };
		CHECK_EQ_INT(tp_delta_compress_file(path(1, "vtgt.st"), b, 2, path(2, "v0.delta"), &o,
						    &plain), 0);
		o.verify = true;
		CHECK_EQ_INT(tp_delta_compress_file(path(1, "vtgt.st"), b, 2, path(3, "v1.delta"), &o,
						    &proven), 0);
		CHECK(t_same_files(path(2, "v0.delta"), path(3, "v1.delta")));
		CHECK(memcmp(plain.sha256, proven.sha256, sizeof(plain.sha256)) == 0);
		/* The workers hash the chunks in order: the target's own sha256. */
		char want[TP_OID_HEXLEN + 1], have[TP_OID_HEXLEN + 1];
		uint64_t len = 0;
		CHECK_EQ_INT(tp_sha256_file(path(1, "vtgt.st"), want, &len), 0);
		tp_sha256_hex(plain.sha256, have);
		CHECK(strcmp(want, have) == 0 && len == plain.target_bytes);
		CHECK(roundtrip(path(1, "vtgt.st"), b, 2, b + 1, 1, &o));
	}
	free_all(base, 3);
	free_all(tgt, 3);
}

/* The bases' sha256, asked for: each base file hashed whole by the encode
 * jobs, whatever part of it the target uses, for any thread count, a base
 * bigger or smaller than the target, a base given twice, an opaque base and
 * an empty target; the stream is the same as without. An index file as a
 * base is refused (its shards are many files). */
static void test_base_sha256(void)
{
	uint64_t seed = 9;
	t_tensor base[3] = { make("a", TP_DTYPE_BF16, 300000, &seed),
			     make("unused", TP_DTYPE_F32, 90000, &seed),
			     make("b", TP_DTYPE_F32, 70000, &seed) };
	t_tensor tgt[2] = { tune(&base[2], "b", &seed), tune(&base[0], "a", &seed) };
	t_write_st(path(0, "hbase.st"), base, 3, 0, NULL);
	t_write_st(path(1, "htgt.st"), tgt, 2, 0, NULL);
	uint8_t junk[5000];
	for (size_t i = 0; i < sizeof(junk); i++)
		junk[i] = (uint8_t)t_rand(&seed);
	t_write_bytes(path(4, "hjunk"), junk, sizeof(junk));
	t_write_bytes(path(5, "hempty"), junk, 0);
	char want[3][TP_OID_HEXLEN + 1], have[TP_OID_HEXLEN + 1];
	CHECK_EQ_INT(tp_sha256_file(tmp[0], want[0], NULL), 0);
	CHECK_EQ_INT(tp_sha256_file(tmp[4], want[1], NULL), 0);
	CHECK_EQ_INT(tp_sha256_file(tmp[1], want[2], NULL), 0);
	const char *b[3] = { tmp[0], tmp[4], tmp[0] };
	for (unsigned threads = 1; threads <= 3; threads++) {
		unsigned char sums[3][32];
		memset(sums, 0, sizeof(sums));
		tp_delta_opts o = { .threads = threads, .chunk_size = TP_DELTA_CHUNK_MIN,
				    .verify = true };
		CHECK_EQ_INT(tp_delta_compress_file(tmp[1], b, 3, path(2, "h0.delta"), &o, NULL), 0);
		o.base_sha256 = sums;
		CHECK_EQ_INT(tp_delta_compress_file(tmp[1], b, 3, path(3, "h1.delta"), &o, NULL), 0);
		CHECK(t_same_files(tmp[2], tmp[3]));
		for (int i = 0; i < 3; i++) {
			tp_sha256_hex(sums[i], have);
			CHECK_STR(have, want[i == 1 ? 1 : 0]);
		}
		/* The base (bigger than the target) hashed against a small target. */
		const char *big = tmp[0];
		CHECK_EQ_INT(tp_delta_compress_file(tmp[4], &big, 1, path(3, "h2.delta"), &o, NULL), 0);
		tp_sha256_hex(sums[0], have);
		CHECK_STR(have, want[0]);
		/* An empty target: no jobs; the bases are hashed all the same. */
		const char *small = tmp[1];
		CHECK_EQ_INT(tp_delta_compress_file(path(5, "hempty"), &small, 1, path(3, "h3.delta"),
						    &o, NULL), 0);
		tp_sha256_hex(sums[0], have);
		CHECK_STR(have, want[2]);
	}
	const char *idx = "{\"weight_map\":{\"a\":\"hbase.st\"}}";
	t_write_bytes(path(6, "h.safetensors.index.json"), idx, strlen(idx));
	unsigned char one[1][32];
	tp_delta_opts o = { .base_sha256 = one };
	const char *ib = tmp[6];
	CHECK_EQ_INT(tp_delta_compress_file(tmp[1], &ib, 1, path(3, "h4.delta"), &o, NULL),
		     TP_EINVAL);
	free_all(base, 3);
	free_all(tgt, 2);
}

static void test_sharded(void)
{
	uint64_t seed = 3;
	t_tensor s1[2] = { make("l0.w", TP_DTYPE_BF16, 4000, &seed), make("l0.b", TP_DTYPE_BF16, 64, &seed) };
	t_tensor s2[1] = { make("l1.w", TP_DTYPE_BF16, 6000, &seed) };
	t_tensor tgt[3] = { tune(&s1[0], "l0.w", &seed), tune(&s2[0], "l1.w", &seed),
			    tune(&s1[1], "l0.b", &seed) };
	t_write_st(path(0, "model-00001-of-00002.safetensors"), s1, 2, 0, NULL);
	t_write_st(path(1, "model-00002-of-00002.safetensors"), s2, 1, 0, NULL);
	t_write_st(path(2, "tgt.st"), tgt, 3, 0, NULL);
	const char *idx = "{\"weight_map\":{\"l0.w\":\"model-00001-of-00002.safetensors\","
			  "\"l0.b\":\"model-00001-of-00002.safetensors\","
			  "\"l1.w\":\"model-00002-of-00002.safetensors\"}}";
	t_write_bytes(path(3, "model.safetensors.index.json"), idx, strlen(idx));
	const char *cb[1] = { tmp[3] }, *ab[2] = { tmp[1], tmp[0] };
	CHECK(roundtrip(tmp[2], cb, 1, ab, 2, NULL));
	/* Only one of the shards: a clear error, nothing written. */
	const char *out = path(7, "rt.out");
	unlink(out);
	CHECK(tp_delta_apply_file(path(6, "rt.delta"), ab, 1, out, NULL, NULL) == TP_ENOTFOUND);
	CHECK(strstr(tp_error_last(), "wrong or missing base") != NULL);
	CHECK(!t_exists(out));
	free_all(s1, 2);
	free_all(s2, 1);
	free_all(tgt, 3);
}

static void test_opaque(void)
{
	uint64_t seed = 4;
	uint8_t buf[70000];
	for (size_t i = 0; i < sizeof(buf); i++)
		buf[i] = i % 3 ? (uint8_t)t_rand(&seed) : 0;
	t_write_bytes(path(0, "blob"), buf, sizeof(buf));
	t_write_bytes(path(1, "empty"), buf, 0);
	t_write_bytes(path(2, "tiny"), buf, 5);
	const char *b = tmp[0];
	CHECK(roundtrip(tmp[0], NULL, 0, NULL, 0, NULL));
	CHECK(roundtrip(tmp[1], NULL, 0, NULL, 0, NULL));
	CHECK(roundtrip(tmp[2], &b, 1, &b, 1, NULL));
}

/* Every truncation and many byte flips: apply fails without writing OUT,
 * or (when the flip hit a field apply does not need) rebuilds the exact file. */
static void test_corruption(void)
{
	write_all_dtypes();
	const char *b = path(0, "base.st"), *t = path(1, "tgt.st"), *d = path(4, "good.delta");
	const char *bad = path(5, "bad.delta"), *out = path(7, "out");
	/* Small chunks and 3 workers: a frame that fails to decode while later
	 * ones wait for their turn to be hashed must fail the apply, not hang it. */
	tp_delta_opts o = { .threads = 3, .chunk_size = TP_DELTA_CHUNK_MIN };
	/* The trials also apply with two threads (one worker decodes while this
	 * thread hashes and writes) and one (all inline). */
	tp_delta_opts two = { .threads = 2 }, one = { .threads = 1 }, *ao;
	CHECK(tp_delta_compress_file(t, &b, 1, d, &o, NULL) == 0);
	size_t n = 0;
	uint8_t *good = t_read_file(d, &n), *copy = malloc(n);
	uint64_t seed = 5;
	int wrong = 0, failed = 0, trials = 0;
	for (size_t pos = 0; pos < n; pos += 1 + pos / 16 + t_rand(&seed) % 7) {
		memcpy(copy, good, n);
		copy[pos] ^= (uint8_t)(1 + t_rand(&seed) % 255);
		t_write_bytes(bad, copy, n);
		unlink(out);
		ao = trials % 3 == 1 ? &two : trials % 3 == 2 ? &one : &o;
		int rc = tp_delta_apply_file(bad, &b, 1, out, ao, NULL);
		failed += rc < 0;
		wrong += (rc < 0 && t_exists(out)) || (rc == 0 && !t_same_files(out, t));
		t_write_bytes(bad, good, pos);
		unlink(out);
		rc = tp_delta_apply_file(bad, &b, 1, out, ao, NULL);
		wrong += rc == 0 || t_exists(out);
		trials++;
	}
	CHECK(wrong == 0);
	CHECK(failed > trials * 3 / 4);
	/* A base of the right shape but other values. */
	const char *other = path(2, "bigbase.st");
	CHECK(tp_delta_apply_file(d, &other, 1, out, &o, NULL) == TP_ENOTFOUND);
	CHECK(strstr(tp_error_last(), "wrong or missing base") != NULL);
	free(good);
	free(copy);
}

static void test_estimate(void)
{
	const char *b = path(0, "base.st"), *t = path(1, "tgt.st"), *d = path(4, "e.delta");
	tp_delta_layout *m = NULL;
	tp_delta_stats st = { 0 };
	CHECK(tp_delta_compress_file(t, &b, 1, d, NULL, &st) == 0);
	CHECK(tp_delta_estimate(&m, t, &b, 1, NULL) == 0);
	if (m) {
		double err = ((double)m->delta_size - (double)st.delta_bytes) / (double)st.delta_bytes;
		CHECK(err < 0.05 && err > -0.05);
	}
	tp_delta_layout_free(m);
}

/* Many tensors of two chunks each: the estimate samples 1 in 8 chunks of
 * each kind of segment, and tensors it did not code take their kind's
 * ratio; the total stays within 5% of the real delta. */
static void test_estimate_many(void)
{
	enum { N = 48 };
	uint64_t seed = 11;
	t_tensor base[N], tgt[N];
	char names[N][16];
	for (int i = 0; i < N; i++) {
		snprintf(names[i], sizeof(names[i]), "layer.%d", i);
		base[i] = make(names[i], i % 3 ? TP_DTYPE_BF16 : TP_DTYPE_F32,
			       i % 3 ? 65536 : 32768, &seed);
		tgt[i] = tune(&base[i], names[i], &seed);
	}
	t_write_st(path(0, "mbase.st"), base, N, 0, NULL);
	t_write_st(path(1, "mtgt.st"), tgt, N, 0, NULL);
	const char *b = path(0, "mbase.st"), *t = path(1, "mtgt.st");
	tp_delta_opts o = { .threads = 2, .chunk_size = TP_DELTA_CHUNK_MIN };
	for (int with_base = 0; with_base <= 1; with_base++) {
		tp_delta_layout *m = NULL;
		tp_delta_stats st = { 0 };
		CHECK(tp_delta_compress_file(t, &b, (size_t)with_base, path(4, "m.delta"), &o, &st) == 0);
		CHECK(tp_delta_estimate(&m, t, &b, (size_t)with_base, &o) == 0);
		if (m) {
			double err = ((double)m->delta_size - (double)st.delta_bytes) /
				     (double)st.delta_bytes;
			CHECK(err < 0.05 && err > -0.05);
			uint64_t chunks = 0;
			for (size_t i = 0; i < m->nsegs; i++) {
				chunks += m->segs[i].chunks;
				CHECK(m->segs[i].size == 0 || m->segs[i].stored_bytes > 0);
			}
			CHECK(chunks >= 2 * N);
		}
		tp_delta_layout_free(m);
	}
	free_all(base, N);
	free_all(tgt, N);
}

/* An estimate's plan given to compress (opts.plan) is coded by: the
 * stream is the one compress plans itself, proven or not; a plan of other
 * files (another base, none) is not used. An estimate coding every chunk
 * (stride 1) sizes the stream exactly, and sparser strides stay close. */
static void test_estimate_plan(void)
{
	enum { N = 12 };
	uint64_t seed = 13;
	t_tensor base[N], tgt[N], other[N];
	char names[N][16];
	for (int i = 0; i < N; i++) {
		snprintf(names[i], sizeof(names[i]), "w.%d", i);
		base[i] = make(names[i], i % 2 ? TP_DTYPE_BF16 : TP_DTYPE_F32, 40000, &seed);
		tgt[i] = tune(&base[i], names[i], &seed);
		other[i] = make(names[i], i % 2 ? TP_DTYPE_BF16 : TP_DTYPE_F32, 40000, &seed);
	}
	t_write_st(path(0, "pbase.st"), base, N, 0, NULL);
	t_write_st(path(1, "ptgt.st"), tgt, N, 0, NULL);
	t_write_st(path(2, "pother.st"), other, N, 0, NULL);
	const char *b = path(0, "pbase.st"), *t = path(1, "ptgt.st"), *ob = path(2, "pother.st");
	tp_delta_opts o = { .threads = 2, .chunk_size = TP_DELTA_CHUNK_MIN };
	tp_delta_stats st = { 0 }, st2 = { 0 };
	CHECK_EQ_INT(tp_delta_compress_file(t, &b, 1, path(3, "p0.delta"), &o, &st), 0);
	tp_delta_layout *m = NULL, *mo = NULL, *mn = NULL;
	CHECK_EQ_INT(tp_delta_estimate(&m, t, &b, 1, &o), 0);
	CHECK_EQ_INT(tp_delta_estimate(&mo, t, &ob, 1, &o), 0);
	CHECK_EQ_INT(tp_delta_estimate(&mn, t, NULL, 0, &o), 0);
	for (int verify = 0; m && mo && mn && verify <= 1; verify++) {
		tp_delta_opts p = o;
		p.verify = verify;
		p.plan = m;
		CHECK_EQ_INT(tp_delta_compress_file(t, &b, 1, path(4, "p1.delta"), &p, &st2), 0);
		CHECK(t_same_files(path(3, "p0.delta"), path(4, "p1.delta")));
		p.plan = mo;
		CHECK_EQ_INT(tp_delta_compress_file(t, &b, 1, path(4, "p1.delta"), &p, &st2), 0);
		CHECK(t_same_files(path(3, "p0.delta"), path(4, "p1.delta")));
		p.plan = mn;
		CHECK_EQ_INT(tp_delta_compress_file(t, &b, 1, path(4, "p1.delta"), &p, &st2), 0);
		CHECK(t_same_files(path(3, "p0.delta"), path(4, "p1.delta")));
	}
	tp_delta_layout_free(m);
	tp_delta_layout_free(mo);
	tp_delta_layout_free(mn);
	for (unsigned stride = 1; stride <= 32; stride *= 2) {
		tp_delta_opts e = o;
		e.estimate_stride = stride;
		m = NULL;
		CHECK_EQ_INT(tp_delta_estimate(&m, t, &b, 1, &e), 0);
		if (m && stride == 1)
			CHECK(m->delta_size == st.delta_bytes);
		if (m) {
			double err = ((double)m->delta_size - (double)st.delta_bytes) /
				     (double)st.delta_bytes;
			CHECK(err < 0.05 && err > -0.05);
		}
		tp_delta_layout_free(m);
	}
	free_all(base, N);
	free_all(tgt, N);
	free_all(other, N);
}

int main(void)
{
	if (!tp_test_mkdtemp(dir))
		return 1;
	TP_TEST_RUN(test_dtypes);
	TP_TEST_RUN(test_layouts);
	TP_TEST_RUN(test_verify);
	TP_TEST_RUN(test_base_sha256);
	TP_TEST_RUN(test_sharded);
	TP_TEST_RUN(test_opaque);
	TP_TEST_RUN(test_corruption);
	TP_TEST_RUN(test_estimate);
	TP_TEST_RUN(test_estimate_many);
	TP_TEST_RUN(test_estimate_plan);
	tp_test_rmtree(dir);
	return TP_TEST_RESULT();
}
