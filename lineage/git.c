/*
 * tp_git.h: opening the repository git-lfs runs us in, the LFS directory,
 * and reading and writing git config, with libgit2 set up once per process
 * to see what git itself sees.
 */
#include <git2.h>
#include <pthread.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "lineage_internal.h"

struct tp_git_config {
	git_config *cfg;
	char *path;
};

static pthread_once_t git_once = PTHREAD_ONCE_INIT;

static void git_init(void)
{
	git_libgit2_init();
	/* Like git: GIT_CONFIG_NOSYSTEM hides /etc/gitconfig. libgit2 would
	 * still read it, and then see settings git itself ignores. */
	const char *nosys = getenv("GIT_CONFIG_NOSYSTEM");
	if (nosys && *nosys && strcmp(nosys, "0") != 0 && strcmp(nosys, "false") != 0)
		git_libgit2_opts(GIT_OPT_SET_SEARCH_PATH, GIT_CONFIG_LEVEL_SYSTEM, "");
}

int tp_git_fail(int code, const char *what)
{
	const git_error *e = git_error_last();
	return tp_error_set(code, "%s: %s", what, e && e->message ? e->message : "libgit2 error");
}

/* Like git: $GIT_DIR names the repository; otherwise search upward from the
 * current directory, stopping at $GIT_CEILING_DIRECTORIES. (libgit2's own
 * GIT_REPOSITORY_OPEN_FROM_ENV refuses GIT_WORK_TREE, which git sets when it
 * runs filters in a linked worktree; only the git dir matters here.) */
int tp_git_repo_open(tp_git_repo **out)
{
	pthread_once(&git_once, git_init);
	git_repository *repo = NULL;
	const char *git_dir = getenv("GIT_DIR");
	int err;
	if (git_dir && *git_dir)
		err = git_repository_open_ext(&repo, git_dir, GIT_REPOSITORY_OPEN_NO_SEARCH, NULL);
	else
		err = git_repository_open_ext(&repo, ".", 0, getenv("GIT_CEILING_DIRECTORIES"));
	if (err == GIT_ENOTFOUND)
		return tp_error_set(TP_ENOTFOUND, "not inside a git repository");
	if (err < 0)
		return tp_git_fail(TP_EIO, "opening the git repository");
	tp_git_repo *r = calloc(1, sizeof(*r));
	if (!r) {
		git_repository_free(repo);
		return tp_error_set(TP_ENOMEM, "out of memory");
	}
	r->repo = repo;
	*out = r;
	return 0;
}

void tp_git_repo_free(tp_git_repo *r)
{
	if (!r)
		return;
	tp_lineage_index_clear(r);
	git_repository_free(r->repo);
	free(r);
}

const char *tp_git_repo_common_dir(tp_git_repo *r)
{
	return git_repository_commondir(r->repo);
}

const char *tp_git_repo_dir(tp_git_repo *r)
{
	return git_repository_path(r->repo);
}

int tp_git_repo_object_path(tp_git_repo *r, const char *oid, char **out)
{
	char *lfs = NULL, rel[TP_OID_HEXLEN + 16];
	if (!tp_oid_valid(oid))
		return tp_error_set(TP_EINVAL, "invalid oid");
	int rc = tp_git_repo_lfs_dir(r, &lfs);
	if (rc)
		return rc;
	snprintf(rel, sizeof(rel), "objects/%.2s/%.2s/%s", oid, oid + 2, oid);
	rc = tp_path_join(out, lfs, rel);
	free(lfs);
	return rc;
}

int tp_git_repo_lfs_dir(tp_git_repo *r, char **out)
{
	const char *common = git_repository_commondir(r->repo);
	char *storage = NULL;
	int rc = tp_git_config_get(r, "lfs.storage", &storage);
	if (rc == TP_ENOTFOUND)
		return tp_path_join(out, common, "lfs");
	if (rc)
		return rc;
	if (storage[0] == '/') {
		*out = storage;
		return 0;
	}
	rc = tp_path_join(out, common, storage);
	free(storage);
	return rc;
}

static int read_string(git_config *cfg, const char *key, char **out)
{
	git_buf buf = { 0 };
	int err = git_config_get_string_buf(&buf, cfg, key);
	if (err == GIT_ENOTFOUND)
		return tp_error_set(TP_ENOTFOUND, "%s is not set", key);
	if (err < 0)
		return tp_git_fail(TP_ECONFIG, key);
	*out = strdup(buf.ptr);
	git_buf_dispose(&buf);
	return *out ? 0 : tp_error_set(TP_ENOMEM, "out of memory");
}

int tp_git_config_get(tp_git_repo *r, const char *key, char **out)
{
	pthread_once(&git_once, git_init);
	git_config *cfg = NULL;
	int err = r ? git_repository_config_snapshot(&cfg, r->repo) : git_config_open_default(&cfg);
	if (err < 0)
		return tp_git_fail(TP_ECONFIG, "reading git config");
	int rc = read_string(cfg, key, out);
	git_config_free(cfg);
	return rc;
}

