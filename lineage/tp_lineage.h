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
int tp_lineage_config_set(tp_lineage_config *c, const char *key, const char *value);
/* Remove key from this file; an absent key is not an error. */
int tp_lineage_config_unset(tp_lineage_config *c, const char *key);

#endif
