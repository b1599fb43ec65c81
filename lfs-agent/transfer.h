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
/* Objects one rebuild may take from the store: the object and each distinct
 * base under it. A store that needs more is refused before anything is
 * written (a hostile one could name 2^24 tiny objects). */
#define TP_TRANSFER_REBUILDS_MAX 256
/* tenpak.rebuildfactor: the bases one rebuild takes from the store may
 * claim at most this many times the object's size, plus the slack. */
#define TP_TRANSFER_REBUILD_FACTOR_DEFAULT 64
#define TP_TRANSFER_REBUILD_FACTOR_MAX 65536
#define TP_TRANSFER_REBUILD_SLACK (64ull << 20)

/* tenpak.verify: how manifest signatures are checked on download. */
typedef enum {
	TP_VERIFY_OFF = 0,      /* not at all */
	TP_VERIFY_IF_SIGNED,    /* a signature present must verify, by a trusted
				 * key when tenpak.trustedkeys is set (default) */
	TP_VERIFY_REQUIRED,     /* every manifest signed by a trusted key */
} tp_verify_mode;

/* What a manifest's signature says. */
typedef enum {
	TP_SIG_NONE = 0,   /* a whole zstd object: no manifest */
	TP_SIG_UNSIGNED,
	TP_SIG_TRUSTED,    /* verifies, by a key in tenpak.trustedkeys */
	TP_SIG_VALID,      /* verifies; no trusted keys are configured */
	TP_SIG_UNTRUSTED,  /* verifies, by a key not in tenpak.trustedkeys */
	TP_SIG_BAD,        /* does not verify */
} tp_sig_status;

const char *tp_sig_status_name(tp_sig_status s);

/* sha256 verdicts on local copies, shared by copies of a tp_transfer. */
typedef struct tp_transfer_hashes tp_transfer_hashes;

typedef struct tp_transfer {
	tp_store *store;
	tp_git_repo *repo; /* may be NULL: no lineage, no local objects */
	bool store_only;       /* bases only from the store (fsck), never from
				* local LFS objects or the HF cache */
	char *tmp_dir;         /* scratch files, on the LFS storage's filesystem */
	unsigned threads;      /* codec threads per object */
	int maxchain;          /* tenpak.maxchain */
	unsigned rebuild_factor; /* tenpak.rebuildfactor */
	/* Local copies (this repository's LFS storage, the HF cache) are
	 * hashed once per process and path, and used only when they hash to
	 * their oid. */
	tp_transfer_hashes *hashes;
	tp_progress_fn progress;
	void *progress_ctx;
	/* provenance */
	tp_sign_key *signer;   /* tenpak.signingkey: signs every manifest */
	tp_verify_mode verify; /* tenpak.verify */
	char **trusted;        /* tenpak.trustedkeys: "ed25519:..." texts */
	size_t ntrusted;
} tp_transfer;

/* What fsck reports of one object. */
typedef struct tp_transfer_object {
	tp_store_kind kind;
	uint64_t size;
	uint64_t stored;
	int depth;
	size_t nbases;
	tp_sig_status signature;
	char signer[TP_SIGN_PUBLIC_TEXT_MAX];
} tp_transfer_object;

/* What an upload did, for logs and tests. */
typedef struct tp_transfer_result {
	bool skipped;        /* already in the store */
	tp_store_kind kind;
	uint64_t stored;     /* payload bytes written */
	int nbases;          /* bases the object is a delta against */
} tp_transfer_result;

/* tmp_dir: where scratch files go (created if missing). Reads
 * tenpak.maxchain, tenpak.rebuildfactor, tenpak.signingkey, tenpak.verify
 * and tenpak.trustedkeys from git config (the repository's, or global
 * without one). */
int tp_transfer_init(tp_transfer *t, tp_store *store, tp_git_repo *repo, const char *tmp_dir);
void tp_transfer_clear(tp_transfer *t);

/* Store the file at path as object oid: a delta against its best base when
 * that is smaller, else whole. A file that is not size bytes long is
 * refused before anything else. Bases missing from the store are stored
 * first. Every delta is rebuilt and checked before it is stored. With a
 * signing key, files that are not safetensors are stored by the codec too
 * (kind 3), so that they carry a signed manifest. */
int tp_transfer_upload(tp_transfer *t, const char *oid, uint64_t size, const char *path,
		       tp_transfer_result *result);
/* Rebuild object oid into path (created or truncated), fetching its bases
 * from the cheapest source, and verify its sha256 against oid. Every
 * manifest under it is read and checked first: each base is rebuilt at most
 * once, and a rebuild that would take more than TP_TRANSFER_REBUILDS_MAX
 * objects, more base bytes than tenpak.rebuildfactor allows, or more
 * scratch space than the tmp directory has free, is refused before
 * anything is written. */
int tp_transfer_download(tp_transfer *t, const char *oid, uint64_t size, const char *path);

/* A delta ties an object to its bases: it is worth that only when it beats
 * the whole object by at least 1% of its size. */
static inline bool tp_transfer_delta_wins(uint64_t delta, uint64_t whole)
{
	return delta < whole - whole / 100;
}

/* Kind, chain depth and signature status of a stored object. */
int tp_transfer_inspect(tp_transfer *t, const char *oid, tp_transfer_object *out);
/* What m's signature says, under this transfer's tenpak.trustedkeys. */
tp_sig_status tp_transfer_signature(const tp_transfer *t, const tp_store_manifest *m);

#endif
