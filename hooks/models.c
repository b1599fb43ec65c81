/*
 * Which models a push adds or changes: a tree diff between what the remote
 * has and what is pushed, reduced to the directories holding changed
 * *.safetensors files.
 */
#include <stdlib.h>
#include <string.h>

#include "hooks_internal.h"
#include "tp_array.h"
#include "tp_lineage.h"

#define SUFFIX ".safetensors"
#define MODELS_MAX 4096
#define FILES_MAX 4096
/* A weight file stored as a plain git blob is hashed from memory; one that
 * large belongs in LFS anyway. */
#define POINTER_READ_MAX 1024

static bool zero_oid(const char *s)
{
	return strspn(s, "0") == strlen(s);
}

static bool is_weights(const char *path)
{
	size_t n = strlen(path), s = sizeof(SUFFIX) - 1;
	return n > s && strcmp(path + n - s, SUFFIX) == 0;
}

/* The commit a pushed oid names (a tag is peeled); TP_ENOTFOUND when the
 * object is not here or is no commit. */
static int lookup_commit(git_repository *repo, const char *hex, git_commit **out)
{
	git_oid id;
	git_object *obj = NULL, *peeled = NULL;
	if (git_oid_fromstr(&id, hex) < 0 || git_object_lookup(&obj, repo, &id, GIT_OBJECT_ANY) < 0)
		return TP_ENOTFOUND;
	int err = git_object_peel(&peeled, obj, GIT_OBJECT_COMMIT);
	git_object_free(obj);
	if (err < 0)
		return TP_ENOTFOUND;
	*out = (git_commit *)peeled;
	return 0;
}

typedef struct base_search {
	git_repository *repo;
	const git_oid *local;
	git_oid best;
	bool found;
	int err;
} base_search;

/* The newest merge base of the pushed commit with one of the remote's
 * branches: the one the others are ancestors of. */
static int consider_branch(const char *name, void *ctx)
{
	base_search *b = ctx;
	git_oid tip, mb;
	if (git_reference_name_to_id(&tip, b->repo, name) < 0)
		return 0; /* a dangling ref tells nothing */
	if (git_merge_base(&mb, b->repo, b->local, &tip) < 0)
		return 0; /* unrelated history */
	if (!b->found || git_graph_descendant_of(b->repo, &mb, &b->best) == 1) {
		b->best = mb;
		b->found = true;
	}
	return 0;
}

/* The tree the pushed commit is compared with; *out NULL means every file
 * is new. */
static int base_tree(git_repository *repo, const char *remote, const tp_hooks_ref *ref,
		     git_commit *local, git_tree **out)
{
	git_commit *base = NULL;
	*out = NULL;
	if (!zero_oid(ref->remote_oid) && lookup_commit(repo, ref->remote_oid, &base) == 0)
		goto found;
	/* A new branch, or a remote commit this clone never fetched: the
	 * merge base with what the remote's branches are known to hold. */
	int valid = 0;
	if (remote && git_remote_name_is_valid(&valid, remote) == 0 && valid) {
		tp_buf glob = TP_BUF_INIT(1024);
		base_search b = { repo, git_commit_id(local), { { 0 } }, false, 0 };
		int rc = tp_buf_addf(&glob, "refs/remotes/%s/*", remote);
		if (!rc)
			git_reference_foreach_glob(repo, glob.ptr, consider_branch, &b);
		tp_buf_free(&glob);
		if (rc)
			return rc;
		if (b.found && git_commit_lookup(&base, repo, &b.best) == 0)
			goto found;
	}
	return 0;
found:;
	int err = git_commit_tree(out, base);
	git_commit_free(base);
	return err < 0 ? tp_hooks_git_fail(TP_EIO, "reading a commit's tree") : 0;
}

typedef tp_array(tp_hooks_file) file_array;

