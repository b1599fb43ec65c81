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
 */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <fnmatch.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "lineage_internal.h"

#define METADATA_MAX (4u << 20)    /* config.json, README.md, index.json */
#define HISTORY_MAX 10000          /* commits walked for a previous version */
#define INDEX_FILE "model.safetensors.index.json"
#define SINGLE_FILE "model.safetensors"

const char *tp_lineage_source_name(tp_lineage_source s)
{
	switch (s) {
	case TP_LINEAGE_SOURCE_OVERRIDE: return "override";
	case TP_LINEAGE_SOURCE_METADATA: return "metadata";
	case TP_LINEAGE_SOURCE_HISTORY: return "history";
	default: return "?";
	}
}

/* ---- LFS pointers and blobs -------------------------------------------- */

/* Contents of the blob at path in tree, at most cap bytes. */
static int tree_read(git_tree *tree, const char *path, size_t cap, tp_buf *out)
{
	git_tree_entry *e = NULL;
	git_blob *blob = NULL;
	int rc = 0;
	if (git_tree_entry_bypath(&e, tree, path) != 0 || git_tree_entry_type(e) != GIT_OBJECT_BLOB) {
		rc = TP_ENOTFOUND;
		goto done;
	}
	if (git_blob_lookup(&blob, git_tree_owner(tree), git_tree_entry_id(e)) != 0) {
		rc = tp_git_fail(TP_EIO, path);
		goto done;
	}
	if ((size_t)git_blob_rawsize(blob) > cap) {
		rc = TP_ETOOBIG;
		goto done;
	}
	tp_buf_init(out, cap);
	rc = tp_buf_add(out, git_blob_rawcontent(blob), (size_t)git_blob_rawsize(blob));
done:
	git_blob_free(blob);
	git_tree_entry_free(e);
	return rc;
}

static int file_set(tp_lineage_file *f, const char *path, const char *oid, uint64_t size,
		    const char *local)
{
	memset(f, 0, sizeof(*f));
	memcpy(f->oid, oid, TP_OID_HEXLEN + 1);
	f->size = size;
	f->path = strdup(path);
	f->local = local ? strdup(local) : NULL;
	return f->path && (!local || f->local) ? 0 : tp_error_set(TP_ENOMEM, "out of memory");
}

static void file_clear(tp_lineage_file *f)
{
	free(f->path);
	free(f->local);
	memset(f, 0, sizeof(*f));
}

/* The LFS file whose pointer is at path in tree. */
static int tree_pointer(git_tree *tree, const char *path, tp_lineage_file *f)
{
	tp_buf b;
	char oid[TP_OID_HEXLEN + 1];
	uint64_t size;
	int rc = tree_read(tree, path, TP_LINEAGE_POINTER_MAX, &b);
	if (rc == TP_ETOOBIG)
		return TP_ENOTFOUND; /* a regular file, not a pointer */
	if (rc)
		return rc;
	rc = tp_lineage_pointer_parse(b.ptr, b.len, oid, &size) ? file_set(f, path, oid, size, NULL)
								 : TP_ENOTFOUND;
	tp_buf_free(&b);
	return rc;
}

/* ---- candidates ----------------------------------------------------------- */

static void candidate_clear(tp_lineage_candidate *c)
{
	for (size_t i = 0; i < c->nfiles; i++)
		file_clear(&c->files[i]);
	free(c->files);
	free(c->evidence);
	memset(c, 0, sizeof(*c));
}

static int candidate_add_file(tp_lineage_candidate *c, const tp_lineage_file *f)
{
	tp_lineage_file *files = realloc(c->files, (c->nfiles + 1) * sizeof(*files));
	if (!files)
		return tp_error_set(TP_ENOMEM, "out of memory");
	c->files = files;
	return file_set(&c->files[c->nfiles++], f->path, f->oid, f->size, f->local);
}

/* Append c to l (taking it) unless it is the target itself or a duplicate
 * of a more trusted candidate. */
