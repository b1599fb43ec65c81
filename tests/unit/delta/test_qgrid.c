/* qgrid (format v2): exact conversions, bit-exact round trips on any input,
 * near-zero residuals on grid data, version 2 only when qgrid is used, and
 * malformed v2 input refused. */
#include "delta_internal.h"
#include "testutil.h"

#include <math.h>
#include <unistd.h>

static const tp_dtype dts[] = { TP_DTYPE_BF16, TP_DTYPE_F16 };

static float f32_of(uint32_t u)
{
	float f;
	memcpy(&f, &u, 4);
	return f;
}

/* Nearest-even rounding by brute force: the representable neighbours of f
 * compared in double. */
static uint16_t ref_round(tp_dtype dt, float f)
{
	if (isinf(f))
		return tp_qgrid_from_f32(dt, f);
	uint16_t sign = signbit(f) ? 0x8000 : 0, best = sign;
	double a = fabs((double)f), bd = INFINITY;
	uint16_t inf = dt == TP_DTYPE_BF16 ? 0x7F80 : 0x7C00;
	for (uint32_t h = 0; h <= inf; h++) {
		double v = h == inf ? INFINITY : (double)tp_qgrid_to_f32(dt, (uint16_t)h);
		double e = h == inf ? INFINITY : fabs(v - a);
		if (e < bd || (e == bd && !(h & 1))) {
			bd = e;
			best = sign | (uint16_t)h;
		}
	}
	/* Past the largest finite value by half an ULP or more: infinity. */
	double max = tp_qgrid_to_f32(dt, (uint16_t)(inf - 1));
	double half = (max - tp_qgrid_to_f32(dt, (uint16_t)(inf - 2))) / 2;
	if (a >= max + half)
		best = sign | inf;
	return best;
}

static void test_conversions(void)
{
	/* Every 16-bit pattern widens exactly and narrows back. */
	for (int k = 0; k < 2; k++)
		for (uint32_t h = 0; h < 65536; h++) {
			float f = tp_qgrid_to_f32(dts[k], (uint16_t)h);
			if (!isnan(f))
				CHECK_EQ_INT(tp_qgrid_from_f32(dts[k], f), h);
		}
	CHECK(tp_qgrid_to_f32(TP_DTYPE_F16, 0x0001) == 0x1p-24f);
	CHECK(tp_qgrid_to_f32(TP_DTYPE_F16, 0x7BFF) == 65504.0f);
	/* Random fp32 values around each format's range, against brute force. */
	uint64_t seed = 3;
	for (int i = 0; i < 1500; i++) {
		tp_dtype dt = dts[i & 1];
		uint32_t e = dt == TP_DTYPE_BF16 ? (uint32_t)(t_rand(&seed) % 255)
						 : 95 + (uint32_t)(t_rand(&seed) % 50);
		float f = f32_of((uint32_t)(t_rand(&seed) & 0x807FFFFF) | e << 23);
		/* Exact ties too: a value halfway between two neighbours. */
		uint32_t u;
		memcpy(&u, &f, 4);
		if (i % 5 == 0)
			f = f32_of(dt == TP_DTYPE_BF16 ? (u & 0xFFFF0000) | 0x8000
						       : (u & ~0x1FFFu) | 0x1000);
		CHECK_EQ_INT(tp_qgrid_from_f32(dt, f), ref_round(dt, f));
	}
}

/* Base weights around 0.05 and a per-row quantized update of one code in
 * ten, as sparsify writes it: t = round(b + c * s) with the product and sum
 * rounded separately. The row's largest code is qmax. */
static void make_grid(tp_dtype dt, size_t rows, size_t cols, int qmax, uint64_t *seed,
		      uint16_t *b, uint16_t *t)
{
	for (size_t r = 0; r < rows; r++) {
		float s = (float)(0.005 + (double)(t_rand(seed) % 1000) * 1e-4) / (float)qmax;
		for (size_t j = 0; j < cols; j++) {
			size_t i = r * cols + j;
			float bf = (float)((double)((int)(t_rand(seed) % 2001) - 1000) * 5e-5);
			b[i] = tp_qgrid_from_f32(dt, bf);
			int c = t_rand(seed) % 10 ? 0 : (int)(t_rand(seed) % (2 * qmax + 1)) - qmax;
			if (j == cols / 2)
				c = qmax;
			volatile float p = (float)c * s;
			volatile float sum = tp_qgrid_to_f32(dt, b[i]) + p;
			t[i] = c ? tp_qgrid_from_f32(dt, sum) : b[i];
		}
	}
}

