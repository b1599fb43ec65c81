/*
 * tenpak lineage: everything tenpak learns from git (libgit2 lives here).
 *
 * Today: opening the repository git-lfs runs us in, locating its LFS
 * directory, and reading or writing git config. Base-model detection for
 * deltas builds on the same repository handle.
 */
#ifndef TP_LINEAGE_H
#define TP_LINEAGE_H

#include <stdbool.h>

#include "tp_common.h"

typedef struct tp_lineage_repo tp_lineage_repo;

/* Open the repository of this process the way git does: $GIT_DIR if set,
 * else discovered upward from the current directory (bare repositories,
 * worktrees and submodules included). TP_ENOTFOUND outside a repository. */
int tp_lineage_repo_open(tp_lineage_repo **out);
void tp_lineage_repo_free(tp_lineage_repo *r);
/* The directory git-lfs keeps objects and temp files in: lfs.storage if
 * set (relative to the common git dir), else <common git dir>/lfs. */
int tp_lineage_repo_lfs_dir(tp_lineage_repo *r, char **out);
/* The git dir shared by all worktrees of the repository. */
const char *tp_lineage_repo_common_dir(tp_lineage_repo *r);

/* Read key from the repository's effective config (local, global, system),
 * or with r == NULL from the global and system config only.
 * TP_ENOTFOUND when the key is unset. */
int tp_lineage_config_get(tp_lineage_repo *r, const char *key, char **out);

typedef enum {
	TP_LINEAGE_SCOPE_LOCAL = 1, /* .git/config of the repository at cwd */
	TP_LINEAGE_SCOPE_GLOBAL,    /* the user's ~/.gitconfig */
} tp_lineage_scope;

/* One config file opened for writing. */
typedef struct tp_lineage_config tp_lineage_config;

int tp_lineage_config_open(tp_lineage_config **out, tp_lineage_scope scope);
void tp_lineage_config_free(tp_lineage_config *c);
const char *tp_lineage_config_path(const tp_lineage_config *c);
/* Value of key in this file only; TP_ENOTFOUND when unset there. */
int tp_lineage_config_read(tp_lineage_config *c, const char *key, char **out);
/* Like tp_lineage_config_read, but a value that comes from a file named by
 * include.path is TP_ENOTFOUND: only this file's own keys can be unset. */
int tp_lineage_config_read_own(tp_lineage_config *c, const char *key, char **out);
/* Set key in this file; a key that already has value (here or through
 * include.path) is left as it is. */
int tp_lineage_config_set(tp_lineage_config *c, const char *key, const char *value);
/* Remove key from this file; an absent key is not an error. */
int tp_lineage_config_unset(tp_lineage_config *c, const char *key);
/* Call fn(ctx, key, value) for each key of this file (not of its include.path
 * files) that starts with prefix and ends with suffix, in canonical form
 * ("lfs.<url>.standalonetransferagent"); a non-zero return from fn stops and
 * is returned. fn may set or unset keys of c. */
typedef int (*tp_lineage_config_fn)(void *ctx, const char *key, const char *value);
int tp_lineage_config_each(tp_lineage_config *c, const char *prefix, const char *suffix,
			   tp_lineage_config_fn fn, void *ctx);

/* ---- lineage: which base a model file was derived from ----------------- */

typedef enum {
	TP_LINEAGE_SOURCE_OVERRIDE = 1, /* git config tenpak.<path-or-glob>.base */
	TP_LINEAGE_SOURCE_METADATA,     /* config.json, README.md, adapter_config.json */
	TP_LINEAGE_SOURCE_HISTORY,      /* the previous version of the same path */
} tp_lineage_source;

const char *tp_lineage_source_name(tp_lineage_source s);

/* The size of a base named by "oid:<sha256>" that no pointer in the
 * repository and no local LFS copy knows: it may exist only in the store,
 * which lineage does not read; the caller asks the store for it. */
#define TP_LINEAGE_SIZE_UNKNOWN UINT64_MAX
/* Evidence longer than this is cut, ending in "..." (it fits a manifest). */
#define TP_LINEAGE_EVIDENCE_MAX 4096

/* One LFS file: a model file or one shard of one. */
typedef struct tp_lineage_file {
	char *path;  /* repository path, or an absolute path in the HF cache */
	char oid[TP_OID_HEXLEN + 1];
	uint64_t size; /* or TP_LINEAGE_SIZE_UNKNOWN for an oid: reference */
	char *local; /* absolute path of its bytes on this machine if known
		      * outside git-lfs (the HF cache), else NULL */
} tp_lineage_file;

typedef struct tp_lineage_candidate {
	tp_lineage_source source;
	char *evidence;          /* "finetuned/config.json: _name_or_path = base" */
	size_t nfiles;           /* > 1 for a sharded base */
	tp_lineage_file *files;
} tp_lineage_candidate;

/* A base named in metadata or an override that resolves to nothing. */
typedef struct tp_lineage_unresolved {
	char *name;   /* as written: "acme/llama-base" */
	char *where;  /* "finetuned/config.json: _name_or_path" */
	char *reason; /* why it resolved to nothing */
	char *key;    /* the git config key that would resolve it:
		       * tenpak.<name>.model for a hub id, else
		       * tenpak.<target path>.base */
} tp_lineage_unresolved;

typedef struct tp_lineage {
	tp_lineage_file target;
	size_t ncandidates;
	tp_lineage_candidate *candidates; /* most trusted first, no duplicates */
	size_t nunresolved;
	tp_lineage_unresolved *unresolved; /* one per name */
} tp_lineage;

/* Lineage of the LFS object oid, found through a path whose pointer carries
 * it: at HEAD or a local branch tip, else in the commit (reachable from HEAD,
 * a branch, a tag or a remote-tracking ref) that last changed a path to it.
 * Metadata is read from that commit's tree and history from its ancestry,
 * so every version of a push has its lineage. TP_ENOTFOUND when no such
 * path exists; a file without any base has ncandidates == 0. The first call
 * indexes the repository's history, cached in <git-common-dir>/tenpak/. */
int tp_lineage_find(tp_lineage **out, tp_lineage_repo *r, const char *oid);
/* Lineage of the LFS file at path in HEAD. */
int tp_lineage_find_path(tp_lineage **out, tp_lineage_repo *r, const char *path);
void tp_lineage_free(tp_lineage *l);
/* Repository paths of LFS files at HEAD whose names end in .safetensors. */
int tp_lineage_list_models(tp_lineage_repo *r, char ***paths, size_t *n);
void tp_lineage_paths_free(char **paths, size_t n);
/* Path of an LFS object in this repository's local LFS storage (it may not
 * exist). */
int tp_lineage_repo_object_path(tp_lineage_repo *r, const char *oid, char **out);
/* A copy of object oid (of the given size) already on this machine: the
 * repository's LFS storage (r may be NULL), else a blob of the local Hugging
 * Face cache. TP_ENOTFOUND if neither has it. */
int tp_lineage_find_local(tp_lineage_repo *r, const char *oid, uint64_t size, char **path);

#endif