static int lineage_add(tp_lineage *l, tp_lineage_candidate *c)
{
	bool keep = c->nfiles > 0;
	for (size_t i = 0; keep && i < c->nfiles; i++)
		keep = strcmp(c->files[i].oid, l->target.oid) != 0;
	for (size_t i = 0; keep && i < l->ncandidates; i++) {
		const tp_lineage_candidate *o = &l->candidates[i];
		bool same = o->nfiles == c->nfiles;
		for (size_t k = 0; same && k < c->nfiles; k++)
			same = strcmp(o->files[k].oid, c->files[k].oid) == 0;
		keep = !same;
	}
	if (!keep) {
		candidate_clear(c);
		return 0;
	}
	tp_lineage_candidate *cs = realloc(l->candidates, (l->ncandidates + 1) * sizeof(*cs));
	if (!cs) {
		candidate_clear(c);
		return tp_error_set(TP_ENOMEM, "out of memory");
	}
	l->candidates = cs;
	cs[l->ncandidates++] = *c;
	memset(c, 0, sizeof(*c));
	return 0;
}

static int set_evidence(tp_lineage_candidate *c, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* Where a name was found ("finetuned/config.json: _name_or_path"), cut
 * like evidence; NULL when out of memory. */
static char *where_text(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *where_text(const char *fmt, ...)
{
	tp_buf b = TP_BUF_INIT(TP_LINEAGE_EVIDENCE_MAX);
	va_list ap;
	va_start(ap, fmt);
	int rc = tp_buf_vaddf_cut(&b, fmt, ap);
	va_end(ap);
	if (rc)
		tp_buf_free(&b);
	return tp_buf_detach(&b);
}

/* Evidence is for people: a long name or a deep path is cut, never a
 * reason to fail a push. */
static int set_evidence(tp_lineage_candidate *c, const char *fmt, ...)
{
	tp_buf b = TP_BUF_INIT(TP_LINEAGE_EVIDENCE_MAX);
	va_list ap;
	va_start(ap, fmt);
	int rc = tp_buf_vaddf_cut(&b, fmt, ap);
	va_end(ap);
	if (rc) {
		tp_buf_free(&b);
		return rc;
	}
	free(c->evidence);
	c->evidence = tp_buf_detach(&b);
	return 0;
}

/* ---- paths ------------------------------------------------------------- */

/* Normalize a repository path: resolve "." and "..", drop empty parts.
 * NULL (no error message) when it climbs out of the repository. */
static char *path_normalize(const char *path)
{
	char *copy = strdup(path), *out = malloc(strlen(path) + 2);
	size_t len = 0;
	if (!copy || !out)
		goto fail;
	for (char *save = NULL, *part = strtok_r(copy, "/", &save); part;
	     part = strtok_r(NULL, "/", &save)) {
		if (strcmp(part, ".") == 0)
			continue;
		if (strcmp(part, "..") == 0) {
			if (len == 0)
				goto fail;
			while (len > 0 && out[len - 1] != '/')
				len--;
			if (len > 0)
				len--;
			continue;
		}
		if (len)
			out[len++] = '/';
		memcpy(out + len, part, strlen(part));
		len += strlen(part);
	}
	out[len] = '\0';
	free(copy);
	return out;
fail:
	free(copy);
	free(out);
	return NULL;
}

/* Directory part of a repository path ("" at the root). */
static char *path_dir(const char *path)
{
	const char *slash = strrchr(path, '/');
	return slash ? strndup(path, (size_t)(slash - path)) : strdup("");
}

static const char *path_base(const char *path)
{
	const char *slash = strrchr(path, '/');
	return slash ? slash + 1 : path;
}

static char *path_in(const char *dir, const char *name)
{
	tp_buf b = TP_BUF_INIT(PATH_MAX);
	if (tp_buf_addf(&b, "%s%s%s", dir, *dir ? "/" : "", name)) {
		tp_buf_free(&b);
		return NULL;
	}
	return tp_buf_detach(&b);
}

/* Shard file names listed by a model.safetensors.index.json text. */
static int index_shards(const char *json, size_t len, char ***out, size_t *n)
{
	cJSON *root = cJSON_ParseWithLength(json, len);
	const cJSON *map = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
	char **names = NULL;
	size_t count = 0;
	int rc = 0;
	if (!cJSON_IsObject(map)) {
		rc = tp_error_set(TP_ECORRUPT, "index has no weight_map");
		goto done;
	}
	const cJSON *it;
	cJSON_ArrayForEach(it, map) {
		if (!cJSON_IsString(it) || strchr(it->valuestring, '/'))
			continue;
		bool seen = false;
		for (size_t i = 0; i < count && !seen; i++)
			seen = strcmp(names[i], it->valuestring) == 0;
		if (seen)
			continue;
		char **grown = realloc(names, (count + 1) * sizeof(*names));
		if (!grown || !(grown[count] = strdup(it->valuestring))) {
			names = grown ? grown : names;
			rc = tp_error_set(TP_ENOMEM, "out of memory");
			goto done;
		}
		names = grown;
		count++;
	}
done:
	cJSON_Delete(root);
	if (rc) {
		tp_lineage_paths_free(names, count);
		return rc;
	}
	*out = names;
	*n = count;
	return 0;
}

/* Where model files are looked up: a git tree (files are LFS pointers) or
 * a directory of the Hugging Face cache (files are the bytes). */
typedef struct model_src {
	/* The LFS file at path; TP_ENOTFOUND when there is none. */
	int (*file)(const struct model_src *src, const char *path, tp_lineage_file *f);
	/* A small text file (an index); TP_ENOTFOUND when absent. */
	int (*text)(const struct model_src *src, const char *path, tp_buf *out);
	git_tree *tree;
} model_src;

static int add_found(const model_src *src, const char *path, tp_lineage_candidate *c)
{
	tp_lineage_file f;
	int rc = path ? src->file(src, path, &f) : tp_error_set(TP_ENOMEM, "out of memory");
	if (rc)
		return rc;
	rc = candidate_add_file(c, &f);
	file_clear(&f);
	return rc;
}

/* Every shard an index lists; TP_ENOTFOUND unless all of them are there. */
static int add_shards(const model_src *src, const char *dir, const tp_buf *index,
		      tp_lineage_candidate *c)
{
	char **shards = NULL;
	size_t n = 0;
	int rc = index_shards(index->ptr, index->len, &shards, &n);
	for (size_t i = 0; !rc && i < n; i++) {
		char *sp = path_in(dir, shards[i]);
		rc = add_found(src, sp, c);
		free(sp);
	}
	tp_lineage_paths_free(shards, n);
	if (rc || c->nfiles == 0) {
		candidate_clear(c);
		return TP_ENOTFOUND;
	}
	return 0;
}

/* Fill c with the model in directory dir: the file named like the target,
 * the shards of its index, or model.safetensors. TP_ENOTFOUND when there
 * is no model. */
static int resolve_model(const model_src *src, const char *dir, const char *fname,
			 tp_lineage_candidate *c)
{
	char *p = path_in(dir, fname);
	tp_buf idx;
	int rc = add_found(src, p, c);
	free(p);
	if (rc != TP_ENOTFOUND)
		return rc;
	p = path_in(dir, INDEX_FILE);
	rc = p ? src->text(src, p, &idx) : tp_error_set(TP_ENOMEM, "out of memory");
	free(p);
	if (rc == 0) {
		rc = add_shards(src, dir, &idx, c);
		tp_buf_free(&idx);
		return rc;
	}
	if (rc != TP_ENOTFOUND)
		return rc;
	p = path_in(dir, SINGLE_FILE);
	rc = add_found(src, p, c);
	free(p);
	return rc;
}

static int tree_file(const model_src *src, const char *path, tp_lineage_file *f)
{
	return tree_pointer(src->tree, path, f);
}

static int tree_text(const model_src *src, const char *path, tp_buf *out)
{
	int rc = tree_read(src->tree, path, METADATA_MAX, out);
	return rc == TP_ETOOBIG ? TP_ENOTFOUND : rc;
}

/* Fill c with the model at ref in tree: ref itself if it is a pointer, else
 * the model in directory ref. TP_ENOTFOUND when there is none. */
static int resolve_in_tree(git_tree *tree, const char *ref, const char *fname,
			   tp_lineage_candidate *c)
{
	model_src src = { tree_file, tree_text, tree };
	int rc = *ref ? add_found(&src, ref, c) : TP_ENOTFOUND;
	return rc == TP_ENOTFOUND ? resolve_model(&src, ref, fname, c) : rc;
}

/* ---- the Hugging Face cache -------------------------------------------- */

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
	const char *base = path_base(real);
	if (tp_oid_valid(base))
		memcpy(oid, base, sizeof(oid));
	else if (tp_sha256_file(real, oid, NULL) != 0)
		return TP_ENOTFOUND;
	return file_set(f, shown, oid, (uint64_t)st.st_size, real);
}

static int hf_src_file(const model_src *src, const char *path, tp_lineage_file *f)
{
	(void)src;
	return hf_file(path, path, f);
}

static int hf_src_text(const model_src *src, const char *path, tp_buf *out)
{
	(void)src;
	struct stat st;
	if (!hf_regular(path, &st))
		return TP_ENOTFOUND;
	tp_buf_init(out, METADATA_MAX);
	/* Still refuses what became a FIFO since hf_regular looked. */
	int rc = tp_fs_read_regular(path, out);
	if (rc)
		tp_buf_free(out);
	return rc == TP_EINVAL || rc == TP_ENOTFOUND ? TP_ENOTFOUND : rc;
}

static int hf_snapshot(const char *snap, const char *fname, tp_lineage_candidate *c)
{
	model_src src = { hf_src_file, hf_src_text, NULL };
	int rc = resolve_model(&src, snap, fname, c);
	return rc == TP_ENOMEM ? rc : rc ? TP_ENOTFOUND : 0;
}

/* models--org--name/snapshots/<rev>/, preferring the revision refs/main
 * names, then any snapshot. */
static int hf_cache_find(const char *name, const char *fname, tp_lineage_candidate *c)
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

/* ---- resolving a base reference --------------------------------------------- */

typedef struct search {
	tp_git_repo *repo;
	const git_oid *commit; /* where the target is */
	git_tree *tree;        /* that commit's tree */
	const char *dir;   /* the target's directory */
	const char *fname; /* the target's file name */
	tp_lineage *out;
} search;

/* An "oid:<sha256>" reference: that object, wherever it is. Its size comes
 * from any pointer to it, else its copy in this repository's LFS storage,
 * else it is TP_LINEAGE_SIZE_UNKNOWN: the object may be only in the store,
 * which lineage does not read (the caller does). */
static int resolve_oid_ref(search *s, const char *ref, tp_lineage_candidate *c)
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
	int rc = file_set(&f, ref, ref + 4, size, NULL);
	if (!rc)
		rc = candidate_add_file(c, &f);
	file_clear(&f);
	return rc;
}

