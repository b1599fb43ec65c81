/* Private to lineage/. */
#ifndef TP_LINEAGE_INTERNAL_H
#define TP_LINEAGE_INTERNAL_H

#include <git2.h>

#include "tp_lineage.h"

#define TP_LINEAGE_POINTER_MAX 1024 /* LFS pointers are ~130 bytes */
#define TP_LINEAGE_NOT_TIP (-1)

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

/* Parse a git-lfs pointer file (spec v1). */
bool tp_lineage_pointer_parse(const char *p, size_t n, char oid[TP_OID_HEXLEN + 1],
			      uint64_t *size);

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

#endif