static int add_file(file_array *files, const char *dir, const git_tree_entry *e,
		    git_repository *repo)
{
	git_blob *blob = NULL;
	int rc = 0;
	if (git_blob_lookup(&blob, repo, git_tree_entry_id(e)) < 0)
		return tp_hooks_git_fail(TP_EIO, "reading a weight file's blob");
	tp_hooks_file f = { 0 };
	const char *p = git_blob_rawcontent(blob);
	size_t n = (size_t)git_blob_rawsize(blob);
	if (n <= POINTER_READ_MAX && tp_lineage_pointer_parse(p, n, f.oid, &f.size)) {
		f.pointer = true;
	} else {
		tp_sha256_hex_of(p, n, f.oid);
		f.size = n;
	}
	git_blob_free(blob);
	tp_buf path = TP_BUF_INIT(1 << 16);
	if ((rc = tp_buf_addf(&path, "%s%s%s", dir, *dir ? "/" : "", git_tree_entry_name(e))) != 0) {
		tp_buf_free(&path);
		return rc;
	}
	f.path = tp_buf_detach(&path);
	if ((rc = tp_array_push(files, f)) != 0)
		free(f.path);
	return rc;
}

static int cmp_files(const void *a, const void *b)
{
	return strcmp(((const tp_hooks_file *)a)->path, ((const tp_hooks_file *)b)->path);
}

/* The model in dir of commit: every *.safetensors there, by name. */
static int load_model(git_repository *repo, git_commit *commit, const char *dir,
		      tp_hooks_model *m)
{
	git_tree *root = NULL, *sub = NULL;
	git_tree_entry *de = NULL;
	int rc = 0;
	memset(m, 0, sizeof(*m));
	git_oid_tostr(m->commit, sizeof(m->commit), git_commit_id(commit));
	if (!(m->dir = strdup(dir)))
		return tp_error_set(TP_ENOMEM, "out of memory");
	if (git_commit_tree(&root, commit) < 0) {
		rc = tp_hooks_git_fail(TP_EIO, "reading a commit's tree");
		goto done;
	}
	git_tree *tree = root;
	if (*dir) {
		if (git_tree_entry_bypath(&de, root, dir) < 0 ||
		    git_tree_lookup(&sub, repo, git_tree_entry_id(de)) < 0) {
			rc = tp_hooks_git_fail(TP_EIO, "reading a model's directory");
			goto done;
		}
		tree = sub;
	}
	file_array files = TP_ARRAY_INIT(FILES_MAX);
	for (size_t i = 0; i < git_tree_entrycount(tree) && !rc; i++) {
		const git_tree_entry *e = git_tree_entry_byindex(tree, i);
		if (git_tree_entry_type(e) == GIT_OBJECT_BLOB &&
		    git_tree_entry_filemode(e) != GIT_FILEMODE_LINK && is_weights(git_tree_entry_name(e)))
			rc = add_file(&files, dir, e, repo);
	}
	/* the model owns what was read, on failure too (model_clear frees it) */
	m->files = files.ptr;
	m->nfiles = files.len;
	if (!rc && m->nfiles > 1)
		qsort(m->files, m->nfiles, sizeof(*m->files), cmp_files);
done:
	git_tree_entry_free(de);
	git_tree_free(sub);
	git_tree_free(root);
	return rc;
}

static void model_clear(tp_hooks_model *m)
{
	for (size_t i = 0; i < m->nfiles; i++)
		free(m->files[i].path);
	free(m->files);
	free(m->dir);
}

void tp_hooks_models_free(tp_hooks_model *m, size_t n)
{
	if (!m)
		return;
	for (size_t i = 0; i < n; i++)
		model_clear(&m[i]);
	free(m);
}

static bool same_model(const tp_hooks_model *a, const tp_hooks_model *b)
{
	if (strcmp(a->dir, b->dir) != 0 || a->nfiles != b->nfiles)
		return false;
	for (size_t i = 0; i < a->nfiles; i++)
		if (strcmp(a->files[i].oid, b->files[i].oid) != 0)
			return false;
	return true;
}

typedef tp_array(tp_hooks_model) found;