/* A repository path (relative to the target's directory, or from the
 * root), a hub id mapped by tenpak.<id>.model, or a hub id in the HF cache. */
static int resolve_name(search *s, const char *name, tp_lineage_candidate *c, const char **how)
{
	if (strncmp(name, "oid:", 4) == 0) {
		*how = "object";
		return resolve_oid_ref(s, name, c);
	}
	char *rel = path_in(s->dir, name), *p;
	int rc = TP_ENOTFOUND;
	for (int i = 0; i < 2 && rc == TP_ENOTFOUND; i++) {
		p = path_normalize(i == 0 ? (rel ? rel : name) : name);
		if (p && strcmp(p, s->dir) != 0)
			rc = resolve_in_tree(s->tree, p, s->fname, c);
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
			p = path_normalize(mapped);
			rc = p ? resolve_in_tree(s->tree, p, s->fname, c) : TP_ENOTFOUND;
			free(p);
		}
		free(mapped);
		return rc;
	}
	*how = "Hugging Face cache";
	return strchr(name, '/') ? hf_cache_find(name, s->fname, c) : TP_ENOTFOUND;
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

static int add_named(search *s, tp_lineage_source src, const char *name, const char *where)
{
	tp_lineage_candidate c = { .source = src };
	const char *how = "";
	int rc = resolve_name(s, name, &c, &how);
	if (rc == TP_ENOTFOUND) {
		tp_trace("%s: base \"%s\" (%s) not found", s->out->target.path, name, where);
		candidate_clear(&c);
		return unresolved_add(s->out, name, where, how);
	}
	if (!rc)
		rc = set_evidence(&c, "%s = %s (%s)", where, name, how);
	if (!rc)
		rc = lineage_add(s->out, &c);
	candidate_clear(&c);
	return rc;
}

