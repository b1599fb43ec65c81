/*
 * tenpak transfer: how the agent stores and rebuilds one LFS object, the
 * policy that joins lineage (which base), the delta codec (how) and the
 * store (where).
 *
 * What it promises:
 * - One plan decides what an upload stores (tp_transfer_plan_upload): the
 *   base candidates lineage found, estimated against the bytes this machine
 *   or the store holds, the smallest delta when it beats the whole file.
 *   Uploads execute it and `tenpak lineage` prints it, so the two agree.
 * - Nothing unproven reaches the store: a delta is proven while it is
 *   encoded (each frame decoded back, the target hashed to its oid, the
 *   bases checked unchanged since they hashed to theirs) before it is stored; its bases are stored before it;
 *   its chain stays within tenpak.maxchain.
 * - A download writes only bytes that hash to the oid, and what a rebuild
 *   may take (objects, base bytes, scratch space) is bounded and checked
 *   before anything is written.
 * - Local copies (this repository's LFS storage, the Hugging Face cache)
 *   are used only when they hash to their oid.
 * - Manifests are signed and checked as git config says (the provenance
 *   unit at the end).
 * A tp_transfer is used by one thread at a time.
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
/* Objects one rebuild may take from the store: the object and each distinct
 * base under it. A store that needs more is refused before anything is
 * written (a hostile one could name 2^24 tiny objects). */
#define TP_TRANSFER_REBUILDS_MAX 256
/* tenpak.rebuildfactor: the bases one rebuild takes from the store may
 * claim at most this many times the object's size, plus the slack. */
#define TP_TRANSFER_REBUILD_FACTOR_DEFAULT 64
#define TP_TRANSFER_REBUILD_FACTOR_MAX 65536
#define TP_TRANSFER_REBUILD_SLACK (64ull << 20)

typedef struct tp_transfer tp_transfer;
typedef struct tp_provenance tp_provenance;

typedef struct tp_transfer_opts {
	/* Scratch files, created if missing. NULL: <LFS dir>/tmp of the
	 * repository (downloads must land on the filesystem git-lfs renames
	 * them on), else $TMPDIR/tenpak-<uid>. */
	const char *tmp_dir;
	unsigned threads;        /* codec threads per object; 0: one per core */
	/* Bytes done of the object being uploaded or downloaded (not of the
	 * bases under it); may be NULL. */
	tp_progress_fn progress;
	void *progress_ctx;
	/* Bases only from the store, never from local LFS objects or the HF
	 * cache, and no lineage: the repository only gives config (fsck). */
	bool store_only;
} tp_transfer_opts;

/* A transfer between store and this machine. repo (may be NULL: no
 * lineage, no local objects, global config) and store must outlive it.
 * opts may be NULL (every default). Reads tenpak.maxchain,
 * tenpak.rebuildfactor and the provenance keys from git config. */
int tp_transfer_new(tp_transfer **out, tp_store *store, tp_git_repo *repo,
		    const tp_transfer_opts *opts);
void tp_transfer_free(tp_transfer *t);
/* The scratch directory in use (opts->tmp_dir or its default). */
const char *tp_transfer_tmp_dir(const tp_transfer *t);

/* ---- upload: the plan, then its execution --------------------------------- */

/* What a plan made of one base candidate. */
typedef enum {
	TP_TRANSFER_VERDICT_ESTIMATED = 1, /* its delta was estimated */
	TP_TRANSFER_VERDICT_UNAVAILABLE,   /* a base's bytes are neither on this
					    * machine (checked) nor in the store */
	TP_TRANSFER_VERDICT_TOO_DEEP,      /* over tenpak.maxchain */
	TP_TRANSFER_VERDICT_SKIPPED,       /* past TP_TRANSFER_CANDIDATES_MAX */
} tp_transfer_verdict;

typedef struct tp_transfer_candidate {
	tp_transfer_verdict verdict;
	uint64_t estimate; /* delta bytes, when estimated */
	int depth;         /* chain depth the delta would have; 0 when unknown */
	char *why;         /* one line, when not estimated; else NULL */
} tp_transfer_candidate;

/* Estimated size when nothing was estimated. */
#define TP_TRANSFER_UNESTIMATED UINT64_MAX

typedef struct tp_transfer_plan {
	size_t ncandidates;                /* the lineage's, in its order */
	tp_transfer_candidate *candidates;
	uint64_t whole;     /* estimated bytes stored whole, or
			     * TP_TRANSFER_UNESTIMATED without any candidate */
	long choice;        /* the candidate to store a delta against, -1: whole */
	const char *reason; /* the estimates and the choice, as recorded in the
			     * manifest */
} tp_transfer_plan;

/* Plan the upload of the model file at path with lineage (may be NULL: no
 * candidate): a dry run that stores nothing. Bases missing from this
 * machine are rebuilt from the store into scratch files, kept until the
 * plan is freed. A delta must beat the whole estimate by 1% of it. */
int tp_transfer_plan_upload(tp_transfer *t, const char *path, const tp_lineage *lineage,
			    tp_transfer_plan **out);
void tp_transfer_plan_free(tp_transfer_plan *p);

/* What an upload did, for logs and tests. */
typedef struct tp_transfer_result {
	bool skipped;        /* already in the store */
	tp_store_kind kind;
	uint64_t stored;     /* payload bytes written */
	int nbases;          /* bases the object is a delta against */
} tp_transfer_result;

