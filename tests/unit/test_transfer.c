/* The transfer policy on the in-memory store, seen through a wrapper that
 * counts whole-object reads (one per object rebuilt):
 * - plans: the choice of base, tenpak.maxchain, the candidate cap, bases
 *   only in the store, local copies that do not hash to their oid, and
 *   the fallback to whole; uploads store what the plan says;
 * - rebuilds of chains, and refusal of bases that are not what a delta
 *   names;
 * - provenance: signed, unsigned, untrusted and required signatures;
 * - downloads from hostile stores: the work and disk a rebuild may take are
 *   bounded, and what exceeds the bounds is refused before anything is read
 *   or written. */
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zstd.h>

#include "tp_delta.h"
#include "tp_store_backend.h"
#include "tp_test.h"
#include "tp_transfer.h"

static char root[256];
static tp_store *inner;
static unsigned long full_reads; /* gets to the end of an object */

static int count_stat(tp_store *s, const char *key, uint64_t *size)
{
	(void)s;
	return tp_store_stat(inner, key, size);
}

static int count_get(tp_store *s, const char *key, uint64_t off, uint64_t len,
		     const tp_store_sink *sink)
{
	(void)s;
	full_reads += len == UINT64_MAX;
	return tp_store_get(inner, key, off, len, sink);
}

static int count_put(tp_store *s, const char *key, const tp_store_source *src)
{
	(void)s;
	return tp_store_put(inner, key, src);
}

static int count_remove(tp_store *s, const char *key)
{
	(void)s;
	return tp_store_remove(inner, key);
}

static int count_list(tp_store *s, const char *prefix, tp_store_list_fn fn, void *ctx)
{
	(void)s;
	return tp_store_list(inner, prefix, fn, ctx);
}

static void count_free(tp_store *s)
{
	(void)s;
}

static const tp_store_backend counting = {
	.version = TP_STORE_BACKEND_VERSION,
	.scheme = "count", .stat = count_stat, .get = count_get, .put = count_put,
	.remove = count_remove, .list = count_list, .free = count_free,
};
static tp_store store = { &counting, (char *)"count:" };

/* A fresh, empty store. */
static void store_open(void)
{
	tp_store_free(inner);
	inner = NULL;
	CHECK_EQ_INT(tp_store_mem_new(&inner), 0);
	full_reads = 0;
}

/* path created or truncated, holding the n bytes at p. */
static void file_write(const char *path, const void *p, size_t n)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	CHECK(fd >= 0);
	CHECK_EQ_INT(tp_fs_write_all(fd, p, n), 0);
	close(fd);
}

/* A one-tensor safetensors file (64 F32 values from seed); oid filled in. */
static char *make_model(uint64_t seed, char oid[TP_OID_HEXLEN + 1])
{
	static const char head[] = "{\"w\":{\"dtype\":\"F32\",\"shape\":[64],\"data_offsets\":[0,256]}}";
	unsigned char file[8 + 64 + 256];
	size_t hlen = 64; /* header padded with spaces to a multiple of 8 */
	memset(file, ' ', sizeof(file));
	for (int i = 0; i < 8; i++)
		file[i] = (unsigned char)(hlen >> (8 * i));
	memcpy(file + 8, head, sizeof(head) - 1);
	uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
	for (size_t i = 8 + hlen; i < sizeof(file); i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		file[i] = (unsigned char)x;
	}
	char *path = malloc(512);
	snprintf(path, 512, "%s/model-%llu.safetensors", root, (unsigned long long)seed);
	file_write(path, file, sizeof(file));
	tp_sha256_hex_of(file, sizeof(file), oid);
	return path;
}

#define MODEL_SIZE (8 + 64 + 256)

/* Store path as object oid: a delta against the given bases (their oids
 * and paths), or whole without any. */