/* ---- sources ------------------------------------------------------------- */

typedef struct override_ctx {
	search *s;
	int rc;
} override_ctx;

/* tenpak.<pattern>.base entries whose pattern matches the target. (Matched
 * by hand: libgit2's regex-based glob iterator leaks with PCRE2.) */
static int override_entry(const git_config_entry *e, void *vctx)
{
	override_ctx *o = vctx;
	static const char pre[] = "tenpak.", suf[] = ".base";
	size_t len = strlen(e->name);
	if (len <= sizeof(pre) - 1 + sizeof(suf) - 1 || strncmp(e->name, pre, sizeof(pre) - 1) ||
	    strcmp(e->name + len - (sizeof(suf) - 1), suf))
		return 0;
	char pattern[1024];
	size_t plen = len - (sizeof(pre) - 1) - (sizeof(suf) - 1);
	if (plen >= sizeof(pattern))
		return 0;
	memcpy(pattern, e->name + sizeof(pre) - 1, plen);
	pattern[plen] = '\0';
	if (fnmatch(pattern, o->s->out->target.path, FNM_PATHNAME) != 0)
		return 0;
	char *where = where_text("git config tenpak.%s.base", pattern);
	o->rc = where ? add_named(o->s, TP_LINEAGE_SOURCE_OVERRIDE, e->value, where)
		      : tp_error_set(TP_ENOMEM, "out of memory");
	free(where);
	return o->rc ? -1 : 0;
}