static size_t residuals(const uint8_t *planes, size_t n)
{
	size_t nz = 0;
	for (size_t j = 0; j < n; j++)
		nz += planes[n + j] || planes[2 * n + j];
	return nz;
}

/* Grid data: (almost) no residual, and the frame beats ulp's. */
static void test_grid(void)
{
	enum { ROWS = 40, COLS = 3000, N = ROWS * COLS, ALL = N + 2 * COLS };
	uint16_t *b = malloc(2 * ALL), *t = malloc(2 * ALL), *back = malloc(2 * N);
	uint8_t *planes = malloc(6 * N + 64);
	uint64_t seed = 11;
	tp_chunk_coder c;
	CHECK(tp_chunk_coder_init(&c, 2 * N) == 0);
	size_t cap = tp_chunk_frame_bound(2 * N);
	uint8_t *frame = malloc(cap), *ulp = malloc(cap);
	for (int k = 0; k < 4; k++) {
		tp_dtype dt = dts[k & 1];
		int qmax = k < 2 ? 127 : 7;
		make_grid(dt, ROWS + 2, COLS, qmax, &seed, b, t);
		/* Chunks that start mid-row, as in a segment. */
		for (uint64_t first = 0; first < 2 * COLS; first += 1234) {
			CHECK(tp_qgrid_split(dt, (uint8_t *)(t + first), (uint8_t *)(b + first), N, first,
					     COLS, planes) == 0);
			size_t nz = residuals(planes, N);
			if (nz > N / 200)
				fprintf(stderr, "dtype %d qmax %d first %llu: %zu residuals\n", (int)dt, qmax,
					(unsigned long long)first, nz);
			CHECK(nz <= N / 200);
			CHECK(tp_qgrid_merge(dt, planes, (uint8_t *)(b + first), N, first, COLS,
					     (uint8_t *)back) == 0);
			CHECK(memcmp(back, t + first, 2 * N) == 0);
		}
		tp_chunk_desc d = { .xform = TP_DELTA_XFORM_QGRID, .width = 2, .seg = 1, .index = 2,
				    .target = (uint8_t *)t, .base = (uint8_t *)b, .len = 2 * N,
				    .dtype = dt, .row = COLS };
		tp_chunk_desc u = d;
		u.xform = TP_DELTA_XFORM_ULP;
		size_t len = 0, ulen = 0;
		CHECK(tp_chunk_encode(&c, &d, 1, frame, cap, &len) == 0);
		CHECK(tp_chunk_encode(&c, &u, 1, ulp, cap, &ulen) == 0);
		if (frame[1] != TP_DELTA_FLAG_QGRID || len >= ulen * 9 / 10)
			fprintf(stderr, "case %d: frame %zu, ulp %zu\n", k, len, ulen);
		CHECK(frame[1] == TP_DELTA_FLAG_QGRID && frame[2] == TP_QGRID_PLANES);
		CHECK(len < ulen * 9 / 10);
		memset(back, 0, 2 * N);
		CHECK(tp_chunk_decode(&c, &d, frame, len, (uint8_t *)back) == 0);
		CHECK(memcmp(back, t, 2 * N) == 0);
		/* A qgrid frame in a ulp segment is refused. */
		CHECK(tp_chunk_decode(&c, &u, frame, len, (uint8_t *)back) == TP_ECORRUPT);
		/* A qgrid frame with a plane fewer is refused. */
		frame[2] = 3;
		CHECK(tp_chunk_decode(&c, &d, frame, len, (uint8_t *)back) < 0);
		frame[2] = TP_QGRID_PLANES;
		CHECK(tp_chunk_decode(&c, &d, frame, len - 1, (uint8_t *)back) < 0);
	}
	/* Random data in a qgrid segment: the ulp frame is kept. */
	t_fill_special((uint8_t *)t, 2 * N, 2, &seed);
	t_fill_special((uint8_t *)b, 2 * N, 2, &seed);
	tp_chunk_desc d = { .xform = TP_DELTA_XFORM_QGRID, .width = 2, .target = (uint8_t *)t,
			    .base = (uint8_t *)b, .len = 2 * N, .dtype = TP_DTYPE_BF16, .row = 5 };
	size_t len = 0;
	CHECK(tp_chunk_encode(&c, &d, 1, frame, cap, &len) == 0);
	CHECK(frame[1] == 0 && frame[2] == 2);
	CHECK(tp_chunk_decode(&c, &d, frame, len, (uint8_t *)back) == 0);
	CHECK(memcmp(back, t, 2 * N) == 0);
	/* An unchanged chunk is still SAME. */
	d.target = (uint8_t *)b;
	CHECK(tp_chunk_encode(&c, &d, 1, frame, cap, &len) == 0 && len == TP_DELTA_CHUNK_HDR);
	tp_chunk_coder_fini(&c);
	free(frame);
	free(ulp);
	free(b);
	free(t);
	free(back);
	free(planes);
}