static void put_object(const char *path, const char *oid, char **base_paths,
		       char (*base_oids)[TP_OID_HEXLEN + 1], size_t nbases)
{
	if (!nbases) {
		CHECK_EQ_INT(tp_store_object_put_file(inner, oid, MODEL_SIZE, path, NULL, NULL), 0);
		return;
	}
	char payload[512];
	snprintf(payload, sizeof(payload), "%s/payload", root);
	int fd = open(payload, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	tp_delta_opts o = { .threads = 1 };
	CHECK_EQ_INT(tp_delta_compress(path, (const char *const *)base_paths, nbases,
				       tp_delta_fd_write, &fd, &o, NULL), 0);
	close(fd);
	tp_store_manifest_base *b = calloc(nbases, sizeof(*b));
	for (size_t i = 0; i < nbases; i++) {
		memcpy(b[i].oid, base_oids[i], sizeof(b[i].oid));
		b[i].size = MODEL_SIZE;
	}
	tp_store_manifest m = { .size = MODEL_SIZE, .codec_version = TP_DELTA_VERSION, .depth = 1,
				.nbases = nbases, .bases = b };
	memcpy(m.oid, oid, sizeof(m.oid));
	char *json = NULL;
	CHECK_EQ_INT(tp_store_manifest_build(&m, &json), 0);
	CHECK_EQ_INT(tp_store_object_put_delta(inner, oid, MODEL_SIZE, TP_STORE_KIND_DELTA, json,
					       payload, NULL, NULL), 0);
	free(json);
	free(b);
}

/* LEVELS levels of WIDTH objects; each object of a level is a delta against
 * every object of the next, the last level is whole. Returns the path of
 * object 0 of level 0; its oid in top. Following every name would rebuild
 * WIDTH^LEVELS objects. */
static char *make_lattice(int levels, int width, char top[TP_OID_HEXLEN + 1])
{
	char (*oids)[TP_OID_HEXLEN + 1] = calloc((size_t)(levels + 1) * width, sizeof(*oids));
	char **paths = calloc((size_t)(levels + 1) * width, sizeof(*paths));
	for (int l = levels; l >= 0; l--) {
		for (int k = 0; k < width; k++) {
			size_t i = (size_t)l * width + k;
			paths[i] = make_model((uint64_t)l * 1000 + k + 1, oids[i]);
			if (l == levels)
				put_object(paths[i], oids[i], NULL, NULL, 0);
			else
				put_object(paths[i], oids[i], paths + i - k + width,
					   oids + i - k + width, (size_t)width);
		}
	}
	char *result = strdup(paths[0]);
	memcpy(top, oids[0], TP_OID_HEXLEN + 1);
	for (size_t i = 0; i < (size_t)(levels + 1) * width; i++)
		free(paths[i]);
	free(paths);
	free(oids);
	return result;
}

static tp_transfer *transfer_new(void)
{
	char tmp[512];
	tp_transfer *t = NULL;
	snprintf(tmp, sizeof(tmp), "%s/tmp", root);
	tp_transfer_opts opts = { .tmp_dir = tmp, .threads = 1 };
	CHECK_EQ_INT(tp_transfer_new(&t, &store, NULL, &opts), 0);
	return t;
}

static bool same_bytes(const char *a, const char *b)
{
	char ha[TP_OID_HEXLEN + 1], hb[TP_OID_HEXLEN + 1];
	return tp_sha256_file(a, ha, NULL) == 0 && tp_sha256_file(b, hb, NULL) == 0 &&
	       strcmp(ha, hb) == 0;
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Download the top of a lattice in store name; its want file into *want. */
static int download_lattice(const char *name, int levels, int width, char **want)
{
	char top[TP_OID_HEXLEN + 1], out[512];
	tp_transfer *t;
	store_open();
	*want = make_lattice(levels, width, top);
	t = transfer_new();
	snprintf(out, sizeof(out), "%s/out-%s", root, name);
	full_reads = 0;
	double t0 = now();
	int rc = tp_transfer_download(t, top, MODEL_SIZE, out);
	fprintf(stderr, "%s: %d levels of %d: %s in %.3f s, %lu objects read\n", name, levels, width,
		rc ? tp_error_last() : "rebuilt", now() - t0, full_reads);
	if (rc == 0)
		CHECK(same_bytes(*want, out));
	else
		CHECK(strstr(tp_error_last(), top) != NULL);
	tp_transfer_free(t);
	return rc;
}

/* 24 levels, each object naming both objects of the next: 2^24 rebuilds if
 * each name is followed, 49 when each object is rebuilt once. */
static void test_doubling(void)
{
	char *want = NULL;
	CHECK_EQ_INT(download_lattice("doubling", 24, 2, &want), 0);
	CHECK_EQ_INT(full_reads, 49);
	free(want);
}

/* 24 levels of 11: more than TP_TRANSFER_REBUILDS_MAX distinct objects,
 * refused before any is rebuilt. */
static void test_too_many(void)
{
	char *want = NULL;
	CHECK_EQ_INT(download_lattice("wide", 24, 11, &want), TP_ETOOBIG);
	CHECK(strstr(tp_error_last(), "more than 256 objects from the store") != NULL);
	CHECK_EQ_INT(full_reads, 0);
	free(want);
}

typedef struct mem_source {
	const unsigned char *p;
	size_t n;
} mem_source;

static int mem_read(void *ctx, void *buf, size_t cap, size_t *got)
{
	mem_source *m = ctx;
	*got = m->n < cap ? m->n : cap;
	memcpy(buf, m->p, *got);
	m->p += *got;
	m->n -= *got;
	return 0;
}

/* Write a raw object into the store, as a hostile writer could: a header
 * of any kind and size, then payload. */
static void put_raw(const char *oid, int kind, uint64_t size, const void *payload, size_t n)
{
	char key[TP_STORE_OBJECT_KEY_LEN + 1];
	unsigned char *obj = malloc(TP_STORE_OBJECT_HEADER_LEN + n);
	unsigned char h[TP_STORE_OBJECT_HEADER_LEN] = { 'T', 'P', 'K', 'O', 1, (unsigned char)kind };
	for (int i = 0; i < 8; i++)
		h[8 + i] = (unsigned char)(size >> (8 * i));
	memcpy(obj, h, sizeof(h));
	memcpy(obj + sizeof(h), payload, n);
	mem_source m = { obj, sizeof(h) + n };
	tp_store_source src = { mem_read, &m };
	tp_store_object_key(key, oid);
	CHECK_EQ_INT(tp_store_put(inner, key, &src), 0);
	free(obj);
}

/* A delta whose base claims 2 GiB: a few bytes of zstd could inflate to
 * that and fail their hash only once written. Refused before any object is
 * read to its end. */
static void test_big_claim(void)
{
	static const char top[] = "1111111111111111111111111111111111111111111111111111111111111111";
	static const char base[] = "2222222222222222222222222222222222222222222222222222222222222222";
	char out[512];
	tp_transfer *t;
	store_open();
	tp_store_manifest_base b = { .size = 2ull << 30 };
	memcpy(b.oid, base, sizeof(b.oid));
	tp_store_manifest m = { .size = MODEL_SIZE, .codec_version = 1, .depth = 1, .nbases = 1,
				.bases = &b };
	memcpy(m.oid, top, sizeof(m.oid));
	char *json = NULL, payload[512];
	CHECK_EQ_INT(tp_store_manifest_build(&m, &json), 0);
	snprintf(payload, sizeof(payload), "%s/payload", root);
	file_write(payload, "not a delta", 11);
	CHECK_EQ_INT(tp_store_object_put_delta(inner, top, MODEL_SIZE, TP_STORE_KIND_DELTA, json,
					       payload, NULL, NULL), 0);
	free(json);
	unsigned char zeros[4096] = { 0 }, frame[256];
	size_t n = ZSTD_compress(frame, sizeof(frame), zeros, sizeof(zeros), 3);
	CHECK(!ZSTD_isError(n));
	put_raw(base, TP_STORE_KIND_WHOLE_ZSTD, 2ull << 30, frame, n);
	t = transfer_new();
	snprintf(out, sizeof(out), "%s/out-claim", root);
	full_reads = 0;
	CHECK_EQ_INT(tp_transfer_download(t, top, MODEL_SIZE, out), TP_ETOOBIG);
	CHECK(strstr(tp_error_last(), "tenpak.rebuildfactor") != NULL);
	CHECK(strstr(tp_error_last(), top) != NULL);
	CHECK_EQ_INT(full_reads, 0);
	tp_transfer_free(t);
}

/* Two objects that name each other: refused while planning. */
static void test_cycle(void)
{
	static const char a[] = "3333333333333333333333333333333333333333333333333333333333333333";
	static const char b[] = "4444444444444444444444444444444444444444444444444444444444444444";
	char out[512], payload[512];
	tp_transfer *t;
	store_open();
	snprintf(payload, sizeof(payload), "%s/payload", root);
	file_write(payload, "x", 1);
	for (int i = 0; i < 2; i++) {
		tp_store_manifest_base base = { .size = MODEL_SIZE };
		memcpy(base.oid, i ? a : b, sizeof(base.oid));
		tp_store_manifest m = { .size = MODEL_SIZE, .codec_version = 1, .depth = 1,
					.nbases = 1, .bases = &base };
		memcpy(m.oid, i ? b : a, sizeof(m.oid));
		char *json = NULL;
		CHECK_EQ_INT(tp_store_manifest_build(&m, &json), 0);
		CHECK_EQ_INT(tp_store_object_put_delta(inner, m.oid, MODEL_SIZE, TP_STORE_KIND_DELTA,
						       json, payload, NULL, NULL), 0);
		free(json);
	}
	t = transfer_new();
	snprintf(out, sizeof(out), "%s/out-cycle", root);
	full_reads = 0;
	CHECK(tp_transfer_download(t, a, MODEL_SIZE, out) == TP_ECORRUPT);
	CHECK(strstr(tp_error_last(), "leads back") != NULL);
	CHECK_EQ_INT(full_reads, 0);
	tp_transfer_free(t);
}

/* A whole object writes no more than its size, whatever its frame holds. */
static void test_whole_stops_at_size(void)
{
	static const char oid[] = "5555555555555555555555555555555555555555555555555555555555555555";
	static unsigned char zeros[4 << 20];
	size_t cap = ZSTD_compressBound(sizeof(zeros));
	unsigned char *frame = malloc(cap);
	char out[512];
	size_t n = ZSTD_compress(frame, cap, zeros, sizeof(zeros), 3);
	CHECK(!ZSTD_isError(n));
	store_open();
	put_raw(oid, TP_STORE_KIND_WHOLE_ZSTD, 100, frame, n);
	snprintf(out, sizeof(out), "%s/out-whole", root);
	int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	CHECK_EQ_INT(tp_store_object_get_fd(&store, oid, 100, fd, NULL, NULL), TP_ECORRUPT);
	close(fd);
	struct stat st;
	CHECK(stat(out, &st) == 0 && st.st_size <= 100);
	free(frame);
}

/* ---- plans and uploads ----------------------------------------------------- */

#define VALUES 16384 /* F32 values of a test model: 64 KiB */

/* A model file: one F32 tensor of random values from seed, with its first
 * `changes` values altered (a fine-tune of the model with no changes). */
typedef struct model {
	char path[512];
	char oid[TP_OID_HEXLEN + 1];
	uint64_t size;
	unsigned char *bytes;
} model;

static model *model_new(const char *name, uint64_t seed, unsigned changes)
{
	char head[128];
	model *m = calloc(1, sizeof(*m));
	int hn = snprintf(head, sizeof(head),
			  "{\"w\":{\"dtype\":\"F32\",\"shape\":[%d],\"data_offsets\":[0,%d]}}",
			  VALUES, 4 * VALUES);
	size_t hlen = ((size_t)hn + 7) / 8 * 8; /* padded with spaces */
	m->size = 8 + hlen + 4 * VALUES;
	m->bytes = malloc(m->size);
	memset(m->bytes, ' ', 8 + hlen);
	for (int i = 0; i < 8; i++)
		m->bytes[i] = (unsigned char)(hlen >> (8 * i));
	memcpy(m->bytes + 8, head, (size_t)hn);
	uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
	for (size_t i = 8 + hlen; i < m->size; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		m->bytes[i] = (unsigned char)x;
	}
	for (unsigned k = 0; k < changes && k < VALUES; k++)
		m->bytes[8 + hlen + 4 * k] ^= (unsigned char)(k + 1);
	snprintf(m->path, sizeof(m->path), "%s/%s.safetensors", root, name);
	file_write(m->path, m->bytes, m->size);
	tp_sha256_hex_of(m->bytes, m->size, m->oid);
	return m;
}

static void model_free(model *m)
{
	if (m)
		free(m->bytes);
	free(m);
}

/* A lineage built by hand: what tp_lineage_find would return. */
typedef struct lineage_fixture {
	tp_lineage l;
	tp_lineage_candidate c[8];
	tp_lineage_file f[8];
} lineage_fixture;

/* Add a candidate with one file, m: its bytes at m->path when local, else
 * known by oid only (as "oid:<sha256>": size unknown). */
static void candidate_add(lineage_fixture *x, tp_lineage_source source, const model *m,
			  bool local)
{
	size_t i = x->l.ncandidates++;
	tp_lineage_file *f = &x->f[i];
	f->path = (char *)(local ? m->path : "oid:");
	memcpy(f->oid, m->oid, sizeof(f->oid));
	f->size = local ? m->size : TP_LINEAGE_SIZE_UNKNOWN;
	f->local = local ? (char *)m->path : NULL;
	x->c[i] = (tp_lineage_candidate){ .source = source, .evidence = (char *)"test",
					  .nfiles = 1, .files = f };
	x->l.candidates = x->c;
}

/* Write git config: this test's ~/.gitconfig. */
static void gitconfig(const char *text)
{
	char path[512];
	snprintf(path, sizeof(path), "%s/.gitconfig", getenv("HOME"));
	FILE *f = fopen(path, "w");
	CHECK(f != NULL);
	if (f) {
		fputs(text, f);
		fclose(f);
	}
}

/* Plan target with lineage l (may be NULL), store what the plan says, and
 * check that the store holds it; the plan's choice is returned. */
static long plan_and_store(tp_transfer *t, const model *target, const tp_lineage *l,
			   tp_transfer_plan **plan_out)
{
	tp_transfer_plan *p = NULL;
	tp_transfer_result r = { 0 };
	long choice = -2;
	CHECK_EQ_INT(tp_transfer_plan_upload(t, target->path, l, &p), 0);
	if (!p)
		return choice;
	choice = p->choice;
	CHECK_EQ_INT(tp_transfer_plan_execute(t, p, target->oid, target->size, target->path, &r), 0);
	CHECK_EQ_INT(r.kind, choice >= 0 ? TP_STORE_KIND_DELTA : TP_STORE_KIND_WHOLE_CODEC);
	/* What the store holds is what the plan chose. */
	tp_store_object_info info;
	tp_store_manifest *m = NULL;
	char *text = NULL;
	CHECK_EQ_INT(tp_store_object_manifest(&store, target->oid, &info, &text), 0);
	CHECK(text && tp_store_manifest_parse(&m, text, strlen(text)) == 0);
	if (m) {
		CHECK_EQ_INT(m->nbases, choice >= 0 ? 1 : 0);
		if (choice >= 0 && m->nbases == 1)
			CHECK_STR(m->bases[0].oid, l->candidates[choice].files[0].oid);
	}
	tp_store_manifest_free(m);
	free(text);
	if (plan_out)
		*plan_out = p;
	else
		tp_transfer_plan_free(p);
	return choice;
}

/* Download oid with a transfer that takes nothing from this machine, and
 * compare with want. */
static void check_rebuild(const model *want)
{
	char out[512], tmp[512];
	tp_transfer *t = NULL;
	snprintf(tmp, sizeof(tmp), "%s/tmp", root);
	snprintf(out, sizeof(out), "%s/out-rebuilt", root);
	tp_transfer_opts opts = { .tmp_dir = tmp, .threads = 1, .store_only = true };
	CHECK_EQ_INT(tp_transfer_new(&t, &store, NULL, &opts), 0);
	CHECK_EQ_INT(tp_transfer_download(t, want->oid, want->size, out), 0);
	CHECK(same_bytes(want->path, out));
	tp_transfer_free(t);
}

/* Of an unrelated model and the base, the base is chosen; the upload then
 * stores the base first and the delta against it, and both rebuild. */
static void test_plan_choice(void)
{
	model *base = model_new("c-base", 1, 0), *ft = model_new("c-ft", 1, 50),
	      *other = model_new("c-other", 2, 0);
	lineage_fixture x = { 0 };
	tp_transfer_plan *p = NULL;
	store_open();
	tp_transfer *t = transfer_new();
	candidate_add(&x, TP_LINEAGE_SOURCE_METADATA, other, true);
	candidate_add(&x, TP_LINEAGE_SOURCE_HISTORY, base, true);
	CHECK_EQ_INT(plan_and_store(t, ft, &x.l, &p), 1);
	CHECK(p != NULL);
	if (p) {
		CHECK_EQ_INT(p->ncandidates, 2);
		CHECK_EQ_INT(p->candidates[0].verdict, TP_TRANSFER_VERDICT_ESTIMATED);
		CHECK_EQ_INT(p->candidates[1].verdict, TP_TRANSFER_VERDICT_ESTIMATED);
		CHECK(p->candidates[0].why == NULL && p->candidates[1].why == NULL);
		CHECK(p->candidates[1].estimate < p->candidates[0].estimate);
		CHECK(p->candidates[1].estimate < p->whole / 10);
		CHECK_EQ_INT(p->candidates[1].depth, 1);
		CHECK(strstr(p->reason, "whole: estimated") == p->reason);
		CHECK(strstr(p->reason, "; history ") != NULL);
	}
	tp_transfer_plan_free(p);
	/* The base was not in the store: it went in first, whole. */
	tp_transfer_object o;
	CHECK_EQ_INT(tp_transfer_inspect(t, base->oid, &o), 0);
	CHECK_EQ_INT(o.kind, TP_STORE_KIND_WHOLE_CODEC);
	CHECK_EQ_INT(tp_transfer_inspect(t, ft->oid, &o), 0);
	CHECK_EQ_INT(o.kind, TP_STORE_KIND_DELTA);
	CHECK_EQ_INT(o.depth, 1);
	CHECK_EQ_INT(o.signature, TP_PROVENANCE_SIG_UNSIGNED);
	full_reads = 0;
	check_rebuild(ft);
	CHECK_EQ_INT(full_reads, 2);
	/* Already stored: an upload is skipped. */
	tp_transfer_result r = { 0 };
	CHECK_EQ_INT(tp_transfer_upload(t, ft->oid, ft->size, ft->path, &r), 0);
	CHECK(r.skipped);
	tp_transfer_free(t);
	model_free(base);
	model_free(ft);
	model_free(other);
}

/* A candidate whose delta would make a chain longer than tenpak.maxchain
 * is not estimated; another one still can be. */
static void test_plan_maxchain(void)
{
	model *m[5];
	tp_transfer_plan *p = NULL;
	tp_transfer *t = NULL;
	char name[32];
	for (unsigned k = 0; k < 5; k++) {
		snprintf(name, sizeof(name), "chain-%u", k);
		m[k] = model_new(name, 3, 10 * k);
	}
	store_open();
	gitconfig("[tenpak]\n\tmaxchain = x\n");
	CHECK_EQ_INT(tp_transfer_new(&t, &store, NULL, NULL), TP_ECONFIG);
	CHECK(strstr(tp_error_last(), "tenpak.maxchain must be a number from 0 to 64") != NULL);
	CHECK(t == NULL);
	gitconfig("[tenpak]\n\tmaxchain = 2\n");
	t = transfer_new();
	/* 0 whole, 1 against 0 (depth 1), 2 against 1 (depth 2). */
	CHECK_EQ_INT(plan_and_store(t, m[0], NULL, NULL), -1);
	for (unsigned k = 1; k < 3; k++) {
		lineage_fixture x = { 0 };
		candidate_add(&x, TP_LINEAGE_SOURCE_HISTORY, m[k - 1], true);
		CHECK_EQ_INT(plan_and_store(t, m[k], &x.l, NULL), 0);
	}
	/* 3 against 2 would be depth 3: only 0 is left. */
	lineage_fixture x = { 0 };
	candidate_add(&x, TP_LINEAGE_SOURCE_HISTORY, m[2], true);
	candidate_add(&x, TP_LINEAGE_SOURCE_METADATA, m[0], true);
	CHECK_EQ_INT(plan_and_store(t, m[3], &x.l, &p), 1);
	if (p) {
		CHECK_EQ_INT(p->candidates[0].verdict, TP_TRANSFER_VERDICT_TOO_DEEP);
		CHECK_EQ_INT(p->candidates[0].depth, 3);
		CHECK_STR(p->candidates[0].why, "chain depth 3 over tenpak.maxchain 2");
		CHECK(strstr(p->reason, "chain depth 3 over tenpak.maxchain 2") != NULL);
		CHECK_EQ_INT(p->candidates[1].verdict, TP_TRANSFER_VERDICT_ESTIMATED);
		CHECK_EQ_INT(p->candidates[1].depth, 1);
	}
	tp_transfer_plan_free(p);
	/* 4 against 2 alone: whole. */
	lineage_fixture y = { 0 };
	candidate_add(&y, TP_LINEAGE_SOURCE_HISTORY, m[2], true);
	CHECK_EQ_INT(plan_and_store(t, m[4], &y.l, NULL), -1);
	/* The chain rebuilds from the store alone. */
	full_reads = 0;
	check_rebuild(m[2]);
	CHECK_EQ_INT(full_reads, 3);
	gitconfig("");
	tp_transfer_free(t);
	for (unsigned k = 0; k < 5; k++)
		model_free(m[k]);
}

/* Whole when nothing beats it: no candidate, an unrelated one, one whose
 * bytes are nowhere, one whose local copy is not what its oid says. The
 * first TP_TRANSFER_CANDIDATES_MAX are estimated, the rest skipped. */
static void test_plan_whole(void)
{
	model *base = model_new("w-base", 5, 0), *ft = model_new("w-ft", 5, 30),
	      *other = model_new("w-other", 6, 0), *elsewhere = model_new("w-elsewhere", 7, 0);
	tp_transfer_plan *p = NULL;
	store_open();
	tp_transfer *t = transfer_new();
	CHECK_EQ_INT(tp_transfer_plan_upload(t, ft->path, NULL, &p), 0);
	if (p) {
		CHECK_EQ_INT(p->ncandidates, 0);
		CHECK_EQ_INT(p->choice, -1);
		CHECK(p->whole == TP_TRANSFER_UNESTIMATED);
		CHECK_STR(p->reason, "whole: no base candidate");
	}
	tp_transfer_plan_free(p);
	/* A local copy that does not hash to its oid: the base's bytes under
	 * the other model's oid. */
	model impostor = *other;
	memcpy(impostor.path, base->path, sizeof(impostor.path));
	lineage_fixture x = { 0 };
	candidate_add(&x, TP_LINEAGE_SOURCE_OVERRIDE, other, true);
	candidate_add(&x, TP_LINEAGE_SOURCE_METADATA, elsewhere, false);
	candidate_add(&x, TP_LINEAGE_SOURCE_METADATA, &impostor, true);
	candidate_add(&x, TP_LINEAGE_SOURCE_METADATA, other, true);
	candidate_add(&x, TP_LINEAGE_SOURCE_HISTORY, base, true); /* the fifth */
	CHECK_EQ_INT(plan_and_store(t, ft, &x.l, &p), -1);
	if (p) {
		CHECK_EQ_INT(p->candidates[0].verdict, TP_TRANSFER_VERDICT_ESTIMATED);
		CHECK(p->candidates[0].estimate > p->whole - p->whole / 100);
		CHECK_EQ_INT(p->candidates[1].verdict, TP_TRANSFER_VERDICT_UNAVAILABLE);
		CHECK_STR(p->candidates[1].why, "bytes not on this machine or in the store");
		CHECK_EQ_INT(p->candidates[2].verdict, TP_TRANSFER_VERDICT_UNAVAILABLE);
		CHECK_STR(p->candidates[2].why, "bytes not on this machine or in the store");
		CHECK_EQ_INT(p->candidates[4].verdict, TP_TRANSFER_VERDICT_SKIPPED);
		CHECK_STR(p->candidates[4].why, "only the first 4 candidates are estimated");
		CHECK(strstr(p->reason, elsewhere->oid) != NULL);
	}
	tp_transfer_plan_free(p);
	/* Nothing of the bases was stored. */
	tp_store_object_info info;
	CHECK_EQ_INT(tp_store_object_stat(&store, other->oid, &info), TP_ENOTFOUND);
	CHECK_EQ_INT(tp_store_object_stat(&store, base->oid, &info), TP_ENOTFOUND);
	check_rebuild(ft);
	tp_transfer_free(t);
	model_free(base);
	model_free(ft);
	model_free(other);
	model_free(elsewhere);
}

/* A base known by oid only, its bytes only in the store: rebuilt from the
 * store to estimate, and the delta stored against it. */
static void test_plan_store_base(void)
{
	model *base = model_new("s-base", 8, 0), *ft = model_new("s-ft", 8, 40);
	store_open();
	tp_transfer *t = transfer_new();
	CHECK_EQ_INT(plan_and_store(t, base, NULL, NULL), -1);
	unlink(base->path);
	lineage_fixture x = { 0 };
	candidate_add(&x, TP_LINEAGE_SOURCE_OVERRIDE, base, false);
	full_reads = 0;
	CHECK_EQ_INT(plan_and_store(t, ft, &x.l, NULL), 0);
	CHECK_EQ_INT(full_reads, 1);
	tp_transfer_free(t);
	model_free(base);
	model_free(ft);
}

/* Bases that are not what a delta names are refused: other bytes under the
 * base's oid, a base of another size; and a plan does not build on them. */
static void test_wrong_base(void)
{
	model *base = model_new("b-base", 9, 0), *ft = model_new("b-ft", 9, 20),
	      *other = model_new("b-other", 10, 0), *ft2 = model_new("b-ft2", 9, 25);
	char out[512];
	snprintf(out, sizeof(out), "%s/out-wrong", root);
	store_open();
	tp_transfer *t = transfer_new();
	lineage_fixture x = { 0 };
	candidate_add(&x, TP_LINEAGE_SOURCE_HISTORY, base, true);
	CHECK_EQ_INT(plan_and_store(t, ft, &x.l, NULL), 0);
	tp_transfer_free(t);
	/* The store's base replaced by other bytes of the same size. */
	size_t cap = ZSTD_compressBound(other->size);
	unsigned char *frame = malloc(cap);
	size_t n = ZSTD_compress(frame, cap, other->bytes, other->size, 3);
	CHECK(!ZSTD_isError(n));
	put_raw(base->oid, TP_STORE_KIND_WHOLE_ZSTD, base->size, frame, n);
	free(frame);
	tp_transfer_opts opts = { .tmp_dir = root, .threads = 1, .store_only = true };
	CHECK_EQ_INT(tp_transfer_new(&t, &store, NULL, &opts), 0);
	CHECK_EQ_INT(tp_transfer_download(t, ft->oid, ft->size, out), TP_ECORRUPT);
	CHECK(strstr(tp_error_last(), base->oid) != NULL);
	/* A plan that names that base from the store: unavailable, with why. */
	lineage_fixture y = { 0 };
	candidate_add(&y, TP_LINEAGE_SOURCE_OVERRIDE, base, false);
	tp_transfer_plan *p = NULL;
	CHECK_EQ_INT(plan_and_store(t, ft2, &y.l, &p), -1);
	if (p) {
		CHECK_EQ_INT(p->candidates[0].verdict, TP_TRANSFER_VERDICT_UNAVAILABLE);
		CHECK(strstr(p->candidates[0].why, base->oid) != NULL);
	}
	tp_transfer_plan_free(p);
	/* A delta whose manifest gives its base another size. */
	tp_store_manifest_base b = { .size = base->size + 1 };
	memcpy(b.oid, base->oid, sizeof(b.oid));
	tp_store_manifest m = { .size = ft->size, .codec_version = TP_DELTA_VERSION, .depth = 1,
				.nbases = 1, .bases = &b };
	memcpy(m.oid, ft->oid, sizeof(m.oid));
	char *json = NULL, payload[512];
	CHECK_EQ_INT(tp_store_manifest_build(&m, &json), 0);
	snprintf(payload, sizeof(payload), "%s/payload", root);
	file_write(payload, "x", 1);
	CHECK_EQ_INT(tp_store_object_put_delta(inner, ft->oid, ft->size, TP_STORE_KIND_DELTA, json,
					       payload, NULL, NULL), 0);
	free(json);
	CHECK_EQ_INT(tp_transfer_download(t, ft->oid, ft->size, out), TP_ECORRUPT);
	CHECK(strstr(tp_error_last(), "expected") != NULL);
	tp_transfer_free(t);
	model_free(base);
	model_free(ft);
	model_free(other);
	model_free(ft2);
}

/* ---- provenance ------------------------------------------------------------- */

static void key_new(const char *name, char path[512], char pub[TP_SIGN_PUBLIC_TEXT_MAX])
{
	tp_sign_key *k = NULL;
	snprintf(path, 512, "%s/%s", root, name);
	CHECK_EQ_INT(tp_sign_key_generate(&k), 0);
	CHECK_EQ_INT(tp_sign_key_save(k, path), 0);
	tp_sign_key_public(k, pub);
	tp_sign_key_free(k);
}

/* Set git config to text, then download oid: its return code. */
static int download_under(const char *config, const model *m)
{
	char out[512];
	tp_transfer *t = NULL;
	snprintf(out, sizeof(out), "%s/out-prov", root);
	gitconfig(config);
	tp_transfer_opts opts = { .tmp_dir = root, .threads = 1, .store_only = true };
	int rc = tp_transfer_new(&t, &store, NULL, &opts);
	if (rc == 0)
		rc = tp_transfer_download(t, m->oid, m->size, out);
	tp_transfer_free(t);
	return rc;
}

static void test_provenance(void)
{
	char key1[512], key2[512], pub1[TP_SIGN_PUBLIC_TEXT_MAX], pub2[TP_SIGN_PUBLIC_TEXT_MAX];
	char cfg[2048];
	model *signed_m = model_new("p-signed", 11, 0), *plain = model_new("p-plain", 12, 0);
	char blob[512], blob_oid[TP_OID_HEXLEN + 1];
	tp_transfer_result r;
	tp_provenance *prov = NULL;
	key_new("key1", key1, pub1);
	key_new("key2", key2, pub2);
	store_open();
	/* Unsigned: a plain model, and a file that is not safetensors. */
	gitconfig("");
	tp_transfer *t = transfer_new();
	CHECK_EQ_INT(plan_and_store(t, plain, NULL, NULL), -1);
	snprintf(blob, sizeof(blob), "%s/notes.bin", root);
	file_write(blob, "not a model\n", 12);
	tp_sha256_hex_of("not a model\n", 12, blob_oid);
	CHECK_EQ_INT(tp_transfer_upload(t, blob_oid, 12, blob, &r), 0);
	CHECK_EQ_INT(r.kind, TP_STORE_KIND_WHOLE_ZSTD);
	tp_transfer_free(t);
	/* Signed by key1: models, and other files too (by the codec). */
	snprintf(cfg, sizeof(cfg), "[tenpak]\n\tsigningkey = %s\n", key1);
	gitconfig(cfg);
	t = transfer_new();
	CHECK_EQ_INT(plan_and_store(t, signed_m, NULL, NULL), -1);
	char blob2[512], blob2_oid[TP_OID_HEXLEN + 1];
	snprintf(blob2, sizeof(blob2), "%s/notes2.bin", root);
	file_write(blob2, "signed notes\n", 13);
	tp_sha256_hex_of("signed notes\n", 13, blob2_oid);
	CHECK_EQ_INT(tp_transfer_upload(t, blob2_oid, 13, blob2, &r), 0);
	CHECK_EQ_INT(r.kind, TP_STORE_KIND_WHOLE_CODEC);
	tp_transfer_object o;
	CHECK_EQ_INT(tp_transfer_inspect(t, blob2_oid, &o), 0);
	CHECK_EQ_INT(o.signature, TP_PROVENANCE_SIG_VALID);
	CHECK_EQ_INT(tp_transfer_inspect(t, signed_m->oid, &o), 0);
	CHECK_EQ_INT(o.signature, TP_PROVENANCE_SIG_VALID);
	CHECK_STR(o.signer, pub1);
	CHECK_EQ_INT(tp_transfer_inspect(t, plain->oid, &o), 0);
	CHECK_EQ_INT(o.signature, TP_PROVENANCE_SIG_UNSIGNED);
	CHECK_STR(tp_provenance_sig_name(o.signature), "unsigned");
	tp_transfer_free(t);
	/* tenpak.verify = if-signed (the default): both download. */
	CHECK_EQ_INT(download_under("", signed_m), 0);
	CHECK_EQ_INT(download_under("", plain), 0);
	/* Trusted, untrusted, and untrusted with verify off. */
	snprintf(cfg, sizeof(cfg), "[tenpak]\n\ttrustedkeys = %s, %s\n", pub2, pub1);
	CHECK_EQ_INT(download_under(cfg, signed_m), 0);
	t = transfer_new();
	CHECK_EQ_INT(tp_transfer_inspect(t, signed_m->oid, &o), 0);
	CHECK_EQ_INT(o.signature, TP_PROVENANCE_SIG_TRUSTED);
	tp_transfer_free(t);
	snprintf(cfg, sizeof(cfg), "[tenpak]\n\ttrustedkeys = %s\n", pub2);
	CHECK_EQ_INT(download_under(cfg, signed_m), TP_EAUTH);
	CHECK(strstr(tp_error_last(), "not in tenpak.trustedkeys") != NULL);
	CHECK(strstr(tp_error_last(), signed_m->oid) != NULL);
	CHECK_EQ_INT(download_under(cfg, plain), 0);
	snprintf(cfg, sizeof(cfg), "[tenpak]\n\ttrustedkeys = %s\n\tverify = off\n", pub2);
	CHECK_EQ_INT(download_under(cfg, signed_m), 0);
	/* Required: only what a trusted key signed. */
	CHECK_EQ_INT(download_under("[tenpak]\n\tverify = required\n", signed_m), TP_ECONFIG);
	CHECK(strstr(tp_error_last(), "lists no key") != NULL);
	snprintf(cfg, sizeof(cfg), "[tenpak]\n\ttrustedkeys = %s\n\tverify = required\n", pub1);
	CHECK_EQ_INT(download_under(cfg, signed_m), 0);
	CHECK_EQ_INT(download_under(cfg, plain), TP_EAUTH);
	CHECK(strstr(tp_error_last(), "unsigned and tenpak.verify is required") != NULL);
	model whole = { .size = 12 };
	memcpy(whole.oid, blob_oid, sizeof(whole.oid));
	CHECK_EQ_INT(download_under(cfg, &whole), TP_EAUTH);
	CHECK(strstr(tp_error_last(), "stored whole (zstd) without a manifest") != NULL);
	CHECK_EQ_INT(download_under("[tenpak]\n\tverify = sometimes\n", plain), TP_ECONFIG);
	/* A manifest changed after signing does not verify. */
	gitconfig("");
	CHECK_EQ_INT(tp_provenance_new(&prov, NULL), 0);
	CHECK(prov && !tp_provenance_signs(prov));
	tp_store_object_info info;
	tp_store_manifest *m = NULL;
	char *text = NULL;
	CHECK_EQ_INT(tp_store_object_manifest(&store, signed_m->oid, &info, &text), 0);
	CHECK(text && tp_store_manifest_parse(&m, text, strlen(text)) == 0);
	if (prov && m) {
		CHECK_EQ_INT(tp_provenance_manifest_status(prov, m), TP_PROVENANCE_SIG_VALID);
		CHECK_EQ_INT(tp_provenance_manifest_check(prov, m, signed_m->oid), 0);
		m->depth = 1;
		CHECK_EQ_INT(tp_provenance_manifest_status(prov, m), TP_PROVENANCE_SIG_BAD);
		CHECK_EQ_INT(tp_provenance_manifest_check(prov, m, signed_m->oid), TP_EAUTH);
		CHECK(strstr(tp_error_last(), "does not verify") != NULL);
	}
	tp_store_manifest_free(m);
	free(text);
	tp_provenance_free(prov);
	tp_provenance_free(NULL);
	tp_transfer_free(NULL);
	model_free(signed_m);
	model_free(plain);
}

/* A progress callback that says stop (git-lfs went away) ends an upload
 * and a download with its code, mid-codec, and stores nothing. */
static int calls;
static int stop_now(void *ctx, uint64_t done, uint64_t total)
{
	(void)ctx;
	(void)done;
	(void)total;
	calls++;
	return tp_error_set(TP_EIO, "writing to git-lfs: broken pipe");
}

static void test_progress_stops(void)
{
	model *base = model_new("p-base", 11, 0), *ft = model_new("p-ft", 11, 30);
	char tmp[512], out[512];
	snprintf(tmp, sizeof(tmp), "%s/tmp", root);
	snprintf(out, sizeof(out), "%s/out-stopped", root);
	store_open();
	tp_transfer *t = transfer_new();
	CHECK_EQ_INT(plan_and_store(t, base, NULL, NULL), -1);
	tp_transfer_free(t);
	t = NULL;
	tp_transfer_opts opts = { .tmp_dir = tmp, .threads = 1, .progress = stop_now };
	CHECK_EQ_INT(tp_transfer_new(&t, &store, NULL, &opts), 0);
	lineage_fixture x = { 0 };
	candidate_add(&x, TP_LINEAGE_SOURCE_HISTORY, base, true);
	tp_transfer_plan *p = NULL;
	tp_transfer_result r = { 0 };
	CHECK_EQ_INT(tp_transfer_plan_upload(t, ft->path, &x.l, &p), 0);
	calls = 0;
	if (p)
		CHECK_EQ_INT(tp_transfer_plan_execute(t, p, ft->oid, ft->size, ft->path, &r), TP_EIO);
	CHECK_EQ_INT(calls, 1);
	CHECK(strstr(tp_error_last(), "broken pipe") != NULL);
	tp_transfer_plan_free(p);
	tp_store_object_info info;
	CHECK_EQ_INT(tp_store_object_stat(&store, ft->oid, &info), TP_ENOTFOUND);
	/* The base is stored: its download stops at the first report too. */
	calls = 0;
	CHECK_EQ_INT(tp_transfer_download(t, base->oid, base->size, out), TP_EIO);
	CHECK_EQ_INT(calls, 1);
	tp_transfer_free(t);
	model_free(base);
	model_free(ft);
}

/* A base whose file changes after it was hashed to its oid, before the
 * delta is made: nothing is stored. Decoding each frame back proves the
 * delta against the bytes read, and the target still hashes to its oid, so
 * only the check that the base is unchanged catches it. */
static void test_base_changes(void)
{
	model *base = model_new("x-base", 21, 0), *ft = model_new("x-ft", 21, 40);
	store_open();
	tp_transfer *t = transfer_new();
	CHECK_EQ_INT(plan_and_store(t, base, NULL, NULL), -1);
	lineage_fixture x = { 0 };
	candidate_add(&x, TP_LINEAGE_SOURCE_HISTORY, base, true);
	tp_transfer_plan *p = NULL;
	tp_transfer_result r = { 0 };
	CHECK_EQ_INT(tp_transfer_plan_upload(t, ft->path, &x.l, &p), 0);
	CHECK(p && p->choice == 0);
	for (uint64_t i = base->size / 2; i < base->size; i++)
		base->bytes[i] ^= 0x5a;
	file_write(base->path, base->bytes, base->size);
	if (p)
		CHECK_EQ_INT(tp_transfer_plan_execute(t, p, ft->oid, ft->size, ft->path, &r),
			     TP_ECORRUPT);
	CHECK(strstr(tp_error_last(), "changed while the delta was made") != NULL);
	tp_transfer_plan_free(p);
	tp_store_object_info info;
	CHECK_EQ_INT(tp_store_object_stat(&store, ft->oid, &info), TP_ENOTFOUND);
	tp_transfer_free(t);
	model_free(base);
	model_free(ft);
}

/* An upload leaves the hash of a local copy chosen as a base to the encode
 * pass. A copy with the base's size but other bytes: nothing made from it
 * is stored; the upload plans again without it and makes the delta against
 * the store's base, or, with the base nowhere else, stores the object
 * whole; either rebuilds. */
static void test_upload_bad_copy(void)
{
	model *base = model_new("c-base", 25, 0), *ft = model_new("c-ft", 25, 40);
	char out[512];
	snprintf(out, sizeof(out), "%s/out-bad-copy", root);
	for (int in_store = 1; in_store >= 0; in_store--) {
		store_open();
		tp_transfer *t = transfer_new();
		if (in_store)
			CHECK_EQ_INT(plan_and_store(t, base, NULL, NULL), -1);
		tp_transfer_free(t);
		t = transfer_new(); /* no verdict known */
		unsigned char *good = malloc(base->size);
		memcpy(good, base->bytes, base->size);
		base->bytes[base->size - 1] ^= 0x40;
		file_write(base->path, base->bytes, base->size);
		lineage_fixture x = { 0 };
		candidate_add(&x, TP_LINEAGE_SOURCE_HISTORY, base, true);
		tp_transfer_result r = { 0 };
		CHECK_EQ_INT(tp_transfer_upload_lineage(t, ft->oid, ft->size, ft->path, &x.l, &r), 0);
		CHECK_EQ_INT(r.kind, in_store ? TP_STORE_KIND_DELTA : TP_STORE_KIND_WHOLE_CODEC);
		CHECK_EQ_INT(r.nbases, in_store);
		tp_store_object_info info;
		CHECK_EQ_INT(tp_store_object_stat(&store, base->oid, &info),
			     in_store ? 0 : TP_ENOTFOUND);
		tp_transfer_free(t);
		/* The rebuild reads the store only. */
		memcpy(base->bytes, good, base->size);
		free(good);
		file_write(base->path, base->bytes, base->size);
		tp_transfer_opts opts = { .tmp_dir = root, .threads = 1, .store_only = true };
		t = NULL;
		CHECK_EQ_INT(tp_transfer_new(&t, &store, NULL, &opts), 0);
		unlink(out);
		CHECK_EQ_INT(tp_transfer_download(t, ft->oid, ft->size, out), 0);
		CHECK(same_bytes(ft->path, out));
		tp_transfer_free(t);
	}
	model_free(base);
	model_free(ft);
}

/* A download takes a base from the Hugging Face cache without hashing it
 * first: the object rebuilt from it is hashed against its oid anyway, so
 * the base is read once. A copy with other bytes fails that check; the
 * rebuild then hashes its local copies, refuses the bad one and takes the
 * base from the store. The output file's old, longer contents go. */
static bool log_has(const char *path, const char *what)
{
	tp_buf b = TP_BUF_INIT(1 << 20);
	bool has = tp_fs_read_regular(path, &b) == 0 && b.ptr && strstr(b.ptr, what) != NULL;
	tp_buf_free(&b);
	return has;
}

static void test_download_local_copy(void)
{
	model *base = model_new("l-base", 29, 0), *ft = model_new("l-ft", 29, 40);
	char out[512], blob[640], dir[512], log[512];
	snprintf(out, sizeof(out), "%s/out-local", root);
	snprintf(dir, sizeof(dir), "%s/hf/models--acme--l-base/blobs", root);
	snprintf(blob, sizeof(blob), "%s/%s", dir, base->oid);
	snprintf(log, sizeof(log), "%s/local.log", root);
	store_open();
	tp_transfer *t = transfer_new();
	CHECK_EQ_INT(plan_and_store(t, base, NULL, NULL), -1);
	lineage_fixture x = { 0 };
	candidate_add(&x, TP_LINEAGE_SOURCE_HISTORY, base, true);
	CHECK_EQ_INT(plan_and_store(t, ft, &x.l, NULL), 0);
	tp_transfer_free(t);
	CHECK_EQ_INT(tp_fs_mkdirs(dir), 0);
	file_write(blob, base->bytes, base->size);
	tp_log_set_level(TP_LOG_TRACE);
	CHECK_EQ_INT(tp_log_open_file(log), 0);
	for (int bad = 0; bad <= 1; bad++) {
		unsigned char *junk = malloc(ft->size + 4096);
		memset(junk, 0xee, ft->size + 4096);
		file_write(out, junk, ft->size + 4096);
		free(junk);
		if (bad) {
			base->bytes[base->size / 2] ^= 0x40;
			file_write(blob, base->bytes, base->size);
			base->bytes[base->size / 2] ^= 0x40;
		}
		t = transfer_new(); /* no verdict known */
		full_reads = 0;
		CHECK_EQ_INT(tp_transfer_download(t, ft->oid, ft->size, out), 0);
		CHECK(same_bytes(ft->path, out));
		/* ft's payload; when bad, again, and the base from the store. */
		CHECK_EQ_INT(full_reads, bad ? 3 : 1);
		tp_transfer_free(t);
		if (!bad) {
			CHECK(log_has(log, "checked by what is rebuilt from it"));
			CHECK(!log_has(log, "hashed "));
		}
	}
	char want[800];
	snprintf(want, sizeof(want), "not using %s for object %s: its bytes hash to", blob,
		 base->oid);
	CHECK(log_has(log, "hashing the local copies it used and rebuilding again"));
	CHECK(log_has(log, want));
	tp_log_set_level(TP_LOG_WARN);
	unlink(blob);
	model_free(base);
	model_free(ft);
}

/* A base replaced while the encode pass reads and hashes it: nothing is
 * stored. The base is in the store and its local copy was never hashed,
 * so only the pass's own checks stand between it and the store. */
static const model *replace_me;
static int replace_base(void *ctx, uint64_t done, uint64_t total)
{
	(void)ctx;
	(void)done;
	(void)total;
	if (!replace_me)
		return 0;
	/* A new file renamed over it: a new identity, whatever the clock. */
	char tmpname[600];
	snprintf(tmpname, sizeof(tmpname), "%s.new", replace_me->path);
	unsigned char *b = malloc(replace_me->size);
	memcpy(b, replace_me->bytes, replace_me->size);
	b[replace_me->size / 2] ^= 1;
	file_write(tmpname, b, replace_me->size);
	free(b);
	CHECK_EQ_INT(rename(tmpname, replace_me->path), 0);
	replace_me = NULL;
	return 0;
}

static void test_upload_base_changes(void)
{
	model *base = model_new("y-base", 27, 0), *ft = model_new("y-ft", 27, 40);
	char tmp[512];
	snprintf(tmp, sizeof(tmp), "%s/tmp", root);
	store_open();
	tp_transfer *t = transfer_new();
	CHECK_EQ_INT(plan_and_store(t, base, NULL, NULL), -1);
	tp_transfer_free(t);
	t = NULL;
	tp_transfer_opts opts = { .tmp_dir = tmp, .threads = 1, .progress = replace_base };
	CHECK_EQ_INT(tp_transfer_new(&t, &store, NULL, &opts), 0);
	lineage_fixture x = { 0 };
	candidate_add(&x, TP_LINEAGE_SOURCE_HISTORY, base, true);
	tp_transfer_result r = { 0 };
	replace_me = base;
	CHECK_EQ_INT(tp_transfer_upload_lineage(t, ft->oid, ft->size, ft->path, &x.l, &r),
		     TP_ECORRUPT);
	CHECK(replace_me == NULL); /* replaced during the pass */
	CHECK(strstr(tp_error_last(), "changed while the delta was made") != NULL);
	tp_store_object_info info;
	CHECK_EQ_INT(tp_store_object_stat(&store, ft->oid, &info), TP_ENOTFOUND);
	tp_transfer_free(t);
	model_free(base);
	model_free(ft);
}

int main(void)
{
	snprintf(root, sizeof(root), "%s/tp-test-transfer-XXXXXX",
		 getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	if (!tp_test_mkdtemp(root))
		return 1;
	char dir[512];
	/* No git config and no Hugging Face cache but ours. */
	snprintf(dir, sizeof(dir), "%s/home", root);
	tp_fs_mkdirs(dir);
	setenv("HOME", dir, 1);
	setenv("XDG_CONFIG_HOME", dir, 1);
	setenv("GIT_CONFIG_NOSYSTEM", "1", 1);
	snprintf(dir, sizeof(dir), "%s/hf", root);
	setenv("HF_HUB_CACHE", dir, 1);
	/* Following every name takes hours: fail instead of hanging. */
	alarm(120);
	TP_TEST_RUN(test_doubling);
	TP_TEST_RUN(test_too_many);
	TP_TEST_RUN(test_big_claim);
	TP_TEST_RUN(test_cycle);
	TP_TEST_RUN(test_whole_stops_at_size);
	TP_TEST_RUN(test_plan_choice);
	TP_TEST_RUN(test_plan_maxchain);
	TP_TEST_RUN(test_plan_whole);
	TP_TEST_RUN(test_plan_store_base);
	TP_TEST_RUN(test_wrong_base);
	TP_TEST_RUN(test_provenance);
	TP_TEST_RUN(test_progress_stops);
	TP_TEST_RUN(test_base_changes);
	TP_TEST_RUN(test_upload_bad_copy);
	TP_TEST_RUN(test_upload_base_changes);
	TP_TEST_RUN(test_download_local_copy);
	tp_store_free(inner);
	int rc = TP_TEST_RESULT();
	if (rc == 0)
		tp_test_rmtree(root);
	return rc;
}
