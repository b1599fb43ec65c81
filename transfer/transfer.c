/*
 * A transfer's setup and what its parts share: git config, scratch files,
 * codec options, and what the store says of an object.
 *
 * Upload (plan.c, upload.c): find the target's lineage, estimate a delta
 * against each base candidate whose bytes we can get, keep the smallest if
 * it beats storing the file whole, prove it while encoding it, then store
 * it with a manifest that names its bases by oid.
 *
 * Download (rebuild.c): read the manifest, get each base from the cheapest
 * place (this repository's LFS storage, the Hugging Face cache (local.c),
 * else the store, rebuilding deltas recursively), apply, and verify the
 * sha256 against the oid.
 */
#include "transfer_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- scratch files --------------------------------------------------------- */

int tp_transfer_scratch_new(tp_transfer *t, const char *what, char **path)
{
	char name[64];
	snprintf(name, sizeof(name), "tenpak-%s-XXXXXX", what);
	int rc = tp_path_join(path, t->tmp_dir, name);
	if (rc)
		return rc;
	int fd = mkstemp(*path);
	if (fd < 0) {
		rc = tp_error_set_errno(tp_error_from_errno(errno), errno, "creating a file in %s",
					t->tmp_dir);
		free(*path);
		*path = NULL;
		return rc;
	}
	close(fd);
	return 0;
}

void tp_transfer_scratch_drop(char *path)
{
	if (path) {
		unlink(path);
		free(path);
	}
}

int tp_transfer_scratch_keep(tp_transfer_scratch *l, const char *oid, char *path)
{
	tp_transfer_kept k = { .path = path };
	memcpy(k.oid, oid, sizeof(k.oid));
	int rc = tp_array_push(l, k);
	if (rc)
		tp_transfer_scratch_drop(path);
	return rc;
}

const char *tp_transfer_scratch_find(const tp_transfer_scratch *l, const char *oid)
{
	for (size_t i = 0; l && i < l->len; i++)
		if (strcmp(l->ptr[i].oid, oid) == 0)
			return l->ptr[i].path;
	return NULL;
}

void tp_transfer_scratch_clear(tp_transfer_scratch *l)
{
	for (size_t i = 0; i < l->len; i++)
		tp_transfer_scratch_drop(l->ptr[i].path);
	tp_array_clear(l);
}

/* ---- setup --------------------------------------------------------------- */

/* A whole number from git config key, 0 to max; TP_ENOTFOUND when unset. */
static int config_number(tp_git_repo *repo, const char *key, uint64_t max, uint64_t *out)
{
	char *v = NULL;
	int rc = tp_git_config_get(repo, key, &v);
	if (rc)
		return rc;
	uint64_t n;
	bool bad = tp_parse_u64(v, 0, max, &n) < 0;
	free(v);
	if (bad)
		return tp_error_set(TP_ECONFIG, "%s must be a number from 0 to %llu", key,
				    (unsigned long long)max);
	*out = n;
	return 0;
}

/* Scratch space: <lfs>/tmp in a repository (downloads must land on the
 * filesystem git-lfs renames them on), else the system's temp dir. */
static int default_tmp_dir(tp_git_repo *repo, char **out)
{
	char *lfs = NULL;
	int rc;
	if (repo) {
		if ((rc = tp_git_repo_lfs_dir(repo, &lfs)) != 0)
			return rc;
		rc = tp_path_join(out, lfs, "tmp");
		free(lfs);
		return rc;
	}
	/* Per user: a shared /tmp must not let one user's files block another's. */
	const char *tmp = getenv("TMPDIR");
	char name[32];
	snprintf(name, sizeof(name), "tenpak-%ld", (long)getuid());
	return tp_path_join(out, tmp && *tmp ? tmp : "/tmp", name);
}

