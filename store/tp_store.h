/*
 * tenpak store: where objects live.
 *
 * Contract:
 * - A store maps keys (relative '/'-separated names that cannot leave the
 *   store: tp_store_key_valid) to byte values. It is opened by URL, a local
 *   directory (file:///abs/path or /abs/path) or an S3-compatible object
 *   store (s3://bucket/prefix), or made in memory for tests.
 * - Writes are atomic: a reader sees a whole value or none, whatever the
 *   concurrency, and a failed write leaves the old value (or none).
 * - On top, the object layer keeps LFS files by oid under
 *   "objects/ab/cd/<oid>", framed and compressed (store/FORMAT.md), and
 *   verifies them both ways: what does not hash to its oid is neither
 *   stored nor handed out as good.
 * - Every function returns 0 or a negative TP_E* code with a message naming
 *   the key, oid or store URL, never a secret; out parameters are written
 *   only on success.
 * - A store handle is used from one thread at a time, but for the
 *   in-memory store, which threads may share.
 * Backends implement store/tp_store_backend.h; users need only this header.
 */
#ifndef TP_STORE_H
#define TP_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tp_common.h"

/* Longest key accepted by tp_store_key_valid. */
#define TP_STORE_KEY_MAX 512

typedef struct tp_store tp_store;

/* Pull source for writes: fill buf with up to cap bytes; *got == 0 means the
 * end. A non-zero return aborts the write and nothing becomes visible. */
typedef struct tp_store_source {
	int (*read)(void *ctx, void *buf, size_t cap, size_t *got);
	void *ctx;
} tp_store_source;

/* Push sink for reads. A non-zero return aborts the read. */
typedef struct tp_store_sink {
	int (*write)(void *ctx, const void *buf, size_t n);
	void *ctx;
} tp_store_sink;

/* Called for each key under a prefix by tp_store_list. */
typedef int (*tp_store_list_fn)(void *ctx, const char *key, uint64_t size);

/* Backend settings come from the caller (git config, in tenpak): return
 * a malloc'd value for key (e.g. "s3.endpoint"), TP_ENOTFOUND if unset. */
typedef int (*tp_store_config_fn)(void *ctx, const char *key, char **value);

/* Open a store by URL:
 *   "/abs/path", "file:///abs/path"    a local directory (created if missing)
 *   "s3://BUCKET[/PREFIX][?endpoint=URL&region=R&pathstyle=0|1]"
 * S3 settings not in the URL are asked of config (may be NULL): s3.endpoint,
 * s3.region, s3.pathstyle, s3.partsize, s3.parallel, s3.retries, s3.timeout.
 * Unknown schemes, relative paths and bad settings are TP_ECONFIG. */
int tp_store_open_with(tp_store **out, const char *url, tp_store_config_fn config,
		       void *config_ctx);
/* tp_store_open_with without a config source. */
int tp_store_open(tp_store **out, const char *url);
/* tp_store_open_with for commands that only read: nothing is created, and a
 * local store whose directory does not exist is TP_ENOTFOUND. (An S3 store
 * is never created on open; a missing bucket fails its first request.) */
int tp_store_open_existing(tp_store **out, const char *url, tp_store_config_fn config,
			   void *config_ctx);
void tp_store_free(tp_store *s);
/* A new, empty store in this process's memory (URL "mem://"), for tests of
 * the code above the store without a disk or a server. It behaves as the
 * file backend does (atomic puts, ranged gets, listings, the object layer
 * on top) and may be used from several threads; its objects live until
 * tp_store_free. It cannot be opened by URL: every call makes a new store. */
int tp_store_mem_new(tp_store **out);
/* Hand reads of in-memory store s to sinks in pieces: the first of at most
 * first bytes, then at most rest bytes each (default 1 MiB each), as a
 * network backend would, to exercise readers that reassemble. TP_EINVAL if
 * s is another kind of store or a size is 0. */
int tp_store_mem_set_pieces(tp_store *s, size_t first, size_t rest);
/* The URL the store was opened with, for messages. It holds no secret: S3
 * credentials never come from the URL, and its query only carries the
 * settings listed above. */
const char *tp_store_url(const tp_store *s);

/* Keys are relative, '/'-separated, made of [A-Za-z0-9._-] components that
 * are neither empty, "." nor "..": they can never escape a store's root. */
bool tp_store_key_valid(const char *key);

int tp_store_stat(tp_store *s, const char *key, uint64_t *size);
int tp_store_get(tp_store *s, const char *key, uint64_t offset, uint64_t len,
		 const tp_store_sink *sink);
int tp_store_put(tp_store *s, const char *key, const tp_store_source *src);
int tp_store_remove(tp_store *s, const char *key);
int tp_store_list(tp_store *s, const char *prefix, tp_store_list_fn fn, void *ctx);

/* ---- objects: LFS content addressed by oid (see store/FORMAT.md) ------- */

#define TP_STORE_OBJECT_KEY_LEN (sizeof("objects/ab/cd/") - 1 + TP_OID_HEXLEN)
#define TP_STORE_OBJECT_HEADER_LEN 16

/* The kind byte of an object's header. Each name is the one that
 * tp_store_kind_name prints and store/FORMAT.md uses. */
typedef enum {
	/* whole-zstd: the file's bytes, zstd-compressed */
	TP_STORE_KIND_WHOLE_ZSTD = 1,
	/* delta: a JSON manifest and a tensor codec stream against the bases
	 * the manifest names */
	TP_STORE_KIND_DELTA = 2,
	/* whole-codec: the same layout, the stream needing no base: the whole
	 * file coded by the tensor codec (byte-plane compressed) */
	TP_STORE_KIND_WHOLE_CODEC = 3,
} tp_store_kind;