/* Add the model in dir of commit, unless an equal one is there already. */
static int add_model(found *f, git_repository *repo, git_commit *commit, const char *dir)
{
	tp_hooks_model m;
	int rc = load_model(repo, commit, dir, &m);
	if (rc) {
		model_clear(&m);
		return rc;
	}
	for (size_t i = 0; i < f->len; i++)
		if (same_model(&f->ptr[i], &m)) {
			model_clear(&m);
			return 0;
		}
	if ((rc = tp_array_push(f, m)) != 0)
		model_clear(&m);
	return rc;
}

/* The directories of the weight files one ref's push adds or changes. */
static int changed_dirs(git_repository *repo, git_tree *base, git_tree *tip, char ***dirs,
			size_t *ndirs)
{
	git_diff *diff = NULL;
	git_diff_options opts;
	tp_array(char *) d = TP_ARRAY_INIT(MODELS_MAX);
	int rc = 0;
	git_diff_options_init(&opts, GIT_DIFF_OPTIONS_VERSION);
	if (git_diff_tree_to_tree(&diff, repo, base, tip, &opts) < 0)
		return tp_hooks_git_fail(TP_EIO, "comparing the pushed commit with the remote's");
	for (size_t i = 0; i < git_diff_num_deltas(diff) && !rc; i++) {
		const git_diff_delta *dd = git_diff_get_delta(diff, i);
		if (dd->status == GIT_DELTA_DELETED || !is_weights(dd->new_file.path) ||
		    dd->new_file.mode == GIT_FILEMODE_LINK)
			continue;
		const char *path = dd->new_file.path, *slash = strrchr(path, '/');
		size_t len = slash ? (size_t)(slash - path) : 0;
		bool seen = false;
		for (size_t j = 0; j < d.len && !seen; j++)
			seen = strlen(d.ptr[j]) == len && memcmp(d.ptr[j], path, len) == 0;
		if (seen)
			continue;
		char *copy = strndup(path, len);
		if (!copy)
			rc = tp_error_set(TP_ENOMEM, "out of memory");
		else if ((rc = tp_array_push(&d, copy)) != 0)
			free(copy);
	}
	git_diff_free(diff);
	if (rc) {
		for (size_t j = 0; j < d.len; j++)
			free(d.ptr[j]);
		tp_array_clear(&d);
		return rc;
	}
	*dirs = d.ptr;
	*ndirs = d.len;
	return 0;
}

int tp_hooks_models_find(tp_git_repo *r, const char *remote, const tp_hooks_ref *refs,
			 size_t nrefs, tp_hooks_model **out, size_t *n)
{
	git_repository *repo = NULL;
	found f = TP_ARRAY_INIT(MODELS_MAX);
	int rc = tp_hooks_git_open(r, &repo);
	for (size_t i = 0; i < nrefs && !rc; i++) {
		git_commit *local = NULL;
		git_tree *tip = NULL, *base = NULL;
		char **dirs = NULL;
		size_t ndirs = 0;
		if (zero_oid(refs[i].local_oid))
			continue; /* a deletion pushes no model */
		if (lookup_commit(repo, refs[i].local_oid, &local) != 0)
			continue; /* a tag of a tree or blob: no commit, no model */
		if (git_commit_tree(&tip, local) < 0)
			rc = tp_hooks_git_fail(TP_EIO, "reading the pushed commit's tree");
		if (!rc)
			rc = base_tree(repo, remote, &refs[i], local, &base);
		if (!rc)
			rc = changed_dirs(repo, base, tip, &dirs, &ndirs);
		for (size_t j = 0; j < ndirs; j++) {
			if (!rc)
				rc = add_model(&f, repo, local, dirs[j]);
			free(dirs[j]);
		}
		free(dirs);
		git_tree_free(base);
		git_tree_free(tip);
		git_commit_free(local);
	}
	tp_hooks_git_close(repo);
	if (rc) {
		tp_hooks_models_free(f.ptr, f.len);
		return rc;
	}
	*out = f.ptr;
	*n = f.len;
	return 0;
}