static int overrides(search *s)
{
	git_config *cfg = NULL;
	override_ctx o = { s, 0 };
	if (git_repository_config_snapshot(&cfg, s->repo->repo) != 0)
		return tp_git_fail(TP_ECONFIG, "reading git config");
	git_config_foreach(cfg, override_entry, &o);
	git_config_free(cfg);
	return o.rc;
}

static int from_json_field(search *s, const char *file, const char *field)
{
	char *path = path_in(s->dir, file);
	tp_buf text;
	int rc = path ? tree_read(s->tree, path, METADATA_MAX, &text) : TP_ENOMEM;
	if (rc) {
		free(path);
		return rc == TP_ENOMEM ? rc : 0;
	}
	cJSON *root = cJSON_ParseWithLength(text.ptr, text.len);
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, field);
	if (cJSON_IsString(v) && v->valuestring[0]) {
		char *where = where_text("%s: %s", path, field);
		rc = where ? add_named(s, TP_LINEAGE_SOURCE_METADATA, v->valuestring, where)
			   : tp_error_set(TP_ENOMEM, "out of memory");
		free(where);
	}
	cJSON_Delete(root);
	tp_buf_free(&text);
	free(path);
	return rc;
}

/* Strip YAML quoting and flow-list punctuation around one scalar. */
static char *yaml_scalar(char *a)
{
	char *b = a + strlen(a);
	while (a < b && strchr(" \t[\"'", *a))
		a++;
	while (b > a && strchr(" \t\r]\"',", b[-1]))
		b--;
	*b = '\0';
	return a;
}

/* base_model in the model card's YAML front matter: a string, a flow list
 * [a, b] or a block list of "- a" lines. */
static int from_model_card(search *s)
{
	char *path = path_in(s->dir, "README.md");
	tp_buf text;
	int rc = path ? tree_read(s->tree, path, METADATA_MAX, &text) : TP_ENOMEM;
	if (rc) {
		free(path);
		return rc == TP_ENOMEM ? rc : 0;
	}
	char *where = where_text("%s: base_model", path);
	if (!where)
		rc = tp_error_set(TP_ENOMEM, "out of memory");
	bool in_front = false, in_list = false;
	char *save = NULL;
	for (char *line = strtok_r(text.ptr, "\n", &save); line && !rc;
	     line = strtok_r(NULL, "\n", &save)) {
		line[strcspn(line, "\r")] = '\0';
		if (strcmp(line, "---") == 0) {
			if (in_front)
				break;
			in_front = true;
			continue;
		}
		if (!in_front)
			break; /* no front matter */
		if (in_list && (line[0] == ' ' || line[0] == '-')) {
			char *item = strchr(line, '-');
			if (item)
				rc = add_named(s, TP_LINEAGE_SOURCE_METADATA, yaml_scalar(item + 1), where);
			continue;
		}
		in_list = false;
		if (strncmp(line, "base_model:", 11) != 0)
			continue;
		char *value = yaml_scalar(line + 11);
		if (!*value) {
			in_list = true;
			continue;
		}
		for (char *save2 = NULL, *item = strtok_r(value, ",", &save2); item && !rc;
		     item = strtok_r(NULL, ",", &save2))
			rc = add_named(s, TP_LINEAGE_SOURCE_METADATA, yaml_scalar(item), where);
	}
	tp_buf_free(&text);
	free(where);
	free(path);
	return rc;
}

