/*
 * Resolving a base named in an override or in metadata: an oid: reference,
 * a repository path, a hub id mapped by git config, or a hub id in the
 * Hugging Face cache. A name that resolves to nothing becomes an
 * unresolved name with the git config key that would resolve it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "lineage_internal.h"

/* An "oid:<sha256>" reference: that object, wherever it is. Its size comes
 * from any pointer to it, else its copy in this repository's LFS storage,
 * else it is TP_LINEAGE_SIZE_UNKNOWN: the object may be only in the store,
 * which lineage does not read (the caller does). */
static int resolve_oid_ref(tp_lineage_search *s, const char *ref, tp_lineage_candidate *c)
{
	tp_lineage_file f;
	const tp_lineage_entry *const *e;
	size_t n;
	char *local = NULL;
	struct stat st;
	if (!tp_oid_valid(ref + 4))
		return tp_error_set(TP_ECONFIG, "\"%s\" is not oid:<64 lowercase hex digits>", ref);
	uint64_t size = TP_LINEAGE_SIZE_UNKNOWN;
	tp_lineage_index_find(s->repo, ref + 4, &e, &n);
	if (n > 0)
		size = e[0]->size;
	else if (tp_git_repo_object_path(s->repo, ref + 4, &local) == 0 && stat(local, &st) == 0 &&
		 S_ISREG(st.st_mode))
		size = (uint64_t)st.st_size;
	free(local);
	int rc = tp_lineage_file_set(&f, ref, ref + 4, size, NULL);
	if (!rc)
		rc = tp_lineage_candidate_add_file(c, &f);
	tp_lineage_file_clear(&f);
	return rc;
}

/* A repository path (relative to the target's directory, or from the
 * root), a hub id mapped by tenpak.<id>.model, or a hub id in the HF cache. */
static int resolve_name(tp_lineage_search *s, const char *name, tp_lineage_candidate *c,
			const char **how)
{
	if (strncmp(name, "oid:", 4) == 0) {
		*how = "object";
		return resolve_oid_ref(s, name, c);
	}
	char *rel = tp_lineage_path_in(s->dir, name), *p;
	int rc = TP_ENOTFOUND;
	for (int i = 0; i < 2 && rc == TP_ENOTFOUND; i++) {
		p = tp_lineage_path_normalize(i == 0 ? (rel ? rel : name) : name);
		if (p && strcmp(p, s->dir) != 0)
			rc = tp_lineage_tree_resolve(s->tree, p, s->fname, c);
		free(p);
	}
	free(rel);
	if (rc != TP_ENOTFOUND) {
		*how = "repository path";
		return rc;
	}
	char key[1024], *mapped = NULL;
	int klen = snprintf(key, sizeof(key), "tenpak.%s.model", name);
	if (strchr(name, '/') && klen > 0 && (size_t)klen < sizeof(key) &&
	    tp_git_config_get(s->repo, key, &mapped) == 0) {
		*how = key;
		if (strncmp(mapped, "oid:", 4) == 0) {
			rc = resolve_oid_ref(s, mapped, c);
		} else {
			p = tp_lineage_path_normalize(mapped);
			rc = p ? tp_lineage_tree_resolve(s->tree, p, s->fname, c) : TP_ENOTFOUND;
			free(p);
		}
		free(mapped);
		return rc;
	}
	*how = "Hugging Face cache";
	return strchr(name, '/') ? tp_lineage_hf_find(name, s->fname, c) : TP_ENOTFOUND;
}

/* Keep a name that resolved to nothing, with the key that would fix it.
 * how: where resolve_name looked last. */
static int unresolved_add(tp_lineage *l, const char *name, const char *where, const char *how)
{
	for (size_t i = 0; i < l->nunresolved; i++)
		if (strcmp(l->unresolved[i].name, name) == 0)
			return 0;
	bool hub = strchr(name, '/') != NULL;
	tp_buf reason = TP_BUF_INIT(4096), key = TP_BUF_INIT(4096);
	tp_lineage_unresolved u = { 0 }, *v = NULL;
	int rc = strncmp(how, "tenpak.", 7) == 0
		? tp_buf_addf(&reason, "git config %s names no model at HEAD", how)
		: tp_buf_addf(&reason, "no model in a directory of that name at HEAD%s",
			      hub ? ", no git config key maps it, not in the Hugging Face cache" : "");
	if (!rc)
		rc = hub ? tp_buf_addf(&key, "tenpak.%s.model", name)
			 : tp_buf_addf(&key, "tenpak.%s.base", l->target.path);
	if (!rc && (!(u.name = strdup(name)) || !(u.where = strdup(where)) ||
		    !(v = realloc(l->unresolved, (l->nunresolved + 1) * sizeof(*v)))))
		rc = tp_error_set(TP_ENOMEM, "out of memory");
	if (rc) {
		free(u.name);
		free(u.where);
		tp_buf_free(&reason);
		tp_buf_free(&key);
		return rc;
	}
	u.reason = tp_buf_detach(&reason);
	u.key = tp_buf_detach(&key);
	l->unresolved = v;
	v[l->nunresolved++] = u;
	return 0;
}

int tp_lineage_add_named(tp_lineage_search *s, tp_lineage_source src, const char *name,
			 const char *where)
{
	tp_lineage_candidate c = { .source = src };
	const char *how = "";
	int rc = resolve_name(s, name, &c, &how);
	if (rc == TP_ENOTFOUND) {
		tp_trace("%s: base \"%s\" (%s) not found", s->out->target.path, name, where);
		tp_lineage_candidate_clear(&c);
		return unresolved_add(s->out, name, where, how);
	}
	if (!rc)
		rc = tp_lineage_candidate_evidence(&c, "%s = %s (%s)", where, name, how);
	if (!rc)
		rc = tp_lineage_candidate_add(s->out, &c);
	tp_lineage_candidate_clear(&c);
	return rc;
}
