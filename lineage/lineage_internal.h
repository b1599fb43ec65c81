/* Private to lineage/. */
#ifndef TP_LINEAGE_INTERNAL_H
#define TP_LINEAGE_INTERNAL_H

#include <git2.h>

#include "tp_lineage.h"

/* An LFS pointer found in a tree at a branch tip. */
typedef struct tp_lineage_entry {
	char *path;
	char oid[TP_OID_HEXLEN + 1];
	uint64_t size;
	size_t tip; /* index into tips */
} tp_lineage_entry;

struct tp_lineage_repo {
	git_repository *repo;
	/* Lazily built index of LFS pointers at HEAD and local branch tips. */
	bool indexed;
	size_t ntips;
	git_tree **tips;
	size_t nentries;
	tp_lineage_entry *entries;
};

/* Turn libgit2's last error into ours, keeping its text. */
int tp_lineage_git_fail(int code, const char *what);
void tp_lineage_index_clear(tp_lineage_repo *r);

#endif