/* The nearest ancestor of the target's commit (newest first) where the
 * target's directory held a different model than the target. */
static int from_history(search *s)
{
	tp_lineage_walk *walk = NULL;
	git_commit *commit = NULL;
	int rc = tp_lineage_walk_new(&walk, s->repo->repo, s->commit, HISTORY_MAX);
	while (!rc && (rc = tp_lineage_walk_next(walk, &commit)) == 0) {
		git_tree *tree = NULL;
		tp_lineage_candidate c = { .source = TP_LINEAGE_SOURCE_HISTORY };
		int r = git_commit_tree(&tree, commit) == 0 ? resolve_in_tree(tree, s->dir, s->fname, &c)
							    : TP_ENOTFOUND;
		bool is_target = false;
		for (size_t i = 0; i < c.nfiles; i++)
			is_target |= strcmp(c.files[i].oid, s->out->target.oid) == 0;
		if (r == 0 && !is_target) {
			char hex[GIT_OID_HEXSZ + 1];
			git_oid_tostr(hex, sizeof(hex), git_commit_id(commit));
			rc = set_evidence(&c, "previous version in commit %.12s", hex);
			if (!rc)
				rc = lineage_add(s->out, &c);
			if (!rc)
				rc = TP_ENOTFOUND; /* found: stop */
		} else if (r != 0 && r != TP_ENOTFOUND) {
			rc = r;
		}
		candidate_clear(&c);
		git_tree_free(tree);
		git_commit_free(commit);
	}
	tp_lineage_walk_free(walk);
	return rc == TP_ENOTFOUND ? 0 : rc;
}

/* ---- public -------------------------------------------------------------- */

void tp_lineage_free(tp_lineage *l)
{
	if (!l)
		return;
	file_clear(&l->target);
	for (size_t i = 0; i < l->ncandidates; i++)
		candidate_clear(&l->candidates[i]);
	free(l->candidates);
	for (size_t i = 0; i < l->nunresolved; i++) {
		tp_lineage_unresolved *u = &l->unresolved[i];
		free(u->name);
		free(u->where);
		free(u->reason);
		free(u->key);
	}
	free(l->unresolved);
	free(l);
}

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
	char *dir = path_dir(e->path);
	int rc = !l || !dir ? tp_error_set(TP_ENOMEM, "out of memory")
			    : file_set(&l->target, e->path, e->oid, e->size, NULL);
	search s = { r, &e->commit, tree, dir, path_base(e->path), l };
	if (!rc)
		rc = overrides(&s);
	if (!rc)
		rc = from_json_field(&s, "config.json", "_name_or_path");
	if (!rc)
		rc = from_json_field(&s, "config.json", "base_model");
	if (!rc)
		rc = from_model_card(&s);
	if (!rc)
		rc = from_json_field(&s, "adapter_config.json", "base_model_name_or_path");
	if (!rc)
		rc = from_history(&s);
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
	char *norm = path_normalize(path);
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
	char **out = NULL;
	size_t count = 0;
	static const char ext[] = ".safetensors";
	if (!rc)
		tp_lineage_index_head(r, &head, &nhead);
	for (size_t i = 0; !rc && i < nhead; i++) {
		const char *p = head[i].path;
		size_t len = strlen(p);
		if (len < sizeof(ext) - 1 || strcmp(p + len - (sizeof(ext) - 1), ext) != 0)
			continue;
		char **grown = realloc(out, (count + 1) * sizeof(*out));
		if (!grown || !(grown[count] = strdup(p))) {
			out = grown ? grown : out;
			rc = tp_error_set(TP_ENOMEM, "out of memory");
			break;
		}
		out = grown;
		count++;
	}
	if (rc) {
		tp_lineage_paths_free(out, count);
		return rc;
	}
	*paths = out;
	*n = count;
	return 0;
}

void tp_lineage_paths_free(char **paths, size_t n)
{
	for (size_t i = 0; paths && i < n; i++)
		free(paths[i]);
	free(paths);
}
