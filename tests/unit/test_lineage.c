/*
 * Lineage reads a base's model.safetensors.index.json with delta's one
 * index parser: a hostile index (a name that climbs out of the directory, a
 * value that is not a string, more shards than the cap) names no model,
 * from a git tree and from the Hugging Face cache alike, while duplicates
 * still collapse. Real parts: a libgit2 repository on disk and a cache
 * directory laid out as huggingface_hub writes it.
 */
#define _GNU_SOURCE
#include <ftw.h>
#include <git2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lineage_internal.h"
#include "tp_delta.h"
#include "tp_test.h"

#define FNAME "model.safetensors"
#define OID "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
#define SIZE 7

static char tmp[] = "/tmp/tp-lineage-test-XXXXXX";
static git_repository *repo;
static git_oid pointer_blob;

/* A weight_map of names s0.safetensors ... s<n-1>.safetensors, then extra
 * (JSON members, may be ""). */
static char *index_of(size_t n, const char *extra)
{
	size_t cap = 64 + n * 40 + strlen(extra);
	char *s = malloc(cap);
	size_t len = (size_t)snprintf(s, cap, "{\"weight_map\":{");
	for (size_t i = 0; i < n; i++)
		len += (size_t)snprintf(s + len, cap - len, "%s\"t%zu\":\"s%zu.safetensors\"",
					i ? "," : "", i, i);
	snprintf(s + len, cap - len, "%s%s}}", n && *extra ? "," : "", extra);
	return s;
}

/* ---- the same index in a git tree and in the HF cache ---------------- */

/* Tree: x (pointer), base/{index, s0..s<shards-1> (pointers)}. */
static int from_tree(const char *index, size_t shards, tp_lineage_candidate *c)
{
	git_treebuilder *tb = NULL, *sub = NULL;
	git_oid idx, sub_id, root_id;
	git_tree *root = NULL;
	char name[64];
	CHECK(git_blob_create_from_buffer(&idx, repo, index, strlen(index)) == 0);
	CHECK(git_treebuilder_new(&sub, repo, NULL) == 0);
	int bad = git_treebuilder_insert(NULL, sub, "model.safetensors.index.json", &idx,
					 GIT_FILEMODE_BLOB);
	for (size_t i = 0; i < shards && !bad; i++) {
		snprintf(name, sizeof(name), "s%zu.safetensors", i);
		bad = git_treebuilder_insert(NULL, sub, name, &pointer_blob, GIT_FILEMODE_BLOB);
	}
	CHECK(bad == 0);
	CHECK(git_treebuilder_write(&sub_id, sub) == 0);
	CHECK(git_treebuilder_new(&tb, repo, NULL) == 0);
	CHECK(git_treebuilder_insert(NULL, tb, "base", &sub_id, GIT_FILEMODE_TREE) == 0);
	CHECK(git_treebuilder_insert(NULL, tb, "x", &pointer_blob, GIT_FILEMODE_BLOB) == 0);
	CHECK(git_treebuilder_write(&root_id, tb) == 0);
	CHECK(git_tree_lookup(&root, repo, &root_id) == 0);
	int rc = tp_lineage_tree_resolve(root, "base", FNAME, c);
	git_tree_free(root);
	git_treebuilder_free(tb);
	git_treebuilder_free(sub);
	return rc;
}

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	CHECK(f != NULL);
	if (f) {
		fputs(text, f);
		fclose(f);
	}
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st, (void)flag, (void)ftw;
	return remove(path);
}

/* Cache: models--acme--base/blobs/<OID>, snapshots/r/{index, s* -> blob}
 * and snapshots/x -> blob. */
