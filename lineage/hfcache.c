/*
 * The local Hugging Face cache ($HF_HUB_CACHE, $HF_HOME/hub or
 * ~/.cache/huggingface/hub): a hub id's model in its snapshots, and any
 * blob by its sha256 (an LFS oid) as a local copy of an object
 * (tp_lineage_find_local, which asks the repository's LFS storage first).
 * Written by other programs, so anything there but a regular file or
 * directory is skipped, never opened.
 */
#include <dirent.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "lineage_internal.h"

static int hf_hub_dir(char **out)
{
	const char *v = getenv("HF_HUB_CACHE");
	if (v && *v)
		return (*out = strdup(v)) ? 0 : TP_ENOMEM;
	v = getenv("HF_HOME");
	if (v && *v)
		return tp_path_join(out, v, "hub");
	v = getenv("HOME");
	if (v && *v)
		return tp_path_join(out, v, ".cache/huggingface/hub");
	return TP_ENOTFOUND;
}

/* Whether path is a regular file. Anything else there but a directory (a
 * FIFO, a device) is skipped, and said so: reading it could block forever,
 * and the caches are written by other programs. */
static bool hf_regular(const char *path, struct stat *st)
{
	if (stat(path, st) != 0)
		return false;
	if (!S_ISREG(st->st_mode) && !S_ISDIR(st->st_mode))
		tp_log(TP_LOG_WARN, "skipping %s: not a regular file", path);
	return S_ISREG(st->st_mode);
}

/* A file of a snapshot: its blob is named by sha256, which is the oid. */
static int hf_file(const char *path, const char *shown, tp_lineage_file *f)
{
	char real[PATH_MAX], oid[TP_OID_HEXLEN + 1];
	struct stat st;
	if (!realpath(path, real) || !hf_regular(real, &st))
		return TP_ENOTFOUND;
	const char *base = tp_lineage_path_base(real);
	if (tp_oid_valid(base))
		memcpy(oid, base, sizeof(oid));
	else if (tp_sha256_file(real, oid, NULL) != 0)
		return TP_ENOTFOUND;
	return tp_lineage_file_set(f, shown, oid, (uint64_t)st.st_size, real);
}

static int hf_src_file(const tp_lineage_model_src *src, const char *path, tp_lineage_file *f)
{
	(void)src;
	return hf_file(path, path, f);
}

static int hf_src_text(const tp_lineage_model_src *src, const char *path, tp_buf *out)
{
	(void)src;
	struct stat st;
	if (!hf_regular(path, &st))
		return TP_ENOTFOUND;
	tp_buf_init(out, TP_LINEAGE_METADATA_MAX);
	/* Still refuses what became a FIFO since hf_regular looked. */
	int rc = tp_fs_read_regular(path, out);
	if (rc)
		tp_buf_free(out);
	return rc == TP_EINVAL || rc == TP_ENOTFOUND ? TP_ENOTFOUND : rc;
}

static int hf_snapshot(const char *snap, const char *fname, tp_lineage_candidate *c)
{
	tp_lineage_model_src src = { .file = hf_src_file, .text = hf_src_text };
	int rc = tp_lineage_model_resolve(&src, snap, fname, c);
	return rc == TP_ENOMEM ? rc : rc ? TP_ENOTFOUND : 0;
}

int tp_lineage_hf_find(const char *name, const char *fname, tp_lineage_candidate *c)
{
	char *hub = NULL, *repo_dir = NULL, *snaps = NULL;
	tp_buf b = TP_BUF_INIT(PATH_MAX);
	int rc = hf_hub_dir(&hub);
	if (rc)
		return TP_ENOTFOUND;
	if ((rc = tp_buf_adds(&b, "models--")) != 0)
		goto done;
	for (const char *p = name; *p && !rc; p++)
		rc = *p == '/' ? tp_buf_adds(&b, "--") : tp_buf_add(&b, p, 1);
	if (rc || (rc = tp_path_join(&repo_dir, hub, b.ptr)) != 0 ||
	    (rc = tp_path_join(&snaps, repo_dir, "snapshots")) != 0)
		goto done;
	rc = TP_ENOTFOUND;
	char *ref_path = NULL;
	if (tp_path_join(&ref_path, repo_dir, "refs/main") == 0) {
		/* A revision: one line of at most 127 characters. */
		tp_buf rev = TP_BUF_INIT(128);
		char *snap = NULL;
		struct stat st;
		if (hf_regular(ref_path, &st) && tp_fs_read_regular(ref_path, &rev) == 0 && rev.ptr) {
			rev.ptr[strcspn(rev.ptr, "\r\n")] = '\0';
			if (rev.ptr[0] && !strchr(rev.ptr, '/') && tp_path_join(&snap, snaps, rev.ptr) == 0)
				rc = hf_snapshot(snap, fname, c);
		}
		free(snap);
		tp_buf_free(&rev);
		free(ref_path);
	}
	DIR *d = rc ? opendir(snaps) : NULL;
	for (struct dirent *e; d && rc && (e = readdir(d));) {
		char *snap = NULL;
		if (e->d_name[0] != '.' && tp_path_join(&snap, snaps, e->d_name) == 0)
			rc = hf_snapshot(snap, fname, c);
		free(snap);
	}
	if (d)
		closedir(d);
done:
	free(hub);
	free(repo_dir);
	free(snaps);
	tp_buf_free(&b);
	return rc;
}

static bool file_has_size(const char *path, uint64_t size)
{
	struct stat st;
	return stat(path, &st) == 0 && S_ISREG(st.st_mode) && (uint64_t)st.st_size == size;
}

/* <hub>/models--ORG--NAME/blobs/<oid>: blobs are named by their sha256. */
static int hf_cache_blob(const char *oid, uint64_t size, char **out)
{
	char *hub = NULL;
	int rc = hf_hub_dir(&hub);
	if (rc)
		return TP_ENOTFOUND;
	DIR *d = opendir(hub);
	rc = TP_ENOTFOUND;
	for (struct dirent *e; d && rc == TP_ENOTFOUND && (e = readdir(d));) {
		if (strncmp(e->d_name, "models--", 8) != 0)
			continue;
		tp_buf b = TP_BUF_INIT(PATH_MAX);
		if (tp_buf_addf(&b, "%s/%s/blobs/%s", hub, e->d_name, oid) == 0 &&
		    file_has_size(b.ptr, size)) {
			*out = tp_buf_detach(&b);
			rc = 0;
		}
		tp_buf_free(&b);
	}
	if (d)
		closedir(d);
	free(hub);
	return rc;
}

int tp_lineage_find_local(tp_git_repo *r, const char *oid, uint64_t size, char **out)
{
	char *p = NULL;
	if (r && tp_git_repo_object_path(r, oid, &p) == 0 && file_has_size(p, size)) {
		*out = p;
		return 0;
	}
	free(p);
	return hf_cache_blob(oid, size, out);
}
