/*
 * tenpak lineage: which base model an LFS file was derived from.
 *
 * Promises: everything is read from git (the tree and history of a commit
 * that holds the file, found through an index of every reachable pointer),
 * never from the work tree, plus the local Hugging Face cache for hub ids;
 * candidates come most trusted first, each with evidence a person can
 * check, and a name that resolves to nothing is reported with the git
 * config key that would resolve it. Inputs are untrusted: metadata files
 * and indexes are capped and a malformed one counts as absent, never as a
 * reason to fail a push. The repository handle and git config are tp_git.h.
 */
#ifndef TP_LINEAGE_H
#define TP_LINEAGE_H

#include <stdbool.h>

#include "tp_common.h"
#include "tp_git.h"

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
int tp_lineage_find(tp_lineage **out, tp_git_repo *r, const char *oid);
/* Lineage of the LFS file at path in HEAD. */
int tp_lineage_find_path(tp_lineage **out, tp_git_repo *r, const char *path);
void tp_lineage_free(tp_lineage *l);
/* Repository paths of LFS files at HEAD whose names end in .safetensors. */
int tp_lineage_list_models(tp_git_repo *r, char ***paths, size_t *n);
void tp_lineage_paths_free(char **paths, size_t n);
/* A copy of object oid (of the given size) already on this machine: the
 * repository's LFS storage (r may be NULL), else a blob of the local Hugging
 * Face cache. TP_ENOTFOUND if neither has it. */
int tp_lineage_find_local(tp_git_repo *r, const char *oid, uint64_t size, char **path);
/* Parse a git-lfs pointer file (spec v1): false when p is not one. */
bool tp_lineage_pointer_parse(const char *p, size_t n, char oid[TP_OID_HEXLEN + 1],
			      uint64_t *size);

#endif