static int setup(tp_transfer *t, tp_store *store, tp_git_repo *repo,
		 const tp_transfer_opts *opts)
{
	t->store = store;
	t->repo = repo;
	t->store_only = opts->store_only;
	t->maxchain = TP_TRANSFER_MAXCHAIN_DEFAULT;
	t->rebuild_factor = TP_TRANSFER_REBUILD_FACTOR_DEFAULT;
	/* Every agent may use every core: a push of one big model, the common
	 * case, then runs at full speed, and several objects at once cost only
	 * some oversubscription. */
	t->threads = opts->threads ? opts->threads : tp_cpu_count();
	t->progress = opts->progress;
	t->progress_ctx = opts->progress_ctx;
	uint64_t n = 0;
	int rc = config_number(repo, "tenpak.maxchain", TP_TRANSFER_CHAIN_LIMIT, &n);
	if (rc == 0)
		t->maxchain = (int)n;
	else if (rc != TP_ENOTFOUND)
		return rc;
	rc = config_number(repo, "tenpak.rebuildfactor", TP_TRANSFER_REBUILD_FACTOR_MAX, &n);
	if (rc == 0)
		t->rebuild_factor = (unsigned)n;
	else if (rc != TP_ENOTFOUND)
		return rc;
	if (opts->tmp_dir)
		rc = (t->tmp_dir = strdup(opts->tmp_dir)) ? 0 : tp_error_set(TP_ENOMEM, "out of memory");
	else
		rc = default_tmp_dir(repo, &t->tmp_dir);
	if (!rc)
		rc = tp_transfer_hashes_new(&t->hashes);
	if (!rc)
		rc = tp_provenance_new(&t->provenance, repo);
	/* fsck vouches for the store alone: the repository gave config only. */
	if (t->store_only)
		t->repo = NULL;
	return rc ? rc : tp_fs_mkdirs(t->tmp_dir);
}

int tp_transfer_new(tp_transfer **out, tp_store *store, tp_git_repo *repo,
		    const tp_transfer_opts *opts)
{
	static const tp_transfer_opts defaults = { 0 };
	tp_transfer *t = calloc(1, sizeof(*t));
	if (!t)
		return tp_error_set(TP_ENOMEM, "out of memory");
	int rc = setup(t, store, repo, opts ? opts : &defaults);
	if (rc) {
		tp_transfer_free(t);
		return rc;
	}
	*out = t;
	return 0;
}

void tp_transfer_free(tp_transfer *t)
{
	if (!t)
		return;
	free(t->tmp_dir);
	tp_transfer_hashes_free(t->hashes);
	tp_provenance_free(t->provenance);
	free(t);
}

const char *tp_transfer_tmp_dir(const tp_transfer *t)
{
	return t->tmp_dir;
}

/* The caller's verdict passes through: an agent whose git-lfs went away
 * stops the codec mid-object instead of finishing work nobody reads. */
static int codec_progress(void *ctx, uint64_t done, uint64_t total)
{
	tp_transfer *t = ctx;
	return t->progress ? t->progress(t->progress_ctx, done, total) : 0;
}

tp_delta_opts tp_transfer_codec_opts(tp_transfer *t, bool report)
{
	tp_delta_opts o = { .threads = t->threads };
	if (report) {
		o.progress = codec_progress;
		o.progress_ctx = t;
	}
	return o;
}

/* ---- what the store holds -------------------------------------------------- */

int tp_transfer_inspect(tp_transfer *t, const char *oid, tp_transfer_object *out)
{
	tp_store_object_info info;
	tp_store_manifest *m = NULL;
	char *text = NULL;
	int rc = tp_store_object_manifest(t->store, oid, &info, &text);
	if (rc)
		return rc;
	memset(out, 0, sizeof(*out));
	out->kind = info.kind;
	out->size = info.size;
	out->stored = info.stored_size;
	if (text && (rc = tp_store_manifest_parse(&m, text, strlen(text))) == 0) {
		out->depth = m->depth;
		out->nbases = m->nbases;
		out->signature = tp_provenance_manifest_status(t->provenance, m);
		if (m->signer)
			snprintf(out->signer, sizeof(out->signer), "%s", m->signer);
	}
	tp_store_manifest_free(m);
	free(text);
	return rc;
}

int tp_transfer_stored_depth(tp_transfer *t, const char *oid)
{
	tp_store_object_info info;
	char *text = NULL;
	int depth = 0;
	tp_store_manifest *m = NULL;
	if (tp_store_object_manifest(t->store, oid, &info, &text) == 0 && text &&
	    tp_store_manifest_parse(&m, text, strlen(text)) == 0)
		depth = m->depth;
	tp_store_manifest_free(m);
	free(text);
	return depth;
}