/* ~/.gitconfig, whether or not it exists yet (git creates it on write too). */
static int global_config_path(char **out)
{
	git_buf found = { 0 };
	if (git_config_find_global(&found) == 0) {
		*out = strdup(found.ptr);
		git_buf_dispose(&found);
		return *out ? 0 : tp_error_set(TP_ENOMEM, "out of memory");
	}
	const char *home = getenv("HOME");
	if (!home || home[0] != '/')
		return tp_error_set(TP_ECONFIG, "HOME is not set; cannot find the global git config");
	return tp_path_join(out, home, ".gitconfig");
}

static int local_config_path(char **out)
{
	tp_git_repo *r = NULL;
	int rc = tp_git_repo_open(&r);
	if (rc)
		return tp_error_wrap(rc, "--local needs a repository");
	rc = tp_path_join(out, git_repository_commondir(r->repo), "config");
	tp_git_repo_free(r);
	return rc;
}

int tp_git_config_open(tp_git_config **out, tp_git_scope scope)
{
	pthread_once(&git_once, git_init);
	tp_git_config *c = calloc(1, sizeof(*c));
	int rc = 0;
	if (!c)
		return tp_error_set(TP_ENOMEM, "out of memory");
	rc = scope == TP_GIT_SCOPE_LOCAL ? local_config_path(&c->path)
					     : global_config_path(&c->path);
	if (!rc && git_config_open_ondisk(&c->cfg, c->path) < 0)
		rc = tp_git_fail(TP_ECONFIG, c->path);
	if (rc) {
		tp_git_config_free(c);
		return rc;
	}
	*out = c;
	return 0;
}

void tp_git_config_free(tp_git_config *c)
{
	if (!c)
		return;
	git_config_free(c->cfg);
	free(c->path);
	free(c);
}

const char *tp_git_config_path(const tp_git_config *c)
{
	return c->path;
}

int tp_git_config_read(tp_git_config *c, const char *key, char **out)
{
	git_config *snap = NULL;
	if (git_config_snapshot(&snap, c->cfg) < 0)
		return tp_git_fail(TP_ECONFIG, c->path);
	int rc = read_string(snap, key, out);
	git_config_free(snap);
	return rc;
}

int tp_git_config_read_own(tp_git_config *c, const char *key, char **out)
{
	git_config *snap = NULL;
	git_config_entry *e = NULL;
	if (git_config_snapshot(&snap, c->cfg) < 0)
		return tp_git_fail(TP_ECONFIG, c->path);
	int rc = 0, err = git_config_get_entry(&e, snap, key);
	if (err == GIT_ENOTFOUND || (err == 0 && e->include_depth > 0))
		rc = tp_error_set(TP_ENOTFOUND, "%s is not set in %s", key, c->path);
	else if (err < 0)
		rc = tp_git_fail(TP_ECONFIG, key);
	else if (!(*out = strdup(e->value ? e->value : "")))
		rc = tp_error_set(TP_ENOMEM, "out of memory");
	git_config_entry_free(e);
	git_config_free(snap);
	return rc;
}

int tp_git_config_set(tp_git_config *c, const char *key, const char *value)
{
	/* Already so (maybe through include.path, where libgit2 refuses to
	 * write): nothing to do. */
	char *now = NULL;
	bool same = tp_git_config_read(c, key, &now) == 0 && strcmp(now, value) == 0;
	free(now);
	if (same)
		return 0;
	if (git_config_set_string(c->cfg, key, value) < 0)
		return tp_git_fail(TP_ECONFIG, c->path);
	return 0;
}

int tp_git_config_unset(tp_git_config *c, const char *key)
{
	int err = git_config_delete_entry(c->cfg, key);
	if (err < 0 && err != GIT_ENOTFOUND)
		return tp_git_fail(TP_ECONFIG, c->path);
	return 0;
}

static bool affixed(const char *s, const char *prefix, const char *suffix)
{
	size_t n = strlen(s), p = strlen(prefix), x = strlen(suffix);
	return n >= p + x && strncmp(s, prefix, p) == 0 && strcmp(s + n - x, suffix) == 0;
}

int tp_git_config_each(tp_git_config *c, const char *prefix, const char *suffix,
			   tp_git_config_fn fn, void *ctx)
{
	/* A snapshot, so fn may set or unset keys of c as it goes. (No regex:
	 * libgit2 1.5's regex matching leaks per entry.) */
	git_config *snap = NULL;
	git_config_iterator *it = NULL;
	git_config_entry *e;
	int rc = 0, err;
	if (git_config_snapshot(&snap, c->cfg) < 0 || git_config_iterator_new(&it, snap) < 0) {
		rc = tp_git_fail(TP_ECONFIG, c->path);
		goto done;
	}
	while (!rc && (err = git_config_next(&e, it)) == 0) {
		/* a key from a file named by include.path is not this file's */
		if (e->include_depth == 0 && affixed(e->name, prefix, suffix))
			rc = fn(ctx, e->name, e->value ? e->value : "");
	}
	if (!rc && err != GIT_ITEROVER)
		rc = tp_git_fail(TP_ECONFIG, c->path);
done:
	git_config_iterator_free(it);
	git_config_free(snap);
	return rc;
}