static int from_hf(const char *index, size_t shards, tp_lineage_candidate *c)
{
	char hub[128], path[512], snap[256];
	snprintf(hub, sizeof(hub), "%s/hub", tmp);
	snprintf(path, sizeof(path), "%s/models--acme--base/blobs", hub);
	CHECK(tp_fs_mkdirs(path) == 0);
	snprintf(path, sizeof(path), "%s/models--acme--base/blobs/" OID, hub);
	write_file(path, "1234567");
	snprintf(snap, sizeof(snap), "%s/models--acme--base/snapshots/r", hub);
	CHECK(tp_fs_mkdirs(snap) == 0);
	snprintf(path, sizeof(path), "%s/model.safetensors.index.json", snap);
	write_file(path, index);
	snprintf(path, sizeof(path), "%s/../x", snap);
	CHECK(symlink("../blobs/" OID, path) == 0);
	int bad = 0;
	for (size_t i = 0; i < shards && !bad; i++) {
		snprintf(path, sizeof(path), "%s/s%zu.safetensors", snap, i);
		bad = symlink("../../blobs/" OID, path);
	}
	CHECK(bad == 0);
	setenv("HF_HUB_CACHE", hub, 1);
	int rc = tp_lineage_hf_find("acme/base", FNAME, c);
	nftw(hub, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	return rc;
}

typedef int (*source_fn)(const char *index, size_t shards, tp_lineage_candidate *c);

/* The model an index (with shards pointers next to it) resolves to: the
 * number of files, or -1 when it names no model. */
static long resolve(source_fn from, const char *index, size_t shards)
{
	tp_lineage_candidate c = { 0 };
	int rc = from(index, shards, &c);
	long n = rc == 0 ? (long)c.nfiles : rc == TP_ENOTFOUND ? -1 : -2;
	size_t same = 0;
	for (size_t i = 0; rc == 0 && i < c.nfiles; i++)
		same += strcmp(c.files[i].oid, OID) == 0;
	CHECK(rc != 0 || same == c.nfiles);
	tp_lineage_candidate_clear(&c);
	return n;
}

/* past_cap: also an index one past the shard cap, with every shard there
 * (from a git tree only: 16385 files on disk are slow on a busy disk). */
static void check_source(source_fn from, bool past_cap)
{
	char *big;
	/* Each shard once: duplicates collapse. */
	CHECK_EQ_INT(resolve(from, "{\"weight_map\":{\"a\":\"s0.safetensors\","
			     "\"b\":\"s1.safetensors\",\"c\":\"s0.safetensors\"}}", 2), 2);
	/* A shard that is missing: no model (all or none). */
	CHECK_EQ_INT(resolve(from, "{\"weight_map\":{\"a\":\"s0.safetensors\","
			     "\"b\":\"s9.safetensors\"}}", 2), -1);
	/* Hostile: each was a model of the other shards before. */
	CHECK_EQ_INT(resolve(from, "{\"weight_map\":{\"a\":\"s0.safetensors\",\"b\":\"../x\"}}", 1),
		     -1);
	CHECK_EQ_INT(resolve(from, "{\"weight_map\":{\"a\":\"s0.safetensors\","
			     "\"b\":\"sub/s0.safetensors\"}}", 1), -1);
	CHECK_EQ_INT(resolve(from, "{\"weight_map\":{\"a\":\"s0.safetensors\",\"b\":7}}", 1), -1);
	CHECK_EQ_INT(resolve(from, "{\"weight_map\":{\"a\":\"s0.safetensors\",\"b\":null}}", 1), -1);
	CHECK_EQ_INT(resolve(from, "{\"weight_map\":{\"a\":\"s0.safetensors\",\"b\":\"..\"}}", 1),
		     -1);
	CHECK_EQ_INT(resolve(from, "{\"weight_map\":{\"a\":\"s0.safetensors\",\"b\":\"\"}}", 1), -1);
	CHECK_EQ_INT(resolve(from, "{\"weight_map\":[\"s0.safetensors\"]}", 1), -1);
	CHECK_EQ_INT(resolve(from, "{\"weight_map\":{}}", 1), -1);
	CHECK_EQ_INT(resolve(from, "not json", 1), -1);
	/* The cap is delta's (delta_safetensors checks that exactly the cap
	 * parses): one past it, no model, where the old reader took all 16385
	 * files. */
	if (past_cap) {
		big = index_of(TP_ST_INDEX_MAX_SHARDS + 1, "");
		CHECK_EQ_INT(resolve(from, big, TP_ST_INDEX_MAX_SHARDS + 1), -1);
		free(big);
	}
}

static void test_tree(void)
{
	check_source(from_tree, true);
}

static void test_hf_cache(void)
{
	check_source(from_hf, false);
}

int main(void)
{
	char path[256], pointer[256];
	if (!mkdtemp(tmp))
		return 1;
	git_libgit2_init();
	snprintf(path, sizeof(path), "%s/repo.git", tmp);
	CHECK(git_repository_init(&repo, path, 1) == 0);
	snprintf(pointer, sizeof(pointer),
		 "version https://git-lfs.github.com/spec/v1\noid sha256:%s\nsize %d\n", OID, SIZE);
	CHECK(git_blob_create_from_buffer(&pointer_blob, repo, pointer, strlen(pointer)) == 0);
	TP_TEST_RUN(test_tree);
	TP_TEST_RUN(test_hf_cache);
	git_repository_free(repo);
	git_libgit2_shutdown();
	nftw(tmp, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	return TP_TEST_RESULT();
}
