/*
 * Private to lineage/: what its files share. git.c (tp_git.h) owns the
 * repository handle; index.c the pointer index and the ancestry walk;
 * pointer.c LFS pointers and blobs in git trees; result.c the tp_lineage
 * result being built; model.c repository paths and finding a model in a
 * directory; hfcache.c the Hugging Face cache; resolve.c turning a name into
 * a candidate or an unresolved name; sources.c overrides and metadata;
 * history.c the previous version; detect.c the public entry points.
 */
#ifndef TP_LINEAGE_INTERNAL_H
#define TP_LINEAGE_INTERNAL_H

#include <git2.h>

#include "tp_lineage.h"

#define TP_LINEAGE_POINTER_MAX 1024 /* LFS pointers are ~130 bytes */
#define TP_LINEAGE_NOT_TIP (-1)
/* config.json, README.md, model.safetensors.index.json: larger is absent */
#define TP_LINEAGE_METADATA_MAX (4u << 20)

/* An LFS pointer found in git: at a ref tip, or where a commit changed a
 * path to it (compared with the commit's first parent). */
typedef struct tp_lineage_entry {
	char *path;
	char oid[TP_OID_HEXLEN + 1];
	uint64_t size;
	git_oid commit; /* the tip, or the commit that changed path to oid */
	int64_t time;   /* that commit's committer time */
	int tip;        /* 0 = HEAD, 1... = a local branch, or TP_LINEAGE_NOT_TIP */
	size_t seq;     /* order found, to keep sorting stable */
} tp_lineage_entry;

/* Index of LFS pointers, built on first use (index.c). */
typedef struct tp_lineage_index tp_lineage_index;

struct tp_git_repo {
	git_repository *repo;
	tp_lineage_index *index;
};

/* Turn libgit2's last error into ours, keeping its text. */
int tp_git_fail(int code, const char *what);


/* Build the index of every LFS pointer at HEAD and the local branch tips,
 * and in the history of HEAD, branches, tags and remote-tracking refs. The
 * history part is cached in <git-common-dir>/tenpak/pointer-index, so only
 * commits not seen before are read. Does nothing once built. */
int tp_lineage_index_build(tp_git_repo *r);
void tp_lineage_index_clear(tp_git_repo *r);
/* Entries for oid, most preferred first (tips in order, then history,
 * newest commit first): *n of them at *first. */
void tp_lineage_index_find(tp_git_repo *r, const char *oid,
			   const tp_lineage_entry *const **first, size_t *n);
/* Entries of the pointers at HEAD, in tree order. */
void tp_lineage_index_head(tp_git_repo *r, const tp_lineage_entry **first, size_t *n);

/* Ancestors of a commit, itself first, then newest first by committer time,
 * at most max of them. A parent that is missing (the boundary of a shallow
 * clone) ends that line of history instead of failing the walk. */
typedef struct tp_lineage_walk tp_lineage_walk;
int tp_lineage_walk_new(tp_lineage_walk **out, git_repository *repo, const git_oid *start,
			size_t max);
/* The next commit (the caller frees it); TP_ENOTFOUND at the end. */
int tp_lineage_walk_next(tp_lineage_walk *w, git_commit **out);
void tp_lineage_walk_free(tp_lineage_walk *w);

/* ---- LFS pointers and blobs in git trees (pointer.c) ------------------- */

/* Contents of the blob at path in tree into out (initialised here, capped
 * at cap). TP_ENOTFOUND when there is no blob there, TP_ETOOBIG (no
 * message) when it is larger than cap. */
int tp_lineage_tree_read(git_tree *tree, const char *path, size_t cap, tp_buf *out);
/* The LFS file whose pointer is at path in tree; TP_ENOTFOUND when path
 * holds no pointer. */
int tp_lineage_tree_pointer(git_tree *tree, const char *path, tp_lineage_file *f);

/* ---- the result being built (result.c) --------------------------------- */

int tp_lineage_file_set(tp_lineage_file *f, const char *path, const char *oid, uint64_t size,
			const char *local);
