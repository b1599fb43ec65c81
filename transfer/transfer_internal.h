/* Internals shared by the transfer sources; not installed. */
#ifndef TP_TRANSFER_INTERNAL_H
#define TP_TRANSFER_INTERNAL_H

#include "tp_transfer.h"

#include <sys/stat.h>

#include "tp_array.h"
#include "tp_delta.h"

/* sha256 verdicts on local copies (local.c), shared by the copies of a
 * tp_transfer an upload makes for its bases. */
typedef struct tp_transfer_hashes tp_transfer_hashes;

struct tp_transfer {
	tp_store *store;
	tp_git_repo *repo; /* may be NULL: no lineage, no local objects */
	bool store_only;       /* bases only from the store (fsck) */
	char *tmp_dir;         /* scratch files, on the LFS storage's filesystem */
	unsigned threads;      /* codec threads per object */
	int maxchain;          /* tenpak.maxchain */
	unsigned rebuild_factor; /* tenpak.rebuildfactor */
	/* Local copies (this repository's LFS storage, the HF cache) are
	 * hashed once per process and path, and used only when they hash to
	 * their oid. */
	tp_transfer_hashes *hashes;
	/* Set by uploads while they plan: a local copy whose verdict is not
	 * known is used unhashed, the encode pass hashing it as it reads it;
	 * a dry run (`tenpak lineage`) hashes copies as it plans. */
	bool defer_base_hash;
	tp_progress_fn progress;
	void *progress_ctx;
	tp_provenance *provenance;
};

/* ---- setup and scratch files (transfer.c) ---------------------------------- */

/* Codec options: t's threads, and t's progress when report. */
tp_delta_opts tp_transfer_codec_opts(tp_transfer *t, bool report);
/* Chain depth of a stored object: 0 when whole or absent. */
int tp_transfer_stored_depth(tp_transfer *t, const char *oid);

/* A new empty file in the scratch directory; *path is malloc'd. */
int tp_transfer_scratch_new(tp_transfer *t, const char *what, char **path);
/* Remove and free a scratch file; NULL is ignored. */
void tp_transfer_scratch_drop(char *path);

/* The bases one upload or download rebuilt from the store into scratch
 * files, by oid: each is rebuilt once however many candidates name it, and
 * the files are removed when the operation ends. */
typedef struct tp_transfer_kept {
	char oid[TP_OID_HEXLEN + 1];
	char *path;
} tp_transfer_kept;

typedef tp_array(tp_transfer_kept) tp_transfer_scratch;

/* Bases one operation rebuilds: a few per candidate, and lineage finds a
 * handful of candidates; the cap only bounds a runaway. */
#define TP_TRANSFER_SCRATCH_INIT TP_ARRAY_INIT(4096)

/* Takes path, even on failure. */
int tp_transfer_scratch_keep(tp_transfer_scratch *l, const char *oid, char *path);
/* The kept file of oid, or NULL; l may be NULL. */
const char *tp_transfer_scratch_find(const tp_transfer_scratch *l, const char *oid);
void tp_transfer_scratch_clear(tp_transfer_scratch *l);

/* ---- local copies (local.c) ------------------------------------------------ */

int tp_transfer_hashes_new(tp_transfer_hashes **out);
void tp_transfer_hashes_free(tp_transfer_hashes *h);
/* A verified copy of object oid on this machine, tried in order: hint (a
 * file lineage found, may be NULL), this repository's LFS storage, the
 * Hugging Face cache. TP_ENOTFOUND when none is good, and always in
 * store-only mode (fsck). */
int tp_transfer_local_copy(tp_transfer *t, const char *oid, uint64_t size, const char *hint,
			   bool *unverified, char **path);
/* With a non-NULL unverified, a copy whose verdict is not known yet is
 * returned unhashed with *unverified set: the caller must hash it (the
 * codec does, while it reads it: tp_delta_opts.base_sha256) and use nothing
 * made from it unless it hashes to oid, then record the verdict
 * (tp_transfer_local_record). tp_transfer_local_verify hashes it now:
 * 0 when it holds oid, TP_ECORRUPT (and a warning) when not. */
int tp_transfer_local_verify(tp_transfer *t, const char *path, const char *oid, uint64_t size);
/* True when two stats show the same file in the same state. */
bool tp_transfer_local_same(const struct stat *a, const struct stat *b);
/* Remember that path, in state st (taken before it was read), hashed to
 * hex. */
