/* Downloads from hostile stores: the work and disk a rebuild may take are
 * bounded, and what exceeds the bounds is refused before anything is read
 * or written. The stores are built here, object by object, on the local
 * directory backend, seen through a wrapper that counts whole-object reads
 * (one per object rebuilt). */
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

/* A fresh store under root/name. */
static void store_open(const char *name)
{
	char path[512];
	snprintf(path, sizeof(path), "%s/%s", root, name);
	tp_store_free(inner);
	inner = NULL;
	CHECK_EQ_INT(tp_store_open(&inner, path), 0);
	full_reads = 0;
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
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	CHECK_EQ_INT(tp_fs_write_all(fd, file, sizeof(file)), 0);
	close(fd);
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
	store_open(name);
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

/* Write a raw object into the local store root/name, as a hostile writer
 * could: a header of any kind and size, then payload. */
static void put_raw(const char *name, const char *oid, int kind, uint64_t size,
		    const void *payload, size_t n)
{
	char key[TP_STORE_OBJECT_KEY_LEN + 1], path[1024];
	unsigned char h[TP_STORE_OBJECT_HEADER_LEN] = { 'T', 'P', 'K', 'O', 1, (unsigned char)kind };
	for (int i = 0; i < 8; i++)
		h[8 + i] = (unsigned char)(size >> (8 * i));
	tp_store_object_key(key, oid);
	snprintf(path, sizeof(path), "%s/%s/%s", root, name, key);
	*strrchr(path, '/') = '\0';
	CHECK_EQ_INT(tp_fs_mkdirs(path), 0);
	path[strlen(path)] = '/';
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	CHECK_EQ_INT(tp_fs_write_all(fd, h, sizeof(h)), 0);
	CHECK_EQ_INT(tp_fs_write_all(fd, payload, n), 0);
	close(fd);
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
	store_open("claims");
	tp_store_manifest_base b = { .size = 2ull << 30 };
	memcpy(b.oid, base, sizeof(b.oid));
	tp_store_manifest m = { .size = MODEL_SIZE, .codec_version = 1, .depth = 1, .nbases = 1,
				.bases = &b };
	memcpy(m.oid, top, sizeof(m.oid));
	char *json = NULL, payload[512];
	CHECK_EQ_INT(tp_store_manifest_build(&m, &json), 0);
	snprintf(payload, sizeof(payload), "%s/payload", root);
	int fd = open(payload, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	CHECK_EQ_INT(tp_fs_write_all(fd, "not a delta", 11), 0);
	close(fd);
	CHECK_EQ_INT(tp_store_object_put_delta(inner, top, MODEL_SIZE, TP_STORE_KIND_DELTA, json,
					       payload, NULL, NULL), 0);
	free(json);
	unsigned char zeros[4096] = { 0 }, frame[256];
	size_t n = ZSTD_compress(frame, sizeof(frame), zeros, sizeof(zeros), 3);
	CHECK(!ZSTD_isError(n));
	put_raw("claims", base, TP_STORE_KIND_WHOLE_ZSTD, 2ull << 30, frame, n);
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
	store_open("cycle");
	snprintf(payload, sizeof(payload), "%s/payload", root);
	int fd = open(payload, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	CHECK_EQ_INT(tp_fs_write_all(fd, "x", 1), 0);
	close(fd);
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
	store_open("claims");
	put_raw("claims", oid, TP_STORE_KIND_WHOLE_ZSTD, 100, frame, n);
	snprintf(out, sizeof(out), "%s/out-whole", root);
	int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	CHECK_EQ_INT(tp_store_object_get_fd(&store, oid, 100, fd, NULL, NULL), TP_ECORRUPT);
	close(fd);
	struct stat st;
	CHECK(stat(out, &st) == 0 && st.st_size <= 100);
	free(frame);
}

int main(void)
{
	snprintf(root, sizeof(root), "%s/tp-test-transfer-XXXXXX",
		 getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	if (!mkdtemp(root)) {
		perror("mkdtemp");
		return 1;
	}
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
	tp_store_free(inner);
	int rc = TP_TEST_RESULT();
	if (rc == 0) {
		char cmd[400];
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", root);
		if (system(cmd) != 0)
			fprintf(stderr, "could not remove %s\n", root);
	}
	return rc;
}