/* Any bits round-trip: NaN, Inf, subnormals, -0 in base and target, rows
 * of 2, rows longer than the chunk, rows that do not divide it. */
static void test_adversarial(void)
{
	enum { N = 5000 };
	static const uint64_t firsts[] = { 0, 1, 4999, 123457 };
	static const uint64_t rowlens[] = { 2, 3, 37, 4096, 5000, 100003 };
	uint8_t t[2 * N], b[2 * N], back[2 * N];
	uint8_t *planes = malloc(6 * N + 64);
	uint64_t seed = 5;
	for (int k = 0; k < 2; k++)
		for (size_t fi = 0; fi < 4; fi++)
			for (size_t ri = 0; ri < 6; ri++) {
				t_fill_special(t, 2 * N, 2, &seed);
				t_fill_special(b, 2 * N, 2, &seed);
				/* Half the weights unchanged, as in a sparse update. */
				for (size_t i = 0; i < N; i += 2)
					memcpy(t + 2 * i, b + 2 * i, 2);
				uint64_t first = firsts[fi], row = rowlens[ri];
				CHECK(tp_qgrid_split(dts[k], t, b, N, first, row, planes) == 0);
				CHECK(tp_qgrid_merge(dts[k], planes, b, N, first, row, back) == 0);
				CHECK(memcmp(t, back, 2 * N) == 0);
				size_t ns = tp_qgrid_nscales(first, N, row);
				CHECK(ns == (first + N - 1) / row - first / row + 1);
			}
	/* Whatever finite scales and codes a writer chose (zero, subnormal,
	 * huge ones whose sums overflow), the result is well defined and
	 * re-codes exactly. */
	for (int k = 0; k < 2; k++)
		for (int rep = 0; rep < 8; rep++) {
			uint64_t row = 1 + rep * 700 + 2;
			size_t ns = tp_qgrid_nscales(0, N, row);
			for (size_t i = 0; i < 3 * N + 4 * ns; i++)
				planes[i] = (uint8_t)t_rand(&seed);
			for (size_t i = 0; i < ns; i++) {
				uint32_t u = (uint32_t)t_rand(&seed);
				if (rep == 0)
					u = 0; /* zero scale */
				else if (rep == 1)
					u = 0x00000001; /* subnormal */
				else if ((u & 0x7F800000) == 0x7F800000)
					u &= 0xBFFFFFFF;
				for (unsigned p = 0; p < 4; p++)
					planes[3 * N + p * ns + i] = (uint8_t)(u >> (8 * (3 - p)));
			}
			if (rep == 2)
				memset(planes, 0, N); /* all codes zero */
			t_fill_special(b, 2 * N, 2, &seed);
			CHECK(tp_qgrid_merge(dts[k], planes, b, N, 0, row, t) == 0);
			CHECK(tp_qgrid_split(dts[k], t, b, N, 0, row, planes) == 0);
			CHECK(tp_qgrid_merge(dts[k], planes, b, N, 0, row, back) == 0);
			CHECK(memcmp(t, back, 2 * N) == 0);
			/* A non-finite scale is refused. */
			planes[3 * N + 0 * ns] = rep & 1 ? 0xFF : 0x7F;
			planes[3 * N + 1 * ns] = 0x80 | (uint8_t)rep;
			CHECK(tp_qgrid_merge(dts[k], planes, b, N, 0, row, back) == TP_ECORRUPT);
		}
	free(planes);
}

static const char fp[] = "0000000000000000000000000000000000000000000000000000000000000000";

