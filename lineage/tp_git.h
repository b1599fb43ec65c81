/*
 * tenpak git: the repository and git config, through libgit2 (linked only
 * into lineage/, so every other module reaches git through this header).
 *
 * Promises: a repository is found the way git finds it ($GIT_DIR, else
 * upward from the current directory, $GIT_CEILING_DIRECTORIES honoured,
 * GIT_CONFIG_NOSYSTEM too); config is read as git reads it (local, global,
 * system, include.path) and written to one file at a time, never into a
 * file another one includes; nothing here touches the work tree. All
 * functions return 0 or a negative TP_E* code and set tp_error_last();
 * TP_ENOTFOUND means "not there" (no repository, key unset), not a failure.
 */
#ifndef TP_GIT_H
#define TP_GIT_H

#include <stdbool.h>

#include "tp_common.h"

/* An open repository. (It also caches lineage's pointer index.) */
typedef struct tp_git_repo tp_git_repo;

/* Open the repository of this process the way git does: $GIT_DIR if set,
 * else discovered upward from the current directory (bare repositories,
 * worktrees and submodules included). TP_ENOTFOUND outside a repository. */
int tp_git_repo_open(tp_git_repo **out);
void tp_git_repo_free(tp_git_repo *r);
/* The directory git-lfs keeps objects and temp files in: lfs.storage if
 * set (relative to the common git dir), else <common git dir>/lfs. */
int tp_git_repo_lfs_dir(tp_git_repo *r, char **out);
/* Path of an LFS object in this repository's local LFS storage (it may not
 * exist). */
int tp_git_repo_object_path(tp_git_repo *r, const char *oid, char **out);
/* The git dir shared by all worktrees of the repository. */
const char *tp_git_repo_common_dir(tp_git_repo *r);
/* This worktree's git dir (the common one outside linked worktrees). */
const char *tp_git_repo_dir(tp_git_repo *r);

/* Read key from the repository's effective config (local, global, system),
 * or with r == NULL from the global and system config only.
 * TP_ENOTFOUND when the key is unset. */
int tp_git_config_get(tp_git_repo *r, const char *key, char **out);

typedef enum {
	TP_GIT_SCOPE_LOCAL = 1, /* .git/config of the repository at cwd */
	TP_GIT_SCOPE_GLOBAL,    /* the user's ~/.gitconfig */
} tp_git_scope;

/* One config file opened for writing. */
typedef struct tp_git_config tp_git_config;

/* TP_ENOTFOUND for TP_GIT_SCOPE_LOCAL outside a repository. */
int tp_git_config_open(tp_git_config **out, tp_git_scope scope);
void tp_git_config_free(tp_git_config *c);
const char *tp_git_config_path(const tp_git_config *c);
/* Value of key in this file only; TP_ENOTFOUND when unset there. */
int tp_git_config_read(tp_git_config *c, const char *key, char **out);
/* Like tp_git_config_read, but a value that comes from a file named by
 * include.path is TP_ENOTFOUND: only this file's own keys can be unset. */
int tp_git_config_read_own(tp_git_config *c, const char *key, char **out);
/* Set key in this file; a key that already has value (here or through
 * include.path) is left as it is. */
int tp_git_config_set(tp_git_config *c, const char *key, const char *value);
/* Remove key from this file; an absent key is not an error. */
int tp_git_config_unset(tp_git_config *c, const char *key);
/* Call fn(ctx, key, value) for each key of this file (not of its include.path
 * files) that starts with prefix and ends with suffix, in canonical form
 * ("lfs.<url>.standalonetransferagent"); a non-zero return from fn stops and
 * is returned. fn may set or unset keys of c. */
typedef int (*tp_git_config_fn)(void *ctx, const char *key, const char *value);
int tp_git_config_each(tp_git_config *c, const char *prefix, const char *suffix,
		       tp_git_config_fn fn, void *ctx);

#endif
