/*
 * Repository paths, and finding a model in a directory: the file named
 * like the target, every shard of a model.safetensors.index.json (parsed by
 * delta's one index parser, with its caps), or model.safetensors. The
 * directory is one of a git tree (tree_* here) or of the Hugging Face
 * cache (hfcache.c).
 */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "lineage_internal.h"
#include "tp_delta.h"

#define INDEX_FILE "model.safetensors.index.json"
#define SINGLE_FILE "model.safetensors"

/* ---- paths ------------------------------------------------------------- */

char *tp_lineage_path_normalize(const char *path)
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

char *tp_lineage_path_dir(const char *path)
{
	const char *slash = strrchr(path, '/');
	return slash ? strndup(path, (size_t)(slash - path)) : strdup("");
}

const char *tp_lineage_path_base(const char *path)
{
	const char *slash = strrchr(path, '/');
	return slash ? slash + 1 : path;
}

char *tp_lineage_path_in(const char *dir, const char *name)
{
	tp_buf b = TP_BUF_INIT(PATH_MAX);
	if (tp_buf_addf(&b, "%s%s%s", dir, *dir ? "/" : "", name)) {
		tp_buf_free(&b);
		return NULL;
	}
	return tp_buf_detach(&b);
}

/* ---- a model in a directory -------------------------------------------- */

static int add_found(const tp_lineage_model_src *src, const char *path, tp_lineage_candidate *c)
{
	tp_lineage_file f;
	int rc = path ? src->file(src, path, &f) : tp_error_set(TP_ENOMEM, "out of memory");
	if (rc)
		return rc;
	rc = tp_lineage_candidate_add_file(c, &f);
	tp_lineage_file_clear(&f);
	return rc;
}

/* Every shard the index at path lists; TP_ENOTFOUND unless all of them
 * are there. An index delta's parser refuses (bad JSON, a name that is not
 * a plain file name, too many shards) has no model. */
static int add_shards(const tp_lineage_model_src *src, const char *dir, const char *path,
		      const tp_buf *index, tp_lineage_candidate *c)
{
	char **shards = NULL;
	size_t n = 0;
	int rc = tp_safetensors_index_parse(index->ptr, index->len, &shards, &n);
	if (rc && rc != TP_ENOMEM)
		tp_trace("%s: %s", path, tp_error_last());
	for (size_t i = 0; !rc && i < n; i++) {
		char *sp = tp_lineage_path_in(dir, shards[i]);
		rc = add_found(src, sp, c);
		free(sp);
	}
	tp_safetensors_shards_free(shards, n);
	if (rc || c->nfiles == 0) {
		tp_lineage_candidate_clear(c);
		return TP_ENOTFOUND;
	}
	return 0;
}

int tp_lineage_model_resolve(const tp_lineage_model_src *src, const char *dir, const char *fname,
			     tp_lineage_candidate *c)
{
	char *p = tp_lineage_path_in(dir, fname);
	tp_buf idx;
	int rc = add_found(src, p, c);
	free(p);
	if (rc != TP_ENOTFOUND)
		return rc;
	p = tp_lineage_path_in(dir, INDEX_FILE);
	rc = p ? src->text(src, p, &idx) : tp_error_set(TP_ENOMEM, "out of memory");
	if (rc == 0) {
		rc = add_shards(src, dir, p, &idx, c);
		tp_buf_free(&idx);
		free(p);
		return rc;
	}
	free(p);
	if (rc != TP_ENOTFOUND)
		return rc;
	p = tp_lineage_path_in(dir, SINGLE_FILE);
	rc = add_found(src, p, c);
	free(p);
	return rc;
}

static int tree_file(const tp_lineage_model_src *src, const char *path, tp_lineage_file *f)
{
	return tp_lineage_tree_pointer(src->tree, path, f);
}

static int tree_text(const tp_lineage_model_src *src, const char *path, tp_buf *out)
{
	int rc = tp_lineage_tree_read(src->tree, path, TP_LINEAGE_METADATA_MAX, out);
	return rc == TP_ETOOBIG ? TP_ENOTFOUND : rc;
}

int tp_lineage_tree_resolve(git_tree *tree, const char *ref, const char *fname,
			    tp_lineage_candidate *c)
{
	tp_lineage_model_src src = { .file = tree_file, .text = tree_text, .tree = tree };
	int rc = *ref ? add_found(&src, ref, c) : TP_ENOTFOUND;
	return rc == TP_ENOTFOUND ? tp_lineage_model_resolve(&src, ref, fname, c) : rc;
}
