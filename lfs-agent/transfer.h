/*
 * How the agent stores and rebuilds one LFS object: the policy that joins
 * lineage (which base), the delta codec (how) and the store (where).
 */
#ifndef TP_TRANSFER_H
#define TP_TRANSFER_H

#include <stdbool.h>
#include <stdint.h>

#include "tp_common.h"
#include "tp_lineage.h"
#include "tp_store.h"

#define TP_TRANSFER_MAXCHAIN_DEFAULT 8
/* Deepest chain a download follows, whatever the writer's cap was. */
#define TP_TRANSFER_CHAIN_LIMIT 64
/* Candidates estimated per upload: more trusted ones come first. */
#define TP_TRANSFER_CANDIDATES_MAX 4

typedef struct tp_transfer {
	tp_store *store;
	tp_lineage_repo *repo; /* may be NULL: no lineage, no local objects */
	char *tmp_dir;         /* scratch files, on the LFS storage's filesystem */
	unsigned threads;      /* codec threads per object */
	int maxchain;          /* tenpak.maxchain */
	tp_progress_fn progress;
	void *progress_ctx;
} tp_transfer;

/* What an upload did, for logs and tests. */
typedef struct tp_transfer_result {
	bool skipped;        /* already in the store */
	tp_store_kind kind;
	uint64_t stored;     /* payload bytes written */
	int nbases;          /* bases the object is a delta against */
} tp_transfer_result;

/* tmp_dir: where scratch files go (created if missing). Reads
 * tenpak.maxchain from the repository's config. */
int tp_transfer_init(tp_transfer *t, tp_store *store, tp_lineage_repo *repo, const char *tmp_dir);
void tp_transfer_clear(tp_transfer *t);

/* Store the file at path as object oid: a delta against its best base when
 * that is smaller, else whole. Bases missing from the store are stored
 * first. Every delta is rebuilt and checked before it is stored. */
int tp_transfer_upload(tp_transfer *t, const char *oid, uint64_t size, const char *path,
		       tp_transfer_result *result);
/* Rebuild object oid into path (created or truncated), fetching its bases
 * from the cheapest source, and verify its sha256 against oid. */
int tp_transfer_download(tp_transfer *t, const char *oid, uint64_t size, const char *path);

/* A delta ties an object to its bases: it is worth that only when it beats
 * the whole object by at least 1% of its size. */
static inline bool tp_transfer_delta_wins(uint64_t delta, uint64_t whole)
{
	return delta < whole - whole / 100;
}

/* The chain depth recorded in a delta manifest (0 for whole objects). */
int tp_transfer_manifest_depth(const char *manifest);

#endif
