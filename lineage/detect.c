/*
 * Base-model detection: for an LFS object, find the files it was most
 * likely derived from, with the evidence for each.
 *
 * Everything is read from git (the tree of the commit that holds the
 * object, found through the pointer index of index.c), never from the work
 * tree, so the agent sees what is being pushed. Sources, most trusted
 * first: an explicit override in git config; model metadata next to the file
 * (config.json, the model card, adapter_config.json), resolved to a
 * directory of this repository, a hub id mapped in git config, or the local
 * Hugging Face cache; the previous version of the same path in the commit's
 * ancestry.
 *
 * This file holds the public entry points and the order the sources are
 * asked in; lineage_internal.h says which file holds each part.
 */
#include <stdlib.h>
#include <string.h>

#include "lineage_internal.h"
#include "tp_array.h"

/* Lineage of the pointer e; TP_ENOTFOUND when its commit is gone. */
static int find_entry(tp_lineage **out, tp_git_repo *r, const tp_lineage_entry *e)
{
	git_commit *commit = NULL;
	git_tree *tree = NULL;
	if (git_commit_lookup(&commit, r->repo, &e->commit) != 0 || git_commit_tree(&tree, commit) != 0) {
		git_commit_free(commit);
		return TP_ENOTFOUND;
	}
	git_commit_free(commit);
	tp_lineage *l = calloc(1, sizeof(*l));
	char *dir = tp_lineage_path_dir(e->path);
	int rc = !l || !dir ? tp_error_set(TP_ENOMEM, "out of memory")
			    : tp_lineage_file_set(&l->target, e->path, e->oid, e->size, NULL);
	tp_lineage_search s = { .repo = r, .commit = &e->commit, .tree = tree, .dir = dir,
				.fname = tp_lineage_path_base(e->path), .out = l };
	/* Most trusted first: tp_lineage_candidate_add drops later duplicates. */
	if (!rc)
		rc = tp_lineage_from_overrides(&s);
	if (!rc)
		rc = tp_lineage_from_metadata(&s);
	if (!rc)
		rc = tp_lineage_from_history(&s);
	free(dir);
	git_tree_free(tree);
	if (rc) {
		tp_lineage_free(l);
		return rc;
	}
	*out = l;
	return 0;
}

int tp_lineage_find(tp_lineage **out, tp_git_repo *r, const char *oid)
{
	const tp_lineage_entry *const *e;
	size_t n;
	int rc = tp_lineage_index_build(r);
	if (rc)
		return rc;
	tp_lineage_index_find(r, oid, &e, &n);
	for (size_t i = 0; i < n; i++) {
		rc = find_entry(out, r, e[i]);
		if (rc != TP_ENOTFOUND)
			return rc;
	}
	return tp_error_set(TP_ENOTFOUND, "no commit reachable from HEAD, a branch, a tag or a "
			    "remote-tracking ref has a pointer to %s", oid);
}

int tp_lineage_find_path(tp_lineage **out, tp_git_repo *r, const char *path)
{
	const tp_lineage_entry *head;
	size_t n;
	int rc = tp_lineage_index_build(r);
	if (rc)
		return rc;
	tp_lineage_index_head(r, &head, &n);
	char *norm = tp_lineage_path_normalize(path);
	for (size_t i = 0; norm && i < n; i++) {
		if (strcmp(head[i].path, norm) == 0) {
			free(norm);
			return find_entry(out, r, &head[i]);
		}
	}
	rc = tp_error_set(TP_ENOTFOUND, "%s is not an LFS file at HEAD", path);
	free(norm);
	return rc;
}

int tp_lineage_list_models(tp_git_repo *r, char ***paths, size_t *n)
{
	const tp_lineage_entry *head;
	size_t nhead = 0;
	int rc = tp_lineage_index_build(r);
	/* At most one per entry at HEAD, which the index already bounds. */
	tp_array(char *) out = TP_ARRAY_INIT(SIZE_MAX);
	static const char ext[] = ".safetensors";
	if (!rc)
		tp_lineage_index_head(r, &head, &nhead);
	for (size_t i = 0; !rc && i < nhead; i++) {
		const char *p = head[i].path;
		size_t len = strlen(p);
		if (len < sizeof(ext) - 1 || strcmp(p + len - (sizeof(ext) - 1), ext) != 0)
			continue;
		char *copy = strdup(p);
		if (!copy)
			rc = tp_error_set(TP_ENOMEM, "out of memory");
		else if ((rc = tp_array_push(&out, copy)) != 0)
			free(copy);
	}
	if (rc) {
		tp_lineage_paths_free(out.ptr, out.len);
		return rc;
	}
	*paths = out.ptr;
	*n = out.len;
	return 0;
}

void tp_lineage_paths_free(char **paths, size_t n)
{
	for (size_t i = 0; paths && i < n; i++)
		free(paths[i]);
	free(paths);
}