/* "whole-zstd", "delta" or "whole-codec", for messages and --json. */
const char *tp_store_kind_name(tp_store_kind k);

/* Kinds 2 and 3 carry a manifest and a codec stream. */
#define TP_STORE_KIND_HAS_MANIFEST(k) \
	((k) == TP_STORE_KIND_DELTA || (k) == TP_STORE_KIND_WHOLE_CODEC)

/* Largest manifest accepted in a delta object. */
#define TP_STORE_MANIFEST_MAX (1u << 20)

typedef struct tp_store_object_info {
	tp_store_kind kind;
	uint64_t size;           /* logical size: the LFS file's length */
	uint64_t stored_size;    /* physical bytes in the store */
	uint64_t payload_offset; /* delta objects: where the codec stream starts */
} tp_store_object_info;

/* "objects/ab/cd/<oid>"; oid must be valid. out has room for the key + NUL. */
void tp_store_object_key(char out[TP_STORE_OBJECT_KEY_LEN + 1], const char *oid);
/* TP_ENOTFOUND when the store lacks oid. Reads only the object header. */
int tp_store_object_stat(tp_store *s, const char *oid, tp_store_object_info *info);
/* Say that oid is not in store s, naming the store and where its URL comes
 * from; returns TP_ENOTFOUND. */
int tp_store_object_absent(const tp_store *s, const char *oid);
/* Compress the file at path and store it as oid. The file's sha256 and
 * length are checked against oid and size while streaming; on mismatch
 * nothing is stored (TP_ECORRUPT). */
int tp_store_object_put_file(tp_store *s, const char *oid, uint64_t size, const char *path,
			     tp_progress_fn progress, void *progress_ctx);
/* Fetch oid, decompress into fd (from its current offset) and verify
 * length and sha256; TP_ECORRUPT on mismatch (fd then holds garbage the
 * caller must discard). */
int tp_store_object_get_fd(tp_store *s, const char *oid, uint64_t size, int fd,
			   tp_progress_fn progress, void *progress_ctx);

/* Store oid as a kind 2 or 3 object: manifest (JSON text) and the codec
 * stream read from payload_path. The caller has verified they rebuild oid. */
int tp_store_object_put_delta(tp_store *s, const char *oid, uint64_t size, tp_store_kind kind,
			      const char *manifest,
			      const char *payload_path, tp_progress_fn progress, void *progress_ctx);
/* The same, the codec stream read from payload as it is made: the object
 * becomes visible only once payload ends (*got == 0), and a payload error
 * stores nothing (the caller proves the stream before ending it). */
int tp_store_object_put_delta_stream(tp_store *s, const char *oid, uint64_t size,
				     tp_store_kind kind, const char *manifest,
				     const tp_store_source *payload);
/* Header and, for a delta object, its manifest (malloc'd, NUL-terminated;
 * NULL for whole objects). Reads only the start of the object. */
int tp_store_object_manifest(tp_store *s, const char *oid, tp_store_object_info *info,
			     char **manifest);
/* Copy a delta object's codec stream into fd. */
int tp_store_object_get_payload(tp_store *s, const char *oid, const tp_store_object_info *info,
				int fd);

/* ---- manifests of kind 2 and 3 objects (store/FORMAT.md) --------------- */

#define TP_STORE_MANIFEST_BASES_MAX 4096

typedef struct tp_store_manifest_base {
	char oid[TP_OID_HEXLEN + 1];
	uint64_t size;
	char *path; /* informational; may be NULL */
} tp_store_manifest_base;

typedef struct tp_store_manifest {
	char oid[TP_OID_HEXLEN + 1];
	uint64_t size;
	int codec_version;
	int depth;
	size_t nbases;
	tp_store_manifest_base *bases;
	/* why this base: informational, may be NULL */
	char *source;
	char *evidence;
	char *choice;
	/* Ed25519 signature over tp_store_manifest_canonical(), base64; NULL
	 * when unsigned */
	char *signer;
	char *signature;
} tp_store_manifest;

/* JSON text of m (malloc'd). */
int tp_store_manifest_build(const tp_store_manifest *m, char **json);
/* Parse and validate: oids, sizes, depth and counts are checked; unknown
 * keys are ignored. No I/O, so it can be fuzzed. */
int tp_store_manifest_parse(tp_store_manifest **out, const char *json, size_t len);
void tp_store_manifest_free(tp_store_manifest *m);
/* The bytes a signature covers: every field that decides what the object
 * rebuilds to (oid, size, codec version, depth, base oids and sizes), in a
 * fixed text form independent of JSON formatting. */
int tp_store_manifest_canonical(const tp_store_manifest *m, tp_buf *out);

/* Totals over every object, for `tenpak store stats`. */
typedef struct tp_store_kind_stats {
	uint64_t objects;
	uint64_t logical_bytes;
	uint64_t physical_bytes;
} tp_store_kind_stats;

typedef struct tp_store_stats {
	uint64_t objects;
	uint64_t logical_bytes;
	uint64_t physical_bytes;
	tp_store_kind_stats whole; /* kinds 1 and 3 */
	tp_store_kind_stats delta; /* kind 2 */
	uint64_t unreadable; /* keys under objects/ whose header is not valid */
} tp_store_stats;

int tp_store_stats_collect(tp_store *s, tp_store_stats *out);
/* Visit every object key's oid (for fsck); unrelated keys are skipped. */
int tp_store_object_list(tp_store *s, int (*fn)(void *ctx, const char *oid, uint64_t stored),
			 void *ctx);

/* Default local store for this user: $XDG_DATA_HOME/tenpak/store, else
 * $HOME/.local/share/tenpak/store. malloc'd into *out. */
int tp_store_default_url(char **out);

#endif