void tp_lineage_file_clear(tp_lineage_file *f);
void tp_lineage_candidate_clear(tp_lineage_candidate *c);
/* Append a copy of f to c. */
int tp_lineage_candidate_add_file(tp_lineage_candidate *c, const tp_lineage_file *f);
/* Append c to l (taking it; c is cleared either way) unless it is empty,
 * the target itself or a duplicate of a more trusted candidate. */
int tp_lineage_candidate_add(tp_lineage *l, tp_lineage_candidate *c);
/* Set c's evidence, cut at TP_LINEAGE_EVIDENCE_MAX (never fails on length). */
int tp_lineage_candidate_evidence(tp_lineage_candidate *c, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* Where a name was found ("finetuned/config.json: _name_or_path"), cut
 * like evidence; NULL when out of memory. */
char *tp_lineage_where_text(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ---- repository paths and models in a directory (model.c) -------------- */

/* Normalize a repository path: resolve "." and "..", drop empty parts.
 * NULL (no error message) when it climbs out of the repository. */
char *tp_lineage_path_normalize(const char *path);
/* Directory part of a repository path ("" at the root). */
char *tp_lineage_path_dir(const char *path);
const char *tp_lineage_path_base(const char *path);
/* dir/name ("name" when dir is ""); NULL when out of memory. */
char *tp_lineage_path_in(const char *dir, const char *name);

/* Where model files are looked up: a git tree (files are LFS pointers) or
 * a directory of the Hugging Face cache (files are the bytes). */
typedef struct tp_lineage_model_src {
	/* The LFS file at path; TP_ENOTFOUND when there is none. */
	int (*file)(const struct tp_lineage_model_src *src, const char *path, tp_lineage_file *f);
	/* A small text file (an index); TP_ENOTFOUND when absent. */
	int (*text)(const struct tp_lineage_model_src *src, const char *path, tp_buf *out);
	git_tree *tree;
} tp_lineage_model_src;

/* Fill c with the model in directory dir: the file named like the target
 * (fname), the shards of model.safetensors.index.json (all of them, or
 * none), or model.safetensors. TP_ENOTFOUND when there is no model. */
int tp_lineage_model_resolve(const tp_lineage_model_src *src, const char *dir, const char *fname,
			     tp_lineage_candidate *c);
/* Fill c with the model at ref in tree: ref itself if it is a pointer, else
 * the model in directory ref. TP_ENOTFOUND when there is none. */
int tp_lineage_tree_resolve(git_tree *tree, const char *ref, const char *fname,
			    tp_lineage_candidate *c);

/* ---- the Hugging Face cache (hfcache.c) --------------------------------- */

/* Fill c with hub id name's model (models--org--name/snapshots/<rev>/),
 * preferring the revision refs/main names. TP_ENOTFOUND when the cache
 * has none. */
int tp_lineage_hf_find(const char *name, const char *fname, tp_lineage_candidate *c);

/* ---- one target's search (detect.c runs the sources in order) ---------- */

typedef struct tp_lineage_search {
	tp_git_repo *repo;
	const git_oid *commit; /* where the target is */
	git_tree *tree;        /* that commit's tree */
	const char *dir;       /* the target's directory */
	const char *fname;     /* the target's file name */
	tp_lineage *out;
} tp_lineage_search;

/* Resolve name (found at where) to a candidate of source src and add it,
 * or record it as unresolved (resolve.c). */
int tp_lineage_add_named(tp_lineage_search *s, tp_lineage_source src, const char *name,
			 const char *where);
/* git config tenpak.<path-or-glob>.base (sources.c). */
int tp_lineage_from_overrides(tp_lineage_search *s);
/* config.json (_name_or_path, base_model), the model card's base_model,
 * adapter_config.json (base_model_name_or_path), in that order (sources.c). */
int tp_lineage_from_metadata(tp_lineage_search *s);
/* The previous version of the target's directory (history.c). */
int tp_lineage_from_history(tp_lineage_search *s);

#endif