static int parse(unsigned version, const char *seg)
{
	char json[1024];
	snprintf(json, sizeof(json),
		 "{\"format\":\"tenpak-delta\",\"version\":%u,\"target_size\":200,"
		 "\"chunk_size\":65536,\"bases\":[{\"name\":\"b\",\"size\":1000,\"fingerprint\":"
		 "\"%s\"}],\"segments\":[{\"offset\":0,\"size\":200,%s}]}",
		 version, fp, seg);
	tp_delta_layout *m = NULL;
	int rc = tp_delta_plan_parse(&m, json, strlen(json));
	if (rc == 0 && (m->version != version || m->nsegs != 1))
		rc = -1000;
	tp_delta_layout_free(m);
	return rc;
}

static void test_plan(void)
{
	const char *ok = "\"xform\":\"qgrid\",\"name\":\"w\",\"dtype\":\"BF16\",\"base\":0,"
			 "\"base_offset\":0,\"row\":10";
	CHECK(parse(2, ok) == 0);
	CHECK(parse(2, "\"xform\":\"qgrid\",\"name\":\"w\",\"dtype\":\"F16\",\"base\":0,"
		       "\"base_offset\":0,\"row\":4294967296") == 0);
	CHECK(parse(2, "\"xform\":\"ulp\",\"name\":\"w\",\"dtype\":\"BF16\",\"base\":0,"
		       "\"base_offset\":0") == 0);
	CHECK(parse(1, "\"xform\":\"ulp\",\"name\":\"w\",\"dtype\":\"BF16\",\"base\":0,"
		       "\"base_offset\":0") == 0);
	CHECK(parse(1, ok) == TP_ECORRUPT); /* qgrid needs version 2 */
	CHECK(parse(3, ok) == TP_EUNSUPPORTED);
	CHECK(parse(0, ok) == TP_EUNSUPPORTED);
	static const char *const bad[] = {
		"\"xform\":\"qgrid\",\"name\":\"w\",\"dtype\":\"BF16\",\"base\":0,\"base_offset\":0",
		"\"xform\":\"qgrid\",\"name\":\"w\",\"dtype\":\"BF16\",\"base\":0,\"base_offset\":0,"
		"\"row\":1",
		"\"xform\":\"qgrid\",\"name\":\"w\",\"dtype\":\"BF16\",\"base\":0,\"base_offset\":0,"
		"\"row\":4294967297",
		"\"xform\":\"qgrid\",\"name\":\"w\",\"dtype\":\"BF16\",\"base\":0,\"base_offset\":0,"
		"\"row\":-4",
		"\"xform\":\"qgrid\",\"name\":\"w\",\"dtype\":\"BF16\",\"base\":0,\"base_offset\":0,"
		"\"row\":\"10\"",
		"\"xform\":\"qgrid\",\"name\":\"w\",\"dtype\":\"F32\",\"base\":0,\"base_offset\":0,"
		"\"row\":10",
		"\"xform\":\"qgrid\",\"name\":\"w\",\"dtype\":\"I16\",\"base\":0,\"base_offset\":0,"
		"\"row\":10",
		"\"xform\":\"qgrid\",\"name\":\"w\",\"dtype\":\"BF16\",\"row\":10",
		"\"xform\":\"qgrid\",\"row\":10",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		CHECK(parse(2, bad[i]) == TP_ECORRUPT);
}

static char dir[] = "/tmp/tp-delta-qgrid-XXXXXX";

static const char *path(char *buf, const char *name)
{
	snprintf(buf, 512, "%s/%s", dir, name);
	return buf;
}

static uint32_t file_version(const char *p)
{
	size_t n = 0;
	uint8_t *d = t_read_file(p, &n);
	uint32_t v = d && n >= 12 ? tp_rd32(d + 8) : 0;
	free(d);
	return v;
}

/* Whole files: a sparsified-like pair is written as version 2 with qgrid
 * segments and rebuilt exactly; a random fine-tune stays version 1. */
static void test_files(void)
{
	enum { ROWS = 48, COLS = 3001, N = ROWS * COLS };
	char pb[512], pt[512], pd[512], po[512];
	uint64_t seed = 21;
	t_tensor base[3], tgt[3];
	static const char *names[3] = { "a.weight", "b.weight", "norm" };
	for (int i = 0; i < 3; i++) {
		base[i] = (t_tensor){ names[i], i == 1 ? TP_DTYPE_F16 : TP_DTYPE_BF16, 2,
				      { ROWS, COLS }, malloc(2 * N), 2 * N };
		tgt[i] = base[i];
		tgt[i].data = malloc(2 * N);
	}
	make_grid(TP_DTYPE_BF16, ROWS, COLS, 127, &seed, (uint16_t *)base[0].data,
		  (uint16_t *)tgt[0].data);
	make_grid(TP_DTYPE_F16, ROWS, COLS, 7, &seed, (uint16_t *)base[1].data,
		  (uint16_t *)tgt[1].data);
	/* A 1-D tensor (no rows) with adversarial bits. */
	base[2].ndim = tgt[2].ndim = 1;
	base[2].shape[0] = tgt[2].shape[0] = N;
	t_fill_special(base[2].data, 2 * N, 2, &seed);
	t_fill_special(tgt[2].data, 2 * N, 2, &seed);
	CHECK(t_write_st(path(pb, "base.st"), base, 3, 0, NULL) == 0);
	CHECK(t_write_st(path(pt, "tgt.st"), tgt, 3, 0, NULL) == 0);
	const char *b = pb;
	for (int forced = 0; forced < 2; forced++)
		for (unsigned threads = 1; threads <= 2; threads++) {
			tp_delta_opts o = { .threads = threads, .chunk_size = 64 << 10, .verify = true,
					    .force_xform = forced ? TP_DELTA_XFORM_QGRID
								  : TP_DELTA_XFORM_AUTO };
			unlink(po);
			CHECK(tp_delta_compress_file(pt, &b, 1, path(pd, "d.tpd"), &o, NULL) == 0);
			CHECK(file_version(pd) == 2);
			CHECK(tp_delta_apply_file(pd, &b, 1, path(po, "out"), &o, NULL) == 0);
			CHECK(t_same_files(pt, po));
			tp_delta_layout *m = NULL;
			CHECK(tp_delta_estimate(&m, pt, &b, 1, &o) == 0);
			size_t q = 0;
			for (size_t i = 0; m && i < m->nsegs; i++)
				q += m->segs[i].xform == TP_DELTA_XFORM_QGRID;
			if (q != 2)
				fprintf(stderr, "forced %d: %zu qgrid segments\n", forced, q);
			CHECK(q == 2 && m && m->version == 2);
			tp_delta_layout_free(m);
		}
	/* The preamble's version must be the plan's (2), and at most 2. */
	size_t dn = 0;
	uint8_t *d = t_read_file(pd, &dn);
	CHECK(d && dn > 16);
	if (d) {
		static const struct { uint8_t v; int rc; } bad[] = {
			{ 1, TP_ECORRUPT }, { 3, TP_EUNSUPPORTED }, { 0, TP_EUNSUPPORTED } };
		for (size_t i = 0; i < 3; i++) {
			d[8] = bad[i].v;
			CHECK(t_write_bytes(pd, d, dn) == 0);
			unlink(po);
			tp_delta_opts o = { .threads = 1 };
			CHECK(tp_delta_apply_file(pd, &b, 1, po, &o, NULL) == bad[i].rc);
			CHECK(!t_exists(po));
		}
		free(d);
	}
	/* The same tensors fine-tuned in every weight by a few ULPs: no grid,
	 * so version 1. */
	for (int i = 0; i < 2; i++)
		for (size_t j = 0; j < N; j++) {
			uint16_t v;
			memcpy(&v, base[i].data + 2 * j, 2);
			v = (uint16_t)(v + t_rand(&seed) % 7 - 3);
			memcpy(tgt[i].data + 2 * j, &v, 2);
		}
	CHECK(t_write_st(pt, tgt, 3, 0, NULL) == 0);
	tp_delta_opts o = { .threads = 2, .chunk_size = 64 << 10 };
	CHECK(tp_delta_compress_file(pt, &b, 1, pd, &o, NULL) == 0);
	CHECK(file_version(pd) == 1);
	unlink(po);
	CHECK(tp_delta_apply_file(pd, &b, 1, po, &o, NULL) == 0 && t_same_files(pt, po));
	for (int i = 0; i < 3; i++) {
		free(base[i].data);
		free(tgt[i].data);
	}
	unlink(pb);
	unlink(pt);
	unlink(pd);
	unlink(po);
}

int main(void)
{
	if (!mkdtemp(dir))
		return 1;
	test_conversions();
	test_grid();
	test_adversarial();
	test_plan();
	test_files();
	rmdir(dir);
	return TP_TEST_RESULT();
}
