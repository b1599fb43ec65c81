/*
 * Local copies of objects: this repository's LFS storage and the Hugging
 * Face cache. A copy is used only when its bytes hash to its oid; each
 * verdict is remembered while the file keeps its identity, size and times.
 */
#include "transfer_internal.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* What hashing one local file found, valid while the file keeps its
 * identity, size and times. */
typedef struct local_hash {
	char *path;
	dev_t dev;
	ino_t ino;
	uint64_t size;
	struct timespec mtime, ctime;
	char sha256[TP_OID_HEXLEN + 1];
} local_hash;

/* Files remembered: one per local copy a session hashes, so a few per
 * object; past this many, files are hashed each time they are used. */
#define LOCAL_HASHES_MAX ((size_t)1 << 20)

struct tp_transfer_hashes {
	tp_array(local_hash) v;
};

int tp_transfer_hashes_new(tp_transfer_hashes **out)
{
	tp_transfer_hashes *h = calloc(1, sizeof(*h));
	if (!h)
		return tp_error_set(TP_ENOMEM, "out of memory");
	h->v.cap = LOCAL_HASHES_MAX;
	*out = h;
	return 0;
}

void tp_transfer_hashes_free(tp_transfer_hashes *h)
{
	for (size_t i = 0; h && i < h->v.len; i++)
		free(h->v.ptr[i].path);
	if (h)
		tp_array_clear(&h->v);
	free(h);
}

static bool same_state(const local_hash *h, const struct stat *st)
{
	return h->dev == st->st_dev && h->ino == st->st_ino && h->size == (uint64_t)st->st_size &&
	       h->mtime.tv_sec == st->st_mtim.tv_sec && h->mtime.tv_nsec == st->st_mtim.tv_nsec &&
	       h->ctime.tv_sec == st->st_ctim.tv_sec && h->ctime.tv_nsec == st->st_ctim.tv_nsec;
}

/* The verdict remembered for path in state st, if any. */
static const local_hash *local_known(const tp_transfer *t, const char *path,
				     const struct stat *st)
{
	const tp_transfer_hashes *h = t->hashes;
	for (size_t i = 0; h && i < h->v.len; i++)
		if (strcmp(h->v.ptr[i].path, path) == 0 && same_state(&h->v.ptr[i], st))
			return &h->v.ptr[i];
	return NULL;
}

static void local_store(tp_transfer *t, const char *path, const struct stat *st, const char *hex)
{
	tp_transfer_hashes *h = t->hashes;
	/* Remembering is best effort: without room the verdict still holds. */
	if (!h || tp_array_reserve(&h->v, 1) != 0)
		return;
	local_hash e = { .dev = st->st_dev, .ino = st->st_ino, .size = (uint64_t)st->st_size,
			 .mtime = st->st_mtim, .ctime = st->st_ctim };
	memcpy(e.sha256, hex, sizeof(e.sha256));
	if ((e.path = strdup(path)) != NULL)
		h->v.ptr[h->v.len++] = e;
}

/* sha256 of the regular file at path into hex: remembered in t->hashes
 * while the file stays the same, so a push of many objects hashes a shared
 * base once. *fresh tells whether it was hashed now. */
static int local_sha256(tp_transfer *t, const char *path, char hex[TP_OID_HEXLEN + 1], bool *fresh)
{
	struct stat st, after;
	*fresh = false;
	if (stat(path, &st) != 0 || !S_ISREG(st.st_mode))
		return tp_error_set(TP_EINVAL, "%s is not a regular file", path);
	const local_hash *k = local_known(t, path, &st);
	if (k) {
		memcpy(hex, k->sha256, TP_OID_HEXLEN + 1);
		return 0;
	}
	uint64_t len = 0;
	int rc = tp_sha256_file(path, hex, &len);
	if (rc)
		return rc;
	*fresh = true;
	tp_trace("hashed %s: sha256 %s", path, hex);
	/* A file that changed while it was hashed gives no verdict. */
	if (stat(path, &after) != 0 || !tp_transfer_local_same(&st, &after) ||
	    len != (uint64_t)st.st_size)
		return tp_error_set(TP_EIO, "%s changed while it was hashed", path);
	local_store(t, path, &st, hex);
	return 0;
}

bool tp_transfer_local_same(const struct stat *a, const struct stat *b)
{
	return a->st_dev == b->st_dev && a->st_ino == b->st_ino && a->st_size == b->st_size &&
	       a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec &&
	       a->st_ctim.tv_sec == b->st_ctim.tv_sec && a->st_ctim.tv_nsec == b->st_ctim.tv_nsec;
}