/* Store the file at path as object oid: skipped when the store has it,
 * else stored whole by zstd unless it is safetensors (or manifests are
 * signed: then by the codec, kind 3, so that a signature covers it), else
 * as the plan with its lineage (found from the repository by oid) says. A
 * file that is not size bytes long is refused before anything else. */
int tp_transfer_upload(tp_transfer *t, const char *oid, uint64_t size, const char *path,
		       tp_transfer_result *result);
/* Store the safetensors file at path as object oid with lineage (may be
 * NULL) as its candidates, as an upload does: its plan leaves the hash of
 * each local copy chosen as a base to the encode pass, which reads it
 * anyway; a copy that does not hash to its oid stores nothing from it and
 * is planned without (another copy, the store, or whole). */
int tp_transfer_upload_lineage(tp_transfer *t, const char *oid, uint64_t size, const char *path,
			       const tp_lineage *lineage, tp_transfer_result *result);
/* Store the file at path as object oid as plan (made for that file) says:
 * the bases missing from the store first, then the delta, proven while it
 * is encoded to rebuild oid, with a manifest recording the plan's reason. A
 * delta that turns out no smaller than the whole object is replaced by it.
 * The plan is used up: only tp_transfer_plan_free may follow. */
int tp_transfer_plan_execute(tp_transfer *t, tp_transfer_plan *plan, const char *oid,
			     uint64_t size, const char *path, tp_transfer_result *result);

/* ---- download ------------------------------------------------------------- */

/* Rebuild object oid into path (created or truncated), fetching its bases
 * from the cheapest source, and verify its sha256 against oid. Every
 * manifest under it is read and checked first: each base is rebuilt at most
 * once, and a rebuild that would take more than TP_TRANSFER_REBUILDS_MAX
 * objects, more base bytes than tenpak.rebuildfactor allows, or more
 * scratch space than the tmp directory has free, is refused before
 * anything is written. */
int tp_transfer_download(tp_transfer *t, const char *oid, uint64_t size, const char *path);

/* ---- provenance: who wrote a manifest ------------------------------------- */

/* tenpak.verify: how manifest signatures are checked on download. */
typedef enum {
	TP_PROVENANCE_VERIFY_OFF = 0,   /* not at all */
	TP_PROVENANCE_VERIFY_IF_SIGNED, /* a signature present must verify, by a
					 * trusted key when tenpak.trustedkeys
					 * is set (default) */
	TP_PROVENANCE_VERIFY_REQUIRED,  /* every manifest signed by a trusted key */
} tp_provenance_verify;

/* What a manifest's signature says. */
typedef enum {
	TP_PROVENANCE_SIG_NONE = 0,   /* a whole zstd object: no manifest */
	TP_PROVENANCE_SIG_UNSIGNED,
	TP_PROVENANCE_SIG_TRUSTED,    /* verifies, by a key in tenpak.trustedkeys */
	TP_PROVENANCE_SIG_VALID,      /* verifies; no trusted keys are configured */
	TP_PROVENANCE_SIG_UNTRUSTED,  /* verifies, by a key not in tenpak.trustedkeys */
	TP_PROVENANCE_SIG_BAD,        /* does not verify */
} tp_provenance_sig;

const char *tp_provenance_sig_name(tp_provenance_sig s);

/* Reads tenpak.verify (off, if-signed or required), tenpak.trustedkeys
 * ("ed25519:..." keys separated by spaces or commas) and tenpak.signingkey
 * (a key file, "~/" is HOME) from the git config of repo (may be NULL:
 * global config). TP_ECONFIG for a bad value, required without a trusted
 * key, or a key file that cannot be loaded. */
int tp_provenance_new(tp_provenance **out, tp_git_repo *repo);
void tp_provenance_free(tp_provenance *p);
/* True when manifests written under p are signed (tenpak.signingkey). */
bool tp_provenance_signs(const tp_provenance *p);
/* Sign m when p signs: m->signer and m->signature then point into signer
 * and sig. m is left unsigned otherwise. */
int tp_provenance_manifest_sign(const tp_provenance *p, tp_store_manifest *m,
				char signer[TP_SIGN_PUBLIC_TEXT_MAX], char sig[TP_SIGN_TEXT_MAX]);
/* What m's signature says, under p's tenpak.trustedkeys. */
tp_provenance_sig tp_provenance_manifest_status(const tp_provenance *p,
						const tp_store_manifest *m);
/* tenpak.verify applied to m, the manifest of object oid: TP_EAUTH,
 * naming oid and the key, when it is refused. */
int tp_provenance_manifest_check(const tp_provenance *p, const tp_store_manifest *m,
				 const char *oid);
/* tenpak.verify applied to object oid stored whole without a manifest:
 * nothing signs it, so TP_EAUTH when signatures are required. */
int tp_provenance_whole_check(const tp_provenance *p, const char *oid);

/* ---- inspection (fsck) ---------------------------------------------------- */

/* What fsck reports of one object. */
typedef struct tp_transfer_object {
	tp_store_kind kind;
	uint64_t size;
	uint64_t stored;
	int depth;
	size_t nbases;
	tp_provenance_sig signature;
	char signer[TP_SIGN_PUBLIC_TEXT_MAX];
} tp_transfer_object;

/* Kind, chain depth and signature status of a stored object. */
int tp_transfer_inspect(tp_transfer *t, const char *oid, tp_transfer_object *out);

#endif