void tp_transfer_local_record(tp_transfer *t, const char *path, const struct stat *st,
			      const char *hex);

/* Record that path, as it is now, holds object oid (a base this process
 * rebuilt and proved). */
void tp_transfer_local_remember(tp_transfer *t, const char *path, const char *oid);
/* 0 when path is still in the state (identity, size, times) it had when
 * it was found to hash to oid; TP_ECORRUPT otherwise. Bracketing a read of
 * a base with its check and this one proves the bytes read were the oid's. */
int tp_transfer_local_unchanged(tp_transfer *t, const char *path, const char *oid);

/* ---- store writes fed as the stream is made (feed.c) ------------------------ */

typedef struct tp_transfer_feed tp_transfer_feed;

/* Start storing oid (kind, manifest: taken, even on failure) from bytes
 * given to tp_transfer_feed_write, on a thread of its own. */
int tp_transfer_feed_start(tp_transfer_feed **out, tp_store *store, const char *oid,
			   uint64_t size, tp_store_kind kind, char *manifest);
/* The next bytes of the payload; an error when the store's write failed. */
int tp_transfer_feed_write(tp_transfer_feed *f, const void *data, size_t n);
/* End the feed and free it (NULL is ignored): proven, the object is
 * stored (made durable and visible) and the store's result returned;
 * otherwise nothing is stored and 0 returned. */
int tp_transfer_feed_finish(tp_transfer_feed *f, bool proven);

/* ---- rebuilds (rebuild.c) -------------------------------------------------- */

/* Apply the delta stream read from fd in into out and prove the result is
 * object oid: the codec hashes what it rebuilds as it writes it, and that
 * hash must be the oid. A delta that claims another size than expect is
 * refused before anything is written (a hostile one could claim terabytes
 * of "same as base" chunks and fill the disk). A NULL out only checks:
 * nothing is opened or written. durable: fsync out (not for scratch). */
int tp_transfer_apply(tp_transfer *t, int in, char **bases, size_t nbases, const char *oid,
		      uint64_t expect, const char *out, bool durable, bool report);
/* Rebuild object oid from the store into out. kept (may be NULL): bases the
 * caller already holds. Local copies of bases are read once, unhashed: what
 * is rebuilt from them is hashed against its oid; after a failure they are
 * hashed and the rebuild runs again without the bad ones. out is emptied
 * first, so it may be an existing file. */
int tp_transfer_rebuild(tp_transfer *t, const tp_transfer_scratch *kept, const char *oid,
			uint64_t size, const char *out, bool report);

/* ---- plans (plan.c) -------------------------------------------------------- */

/* A base of a delta and its local bytes. */
typedef struct tp_transfer_base {
	char oid[TP_OID_HEXLEN + 1];
	uint64_t size;
	char *path;  /* local bytes */
	char *label; /* repository path or HF cache path, for the manifest */
	bool unverified; /* a local copy not hashed yet: encode hashes it */
} tp_transfer_base;

/* What to store: a delta against bases, or whole without any, and why. */
typedef struct tp_transfer_choice {
	tp_transfer_base *bases;
	size_t nbases;
	int depth;
	const char *source;
	const char *evidence;
	tp_buf reason;
	tp_delta_layout *layout; /* the plan its estimate made, for compress */
} tp_transfer_choice;

void tp_transfer_choice_clear(tp_transfer_choice *c);
/* The local paths of c's bases, NULL-terminated (malloc'd, the paths not). */
char **tp_transfer_choice_paths(const tp_transfer_choice *c);

/* A plan and what its execution needs: the chosen bases, and the scratch
 * files of bases rebuilt from the store. */
typedef struct tp_transfer_planned {
	tp_transfer_plan plan; /* first: what tp_transfer_plan_upload returns */
	tp_transfer_choice chosen;
	tp_transfer_scratch scratch;
	/* execute found that a local copy chosen as a base does not hold its
	 * oid: nothing was stored, and its verdict is remembered, so a new
	 * plan will not use it again. */
	bool base_rejected;
} tp_transfer_planned;

/* A delta ties an object to its bases: it is worth that only when it beats
 * the whole object by at least 1% of its size. */
static inline bool tp_transfer_delta_wins(uint64_t delta, uint64_t whole)
{
	return delta < whole - whole / 100;
}

#endif