void tp_transfer_local_record(tp_transfer *t, const char *path, const struct stat *st,
			      const char *hex)
{
	tp_trace("hashed %s: sha256 %s", path, hex);
	local_store(t, path, st, hex);
}

/* Remember that path, in its state now, holds object oid: a file this
 * process rebuilt from the store and proved. Best effort, like any verdict. */
void tp_transfer_local_remember(tp_transfer *t, const char *path, const char *oid)
{
	tp_transfer_hashes *h = t->hashes;
	struct stat st;
	if (!h || stat(path, &st) != 0 || !S_ISREG(st.st_mode) || tp_array_reserve(&h->v, 1) != 0)
		return;
	local_hash e = { .dev = st.st_dev, .ino = st.st_ino, .size = (uint64_t)st.st_size,
			 .mtime = st.st_mtim, .ctime = st.st_ctim };
	memcpy(e.sha256, oid, sizeof(e.sha256));
	if ((e.path = strdup(path)) != NULL)
		h->v.ptr[h->v.len++] = e;
}

int tp_transfer_local_unchanged(tp_transfer *t, const char *path, const char *oid)
{
	tp_transfer_hashes *h = t->hashes;
	struct stat st;
	if (stat(path, &st) == 0)
		for (size_t i = 0; h && i < h->v.len; i++)
			if (strcmp(h->v.ptr[i].path, path) == 0 && same_state(&h->v.ptr[i], &st) &&
			    strcmp(h->v.ptr[i].sha256, oid) == 0)
				return 0;
	return tp_error_set(TP_ECORRUPT, "base %s (%s) changed while the delta was made, or its "
			    "bytes were never checked", oid, path);
}

/* True when the file at path holds object oid of size bytes. A local copy
 * is trusted for its bytes only: an HF cache blob is named by its sha256,
 * but another user of a shared cache, or a bad disk, can change what is in
 * it, and a delta made or proven against wrong bytes would reach the store
 * where nobody could rebuild it. */
static bool local_copy_ok(tp_transfer *t, const char *path, const char *oid, uint64_t size,
			  bool *unverified)
{
	char hex[TP_OID_HEXLEN + 1];
	bool fresh;
	struct stat st;
	if (stat(path, &st) == 0 && (uint64_t)st.st_size != size) {
		tp_log(TP_LOG_WARN, "not using %s for object %s: it is %llu bytes, not %llu", path,
		       oid, (unsigned long long)st.st_size, (unsigned long long)size);
		return false;
	}
	/* Deferred: the caller hashes it while reading it for its own use
	 * and uses it only if it hashes to oid; a verdict known already
	 * decides now. */
	if (unverified && stat(path, &st) == 0 && S_ISREG(st.st_mode) && !local_known(t, path, &st)) {
		*unverified = true;
		return true;
	}
	if (unverified)
		*unverified = false;
	if (local_sha256(t, path, hex, &fresh) != 0) {
		tp_log(TP_LOG_WARN, "not using %s for object %s: %s", path, oid, tp_error_last());
		return false;
	}
	if (strcmp(hex, oid) == 0)
		return true;
	if (fresh)
		tp_log(TP_LOG_WARN, "not using %s for object %s: its bytes hash to %s (changed or "
		       "corrupt)", path, oid, hex);
	return false;
}

int tp_transfer_local_verify(tp_transfer *t, const char *path, const char *oid, uint64_t size)
{
	return local_copy_ok(t, path, oid, size, NULL)
		       ? 0
		       : tp_error_set(TP_ECORRUPT, "%s does not hold object %s", path, oid);
}

int tp_transfer_local_copy(tp_transfer *t, const char *oid, uint64_t size, const char *hint,
			   bool *unverified, char **path)
{
	if (t->store_only)
		return TP_ENOTFOUND;
	if (hint && local_copy_ok(t, hint, oid, size, unverified))
		return (*path = strdup(hint)) ? 0 : tp_error_set(TP_ENOMEM, "out of memory");
	/* tp_lineage_find_local prefers the repository's copy; without the
	 * repository it looks in the HF cache only, the next place to try. */
	tp_git_repo *from[2] = { t->repo, NULL };
	for (int i = 0; i < (t->repo ? 2 : 1); i++) {
		char *p = NULL;
		if (tp_lineage_find_local(from[i], oid, size, &p) != 0)
			break;
		if (local_copy_ok(t, p, oid, size, unverified)) {
			*path = p;
			return 0;
		}
		free(p);
	}
	return TP_ENOTFOUND;
}
